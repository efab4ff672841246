// Greedy and beam search over the incremental decoder.
#include "models/decoding.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "kernels/topk.h"

namespace taskmoe::models {
namespace {

using kernels::Tensor;

constexpr float kNegativeInfinity = -std::numeric_limits<float>::infinity();

int64_t StepLimit(const TransformerModel& model, const DecodeOptions& options) {
  return std::min<int64_t>(options.max_output_tokens, model.config().max_positions);
}

// Steps each sentence may take: the batch limit, lowered by the per-sentence ratio rule.
std::vector<int64_t> SentenceStepLimits(const EncoderOutput& encoder, const DecodeOptions& options,
                                        int64_t max_steps) {
  std::vector<int64_t> limits(encoder.lengths.size(), max_steps);
  if (options.max_output_ratio <= 0.0f) return limits;
  for (size_t b = 0; b < limits.size(); ++b) {
    const auto relative =
        static_cast<int64_t>(options.max_output_ratio * static_cast<float>(encoder.lengths[b]) +
                             static_cast<float>(options.max_output_offset));
    limits[b] = std::clamp<int64_t>(relative, 1, max_steps);
  }
  return limits;
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
                                                     const EncoderOutput& encoder,
                                                     const DecodeOptions& options) {
  const int64_t batch = static_cast<int64_t>(encoder.lengths.size());
  const int32_t eos = model.config().special_tokens.eos;
  const int64_t max_steps = StepLimit(model, options);
  const std::vector<int64_t> step_limits = SentenceStepLimits(encoder, options, max_steps);
  std::vector<Hypothesis> results(batch);
  DecoderState state;
  if (absl::Status s = model.StartDecoding(encoder, max_steps, route, state); !s.ok()) return s;

  std::vector<int32_t> sentence_of_row(batch);  // active rows -> sentence index
  for (int64_t b = 0; b < batch; ++b) sentence_of_row[b] = static_cast<int32_t>(b);
  std::vector<int32_t> tokens(batch, model.config().special_tokens.bos);
  std::vector<int32_t> keep;
  Tensor log_probs;
  for (int64_t step = 0; step < max_steps && !sentence_of_row.empty(); ++step) {
    if (options.on_step) options.on_step(step);
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
    if (absl::Status s = model.DecodeStep(tokens, route, state, log_probs); !s.ok()) return s;
    const int64_t vocab = log_probs.dim(1);
    for (size_t r = 0; r < sentence_of_row.size(); ++r) {
      const float* row = log_probs.data<float>() + r * vocab;
      const int32_t best = static_cast<int32_t>(std::max_element(row, row + vocab) - row);
      Hypothesis& h = results[sentence_of_row[r]];
      h.score += row[best];
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

struct BeamCandidate {
  float score;
  int32_t parent;  // row within the sentence's beam
  int32_t token;
};

absl::StatusOr<std::vector<Hypothesis>> BeamDecode(const TransformerModel& model,
                                                   const TaskRoute& route,
                                                   const EncoderOutput& encoder,
                                                   const DecodeOptions& options) {
  const int64_t batch = static_cast<int64_t>(encoder.lengths.size());
  const int beam = options.beam_size;
  const int32_t eos = model.config().special_tokens.eos;
  const int64_t max_steps = StepLimit(model, options);
  const float alpha = options.length_penalty;
  auto normalise = [alpha](float sum, int64_t length) {
    return alpha == 0.0f ? sum : sum / std::pow(static_cast<float>(length), alpha);
  };

  const std::vector<int64_t> step_limits = SentenceStepLimits(encoder, options, max_steps);
  DecoderState state;
  if (absl::Status s = model.StartDecoding(encoder, max_steps, route, state); !s.ok()) return s;
  // Every sentence starts with `beam` copies of its row; only the first is live, so the
  // first step does not pick the same token `beam` times.
  std::vector<int32_t> expand;
  for (int64_t b = 0; b < batch; ++b) expand.insert(expand.end(), beam, static_cast<int32_t>(b));
  if (absl::Status s = state.SelectRows(expand); !s.ok()) return s;

  std::vector<int32_t> active(batch);  // sentence of each block of `beam` rows
  for (int64_t b = 0; b < batch; ++b) active[b] = static_cast<int32_t>(b);
  std::vector<float> row_scores(batch * beam, kNegativeInfinity);
  for (int64_t b = 0; b < batch; ++b) row_scores[b * beam] = 0.0f;
  std::vector<std::vector<int32_t>> row_tokens(batch * beam);
  std::vector<int32_t> tokens(batch * beam, model.config().special_tokens.bos);
  std::vector<std::vector<Hypothesis>> finished(batch);
  std::vector<Hypothesis> results(batch);
  Tensor log_probs, top_values, top_indices;

  for (int64_t step = 0; step < max_steps && !active.empty(); ++step) {
    if (options.on_step) options.on_step(step);
    if (absl::Status s = model.DecodeStep(tokens, route, state, log_probs); !s.ok()) return s;
    const int64_t vocab = log_probs.dim(1);
    // The best 2 * beam continuations of each row are enough: at most `beam` of the chosen
    // ones can end in EOS, so `beam` live ones always remain among them.
    const int64_t per_row = std::min<int64_t>(2 * beam, vocab);
    if (absl::Status s = kernels::TopK(log_probs, per_row, top_values, top_indices); !s.ok()) {
      return s;
    }
    std::vector<int32_t> next_active, next_rows, next_tokens;
    std::vector<float> next_scores;
    std::vector<std::vector<int32_t>> next_row_tokens;
    std::vector<BeamCandidate> candidates;
    for (size_t block = 0; block < active.size(); ++block) {
      const int32_t sentence = active[block];
      const bool cancelled = options.is_cancelled && options.is_cancelled(sentence);
      candidates.clear();
      for (int k = 0; k < beam; ++k) {
        const int64_t row = block * beam + k;
        if (row_scores[row] == kNegativeInfinity) continue;
        for (int64_t j = 0; j < per_row; ++j) {
          candidates.push_back({row_scores[row] + top_values.data<float>()[row * per_row + j],
                                static_cast<int32_t>(k),
                                top_indices.data<int32_t>()[row * per_row + j]});
        }
      }
      std::stable_sort(
          candidates.begin(), candidates.end(),
          [](const BeamCandidate& a, const BeamCandidate& b) { return a.score > b.score; });
      std::vector<BeamCandidate> live;
      for (const BeamCandidate& c : candidates) {
        if (static_cast<int>(live.size()) == beam) break;
        if (c.token == eos) {
          if (static_cast<int>(finished[sentence].size()) < beam) {
            Hypothesis h;
            h.tokens = row_tokens[block * beam + c.parent];
            h.score = normalise(c.score, step + 1);
            h.reached_eos = true;
            finished[sentence].push_back(std::move(h));
          }
        } else {
          live.push_back(c);
        }
      }
      const bool last_step = step + 1 >= step_limits[sentence];
      const bool done =
          cancelled || last_step || static_cast<int>(finished[sentence].size()) >= beam;
      if (done) {
        // Hypotheses cut by the length limit compete with finished ones.
        if (!cancelled) {
          for (const BeamCandidate& c : live) {
            Hypothesis h;
            h.tokens = row_tokens[block * beam + c.parent];
            h.tokens.push_back(c.token);
            h.score = normalise(c.score, step + 1);
            finished[sentence].push_back(std::move(h));
          }
        }
        std::vector<Hypothesis>& done_list = finished[sentence];
        if (cancelled) {
          results[sentence].status = absl::CancelledError("decoding cancelled");
        } else if (!done_list.empty()) {
          results[sentence] = *std::max_element(
              done_list.begin(), done_list.end(),
              [](const Hypothesis& a, const Hypothesis& b) { return a.score < b.score; });
        }
        continue;
      }
      next_active.push_back(sentence);
      for (int k = 0; k < beam; ++k) {
        const int64_t parent_row =
            block * beam + (k < static_cast<int>(live.size()) ? live[k].parent : 0);
        next_rows.push_back(static_cast<int32_t>(parent_row));
        if (k < static_cast<int>(live.size())) {
          next_scores.push_back(live[k].score);
          next_tokens.push_back(live[k].token);
          std::vector<int32_t> history = row_tokens[parent_row];
          history.push_back(live[k].token);
          next_row_tokens.push_back(std::move(history));
        } else {
          next_scores.push_back(kNegativeInfinity);
          next_tokens.push_back(eos);
          next_row_tokens.emplace_back();
        }
      }
    }
    if (absl::Status s = state.SelectRows(next_rows); !s.ok()) return s;
    active = std::move(next_active);
    row_scores = std::move(next_scores);
    tokens = std::move(next_tokens);
    row_tokens = std::move(next_row_tokens);
  }
  return results;
}

}  // namespace

absl::StatusOr<std::vector<Hypothesis>> Decode(const TransformerModel& model,
                                               const TaskRoute& route,
                                               const std::vector<std::vector<int32_t>>& sources,
                                               const DecodeOptions& options) {
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
  EncoderOutput encoder;
  if (absl::Status s = model.Encode(sources, route, encoder); !s.ok()) return s;
  if (options.beam_size == 1) return GreedyDecode(model, route, encoder, options);
  return BeamDecode(model, route, encoder, options);
}

}  // namespace taskmoe::models
