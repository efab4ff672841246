// Fuzz target: a whole model as the loader sees it, config.json and model.safetensors
// together, through models::TransformerModel::Create, then a few decoding steps.
//
// Input: the config's JSON text, one NUL byte, then the safetensors bytes (JSON text has no
// raw NUL, so the split is unambiguous; inputs without one are skipped). The config is
// parsed (ParseModelConfig), the weights read (SafetensorsFile::FromBytes) and checked against
// the config tensor by tensor and packed (Create, at the precision size % 3 picks), and a model
// that loads decodes one short source for its first task, greedy or with a beam of 2: weights
// may be anything, NaN and infinities included, so routing and search see such values too.
// Seeds: fuzz/corpus/model_load/ (tiny dense, TaskMoE, TokenMoE, extracted (folded and
// unfolded) and untied-embedding models written by fuzz/make_seeds.py).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "fuzz/fuzz_util.h"
#include "kernels/matmul.h"
#include "models/decoding.h"
#include "models/format/config.h"
#include "models/format/safetensors.h"
#include "models/transformer.h"

namespace taskmoe::fuzz {
namespace {

// TASKMOE_FUZZ_VERBOSE=1 says how far each input got (why a seed does not load, say).
void Report(const char* stage, const absl::Status& status) {
  static const bool verbose = std::getenv("TASKMOE_FUZZ_VERBOSE") != nullptr;
  if (verbose) std::fprintf(stderr, "model_load: %s: %s\n", stage, status.ToString().c_str());
}

void Run(std::string_view input) {
  const size_t split = input.find('\0');
  if (split == std::string_view::npos) return;
  absl::StatusOr<models::ModelConfig> config = models::ParseModelConfig(input.substr(0, split));
  Report("config", config.status());
  if (!config.ok()) return;
  absl::StatusOr<std::shared_ptr<const models::SafetensorsFile>> weights =
      models::SafetensorsFile::FromBytes(std::string(input.substr(split + 1)));
  Report("weights", weights.status());
  if (!weights.ok()) return;

  static constexpr kernels::Precision kPrecisions[] = {
      kernels::Precision::kF32, kernels::Precision::kBF16, kernels::Precision::kInt8};
  models::LoadOptions options;
  options.precision = kPrecisions[input.size() % 3];
  absl::StatusOr<std::shared_ptr<const models::TransformerModel>> model =
      models::TransformerModel::Create(*config, **weights, options);
  Report("model", model.status());
  if (!model.ok()) {
    TASKMOE_FUZZ_CHECK(!model.status().message().empty(), "an error without a message");
    return;
  }
  TASKMOE_FUZZ_CHECK((*model)->config() == *config, "the model's config differs from its file");

  absl::StatusOr<const models::TaskRoute*> route = (*model)->RouteForTask(0);
  TASKMOE_FUZZ_CHECK(route.ok(), std::string(route.status().message()));
  const std::vector<std::vector<int32_t>> sources = {
      {config->tasks[0].target_tag_id, config->special_tokens.eos}};
  models::DecodeOptions decode;
  decode.beam_size = 1 + static_cast<int>(input.size() / 3 % 2);
  decode.max_output_tokens = 3;
  absl::StatusOr<std::vector<models::Hypothesis>> result =
      models::Decode(**model, **route, sources, decode);
  Report("decode", result.status());
  if (!result.ok()) return;  // e.g. a source longer than max_positions
  TASKMOE_FUZZ_CHECK(result->size() == 1, absl::StrCat(result->size(), " hypotheses"));
  for (int32_t token : (*result)[0].tokens) {
    TASKMOE_FUZZ_CHECK(token >= 0 && token < config->vocab_size,
                       absl::StrCat("decoded token ", token, " outside the vocabulary"));
  }
}

}  // namespace
}  // namespace taskmoe::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  taskmoe::fuzz::Run(taskmoe::fuzz::AsText(data, size));
  return 0;
}
