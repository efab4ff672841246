// TaskRegistry: the tasks a model repository holds, one loaded model per task, and their
// replacement while serving (hot reload).
//
// A repository is a directory with one subdirectory per task, named by the task id and
// holding an extracted subnetwork (DESIGN.md §3). Every model is loaded through one
// WeightStore, so tensors that are byte-identical across tasks are in memory once.
//
// A LoadedTask is immutable and shared: a request holds the version it started on until it
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
#include "absl/time/time.h"
#include "models/tokenizer.h"
#include "models/transformer.h"
#include "models/weight_store.h"

namespace taskmoe::server {

struct LoadedTask {
  ~LoadedTask();

  std::string id;
  std::string version;  // "sha256:" + 16 hex digits of the digest of its three files
  std::shared_ptr<const models::TransformerModel> model;
  std::shared_ptr<const models::Tokenizer> tokenizer;
  const models::TaskInfo* info = nullptr;    // in model->config()
  const models::TaskRoute* route = nullptr;  // in *model
  // Pruned when this version goes away, so weights only it used are freed.
  std::shared_ptr<models::WeightStore> store;
};

class TaskRegistry {
 public:
  TaskRegistry(std::string repository, kernels::Precision precision);

  // Loads every task subdirectory (one with a config.json). A task that fails to load is kept
  // as broken, with the reason (LoadErrors), and the others are served; with `require_all`
  // the first failure fails the whole load instead, naming the task. Fails as well when the
  // repository holds no task, or none loads.
  absl::Status LoadAll(bool require_all);

  // Null when the task is not loaded.
  std::shared_ptr<const LoadedTask> Find(std::string_view task) const;
  std::vector<std::shared_ptr<const LoadedTask>> List() const;  // by task id
  std::vector<std::string> TaskIds() const;
  // Tasks that failed to load at start and have not been reloaded since: id -> reason.
  std::map<std::string, std::string> LoadErrors() const;
  // The reason `task` failed to load, or empty when it did not (or is unknown).
  std::string LoadError(std::string_view task) const;

  struct Reloaded {
    std::shared_ptr<const LoadedTask> previous;  // null when the task is new
    std::shared_ptr<const LoadedTask> current;
  };
  // Loads the task's directory again (or for the first time, which brings in a task that
  // failed at start) and swaps it in once it has loaded completely. On failure the old
  // version stays. Reloads run one at a time.
  absl::StatusOr<Reloaded> Reload(const std::string& task);

  const models::WeightStore& store() const { return *store_; }

 private:
  absl::StatusOr<std::shared_ptr<const LoadedTask>> LoadTask(const std::string& task) const;

  const std::string repository_;
  const kernels::Precision precision_;
  const std::shared_ptr<models::WeightStore> store_;
  std::mutex reload_mu_;  // serialises Reload; held while loading, unlike mu_
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<const LoadedTask>, std::less<>> tasks_;
  std::map<std::string, std::string, std::less<>> load_errors_;  // under mu_
};

// True for a name usable as a task directory: [A-Za-z0-9_.-], not starting with '.', so a
// request can never name a path outside the repository.
bool IsValidTaskName(std::string_view task);

}  // namespace taskmoe::server

#endif  // TASKMOE_SERVER_TASK_REGISTRY_H_
