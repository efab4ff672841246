// Issue 7's "no per-token allocation in the decoding loop", checked by counting every heap
// allocation of the process (counting_malloc.h): with a warm DecodeWorkspace, nothing outside
// oneDNN allocates during decoding steps (our code, the C++ library, OpenMP), and a whole
// decode allocates only its results, whether it runs 6 steps or 48. oneDNN's
// primitive::execute builds its argument map on the heap at every call (a handful of small
// blocks, freed before it returns; nothing a caller can change), so those are counted apart
// and only checked not to outlive the call. Covers every model kind and precision, greedy and
// beam search, and the linear layer on its own.
#include <gtest/gtest.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "kernels/matmul.h"
#include "kernels/runtime.h"
#include "models/decoding.h"
#include "models/extract.h"
#include "models/testing/random_model.h"
#include "models/transformer.h"
#include "models/weight_store.h"
#include "tests/models/counting_malloc.h"

namespace taskmoe::models {
namespace {

using kernels::Precision;
using kernels::Shape;
using kernels::Tensor;
using taskmoe::testing::AllocationCounts;
using taskmoe::testing::CurrentAllocationCounts;

constexpr int kSentences = 5;

// TinyModelShape, wider: the buffers are then large enough for the allocator's choices to be
// realistic.
ModelShape SmallShape() {
  ModelShape shape = TinyModelShape();
  shape.d_model = 64;
  shape.d_ff = 96;
  shape.vocab_size = 300;
  shape.max_positions = 128;
  return shape;
}

std::vector<std::vector<int32_t>> Sources(const ModelConfig& config) {
  std::vector<std::vector<int32_t>> sources;
  for (int i = 0; i < kSentences; ++i) {
    std::vector<int32_t> s{config.tasks[0].target_tag_id};
    for (int t = 0; t < 3 + 4 * i; ++t) s.push_back(10 + (i * 37 + t * 11) % 250);
    s.push_back(config.special_tokens.eos);
    sources.push_back(std::move(s));
  }
  return sources;
}

class AllocationTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // Load oneDNN's code paths first: attribution needs the library mapped.
    ASSERT_TRUE(taskmoe::testing::AttributeAllocationsTo("libdnnl.so").ok());
  }
};

// Counts seen by on_step at each step, and around the whole Decode (results still alive).
struct Counts {
  std::vector<AllocationCounts> at_step;
  AllocationCounts total;
};

Counts CountDecode(const TransformerModel& model, const std::vector<std::vector<int32_t>>& sources,
                   DecodeOptions options, DecodeWorkspace& workspace) {
  Counts counts;
  counts.at_step.reserve(options.max_output_tokens);
  options.on_step = [&](int64_t, int) { counts.at_step.push_back(CurrentAllocationCounts()); };
  const AllocationCounts before = CurrentAllocationCounts();
  absl::StatusOr<std::vector<Hypothesis>> out =
      Decode(model, **model.RouteForTask(0), sources, options, &workspace);
  counts.total = CurrentAllocationCounts() - before;
  EXPECT_TRUE(out.ok()) << out.status();
  return counts;
}

struct Case {
  ModelKind kind;
  Precision precision;
  int beam;
};

std::string Describe(const Case& c) {
  const char* kinds[] = {"Dense", "TaskMoe", "TokenMoe", "Hybrid"};
  return std::string(kinds[static_cast<int>(c.kind)]) + "_" + kernels::PrecisionName(c.precision) +
         "_beam" + std::to_string(c.beam);
}

std::string CaseName(const ::testing::TestParamInfo<Case>& info) { return Describe(info.param); }

class DecodeAllocationTest : public ::testing::WithParamInterface<Case>, public AllocationTest {};

TEST_P(DecodeAllocationTest, StepsAllocateNothingOnceTheWorkspaceIsWarm) {
  const Case& c = GetParam();
  const ModelConfig config = MakeRandomModelConfig(SmallShape(), c.kind);
  auto weights = MakeRandomWeights(config, 5);
  ASSERT_TRUE(weights.ok()) << weights.status();
  auto model = TransformerModel::Create(config, **weights, {.precision = c.precision});
  ASSERT_TRUE(model.ok()) << model.status();
  const auto sources = Sources(config);

  DecodeOptions options;
  options.beam_size = c.beam;
  options.ignore_eos = c.beam == 1;  // random weights: let greedy run its full length
  DecodeWorkspace workspace;
  for (int steps : {48, 6}) {  // warm-up: every buffer, primitive and batch size seen once
    options.max_output_tokens = steps;
    CountDecode(**model, sources, options, workspace);
  }
  for (int steps : {6, 48}) {
    options.max_output_tokens = steps;
    const Counts counts = CountDecode(**model, sources, options, workspace);
    ASSERT_GE(counts.at_step.size(), 2u);
    // Outside oneDNN, only the results: their vector and one token vector per sentence.
    EXPECT_LE(counts.total.unattributed(), 1 + kSentences) << steps << " steps";
    EXPECT_LE(counts.total.live, 1 + kSentences) << steps << " steps";
    const AllocationCounts in_loop = counts.at_step.back() - counts.at_step.front();
    // A finished sentence's best beam hypothesis is spelled out once, when it leaves.
    const int64_t results_in_loop = c.beam == 1 ? 0 : kSentences;
    EXPECT_LE(in_loop.unattributed(), results_in_loop) << steps << " steps";
    EXPECT_LE(in_loop.live, results_in_loop) << steps << " steps";
    if (steps == 48) {
      std::printf("%s: oneDNN made %.1f allocations per step (freed within the call)\n",
                  Describe(c).c_str(),
                  static_cast<double>(in_loop.attributed) / (counts.at_step.size() - 1));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(KindsAndPrecisions, DecodeAllocationTest,
                         ::testing::Values(Case{ModelKind::kDense, Precision::kF32, 1},
                                           Case{ModelKind::kTaskMoe, Precision::kF32, 1},
                                           Case{ModelKind::kTokenMoe, Precision::kF32, 1},
                                           Case{ModelKind::kHybrid, Precision::kF32, 1},
                                           Case{ModelKind::kHybrid, Precision::kBF16, 1},
                                           Case{ModelKind::kHybrid, Precision::kInt8, 1},
                                           Case{ModelKind::kTaskMoe, Precision::kF32, 4},
                                           Case{ModelKind::kHybrid, Precision::kInt8, 4}),
                         CaseName);

// A continuous batch at the engine level: rows of two extracted subnetworks (sharing attention
// and embeddings through a weight store, not their task-MoE layers) sit interleaved, so the
// per-task layers run on gathered rows; rows leave and new rows join between steps. Once a
// first pass has grown every buffer, the same pass again allocates nothing outside oneDNN:
// neither its steps nor its admissions (encoder pass, appended cache rows), nor the steps of
// greedy rows beside beam-searched ones (full logits for some groups) and the beam's row
// reordering.
TEST_F(AllocationTest, MixedTaskStepsAndAdmissionsAllocateNothingOnceWarm) {
  const ModelConfig config = MakeRandomModelConfig(SmallShape(), ModelKind::kTaskMoe);
  auto weights = MakeRandomWeights(config, 5);
  ASSERT_TRUE(weights.ok()) << weights.status();
  auto store = std::make_shared<WeightStore>();
  std::vector<std::shared_ptr<const TransformerModel>> models;
  for (int t = 0; t < 2; ++t) {
    auto sub =
        ExtractSubnetwork(config, **weights, config.tasks[t].id, "sha256:" + std::string(64, '0'));
    ASSERT_TRUE(sub.ok()) << sub.status();
    auto file = SerializeTensors(sub->tensors);
    ASSERT_TRUE(file.ok()) << file.status();
    auto model = TransformerModel::Create(sub->config, **file, {.weight_store = store});
    ASSERT_TRUE(model.ok()) << model.status();
    models.push_back(*std::move(model));
  }
  const TransformerModel& a = *models[0];
  const TransformerModel& b = *models[1];
  const TaskRoute& route_a = **a.RouteForTask(0);
  const TaskRoute& route_b = **b.RouteForTask(0);
  const auto sources = Sources(config);  // kSentences
  // Joining rows: [a a b b a], then [b a] after two rows leave.
  const std::vector<RowGroup> first = {{&a, &route_a, 2}, {&b, &route_b, 2}, {&a, &route_a, 1}};
  const std::vector<RowGroup> second = {{&b, &route_b, 1}, {&a, &route_a, 1}};
  const std::vector<std::vector<int32_t>> second_sources = {sources[1], sources[3]};

  EncoderOutput encoder;
  DecoderState state;
  GreedyHead head;
  std::vector<RowGroup> groups;
  std::vector<int32_t> tokens;
  const std::vector<int32_t> keep = {0, 2, 3};  // one `a` and one `b` leave
  const std::vector<int32_t> beam_moves = {0, 1, 2, 4, 3};
  auto step = [&] {
    tokens.assign(state.batch, config.special_tokens.bos);
    ASSERT_TRUE(TransformerModel::DecodeStepGreedy(groups, tokens, state, head).ok());
  };
  auto pass = [&](std::vector<AllocationCounts>& marks) {
    const EncoderOutput empty;
    ASSERT_TRUE(a.StartDecoding(empty, 24, route_a, state).ok());
    marks.push_back(CurrentAllocationCounts());
    ASSERT_TRUE(TransformerModel::Encode(first, sources, encoder).ok());
    ASSERT_TRUE(TransformerModel::AddRows(first, encoder, 24, state).ok());
    groups = first;
    marks.push_back(CurrentAllocationCounts());
    for (int i = 0; i < 4; ++i) step();
    marks.push_back(CurrentAllocationCounts());
    ASSERT_TRUE(state.SelectRows(keep).ok());  // rows 0, 2, 3: [a b a]
    marks.push_back(CurrentAllocationCounts());
    ASSERT_TRUE(TransformerModel::Encode(second, second_sources, encoder).ok());
    marks.push_back(CurrentAllocationCounts());
    ASSERT_TRUE(TransformerModel::AddRows(second, encoder, 24, state).ok());
    groups = {{&a, &route_a, 1}, {&b, &route_b, 1}, {&a, &route_a, 1}, second[0], second[1]};
    marks.push_back(CurrentAllocationCounts());
    for (int i = 0; i < 6; ++i) step();
    marks.push_back(CurrentAllocationCounts());
    // Rows [a b a b a], the last two asking for full logits as beam rows do, then swapping.
    groups = {{&a, &route_a, 1},
              {&b, &route_b, 1},
              {&a, &route_a, 1},
              {&b, &route_b, 1, true},
              {&a, &route_a, 1, true}};
    for (int i = 0; i < 3; ++i) {
      step();
      ASSERT_TRUE(state.SelectRows(beam_moves).ok());
    }
    marks.push_back(CurrentAllocationCounts());
  };
  std::vector<AllocationCounts> warm_up, marks;
  marks.reserve(16);  // so that taking a mark does not allocate
  pass(warm_up);
  pass(marks);
  const char* stages[] = {
      "first admission",    "steps", "leaving", "second encoder pass", "second admission", "steps",
      "steps beside a beam"};
  for (size_t i = 0; i + 1 < marks.size(); ++i) {
    const AllocationCounts made = marks[i + 1] - marks[i];
    EXPECT_EQ(made.unattributed(), 0) << stages[i];
    EXPECT_EQ(made.live, 0) << stages[i];
  }
}

// The full TaskMoE model serving two tasks in one batch: their task-routed layers run each
// distinct expert once over the rows of both (GroupedTaskMoeForward), in the encoder and the
// decoder. Warm, an admission and its steps allocate nothing outside oneDNN.
TEST_F(AllocationTest, TaskMoeLayersGroupedByExpertAllocateNothingOnceWarm) {
  const ModelConfig config = MakeRandomModelConfig(SmallShape(), ModelKind::kTaskMoe);
  auto weights = MakeRandomWeights(config, 6);
  ASSERT_TRUE(weights.ok()) << weights.status();
  auto model = TransformerModel::Create(config, **weights, {});
  ASSERT_TRUE(model.ok()) << model.status();
  const TransformerModel& m = **model;
  const std::vector<RowGroup> groups = {
      {&m, *m.RouteForTask(0), 2}, {&m, *m.RouteForTask(1), 2}, {&m, *m.RouteForTask(0), 1}};
  const auto sources = Sources(config);
  EncoderOutput encoder;
  DecoderState state;
  GreedyHead head;
  std::vector<int32_t> tokens;
  auto pass = [&](std::vector<AllocationCounts>& marks) {
    ASSERT_TRUE(m.StartDecoding(EncoderOutput(), 24, **m.RouteForTask(0), state).ok());
    marks.push_back(CurrentAllocationCounts());
    ASSERT_TRUE(TransformerModel::Encode(groups, sources, encoder).ok());
    ASSERT_TRUE(TransformerModel::AddRows(groups, encoder, 24, state).ok());
    marks.push_back(CurrentAllocationCounts());
    for (int i = 0; i < 5; ++i) {
      tokens.assign(state.batch, config.special_tokens.bos);
      ASSERT_TRUE(TransformerModel::DecodeStepGreedy(groups, tokens, state, head).ok());
    }
    marks.push_back(CurrentAllocationCounts());
  };
  std::vector<AllocationCounts> warm_up, marks;
  marks.reserve(8);
  pass(warm_up);
  pass(marks);
  const char* stages[] = {"admission", "steps"};
  for (size_t i = 0; i + 1 < marks.size(); ++i) {
    const AllocationCounts made = marks[i + 1] - marks[i];
    EXPECT_EQ(made.unattributed(), 0) << stages[i];
    EXPECT_EQ(made.live, 0) << stages[i];
  }
}

TEST_F(AllocationTest, LinearForwardAllocatesOnlyInsideOneDnnAfterTheFirstCall) {
  for (Precision precision : {Precision::kF32, Precision::kBF16, Precision::kInt8}) {
    std::vector<float> values(96 * 64);
    for (size_t i = 0; i < values.size(); ++i) values[i] = 0.01f * static_cast<float>(i % 17);
    auto linear = kernels::PackedLinear::Create(Tensor::FromVector(Shape{96, 64}, values), Tensor(),
                                                precision);
    ASSERT_TRUE(linear.ok()) << linear.status();
    Tensor x = Tensor::Zeros(kernels::DType::kF32, Shape{7, 64});
    Tensor y;
    ASSERT_TRUE(linear->Forward(x, kernels::Activation::kRelu, y).ok());
    const AllocationCounts before = CurrentAllocationCounts();
    for (int i = 0; i < 10; ++i) {
      ASSERT_TRUE(linear->Forward(x, kernels::Activation::kRelu, y).ok());
    }
    const AllocationCounts made = CurrentAllocationCounts() - before;
    EXPECT_EQ(made.unattributed(), 0) << kernels::PrecisionName(precision);
    EXPECT_EQ(made.live, 0) << kernels::PrecisionName(precision);
    std::printf("%s linear: oneDNN made %.1f allocations per call\n",
                kernels::PrecisionName(precision), static_cast<double>(made.attributed) / 10.0);
  }
}

TEST_F(AllocationTest, CountsAndAttributes) {
  const AllocationCounts before = CurrentAllocationCounts();
  auto p = std::make_unique<std::vector<int>>(1000);
  AllocationCounts made = CurrentAllocationCounts() - before;
  EXPECT_EQ(made.total, 2);
  EXPECT_EQ(made.attributed, 0);
  EXPECT_EQ(made.live, 2);
  p.reset();
  EXPECT_EQ((CurrentAllocationCounts() - before).live, 0);
  // A oneDNN object made here allocates inside the library (the engine, which lives on, is
  // made first).
  kernels::Engine();
  const AllocationCounts before_onednn = CurrentAllocationCounts();
  {
    dnnl::memory::desc md({4, 4}, dnnl::memory::data_type::f32, dnnl::memory::format_tag::ab);
    dnnl::memory m(md, kernels::Engine());
  }
  made = CurrentAllocationCounts() - before_onednn;
  EXPECT_GT(made.attributed, 0);
  EXPECT_EQ(made.live, 0);
}

}  // namespace
}  // namespace taskmoe::models
