// config.json: valid full (TaskMoE, dense) and extracted configs, derived helpers, the JSON
// round trip, and one rejected config per validation rule.
#include "models/format/config.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include "absl/strings/str_cat.h"
#include "models/format/model_files.h"
#include "models/format/sha256.h"
#include "nlohmann/json.hpp"

namespace taskmoe::models {
namespace {

using Json = nlohmann::ordered_json;

// The spec's example: token-routed encoder, decoder routed by target language.
constexpr char kTaskMoeConfig[] = R"({
  "format_version": 1,
  "architecture": "transformer-encoder-decoder",
  "d_model": 512,
  "num_heads": 8,
  "encoder_layers": 6,
  "decoder_layers": 6,
  "d_ff": 2048,
  "encoder_ffn_dims": null,
  "decoder_ffn_dims": null,
  "activation": "relu",
  "norm": "pre",
  "layer_norm_eps": 1e-6,
  "vocab_size": 16000,
  "max_positions": 1024,
  "position_encoding": "sinusoidal",
  "scale_embeddings": true,
  "tie_embeddings": true,
  "special_tokens": {"pad": 0, "unk": 1, "bos": 2, "eos": 3},
  "languages": ["en", "de", "fr"],
  "tasks": [
    {"id": "en-de", "source": "en", "target": "de", "index": 0, "target_tag": "<2de>", "target_tag_id": 5},
    {"id": "de-en", "source": "de", "target": "en", "index": 1, "target_tag": "<2en>", "target_tag_id": 4}
  ],
  "moe": {
    "num_experts": 32,
    "top_k": 2,
    "encoder_layers": [1, 3, 5],
    "decoder_layers": [1, 3, 5],
    "encoder_routing": "token",
    "decoder_routing": "task",
    "encoder_task_key": null,
    "decoder_task_key": "target"
  },
  "extracted": null,
  "training": {"kind": "taskmoe", "steps": 20000, "notes": "free-form, ignored by the engine"}
})";

// A dense model: no moe, gelu, untied embeddings, per-layer widths, three tasks.
constexpr char kDenseConfig[] = R"({
  "format_version": 1,
  "architecture": "transformer-encoder-decoder",
  "d_model": 64,
  "num_heads": 4,
  "encoder_layers": 2,
  "decoder_layers": 3,
  "d_ff": 128,
  "encoder_ffn_dims": [128, 256],
  "decoder_ffn_dims": null,
  "activation": "gelu",
  "norm": "pre",
  "layer_norm_eps": 1e-5,
  "vocab_size": 1000,
  "max_positions": 256,
  "position_encoding": "sinusoidal",
  "scale_embeddings": false,
  "tie_embeddings": false,
  "special_tokens": {"pad": 0, "unk": 1, "bos": 2, "eos": 3},
  "languages": ["en", "de", "fr"],
  "tasks": [
    {"id": "fr-en", "source": "fr", "target": "en", "index": 2, "target_tag": "<2en>", "target_tag_id": 4},
    {"id": "en-de", "source": "en", "target": "de", "index": 0, "target_tag": "<2de>", "target_tag_id": 5},
    {"id": "de-en", "source": "de", "target": "en", "index": 1, "target_tag": "<2en>", "target_tag_id": 4}
  ],
  "moe": null,
  "extracted": null,
  "training": null
})";

// de-en extracted from kTaskMoeConfig: decoder MoE layers folded (width 2 x d_ff), encoder
// token-routed layers kept whole.
constexpr char kExtractedConfig[] = R"({
  "format_version": 1,
  "architecture": "transformer-encoder-decoder",
  "d_model": 512,
  "num_heads": 8,
  "encoder_layers": 6,
  "decoder_layers": 6,
  "d_ff": 2048,
  "encoder_ffn_dims": null,
  "decoder_ffn_dims": [2048, 4096, 2048, 4096, 2048, 4096],
  "activation": "relu",
  "norm": "pre",
  "layer_norm_eps": 1e-6,
  "vocab_size": 16000,
  "max_positions": 1024,
  "position_encoding": "sinusoidal",
  "scale_embeddings": true,
  "tie_embeddings": true,
  "special_tokens": {"pad": 0, "unk": 1, "bos": 2, "eos": 3},
  "languages": ["en", "de", "fr"],
  "tasks": [
    {"id": "de-en", "source": "de", "target": "en", "index": 1, "target_tag": "<2en>", "target_tag_id": 4}
  ],
  "moe": {
    "num_experts": 32,
    "top_k": 2,
    "encoder_layers": [1, 3, 5],
    "decoder_layers": [],
    "encoder_routing": "token",
    "decoder_routing": "none",
    "encoder_task_key": null,
    "decoder_task_key": null
  },
  "extracted": {
    "task": "de-en",
    "parent_digest": "sha256:9f2c4e0b7d1a6c3f5e8b2a4d6c8e0f1a3b5c7d9e1f2a4b6c8d0e2f4a6b8c0d2e",
    "parent_parameters": 532000000,
    "experts_kept": {
      "decoder.layers.1": {"experts": [7, 19], "gates": [0.61, 0.39]},
      "decoder.layers.3": {"experts": [2, 30], "gates": [0.5, 0.5]},
      "decoder.layers.5": {"experts": [11, 0], "gates": [0.9, 0.1]},
      "encoder.layers.1": "all",
      "encoder.layers.3": "all",
      "encoder.layers.5": "all"
    }
  },
  "training": {"kind": "taskmoe"}
})";

ModelConfig ParseOk(const std::string& text) {
  absl::StatusOr<ModelConfig> config = ParseModelConfig(text);
  EXPECT_TRUE(config.ok()) << config.status();
  return config.ok() ? *std::move(config) : ModelConfig{};
}

TEST(ModelConfig, ParsesTaskMoeConfig) {
  const ModelConfig c = ParseOk(kTaskMoeConfig);
  EXPECT_EQ(c.format_version, 1);
  EXPECT_EQ(c.d_model, 512);
  EXPECT_EQ(c.num_heads, 8);
  EXPECT_EQ(c.encoder_layers, 6);
  EXPECT_EQ(c.decoder_layers, 6);
  EXPECT_EQ(c.d_ff, 2048);
  EXPECT_TRUE(c.encoder_ffn_dims.empty());
  EXPECT_TRUE(c.decoder_ffn_dims.empty());
  EXPECT_EQ(c.activation, kernels::Activation::kRelu);
  EXPECT_FLOAT_EQ(c.layer_norm_eps, 1e-6f);
  EXPECT_EQ(c.vocab_size, 16000);
  EXPECT_EQ(c.max_positions, 1024);
  EXPECT_TRUE(c.scale_embeddings);
  EXPECT_TRUE(c.tie_embeddings);
  EXPECT_EQ(c.special_tokens, (SpecialTokens{0, 1, 2, 3}));
  EXPECT_EQ(c.languages, (std::vector<std::string>{"en", "de", "fr"}));
  ASSERT_EQ(c.tasks.size(), 2u);
  EXPECT_EQ(c.tasks[0], (TaskInfo{"en-de", "en", "de", 0, "<2de>", 5}));
  EXPECT_EQ(c.tasks[1], (TaskInfo{"de-en", "de", "en", 1, "<2en>", 4}));
  ASSERT_TRUE(c.moe.has_value());
  EXPECT_EQ(c.moe->num_experts, 32);
  EXPECT_EQ(c.moe->top_k, 2);
  EXPECT_EQ(c.moe->encoder, (StackMoe{Routing::kToken, TaskKey::kNone, {1, 3, 5}}));
  EXPECT_EQ(c.moe->decoder, (StackMoe{Routing::kTask, TaskKey::kTarget, {1, 3, 5}}));
  EXPECT_FALSE(c.extracted.has_value());
  EXPECT_EQ(
      nlohmann::json::parse(c.training_json),
      nlohmann::json::parse(
          R"({"kind": "taskmoe", "steps": 20000, "notes": "free-form, ignored by the engine"})"));
}

TEST(ModelConfig, DerivedHelpersOfTaskMoeConfig) {
  const ModelConfig c = ParseOk(kTaskMoeConfig);
  EXPECT_EQ(c.num_layers(Stack::kEncoder), 6);
  ASSERT_NE(c.stack_moe(Stack::kDecoder), nullptr);
  EXPECT_EQ(c.stack_moe(Stack::kDecoder)->routing, Routing::kTask);
  EXPECT_TRUE(c.is_moe_layer(Stack::kEncoder, 1));
  EXPECT_FALSE(c.is_moe_layer(Stack::kEncoder, 2));
  EXPECT_TRUE(c.is_moe_layer(Stack::kDecoder, 5));
  EXPECT_EQ(c.ffn_dim(Stack::kDecoder, 0), 2048);
  // Target-language keys: one row per language; a task's row is its target's position.
  EXPECT_EQ(c.num_task_keys(Stack::kDecoder), 3);
  EXPECT_EQ(c.num_task_keys(Stack::kEncoder), 0);
  EXPECT_EQ(*c.TaskKeyIndex(Stack::kDecoder, c.tasks[0]), 1);  // de
  EXPECT_EQ(*c.TaskKeyIndex(Stack::kDecoder, c.tasks[1]), 0);  // en
  EXPECT_EQ(c.TaskKeyIndex(Stack::kEncoder, c.tasks[0]).status().code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_NE(c.FindTask("de-en"), nullptr);
  EXPECT_EQ(c.FindTask("de-en")->index, 1);
  EXPECT_EQ(c.FindTask("fr-en"), nullptr);
  EXPECT_EQ(LayerName(Stack::kDecoder, 3), "decoder.layers.3");
  EXPECT_STREQ(StackName(Stack::kEncoder), "encoder");
  EXPECT_STREQ(RoutingName(Routing::kToken), "token");
  EXPECT_STREQ(TaskKeyName(TaskKey::kPair), "pair");
}

TEST(ModelConfig, PairAndSourceTaskKeys) {
  Json j = Json::parse(kTaskMoeConfig);
  j["moe"]["decoder_task_key"] = "pair";
  j["moe"]["encoder_routing"] = "task";
  j["moe"]["encoder_task_key"] = "source";
  const ModelConfig c = ParseOk(j.dump());
  EXPECT_EQ(c.num_task_keys(Stack::kDecoder), 2);  // one row per task index
  EXPECT_EQ(*c.TaskKeyIndex(Stack::kDecoder, c.tasks[1]), 1);
  EXPECT_EQ(c.num_task_keys(Stack::kEncoder), 3);
  EXPECT_EQ(*c.TaskKeyIndex(Stack::kEncoder, c.tasks[1]), 1);  // source de
  TaskInfo stranger{"xx-en", "xx", "en", 7, "<2en>", 4};
  EXPECT_FALSE(c.TaskKeyIndex(Stack::kDecoder, stranger).ok());
  EXPECT_FALSE(c.TaskKeyIndex(Stack::kEncoder, stranger).ok());
}

TEST(ModelConfig, ParsesDenseConfig) {
  const ModelConfig c = ParseOk(kDenseConfig);
  EXPECT_FALSE(c.moe.has_value());
  EXPECT_EQ(c.stack_moe(Stack::kEncoder), nullptr);
  EXPECT_FALSE(c.is_moe_layer(Stack::kEncoder, 1));
  EXPECT_EQ(c.num_task_keys(Stack::kDecoder), 0);
  EXPECT_FALSE(c.TaskKeyIndex(Stack::kDecoder, c.tasks[0]).ok());
  EXPECT_EQ(c.activation, kernels::Activation::kGelu);
  EXPECT_FALSE(c.scale_embeddings);
  EXPECT_FALSE(c.tie_embeddings);
  EXPECT_EQ(c.encoder_ffn_dims, (std::vector<int64_t>{128, 256}));
  EXPECT_EQ(c.ffn_dim(Stack::kEncoder, 1), 256);
  EXPECT_EQ(c.ffn_dim(Stack::kDecoder, 2), 128);
  EXPECT_EQ(c.tasks.size(), 3u);  // indices need not be listed in order
  EXPECT_EQ(c.training_json, "null");
}

TEST(ModelConfig, ParsesExtractedConfig) {
  const ModelConfig c = ParseOk(kExtractedConfig);
  ASSERT_TRUE(c.extracted.has_value());
  const ExtractedInfo& e = *c.extracted;
  EXPECT_EQ(e.task, "de-en");
  EXPECT_EQ(e.parent_parameters, 532000000);
  ASSERT_EQ(e.layers.size(), 6u);
  const ExtractedLayer* folded = e.FindLayer("decoder.layers.1");
  ASSERT_NE(folded, nullptr);
  EXPECT_FALSE(folded->all_experts);
  EXPECT_EQ(folded->experts, (std::vector<int>{7, 19}));
  EXPECT_EQ(folded->gates, (std::vector<float>{0.61f, 0.39f}));
  const ExtractedLayer* kept = e.FindLayer("encoder.layers.3");
  ASSERT_NE(kept, nullptr);
  EXPECT_TRUE(kept->all_experts);
  EXPECT_EQ(e.FindLayer("encoder.layers.0"), nullptr);
  // The one task keeps its index in the parent.
  ASSERT_EQ(c.tasks.size(), 1u);
  EXPECT_EQ(c.tasks[0].index, 1);
  EXPECT_FALSE(c.is_moe_layer(Stack::kDecoder, 1));
  EXPECT_EQ(c.ffn_dim(Stack::kDecoder, 1), 4096);
  EXPECT_FALSE(folded->unfolded);  // no "form": folded, as files before the form existed
}

TEST(ModelConfig, ExtractedLayerFormRoundTrips) {
  Json j = Json::parse(kExtractedConfig);
  j["extracted"]["experts_kept"]["decoder.layers.1"]["form"] = "unfolded";
  j["extracted"]["experts_kept"]["decoder.layers.3"]["form"] = "folded";
  const ModelConfig c = ParseOk(j.dump());
  EXPECT_TRUE(c.extracted->FindLayer("decoder.layers.1")->unfolded);
  EXPECT_FALSE(c.extracted->FindLayer("decoder.layers.3")->unfolded);
  const Json written = Json::parse(ModelConfigToJson(c));
  EXPECT_EQ(written["extracted"]["experts_kept"]["decoder.layers.1"]["form"], "unfolded");
  // Folded is the default and is not written, so folded subnetworks' files stay as they were.
  EXPECT_FALSE(written["extracted"]["experts_kept"]["decoder.layers.3"].contains("form"));
  EXPECT_EQ(ParseOk(ModelConfigToJson(c)), c);
}

TEST(ModelConfig, ExtractedGateMayBeZero) {
  // Softmax probabilities can underflow, so a folded expert may carry a zero gate.
  Json j = Json::parse(kExtractedConfig);
  j["extracted"]["experts_kept"]["decoder.layers.5"]["gates"] = {1.0, 0.0};
  EXPECT_EQ(ParseOk(j.dump()).extracted->FindLayer("decoder.layers.5")->gates,
            (std::vector<float>{1.0f, 0.0f}));
}

TEST(ModelConfig, ExtractedParentDigestMayBeNull) {
  Json j = Json::parse(kExtractedConfig);
  j["extracted"]["parent_digest"] = nullptr;
  const ModelConfig c = ParseOk(j.dump());
  EXPECT_EQ(c.extracted->parent_digest, "");
  EXPECT_TRUE(Json::parse(ModelConfigToJson(c))["extracted"]["parent_digest"].is_null());
  EXPECT_EQ(ParseOk(ModelConfigToJson(c)), c);
}

const std::string kDigestA = absl::StrCat("sha256:", std::string(64, 'a'));
const std::string kDigestB = absl::StrCat("sha256:", std::string(64, 'b'));

TEST(ModelConfig, FilesRecordDigestsAndRoundTrip) {
  Json j = Json::parse(kExtractedConfig);
  j["files"] = {{"model.safetensors", kDigestA}, {"spm.model", kDigestB}};
  const ModelConfig c = ParseOk(j.dump());
  EXPECT_EQ(c.file_digests, (std::map<std::string, std::string>{{"model.safetensors", kDigestA},
                                                                {"spm.model", kDigestB}}));
  EXPECT_EQ(ParseOk(ModelConfigToJson(c)), c);
  // Absent or null: nothing recorded, and written back as null.
  j["files"] = nullptr;
  const ModelConfig none = ParseOk(j.dump());
  EXPECT_TRUE(none.file_digests.empty());
  EXPECT_TRUE(Json::parse(ModelConfigToJson(none))["files"].is_null());
}

TEST(ModelFiles, Sha256OfBytesIsTheStandardDigest) {
  // FIPS 180-2's example.
  absl::StatusOr<std::string> abc = Sha256("abc");
  ASSERT_TRUE(abc.ok()) << abc.status();
  EXPECT_EQ(*abc, "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(ModelFiles, DigestsAreCheckedAgainstTheFiles) {
  ModelConfig c = ParseOk(kExtractedConfig);
  const auto digests = [](const std::string& file) -> absl::StatusOr<std::string> {
    return file == "model.safetensors" ? kDigestA : kDigestB;
  };
  EXPECT_TRUE(CheckFileDigests(c, digests).ok());  // nothing recorded
  c.file_digests = {{"model.safetensors", kDigestA}, {"spm.model", kDigestB}};
  EXPECT_TRUE(CheckFileDigests(c, digests).ok());
  c.file_digests["model.safetensors"] = kDigestB;
  const absl::Status mismatch = CheckFileDigests(c, digests);
  EXPECT_EQ(mismatch.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(mismatch.message().find(absl::StrCat("model.safetensors has digest ", kDigestA,
                                                 " but config.json records ", kDigestB)),
            std::string::npos)
      << mismatch;
  // A file that cannot be hashed is reported as such.
  const absl::Status unreadable = CheckFileDigests(
      c, [](const std::string& file) { return FileSha256("/nonexistent/model/" + file); });
  EXPECT_FALSE(unreadable.ok());
  EXPECT_NE(unreadable.message().find("/nonexistent/model/"), std::string::npos) << unreadable;
}

TEST(ModelConfig, MissingOptionalFieldsMeanNullAndUnknownFieldsAreIgnored) {
  Json j = Json::parse(kDenseConfig);
  for (const char* key : {"encoder_ffn_dims", "decoder_ffn_dims", "moe", "extracted", "training"}) {
    j.erase(key);
  }
  j["added_in_version_1_1"] = {{"anything", {1, 2, 3}}};
  j["tasks"][0]["future_field"] = true;
  const ModelConfig c = ParseOk(j.dump());
  EXPECT_TRUE(c.encoder_ffn_dims.empty());
  EXPECT_FALSE(c.moe.has_value());
  EXPECT_FALSE(c.extracted.has_value());
  EXPECT_EQ(c.training_json, "null");
}

TEST(ModelConfig, MoeLayersAreSorted) {
  Json j = Json::parse(kTaskMoeConfig);
  j["moe"]["encoder_layers"] = {5, 1, 3};
  const ModelConfig c = ParseOk(j.dump());
  EXPECT_EQ(c.moe->encoder.layers, (std::vector<int>{1, 3, 5}));
}

TEST(ModelConfig, RoundTripsThroughJson) {
  for (const char* text : {kTaskMoeConfig, kDenseConfig, kExtractedConfig}) {
    const ModelConfig first = ParseOk(text);
    const std::string written = ModelConfigToJson(first);
    const ModelConfig second = ParseOk(written);
    EXPECT_EQ(second.d_model, first.d_model);
    EXPECT_EQ(second.encoder_ffn_dims, first.encoder_ffn_dims);
    EXPECT_EQ(second.decoder_ffn_dims, first.decoder_ffn_dims);
    EXPECT_EQ(second.activation, first.activation);
    EXPECT_EQ(second.layer_norm_eps, first.layer_norm_eps);
    EXPECT_EQ(second.special_tokens, first.special_tokens);
    EXPECT_EQ(second.tasks, first.tasks);
    EXPECT_EQ(second.moe, first.moe);
    EXPECT_EQ(second.extracted, first.extracted);
    EXPECT_EQ(second.training_json, first.training_json);
    EXPECT_EQ(second, first) << written;
    // Written in the spec's field order, with floats in their shortest form.
    const Json j = Json::parse(written);
    EXPECT_EQ(j.begin().key(), "format_version");
    EXPECT_EQ(j.back(), Json::parse(text)["training"]);
    EXPECT_NE(written.find(first.layer_norm_eps == 1e-6f ? "1e-06" : "1e-05"), std::string::npos);
  }
}

TEST(ModelConfig, ValidatesConfigsBuiltInCode) {
  ModelConfig c = ParseOk(kTaskMoeConfig);
  EXPECT_TRUE(ValidateModelConfig(c).ok());
  c.moe->top_k = 40;
  EXPECT_FALSE(ValidateModelConfig(c).ok());
  c = ParseOk(kTaskMoeConfig);
  c.moe->decoder.layers = {3, 1};
  EXPECT_FALSE(ValidateModelConfig(c).ok());
  c = ParseOk(kTaskMoeConfig);
  c.activation = kernels::Activation::kNone;
  EXPECT_FALSE(ValidateModelConfig(c).ok());
}

TEST(ModelConfig, LoadsFromModelDirectory) {
  const std::filesystem::path dir =
      std::filesystem::path(::testing::TempDir()) / "config_test_model";
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "config.json") << kDenseConfig;
  absl::StatusOr<ModelConfig> c = LoadModelConfig(dir.string());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->d_model, 64);

  std::ofstream(dir / "config.json") << "{\"format_version\": 1}";
  c = LoadModelConfig(dir.string());
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find((dir / "config.json").string()), std::string::npos);
  EXPECT_EQ(LoadModelConfig((dir / "absent").string()).status().code(),
            absl::StatusCode::kNotFound);
  std::filesystem::remove_all(dir);
}

// --- One rejected config per rule ------------------------------------------------------------

struct BadConfig {
  std::string name;
  const char* base;
  std::function<void(Json&)> mutate;
  // Substrings the error message must contain: the field, and what is wrong with it.
  std::vector<std::string> expected;
};

class RejectsConfig : public ::testing::TestWithParam<BadConfig> {};

TEST_P(RejectsConfig, NamingTheField) {
  const BadConfig& bad = GetParam();
  Json j = Json::parse(bad.base);
  bad.mutate(j);
  absl::StatusOr<ModelConfig> c = ParseModelConfig(j.dump());
  ASSERT_FALSE(c.ok()) << j.dump(2);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  for (const std::string& part : bad.expected) {
    EXPECT_NE(c.status().message().find(part), std::string::npos)
        << "'" << part << "' not in: " << c.status().message();
  }
}

std::string CaseName(const ::testing::TestParamInfo<BadConfig>& info) { return info.param.name; }

const char* const kMoe = kTaskMoeConfig;
const char* const kDense = kDenseConfig;
const char* const kExtracted = kExtractedConfig;

INSTANTIATE_TEST_SUITE_P(
    Types, RejectsConfig,
    ::testing::Values(
        BadConfig{
            "MissingDModel", kMoe, [](Json& j) { j.erase("d_model"); }, {"d_model", "missing"}},
        BadConfig{"MissingTasks", kMoe, [](Json& j) { j.erase("tasks"); }, {"tasks", "missing"}},
        BadConfig{"MissingActivation",
                  kMoe,
                  [](Json& j) { j.erase("activation"); },
                  {"activation", "missing"}},
        BadConfig{"MissingSpecialToken",
                  kMoe,
                  [](Json& j) { j["special_tokens"].erase("bos"); },
                  {"special_tokens.bos", "missing"}},
        BadConfig{"MissingTaskField",
                  kMoe,
                  [](Json& j) { j["tasks"][1].erase("target_tag_id"); },
                  {"tasks[1].target_tag_id", "missing"}},
        BadConfig{"MissingMoeRouting",
                  kMoe,
                  [](Json& j) { j["moe"].erase("decoder_routing"); },
                  {"moe.decoder_routing", "missing"}},
        BadConfig{"StringDModel",
                  kMoe,
                  [](Json& j) { j["d_model"] = "512"; },
                  {"d_model", "expected an integer"}},
        BadConfig{"FloatNumHeads",
                  kMoe,
                  [](Json& j) { j["num_heads"] = 8.5; },
                  {"num_heads", "expected an integer"}},
        BadConfig{"HugeInteger",
                  kMoe,
                  [](Json& j) { j["num_heads"] = uint64_t{1} << 63; },
                  {"num_heads"}},
        // Found by fuzz/model_load_fuzzer.cc: a 4-wide model declaring 2^31-1 positions made
        // the loader allocate a 32 GiB position table.
        BadConfig{"HugeMaxPositions",
                  kMoe,
                  [](Json& j) { j["max_positions"] = kMaxPositionsLimit + 1; },
                  {"max_positions", "at most 65536"}},
        BadConfig{"StringBool",
                  kMoe,
                  [](Json& j) { j["tie_embeddings"] = "yes"; },
                  {"tie_embeddings", "true or false"}},
        BadConfig{"StringEps",
                  kMoe,
                  [](Json& j) { j["layer_norm_eps"] = "1e-6"; },
                  {"layer_norm_eps", "expected a number"}},
        BadConfig{"LanguagesNotArray",
                  kMoe,
                  [](Json& j) { j["languages"] = "en,de"; },
                  {"languages", "expected an array"}},
        BadConfig{"LanguageNotString",
                  kMoe,
                  [](Json& j) { j["languages"][1] = 3; },
                  {"languages[1]", "expected a string"}},
        BadConfig{"TaskNotObject",
                  kMoe,
                  [](Json& j) { j["tasks"][0] = "en-de"; },
                  {"tasks[0]", "expected an object"}},
        BadConfig{
            "MoeNotObject", kMoe, [](Json& j) { j["moe"] = true; }, {"moe", "expected an object"}},
        BadConfig{"FfnDimsNotArray",
                  kMoe,
                  [](Json& j) { j["encoder_ffn_dims"] = 2048; },
                  {"encoder_ffn_dims", "expected an array"}},
        BadConfig{"SpecialTokensNotObject",
                  kMoe,
                  [](Json& j) { j["special_tokens"] = Json::array(); },
                  {"special_tokens", "expected an object"}}),
    CaseName);

INSTANTIATE_TEST_SUITE_P(
    Architecture, RejectsConfig,
    ::testing::Values(
        BadConfig{"FormatVersion2",
                  kMoe,
                  [](Json& j) { j["format_version"] = 2; },
                  {"format_version", "unsupported version 2"}},
        BadConfig{"OtherArchitecture",
                  kMoe,
                  [](Json& j) { j["architecture"] = "decoder-only"; },
                  {"architecture", "decoder-only"}},
        BadConfig{"OddDModel",
                  kMoe,
                  [](Json& j) {
                    j["d_model"] = 15;
                    j["num_heads"] = 3;
                  },
                  {"d_model", "even"}},
        BadConfig{"DModelNotDivisibleByHeads",
                  kMoe,
                  [](Json& j) { j["num_heads"] = 7; },
                  {"num_heads", "not divisible"}},
        BadConfig{
            "ZeroHeads", kMoe, [](Json& j) { j["num_heads"] = 0; }, {"num_heads", "positive"}},
        BadConfig{"ZeroDModel", kMoe, [](Json& j) { j["d_model"] = 0; }, {"d_model", "positive"}},
        BadConfig{"ZeroEncoderLayers",
                  kDense,
                  [](Json& j) { j["encoder_layers"] = 0; },
                  {"encoder_layers", "positive"}},
        BadConfig{"NegativeDecoderLayers",
                  kDense,
                  [](Json& j) { j["decoder_layers"] = -1; },
                  {"decoder_layers", "positive"}},
        BadConfig{"ZeroDff", kMoe, [](Json& j) { j["d_ff"] = 0; }, {"d_ff", "positive"}},
        BadConfig{"NegativeVocab",
                  kMoe,
                  [](Json& j) { j["vocab_size"] = -5; },
                  {"vocab_size", "positive"}},
        BadConfig{"ZeroMaxPositions",
                  kMoe,
                  [](Json& j) { j["max_positions"] = 0; },
                  {"max_positions", "positive"}},
        BadConfig{"TooLargeDModel",
                  kMoe,
                  [](Json& j) { j["d_model"] = int64_t{1} << 40; },
                  {"d_model", "positive"}},
        BadConfig{"Swish",
                  kMoe,
                  [](Json& j) { j["activation"] = "swish"; },
                  {"activation", "'swish'", "'relu', 'gelu'"}},
        BadConfig{"PostNorm", kMoe, [](Json& j) { j["norm"] = "post"; }, {"norm", "'post'"}},
        BadConfig{"LearnedPositions",
                  kMoe,
                  [](Json& j) { j["position_encoding"] = "learned"; },
                  {"position_encoding", "'learned'"}},
        BadConfig{"ZeroEps",
                  kMoe,
                  [](Json& j) { j["layer_norm_eps"] = 0.0; },
                  {"layer_norm_eps", "positive"}},
        BadConfig{"FfnDimsWrongLength",
                  kDense,
                  [](Json& j) { j["encoder_ffn_dims"] = {128}; },
                  {"encoder_ffn_dims", "one per layer"}},
        BadConfig{"FfnDimsZeroEntry",
                  kDense,
                  [](Json& j) {
                    j["decoder_ffn_dims"] = {128, 0, 128};
                  },
                  {"decoder_ffn_dims[1]", "positive"}},
        BadConfig{"SpecialTokenOutsideVocab",
                  kMoe,
                  [](Json& j) { j["special_tokens"]["eos"] = 16000; },
                  {"special_tokens.eos", "outside the vocabulary"}},
        BadConfig{"NegativeSpecialToken",
                  kMoe,
                  [](Json& j) { j["special_tokens"]["pad"] = -1; },
                  {"special_tokens.pad", "outside the vocabulary"}}),
    CaseName);

INSTANTIATE_TEST_SUITE_P(
    Tasks, RejectsConfig,
    ::testing::Values(BadConfig{"NoLanguages",
                                kMoe,
                                [](Json& j) { j["languages"] = Json::array(); },
                                {"languages", "at least one"}},
                      BadConfig{"DuplicateLanguage",
                                kMoe,
                                [](Json& j) { j["languages"][2] = "en"; },
                                {"languages[2]", "twice"}},
                      BadConfig{"NoTasks",
                                kMoe,
                                [](Json& j) { j["tasks"] = Json::array(); },
                                {"tasks", "at least one"}},
                      BadConfig{"SourceNotALanguage",
                                kMoe,
                                [](Json& j) {
                                  j["tasks"][0]["source"] = "it";
                                  j["tasks"][0]["id"] = "it-de";
                                },
                                {"tasks[0].source", "'it'"}},
                      BadConfig{"TargetNotALanguage",
                                kMoe,
                                [](Json& j) {
                                  j["tasks"][1]["target"] = "ja";
                                  j["tasks"][1]["id"] = "de-ja";
                                },
                                {"tasks[1].target", "'ja'"}},
                      BadConfig{"IdNotSourceTarget",
                                kMoe,
                                [](Json& j) { j["tasks"][0]["id"] = "german"; },
                                {"tasks[0].id", "'german'"}},
                      BadConfig{"DuplicateTaskId",
                                kDense,
                                [](Json& j) {
                                  j["tasks"][2] = j["tasks"][0];
                                  j["tasks"][2]["index"] = 1;
                                },
                                {"tasks[2].id", "twice"}},
                      BadConfig{"DuplicateTaskIndex",
                                kMoe,
                                [](Json& j) { j["tasks"][1]["index"] = 0; },
                                {"tasks[1].index", "used by two tasks"}},
                      BadConfig{"TaskIndexGap",
                                kMoe,
                                [](Json& j) { j["tasks"][1]["index"] = 2; },
                                {"tasks", "0..1"}},
                      BadConfig{"NegativeTaskIndex",
                                kMoe,
                                [](Json& j) { j["tasks"][1]["index"] = -1; },
                                {"tasks[1].index", ">= 0"}},
                      BadConfig{"TargetTagOutsideVocab",
                                kMoe,
                                [](Json& j) { j["tasks"][0]["target_tag_id"] = 16000; },
                                {"tasks[0].target_tag_id", "outside the vocabulary"}},
                      BadConfig{"NegativeTargetTag",
                                kMoe,
                                [](Json& j) { j["tasks"][0]["target_tag_id"] = -3; },
                                {"tasks[0].target_tag_id", "outside the vocabulary"}},
                      BadConfig{"EmptyTargetTag",
                                kMoe,
                                [](Json& j) { j["tasks"][0]["target_tag"] = ""; },
                                {"tasks[0].target_tag", "empty"}},
                      BadConfig{"InconsistentTargetTags",
                                kDense,
                                [](Json& j) { j["tasks"][2]["target_tag_id"] = 7; },
                                {"tasks[2].target_tag_id", "another task into 'en'"}}),
    CaseName);

INSTANTIATE_TEST_SUITE_P(
    Moe, RejectsConfig,
    ::testing::Values(
        BadConfig{"OneExpert",
                  kMoe,
                  [](Json& j) { j["moe"]["num_experts"] = 1; },
                  {"moe.num_experts", ">= 2"}},
        BadConfig{"TopKZero", kMoe, [](Json& j) { j["moe"]["top_k"] = 0; }, {"moe.top_k", "1..32"}},
        BadConfig{"TopKAboveExperts",
                  kMoe,
                  [](Json& j) { j["moe"]["top_k"] = 33; },
                  {"moe.top_k", "1..32"}},
        BadConfig{"LayerOutOfRange",
                  kMoe,
                  [](Json& j) {
                    j["moe"]["decoder_layers"] = {1, 6};
                  },
                  {"moe.decoder_layers[1]", "outside 0..5"}},
        BadConfig{"NegativeLayer",
                  kMoe,
                  [](Json& j) {
                    j["moe"]["encoder_layers"] = {-1, 3};
                  },
                  {"moe.encoder_layers[0]"}},
        BadConfig{"DuplicateLayer",
                  kMoe,
                  [](Json& j) {
                    j["moe"]["encoder_layers"] = {1, 3, 1};
                  },
                  {"moe.encoder_layers", "layer 1 is listed twice"}},
        BadConfig{"LayersNotArray",
                  kMoe,
                  [](Json& j) { j["moe"]["encoder_layers"] = 1; },
                  {"moe.encoder_layers", "expected an array"}},
        BadConfig{"UnknownRouting",
                  kMoe,
                  [](Json& j) { j["moe"]["encoder_routing"] = "expert"; },
                  {"moe.encoder_routing", "'expert'"}},
        BadConfig{"UnknownTaskKey",
                  kMoe,
                  [](Json& j) { j["moe"]["decoder_task_key"] = "lang"; },
                  {"moe.decoder_task_key", "'lang'"}},
        BadConfig{"TaskRoutingWithoutKey",
                  kMoe,
                  [](Json& j) { j["moe"]["decoder_task_key"] = nullptr; },
                  {"moe.decoder_task_key", "required"}},
        BadConfig{"TaskRoutingKeyMissing",
                  kMoe,
                  [](Json& j) { j["moe"].erase("decoder_task_key"); },
                  {"moe.decoder_task_key", "required"}},
        BadConfig{"TokenRoutingWithKey",
                  kMoe,
                  [](Json& j) { j["moe"]["encoder_task_key"] = "target"; },
                  {"moe.encoder_task_key", "must be null", "'token'"}},
        BadConfig{"NoneRoutingWithKey",
                  kMoe,
                  [](Json& j) {
                    j["moe"]["encoder_routing"] = "none";
                    j["moe"]["encoder_layers"] = Json::array();
                    j["moe"]["encoder_task_key"] = "source";
                  },
                  {"moe.encoder_task_key", "must be null"}},
        BadConfig{"NoneRoutingWithLayers",
                  kMoe,
                  [](Json& j) { j["moe"]["encoder_routing"] = "none"; },
                  {"moe.encoder_layers", "'none'"}}),
    CaseName);

INSTANTIATE_TEST_SUITE_P(
    Extracted, RejectsConfig,
    ::testing::Values(
        BadConfig{"TwoTasks",
                  kExtracted,
                  [](Json& j) {
                    j["tasks"].push_back({{"id", "en-de"},
                                          {"source", "en"},
                                          {"target", "de"},
                                          {"index", 0},
                                          {"target_tag", "<2de>"},
                                          {"target_tag_id", 5}});
                  },
                  {"tasks", "exactly one task"}},
        BadConfig{"TaskMismatch",
                  kExtracted,
                  [](Json& j) { j["extracted"]["task"] = "en-de"; },
                  {"extracted.task", "'en-de'"}},
        BadConfig{"MissingTask",
                  kExtracted,
                  [](Json& j) { j["extracted"].erase("task"); },
                  {"extracted.task", "missing"}},
        BadConfig{"MissingDigest",
                  kExtracted,
                  [](Json& j) { j["extracted"].erase("parent_digest"); },
                  {"extracted.parent_digest", "missing"}},
        BadConfig{"DigestNotString",
                  kExtracted,
                  [](Json& j) { j["extracted"]["parent_digest"] = 5; },
                  {"extracted.parent_digest", "expected a string"}},
        BadConfig{"EmptyDigest",
                  kExtracted,
                  [](Json& j) { j["extracted"]["parent_digest"] = ""; },
                  {"extracted.parent_digest", "empty"}},
        BadConfig{"ShortDigest",
                  kExtracted,
                  [](Json& j) { j["extracted"]["parent_digest"] = "sha256:9f2c"; },
                  {"extracted.parent_digest", "64 hex"}},
        BadConfig{"DigestNotHex",
                  kExtracted,
                  [](Json& j) {
                    j["extracted"]["parent_digest"] = absl::StrCat("md5:", std::string(67, 'a'));
                  },
                  {"extracted.parent_digest"}},
        BadConfig{"FilesNotObject",
                  kExtracted,
                  [](Json& j) { j["files"] = Json::array({1}); },
                  {"files", "expected an object"}},
        BadConfig{"FilesUnknownName",
                  kExtracted,
                  [](Json& j) {
                    j["files"] = {{"../etc/passwd", kDigestA}};
                  },
                  {"files.../etc/passwd", "is not a file of a model directory"}},
        BadConfig{"FilesBadDigest",
                  kExtracted,
                  [](Json& j) {
                    j["files"] = {{"model.safetensors", "sha256:12"}};
                  },
                  {"files.model.safetensors", "64 hex digits"}},
        BadConfig{"FilesDigestNotString",
                  kExtracted,
                  [](Json& j) {
                    j["files"] = {{"spm.model", 7}};
                  },
                  {"files.spm.model", "expected a string"}},
        BadConfig{"ZeroParentParameters",
                  kExtracted,
                  [](Json& j) { j["extracted"]["parent_parameters"] = 0; },
                  {"extracted.parent_parameters", "positive"}},
        BadConfig{"ExpertsKeptNotObject",
                  kExtracted,
                  [](Json& j) { j["extracted"]["experts_kept"] = Json::array(); },
                  {"extracted.experts_kept", "expected an object"}},
        BadConfig{"BadLayerName",
                  kExtracted,
                  [](Json& j) { j["extracted"]["experts_kept"]["decoder.layer.1"] = "all"; },
                  {"extracted.experts_kept.decoder.layer.1", "layer name"}},
        BadConfig{"LayerNameOutOfRange",
                  kExtracted,
                  [](Json& j) { j["extracted"]["experts_kept"]["encoder.layers.6"] = "all"; },
                  {"extracted.experts_kept.encoder.layers.6", "6 layers"}},
        BadConfig{"NeitherAllNorObject",
                  kExtracted,
                  [](Json& j) { j["extracted"]["experts_kept"]["encoder.layers.1"] = "some"; },
                  {"extracted.experts_kept.encoder.layers.1", "\"all\""}},
        BadConfig{"AllOnDenseLayer",
                  kExtracted,
                  [](Json& j) { j["extracted"]["experts_kept"]["encoder.layers.2"] = "all"; },
                  {"extracted.experts_kept.encoder.layers.2", "token-routed MoE layer"}},
        BadConfig{
            "GatesCountMismatch",
            kExtracted,
            [](Json& j) { j["extracted"]["experts_kept"]["decoder.layers.1"]["gates"] = {1.0}; },
            {"extracted.experts_kept.decoder.layers.1.gates", "1 entries for 2 experts"}},
        BadConfig{"GatesDoNotSumToOne",
                  kExtracted,
                  [](Json& j) {
                    j["extracted"]["experts_kept"]["decoder.layers.1"]["gates"] = {0.6, 0.3};
                  },
                  {"extracted.experts_kept.decoder.layers.1.gates", "sum to"}},
        BadConfig{"GatesIncreasing",
                  kExtracted,
                  [](Json& j) {
                    j["extracted"]["experts_kept"]["decoder.layers.1"]["gates"] = {0.39, 0.61};
                  },
                  {"extracted.experts_kept.decoder.layers.1.gates", "largest first"}},
        BadConfig{"NegativeGate",
                  kExtracted,
                  [](Json& j) {
                    j["extracted"]["experts_kept"]["decoder.layers.1"]["gates"] = {1.5, -0.5};
                  },
                  {"extracted.experts_kept.decoder.layers.1.gates[0]"}},
        BadConfig{"GateNotNumber",
                  kExtracted,
                  [](Json& j) {
                    j["extracted"]["experts_kept"]["decoder.layers.1"]["gates"] = {"a", "b"};
                  },
                  {"extracted.experts_kept.decoder.layers.1.gates[0]", "expected a number"}},
        BadConfig{"ExpertTwice",
                  kExtracted,
                  [](Json& j) {
                    j["extracted"]["experts_kept"]["decoder.layers.1"]["experts"] = {7, 7};
                  },
                  {"extracted.experts_kept.decoder.layers.1.experts[1]", "twice"}},
        BadConfig{"ExpertOutOfRange",
                  kExtracted,
                  [](Json& j) {
                    j["extracted"]["experts_kept"]["decoder.layers.1"]["experts"] = {7, 32};
                  },
                  {"extracted.experts_kept.decoder.layers.1.experts[1]", "does not exist"}},
        BadConfig{"NoExperts",
                  kExtracted,
                  [](Json& j) {
                    j["extracted"]["experts_kept"]["decoder.layers.1"] = {
                        {"experts", Json::array()}, {"gates", Json::array()}};
                  },
                  {"extracted.experts_kept.decoder.layers.1.experts", "empty"}},
        BadConfig{
            "UnknownExpertForm",
            kExtracted,
            [](Json& j) { j["extracted"]["experts_kept"]["decoder.layers.1"]["form"] = "stacked"; },
            {"extracted.experts_kept.decoder.layers.1.form",
             "expected \"folded\" or \"unfolded\", got \"stacked\""}},
        BadConfig{"FoldedWidthMismatch",
                  kExtracted,
                  [](Json& j) { j["decoder_ffn_dims"][3] = 2048; },
                  {"extracted.experts_kept.decoder.layers.3", "4096"}},
        BadConfig{"FoldedLayerStillMoe",
                  kExtracted,
                  [](Json& j) {
                    j["moe"]["decoder_routing"] = "token";
                    j["moe"]["decoder_layers"] = {1};
                  },
                  {"extracted.experts_kept.decoder.layers.1", "must not be an MoE layer"}},
        BadConfig{"TaskRoutedLayersKept",
                  kExtracted,
                  [](Json& j) {
                    j["moe"]["decoder_routing"] = "task";
                    j["moe"]["decoder_task_key"] = "target";
                    j["moe"]["decoder_layers"] = {0};
                  },
                  {"moe.decoder_layers", "folded"}}),
    CaseName);

TEST(ModelConfig, RejectsMalformedJson) {
  for (const char* text : {"", "{", "{\"d_model\": 512,}", "[1, 2]", "null", "\"config\""}) {
    absl::StatusOr<ModelConfig> c = ParseModelConfig(text);
    ASSERT_FALSE(c.ok()) << text;
    EXPECT_NE(c.status().message().find("config.json"), std::string::npos) << c.status();
  }
  EXPECT_NE(ParseModelConfig("[1]").status().message().find("top level"), std::string::npos);
  // Deep nesting in the free-form training field is refused, not recursed into.
  Json j = Json::parse(kDenseConfig);
  std::string deep(1000, '[');
  deep += std::string(1000, ']');
  std::string text = j.dump();
  text.replace(text.find("\"training\":null"), 15, "\"training\":" + deep);
  absl::StatusOr<ModelConfig> c = ParseModelConfig(text);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("deeper"), std::string::npos) << c.status();
}

}  // namespace
}  // namespace taskmoe::models
