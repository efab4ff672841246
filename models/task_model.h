// TaskModel: the serving seam of models/. One task's model (its subnetwork, or a full
// checkpoint used for one of its tasks) loaded from a model directory together with its
// tokenizer, route, version and limits, and the two halves of serving a request around
// decoding: preparing a caller's text (sentence splitting, tokenising for the task, the target
// tag, length limits: every check that is not about transport) and finishing the decoder's
// tokens into text. The server, taskmoe-translate (through Translator) and the fuzzers all go
// through it; none of them knows the model directory's files or the engine's classes.
//
// A TaskModel is immutable once loaded and shared (std::shared_ptr<const TaskModel>): a server
// request holds the version it started on until it finishes, whatever reloads happen meanwhile.
#ifndef TASKMOE_MODELS_TASK_MODEL_H_
#define TASKMOE_MODELS_TASK_MODEL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "models/compute.h"
#include "models/decoding.h"
#include "models/text_pipeline.h"

namespace taskmoe::models {

class Tokenizer;
class TransformerModel;
class WeightStore;
struct TaskInfo;
struct TaskRoute;

struct TaskModelOptions {
  Precision precision = Precision::kF32;
  // Shares byte-identical weights between the tasks loaded with the same store (and frees
  // what a task alone used when it goes away). Null: no sharing.
  std::shared_ptr<WeightStore> weight_store;
  // When set, the model directory and its files must resolve (symlinks followed) inside this
  // directory: a repository must not become a way to read any file the server can.
  std::string repository;
};

// What a caller may show about a loaded task (ListTasks, metrics, logs).
struct TaskDescription {
  std::string id;  // "en-de"
  std::string source_language;
  std::string target_language;
  std::string version;  // "sha256:" + 16 hex digits, from the digests of the directory's files
  int64_t parameters = 0;
  uint64_t memory_bytes = 0;  // of its weights in memory, shared ones included
  std::string precision;      // "f32", "bf16", "int8"
  std::string matmul_path;    // how this CPU computes its linear layers (kernels/precision.h)
  // The int8 path greedy steps filter the output projection's candidates through
  // (docs/api.md, "Scores and the greedy head"); empty where they compute the full product.
  std::string greedy_head_filter;
  std::string parent_digest;  // of the model it was extracted from; empty for a full model
};

class TaskModel {
 public:
  // Loads task `task` from the model directory `dir` (config.json, model.safetensors,
  // spm.model): checks the digests config.json records against the files, that the model
  // serves `task` (FAILED_PRECONDITION naming what it serves otherwise), and that the task
  // has a route. The version is computed before loading, so that a file replaced during the
  // load gives a version matching neither and the next reload fixes it.
  static absl::StatusOr<std::shared_ptr<const TaskModel>> Load(const std::string& dir,
                                                               const std::string& task,
                                                               const TaskModelOptions& options);
  ~TaskModel();
  TaskModel(const TaskModel&) = delete;
  TaskModel& operator=(const TaskModel&) = delete;

  const std::string& id() const { return description_.id; }
  const std::string& version() const { return description_.version; }
  const TaskDescription& description() const { return description_; }
  // Longest source a sentence may have, in tokens (target tag and EOS included).
  int64_t max_source_tokens() const;
  int32_t eos_id() const;
  // The vocabulary piece of a token id ("▁Haus"), for callers that return tokens.
  std::string Piece(int32_t id) const;

  // Whether sentences of this task and of `other` may decode in one continuous batch
  // (continuous_batch.h): models of the same architecture, vocabulary and precision, as the
  // subnetworks of one parent are.
  bool CanShareBatch(const TaskModel& other) const;

  // --- Serving a request: prepare, decode, finish.
  // The sentences of `text`, tokenised for this task (text_pipeline.h's PrepareText).
  // INVALID_ARGUMENT says what is wrong, without naming the field (the caller knows it).
  absl::StatusOr<std::vector<SourceSentence>> PrepareText(std::string_view text,
                                                          const TextOptions& options) const;
  // Decodes a batch of prepared sentences' ids (decoding.h's Decode, on this task's route).
  absl::StatusOr<std::vector<Hypothesis>> Decode(const std::vector<std::vector<int32_t>>& sources,
                                                 const DecodeOptions& options,
                                                 DecodeWorkspace* workspace) const;
  // A text's translation from its sentences and their hypotheses (both in order).
  absl::StatusOr<TextTranslation> FinishText(absl::Span<const SourceSentence> sentences,
                                             absl::Span<const Hypothesis* const> hypotheses,
                                             UnknownPieces unknowns) const;
  // Streams a text's translation token by token (text_pipeline.h's TextStream).
  TextStream StartStream(absl::Span<const SourceSentence> sentences, UnknownPieces unknowns) const;

  // The engine's objects, for tools and tests that go below the seam.
  const TransformerModel& transformer() const { return *transformer_; }
  const TaskRoute& route() const { return *route_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const TaskInfo& info() const { return *info_; }

 private:
  TaskModel() = default;

  TaskDescription description_;
  std::shared_ptr<const TransformerModel> transformer_;
  std::shared_ptr<const Tokenizer> tokenizer_;
  const TaskInfo* info_ = nullptr;    // in transformer_->config()
  const TaskRoute* route_ = nullptr;  // in *transformer_
  // With a weight store: this model's hold on the store's SentencePiece model.
  std::shared_ptr<const void> tokenizer_handle_;
  // Pruned when this model goes away, so weights only it used are freed.
  std::shared_ptr<WeightStore> weight_store_;
};

// True for a name usable as a task directory: [A-Za-z0-9_.-], at most 64 characters, not
// starting with '.', so that a request can never name a path outside a repository.
bool IsValidTaskName(std::string_view task);

// Whether `repository`/`task` holds a model directory (its config.json exists).
bool HasTaskDirectory(const std::string& repository, const std::string& task);

// The tasks of a model repository: its subdirectories with a valid task name and a
// config.json, sorted. NOT_FOUND when `repository` is not a directory or holds no task.
absl::StatusOr<std::vector<std::string>> ListTaskDirectories(const std::string& repository);

}  // namespace taskmoe::models

#endif  // TASKMOE_MODELS_TASK_MODEL_H_
