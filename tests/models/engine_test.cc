// The engine on random-weight models: extracted subnetworks against the full model routed by
// task, batching and padding invariance, beam search, token-routed MoE against a naive
// per-token computation, task-routed MoE over blocks of several tasks' rows against each
// block alone, cancellation, and the loader's refusals.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>

#include "kernels/runtime.h"
#include "kernels/softmax.h"
#include "models/decoding.h"
#include "models/extract.h"
#include "models/ffn.h"
#include "models/testing/random_model.h"
#include "models/transformer.h"
#include "models/weight_store.h"

namespace taskmoe::models {
namespace {

using kernels::Shape;
using kernels::Tensor;

std::shared_ptr<const SafetensorsFile> Serialize(const std::vector<OwnedTensor>& tensors) {
  absl::StatusOr<std::shared_ptr<const SafetensorsFile>> file = SerializeTensors(tensors);
  EXPECT_TRUE(file.ok()) << file.status();
  return *file;
}

// Inputs for the FFN tests: sin(0.37 i), i = 0..n-1.
std::vector<float> SineValues(int64_t n) {
  std::vector<float> values(n);
  for (int64_t i = 0; i < n; ++i) values[i] = std::sin(0.37f * static_cast<float>(i));
  return values;
}

// A linear layer of `out` x `in` sine weights and a cosine bias, packed for f32. With
// `bf16_values` its weights are bf16 values (the low mantissa bits cut), which our own f32
// kernel runs on every CPU.
std::shared_ptr<const kernels::PackedLinear> SineLinear(int64_t out, int64_t in, uint32_t seed,
                                                        bool bf16_values = false) {
  std::vector<float> w(out * in), b(out);
  for (size_t i = 0; i < w.size(); ++i) {
    w[i] = std::sin(0.61f * i + seed) / 4;
    if (bf16_values) {
      uint32_t bits;
      std::memcpy(&bits, &w[i], sizeof(bits));
      bits &= 0xffff0000u;
      std::memcpy(&w[i], &bits, sizeof(bits));
    }
  }
  for (size_t i = 0; i < b.size(); ++i) b[i] = std::cos(0.29f * i + seed) / 8;
  auto linear =
      kernels::PackedLinear::Create(Tensor::FromVector(Shape{out, in}, w),
                                    Tensor::FromVector(Shape{out}, b), kernels::Precision::kF32);
  EXPECT_TRUE(linear.ok()) << linear.status();
  return std::make_shared<const kernels::PackedLinear>(*std::move(linear));
}

// A task-routed MoE layer (top 2) of `experts` experts d -> ff -> d of SineLinear weights.
MoeFfnWeights SineTaskMoe(int64_t experts, int64_t ff, int64_t d, bool bf16_values = false) {
  MoeFfnWeights moe;
  moe.routing = Routing::kTask;
  moe.top_k = 2;
  for (int64_t i = 0; i < experts; ++i) {
    moe.experts.push_back(
        {SineLinear(ff, d, 10 + i, bf16_values), SineLinear(d, ff, 50 + i, bf16_values)});
  }
  return moe;
}

std::shared_ptr<const TransformerModel> MustCreate(const ModelConfig& config,
                                                   const SafetensorsFile& weights) {
  absl::StatusOr<std::shared_ptr<const TransformerModel>> model =
      TransformerModel::Create(config, weights, {});
  EXPECT_TRUE(model.ok()) << model.status();
  return *model;
}

std::vector<std::vector<int32_t>> Sources(int count, int tag_id, uint32_t seed) {
  std::vector<std::vector<int32_t>> sources;
  uint32_t state = seed;
  for (int i = 0; i < count; ++i) {
    std::vector<int32_t> s{tag_id};
    const int len = 2 + i * 3 % 9;
    for (int t = 0; t < len; ++t) {
      state = state * 1103515245u + 12345u;
      s.push_back(8 + static_cast<int32_t>((state >> 16) % 40));
    }
    s.push_back(3);
    sources.push_back(s);
  }
  return sources;
}

// Log-probabilities of every step of teacher-forced decoding of `targets` (per sentence),
// concatenated: the model's full output distribution along a fixed path.
std::vector<float> TeacherForcedLogProbs(const TransformerModel& model, const TaskRoute& route,
                                         const std::vector<std::vector<int32_t>>& sources,
                                         const std::vector<int32_t>& path) {
  EncoderOutput encoder;
  EXPECT_TRUE(model.Encode(sources, route, encoder).ok());
  DecoderState state;
  EXPECT_TRUE(model.StartDecoding(encoder, 16, route, state).ok());
  std::vector<float> all;
  Tensor log_probs;
  std::vector<int32_t> tokens(sources.size(), model.config().special_tokens.bos);
  for (int32_t next : path) {
    EXPECT_TRUE(model.DecodeStep(tokens, route, state, log_probs).ok());
    EXPECT_TRUE(kernels::LogSoftmaxInPlace(log_probs).ok());
    all.insert(all.end(), log_probs.data<float>(), log_probs.data<float>() + log_probs.numel());
    tokens.assign(sources.size(), next);
  }
  return all;
}

// Folded (false) and unfolded (true, ExtractOptions::keep_experts) subnetworks.
class ExtractionTest : public ::testing::TestWithParam<std::tuple<ModelKind, bool>> {};

TEST_P(ExtractionTest, SubnetworkMatchesFullModelRoutedByTask) {
  const auto [kind, keep_experts] = GetParam();
  const ModelConfig config = MakeRandomModelConfig(TinyModelShape(), kind);
  const std::shared_ptr<const SafetensorsFile> weights = Serialize(MakeRandomTensors(config, 7));
  const std::shared_ptr<const TransformerModel> full = MustCreate(config, *weights);
  for (size_t t = 0; t < config.tasks.size(); ++t) {
    const TaskInfo& task = config.tasks[t];
    absl::StatusOr<Subnetwork> sub =
        ExtractSubnetwork(config, *weights, task.id, "sha256:" + std::string(64, 'a'),
                          {.keep_experts = keep_experts});
    ASSERT_TRUE(sub.ok()) << sub.status();
    EXPECT_LT(sub->parameters, full->parameter_count());
    // Through config.json and back, as a repository holds it (the form and the gates).
    absl::StatusOr<ModelConfig> reread = ParseModelConfig(ModelConfigToJson(sub->config));
    ASSERT_TRUE(reread.ok()) << reread.status();
    EXPECT_EQ(*reread, sub->config);
    for (const ExtractedLayer& layer : sub->config.extracted->layers) {
      EXPECT_EQ(layer.unfolded, keep_experts && !layer.all_experts) << layer.layer;
    }
    ASSERT_TRUE(sub->config.extracted.has_value());
    EXPECT_EQ(sub->config.extracted->task, task.id);
    const std::shared_ptr<const SafetensorsFile> sub_weights = Serialize(sub->tensors);
    const std::shared_ptr<const TransformerModel> small = MustCreate(*reread, *sub_weights);

    const auto sources = Sources(5, task.target_tag_id, 100 + t);
    const std::vector<int32_t> path = {9, 17, 23, 11, 30};
    const std::vector<float> expected =
        TeacherForcedLogProbs(*full, **full->RouteForTask(t), sources, path);
    const std::vector<float> actual =
        TeacherForcedLogProbs(*small, **small->RouteForTask(0), sources, path);
    ASSERT_EQ(actual.size(), expected.size());
    float worst = 0;
    for (size_t i = 0; i < actual.size(); ++i)
      worst = std::max(worst, std::fabs(actual[i] - expected[i]));
    // Folding changes only the summation order of the expert outputs: f32 rounding. Kept
    // apart, the experts run as the full model runs them: the same arithmetic.
    EXPECT_LT(worst, 1e-4f) << task.id;
    if (keep_experts) {
      EXPECT_EQ(worst, 0.0f) << task.id;
    }

    DecodeOptions greedy;
    greedy.max_output_tokens = 12;
    absl::StatusOr<std::vector<Hypothesis>> a =
        Decode(*full, **full->RouteForTask(t), sources, greedy);
    absl::StatusOr<std::vector<Hypothesis>> b =
        Decode(*small, **small->RouteForTask(0), sources, greedy);
    ASSERT_TRUE(a.ok() && b.ok());
    for (size_t i = 0; i < sources.size(); ++i)
      EXPECT_EQ((*a)[i].tokens, (*b)[i].tokens) << task.id;
  }
}

INSTANTIATE_TEST_SUITE_P(Kinds, ExtractionTest,
                         ::testing::Combine(::testing::Values(ModelKind::kTaskMoe,
                                                              ModelKind::kHybrid),
                                            ::testing::Bool()));

// Unfolded subnetworks of tasks whose choices share an expert hold it once in the store (the
// folded ones cannot: each folds its own pair with its own gates); their parameters are the
// folded ones' plus the k - 1 fc2 biases that folding sums into one.
TEST(WeightStore, UnfoldedSubnetworksShareTheExpertsTheirTasksShare) {
  const ModelConfig config = MakeRandomModelConfig(TinyModelShape(), ModelKind::kTaskMoe);
  const std::shared_ptr<const SafetensorsFile> weights = Serialize(MakeRandomTensors(config, 7));
  size_t shared[2] = {0, 0};
  int64_t parameters[2] = {0, 0}, task_layers = 0;
  std::vector<std::vector<ExtractedLayer>> layers(2);
  for (bool keep : {false, true}) {
    auto store = std::make_shared<WeightStore>();
    std::vector<std::shared_ptr<const TransformerModel>> models;
    for (const TaskInfo& task : config.tasks) {
      absl::StatusOr<Subnetwork> sub =
          ExtractSubnetwork(config, *weights, task.id, "sha256:test", {.keep_experts = keep});
      ASSERT_TRUE(sub.ok()) << sub.status();
      if (keep) {
        layers[models.size() % 2] = sub->config.extracted->layers;
        task_layers += static_cast<int64_t>(sub->config.extracted->layers.size());
      }
      auto model =
          TransformerModel::Create(sub->config, *Serialize(sub->tensors), {.weight_store = store});
      ASSERT_TRUE(model.ok()) << model.status();
      parameters[keep] += (*model)->parameter_count();
      models.push_back(*std::move(model));
    }
    shared[keep] = store->shared_bytes();
  }
  EXPECT_EQ(parameters[1] - parameters[0], task_layers * (config.moe->top_k - 1) * config.d_model);
  // Some expert chosen by two tasks in one layer (random routing tables: checked, not assumed).
  bool overlap = false;
  for (size_t i = 0; i < layers[0].size(); ++i) {
    for (int e : layers[0][i].experts) {
      const std::vector<int>& other = layers[1][i].experts;
      overlap = overlap || std::find(other.begin(), other.end(), e) != other.end();
    }
  }
  if (overlap) {
    EXPECT_GT(shared[1], shared[0]);
  } else {
    EXPECT_GE(shared[1], shared[0]);
  }
}

// The store counts models, not references: one model shares nothing (even though its layers
// and its keep-alive list both hold every linear), two tasks' subnetworks share their common
// layers, and unloading one makes those layers its own again and prunes its experts.
TEST(WeightStore, CountsModelsNotReferences) {
  const ModelConfig config = MakeRandomModelConfig(TinyModelShape(), ModelKind::kTaskMoe);
  const std::shared_ptr<const SafetensorsFile> weights = Serialize(MakeRandomTensors(config, 7));
  auto store = std::make_shared<WeightStore>();
  std::vector<std::shared_ptr<const TransformerModel>> models;
  for (size_t t = 0; t < 2; ++t) {
    absl::StatusOr<Subnetwork> sub =
        ExtractSubnetwork(config, *weights, config.tasks[t].id, "sha256:test");
    ASSERT_TRUE(sub.ok()) << sub.status();
    auto model =
        TransformerModel::Create(sub->config, *Serialize(sub->tensors), {.weight_store = store});
    ASSERT_TRUE(model.ok()) << model.status();
    models.push_back(*std::move(model));
    if (t == 0) {
      EXPECT_EQ(store->shared_bytes(), 0u);
      EXPECT_GE(store->total_bytes(), models[0]->memory_bytes() / 2);
    }
  }
  const size_t total_two = store->total_bytes();
  EXPECT_GT(store->shared_bytes(), 0u);
  EXPECT_LT(store->shared_bytes(), total_two);  // each task's own experts are not shared
  models.pop_back();
  store->Prune();
  EXPECT_EQ(store->shared_bytes(), 0u);
  EXPECT_LT(store->total_bytes(), total_two);
}

TEST(Extraction, TokenRoutedStacksKeepAllExperts) {
  const ModelConfig config = MakeRandomModelConfig(TinyModelShape(), ModelKind::kHybrid);
  const std::shared_ptr<const SafetensorsFile> weights = Serialize(MakeRandomTensors(config, 7));
  absl::StatusOr<Subnetwork> sub = ExtractSubnetwork(config, *weights, "en-de", "sha256:x");
  ASSERT_TRUE(sub.ok());
  ASSERT_TRUE(sub->config.moe.has_value());
  EXPECT_EQ(sub->config.moe->encoder.routing, Routing::kToken);
  EXPECT_EQ(sub->config.moe->decoder.routing, Routing::kNone);
  EXPECT_EQ(sub->config.decoder_ffn_dims[1], 2 * 48);
  EXPECT_FALSE(ExtractSubnetwork(config, *weights, "xx-yy", "sha256:x").ok());
  EXPECT_FALSE(ExtractSubnetwork(sub->config, *Serialize(sub->tensors), "en-de", "s").ok());
}

TEST(Engine, BatchingAndPaddingDoNotChangeResults) {
  for (ModelKind kind : {ModelKind::kDense, ModelKind::kTokenMoe}) {
    const ModelConfig config = MakeRandomModelConfig(TinyModelShape(), kind);
    const std::shared_ptr<const SafetensorsFile> weights = Serialize(MakeRandomTensors(config, 3));
    const std::shared_ptr<const TransformerModel> model = MustCreate(config, *weights);
    const TaskRoute& route = **model->RouteForTask(0);
    const auto sources = Sources(6, 5, 42);
    DecodeOptions options;
    options.max_output_tokens = 10;
    options.exact_scores = true;  // scores too, which a batch must not change either
    absl::StatusOr<std::vector<Hypothesis>> batched = Decode(*model, route, sources, options);
    ASSERT_TRUE(batched.ok()) << batched.status();
    for (size_t i = 0; i < sources.size(); ++i) {
      absl::StatusOr<std::vector<Hypothesis>> alone = Decode(*model, route, {sources[i]}, options);
      ASSERT_TRUE(alone.ok());
      EXPECT_EQ((*batched)[i].tokens, (*alone)[0].tokens);
      EXPECT_NEAR((*batched)[i].score, (*alone)[0].score, 1e-4);
    }
  }
}

TEST(Engine, EncoderStatesArePackedAndMatchEachSentenceEncodedAlone) {
  for (ModelKind kind : {ModelKind::kDense, ModelKind::kTaskMoe, ModelKind::kTokenMoe}) {
    const ModelConfig config = MakeRandomModelConfig(TinyModelShape(), kind);
    const std::shared_ptr<const SafetensorsFile> weights = Serialize(MakeRandomTensors(config, 5));
    const std::shared_ptr<const TransformerModel> model = MustCreate(config, *weights);
    const TaskRoute& route = **model->RouteForTask(0);
    // Lengths 4, 7, 10, 13, 8, 11, 5: the longest pads every other in a padded layout.
    const auto sources = Sources(7, 5, 11);
    EncoderOutput batch;
    ASSERT_TRUE(model->Encode(sources, route, batch).ok());
    int64_t tokens = 0, longest = 0;
    for (const auto& source : sources) {
      tokens += static_cast<int64_t>(source.size());
      longest = std::max<int64_t>(longest, static_cast<int64_t>(source.size()));
    }
    const int64_t d = config.d_model;
    ASSERT_EQ(batch.states.shape(), (Shape{tokens, d}));
    EXPECT_EQ(batch.max_len, longest);
    int64_t row = 0;
    for (size_t i = 0; i < sources.size(); ++i) {
      EncoderOutput alone;
      ASSERT_TRUE(model->Encode({sources[i]}, route, alone).ok());
      ASSERT_EQ(alone.states.dim(0), static_cast<int64_t>(sources[i].size()));
      float worst = 0;
      for (int64_t j = 0; j < alone.states.numel(); ++j) {
        worst = std::max(worst, std::fabs(alone.states.data<float>()[j] -
                                          batch.states.data<float>()[row * d + j]));
      }
      // The same per-token arithmetic; only matmul blocking over rows may differ.
      EXPECT_LT(worst, 1e-5f) << "sentence " << i;
      row += static_cast<int64_t>(sources[i].size());
    }
  }
}

TEST(Engine, BeamSearchFindsAtLeastTheGreedyScoreAndIsBatchInvariant) {
  const ModelConfig config = MakeRandomModelConfig(TinyModelShape(), ModelKind::kDense);
  const std::shared_ptr<const SafetensorsFile> weights = Serialize(MakeRandomTensors(config, 5));
  const std::shared_ptr<const TransformerModel> model = MustCreate(config, *weights);
  const TaskRoute& route = **model->RouteForTask(0);
  const auto sources = Sources(4, 5, 9);
  DecodeOptions greedy, beam;
  greedy.max_output_tokens = beam.max_output_tokens = 8;
  greedy.exact_scores = true;  // compared with beam search's, which are exact
  beam.beam_size = 4;
  absl::StatusOr<std::vector<Hypothesis>> g = Decode(*model, route, sources, greedy);
  absl::StatusOr<std::vector<Hypothesis>> b = Decode(*model, route, sources, beam);
  ASSERT_TRUE(g.ok() && b.ok()) << b.status();
  for (size_t i = 0; i < sources.size(); ++i) {
    // Greedy's hypothesis is one beam search also considers, among others.
    if ((*g)[i].reached_eos) {
      EXPECT_GE((*b)[i].score, (*g)[i].score - 1e-4f);
    }
    absl::StatusOr<std::vector<Hypothesis>> alone = Decode(*model, route, {sources[i]}, beam);
    ASSERT_TRUE(alone.ok());
    EXPECT_EQ((*b)[i].tokens, (*alone)[0].tokens);
  }
  beam.beam_size = 0;
  EXPECT_EQ(Decode(*model, route, sources, beam).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(Engine, CancelledSentencesLeaveTheBatch) {
  const ModelConfig config = MakeRandomModelConfig(TinyModelShape(), ModelKind::kDense);
  const std::shared_ptr<const SafetensorsFile> weights = Serialize(MakeRandomTensors(config, 5));
  const std::shared_ptr<const TransformerModel> model = MustCreate(config, *weights);
  const auto sources = Sources(3, 5, 1);
  for (int beam : {1, 3}) {
    DecodeOptions options;
    options.beam_size = beam;
    options.max_output_tokens = 8;
    options.ignore_eos = beam == 1;
    options.is_cancelled = [](int sentence) { return sentence == 1; };
    absl::StatusOr<std::vector<Hypothesis>> out =
        Decode(*model, **model->RouteForTask(0), sources, options);
    ASSERT_TRUE(out.ok());
    EXPECT_EQ((*out)[1].status.code(), absl::StatusCode::kCancelled);
    EXPECT_TRUE((*out)[0].status.ok());
    EXPECT_TRUE((*out)[2].status.ok());
  }
}

TEST(Engine, OnStepIsCalledBeforeEveryStep) {
  const ModelConfig config = MakeRandomModelConfig(TinyModelShape(), ModelKind::kDense);
  const std::shared_ptr<const SafetensorsFile> weights = Serialize(MakeRandomTensors(config, 5));
  const std::shared_ptr<const TransformerModel> model = MustCreate(config, *weights);
  const auto sources = Sources(2, 5, 1);
  for (int beam : {1, 2}) {
    DecodeOptions options;
    options.beam_size = beam;
    options.max_output_tokens = 6;
    options.ignore_eos = beam == 1;
    std::vector<int64_t> steps;
    std::vector<int> rows;
    options.on_step = [&](int64_t step, int step_rows) {
      steps.push_back(step);
      rows.push_back(step_rows);
    };
    ASSERT_TRUE(Decode(*model, **model->RouteForTask(0), sources, options).ok());
    // Greedy with ignore_eos runs every step with both sentences; beam search may finish early,
    // and decodes up to `beam` hypotheses of each sentence.
    if (beam == 1) {
      EXPECT_EQ(steps.size(), 6u);
      EXPECT_EQ(rows, std::vector<int>(6, 2));
    }
    EXPECT_FALSE(steps.empty());
    for (size_t i = 0; i < steps.size(); ++i) {
      EXPECT_EQ(steps[i], static_cast<int64_t>(i));
      EXPECT_GE(rows[i], 1);
      EXPECT_LE(rows[i], 2 * beam);
    }
  }
}

TEST(Ffn, TokenMoeMatchesPerTokenComputation) {
  const ModelConfig config = MakeRandomModelConfig(TinyModelShape(), ModelKind::kTokenMoe);
  const std::vector<OwnedTensor> tensors = MakeRandomTensors(config, 11);
  const std::shared_ptr<const SafetensorsFile> weights = Serialize(tensors);
  const std::shared_ptr<const TransformerModel> model = MustCreate(config, *weights);
  // Rebuild layer encoder.1's MoE from the raw tensors and compare with a per-token loop.
  auto find = [&](const std::string& name) -> const OwnedTensor& {
    for (const OwnedTensor& t : tensors) {
      if (t.name == name) return t;
    }
    ADD_FAILURE() << name;
    return tensors[0];
  };
  const std::string p = "encoder.layers.1.ffn";
  const int64_t e = 4, ff = 48, d = 32, rows = 7;
  MoeFfnWeights moe;
  moe.routing = Routing::kToken;
  moe.top_k = 2;
  auto slice = [&](const OwnedTensor& t, int64_t index, Shape shape) {
    const int64_t n = shape.numel();
    return Tensor::FromVector(shape, std::vector<float>(t.values.begin() + index * n,
                                                        t.values.begin() + (index + 1) * n));
  };
  for (int64_t i = 0; i < e; ++i) {
    auto fc1 = kernels::PackedLinear::Create(slice(find(p + ".experts.fc1.weight"), i, {ff, d}),
                                             slice(find(p + ".experts.fc1.bias"), i, {ff}),
                                             kernels::Precision::kF32);
    auto fc2 = kernels::PackedLinear::Create(slice(find(p + ".experts.fc2.weight"), i, {d, ff}),
                                             slice(find(p + ".experts.fc2.bias"), i, {d}),
                                             kernels::Precision::kF32);
    ASSERT_TRUE(fc1.ok() && fc2.ok());
    moe.experts.push_back({std::make_shared<const kernels::PackedLinear>(*std::move(fc1)),
                           std::make_shared<const kernels::PackedLinear>(*std::move(fc2))});
  }
  const OwnedTensor& router = find(p + ".router.weight");
  auto packed_router = kernels::PackedLinear::Create(Tensor::FromVector(Shape{e, d}, router.values),
                                                     Tensor(), kernels::Precision::kF32);
  ASSERT_TRUE(packed_router.ok());
  moe.router = std::make_shared<const kernels::PackedLinear>(*std::move(packed_router));

  const std::vector<float> xs = SineValues(rows * d);
  const Tensor x = Tensor::FromVector(Shape{rows, d}, xs);
  FfnWorkspace ws;
  Tensor y;
  ASSERT_TRUE(TokenMoeForward(moe, kernels::Activation::kRelu, x, ws, y).ok());
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<float> logits(e);
    for (int64_t k = 0; k < e; ++k) {
      for (int64_t j = 0; j < d; ++j) logits[k] += router.values[k * d + j] * xs[r * d + j];
    }
    const ExpertChoice choice = ChooseExperts(logits.data(), e, 2);
    const Tensor row = Tensor::FromVector(
        Shape{1, d}, std::vector<float>(xs.begin() + r * d, xs.begin() + (r + 1) * d));
    std::vector<float> expected(d, 0.0f);
    for (size_t c = 0; c < choice.experts.size(); ++c) {
      Tensor out;
      FfnWorkspace one;
      ASSERT_TRUE(
          DenseFfnForward(moe.experts[choice.experts[c]], kernels::Activation::kRelu, row, one, out)
              .ok());
      for (int64_t j = 0; j < d; ++j) expected[j] += choice.gates[c] * out.data<float>()[j];
    }
    for (int64_t j = 0; j < d; ++j) EXPECT_NEAR(y.data<float>()[r * d + j], expected[j], 1e-5);
  }
}

// Rows of several tasks through one task-routed MoE layer: each block's rows must get what
// TaskMoeForward gives them alone. The blocks overlap in experts at different slots, one chose
// three experts (where the order of the sum matters), and one reaches the same expert objects
// through another MoeFfnWeights (as subnetworks sharing experts through a weight store would).
TEST(TaskMoe, GroupedBlocksGetTheirOwnChoicesOutputs) {
  const int64_t ff = 24, d = 16;
  const MoeFfnWeights moe = SineTaskMoe(5, ff, d);
  MoeFfnWeights other = moe;  // experts 3 and 1 only, the same objects
  other.experts = {moe.experts[3], moe.experts[1]};
  const std::vector<ExpertChoice> choices = {{{1, 3}, {0.7f, 0.3f}},
                                             {{3, 0}, {0.55f, 0.45f}},
                                             {{2, 4, 1}, {0.5f, 0.3f, 0.2f}},
                                             {{1, 3}, {0.7f, 0.3f}},
                                             {{0, 1}, {0.6f, 0.4f}}};
  const std::vector<const MoeFfnWeights*> owners = {&moe, &moe, &moe, &moe, &other};
  const std::vector<int64_t> block_rows = {3, 2, 4, 1, 2};
  std::vector<TaskMoeBlock> blocks;
  int64_t rows = 0;
  for (size_t b = 0; b < choices.size(); ++b) {
    blocks.push_back({owners[b], &choices[b], block_rows[b]});
    rows += block_rows[b];
  }
  const std::vector<float> xs = SineValues(rows * d);
  const Tensor x = Tensor::FromVector(Shape{rows, d}, xs);
  FfnWorkspace ws;
  Tensor y;
  ASSERT_TRUE(GroupedTaskMoeForward(blocks, kernels::Activation::kRelu, x, ws, y).ok());
  EXPECT_EQ(ws.distinct_experts.size(), 5u);  // expert 3 and 1 of `other` are moe's
  int64_t first = 0;
  for (size_t b = 0; b < blocks.size(); ++b) {
    const Tensor block = Tensor::FromVector(
        Shape{block_rows[b], d},
        std::vector<float>(xs.begin() + first * d, xs.begin() + (first + block_rows[b]) * d));
    FfnWorkspace alone_ws;
    Tensor alone;
    ASSERT_TRUE(
        TaskMoeForward(*owners[b], choices[b], kernels::Activation::kRelu, block, alone_ws, alone)
            .ok());
    for (int64_t i = 0; i < block_rows[b] * d; ++i) {
      EXPECT_NEAR(y.data<float>()[first * d + i], alone.data<float>()[i], 1e-5) << "block " << b;
    }
    first += block_rows[b];
  }
  // Blocks that do not cover the rows, or name an expert the layer lacks: refused.
  blocks.back().rows = 1;
  absl::Status s = GroupedTaskMoeForward(blocks, kernels::Activation::kRelu, x, ws, y);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("cover"), std::string::npos) << s;
  blocks.back().rows = 2;
  const ExpertChoice missing = {{0, 7}, {0.5f, 0.5f}};
  blocks.front().choice = &missing;
  s = GroupedTaskMoeForward(blocks, kernels::Activation::kRelu, x, ws, y);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("expert 7"), std::string::npos) << s;
}

// With weights our own kernel runs (bf16 values), work enough and small shares, the grouped
// layer runs its experts side by side, one per thread; a row's result must not depend on that:
// the same bits as on one thread, where the experts run one after another.
TEST(TaskMoe, GroupedExpertsGiveTheSameBitsOnOneThreadAndOnTwo) {
  const int64_t d = 64;
  const MoeFfnWeights moe = SineTaskMoe(6, 128, d, true);
  for (const DenseFfnWeights& expert : moe.experts) {
    ASSERT_TRUE(expert.fc1->RunsOwnKernel()) << kernels::MatmulPathName(expert.fc1->path());
  }
  const std::vector<ExpertChoice> choices = {{{1, 3}, {0.7f, 0.3f}},
                                             {{3, 0}, {0.55f, 0.45f}},
                                             {{2, 4}, {0.5f, 0.5f}},
                                             {{5, 1}, {0.6f, 0.4f}},
                                             {{0, 2}, {0.8f, 0.2f}}};
  const std::vector<int64_t> block_rows = {3, 7, 1, 5, 4};
  std::vector<TaskMoeBlock> blocks;
  int64_t rows = 0;
  for (size_t b = 0; b < choices.size(); ++b) {
    blocks.push_back({&moe, &choices[b], block_rows[b]});
    rows += block_rows[b];
  }
  const Tensor x = Tensor::FromVector(Shape{rows, d}, SineValues(rows * d));
  const int previous = kernels::NumThreads();
  Tensor one, two;
  FfnWorkspace ws;
  ASSERT_TRUE(kernels::SetNumThreads(1).ok());
  ASSERT_TRUE(GroupedTaskMoeForward(blocks, kernels::Activation::kRelu, x, ws, one).ok());
  ASSERT_TRUE(kernels::SetNumThreads(2).ok());
  for (int pass = 0; pass < 20; ++pass) {  // the experts land on either thread
    ASSERT_TRUE(GroupedTaskMoeForward(blocks, kernels::Activation::kRelu, x, ws, two).ok());
    ASSERT_EQ(std::memcmp(one.raw_data(), two.raw_data(), one.bytes()), 0) << "pass " << pass;
  }
  EXPECT_GE(ws.expert_inputs.size(), 6u);  // they did run side by side
  // Shares above 64 rows (an encoder pass over many sentences) run one expert after another,
  // on shared buffers, whose memory does not grow with the experts: the same bits again.
  blocks[1].rows = 70;
  blocks[3].rows = 60;
  const int64_t big_rows = 3 + 70 + 1 + 60 + 4;
  const Tensor big_x = Tensor::FromVector(Shape{big_rows, d}, SineValues(big_rows * d));
  FfnWorkspace big_ws;
  ASSERT_TRUE(GroupedTaskMoeForward(blocks, kernels::Activation::kRelu, big_x, big_ws, two).ok());
  EXPECT_TRUE(big_ws.expert_inputs.empty());
  ASSERT_TRUE(kernels::SetNumThreads(1).ok());
  ASSERT_TRUE(GroupedTaskMoeForward(blocks, kernels::Activation::kRelu, big_x, big_ws, one).ok());
  EXPECT_EQ(std::memcmp(one.raw_data(), two.raw_data(), one.bytes()), 0);
  ASSERT_TRUE(kernels::SetNumThreads(previous).ok());
}

TEST(Gating, SoftmaxTopKRenormalise) {
  const float logits[4] = {0.0f, 2.0f, 1.0f, 2.0f};
  const ExpertChoice c = ChooseExperts(logits, 4, 2);
  EXPECT_EQ(c.experts, (std::vector<int>{1, 3}));  // tie: lower index first
  EXPECT_FLOAT_EQ(c.gates[0], 0.5f);
  const ExpertChoice three = ChooseExperts(logits, 4, 3);
  const float e1 = std::exp(1.0f - 2.0f);
  EXPECT_FLOAT_EQ(three.gates[2], e1 / (2.0f + e1));
}

// Per decoder layer: self q/k/v (fused) and out, cross q and out (d x d each), then the FFN; then
// the output projection. Counted by hand for the tiny shape (d 32, ff 48, vocab 50, 4 experts,
// top-2, MoE in layer 1 of 2). Bytes are checked at int8: each counted layer as packed alone
// (oneDNN's blocked layout pads such tiny shapes).
TEST(Engine, DecoderStepCostCountsTheLayersOneStepRuns) {
  constexpr int64_t d = 32, ff = 48, vocab = 50, attention = 6 * d * d, ffn = 2 * d * ff;
  auto packed_bytes = [](int64_t out, int64_t in, bool bias) -> size_t {
    Tensor w = Tensor::Allocate(kernels::DType::kF32, Shape{out, in});
    std::fill_n(w.data<float>(), w.numel(), 0.5f);
    Tensor b = Tensor::Allocate(kernels::DType::kF32, Shape{out});
    std::fill_n(b.data<float>(), b.numel(), 0.5f);
    absl::StatusOr<kernels::PackedLinear> linear =
        kernels::PackedLinear::Create(w, bias ? b : Tensor(), kernels::Precision::kInt8);
    return linear.ok() ? linear->memory_bytes() : 0;
  };
  // Self-attention's fused q/k/v, its output, cross-attention's query and output (the fused
  // cross keys/values run once per sentence, not per step).
  const size_t attention_bytes = packed_bytes(3 * d, d, true) + 3 * packed_bytes(d, d, true);
  const size_t expert_bytes = packed_bytes(ff, d, true) + packed_bytes(d, ff, true);
  const size_t head_bytes = packed_bytes(vocab, d, false);
  std::map<ModelKind, StepCost> costs;
  for (ModelKind kind : {ModelKind::kDense, ModelKind::kTaskMoe, ModelKind::kTokenMoe}) {
    const ModelConfig config = MakeRandomModelConfig(TinyModelShape(), kind);
    const std::shared_ptr<const SafetensorsFile> weights = Serialize(MakeRandomTensors(config, 3));
    auto model =
        TransformerModel::Create(config, *weights, {.precision = kernels::Precision::kInt8});
    ASSERT_TRUE(model.ok()) << model.status();
    costs[kind] = (*model)->DecoderStepCost(**(*model)->RouteForTask(0));
    // The path the model reports is an int8 one that its step's layers actually run.
    const kernels::MatmulPath reported = (*model)->matmul_path();
    EXPECT_EQ(kernels::MatmulPathPrecision(reported), kernels::Precision::kInt8);
    EXPECT_GT(costs[kind].linears_per_path[reported], 0) << kernels::MatmulPathName(reported);
  }
  EXPECT_EQ(costs[ModelKind::kDense].macs_per_row, 2 * (attention + ffn) + d * vocab);
  EXPECT_EQ(costs[ModelKind::kDense].weight_bytes,
            2 * (attention_bytes + expert_bytes) + head_bytes);
  // Task routing: the task's two experts in layer 1, nothing else.
  EXPECT_EQ(costs[ModelKind::kTaskMoe].macs_per_row, 2 * attention + 3 * ffn + d * vocab);
  EXPECT_EQ(costs[ModelKind::kTaskMoe].weight_bytes,
            2 * attention_bytes + 3 * expert_bytes + head_bytes);
  // Token routing: each row runs the router and two experts, the step reads all four (and the
  // router, kept f32 and padded by its packing on AVX-512, so only bounded here).
  EXPECT_EQ(costs[ModelKind::kTokenMoe].macs_per_row, 2 * attention + 3 * ffn + 4 * d + d * vocab);
  EXPECT_GE(costs[ModelKind::kTokenMoe].weight_bytes,
            2 * attention_bytes + 5 * expert_bytes + head_bytes + sizeof(float) * 4 * d);
  // Per kernel path: 4 attention projections and 2 FFN matmuls per layer, and the head, all on
  // an int8 path (which one depends on the CPU, and on AMX on the shape); token routing adds
  // its f32 router and the experts it may read.
  auto int8_linears = [](const StepCost& cost) {
    int count = 0;
    for (const auto& [path, n] : cost.linears_per_path) {
      if (kernels::MatmulPathPrecision(path) == kernels::Precision::kInt8) count += n;
    }
    return count;
  };
  EXPECT_EQ(int8_linears(costs[ModelKind::kDense]), 13);
  EXPECT_EQ(int8_linears(costs[ModelKind::kTaskMoe]), 15);
  EXPECT_EQ(costs[ModelKind::kTokenMoe].linears_per_path.at(
                kernels::DefaultMatmulPath(kernels::Precision::kF32)),
            1);
}

TEST(Loader, RefusesTensorsThatDisagreeWithTheConfig) {
  const ModelConfig config = MakeRandomModelConfig(TinyModelShape(), ModelKind::kTaskMoe);
  std::vector<OwnedTensor> tensors = MakeRandomTensors(config, 1);
  // Missing tensor.
  {
    std::vector<OwnedTensor> missing(tensors.begin() + 1, tensors.end());
    absl::StatusOr<std::shared_ptr<const TransformerModel>> m =
        TransformerModel::Create(config, *Serialize(missing), {});
    ASSERT_FALSE(m.ok());
    EXPECT_NE(m.status().message().find(tensors[0].name), std::string::npos) << m.status();
  }
  // Unexpected tensor.
  {
    std::vector<OwnedTensor> extra = tensors;
    extra.push_back({"decoder.layers.9.ffn.fc1.weight", {2, 2}, {1, 2, 3, 4}});
    absl::StatusOr<std::shared_ptr<const TransformerModel>> m =
        TransformerModel::Create(config, *Serialize(extra), {});
    ASSERT_FALSE(m.ok());
    EXPECT_NE(m.status().message().find("decoder.layers.9.ffn.fc1.weight"), std::string::npos);
  }
  // A stored rank the engine has no shape for (the loader checks shapes from the header).
  {
    std::vector<OwnedTensor> deep = tensors;
    for (OwnedTensor& t : deep) {
      if (t.name == "decoder.layers.0.ffn.fc1.weight") {
        t.shape = {1, 1, 1, 1, 1, t.shape[0], t.shape[1]};
      }
    }
    absl::StatusOr<std::shared_ptr<const TransformerModel>> m =
        TransformerModel::Create(config, *Serialize(deep), {});
    ASSERT_FALSE(m.ok());
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(m.status().message().find("decoder.layers.0.ffn.fc1.weight"), std::string::npos)
        << m.status();
  }
  // An expert stack of the wrong shape, through a weight store (its experts are never read).
  {
    std::vector<OwnedTensor> wrong = tensors;
    std::string stack;
    for (OwnedTensor& t : wrong) {
      if (stack.empty() && t.name.ends_with(".experts.fc1.weight")) {
        stack = t.name;
        t.shape = {t.shape[0], t.shape[2], t.shape[1]};
      }
    }
    ASSERT_FALSE(stack.empty());
    absl::StatusOr<std::shared_ptr<const TransformerModel>> m = TransformerModel::Create(
        config, *Serialize(wrong), {.weight_store = std::make_shared<WeightStore>()});
    ASSERT_FALSE(m.ok());
    EXPECT_NE(m.status().message().find(stack), std::string::npos) << m.status();
    EXPECT_NE(m.status().message().find("config implies"), std::string::npos) << m.status();
  }
  // Wrong shape.
  for (OwnedTensor& t : tensors) {
    if (t.name == "decoder.layers.0.ffn.fc1.weight") {
      t.shape = {t.shape[1], t.shape[0]};
    }
  }
  absl::StatusOr<std::shared_ptr<const TransformerModel>> m =
      TransformerModel::Create(config, *Serialize(tensors), {});
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("decoder.layers.0.ffn.fc1.weight"), std::string::npos);
}

TEST(Loader, RefusesBadDecodeInputs) {
  const ModelConfig config = MakeRandomModelConfig(TinyModelShape(), ModelKind::kDense);
  const std::shared_ptr<const TransformerModel> model =
      MustCreate(config, *Serialize(MakeRandomTensors(config, 1)));
  const TaskRoute& route = **model->RouteForTask(0);
  DecodeOptions options;
  EXPECT_FALSE(Decode(*model, route, {{}}, options).ok());                           // empty source
  EXPECT_FALSE(Decode(*model, route, {{5, 50, 3}}, options).ok());                   // id >= vocab
  EXPECT_FALSE(Decode(*model, route, {std::vector<int32_t>(65, 9)}, options).ok());  // too long
  EXPECT_FALSE(model->RouteForTask(99).ok());
  EXPECT_TRUE(Decode(*model, route, {}, options).ok());
}

}  // namespace
}  // namespace taskmoe::models
