// Task mix, text sources and the request stream built from them.
#include "loadtest/workload.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace taskmoe::loadtest {
namespace {

// Enough distinct synthetic sentences per task that batches rarely repeat a text, few enough
// to build instantly.
constexpr int kSyntheticPoolSize = 512;

// Neutral, frequent words: synthetic texts tokenise into ordinary pieces rather than into
// the character-level fallback that random strings would produce.
constexpr const char* kWords[] = {
    "the",      "house",   "is",      "near",      "a",       "river",   "we",     "will",
    "meet",     "our",     "friends", "after",     "work",    "today",   "this",   "city",
    "has",      "many",    "old",     "streets",   "and",     "small",   "shops",  "people",
    "often",    "walk",    "to",      "central",   "market",  "on",      "sunday", "morning",
    "it",       "was",     "raining", "when",      "train",   "arrived", "at",     "station",
    "she",      "reads",   "books",   "about",     "history", "science", "every",  "evening",
    "they",     "built",   "new",     "bridge",    "over",    "valley",  "last",   "year",
    "children", "play",    "in",      "park",      "while",   "parents", "talk",   "quietly",
    "weather",  "changes", "quickly", "mountains", "spring",  "summer",  "brings", "long",
    "days",     "light",   "sky",     "water",     "garden",  "needs",   "more",   "sun"};

uint64_t Mix64(uint64_t x) {
  // splitmix64 finaliser: a well-spread hash of (seed, index) without keeping RNG state.
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

}  // namespace

absl::StatusOr<TaskMix> TaskMix::FromTasks(std::vector<WeightedTask> tasks) {
  if (tasks.empty()) return absl::InvalidArgumentError("--tasks: no task given");
  std::set<std::string> seen;
  TaskMix mix;
  for (WeightedTask& t : tasks) {
    if (t.task.empty()) return absl::InvalidArgumentError("--tasks: empty task name");
    if (!seen.insert(t.task).second) {
      return absl::InvalidArgumentError(absl::StrCat("--tasks: task ", t.task, " given twice"));
    }
    if (!(t.weight > 0) || !std::isfinite(t.weight)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--tasks: weight of ", t.task, " must be a positive number"));
    }
    mix.total_ += t.weight;
    mix.cumulative_.push_back(mix.total_);
  }
  mix.tasks_ = std::move(tasks);
  return mix;
}

absl::StatusOr<TaskMix> TaskMix::Parse(absl::string_view text) {
  std::vector<WeightedTask> tasks;
  for (absl::string_view item : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    item = absl::StripAsciiWhitespace(item);
    WeightedTask t;
    const size_t colon = item.find(':');
    t.task = std::string(item.substr(0, colon));
    if (colon != absl::string_view::npos && !absl::SimpleAtod(item.substr(colon + 1), &t.weight)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--tasks: '", item, "' is not TASK or TASK:WEIGHT"));
    }
    tasks.push_back(std::move(t));
  }
  return FromTasks(std::move(tasks));
}

absl::StatusOr<TaskMix> TaskMix::Uniform(const std::vector<std::string>& tasks) {
  std::vector<WeightedTask> weighted;
  for (const std::string& t : tasks) weighted.push_back({t, 1.0});
  return FromTasks(std::move(weighted));
}

const std::string& TaskMix::Pick(double u) const {
  const double target = u * total_;
  const auto it = std::upper_bound(cumulative_.begin(), cumulative_.end(), target);
  // u < 1 keeps `it` in range; the clamp guards against rounding at the top.
  const size_t i = std::min<size_t>(it - cumulative_.begin(), tasks_.size() - 1);
  return tasks_[i].task;
}

std::string SyntheticText(int words, uint64_t seed, int64_t index) {
  std::string text;
  uint64_t state = Mix64(seed ^ Mix64(static_cast<uint64_t>(index)));
  for (int w = 0; w < words; ++w) {
    state = Mix64(state);
    if (w > 0) text += ' ';
    text += kWords[state % std::size(kWords)];
  }
  if (!text.empty()) text[0] = static_cast<char>(text[0] - 'a' + 'A');
  text += '.';
  return text;
}

std::string SourceLanguage(absl::string_view task) {
  const size_t dash = task.find('-');
  return dash == absl::string_view::npos ? "" : std::string(task.substr(0, dash));
}

absl::StatusOr<std::vector<std::string>> ReadTexts(absl::string_view path_pattern,
                                                   absl::string_view task) {
  const std::string path =
      absl::StrReplaceAll(path_pattern, {{"{task}", task}, {"{src}", SourceLanguage(task)}});
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("--texts: cannot read ", path, " (for task ", task, ")"));
  }
  std::vector<std::string> texts;
  for (std::string line; std::getline(in, line);) {
    absl::string_view stripped = absl::StripAsciiWhitespace(line);
    if (!stripped.empty()) texts.emplace_back(stripped);
  }
  if (in.bad()) return absl::DataLossError(absl::StrCat("--texts: error reading ", path));
  if (texts.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("--texts: ", path, " holds no text"));
  }
  return texts;
}

Workload::Workload(TaskMix mix, std::map<std::string, std::vector<std::string>> texts_by_task,
                   int texts_per_request, uint64_t seed)
    : mix_(std::move(mix)),
      texts_by_task_(std::move(texts_by_task)),
      texts_per_request_(texts_per_request),
      rng_(seed) {}

absl::StatusOr<Workload> Workload::Create(TaskMix mix, const std::string& texts_file,
                                          int synthetic_words, int texts_per_request,
                                          uint64_t seed) {
  std::map<std::string, std::vector<std::string>> texts;
  for (size_t i = 0; i < mix.tasks().size(); ++i) {
    const std::string& task = mix.tasks()[i].task;
    if (texts_file.empty()) {
      std::vector<std::string>& list = texts[task];
      for (int k = 0; k < kSyntheticPoolSize; ++k) {
        list.push_back(SyntheticText(synthetic_words, seed + i, k));
      }
      continue;
    }
    absl::StatusOr<std::vector<std::string>> list = ReadTexts(texts_file, task);
    if (!list.ok()) return list.status();
    texts[task] = *std::move(list);
  }
  return Workload(std::move(mix), std::move(texts), texts_per_request, seed);
}

RequestSpec Workload::Next() {
  RequestSpec spec;
  const double u = static_cast<double>(rng_() >> 11) * 0x1.0p-53;  // uniform in [0, 1)
  spec.task = mix_.Pick(u);
  const std::vector<std::string>& list = texts_by_task_.at(spec.task);
  size_t& next = next_text_[spec.task];
  for (int i = 0; i < texts_per_request_; ++i) {
    spec.texts.push_back(list[next]);
    next = (next + 1) % list.size();
  }
  return spec;
}

}  // namespace taskmoe::loadtest
