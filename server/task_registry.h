// TaskRegistry: the tasks a model repository holds, one loaded models::TaskModel per task,
// and their replacement while serving (hot reload).
//
// A repository is a directory with one subdirectory per task, named by the task id and
// holding an extracted subnetwork (DESIGN.md §3). Every model is loaded through one
// WeightStore, so tensors that are byte-identical across tasks are in memory once.
//
// A TaskModel is immutable and shared: a request holds the version it started on until it
// finishes, so a reload never disturbs work in progress; the old version is freed when its
// last request is done.
#ifndef TASKMOE_SERVER_TASK_REGISTRY_H_
#define TASKMOE_SERVER_TASK_REGISTRY_H_

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "models/compute.h"
#include "models/task_model.h"

namespace taskmoe::models {
class WeightStore;
}

namespace taskmoe::server {

class TaskRegistry {
 public:
  // `only_tasks`: serve just these task ids of the repository (a shard of it); empty: all.
  TaskRegistry(std::string repository, models::Precision precision,
               std::vector<std::string> only_tasks = {});
  ~TaskRegistry();

  // Loads every task subdirectory (one with a config.json), or only those of `only_tasks`,
  // which must all be in the repository (FAILED_PRECONDITION naming the missing ones, with the
  // repository's tasks). A task that fails to load is kept
  // as broken, with the reason (LoadErrors), and the others are served; with `require_all`
  // the first failure fails the whole load instead, naming the task. Fails as well when the
  // repository holds no task, or none loads.
  absl::Status LoadAll(bool require_all);

  // Null when the task is not loaded.
  std::shared_ptr<const models::TaskModel> Find(std::string_view task) const;
  std::vector<std::shared_ptr<const models::TaskModel>> List() const;  // by task id
  std::vector<std::string> TaskIds() const;
  // Tasks that failed to load at start and have not been reloaded since: id -> reason.
  std::map<std::string, std::string> LoadErrors() const;
  // The reason `task` failed to load, or empty when it did not (or is unknown).
  std::string LoadError(std::string_view task) const;

  struct Reloaded {
    std::shared_ptr<const models::TaskModel> previous;  // null when the task is new
    std::shared_ptr<const models::TaskModel> current;
  };
  // Loads the task's directory again (or for the first time, which brings in a task that
  // failed at start) and swaps it in once it has loaded completely. On failure the old
  // version stays. Reloads run one at a time.
  absl::StatusOr<Reloaded> Reload(const std::string& task);

  // Bytes of weights in memory, and those of them that more than one loaded task uses.
  size_t total_weight_bytes() const;
  size_t shared_weight_bytes() const;

 private:
  absl::StatusOr<std::shared_ptr<const models::TaskModel>> LoadTask(const std::string& task) const;

  const std::string repository_;
  const std::vector<std::string> only_tasks_;
  const models::Precision precision_;
  const std::shared_ptr<models::WeightStore> store_;
  std::mutex reload_mu_;  // serialises Reload; held while loading, unlike mu_
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<const models::TaskModel>, std::less<>> tasks_;
  std::map<std::string, std::string, std::less<>> load_errors_;  // under mu_
};

using models::IsValidTaskName;

}  // namespace taskmoe::server

#endif  // TASKMOE_SERVER_TASK_REGISTRY_H_
