// The recorded digests of a model directory's files against the files.
#include "models/format/model_files.h"

#include "absl/strings/str_cat.h"

namespace taskmoe::models {

absl::Status CheckFileDigests(
    const ModelConfig& config,
    const std::function<absl::StatusOr<std::string>(const std::string& file)>& digest_of) {
  for (const auto& [file, recorded] : config.file_digests) {
    absl::StatusOr<std::string> actual = digest_of(file);
    if (!actual.ok()) return actual.status();
    if (*actual != recorded) {
      return absl::FailedPreconditionError(absl::StrCat(
          file, " has digest ", *actual, " but ", kConfigFileName, " records ", recorded,
          ": the files come from different models (replace a model's ", "files together)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace taskmoe::models
