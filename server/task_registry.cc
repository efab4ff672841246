// Loading, listing and reloading the repository's tasks.
#include "server/task_registry.h"

#include <algorithm>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "models/weight_store.h"
#include "server/log.h"

namespace taskmoe::server {

TaskRegistry::TaskRegistry(std::string repository, models::Precision precision,
                           std::vector<std::string> only_tasks)
    : repository_(std::move(repository)),
      only_tasks_(std::move(only_tasks)),
      precision_(precision),
      store_(std::make_shared<models::WeightStore>()) {}

TaskRegistry::~TaskRegistry() = default;

size_t TaskRegistry::total_weight_bytes() const { return store_->total_bytes(); }

size_t TaskRegistry::shared_weight_bytes() const { return store_->shared_bytes(); }

absl::StatusOr<std::shared_ptr<const models::TaskModel>> TaskRegistry::LoadTask(
    const std::string& task) const {
  return models::TaskModel::Load(
      absl::StrCat(repository_, "/", task), task,
      {.precision = precision_, .weight_store = store_, .repository = repository_});
}

absl::Status TaskRegistry::LoadAll(bool require_all) {
  absl::StatusOr<std::vector<std::string>> names = models::ListTaskDirectories(repository_);
  if (!names.ok()) return names.status();
  if (!only_tasks_.empty()) {
    std::vector<std::string> missing;
    for (const std::string& task : only_tasks_) {
      if (std::find(names->begin(), names->end(), task) == names->end()) missing.push_back(task);
    }
    if (!missing.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "--tasks: ", absl::StrJoin(missing, ", "), " not in the model repository ", repository_,
          " (it holds ", names->empty() ? "no task" : absl::StrJoin(*names, ", "), ")"));
    }
    *names = only_tasks_;
  }
  const models::MatmulPath path = models::DefaultMatmulPath(precision_);
  Log(path == models::MatmulPath::kBF16AsF32 ? LogLevel::kWarning : LogLevel::kInfo,
      absl::StrCat("compute: ", models::CpuSummary(), "; ", models::PrecisionName(precision_),
                   " linear layers run ", models::MatmulPathName(path),
                   path == models::MatmulPath::kBF16AsF32
                       ? " (bf16 arithmetic is no faster than f32 on this CPU, or it has none: "
                         "bf16-rounded weights and inputs are multiplied in f32, at f32's "
                         "speed; --precision=int8 is faster here)"
                   : path == models::MatmulPath::kAvx2F32
                       ? " (weights stored as bf16 values are read in bf16: the same results "
                         "from half the memory)"
                   : path == models::MatmulPath::kOneDnnF32
                       ? " (layers whose weights are bf16 values, as a bf16-stored model's, run "
                         "avx2_f32 with 512-bit tiles on bf16-packed weights; ListTasks gives "
                         "each task's path)"
                       : ""));
  for (const std::string& name : *names) {
    const absl::Time start = absl::Now();
    absl::StatusOr<std::shared_ptr<const models::TaskModel>> task = LoadTask(name);
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
    const models::TaskDescription& d = (*task)->description();
    Log(LogLevel::kInfo,
        absl::StrCat("loaded task ", name, " version ", d.version, " (", d.parameters,
                     " parameters, ", d.memory_bytes >> 20, " MiB, ",
                     absl::FormatDuration(absl::Now() - start),
                     d.greedy_head_filter.empty()
                         ? std::string()
                         : absl::StrCat("; greedy head filtered through ", d.greedy_head_filter),
                     ")"));
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

std::shared_ptr<const models::TaskModel> TaskRegistry::Find(std::string_view task) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = tasks_.find(task);
  return it == tasks_.end() ? nullptr : it->second;
}

std::vector<std::shared_ptr<const models::TaskModel>> TaskRegistry::List() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::shared_ptr<const models::TaskModel>> out;
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
  if (!only_tasks_.empty() &&
      std::find(only_tasks_.begin(), only_tasks_.end(), task) == only_tasks_.end()) {
    return absl::NotFoundError(absl::StrCat("task ", task,
                                            " is not among the tasks this server "
                                            "serves (--tasks=",
                                            absl::StrJoin(only_tasks_, ","), ")"));
  }
  Reloaded result;
  result.previous = Find(task);
  if (result.previous == nullptr && !models::HasTaskDirectory(repository_, task)) {
    return absl::NotFoundError(absl::StrCat("task ", task, " is not loaded and ", repository_, "/",
                                            task, "/config.json does not exist"));
  }
  absl::StatusOr<std::shared_ptr<const models::TaskModel>> loaded = LoadTask(task);
  if (!loaded.ok()) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto broken = load_errors_.find(task);
      if (broken != load_errors_.end()) broken->second = std::string(loaded.status().message());
    }
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot load the new version of task ", task, ": ", loaded.status().message(),
        result.previous ? absl::StrCat("; still serving version ", result.previous->version())
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
