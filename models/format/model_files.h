// The files of a model directory (docs/model-format.md), named in one place, and the check
// that binds them together: config.json records the SHA-256 of the weights and the tokenizer
// (its `files` section), so that a directory whose files come from different models (one
// file replaced by another task's) is refused instead of served.
#ifndef TASKMOE_MODELS_FORMAT_MODEL_FILES_H_
#define TASKMOE_MODELS_FORMAT_MODEL_FILES_H_

#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "models/format/config.h"

namespace taskmoe::models {

inline constexpr char kConfigFileName[] = "config.json";
inline constexpr char kWeightsFileName[] = "model.safetensors";
inline constexpr char kTokenizerFileName[] = "spm.model";

// Checks each digest `config` records (file_digests) against the file's actual digest, which
// `digest_of(file name)` returns ("sha256:<hex>"; FileSha256 (sha256.h) of the file, or a digest
// the caller already computed). A mismatch is FailedPrecondition naming the file and both digests.
// A config that records none passes.
absl::Status CheckFileDigests(
    const ModelConfig& config,
    const std::function<absl::StatusOr<std::string>(const std::string& file)>& digest_of);

}  // namespace taskmoe::models

#endif  // TASKMOE_MODELS_FORMAT_MODEL_FILES_H_
