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
// Scenario 5 is the server's regime without the server: every task mixed, real sentences
// (--texts, e.g. the corpus test sets) decoded greedily to EOS with the server's length limits,
// R in flight, and each one that finishes replaced by the next at the following step boundary,
// as closed-loop clients keep a server's continuous batch full. Its tokens/s, set beside the
// server's under the same load (tools/batching-bench.sh), is what the server costs on top of
// the engine; it also prints how the time splits between admitting and stepping.
//
// Scenario 6 is scenario 5 with every newcomer to a running batch taking its first step apart
// (ContinuousBatch::AdmitWithFirstStep, the server's --prefill_first at step boundaries): the
// engine's price, in tokens/s, for a first token that need not wait for a whole step.
//
// --encoder_only times the encoder alone instead: R of scenario 5's sentences of the first task,
// in their file order (lengths as they come, as a queue delivers them), encoded as one batch.
//
//   build/release/bench/continuous_batch_bench [--repository=build/demo-repository[,DIR...]]
//       [--rows=32] [--steps=32] [--rounds=5] [--precision=f32] [--threads=0] [--only=2,4,5,6]
//       [--texts='build/corpus/test.{task}.{src}'] [--rolling_sentences=512] [--encoder_only]
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
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
          "Run only the scenarios with these numbers (1-6, comma-separated; for profiling one; "
          "6 runs only when named)");
ABSL_FLAG(std::string, texts, "build/corpus/test.{task}.{src}",
          "Scenario 5's sentences: a file per task, one text per line, {task} and {src} "
          "replaced by the task's id and source language (a fixed set of sentences when a "
          "task's file is missing)");
ABSL_FLAG(int, rolling_sentences, 512, "Sentences scenario 5 decodes per round");
ABSL_FLAG(bool, encoder_only, false,
          "Time only the encoder: --rows of the first task's sentences in one batch");

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

// The sentences of `task`'s first `count` texts: its --texts file, else fixed texts of several
// lengths. Exits when none can be prepared.
std::vector<std::vector<int32_t>> TaskSentences(const TaskModel& task, int count) {
  static constexpr const char* kFallback[] = {
      "Save the file.",
      "The file could not be saved because the disk is full; choose another place.",
      "Select the cells that you want to format, then choose Format - Cells.",
      "If the document contains tracked changes, they are shown in the margin, and you can "
      "accept or reject each of them from the Edit menu.",
  };
  const std::string& id = task.id();
  const std::string path = absl::StrReplaceAll(
      absl::GetFlag(FLAGS_texts), {{"{task}", id}, {"{src}", id.substr(0, id.find('-'))}});
  std::vector<std::string> texts;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line) && static_cast<int>(texts.size()) < count;) {
    if (!line.empty()) texts.push_back(line);
  }
  if (texts.empty()) texts.assign(std::begin(kFallback), std::end(kFallback));
  std::vector<std::vector<int32_t>> sentences;
  for (const std::string& text : texts) {
    auto prepared = task.PrepareText(text, {});
    if (!prepared.ok()) continue;
    for (const SourceSentence& sentence : *prepared) sentences.push_back(sentence.ids);
  }
  if (sentences.empty()) {
    std::fprintf(stderr, "continuous_batch_bench: no sentence of %s could be prepared\n",
                 path.c_str());
    std::exit(2);
  }
  return sentences;
}

// Scenario 5's sentences of every task, interleaved task by task (sentence i is of task
// i % tasks), each task's in file order.
struct RollingSentence {
  size_t task;
  std::vector<int32_t> source;
};
std::vector<RollingSentence> RollingSentences(const TaskList& tasks, int count) {
  const int per_task =
      (count + static_cast<int>(tasks.size()) - 1) / static_cast<int>(tasks.size());
  std::vector<std::vector<std::vector<int32_t>>> own(tasks.size());
  for (size_t t = 0; t < tasks.size(); ++t) own[t] = TaskSentences(*tasks[t], per_task);
  std::vector<RollingSentence> all;
  for (int i = 0; i < count; ++i) {
    const size_t t = i % tasks.size();
    all.push_back({t, own[t][(i / tasks.size()) % own[t].size()]});
  }
  return all;
}

// Time spent admitting and stepping in scenario 5, summed over its rounds.
struct RollingTimes {
  absl::Duration admitting, stepping;
  int64_t steps = 0, rows = 0, admissions = 0;
};

// `rows` sentences in flight, each finished one replaced at the next step boundary, until
// every sentence is decoded (greedy, EOS and the server's length limits). With
// `first_step_apart`, newcomers to a running batch take their first step by themselves before
// they join it. Returns tokens.
int64_t RunRolling(const TaskList& tasks, const std::vector<RollingSentence>& sentences, int rows,
                   bool first_step_apart, ContinuousBatch& batch, RollingTimes& times) {
  DecodeSettings settings;
  settings.max_output_ratio = 1.5f;  // the server's default limits (server/options.h)
  settings.max_output_offset = 10;
  size_t next = 0;
  int64_t tokens = 0;
  std::vector<ContinuousBatch::Sentence> joining;
  while (next < sentences.size() || !batch.empty()) {
    joining.clear();
    while (next < sentences.size() &&
           batch.sentences() + static_cast<int64_t>(joining.size()) < rows) {
      const RollingSentence& s = sentences[next];
      joining.push_back({tasks[s.task], s.source, settings, next});
      ++next;
    }
    if (!joining.empty()) {
      const absl::Time start = absl::Now();
      const absl::Status admitted =
          first_step_apart && !batch.empty()
              ? batch.AdmitWithFirstStep(
                    std::move(joining), [](uint64_t, int32_t) {},
                    [&](uint64_t, Hypothesis h) { tokens += h.tokens.size(); })
              : batch.Admit(std::move(joining));
      if (!admitted.ok()) std::abort();
      times.admitting += absl::Now() - start;
      ++times.admissions;
    }
    const absl::Time start = absl::Now();
    times.rows += batch.rows();
    absl::Status s = batch.Step([](uint64_t, int32_t) {},
                                [&](uint64_t, Hypothesis h) { tokens += h.tokens.size(); });
    if (!s.ok()) std::abort();
    times.stepping += absl::Now() - start;
    ++times.steps;
  }
  return tokens;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// --encoder_only: the first task's first `rows` sentences (file order) encoded as one batch,
// round after round; prints the median time per batch and source tokens per second.
void TimeEncoder(const std::string& name, const TaskList& tasks, int rows, int rounds) {
  const TaskModel& task = *tasks.front();
  std::vector<std::vector<int32_t>> batch = TaskSentences(task, rows);
  batch.resize(std::min<size_t>(batch.size(), rows));  // a text may be several sentences
  int64_t tokens = 0, longest = 0;
  for (const std::vector<int32_t>& source : batch) {
    tokens += static_cast<int64_t>(source.size());
    longest = std::max<int64_t>(longest, static_cast<int64_t>(source.size()));
  }
  EncoderOutput out;
  std::vector<double> milliseconds;
  for (int round = 0; round <= rounds; ++round) {  // round 0 warms up
    const absl::Time start = absl::Now();
    int batches = 0;
    do {
      if (!task.transformer().Encode(batch, task.route(), out).ok()) std::abort();
      ++batches;
    } while (absl::Now() - start < absl::Milliseconds(500));
    if (round > 0) {
      milliseconds.push_back(absl::ToDoubleMilliseconds(absl::Now() - start) / batches);
    }
  }
  const double ms = Median(milliseconds);
  std::printf(
      "%s, %s: encoder, %zu sentences (%lld tokens, the longest %lld): %.2f ms a batch, "
      "%.0f source tokens/s\n",
      name.c_str(), task.id().c_str(), batch.size(), static_cast<long long>(tokens),
      static_cast<long long>(longest), ms, static_cast<double>(tokens) / ms * 1000.0);
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
  for (const auto& [name, value] :
       {std::pair{"rows", rows},
        {"steps", steps},
        {"rounds", absl::GetFlag(FLAGS_rounds)},
        {"rolling_sentences", absl::GetFlag(FLAGS_rolling_sentences)}}) {
    if (value < 1) {
      std::fprintf(stderr, "continuous_batch_bench: --%s: expected at least 1, got %d\n", name,
                   value);
      return 2;
    }
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
    if (!absl::SimpleAtoi(number, &index) || index < 1 || index > 6) {
      std::fprintf(stderr, "continuous_batch_bench: --only: expected numbers 1-6, got '%s'\n",
                   absl::GetFlag(FLAGS_only).c_str());
      return 2;
    }
    only.push_back(index);
  }
  if (only.empty()) only = {1, 2, 3, 4, 5};
  // Ascending and once each: scenarios then keep their order, and 1-4 named mean all four.
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
  if (absl::GetFlag(FLAGS_encoder_only)) {
    for (const Repository& r : loaded) {
      TimeEncoder(r.name, r.all, rows, absl::GetFlag(FLAGS_rounds));
    }
    return 0;
  }

  enum class Kind { kPerTask, kContinuous, kRolling, kRollingApart };
  struct Scenario {
    std::string name;
    const TaskList* tasks;
    Kind kind;
    std::vector<double> tokens_per_second;
    std::vector<RollingSentence> rolling;  // scenario 5's sentences
    RollingTimes times;
  };
  std::vector<Scenario> scenarios;
  for (const Repository& r : loaded) {
    const std::string in = loaded.size() > 1 ? absl::StrCat(", ", r.name) : "";
    const std::string names[6] = {
        "1 task, per-task batch",
        "1 task, continuous batch",
        absl::StrFormat("%zu tasks, per-task batches", r.all.size()),
        absl::StrFormat("%zu tasks, continuous batch", r.all.size()),
        absl::StrFormat("%zu tasks, rolling admission, real sentences", r.all.size()),
        absl::StrFormat("%zu tasks, rolling admission, first step apart", r.all.size())};
    for (int index : only) {
      Scenario s{absl::StrCat(names[index - 1], in), index <= 2 ? &r.one : &r.all,
                 index == 6       ? Kind::kRollingApart
                 : index == 5     ? Kind::kRolling
                 : index % 2 == 0 ? Kind::kContinuous
                                  : Kind::kPerTask};
      if (index >= 5) {
        s.rolling = RollingSentences(r.all, absl::GetFlag(FLAGS_rolling_sentences));
      }
      scenarios.push_back(std::move(s));
    }
  }
  DecodeWorkspace workspace;
  ContinuousBatch batch;
  for (int round = 0; round <= absl::GetFlag(FLAGS_rounds); ++round) {  // round 0 warms up
    for (Scenario& s : scenarios) {
      const auto sources = Sources(*s.tasks, rows);
      const absl::Time start = absl::Now();
      int64_t tokens = 0;
      switch (s.kind) {
        case Kind::kPerTask:
          tokens = RunPerTask(*s.tasks, sources, steps, workspace);
          break;
        case Kind::kContinuous:
          tokens = RunContinuous(*s.tasks, sources, steps, batch);
          break;
        case Kind::kRolling:
        case Kind::kRollingApart:
          tokens =
              RunRolling(*s.tasks, s.rolling, rows, s.kind == Kind::kRollingApart, batch, s.times);
          break;
      }
      const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
      if (round == 0) {
        s.times = {};  // the warm-up round counts for nothing
      } else {
        s.tokens_per_second.push_back(static_cast<double>(tokens) / seconds);
      }
    }
  }
  std::printf("\n| scenario | tokens/s | vs the first row |\n|---|---:|---:|\n");
  const double base = Median(scenarios[0].tokens_per_second);
  for (const Scenario& s : scenarios) {
    const double median = Median(s.tokens_per_second);
    std::printf("| %s | %.0f | %.2fx |\n", s.name.c_str(), median, median / base);
  }
  for (const Scenario& s : scenarios) {
    if ((s.kind != Kind::kRolling && s.kind != Kind::kRollingApart) || s.times.steps == 0) {
      continue;
    }
    const double admitting = absl::ToDoubleMilliseconds(s.times.admitting);
    const double stepping = absl::ToDoubleMilliseconds(s.times.stepping);
    std::printf(
        "\n%s: %.1f rows per step; per step %.2f ms stepping + %.2f ms admitting (%.0f%% of the "
        "time; %.2f ms per admission, %.2f admissions per step)\n",
        s.name.c_str(), static_cast<double>(s.times.rows) / s.times.steps, stepping / s.times.steps,
        admitting / s.times.steps, 100.0 * admitting / (admitting + stepping),
        admitting / std::max<int64_t>(1, s.times.admissions),
        static_cast<double>(s.times.admissions) / s.times.steps);
  }
  if (only.size() >= 4 && only[3] == 4) {
    for (size_t r = 0; r < loaded.size(); ++r) {
      const Scenario* four = &scenarios[only.size() * r];
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
