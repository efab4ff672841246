// Counts every heap allocation the process makes, from any library or thread, by replacing
// malloc and its relatives for the executable that links counting_malloc.cc (glibc lets an
// executable define them; see the glibc manual, "Replacing malloc"). Only for tests that
// check a code path does not allocate; incompatible with sanitizers, which replace malloc
// themselves.
//
// Allocations can also be attributed to one shared library: those with a frame of that
// library on the stack. The decoding tests use it to tell oneDNN's own per-call bookkeeping
// (which no caller can avoid) from everything else.
#ifndef TASKMOE_TESTS_MODELS_COUNTING_MALLOC_H_
#define TASKMOE_TESTS_MODELS_COUNTING_MALLOC_H_

#include <cstdint>

#include "absl/status/status.h"

namespace taskmoe::testing {

struct AllocationCounts {
  int64_t total = 0;       // every allocation (malloc, calloc, realloc, memalign, ...)
  int64_t attributed = 0;  // those made with a frame of the attributed library on the stack
  int64_t live = 0;        // allocations minus frees of non-null pointers

  int64_t unattributed() const { return total - attributed; }
  friend AllocationCounts operator-(const AllocationCounts& a, const AllocationCounts& b) {
    return {a.total - b.total, a.attributed - b.attributed, a.live - b.live};
  }
};

AllocationCounts CurrentAllocationCounts();

// From now on, walks the stack of every allocation and attributes it when a return address
// lies in the loaded library whose file name contains `library` (e.g. "libdnnl.so").
// NotFound when no such library is loaded.
absl::Status AttributeAllocationsTo(const char* library);

}  // namespace taskmoe::testing

#endif  // TASKMOE_TESTS_MODELS_COUNTING_MALLOC_H_
