// What the load tester sends: which task each request is for (a weighted mix) and which texts
// it carries (lines of a file, such as the demo test sets, or synthetic sentences of a given
// length). Everything is deterministic in a seed, so two runs send the same requests.
#ifndef TASKMOE_LOADTEST_WORKLOAD_H_
#define TASKMOE_LOADTEST_WORKLOAD_H_

#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "loadtest/caller.h"

namespace taskmoe::loadtest {

struct WeightedTask {
  std::string task;
  double weight = 1.0;
};

// A weighted choice among tasks.
class TaskMix {
 public:
  // "en-de:3,de-en:1"; a task without ":W" has weight 1. Weights must be positive and tasks
  // distinct.
  static absl::StatusOr<TaskMix> Parse(absl::string_view text);
  // Every task with weight 1 (e.g. the tasks the server lists).
  static absl::StatusOr<TaskMix> Uniform(const std::vector<std::string>& tasks);

  // The task for a uniform draw u in [0, 1): task i when u falls in its share of the total.
  const std::string& Pick(double u) const;
  const std::vector<WeightedTask>& tasks() const { return tasks_; }
  // The share of requests each task should get: weight / total weight.
  double Share(size_t i) const { return tasks_[i].weight / total_; }

 private:
  static absl::StatusOr<TaskMix> FromTasks(std::vector<WeightedTask> tasks);
  std::vector<WeightedTask> tasks_;
  std::vector<double> cumulative_;  // running sums of the weights
  double total_ = 0;
};

// Synthetic sentences: `words` words drawn from a fixed list of common English words,
// deterministic in `seed` (index i always gives the same sentence).
std::string SyntheticText(int words, uint64_t seed, int64_t index);

// The source language of a task id "src-tgt" ("" when it has no '-').
std::string SourceLanguage(absl::string_view task);

// Reads one text per non-empty line. `path_pattern` may hold "{task}" and "{src}".
absl::StatusOr<std::vector<std::string>> ReadTexts(absl::string_view path_pattern,
                                                   absl::string_view task);

// Produces requests: the task from the mix, then texts_per_request texts of that task taken
// in turn from its list (so a long run cycles through a test set in order).
class Workload {
 public:
  // `texts_by_task` must hold a non-empty list for every task of the mix.
  Workload(TaskMix mix, std::map<std::string, std::vector<std::string>> texts_by_task,
           int texts_per_request, uint64_t seed);

  // Builds a workload from options: texts from `texts_file` (per task) or synthetic ones.
  static absl::StatusOr<Workload> Create(TaskMix mix, const std::string& texts_file,
                                         int synthetic_words, int texts_per_request, uint64_t seed);

  // Not thread-safe: the load generator's dispatching thread is its only user.
  RequestSpec Next();
  void set_texts_per_request(int n) { texts_per_request_ = n; }
  int texts_per_request() const { return texts_per_request_; }
  const TaskMix& mix() const { return mix_; }

 private:
  TaskMix mix_;
  std::map<std::string, std::vector<std::string>> texts_by_task_;
  std::map<std::string, size_t> next_text_;
  int texts_per_request_;
  std::mt19937_64 rng_;
};

}  // namespace taskmoe::loadtest

#endif  // TASKMOE_LOADTEST_WORKLOAD_H_
