// Continuous batching at the engine level (issue 20): decoded tokens/s of R rows of S steps
// each (forced length), for one task and for an even mix of many, decoded
//   - as per-task batches to completion (what --batching=per_task runs when the load is spread
//     over the tasks: one batch per task, one after another), and
//   - as one models::ContinuousBatch holding every row,
// the four interleaved round after round in one process, medians printed with the CPU. No
// server, no queueing: the figures isolate what sharing one batch across tasks saves. Given
// several repositories (e.g. one checkpoint's subnetworks folded and unfolded), every scenario
// runs on each, all interleaved, so their figures compare within one run.
//
//   build/release/bench/continuous_batch_bench [--repository=build/demo-repository[,DIR...]]
//       [--rows=32] [--steps=32] [--rounds=5] [--precision=f32] [--threads=0] [--only=2,4]
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "models/compute.h"
#include "models/continuous_batch.h"
#include "models/task_model.h"
#include "models/weight_store.h"
#include "util/command_line.h"

ABSL_FLAG(std::string, repository, "build/demo-repository",
          "Model repositories of subnetworks of one parent each, comma-separated "
          "(tools/serve-demo.sh makes build/demo-repository)");
ABSL_FLAG(int, rows, 32, "Sentences decoded together");
ABSL_FLAG(int, steps, 32, "Tokens each sentence decodes (EOS ignored)");
ABSL_FLAG(int, rounds, 5, "Interleaved repetitions; medians are printed");
ABSL_FLAG(std::string, precision, "f32", "f32, bf16 or int8");
ABSL_FLAG(int, threads, 0, "Compute threads (0: the default budget)");
ABSL_FLAG(std::string, only, "",
          "Run only the scenarios with these numbers (1-4, comma-separated; for profiling one)");

namespace taskmoe::models {
namespace {

using TaskList = std::vector<std::shared_ptr<const TaskModel>>;

DecodeSettings ForcedLength(int steps) {
  DecodeSettings settings;
  settings.max_output_tokens = steps;
  settings.ignore_eos = true;
  return settings;
}

// One source sentence per row, rows spread evenly over `tasks` (row r is of task r % n).
std::vector<std::vector<int32_t>> Sources(const TaskList& tasks, int rows) {
  std::vector<std::vector<int32_t>> sources;
  for (int r = 0; r < rows; ++r) {
    const TaskModel& task = *tasks[r % tasks.size()];
    auto sentences = task.PrepareText(
        "The file could not be saved because the disk is full; choose another place.", {});
    if (!sentences.ok() || sentences->empty()) std::abort();
    sources.push_back((*sentences)[0].ids);
  }
  return sources;
}

// Per-task batches, one task after another. Returns tokens decoded.
int64_t RunPerTask(const TaskList& tasks, const std::vector<std::vector<int32_t>>& sources,
                   int steps, DecodeWorkspace& workspace) {
  int64_t tokens = 0;
  for (size_t t = 0; t < tasks.size(); ++t) {
    std::vector<std::vector<int32_t>> batch;
    for (size_t r = t; r < sources.size(); r += tasks.size()) batch.push_back(sources[r]);
    auto out = tasks[t]->Decode(batch, DecodeOptions(ForcedLength(steps)), &workspace);
    if (!out.ok()) std::abort();
    for (const Hypothesis& h : *out) tokens += static_cast<int64_t>(h.tokens.size());
  }
  return tokens;
}

// Every row in one continuous batch, admitted at once.
int64_t RunContinuous(const TaskList& tasks, const std::vector<std::vector<int32_t>>& sources,
                      int steps, ContinuousBatch& batch) {
  std::vector<ContinuousBatch::Sentence> sentences;
  for (size_t r = 0; r < sources.size(); ++r) {
    sentences.push_back({tasks[r % tasks.size()], sources[r], ForcedLength(steps), r});
  }
  if (!batch.Admit(std::move(sentences)).ok()) std::abort();
  int64_t tokens = 0;
  while (!batch.empty()) {
    absl::Status s = batch.Step([](uint64_t, int32_t) {},
                                [&](uint64_t, Hypothesis h) { tokens += h.tokens.size(); });
    if (!s.ok()) std::abort();
  }
  return tokens;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Every task of `repository`, loaded into one weight store; exits on an error.
TaskList LoadRepository(const std::string& repository, Precision precision) {
  absl::StatusOr<std::vector<std::string>> ids = ListTaskDirectories(repository);
  if (!ids.ok()) {
    std::fprintf(stderr, "continuous_batch_bench: %s (run tools/serve-demo.sh once)\n",
                 ids.status().ToString().c_str());
    std::exit(2);
  }
  auto store = std::make_shared<WeightStore>();
  TaskList all;
  for (const std::string& id : *ids) {
    auto task =
        TaskModel::Load(repository + "/" + id, id, {.precision = precision, .weight_store = store});
    if (!task.ok()) {
      std::fprintf(stderr, "continuous_batch_bench: %s\n", task.status().ToString().c_str());
      std::exit(2);
    }
    all.push_back(*std::move(task));
  }
  return all;
}

int Main() {
  const std::vector<std::string> repositories =
      absl::StrSplit(absl::GetFlag(FLAGS_repository), ',', absl::SkipEmpty());
  const int rows = absl::GetFlag(FLAGS_rows), steps = absl::GetFlag(FLAGS_steps);
  absl::StatusOr<Precision> precision = ParsePrecision(absl::GetFlag(FLAGS_precision));
  if (!precision.ok()) {
    std::fprintf(stderr, "continuous_batch_bench: %s\n", precision.status().ToString().c_str());
    return 2;
  }
  if (repositories.empty()) {
    std::fprintf(stderr, "continuous_batch_bench: --repository: no repository given\n");
    return 2;
  }
  if (absl::GetFlag(FLAGS_threads) > 0) {
    if (absl::Status s = SetComputeThreads(absl::GetFlag(FLAGS_threads)); !s.ok()) {
      std::fprintf(stderr, "continuous_batch_bench: --threads: %s\n", s.ToString().c_str());
      return 2;
    }
  }
  std::vector<int> only;
  for (absl::string_view number :
       absl::StrSplit(absl::GetFlag(FLAGS_only), ',', absl::SkipEmpty())) {
    int index = 0;
    if (!absl::SimpleAtoi(number, &index) || index < 1 || index > 4) {
      std::fprintf(stderr, "continuous_batch_bench: --only: expected numbers 1-4, got '%s'\n",
                   absl::GetFlag(FLAGS_only).c_str());
      return 2;
    }
    only.push_back(index);
  }
  if (only.empty()) only = {1, 2, 3, 4};
  // Ascending and once each: scenarios then keep their order, and four numbers mean all four.
  std::sort(only.begin(), only.end());
  only.erase(std::unique(only.begin(), only.end()), only.end());

  struct Repository {
    std::string name;
    TaskList all, one;
  };
  std::vector<Repository> loaded;
  for (const std::string& repository : repositories) {
    TaskList all = LoadRepository(repository, *precision);
    TaskList one = {all.front()};
    loaded.push_back({repository, std::move(all), std::move(one)});
  }
  std::printf("CPU: %s (%s), %s; %s, %d rows x %d steps, %zu tasks in %s\n", CpuModelName().c_str(),
              CpuIsaName(), DescribeComputeThreadBudget().c_str(), PrecisionName(*precision), rows,
              steps, loaded.front().all.size(), absl::StrJoin(repositories, ", ").c_str());

  struct Scenario {
    std::string name;
    const TaskList* tasks;
    bool continuous;
    std::vector<double> tokens_per_second;
  };
  std::vector<Scenario> scenarios;
  for (const Repository& r : loaded) {
    const std::string in = loaded.size() > 1 ? absl::StrCat(", ", r.name) : "";
    const std::string kinds[4] = {"1 task, per-task batch", "1 task, continuous batch",
                                  absl::StrFormat("%zu tasks, per-task batches", r.all.size()),
                                  absl::StrFormat("%zu tasks, continuous batch", r.all.size())};
    for (int index : only) {
      scenarios.push_back(
          {absl::StrCat(kinds[index - 1], in), index <= 2 ? &r.one : &r.all, index % 2 == 0, {}});
    }
  }
  DecodeWorkspace workspace;
  ContinuousBatch batch;
  for (int round = 0; round <= absl::GetFlag(FLAGS_rounds); ++round) {  // round 0 warms up
    for (Scenario& s : scenarios) {
      const auto sources = Sources(*s.tasks, rows);
      const absl::Time start = absl::Now();
      const int64_t tokens = s.continuous ? RunContinuous(*s.tasks, sources, steps, batch)
                                          : RunPerTask(*s.tasks, sources, steps, workspace);
      const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
      if (round > 0) s.tokens_per_second.push_back(static_cast<double>(tokens) / seconds);
    }
  }
  std::printf("\n| scenario | tokens/s | vs the first row |\n|---|---:|---:|\n");
  const double base = Median(scenarios[0].tokens_per_second);
  for (const Scenario& s : scenarios) {
    const double median = Median(s.tokens_per_second);
    std::printf("| %s | %.0f | %.2fx |\n", s.name.c_str(), median, median / base);
  }
  if (only.size() == 4) {
    for (size_t r = 0; r < loaded.size(); ++r) {
      const Scenario* four = &scenarios[4 * r];
      std::printf("\n%s: mixed / single task: per-task batches %.2fx, continuous %.2fx\n",
                  loaded[r].name.c_str(),
                  Median(four[2].tokens_per_second) / Median(four[0].tokens_per_second),
                  Median(four[3].tokens_per_second) / Median(four[1].tokens_per_second));
    }
  }
  return 0;
}

}  // namespace
}  // namespace taskmoe::models

int main(int argc, char** argv) {
  taskmoe::util::ParseCommandLine(argc, argv,
                                  "Continuous against per-task batching, engine only.\n"
                                  "Usage: continuous_batch_bench [--repository=DIR] [--rows=N]",
                                  "bench/continuous_batch_bench.cc");
  return taskmoe::models::Main();
}
