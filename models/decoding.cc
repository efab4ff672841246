// Greedy and beam search over the incremental decoder.
#include "models/decoding.h"

#include <algorithm>
#include <optional>

#include "absl/strings/str_cat.h"
#include "kernels/runtime.h"
#include "kernels/softmax.h"
#include "kernels/topk.h"
#include "models/beam_search.h"

namespace taskmoe::models {
namespace {

using kernels::Tensor;

int64_t StepLimit(const TransformerModel& model, const DecodeOptions& options) {
  return std::min<int64_t>(options.max_output_tokens, model.config().max_positions);
}

}  // namespace

struct DecodeWorkspace::Buffers {
  EncoderOutput encoder;
  DecoderState state;
  Tensor best, log_sum_exp, top_values, top_indices;  // beam search
  GreedyHead greedy;
  std::vector<int64_t> step_limits;
  std::vector<int32_t> sentence_of_row, tokens, keep;
  // Beam search only.
  std::vector<int32_t> active, next_active, next_rows, next_tokens;
  std::vector<float> row_scores, next_scores;
  std::vector<BeamCandidate> candidates, live;
  std::vector<BackPointer> back;                    // [step][row]
  std::vector<std::vector<FinishedBeam>> finished;  // [sentence]
};

DecodeWorkspace::DecodeWorkspace() : buffers_(std::make_unique<Buffers>()) {}
DecodeWorkspace::~DecodeWorkspace() = default;
DecodeWorkspace::DecodeWorkspace(DecodeWorkspace&&) noexcept = default;
DecodeWorkspace& DecodeWorkspace::operator=(DecodeWorkspace&&) noexcept = default;

namespace {

using Buffers = DecodeWorkspace::Buffers;

// Steps each sentence may take: the batch limit, lowered by the per-sentence ratio rule.
// Returns the largest, which is what the key/value caches must hold.
int64_t SentenceStepLimits(const EncoderOutput& encoder, const DecodeOptions& options,
                           int64_t max_steps, std::vector<int64_t>& limits) {
  limits.assign(encoder.lengths.size(), max_steps);
  if (options.max_output_ratio <= 0.0f) return max_steps;
  int64_t largest = 1;
  for (size_t b = 0; b < limits.size(); ++b) {
    const auto relative =
        static_cast<int64_t>(options.max_output_ratio * static_cast<float>(encoder.lengths[b]) +
                             static_cast<float>(options.max_output_offset));
    limits[b] = std::clamp<int64_t>(relative, 1, max_steps);
    largest = std::max(largest, limits[b]);
  }
  return largest;
}

// Keeps rows `keep` (ascending) of the decoder state and of the parallel per-row vectors;
// a no-op when every row stays.
absl::Status KeepRows(const std::vector<int32_t>& keep, DecoderState& state,
                      std::vector<int32_t>& sentence_of_row, std::vector<int32_t>& tokens) {
  if (keep.size() == sentence_of_row.size()) return absl::OkStatus();
  if (absl::Status s = state.SelectRows(keep); !s.ok()) return s;
  for (size_t i = 0; i < keep.size(); ++i) {
    sentence_of_row[i] = sentence_of_row[keep[i]];
    tokens[i] = tokens[keep[i]];
  }
  sentence_of_row.resize(keep.size());
  tokens.resize(keep.size());
  return absl::OkStatus();
}

absl::StatusOr<std::vector<Hypothesis>> GreedyDecode(const TransformerModel& model,
                                                     const TaskRoute& route,
                                                     const DecodeOptions& options, Buffers& w) {
  const EncoderOutput& encoder = w.encoder;
  const int64_t batch = static_cast<int64_t>(encoder.lengths.size());
  const int32_t eos = model.config().special_tokens.eos;
  const int64_t max_steps =
      SentenceStepLimits(encoder, options, StepLimit(model, options), w.step_limits);
  const std::vector<int64_t>& step_limits = w.step_limits;
  std::vector<Hypothesis> results(batch);
  for (int64_t b = 0; b < batch; ++b) results[b].tokens.reserve(step_limits[b]);
  DecoderState& state = w.state;
  if (absl::Status s = model.StartDecoding(encoder, max_steps, route, state); !s.ok()) return s;

  std::vector<int32_t>& sentence_of_row = w.sentence_of_row;  // active rows -> sentence index
  sentence_of_row.resize(batch);
  for (int64_t b = 0; b < batch; ++b) sentence_of_row[b] = static_cast<int32_t>(b);
  std::vector<int32_t>& tokens = w.tokens;
  tokens.assign(batch, model.config().special_tokens.bos);
  std::vector<int32_t>& keep = w.keep;
  w.greedy.log_sum_exp_kind =
      options.exact_scores ? kernels::GreedyLogSumExp::kExact : kernels::GreedyLogSumExp::kNone;
  for (int64_t step = 0; step < max_steps && !sentence_of_row.empty(); ++step) {
    if (options.on_step) options.on_step(step, static_cast<int>(sentence_of_row.size()));
    keep.clear();
    if (options.is_cancelled) {
      for (size_t r = 0; r < sentence_of_row.size(); ++r) {
        if (options.is_cancelled(sentence_of_row[r])) {
          results[sentence_of_row[r]].status = absl::CancelledError("decoding cancelled");
        } else {
          keep.push_back(static_cast<int32_t>(r));
        }
      }
      if (absl::Status s = KeepRows(keep, state, sentence_of_row, tokens); !s.ok()) return s;
      if (sentence_of_row.empty()) break;
      keep.clear();
    }
    if (absl::Status s = model.DecodeStepGreedy(tokens, route, state, w.greedy); !s.ok()) {
      return s;
    }
    for (size_t r = 0; r < sentence_of_row.size(); ++r) {
      const int32_t best = w.greedy.best.data<int32_t>()[r];
      Hypothesis& h = results[sentence_of_row[r]];
      if (options.exact_scores) {
        h.score += w.greedy.best_logit.data<float>()[r] - w.greedy.log_sum_exp.data<float>()[r];
      }
      if (options.on_token) options.on_token(sentence_of_row[r], best);
      if (best == eos && !options.ignore_eos) {
        h.reached_eos = true;
      } else {
        h.tokens.push_back(best);
        if (step + 1 < step_limits[sentence_of_row[r]]) keep.push_back(static_cast<int32_t>(r));
      }
      tokens[r] = best;
    }
    if (absl::Status s = KeepRows(keep, state, sentence_of_row, tokens); !s.ok()) return s;
  }
  return results;
}

absl::StatusOr<std::vector<Hypothesis>> BeamDecode(const TransformerModel& model,
                                                   const TaskRoute& route,
                                                   const DecodeOptions& options, Buffers& w) {
  const EncoderOutput& encoder = w.encoder;
  const int64_t batch = static_cast<int64_t>(encoder.lengths.size());
  const int beam = options.beam_size;
  const int32_t eos = model.config().special_tokens.eos;

  const int64_t max_steps =
      SentenceStepLimits(encoder, options, StepLimit(model, options), w.step_limits);
  const std::vector<int64_t>& step_limits = w.step_limits;
  DecoderState& state = w.state;
  if (absl::Status s = model.StartDecoding(encoder, max_steps, route, state); !s.ok()) return s;
  // Every sentence starts with `beam` copies of its row; only the first is live, so the
  // first step does not pick the same token `beam` times.
  w.next_rows.clear();
  for (int64_t b = 0; b < batch; ++b) {
    w.next_rows.insert(w.next_rows.end(), beam, static_cast<int32_t>(b));
  }
  if (absl::Status s = state.SelectRows(w.next_rows); !s.ok()) return s;

  const int64_t stride = batch * beam;  // rows never exceed the first step's
  w.active.resize(batch);               // sentence of each block of `beam` rows
  for (int64_t b = 0; b < batch; ++b) w.active[b] = static_cast<int32_t>(b);
  w.row_scores.assign(stride, kDeadHypothesisScore);
  for (int64_t b = 0; b < batch; ++b) w.row_scores[b * beam] = 0.0f;
  w.tokens.assign(stride, model.config().special_tokens.bos);
  w.back.resize(max_steps * stride);
  if (static_cast<int64_t>(w.finished.size()) < batch) w.finished.resize(batch);
  for (int64_t b = 0; b < batch; ++b) {
    w.finished[b].clear();
    w.finished[b].reserve(2 * beam);
  }
  std::vector<Hypothesis> results(batch);

  for (int64_t step = 0; step < max_steps && !w.active.empty(); ++step) {
    if (options.on_step) options.on_step(step, static_cast<int>(w.tokens.size()));
    Tensor& logits = state.logits;
    if (absl::Status s = model.DecodeStep(w.tokens, route, state, logits); !s.ok()) return s;
    const int64_t vocab = logits.dim(1);
    // The best 2 * beam continuations of each row are enough: at most `beam` of the chosen
    // ones can end in EOS, so `beam` live ones always remain among them. Chosen on logits, then
    // shifted into log-probabilities.
    const int64_t per_row = std::min<int64_t>(2 * beam, vocab);
    absl::Status ranked = kernels::TopK(logits, per_row, w.top_values, w.top_indices);
    if (ranked.ok()) ranked = kernels::ArgMaxAndLogSumExp(logits, w.best, w.log_sum_exp);
    if (!ranked.ok()) return ranked;
    w.next_active.clear();
    w.next_rows.clear();
    w.next_tokens.clear();
    w.next_scores.clear();
    BackPointer* back = w.back.data() + step * stride;
    for (size_t block = 0; block < w.active.size(); ++block) {
      const int32_t sentence = w.active[block];
      std::vector<FinishedBeam>& finished = w.finished[sentence];
      const BeamStepInput in{.beam = beam,
                             .step = step,
                             .last_step = step + 1 >= step_limits[sentence],
                             .length_penalty = options.length_penalty,
                             .eos = eos,
                             .first_row = static_cast<int64_t>(block) * beam,
                             .scores = w.row_scores.data() + block * beam,
                             .top_logits = w.top_values.data<float>(),
                             .top_tokens = w.top_indices.data<int32_t>(),
                             .log_sum_exp = w.log_sum_exp.data<float>(),
                             .top_width = per_row,
                             .candidates_per_row = per_row};
      if (options.is_cancelled && options.is_cancelled(sentence)) {
        results[sentence].status = absl::CancelledError("decoding cancelled");
        continue;
      }
      if (RankBeamCandidates(in, w.candidates, w.live, finished)) {
        if (!finished.empty()) results[sentence] = BestFinished(finished, w.back.data(), stride);
        continue;
      }
      w.next_active.push_back(sentence);
      for (int k = 0; k < beam; ++k) {
        const bool has_live = k < static_cast<int>(w.live.size());
        const auto parent_row =
            static_cast<int32_t>(block * beam + (has_live ? w.live[k].parent : 0));
        const int32_t token = has_live ? w.live[k].token : eos;
        back[w.next_rows.size()] = {parent_row, token};
        w.next_rows.push_back(parent_row);
        w.next_scores.push_back(has_live ? w.live[k].score : kDeadHypothesisScore);
        w.next_tokens.push_back(token);
      }
    }
    if (absl::Status s = state.SelectRows(w.next_rows); !s.ok()) return s;
    std::swap(w.active, w.next_active);
    std::swap(w.row_scores, w.next_scores);
    std::swap(w.tokens, w.next_tokens);
  }
  return results;
}

}  // namespace

absl::StatusOr<std::vector<Hypothesis>> Decode(const TransformerModel& model,
                                               const TaskRoute& route,
                                               const std::vector<std::vector<int32_t>>& sources,
                                               const DecodeOptions& options,
                                               DecodeWorkspace* workspace) {
  if (options.beam_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("beam size must be >= 1, got ", options.beam_size));
  }
  if (options.max_output_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max output tokens must be >= 1, got ", options.max_output_tokens));
  }
  if (!(options.max_output_ratio >= 0.0f) || options.max_output_offset < 0) {
    return absl::InvalidArgumentError("max output ratio and offset must be >= 0");
  }
  if (!(options.length_penalty >= 0.0f)) {
    return absl::InvalidArgumentError("length penalty must be >= 0");
  }
  if (sources.empty()) return std::vector<Hypothesis>();
  std::optional<DecodeWorkspace> temporary;
  if (workspace == nullptr) workspace = &temporary.emplace();
  Buffers& buffers = workspace->buffers();
  absl::StatusOr<std::vector<Hypothesis>> result;
  kernels::RunCarried([&] {
    if (absl::Status s = model.Encode(sources, route, buffers.encoder); !s.ok()) {
      result = s;
      return;
    }
    result = options.beam_size == 1 ? GreedyDecode(model, route, options, buffers)
                                    : BeamDecode(model, route, options, buffers);
  });
  return result;
}

}  // namespace taskmoe::models
