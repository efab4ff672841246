// Decoding a batch of source sentences with a TransformerModel: greedy search and beam
// search, with an EOS stop, a length limit and a length penalty. Finished sentences leave the
// batch (their cache rows are dropped) so the remaining ones decode at the batch size they
// really have; cancelled sentences (deadline, client gone) leave at the next step.
#ifndef TASKMOE_MODELS_DECODING_H_
#define TASKMOE_MODELS_DECODING_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "models/transformer.h"

namespace taskmoe::models {

// The settings of a decode, as values: what a request asks for after defaults and limits.
// Sentences share a batch only when these are equal (Decode takes one set per batch).
struct DecodeSettings {
  // 1: greedy. More: beam search keeping that many hypotheses per sentence.
  int beam_size = 1;
  // Most decoding steps per sentence, EOS included (further capped by max_positions).
  int max_output_tokens = 256;
  // Beam search ranks finished hypotheses by sum(log p) / length^length_penalty, where
  // length counts generated tokens including EOS. 0 ranks by the plain sum.
  float length_penalty = 0.0f;
  // Per-sentence length limit on top of max_output_tokens: a sentence of S source tokens
  // (target tag and EOS included) gets at most floor(max_output_ratio * S +
  // max_output_offset) steps, EOS included; 0 turns it off. The trainer decodes with 1.5 and
  // 10, so degenerate repetitions stop where the trainer's do.
  float max_output_ratio = 0.0f;
  int max_output_offset = 0;
  // Benchmarks only: never stop at EOS, decode exactly max_output_tokens steps (greedy).
  bool ignore_eos = false;
  // Greedy: whether to compute Hypothesis::score, the sum of log-probabilities. Without it
  // the head computes no log-sum-exp (an exponential per vocabulary entry and row), and an
  // f32 output projection with a candidate filter (kernels/greedy_candidates.h) chooses each
  // token from an int8 product, recomputing only the columns that could win: the same
  // tokens, and the score stays 0. Beam search always scores.
  bool exact_scores = false;

  friend bool operator==(const DecodeSettings&, const DecodeSettings&) = default;
};

// The settings and the caller's hooks into a running decode. The hooks are called one at a
// time, but not always on the thread that called Decode: the decode's control flow goes on on
// whichever kernel thread is running (kernels::RunCarried), so a hook holds no lock or
// thread-local state from one call to the next.
struct DecodeOptions : DecodeSettings {
  DecodeOptions() = default;
  explicit DecodeOptions(const DecodeSettings& settings) : DecodeSettings(settings) {}

  // Asked before every step for each sentence still decoding (by its index in the batch):
  // true makes it leave with a Cancelled status.
  std::function<bool(int sentence)> is_cancelled;
  // Greedy only: told each token as soon as it is chosen (EOS included).
  std::function<void(int sentence, int32_t token)> on_token;
  // Called once before every decoding step with the step's index (0-based) and the rows it
  // decodes (sentences still decoding; for beam search, their live hypotheses). The server
  // counts rows per step with it, and paces decoding in its tests, so that deadlines and
  // cancellation meet a decode that is still running however fast the machine is.
  std::function<void(int64_t step, int rows)> on_step;
};

struct Hypothesis {
  std::vector<int32_t> tokens;  // generated pieces, without BOS and EOS
  // Sum of log-probabilities (length-penalised for beam search); greedy's is 0 unless
  // DecodeSettings::exact_scores.
  float score = 0.0f;
  bool reached_eos = false;  // false: stopped by the length limit (or cancelled)
  absl::Status status;       // Cancelled when is_cancelled said so
};

// Every buffer a decode needs (encoder and decoder activations, key/value caches, beam
// bookkeeping), kept by a caller that decodes batch after batch (a server worker thread) and
// passed to each Decode: buffers grow to the largest batch seen and are then reused, so that
// decoding neither allocates per token nor leaves the allocator a trail of freed blocks of
// ever-changing sizes. One workspace serves one Decode at a time, for any model.
class DecodeWorkspace {
 public:
  DecodeWorkspace();
  ~DecodeWorkspace();
  DecodeWorkspace(DecodeWorkspace&&) noexcept;
  DecodeWorkspace& operator=(DecodeWorkspace&&) noexcept;

  struct Buffers;  // defined in decoding.cc
  Buffers& buffers() { return *buffers_; }

 private:
  std::unique_ptr<Buffers> buffers_;
};

// Decodes sources (each [tag] + pieces + [eos]) for the task whose route is given. Returns one
// hypothesis per source, in order. Without a workspace, a temporary one is used.
absl::StatusOr<std::vector<Hypothesis>> Decode(const TransformerModel& model,
                                               const TaskRoute& route,
                                               const std::vector<std::vector<int32_t>>& sources,
                                               const DecodeOptions& options,
                                               DecodeWorkspace* workspace = nullptr);

}  // namespace taskmoe::models

#endif  // TASKMOE_MODELS_DECODING_H_
