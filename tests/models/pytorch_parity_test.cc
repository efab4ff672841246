// The engine against the reference trainer's own forward pass: small random models built and
// exported by training (tests/fixtures/make_engine_fixtures.py), with the
// teacher-forced log-probabilities PyTorch computed for a fixed batch. Every kind of FFN,
// routing and task key, tied and untied embeddings, ReLU and GELU.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "kernels/softmax.h"
#include "models/format/safetensors.h"
#include "models/transformer.h"

namespace taskmoe::models {
namespace {

using kernels::Tensor;

const std::string kFixtures = TASKMOE_TEST_FIXTURES_DIR "/engine/";

class PyTorchParityTest : public ::testing::TestWithParam<std::string> {};

TEST_P(PyTorchParityTest, TeacherForcedLogProbsMatch) {
  const std::string dir = kFixtures + GetParam();
  absl::StatusOr<std::shared_ptr<const TransformerModel>> model = TransformerModel::Load(dir, {});
  ASSERT_TRUE(model.ok()) << model.status();
  std::ifstream in(dir + "/inputs.json");
  ASSERT_TRUE(in.good());
  const nlohmann::json inputs = nlohmann::json::parse(in);
  const auto sources = inputs["sources"].get<std::vector<std::vector<int32_t>>>();
  const auto targets = inputs["targets"].get<std::vector<std::vector<int32_t>>>();
  const auto task_of_row = inputs["task_of_row"].get<std::vector<int>>();
  absl::StatusOr<std::shared_ptr<const SafetensorsFile>> expected_file =
      SafetensorsFile::Open(dir + "/expected.safetensors");
  ASSERT_TRUE(expected_file.ok());
  absl::StatusOr<Tensor> expected = (*expected_file)->GetFloat("log_probs");
  ASSERT_TRUE(expected.ok());
  const int64_t steps = expected->dim(1), vocab = expected->dim(2);

  // The engine routes a batch by one task: decode each task's rows together (so padding
  // between sources of different lengths is exercised too).
  std::map<int, std::vector<size_t>> rows_of_task;
  for (size_t r = 0; r < sources.size(); ++r) rows_of_task[task_of_row[r]].push_back(r);
  float worst = 0;
  for (const auto& [task, rows] : rows_of_task) {
    std::vector<std::vector<int32_t>> batch;
    for (size_t r : rows) batch.push_back(sources[r]);
    const TaskRoute& route = **(*model)->RouteForTask(task);
    EncoderOutput encoder;
    ASSERT_TRUE((*model)->Encode(batch, route, encoder).ok());
    DecoderState state;
    ASSERT_TRUE((*model)->StartDecoding(encoder, steps, route, state).ok());
    Tensor log_probs;
    for (int64_t t = 0; t < steps; ++t) {
      std::vector<int32_t> tokens;
      for (size_t r : rows) tokens.push_back(targets[r][t]);
      ASSERT_TRUE((*model)->DecodeStep(tokens, route, state, log_probs).ok());
      ASSERT_TRUE(kernels::LogSoftmaxInPlace(log_probs).ok());
      for (size_t i = 0; i < rows.size(); ++i) {
        const float* want = expected->data<float>() + (rows[i] * steps + t) * vocab;
        const float* got = log_probs.data<float>() + i * vocab;
        for (int64_t v = 0; v < vocab; ++v) worst = std::max(worst, std::fabs(want[v] - got[v]));
      }
    }
  }
  // f32 throughout on both sides; differences are summation order only.
  EXPECT_LT(worst, 1e-4f) << GetParam();
}

INSTANTIATE_TEST_SUITE_P(Kinds, PyTorchParityTest,
                         ::testing::Values("dense", "hybrid", "tokenmoe", "taskkeys"));

}  // namespace
}  // namespace taskmoe::models
