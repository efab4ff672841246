// Early returns on absl::Status and absl::StatusOr, for functions that run a sequence of
// fallible steps (loading a model is fifty of them). Header only; includes nothing of the
// project, so every layer may use it.
//
//   TASKMOE_RETURN_IF_ERROR(CheckShape(x));
//   TASKMOE_ASSIGN_OR_RETURN(Tensor w, loader.Take("fc1.weight"));
#ifndef TASKMOE_UTIL_STATUS_MACROS_H_
#define TASKMOE_UTIL_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// Returns the status of `expr` (an absl::Status) from the enclosing function unless it is OK.
#define TASKMOE_RETURN_IF_ERROR(expr)                                     \
  do {                                                                    \
    if (::absl::Status taskmoe_status_ = (expr); !taskmoe_status_.ok()) { \
      return taskmoe_status_;                                             \
    }                                                                     \
  } while (false)

// Evaluates `expr` (an absl::StatusOr<T>); returns its status from the enclosing function
// unless it is OK, else moves its value into `lhs` (a declaration such as `Tensor w` or an
// existing variable).
#define TASKMOE_ASSIGN_OR_RETURN(lhs, expr)                                                       \
  TASKMOE_ASSIGN_OR_RETURN_IMPL_(TASKMOE_STATUS_MACROS_CONCAT_(taskmoe_statusor_, __LINE__), lhs, \
                                 expr)

#define TASKMOE_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                                   \
  if (!statusor.ok()) return std::move(statusor).status();  \
  lhs = *std::move(statusor)

#define TASKMOE_STATUS_MACROS_CONCAT_INNER_(a, b) a##b
#define TASKMOE_STATUS_MACROS_CONCAT_(a, b) TASKMOE_STATUS_MACROS_CONCAT_INNER_(a, b)

#endif  // TASKMOE_UTIL_STATUS_MACROS_H_
