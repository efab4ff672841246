// Inputs on which the fuzz targets (fuzz/, docs/fuzzing.md) found bugs in models/ or kernels/,
// fed through the loader and the decoder of the normal builds. Each input is kept in
// fuzz/corpus/<target>/regression-*, so the fuzzers and the corpus replay tests
// (fuzz_corpus.<target>) start from it too.
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <string>

#include "kernels/matmul.h"
#include "models/decoding.h"
#include "models/format/config.h"
#include "models/format/safetensors.h"
#include "models/transformer.h"

namespace taskmoe::models {
namespace {

const std::string kCorpus = std::string(TASKMOE_SOURCE_DIR) + "/fuzz/corpus";

// A model_load input: config.json text, a NUL byte, the safetensors bytes.
struct ModelInput {
  std::string config, weights;
};

ModelInput ReadModelInput(const std::string& name) {
  const std::string path = kCorpus + "/model_load/" + name;
  std::ifstream file(path, std::ios::binary);
  EXPECT_TRUE(file.good()) << path;
  const std::string bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  const size_t split = bytes.find('\0');
  EXPECT_NE(split, std::string::npos) << path;
  if (split == std::string::npos) return {};
  return {bytes.substr(0, split), bytes.substr(split + 1)};
}

// A 4-wide model declaring 2^31-1 positions: the loader allocated its [max_positions, d_model]
// position table (32 GiB) before anything refused it. The config is now refused.
TEST(FuzzRegression, HugeMaxPositionsIsRefusedBeforeAnythingIsAllocated) {
  const ModelInput input = ReadModelInput("regression-max-positions.bin");
  absl::StatusOr<ModelConfig> config = ParseModelConfig(input.config);
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(config.status().message().find("max_positions"), std::string::npos) << config.status();
  absl::StatusOr<std::shared_ptr<const SafetensorsFile>> weights =
      SafetensorsFile::FromBytes(input.weights);
  EXPECT_TRUE(weights.ok()) << weights.status();  // the weights themselves are fine
}

// Finite but huge weights (up to 1e38) overflow to infinities and NaN in the activations and
// logits. Softmax's FastExp and int8 quantisation then converted NaN to integers, which is
// undefined behaviour (UBSan float-cast-overflow; GCC's -fsanitize=undefined does not include
// that check, clang's does). Such a model must still load and decode, at every precision, to
// tokens inside the vocabulary.
TEST(FuzzRegression, OverflowingWeightsDecodeAtEveryPrecision) {
  for (const char* name : {"regression-nan-fast-exp.bin", "regression-nan-int8.bin"}) {
    SCOPED_TRACE(name);
    const ModelInput input = ReadModelInput(name);
    absl::StatusOr<ModelConfig> config = ParseModelConfig(input.config);
    ASSERT_TRUE(config.ok()) << config.status();
    absl::StatusOr<std::shared_ptr<const SafetensorsFile>> weights =
        SafetensorsFile::FromBytes(input.weights);
    ASSERT_TRUE(weights.ok()) << weights.status();
    for (kernels::Precision precision :
         {kernels::Precision::kF32, kernels::Precision::kBF16, kernels::Precision::kInt8}) {
      SCOPED_TRACE(kernels::PrecisionName(precision));
      absl::StatusOr<std::shared_ptr<const TransformerModel>> model =
          TransformerModel::Create(*config, **weights, {.precision = precision});
      ASSERT_TRUE(model.ok()) << model.status();
      absl::StatusOr<const TaskRoute*> route = (*model)->RouteForTask(0);
      ASSERT_TRUE(route.ok()) << route.status();
      for (int beam : {1, 2}) {
        DecodeOptions options;
        options.beam_size = beam;
        options.max_output_tokens = 3;
        absl::StatusOr<std::vector<Hypothesis>> result =
            Decode(**model, **route, {{config->tasks[0].target_tag_id, config->special_tokens.eos}},
                   options);
        ASSERT_TRUE(result.ok()) << result.status();
        ASSERT_EQ(result->size(), 1u);
        for (int32_t token : (*result)[0].tokens) {
          EXPECT_GE(token, 0);
          EXPECT_LT(token, config->vocab_size);
        }
      }
    }
  }
}

}  // namespace
}  // namespace taskmoe::models
