// config.json: reading (type checks, then the spec's semantic rules) and writing.
#include "models/format/config.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "models/format/model_files.h"
#include "nlohmann/json.hpp"

namespace taskmoe::models {
namespace {

// ordered_json keeps the file's key order, so `training` and `experts_kept` round-trip as
// written and our own output follows the spec's field order.
using Json = nlohmann::ordered_json;

constexpr int kFormatVersion = 1;
constexpr const char* kArchitecture = "transformer-encoder-decoder";
// Every size is capped at int32 so that products such as vocab_size * d_model stay far from
// int64 overflow in the shape checks that use them.
constexpr int64_t kMaxSize = std::numeric_limits<int32_t>::max();
// Deeper JSON than this is refused: serialising it (training_json) recurses once per level.
constexpr int kMaxJsonDepth = 64;
// config.json is a few kilobytes; anything this large is not one.
constexpr std::streamoff kMaxConfigBytes = 64 << 20;
// Folded gates are renormalised top-k probabilities; they sum to 1 up to float rounding.
constexpr double kGateSumTolerance = 1e-3;

absl::Status FieldError(const std::string& field, const std::string& problem) {
  return absl::InvalidArgumentError(absl::StrCat("config.json: ", field, ": ", problem));
}

std::string Join(const std::string& path, const std::string& key) {
  return path.empty() ? key : absl::StrCat(path, ".", key);
}

std::string Index(const std::string& path, size_t i) { return absl::StrCat(path, "[", i, "]"); }

// A short description of a JSON value for error messages: its type, and scalars' text.
std::string Describe(const Json& v) {
  if (v.is_structured()) return v.type_name();
  std::string text = v.dump(-1, ' ', false, Json::error_handler_t::replace);
  if (text.size() > 40) text = absl::StrCat(text.substr(0, 40), "...");
  return absl::StrCat(v.type_name(), " ", text);
}

// The shortest decimal that reads back as the same float, as a double: 1e-6f is written
// "1e-06", not "9.99999997e-07", and still parses back to exactly 1e-6f.
double ShortestDouble(float value) {
  if (!std::isfinite(value)) return static_cast<double>(value);
  char buf[64];
  const auto result = std::to_chars(buf, buf + sizeof(buf), value);
  *result.ptr = '\0';
  return std::strtod(buf, nullptr);
}

// Reads typed fields with a sticky first error: after a failure every getter returns a
// default value and records nothing more, so the parser reads like the schema and reports
// the first problem it met.
class JsonReader {
 public:
  bool ok() const { return status_.ok(); }
  const absl::Status& status() const { return status_; }

  void Fail(const std::string& field, const std::string& problem) {
    if (ok()) status_ = FieldError(field, problem);
  }

  // obj[key], or null when the key is missing (an error when `required`).
  const Json* Member(const Json& obj, const std::string& path, const char* key, bool required) {
    if (!ok() || !obj.is_object()) return nullptr;
    auto it = obj.find(key);
    if (it == obj.end()) {
      if (required) Fail(Join(path, key), "required field is missing");
      return nullptr;
    }
    return &*it;
  }

  // obj[key] when present and not null.
  const Json* Optional(const Json& obj, const std::string& path, const char* key) {
    const Json* v = Member(obj, path, key, /*required=*/false);
    return v == nullptr || v->is_null() ? nullptr : v;
  }

  int64_t Int(const Json& v, const std::string& field, int64_t lo, int64_t hi) {
    if (!ok()) return 0;
    if (!v.is_number_integer()) {
      Fail(field, absl::StrCat("expected an integer, got ", Describe(v)));
      return 0;
    }
    const bool too_big =
        v.is_number_unsigned() &&
        v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
    const int64_t value = too_big ? std::numeric_limits<int64_t>::max() : v.get<int64_t>();
    if (too_big || value < lo || value > hi) {
      Fail(field, absl::StrCat("must be in ", lo, "..", hi, ", got ", Describe(v)));
      return 0;
    }
    return value;
  }

  double Number(const Json& v, const std::string& field) {
    if (!ok()) return 0;
    if (!v.is_number()) {
      Fail(field, absl::StrCat("expected a number, got ", Describe(v)));
      return 0;
    }
    return v.get<double>();
  }

  bool Bool(const Json& v, const std::string& field) {
    if (!ok()) return false;
    if (!v.is_boolean()) {
      Fail(field, absl::StrCat("expected true or false, got ", Describe(v)));
      return false;
    }
    return v.get<bool>();
  }

  std::string String(const Json& v, const std::string& field) {
    if (!ok()) return "";
    if (!v.is_string()) {
      Fail(field, absl::StrCat("expected a string, got ", Describe(v)));
      return "";
    }
    return v.get<std::string>();
  }

  // Checks that `v` is of a structured type; returns false (after recording why) otherwise.
  bool IsObject(const Json& v, const std::string& field) {
    if (ok() && !v.is_object()) Fail(field, absl::StrCat("expected an object, got ", Describe(v)));
    return ok();
  }
  bool IsArray(const Json& v, const std::string& field) {
    if (ok() && !v.is_array()) Fail(field, absl::StrCat("expected an array, got ", Describe(v)));
    return ok();
  }

  // Required-field shorthands.
  int64_t RequiredInt(const Json& obj, const std::string& path, const char* key, int64_t lo,
                      int64_t hi) {
    const Json* v = Member(obj, path, key, /*required=*/true);
    return v == nullptr ? 0 : Int(*v, Join(path, key), lo, hi);
  }
  std::string RequiredString(const Json& obj, const std::string& path, const char* key) {
    const Json* v = Member(obj, path, key, /*required=*/true);
    return v == nullptr ? "" : String(*v, Join(path, key));
  }
  bool RequiredBool(const Json& obj, const std::string& path, const char* key) {
    const Json* v = Member(obj, path, key, /*required=*/true);
    return v == nullptr ? false : Bool(*v, Join(path, key));
  }

  std::vector<int64_t> IntList(const Json& v, const std::string& field, int64_t lo, int64_t hi) {
    std::vector<int64_t> out;
    if (!IsArray(v, field)) return out;
    for (size_t i = 0; i < v.size() && ok(); ++i) out.push_back(Int(v[i], Index(field, i), lo, hi));
    return out;
  }

 private:
  absl::Status status_;
};

// Reads `name` as one of `choices` (name -> value); the error lists the accepted names.
template <typename T>
T Choice(JsonReader& r, const Json& v, const std::string& field,
         std::initializer_list<std::pair<const char*, T>> choices) {
  const std::string name = r.String(v, field);
  if (!r.ok()) return choices.begin()->second;
  std::string accepted;
  for (const auto& [choice, value] : choices) {
    if (name == choice) return value;
    absl::StrAppend(&accepted, accepted.empty() ? "" : ", ", "'", choice, "'");
  }
  r.Fail(field, absl::StrCat("'", name, "' is not one of ", accepted));
  return choices.begin()->second;
}

Routing ReadRouting(JsonReader& r, const Json& moe, const char* key) {
  const Json* v = r.Member(moe, "moe", key, /*required=*/true);
  if (v == nullptr) return Routing::kNone;
  return Choice<Routing>(
      r, *v, Join("moe", key),
      {{"none", Routing::kNone}, {"token", Routing::kToken}, {"task", Routing::kTask}});
}

TaskKey ReadTaskKey(JsonReader& r, const Json& moe, const char* key) {
  const Json* v = r.Optional(moe, "moe", key);
  if (v == nullptr) return TaskKey::kNone;
  return Choice<TaskKey>(
      r, *v, Join("moe", key),
      {{"target", TaskKey::kTarget}, {"source", TaskKey::kSource}, {"pair", TaskKey::kPair}});
}

std::vector<int> ReadLayerList(JsonReader& r, const Json& moe, const char* key) {
  const Json* v = r.Member(moe, "moe", key, /*required=*/true);
  if (v == nullptr) return {};
  const std::string field = Join("moe", key);
  std::vector<int> layers;
  for (int64_t layer : r.IntList(*v, field, 0, kMaxSize)) layers.push_back(static_cast<int>(layer));
  // The struct promises sorted, unique layers; duplicates are an error, order is not.
  std::sort(layers.begin(), layers.end());
  for (size_t i = 1; i < layers.size() && r.ok(); ++i) {
    if (layers[i] == layers[i - 1]) {
      r.Fail(field, absl::StrCat("layer ", layers[i], " is listed twice"));
    }
  }
  return layers;
}

std::optional<MoeConfig> ReadMoe(JsonReader& r, const Json& root) {
  const Json* v = r.Optional(root, "", "moe");
  if (v == nullptr || !r.IsObject(*v, "moe")) return std::nullopt;
  MoeConfig moe;
  moe.num_experts = static_cast<int>(r.RequiredInt(*v, "moe", "num_experts", 0, kMaxSize));
  moe.top_k = static_cast<int>(r.RequiredInt(*v, "moe", "top_k", 0, kMaxSize));
  moe.encoder.layers = ReadLayerList(r, *v, "encoder_layers");
  moe.decoder.layers = ReadLayerList(r, *v, "decoder_layers");
  moe.encoder.routing = ReadRouting(r, *v, "encoder_routing");
  moe.decoder.routing = ReadRouting(r, *v, "decoder_routing");
  moe.encoder.task_key = ReadTaskKey(r, *v, "encoder_task_key");
  moe.decoder.task_key = ReadTaskKey(r, *v, "decoder_task_key");
  return moe;
}

std::optional<ExtractedInfo> ReadExtracted(JsonReader& r, const Json& root) {
  const Json* v = r.Optional(root, "", "extracted");
  if (v == nullptr || !r.IsObject(*v, "extracted")) return std::nullopt;
  ExtractedInfo info;
  info.task = r.RequiredString(*v, "extracted", "task");
  // null: provenance unknown (the reference extractor writes it when given no digest).
  if (const Json* digest = r.Member(*v, "extracted", "parent_digest", /*required=*/true);
      digest != nullptr && !digest->is_null()) {
    info.parent_digest = r.String(*digest, "extracted.parent_digest");
    if (r.ok() && info.parent_digest.empty()) {
      r.Fail("extracted.parent_digest", "is empty (write null when the digest is unknown)");
    }
  }
  info.parent_parameters =
      r.RequiredInt(*v, "extracted", "parent_parameters", 0, std::numeric_limits<int64_t>::max());
  const Json* kept = r.Member(*v, "extracted", "experts_kept", /*required=*/true);
  if (kept == nullptr || !r.IsObject(*kept, "extracted.experts_kept")) return info;
  for (const auto& [name, entry] : kept->items()) {
    const std::string field = absl::StrCat("extracted.experts_kept.", name);
    ExtractedLayer layer;
    layer.layer = name;
    if (entry.is_string()) {
      if (entry.get<std::string>() != "all") {
        r.Fail(field, absl::StrCat("expected \"all\" or {experts, gates}, got ", Describe(entry)));
      }
      layer.all_experts = true;
    } else if (r.IsObject(entry, field)) {
      const Json* experts = r.Member(entry, field, "experts", /*required=*/true);
      if (experts != nullptr) {
        for (int64_t e : r.IntList(*experts, Join(field, "experts"), 0, kMaxSize)) {
          layer.experts.push_back(static_cast<int>(e));
        }
      }
      const Json* gates = r.Member(entry, field, "gates", /*required=*/true);
      if (gates != nullptr && r.IsArray(*gates, Join(field, "gates"))) {
        for (size_t i = 0; i < gates->size(); ++i) {
          layer.gates.push_back(
              static_cast<float>(r.Number((*gates)[i], Index(Join(field, "gates"), i))));
        }
      }
      if (const Json* form = r.Optional(entry, field, "form"); form != nullptr) {
        const std::string value = r.String(*form, Join(field, "form"));
        if (r.ok() && value != "folded" && value != "unfolded") {
          r.Fail(Join(field, "form"),
                 absl::StrCat("expected \"folded\" or \"unfolded\", got \"", value, "\""));
        }
        layer.unfolded = value == "unfolded";
      }
    }
    if (!r.ok()) break;
    info.layers.push_back(std::move(layer));
  }
  return info;
}

std::vector<int64_t> ReadFfnDims(JsonReader& r, const Json& root, const char* key) {
  const Json* v = r.Optional(root, "", key);
  if (v == nullptr) return {};
  return r.IntList(*v, key, std::numeric_limits<int64_t>::min(),
                   std::numeric_limits<int64_t>::max());
}

TaskInfo ReadTask(JsonReader& r, const Json& v, const std::string& path) {
  TaskInfo task;
  if (!r.IsObject(v, path)) return task;
  task.id = r.RequiredString(v, path, "id");
  task.source = r.RequiredString(v, path, "source");
  task.target = r.RequiredString(v, path, "target");
  task.index = static_cast<int>(r.RequiredInt(v, path, "index", std::numeric_limits<int>::min(),
                                              std::numeric_limits<int>::max()));
  task.target_tag = r.RequiredString(v, path, "target_tag");
  task.target_tag_id = static_cast<int32_t>(r.RequiredInt(v, path, "target_tag_id",
                                                          std::numeric_limits<int32_t>::min(),
                                                          std::numeric_limits<int32_t>::max()));
  return task;
}

// --- Semantic checks ------------------------------------------------------------------------

absl::Status CheckSize(int64_t value, const char* field) {
  if (value >= 1 && value <= kMaxSize) return absl::OkStatus();
  return FieldError(field,
                    absl::StrCat("must be a positive size (1..", kMaxSize, "), got ", value));
}

absl::Status CheckFfnDims(const std::vector<int64_t>& dims, int num_layers, const char* field) {
  if (dims.empty()) return absl::OkStatus();  // null: d_ff everywhere
  if (dims.size() != static_cast<size_t>(num_layers)) {
    return FieldError(field, absl::StrCat("has ", dims.size(), " entries; needs one per layer (",
                                          num_layers, ")"));
  }
  for (size_t i = 0; i < dims.size(); ++i) {
    if (dims[i] < 1 || dims[i] > kMaxSize) {
      return FieldError(Index(field, i),
                        absl::StrCat("must be a positive FFN width, got ", dims[i]));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckTokenId(int64_t id, int64_t vocab_size, const std::string& field) {
  if (id >= 0 && id < vocab_size) return absl::OkStatus();
  return FieldError(
      field, absl::StrCat("token id ", id, " is outside the vocabulary (0..", vocab_size - 1, ")"));
}

absl::Status CheckTasks(const ModelConfig& c) {
  if (c.languages.empty()) return FieldError("languages", "must list at least one language");
  std::set<std::string> languages;
  for (size_t i = 0; i < c.languages.size(); ++i) {
    if (c.languages[i].empty()) return FieldError(Index("languages", i), "is empty");
    if (!languages.insert(c.languages[i]).second) {
      return FieldError(Index("languages", i),
                        absl::StrCat("language '", c.languages[i], "' is listed twice"));
    }
  }
  if (c.tasks.empty()) return FieldError("tasks", "must list at least one task");
  if (c.extracted.has_value() && c.tasks.size() != 1) {
    return FieldError("tasks", absl::StrCat("an extracted model serves exactly one task, found ",
                                            c.tasks.size()));
  }
  std::set<std::string> ids;
  std::set<int> indices;
  std::map<std::string, int32_t> tag_of_target;
  for (size_t i = 0; i < c.tasks.size(); ++i) {
    const TaskInfo& t = c.tasks[i];
    const std::string path = Index("tasks", i);
    if (!languages.count(t.source)) {
      return FieldError(Join(path, "source"),
                        absl::StrCat("language '", t.source, "' is not in languages"));
    }
    if (!languages.count(t.target)) {
      return FieldError(Join(path, "target"),
                        absl::StrCat("language '", t.target, "' is not in languages"));
    }
    if (t.id != absl::StrCat(t.source, "-", t.target)) {
      return FieldError(Join(path, "id"), absl::StrCat("'", t.id, "' should be '", t.source, "-",
                                                       t.target, "' (source-target)"));
    }
    if (!ids.insert(t.id).second) {
      return FieldError(Join(path, "id"), absl::StrCat("task '", t.id, "' is listed twice"));
    }
    if (t.index < 0) {
      return FieldError(Join(path, "index"), absl::StrCat("must be >= 0, got ", t.index));
    }
    if (!indices.insert(t.index).second) {
      return FieldError(Join(path, "index"),
                        absl::StrCat("index ", t.index, " is used by two tasks"));
    }
    if (t.target_tag.empty()) return FieldError(Join(path, "target_tag"), "is empty");
    if (absl::Status s = CheckTokenId(t.target_tag_id, c.vocab_size, Join(path, "target_tag_id"));
        !s.ok()) {
      return s;
    }
    auto [it, inserted] = tag_of_target.emplace(t.target, t.target_tag_id);
    if (!inserted && it->second != t.target_tag_id) {
      return FieldError(Join(path, "target_tag_id"),
                        absl::StrCat(t.target_tag_id, " differs from ", it->second,
                                     ", the tag of another task into '", t.target, "'"));
    }
  }
  // A full model's indices are the rows of `pair` task_logits tables: 0..n-1, no gaps. An
  // extracted model keeps its task's index in the parent.
  if (!c.extracted.has_value() && *indices.rbegin() != static_cast<int>(c.tasks.size()) - 1) {
    return FieldError("tasks", absl::StrCat("task indices must be 0..", c.tasks.size() - 1,
                                            " (one per task), found index ", *indices.rbegin()));
  }
  return absl::OkStatus();
}

absl::Status CheckStackMoe(const ModelConfig& c, const MoeConfig& moe, Stack stack) {
  const StackMoe& s = stack == Stack::kEncoder ? moe.encoder : moe.decoder;
  const std::string name = StackName(stack);
  const std::string layers_field = absl::StrCat("moe.", name, "_layers");
  const std::string key_field = absl::StrCat("moe.", name, "_task_key");
  for (size_t i = 0; i < s.layers.size(); ++i) {
    if (s.layers[i] < 0 || s.layers[i] >= c.num_layers(stack)) {
      return FieldError(Index(layers_field, i),
                        absl::StrCat("layer ", s.layers[i], " is outside 0..",
                                     c.num_layers(stack) - 1, " (", name, "_layers)"));
    }
    if (i > 0 && s.layers[i] <= s.layers[i - 1]) {
      return FieldError(layers_field, "must be sorted and without duplicates");
    }
  }
  if (s.routing == Routing::kNone && !s.layers.empty()) {
    return FieldError(layers_field,
                      absl::StrCat("a stack with moe.", name, "_routing 'none' has no MoE layers"));
  }
  if (s.routing == Routing::kTask && s.task_key == TaskKey::kNone) {
    return FieldError(key_field, absl::StrCat("is required with moe.", name, "_routing 'task'"));
  }
  if (s.routing != Routing::kTask && s.task_key != TaskKey::kNone) {
    return FieldError(key_field,
                      absl::StrCat("must be null unless moe.", name, "_routing is 'task' (it is '",
                                   RoutingName(s.routing), "')"));
  }
  // Extraction folds task-routed layers into dense ones; only token-routed layers stay MoE.
  if (c.extracted.has_value() && s.routing == Routing::kTask && !s.layers.empty()) {
    return FieldError(layers_field,
                      "an extracted model has no task-routed MoE layers (they are folded)");
  }
  return absl::OkStatus();
}

absl::Status CheckMoe(const ModelConfig& c) {
  if (!c.moe.has_value()) return absl::OkStatus();
  const MoeConfig& moe = *c.moe;
  if (moe.num_experts < 2 || moe.num_experts > kMaxSize) {
    return FieldError("moe.num_experts", absl::StrCat("must be >= 2, got ", moe.num_experts));
  }
  if (moe.top_k < 1 || moe.top_k > moe.num_experts) {
    return FieldError("moe.top_k", absl::StrCat("must be in 1..", moe.num_experts,
                                                " (num_experts), got ", moe.top_k));
  }
  for (Stack stack : {Stack::kEncoder, Stack::kDecoder}) {
    if (absl::Status s = CheckStackMoe(c, moe, stack); !s.ok()) return s;
  }
  return absl::OkStatus();
}

// "sha256:" and 64 hex digits.
bool IsSha256Digest(std::string_view digest) {
  static constexpr std::string_view kPrefix = "sha256:";
  return digest.size() == kPrefix.size() + 64 && digest.substr(0, kPrefix.size()) == kPrefix &&
         std::all_of(digest.begin() + kPrefix.size(), digest.end(), [](char ch) {
           return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
         });
}

// "decoder.layers.12" -> (kDecoder, 12).
std::optional<std::pair<Stack, int>> ParseLayerName(const std::string& name) {
  for (Stack stack : {Stack::kEncoder, Stack::kDecoder}) {
    const std::string prefix = absl::StrCat(StackName(stack), ".layers.");
    if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string digits = name.substr(prefix.size());
    if (digits.size() > 9 || (digits.size() > 1 && digits[0] == '0')) return std::nullopt;
    int layer = 0;
    for (char ch : digits) {
      if (ch < '0' || ch > '9') return std::nullopt;
      layer = layer * 10 + (ch - '0');
    }
    return std::make_pair(stack, layer);
  }
  return std::nullopt;
}

absl::Status CheckFileDigests(const ModelConfig& c) {
  for (const auto& [name, digest] : c.file_digests) {
    if (name != kWeightsFileName && name != kTokenizerFileName) {
      return FieldError(absl::StrCat("files.", name),
                        absl::StrCat("is not a file of a model directory (", kWeightsFileName,
                                     " or ", kTokenizerFileName, ")"));
    }
    if (!IsSha256Digest(digest)) {
      return FieldError(absl::StrCat("files.", name),
                        absl::StrCat("'", digest, "' is not 'sha256:' + 64 hex digits"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckExtracted(const ModelConfig& c) {
  if (!c.extracted.has_value()) return absl::OkStatus();
  const ExtractedInfo& e = *c.extracted;
  if (e.task != c.tasks[0].id) {
    return FieldError("extracted.task", absl::StrCat("'", e.task, "' is not the model's task ('",
                                                     c.tasks[0].id, "')"));
  }
  if (!e.parent_digest.empty() && !IsSha256Digest(e.parent_digest)) {
    return FieldError("extracted.parent_digest",
                      absl::StrCat("'", e.parent_digest, "' is not 'sha256:' + 64 hex digits"));
  }
  if (e.parent_parameters < 1) {
    return FieldError("extracted.parent_parameters",
                      absl::StrCat("must be positive, got ", e.parent_parameters));
  }
  std::set<std::string> seen;
  for (const ExtractedLayer& layer : e.layers) {
    const std::string field = absl::StrCat("extracted.experts_kept.", layer.layer);
    const auto parsed = ParseLayerName(layer.layer);
    if (!parsed.has_value()) {
      return FieldError(field, "is not a layer name like 'decoder.layers.1'");
    }
    const auto [stack, index] = *parsed;
    if (index >= c.num_layers(stack)) {
      return FieldError(
          field, absl::StrCat("the ", StackName(stack), " has ", c.num_layers(stack), " layers"));
    }
    if (!seen.insert(layer.layer).second) return FieldError(field, "is listed twice");
    if (layer.all_experts) {
      if (!layer.experts.empty() || !layer.gates.empty()) {
        return FieldError(field, "a layer that keeps all experts lists no experts or gates");
      }
      const StackMoe* moe = c.stack_moe(stack);
      if (!c.is_moe_layer(stack, index) || moe->routing != Routing::kToken) {
        return FieldError(field,
                          "keeps all experts, so it must be a token-routed MoE layer "
                          "in moe");
      }
      continue;
    }
    if (layer.experts.empty()) return FieldError(Join(field, "experts"), "is empty");
    if (layer.gates.size() != layer.experts.size()) {
      return FieldError(Join(field, "gates"),
                        absl::StrCat("has ", layer.gates.size(), " entries for ",
                                     layer.experts.size(), " experts"));
    }
    std::set<int> experts;
    for (size_t i = 0; i < layer.experts.size(); ++i) {
      const int expert = layer.experts[i];
      if (expert < 0 || (c.moe.has_value() && expert >= c.moe->num_experts)) {
        return FieldError(Index(Join(field, "experts"), i),
                          absl::StrCat("expert ", expert, " does not exist"));
      }
      if (!experts.insert(expert).second) {
        return FieldError(Index(Join(field, "experts"), i),
                          absl::StrCat("expert ", expert, " is listed twice"));
      }
    }
    double sum = 0;
    for (size_t i = 0; i < layer.gates.size(); ++i) {
      const float g = layer.gates[i];
      // A gate may be exactly 0: a softmax probability can underflow.
      if (!std::isfinite(g) || g < 0 || g > 1) {
        return FieldError(Index(Join(field, "gates"), i),
                          absl::StrCat("gate ", g, " is not in [0, 1]"));
      }
      if (i > 0 && g > layer.gates[i - 1]) {
        return FieldError(Join(field, "gates"), "must be in decreasing order (largest first)");
      }
      sum += g;
    }
    if (std::abs(sum - 1.0) > kGateSumTolerance) {
      return FieldError(Join(field, "gates"), absl::StrCat("sum to ", sum, ", not 1"));
    }
    if (c.is_moe_layer(stack, index)) {
      return FieldError(field, "is folded, so it must not be an MoE layer in moe");
    }
    const int64_t folded_width = static_cast<int64_t>(layer.experts.size()) * c.d_ff;
    if (c.ffn_dim(stack, index) != folded_width) {
      return FieldError(
          field, absl::StrCat("folds ", layer.experts.size(), " experts of width ", c.d_ff, " but ",
                              StackName(stack), "_ffn_dims gives the layer width ",
                              c.ffn_dim(stack, index), ", not ", folded_width));
    }
  }
  return absl::OkStatus();
}

// Parses JSON, refusing nesting deeper than kMaxJsonDepth: the parser itself is iterative, but
// serialising `training` back to text recurses once per level.
absl::StatusOr<Json> ParseJson(std::string_view text) {
  int max_depth = 0;
  Json root;
  try {
    root =
        Json::parse(text.begin(), text.end(), [&max_depth](int depth, Json::parse_event_t, Json&) {
          max_depth = std::max(max_depth, depth);
          return true;
        });
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("config.json: not valid JSON: ", e.what()));
  }
  if (max_depth > kMaxJsonDepth) {
    return absl::InvalidArgumentError(
        absl::StrCat("config.json: JSON nests deeper than ", kMaxJsonDepth, " levels"));
  }
  return root;
}

}  // namespace

const char* RoutingName(Routing routing) {
  switch (routing) {
    case Routing::kNone:
      return "none";
    case Routing::kToken:
      return "token";
    case Routing::kTask:
      return "task";
  }
  return "?";
}

const char* TaskKeyName(TaskKey key) {
  switch (key) {
    case TaskKey::kNone:
      return "none";
    case TaskKey::kTarget:
      return "target";
    case TaskKey::kSource:
      return "source";
    case TaskKey::kPair:
      return "pair";
  }
  return "?";
}

const char* StackName(Stack stack) { return stack == Stack::kEncoder ? "encoder" : "decoder"; }

std::string LayerName(Stack stack, int layer) {
  return absl::StrCat(StackName(stack), ".layers.", layer);
}

const ExtractedLayer* ExtractedInfo::FindLayer(std::string_view layer) const {
  for (const ExtractedLayer& l : layers) {
    if (l.layer == layer) return &l;
  }
  return nullptr;
}

const StackMoe* ModelConfig::stack_moe(Stack stack) const {
  if (!moe.has_value()) return nullptr;
  return stack == Stack::kEncoder ? &moe->encoder : &moe->decoder;
}

bool ModelConfig::is_moe_layer(Stack stack, int layer) const {
  const StackMoe* s = stack_moe(stack);
  return s != nullptr && s->routing != Routing::kNone &&
         std::binary_search(s->layers.begin(), s->layers.end(), layer);
}

int64_t ModelConfig::ffn_dim(Stack stack, int layer) const {
  const std::vector<int64_t>& dims = stack == Stack::kEncoder ? encoder_ffn_dims : decoder_ffn_dims;
  if (dims.empty() || layer < 0 || static_cast<size_t>(layer) >= dims.size()) return d_ff;
  return dims[layer];
}

int ModelConfig::num_task_keys(Stack stack) const {
  const StackMoe* s = stack_moe(stack);
  if (s == nullptr || s->routing != Routing::kTask) return 0;
  // Pair keys are task indices, which in a full model are exactly 0..tasks.size()-1.
  return s->task_key == TaskKey::kPair ? static_cast<int>(tasks.size())
                                       : static_cast<int>(languages.size());
}

absl::StatusOr<int> ModelConfig::TaskKeyIndex(Stack stack, const TaskInfo& task) const {
  const StackMoe* s = stack_moe(stack);
  if (s == nullptr || s->routing != Routing::kTask) {
    return absl::FailedPreconditionError(
        absl::StrCat("the ", StackName(stack), " stack is not routed by task"));
  }
  if (s->task_key == TaskKey::kPair) {
    if (task.index < 0 || task.index >= num_task_keys(stack)) {
      return absl::InvalidArgumentError(absl::StrCat("task '", task.id, "': index ", task.index,
                                                     " is outside 0..", num_task_keys(stack) - 1));
    }
    return task.index;
  }
  const std::string& language = s->task_key == TaskKey::kTarget ? task.target : task.source;
  auto it = std::find(languages.begin(), languages.end(), language);
  if (it == languages.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("task '", task.id, "': language '", language, "' is not in languages"));
  }
  return static_cast<int>(it - languages.begin());
}

const TaskInfo* ModelConfig::FindTask(std::string_view id) const {
  for (const TaskInfo& task : tasks) {
    if (task.id == id) return &task;
  }
  return nullptr;
}

absl::Status ValidateModelConfig(const ModelConfig& c) {
  if (c.format_version != kFormatVersion) {
    return FieldError("format_version", absl::StrCat("unsupported version ", c.format_version,
                                                     " (this reader knows ", kFormatVersion, ")"));
  }
  const std::pair<int64_t, const char*> sizes[] = {{c.d_model, "d_model"},
                                                   {c.num_heads, "num_heads"},
                                                   {c.encoder_layers, "encoder_layers"},
                                                   {c.decoder_layers, "decoder_layers"},
                                                   {c.d_ff, "d_ff"},
                                                   {c.vocab_size, "vocab_size"},
                                                   {c.max_positions, "max_positions"}};
  for (const auto& [value, field] : sizes) {
    if (absl::Status s = CheckSize(value, field); !s.ok()) return s;
  }
  if (c.max_positions > kMaxPositionsLimit) {
    return FieldError("max_positions", absl::StrCat("must be at most ", kMaxPositionsLimit,
                                                    " (the loader tabulates every position), got ",
                                                    c.max_positions));
  }
  if (c.d_model % 2 != 0) {
    return FieldError("d_model",
                      absl::StrCat("must be even (sinusoidal positions), got ", c.d_model));
  }
  if (c.d_model % c.num_heads != 0) {
    return FieldError("num_heads", absl::StrCat("d_model ", c.d_model, " is not divisible by ",
                                                c.num_heads, " heads"));
  }
  if (absl::Status s = CheckFfnDims(c.encoder_ffn_dims, c.encoder_layers, "encoder_ffn_dims");
      !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckFfnDims(c.decoder_ffn_dims, c.decoder_layers, "decoder_ffn_dims");
      !s.ok()) {
    return s;
  }
  if (c.activation != kernels::Activation::kRelu && c.activation != kernels::Activation::kGelu) {
    return FieldError("activation", "must be 'relu' or 'gelu'");
  }
  if (!std::isfinite(c.layer_norm_eps) || c.layer_norm_eps <= 0) {
    return FieldError("layer_norm_eps",
                      absl::StrCat("must be a positive number, got ", c.layer_norm_eps));
  }
  const std::pair<int32_t, const char*> special[] = {{c.special_tokens.pad, "pad"},
                                                     {c.special_tokens.unk, "unk"},
                                                     {c.special_tokens.bos, "bos"},
                                                     {c.special_tokens.eos, "eos"}};
  for (const auto& [id, name] : special) {
    if (absl::Status s = CheckTokenId(id, c.vocab_size, absl::StrCat("special_tokens.", name));
        !s.ok()) {
      return s;
    }
  }
  if (absl::Status s = CheckTasks(c); !s.ok()) return s;
  if (absl::Status s = CheckMoe(c); !s.ok()) return s;
  if (absl::Status s = CheckFileDigests(c); !s.ok()) return s;
  return CheckExtracted(c);
}

absl::StatusOr<ModelConfig> ParseModelConfig(std::string_view json_text) {
  absl::StatusOr<Json> parsed = ParseJson(json_text);
  if (!parsed.ok()) return parsed.status();
  const Json& root = *parsed;
  if (!root.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("config.json: the top level must be a JSON object, got ", Describe(root)));
  }

  JsonReader r;
  ModelConfig c;
  // The version comes first: a future version may change any other field.
  c.format_version =
      static_cast<int>(r.RequiredInt(root, "", "format_version", std::numeric_limits<int>::min(),
                                     std::numeric_limits<int>::max()));
  if (r.ok() && c.format_version != kFormatVersion) {
    return FieldError("format_version", absl::StrCat("unsupported version ", c.format_version,
                                                     " (this reader knows ", kFormatVersion, ")"));
  }
  const std::string architecture = r.RequiredString(root, "", "architecture");
  if (r.ok() && architecture != kArchitecture) {
    r.Fail("architecture", absl::StrCat("'", architecture, "' is not '", kArchitecture, "'"));
  }
  // Sizes are range-checked by ValidateModelConfig, which also serves configs built in code.
  constexpr int64_t kIntMin = std::numeric_limits<int>::min();
  constexpr int64_t kIntMax = std::numeric_limits<int>::max();
  constexpr int64_t kI64Min = std::numeric_limits<int64_t>::min();
  constexpr int64_t kI64Max = std::numeric_limits<int64_t>::max();
  c.d_model = r.RequiredInt(root, "", "d_model", kI64Min, kI64Max);
  c.num_heads = static_cast<int>(r.RequiredInt(root, "", "num_heads", kIntMin, kIntMax));
  c.encoder_layers = static_cast<int>(r.RequiredInt(root, "", "encoder_layers", kIntMin, kIntMax));
  c.decoder_layers = static_cast<int>(r.RequiredInt(root, "", "decoder_layers", kIntMin, kIntMax));
  c.d_ff = r.RequiredInt(root, "", "d_ff", kI64Min, kI64Max);
  c.encoder_ffn_dims = ReadFfnDims(r, root, "encoder_ffn_dims");
  c.decoder_ffn_dims = ReadFfnDims(r, root, "decoder_ffn_dims");
  if (const Json* v = r.Member(root, "", "activation", /*required=*/true)) {
    c.activation = Choice<kernels::Activation>(
        r, *v, "activation",
        {{"relu", kernels::Activation::kRelu}, {"gelu", kernels::Activation::kGelu}});
  }
  if (const Json* v = r.Member(root, "", "norm", /*required=*/true)) {
    Choice<int>(r, *v, "norm", {{"pre", 0}});
  }
  if (const Json* v = r.Member(root, "", "layer_norm_eps", /*required=*/true)) {
    c.layer_norm_eps = static_cast<float>(r.Number(*v, "layer_norm_eps"));
  }
  c.vocab_size = r.RequiredInt(root, "", "vocab_size", kI64Min, kI64Max);
  c.max_positions = r.RequiredInt(root, "", "max_positions", kI64Min, kI64Max);
  if (const Json* v = r.Member(root, "", "position_encoding", /*required=*/true)) {
    Choice<int>(r, *v, "position_encoding", {{"sinusoidal", 0}});
  }
  c.scale_embeddings = r.RequiredBool(root, "", "scale_embeddings");
  c.tie_embeddings = r.RequiredBool(root, "", "tie_embeddings");
  if (const Json* v = r.Member(root, "", "special_tokens", /*required=*/true);
      v != nullptr && r.IsObject(*v, "special_tokens")) {
    constexpr int64_t kI32Min = std::numeric_limits<int32_t>::min();
    constexpr int64_t kI32Max = std::numeric_limits<int32_t>::max();
    c.special_tokens.pad =
        static_cast<int32_t>(r.RequiredInt(*v, "special_tokens", "pad", kI32Min, kI32Max));
    c.special_tokens.unk =
        static_cast<int32_t>(r.RequiredInt(*v, "special_tokens", "unk", kI32Min, kI32Max));
    c.special_tokens.bos =
        static_cast<int32_t>(r.RequiredInt(*v, "special_tokens", "bos", kI32Min, kI32Max));
    c.special_tokens.eos =
        static_cast<int32_t>(r.RequiredInt(*v, "special_tokens", "eos", kI32Min, kI32Max));
  }
  if (const Json* v = r.Member(root, "", "languages", /*required=*/true);
      v != nullptr && r.IsArray(*v, "languages")) {
    for (size_t i = 0; i < v->size() && r.ok(); ++i) {
      c.languages.push_back(r.String((*v)[i], Index("languages", i)));
    }
  }
  if (const Json* v = r.Member(root, "", "tasks", /*required=*/true);
      v != nullptr && r.IsArray(*v, "tasks")) {
    for (size_t i = 0; i < v->size() && r.ok(); ++i) {
      c.tasks.push_back(ReadTask(r, (*v)[i], Index("tasks", i)));
    }
  }
  c.moe = ReadMoe(r, root);
  c.extracted = ReadExtracted(r, root);
  if (const Json* v = r.Optional(root, "", "files"); v != nullptr && r.IsObject(*v, "files")) {
    for (const auto& [name, digest] : v->items()) {
      c.file_digests[name] = r.String(digest, absl::StrCat("files.", name));
    }
  }
  if (const Json* v = r.Member(root, "", "training", /*required=*/false)) {
    c.training_json = v->dump(-1, ' ', false, Json::error_handler_t::replace);
  }
  if (!r.ok()) return r.status();
  if (absl::Status s = ValidateModelConfig(c); !s.ok()) return s;
  return c;
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir) {
  const std::string path = absl::StrCat(model_dir, "/config.json");
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  if (size < 0 || size > kMaxConfigBytes) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a config file (", size, " bytes)"));
  }
  in.seekg(0, std::ios::beg);
  std::string text(static_cast<size_t>(size), '\0');
  if (!in.read(text.data(), size)) {
    return absl::DataLossError(absl::StrCat(path, ": read failed"));
  }
  absl::StatusOr<ModelConfig> config = ParseModelConfig(text);
  if (!config.ok()) {
    return absl::Status(config.status().code(),
                        absl::StrCat(path, ": ", std::string(config.status().message())));
  }
  return config;
}

std::string ModelConfigToJson(const ModelConfig& c) {
  auto dims_json = [](const std::vector<int64_t>& dims) {
    return dims.empty() ? Json(nullptr) : Json(dims);
  };
  auto key_json = [](TaskKey key) {
    return key == TaskKey::kNone ? Json(nullptr) : Json(TaskKeyName(key));
  };
  Json j;
  j["format_version"] = c.format_version;
  j["architecture"] = kArchitecture;
  j["d_model"] = c.d_model;
  j["num_heads"] = c.num_heads;
  j["encoder_layers"] = c.encoder_layers;
  j["decoder_layers"] = c.decoder_layers;
  j["d_ff"] = c.d_ff;
  j["encoder_ffn_dims"] = dims_json(c.encoder_ffn_dims);
  j["decoder_ffn_dims"] = dims_json(c.decoder_ffn_dims);
  j["activation"] = kernels::ActivationName(c.activation);
  j["norm"] = "pre";
  j["layer_norm_eps"] = ShortestDouble(c.layer_norm_eps);
  j["vocab_size"] = c.vocab_size;
  j["max_positions"] = c.max_positions;
  j["position_encoding"] = "sinusoidal";
  j["scale_embeddings"] = c.scale_embeddings;
  j["tie_embeddings"] = c.tie_embeddings;
  j["special_tokens"] = Json{{"pad", c.special_tokens.pad},
                             {"unk", c.special_tokens.unk},
                             {"bos", c.special_tokens.bos},
                             {"eos", c.special_tokens.eos}};
  j["languages"] = c.languages;
  Json tasks = Json::array();
  for (const TaskInfo& t : c.tasks) {
    tasks.push_back(Json{{"id", t.id},
                         {"source", t.source},
                         {"target", t.target},
                         {"index", t.index},
                         {"target_tag", t.target_tag},
                         {"target_tag_id", t.target_tag_id}});
  }
  j["tasks"] = std::move(tasks);
  if (c.moe.has_value()) {
    const MoeConfig& m = *c.moe;
    j["moe"] = Json{{"num_experts", m.num_experts},
                    {"top_k", m.top_k},
                    {"encoder_layers", m.encoder.layers},
                    {"decoder_layers", m.decoder.layers},
                    {"encoder_routing", RoutingName(m.encoder.routing)},
                    {"decoder_routing", RoutingName(m.decoder.routing)},
                    {"encoder_task_key", key_json(m.encoder.task_key)},
                    {"decoder_task_key", key_json(m.decoder.task_key)}};
  } else {
    j["moe"] = nullptr;
  }
  if (c.extracted.has_value()) {
    const ExtractedInfo& e = *c.extracted;
    Json kept = Json::object();
    for (const ExtractedLayer& layer : e.layers) {
      if (layer.all_experts) {
        kept[layer.layer] = "all";
        continue;
      }
      Json gates = Json::array();
      for (float g : layer.gates) gates.push_back(ShortestDouble(g));
      kept[layer.layer] = Json{{"experts", layer.experts}, {"gates", std::move(gates)}};
      if (layer.unfolded) kept[layer.layer]["form"] = "unfolded";
    }
    j["extracted"] =
        Json{{"task", e.task},
             {"parent_digest", e.parent_digest.empty() ? Json(nullptr) : Json(e.parent_digest)},
             {"parent_parameters", e.parent_parameters},
             {"experts_kept", std::move(kept)}};
  } else {
    j["extracted"] = nullptr;
  }
  if (c.file_digests.empty()) {
    j["files"] = nullptr;
  } else {
    j["files"] = Json(c.file_digests);
  }
  // training_json comes from a parsed file; text that does not parse (a config built badly in
  // code) is written as null rather than as an invalid file.
  j["training"] = Json::parse(c.training_json, nullptr, /*allow_exceptions=*/false);
  if (j["training"].is_discarded()) j["training"] = nullptr;
  return j.dump(2, ' ', false, Json::error_handler_t::replace) + "\n";
}

}  // namespace taskmoe::models
