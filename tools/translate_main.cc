// taskmoe-translate: translates stdin lines to stdout with one model directory, offline.
//
//   taskmoe-translate --model DIR --task en-de [--beam_size 4] [--batch_size 32] < in > out
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "models/compute.h"
#include "models/translator.h"
#include "util/command_line.h"

ABSL_FLAG(std::string, model, "", "model directory (config.json, model.safetensors, spm.model)");
ABSL_FLAG(std::string, task, "", "task id, e.g. en-de");
ABSL_FLAG(int, beam_size, 1, "1 for greedy search, more for beam search");
ABSL_FLAG(int, max_output_tokens, 256, "most decoding steps per sentence, EOS included");
ABSL_FLAG(double, max_output_ratio, 1.5,
          "also stop a sentence of S source tokens after ratio * S + offset steps (as the "
          "trainer does); 0 turns this off");
ABSL_FLAG(int, max_output_offset, 10, "see --max_output_ratio");
ABSL_FLAG(double, length_penalty, 0.0, "beam search length penalty alpha");
ABSL_FLAG(int, batch_size, 32, "sentences decoded together");
ABSL_FLAG(std::string, precision, "f32", "f32, bf16 or int8");
ABSL_FLAG(int, threads, 0, "compute threads (0: OMP_NUM_THREADS or all cores)");
ABSL_FLAG(bool, scores, false, "prefix each line with its score and a tab");
ABSL_FLAG(bool, split_sentences, true,
          "translate each sentence of a line on its own and join the translations");
ABSL_FLAG(std::string, unknown_pieces, "copy",
          "what replaces a piece the vocabulary lacks: copy (the source's characters) or drop");

int main(int argc, char** argv) {
  taskmoe::util::ParseCommandLine(
      argc, argv,
      "Translates standard input, line by line, to standard output.\n"
      "  taskmoe-translate --model DIR --task en-de < input.txt > output.txt",
      "tools/translate_main.cc");
  using namespace taskmoe;
  const std::string model_dir = absl::GetFlag(FLAGS_model);
  const std::string task = absl::GetFlag(FLAGS_task);
  if (model_dir.empty() || task.empty()) {
    std::cerr << "taskmoe-translate: --model and --task are required (see --help)\n";
    return 2;
  }
  if (absl::GetFlag(FLAGS_threads) > 0) {
    if (absl::Status s = models::SetComputeThreads(absl::GetFlag(FLAGS_threads)); !s.ok()) {
      std::cerr << "taskmoe-translate: " << s.message() << "\n";
      return 2;
    }
  }
  absl::StatusOr<models::Precision> precision =
      models::ParsePrecision(absl::GetFlag(FLAGS_precision));
  if (!precision.ok()) {
    std::cerr << "taskmoe-translate: --precision: " << precision.status().message() << "\n";
    return 2;
  }
  models::TranslateOptions options;
  if (const std::string unknowns = absl::GetFlag(FLAGS_unknown_pieces); unknowns == "drop") {
    options.text.unknown_pieces = models::UnknownPieces::kDrop;
  } else if (unknowns != "copy") {
    std::cerr << "taskmoe-translate: --unknown_pieces: '" << unknowns
              << "' is neither copy nor drop\n";
    return 2;
  }
  options.text.split_sentences = absl::GetFlag(FLAGS_split_sentences);
  absl::StatusOr<std::shared_ptr<const models::TaskModel>> task_model =
      models::TaskModel::Load(model_dir, task, {.precision = *precision});
  if (!task_model.ok()) {
    std::cerr << "taskmoe-translate: cannot load " << model_dir << ": "
              << task_model.status().message() << "\n";
    return 1;
  }
  const models::Translator translator(*std::move(task_model));
  std::vector<std::string> lines;
  for (std::string line; std::getline(std::cin, line);) lines.push_back(line);

  options.decode.beam_size = absl::GetFlag(FLAGS_beam_size);
  options.decode.max_output_tokens = absl::GetFlag(FLAGS_max_output_tokens);
  options.decode.max_output_ratio = static_cast<float>(absl::GetFlag(FLAGS_max_output_ratio));
  options.decode.max_output_offset = absl::GetFlag(FLAGS_max_output_offset);
  options.decode.length_penalty = static_cast<float>(absl::GetFlag(FLAGS_length_penalty));
  options.max_batch_size = absl::GetFlag(FLAGS_batch_size);
  const bool scores = absl::GetFlag(FLAGS_scores);
  options.decode.exact_scores = scores;
  absl::StatusOr<std::vector<models::Translation>> results = translator.Translate(lines, options);
  if (!results.ok()) {
    std::cerr << "taskmoe-translate: " << results.status().message() << "\n";
    return 1;
  }
  for (size_t i = 0; i < results->size(); ++i) {
    const models::Translation& t = (*results)[i];
    if (t.finish_reason == models::FinishReason::kLength) {
      std::cerr << "taskmoe-translate: line " << i + 1
                << ": the length cap stopped its translation, which may be cut short\n";
    }
    if (scores) std::cout << t.score << "\t";
    std::cout << t.text << "\n";
  }
  return std::cout.good() ? 0 : 1;
}
