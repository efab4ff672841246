// The per-sentence output length rule (DecodeOptions::max_output_ratio / max_output_offset):
// each sentence stops after floor(ratio * source length + offset) steps, whatever else is in
// its batch, for greedy and beam search; bad values are refused.
#include <gtest/gtest.h>

#include "models/decoding.h"
#include "models/testing/random_model.h"
#include "models/transformer.h"

namespace taskmoe::models {
namespace {

class DecodingLimitsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ModelShape shape = TinyModelShape();
    shape.encoder_layers = 1;
    config_ = MakeRandomModelConfig(shape, ModelKind::kDense);
    auto weights = MakeRandomWeights(config_, 11);
    ASSERT_TRUE(weights.ok()) << weights.status();
    auto model = TransformerModel::Create(config_, **weights, {});
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *model;
  }

  // Sources of lengths 3, 9 and 15 (tag and EOS included).
  std::vector<std::vector<int32_t>> Sources() const {
    std::vector<std::vector<int32_t>> sources;
    for (int pieces : {1, 7, 13}) {
      std::vector<int32_t> source{config_.tasks[0].target_tag_id};
      for (int i = 0; i < pieces; ++i) source.push_back(10 + (i * 7) % 30);
      source.push_back(config_.special_tokens.eos);
      sources.push_back(source);
    }
    return sources;
  }

  ModelConfig config_;
  std::shared_ptr<const TransformerModel> model_;
};

TEST_F(DecodingLimitsTest, EachSentenceStopsAtItsOwnLimit) {
  const auto sources = Sources();
  for (int beam : {1, 3}) {
    DecodeOptions options;
    options.beam_size = beam;
    options.ignore_eos = beam == 1;  // random weights: make greedy run to its limit
    options.max_output_ratio = 0.5f;
    options.max_output_offset = 2;
    auto batched = Decode(*model_, **model_->RouteForTask(0), sources, options);
    ASSERT_TRUE(batched.ok()) << batched.status();
    for (size_t i = 0; i < sources.size(); ++i) {
      const size_t limit = static_cast<size_t>(0.5 * sources[i].size() + 2);
      const auto& h = (*batched)[i];
      // Steps include EOS; a hypothesis cut by the limit holds `limit` tokens.
      EXPECT_LE(h.tokens.size() + (h.reached_eos ? 1 : 0), limit) << "beam " << beam;
      if (beam == 1) {
        EXPECT_EQ(h.tokens.size(), limit);
      }
      auto alone = Decode(*model_, **model_->RouteForTask(0), {sources[i]}, options);
      ASSERT_TRUE(alone.ok());
      EXPECT_EQ((*alone)[0].tokens, h.tokens) << "sentence " << i << ", beam " << beam;
    }
  }
}

TEST_F(DecodingLimitsTest, BatchLimitStillApplies) {
  DecodeOptions options;
  options.ignore_eos = true;
  options.max_output_ratio = 10.0f;
  options.max_output_tokens = 4;
  auto result = Decode(*model_, **model_->RouteForTask(0), Sources(), options);
  ASSERT_TRUE(result.ok());
  for (const Hypothesis& h : *result) EXPECT_EQ(h.tokens.size(), 4u);
}

TEST_F(DecodingLimitsTest, RefusesNegativeValues) {
  DecodeOptions options;
  options.max_output_ratio = -1.0f;
  EXPECT_EQ(Decode(*model_, **model_->RouteForTask(0), Sources(), options).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.max_output_ratio = 1.0f;
  options.max_output_offset = -3;
  EXPECT_EQ(Decode(*model_, **model_->RouteForTask(0), Sources(), options).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace taskmoe::models
