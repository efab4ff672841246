// Loading, listing and reloading the repository's tasks.
#include "server/task_registry.h"

#include <openssl/sha.h>

#include <algorithm>
#include <filesystem>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "kernels/cpu_features.h"
#include "models/config.h"
#include "models/model_files.h"
#include "models/safetensors.h"
#include "server/log.h"

namespace taskmoe::server {
namespace {

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
  for (const char* file :
       {models::kConfigFileName, models::kWeightsFileName, models::kTokenizerFileName}) {
    absl::StatusOr<std::string> digest = models::FileSha256(absl::StrCat(dir, "/", file));
    if (!digest.ok()) return digest.status();
    absl::StrAppend(&digests, *digest, "\n");
    result.files[file] = *std::move(digest);
  }
  unsigned char out[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(digests.data()), digests.size(), out);
  result.version = absl::StrCat(
      "sha256:", absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(out), 8)));
  return result;
}

// Refuses a task directory, or one of its files, that resolves outside the repository: a
// symlink must not turn the repository into a way to read any file the server can.
absl::Status CheckInsideRepository(const std::string& repository, const std::string& dir) {
  std::error_code ec;
  const std::filesystem::path root = std::filesystem::canonical(repository, ec);
  if (ec)
    return absl::NotFoundError(absl::StrCat("model repository ", repository, ": ", ec.message()));
  for (const char* name :
       {"", models::kConfigFileName, models::kWeightsFileName, models::kTokenizerFileName}) {
    const std::filesystem::path path =
        *name == '\0' ? std::filesystem::path(dir) : std::filesystem::path(dir) / name;
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

bool IsValidTaskName(std::string_view task) {
  if (task.empty() || task.size() > 64 || task.front() == '.') return false;
  for (char c : task) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') {
      return false;
    }
  }
  return true;
}

LoadedTask::~LoadedTask() {
  // Drop this version's hold on its weights first, then let the store free what no other
  // version uses.
  model.reset();
  if (store != nullptr) store->Prune();
}

TaskRegistry::TaskRegistry(std::string repository, kernels::Precision precision)
    : repository_(std::move(repository)),
      precision_(precision),
      store_(std::make_shared<models::WeightStore>()) {}

absl::StatusOr<std::shared_ptr<const LoadedTask>> TaskRegistry::LoadTask(
    const std::string& task) const {
  const std::string dir = absl::StrCat(repository_, "/", task);
  if (absl::Status s = CheckInsideRepository(repository_, dir); !s.ok()) return s;
  // The version is computed before loading, so a file replaced during the load gives a
  // version that matches neither and the next reload fixes it, rather than a stale one.
  absl::StatusOr<DirectoryDigests> digests = HashDirectory(dir);
  if (!digests.ok()) return digests.status();
  models::LoadOptions options{.precision = precision_, .weight_store = store_};
  absl::StatusOr<std::shared_ptr<const models::TransformerModel>> model =
      models::TransformerModel::Load(dir, options);
  if (!model.ok()) return model.status();
  const models::ModelConfig& config = (*model)->config();
  if (absl::Status s =
          models::CheckFileDigests(config,
                                   [&](const std::string& file) -> absl::StatusOr<std::string> {
                                     return digests->files.at(file);
                                   });
      !s.ok()) {
    return s;
  }
  const models::TaskInfo* info = config.FindTask(task);
  if (info == nullptr) {
    std::vector<std::string> served;
    for (const models::TaskInfo& t : config.tasks) served.push_back(t.id);
    return absl::FailedPreconditionError(
        absl::StrCat(dir, " is named for task ", task, " but its config.json serves ",
                     served.empty() ? "no task" : absl::StrJoin(served, ", ")));
  }
  absl::StatusOr<const models::TaskRoute*> route =
      (*model)->RouteForTask(static_cast<int>(info - config.tasks.data()));
  if (!route.ok()) return route.status();
  absl::StatusOr<std::shared_ptr<const models::Tokenizer>> tokenizer =
      models::Tokenizer::Load(absl::StrCat(dir, "/", models::kTokenizerFileName), config);
  if (!tokenizer.ok()) return tokenizer.status();

  auto loaded = std::make_shared<LoadedTask>();
  loaded->id = task;
  loaded->version = std::move(digests->version);
  loaded->model = *std::move(model);
  loaded->tokenizer = *std::move(tokenizer);
  loaded->info = info;
  loaded->route = *route;
  loaded->store = store_;
  return loaded;
}

absl::Status TaskRegistry::LoadAll(bool require_all) {
  std::error_code ec;
  if (!std::filesystem::is_directory(repository_, ec)) {
    return absl::NotFoundError(
        absl::StrCat("model repository ", repository_, " is not a directory"));
  }
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(repository_, ec)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_directory() || !IsValidTaskName(name)) continue;
    if (!std::filesystem::exists(entry.path() / models::kConfigFileName)) continue;
    names.push_back(name);
  }
  if (ec) return absl::InternalError(absl::StrCat("listing ", repository_, ": ", ec.message()));
  if (names.empty()) {
    return absl::NotFoundError(
        absl::StrCat("model repository ", repository_,
                     " holds no task: expected subdirectories like en-de/ with config.json, "
                     "model.safetensors and spm.model (taskmoe-extract writes them)"));
  }
  std::sort(names.begin(), names.end());
  const kernels::MatmulPath path = kernels::DefaultMatmulPath(precision_);
  Log(path == kernels::MatmulPath::kBF16AsF32 ? LogLevel::kWarning : LogLevel::kInfo,
      absl::StrCat("compute: ", kernels::CpuSummary(), "; ", kernels::PrecisionName(precision_),
                   " linear layers run ", kernels::MatmulPathName(path),
                   path == kernels::MatmulPath::kBF16AsF32
                       ? " (this CPU has no bf16 matmul: bf16-rounded weights and inputs are "
                         "multiplied in f32, at f32's memory and speed; --precision=int8 is "
                         "faster here)"
                       : ""));
  for (const std::string& name : names) {
    const absl::Time start = absl::Now();
    absl::StatusOr<std::shared_ptr<const LoadedTask>> task = LoadTask(name);
    if (!task.ok()) {
      if (require_all) {
        return absl::Status(task.status().code(),
                            absl::StrCat("task ", name, ": ", task.status().message()));
      }
      Log(LogLevel::kError, "task failed to load; serving the others (ReloadTask retries it)",
          {{"task", name}, {"error", task.status().message()}});
      std::lock_guard<std::mutex> lock(mu_);
      load_errors_[name] = std::string(task.status().message());
      continue;
    }
    Log(LogLevel::kInfo, absl::StrCat("loaded task ", name, " version ", (*task)->version, " (",
                                      (*task)->model->parameter_count(), " parameters, ",
                                      (*task)->model->memory_bytes() >> 20, " MiB, ",
                                      absl::FormatDuration(absl::Now() - start), ")"));
    std::lock_guard<std::mutex> lock(mu_);
    tasks_[name] = *std::move(task);
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (tasks_.empty()) {
      std::vector<std::string> reasons;
      for (const auto& [name, reason] : load_errors_) {
        reasons.push_back(absl::StrCat("task ", name, ": ", reason));
      }
      return absl::FailedPreconditionError(
          absl::StrCat("no task of ", repository_, " loaded: ", absl::StrJoin(reasons, "; ")));
    }
  }
  Log(LogLevel::kInfo,
      absl::StrCat("weights in memory: ", store_->total_bytes() >> 20, " MiB, of which ",
                   store_->shared_bytes() >> 20, " MiB shared by several tasks"));
  return absl::OkStatus();
}

std::shared_ptr<const LoadedTask> TaskRegistry::Find(std::string_view task) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = tasks_.find(task);
  return it == tasks_.end() ? nullptr : it->second;
}

std::vector<std::shared_ptr<const LoadedTask>> TaskRegistry::List() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::shared_ptr<const LoadedTask>> out;
  for (const auto& [name, task] : tasks_) out.push_back(task);
  return out;
}

std::map<std::string, std::string> TaskRegistry::LoadErrors() const {
  std::lock_guard<std::mutex> lock(mu_);
  return {load_errors_.begin(), load_errors_.end()};
}

std::string TaskRegistry::LoadError(std::string_view task) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = load_errors_.find(task);
  return it == load_errors_.end() ? std::string() : it->second;
}

std::vector<std::string> TaskRegistry::TaskIds() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> out;
  for (const auto& [name, task] : tasks_) out.push_back(name);
  return out;
}

absl::StatusOr<TaskRegistry::Reloaded> TaskRegistry::Reload(const std::string& task) {
  if (!IsValidTaskName(task)) {
    return absl::InvalidArgumentError(
        absl::StrCat("task: '", absl::CHexEscape(task),
                     "' is not a task name (letters, digits, '-', '_' and '.')"));
  }
  std::lock_guard<std::mutex> reload_lock(reload_mu_);
  Reloaded result;
  result.previous = Find(task);
  std::error_code ec;
  if (result.previous == nullptr &&
      !std::filesystem::exists(absl::StrCat(repository_, "/", task, "/", models::kConfigFileName),
                               ec)) {
    return absl::NotFoundError(absl::StrCat("task ", task, " is not loaded and ", repository_, "/",
                                            task, "/config.json does not exist"));
  }
  absl::StatusOr<std::shared_ptr<const LoadedTask>> loaded = LoadTask(task);
  if (!loaded.ok()) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto broken = load_errors_.find(task);
      if (broken != load_errors_.end()) broken->second = std::string(loaded.status().message());
    }
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot load the new version of task ", task, ": ", loaded.status().message(),
        result.previous ? absl::StrCat("; still serving version ", result.previous->version)
                        : std::string()));
  }
  result.current = *loaded;
  {
    std::lock_guard<std::mutex> lock(mu_);
    tasks_[task] = *std::move(loaded);
    load_errors_.erase(task);
  }
  return result;
}

}  // namespace taskmoe::server
