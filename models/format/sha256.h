// SHA-256 digests as the model format writes them, "sha256:<64 hex digits>": of a file (the
// digests config.json records for a model's files) and of bytes in memory (a model
// directory's version, derived from its files' digests). The one place that calls OpenSSL.
#ifndef TASKMOE_MODELS_FORMAT_SHA256_H_
#define TASKMOE_MODELS_FORMAT_SHA256_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace taskmoe::models {

inline constexpr char kSha256Prefix[] = "sha256:";

// SHA-256 of a file's bytes, read in chunks (weights files are large).
absl::StatusOr<std::string> FileSha256(const std::string& path);

// SHA-256 of `bytes`.
absl::StatusOr<std::string> Sha256(std::string_view bytes);

}  // namespace taskmoe::models

#endif  // TASKMOE_MODELS_FORMAT_SHA256_H_
