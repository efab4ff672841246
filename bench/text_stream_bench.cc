// Streaming detokenisation benchmark: the text deltas of one sentence of N generated tokens,
// sent token by token, with models::TextStream (a short window detokenised per token) and the
// way TranslateStream did it before (the whole prefix detokenised and checked per token), on
// the demo model's vocabulary. Time per sentence; the old way grows with N squared.
//
//   build/release/bench/text_stream_bench [--benchmark_filter=...]
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "models/format/config.h"
#include "models/text/tokenizer.h"
#include "models/text/utf8.h"
#include "models/text_pipeline.h"

namespace taskmoe::models {
namespace {

struct Fixture {
  std::shared_ptr<const Tokenizer> tokenizer;
  std::vector<int32_t> words;  // pieces of a German paragraph, repeated as needed
  std::vector<SourceSentence> sentence = {SourceSentence{}};
};

const Fixture& GetFixture() {
  static const Fixture* const fixture = [] {
    auto* f = new Fixture;
    const std::string dir = TASKMOE_DEMO_MODEL_DIR;
    auto config = LoadModelConfig(dir);
    if (!config.ok()) std::abort();
    auto tokenizer = Tokenizer::Load(dir + "/spm.model", *config);
    if (!tokenizer.ok()) std::abort();
    f->tokenizer = *tokenizer;
    f->words = *f->tokenizer->EncodePieces(
        "Die Datei konnte nicht gespeichert werden, weil der Datenträger voll ist. Bitte "
        "wählen Sie einen anderen Ort oder löschen Sie nicht mehr benötigte Dateien.");
    return f;
  }();
  return *fixture;
}

std::vector<int32_t> Tokens(const Fixture& f, int64_t n) {
  std::vector<int32_t> tokens;
  while (static_cast<int64_t>(tokens.size()) < n)
    tokens.push_back(f.words[tokens.size() % f.words.size()]);
  return tokens;
}

void BM_TextStream(benchmark::State& state) {
  const Fixture& f = GetFixture();
  const std::vector<int32_t> tokens = Tokens(f, state.range(0));
  for (auto _ : state) {
    TextStream stream(*f.tokenizer, f.sentence, UnknownPieces::kCopySource);
    size_t bytes = 0;
    for (int32_t token : tokens) bytes += stream.AddToken(token).size();
    benchmark::DoNotOptimize(bytes);
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}

// Before TextStream: per token, the sentence's whole prefix detokenised, checked to extend
// what was sent and to be valid UTF-8, and the difference sent.
void BM_WholePrefixPerToken(benchmark::State& state) {
  const Fixture& f = GetFixture();
  const std::vector<int32_t> tokens = Tokens(f, state.range(0));
  for (auto _ : state) {
    std::vector<int32_t> ids;
    std::string sent;
    size_t bytes = 0;
    for (int32_t token : tokens) {
      ids.push_back(token);
      std::string text =
          *SentenceText(*f.tokenizer, ids, f.sentence[0], UnknownPieces::kCopySource);
      size_t unused = 0;
      if (text.starts_with(sent) && CountUtf8Chars(text, &unused) >= 0) {
        bytes += text.size() - sent.size();
        sent = std::move(text);
      }
    }
    benchmark::DoNotOptimize(bytes);
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}

BENCHMARK(BM_TextStream)->Arg(32)->Arg(128)->Arg(512);
BENCHMARK(BM_WholePrefixPerToken)->Arg(32)->Arg(128)->Arg(512);

}  // namespace
}  // namespace taskmoe::models

BENCHMARK_MAIN();
