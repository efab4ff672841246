// Fuzz target: config.json text (docs/model-format.md) through models::ParseModelConfig.
//
// Any bytes must be parsed or refused with a status naming the problem, never crash, hang or
// leak. A config that is accepted must also pass ValidateModelConfig, answer every helper the
// loader uses, and survive ModelConfigToJson -> ParseModelConfig unchanged (extraction writes
// configs with it, and the server reads them back).
// Seeds: fuzz/corpus/model_config/ (the demo model's and the test fixtures' config.json).
#include <algorithm>
#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "fuzz/fuzz_util.h"
#include "models/format/config.h"

namespace taskmoe::fuzz {
namespace {

using models::ModelConfig;
using models::Stack;

void CheckAccepted(const ModelConfig& config) {
  const absl::Status valid = models::ValidateModelConfig(config);
  TASKMOE_FUZZ_CHECK(valid.ok(), std::string(valid.message()));
  for (Stack stack : {Stack::kEncoder, Stack::kDecoder}) {
    // Sizes are capped at int32, not small: look at the first layers only.
    const int layers = std::min(config.num_layers(stack), 64);
    for (int layer = 0; layer < layers; ++layer) {
      const int64_t width = config.ffn_dim(stack, layer);
      TASKMOE_FUZZ_CHECK(width >= 1, absl::StrCat("ffn_dim ", width));
      (void)config.is_moe_layer(stack, layer);
    }
    TASKMOE_FUZZ_CHECK(config.num_task_keys(stack) >= 0, "num_task_keys");
    for (const models::TaskInfo& task : config.tasks) {
      absl::StatusOr<int> key = config.TaskKeyIndex(stack, task);
      if (key.ok()) {
        TASKMOE_FUZZ_CHECK(*key >= 0 && *key < config.num_task_keys(stack),
                           absl::StrCat("task key ", *key));
      }
    }
  }
  for (const models::TaskInfo& task : config.tasks) {
    TASKMOE_FUZZ_CHECK(config.FindTask(task.id) == &task, task.id);
    TASKMOE_FUZZ_CHECK(task.target_tag_id >= 0 && task.target_tag_id < config.vocab_size,
                       absl::StrCat("target_tag_id ", task.target_tag_id));
  }

  const std::string json = models::ModelConfigToJson(config);
  absl::StatusOr<ModelConfig> again = models::ParseModelConfig(json);
  TASKMOE_FUZZ_CHECK(
      again.ok(),
      absl::StrCat("the written config does not parse: ", again.status().message(), "\n", json));
  TASKMOE_FUZZ_CHECK(*again == config,
                     absl::StrCat("the config changed on its way through "
                                  "ModelConfigToJson:\n",
                                  json, "\nreads back as\n", models::ModelConfigToJson(*again)));
}

}  // namespace
}  // namespace taskmoe::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::StatusOr<taskmoe::models::ModelConfig> config =
      taskmoe::models::ParseModelConfig(taskmoe::fuzz::AsText(data, size));
  if (!config.ok()) {
    TASKMOE_FUZZ_CHECK(!config.status().message().empty(), "an error without a message");
    return 0;
  }
  taskmoe::fuzz::CheckAccepted(*config);
  return 0;
}
