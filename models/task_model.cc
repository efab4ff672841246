// Loading a task's model directory, and the request pipeline around decoding.
#include "models/task_model.h"

#include <algorithm>
#include <filesystem>
#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "models/format/config.h"
#include "models/format/model_files.h"
#include "models/format/sha256.h"
#include "models/text/tokenizer.h"
#include "models/transformer.h"
#include "models/weight_store.h"
#include "util/status_macros.h"

namespace taskmoe::models {
namespace {

constexpr const char* kModelFiles[] = {kConfigFileName, kWeightsFileName, kTokenizerFileName};

// The files of a model directory, hashed once: each file's SHA-256 (checked against those
// config.json records) and the directory's version, the SHA-256 of the three, shortened. The
// version changes when any file changes and is the same on every server loading the same files.
struct DirectoryDigests {
  std::map<std::string, std::string> files;
  std::string version;
};

absl::StatusOr<DirectoryDigests> HashDirectory(const std::string& dir) {
  DirectoryDigests result;
  std::string digests;
  for (const char* file : kModelFiles) {
    TASKMOE_ASSIGN_OR_RETURN(std::string digest, FileSha256(absl::StrCat(dir, "/", file)));
    absl::StrAppend(&digests, digest, "\n");
    result.files[file] = std::move(digest);
  }
  // "sha256:" and the first 16 hex digits (8 bytes) of the digest of the digests.
  TASKMOE_ASSIGN_OR_RETURN(const std::string all, Sha256(digests));
  result.version = all.substr(0, std::string_view(kSha256Prefix).size() + 16);
  return result;
}

// Refuses a model directory, or one of its files, that resolves outside `repository`.
absl::Status CheckInsideRepository(const std::string& repository, const std::string& dir) {
  std::error_code ec;
  const std::filesystem::path root = std::filesystem::canonical(repository, ec);
  if (ec) {
    return absl::NotFoundError(absl::StrCat("model repository ", repository, ": ", ec.message()));
  }
  std::vector<std::filesystem::path> paths = {dir};
  for (const char* file : kModelFiles) paths.push_back(std::filesystem::path(dir) / file);
  for (const std::filesystem::path& path : paths) {
    const std::filesystem::path resolved = std::filesystem::canonical(path, ec);
    if (ec) continue;  // missing: the loader says so
    const auto [root_end, unused] =
        std::mismatch(root.begin(), root.end(), resolved.begin(), resolved.end());
    if (root_end != root.end()) {
      return absl::PermissionDeniedError(absl::StrCat(
          path.string(), " resolves to ", resolved.string(), ", outside the model repository ",
          root.string(), " (symlinks may not leave it)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::shared_ptr<const TaskModel>> TaskModel::Load(const std::string& dir,
                                                                 const std::string& task,
                                                                 const TaskModelOptions& options) {
  if (!options.repository.empty()) {
    TASKMOE_RETURN_IF_ERROR(CheckInsideRepository(options.repository, dir));
  }
  // Hashed before loading: a file replaced during the load gives a version matching neither.
  TASKMOE_ASSIGN_OR_RETURN(DirectoryDigests digests, HashDirectory(dir));
  TASKMOE_ASSIGN_OR_RETURN(std::shared_ptr<const TransformerModel> transformer,
                           TransformerModel::Load(dir, {.precision = options.precision,
                                                        .weight_store = options.weight_store}));
  const ModelConfig& config = transformer->config();
  TASKMOE_RETURN_IF_ERROR(
      CheckFileDigests(config, [&](const std::string& file) -> absl::StatusOr<std::string> {
        return digests.files.at(file);
      }));
  const TaskInfo* info = config.FindTask(task);
  if (info == nullptr) {
    std::vector<std::string> served;
    for (const TaskInfo& t : config.tasks) served.push_back(t.id);
    return absl::FailedPreconditionError(
        absl::StrCat("task ", task, " is not served by ", dir, ": its config.json serves ",
                     served.empty() ? "no task" : absl::StrJoin(served, ", ")));
  }
  TASKMOE_ASSIGN_OR_RETURN(const TaskRoute* route,
                           transformer->RouteForTask(static_cast<int>(info - config.tasks.data())));
  const std::string spm_path = absl::StrCat(dir, "/", kTokenizerFileName);
  std::shared_ptr<const Tokenizer> tokenizer;
  std::shared_ptr<const void> tokenizer_handle;
  if (options.weight_store != nullptr) {
    // Every task of one parent has the same vocabulary: read once, shared by content. Errors
    // read as Tokenizer::Load's.
    auto read_shared = [&]() -> absl::StatusOr<WeightStore::Use<SentencePieceModel>> {
      TASKMOE_ASSIGN_OR_RETURN(const std::string bytes, SentencePieceModel::ReadFile(spm_path));
      return options.weight_store->GetSentencePiece(
          bytes, [&] { return SentencePieceModel::FromBytes(bytes, spm_path); });
    };
    absl::StatusOr<WeightStore::Use<SentencePieceModel>> model = read_shared();
    if (!model.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot load SentencePiece model: ", model.status().message()));
    }
    TASKMOE_ASSIGN_OR_RETURN(tokenizer, Tokenizer::FromModel(model->value, spm_path, config));
    tokenizer_handle = std::move(model->handle);
  } else {
    TASKMOE_ASSIGN_OR_RETURN(tokenizer, Tokenizer::Load(spm_path, config));
  }

  std::shared_ptr<TaskModel> loaded(new TaskModel());
  TaskDescription& d = loaded->description_;
  d.id = task;
  d.source_language = info->source;
  d.target_language = info->target;
  d.version = std::move(digests.version);
  d.parameters = transformer->parameter_count();
  d.memory_bytes = transformer->memory_bytes();
  d.precision = PrecisionName(transformer->precision());
  d.matmul_path = MatmulPathName(transformer->matmul_path());
  if (const auto filter = transformer->greedy_head_filter_path(); filter.has_value()) {
    d.greedy_head_filter = MatmulPathName(*filter);
  }
  if (config.extracted.has_value()) d.parent_digest = config.extracted->parent_digest;
  loaded->transformer_ = std::move(transformer);
  loaded->tokenizer_ = std::move(tokenizer);
  loaded->tokenizer_handle_ = std::move(tokenizer_handle);
  loaded->info_ = info;
  loaded->route_ = route;
  loaded->weight_store_ = options.weight_store;
  return loaded;
}

TaskModel::~TaskModel() {
  // Drop this model's hold on its weights first, then let the store free what no other model
  // uses.
  transformer_.reset();
  tokenizer_.reset();
  tokenizer_handle_.reset();
  if (weight_store_ != nullptr) weight_store_->Prune();
}

int64_t TaskModel::max_source_tokens() const { return transformer_->config().max_positions; }

int32_t TaskModel::eos_id() const { return transformer_->config().special_tokens.eos; }

std::string TaskModel::Piece(int32_t id) const { return tokenizer_->IdToPiece(id); }

absl::StatusOr<std::vector<SourceSentence>> TaskModel::PrepareText(
    std::string_view text, const TextOptions& options) const {
  return models::PrepareText(*tokenizer_, *info_, text, options, max_source_tokens());
}

absl::StatusOr<std::vector<Hypothesis>> TaskModel::Decode(
    const std::vector<std::vector<int32_t>>& sources, const DecodeOptions& options,
    DecodeWorkspace* workspace) const {
  return models::Decode(*transformer_, *route_, sources, options, workspace);
}

bool TaskModel::CanShareBatch(const TaskModel& other) const {
  return TransformerModel::CanShareBatch(*transformer_, *other.transformer_);
}

absl::StatusOr<TextTranslation> TaskModel::FinishText(
    absl::Span<const SourceSentence> sentences, absl::Span<const Hypothesis* const> hypotheses,
    UnknownPieces unknowns) const {
  return AssembleText(*tokenizer_, sentences, hypotheses, unknowns);
}

TextStream TaskModel::StartStream(absl::Span<const SourceSentence> sentences,
                                  UnknownPieces unknowns) const {
  return TextStream(*tokenizer_, sentences, unknowns);
}

bool IsValidTaskName(std::string_view task) {
  if (task.empty() || task.size() > 64 || task.front() == '.') return false;
  for (char c : task) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') {
      return false;
    }
  }
  return true;
}

bool HasTaskDirectory(const std::string& repository, const std::string& task) {
  std::error_code ec;
  return std::filesystem::exists(std::filesystem::path(repository) / task / kConfigFileName, ec);
}

absl::StatusOr<std::vector<std::string>> ListTaskDirectories(const std::string& repository) {
  std::error_code ec;
  if (!std::filesystem::is_directory(repository, ec)) {
    return absl::NotFoundError(
        absl::StrCat("model repository ", repository, " is not a directory"));
  }
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(repository, ec)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_directory() || !IsValidTaskName(name)) continue;
    if (!std::filesystem::exists(entry.path() / kConfigFileName)) continue;
    names.push_back(name);
  }
  if (ec) return absl::InternalError(absl::StrCat("listing ", repository, ": ", ec.message()));
  if (names.empty()) {
    return absl::NotFoundError(absl::StrCat("model repository ", repository,
                                            " holds no task: expected subdirectories like en-de/ "
                                            "with ",
                                            kConfigFileName, ", ", kWeightsFileName, " and ",
                                            kTokenizerFileName, " (taskmoe-extract writes them)"));
  }
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace taskmoe::models
