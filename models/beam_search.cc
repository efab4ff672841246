// One sentence's step of beam search: ranking its candidates, and reading a hypothesis back.
#include "models/beam_search.h"

#include <algorithm>
#include <cmath>

namespace taskmoe::models {

bool RankBeamCandidates(const BeamStepInput& in, std::vector<BeamCandidate>& candidates,
                        std::vector<BeamCandidate>& live, std::vector<FinishedBeam>& finished) {
  const float alpha = in.length_penalty;
  auto normalise = [alpha](float sum, int64_t length) {
    return alpha == 0.0f ? sum : sum / std::pow(static_cast<float>(length), alpha);
  };
  candidates.clear();
  for (int k = 0; k < in.beam; ++k) {
    const int64_t row = in.first_row + k;
    const float row_score = in.scores[k];
    if (row_score == kDeadHypothesisScore) continue;  // a padding rank
    for (int64_t j = 0; j < in.candidates_per_row; ++j) {
      const int64_t at = row * in.top_width + j;
      candidates.push_back({row_score + (in.top_logits[at] - in.log_sum_exp[row]),
                            static_cast<int32_t>(k), in.top_tokens[at],
                            static_cast<int32_t>(candidates.size())});
    }
  }
  // A stable order without stable_sort, which would allocate a buffer every step.
  std::sort(candidates.begin(), candidates.end(),
            [](const BeamCandidate& a, const BeamCandidate& b) {
              return a.score > b.score || (a.score == b.score && a.order < b.order);
            });
  live.clear();
  const auto step = static_cast<int32_t>(in.step);
  for (const BeamCandidate& c : candidates) {
    if (static_cast<int>(live.size()) == in.beam) break;
    if (c.token == in.eos) {
      if (static_cast<int>(finished.size()) < in.beam) {
        finished.push_back({normalise(c.score, in.step + 1), step,
                            static_cast<int32_t>(in.first_row + c.parent), -1, true});
      }
    } else {
      live.push_back(c);
    }
  }
  if (!in.last_step && static_cast<int>(finished.size()) < in.beam) return false;
  // Hypotheses cut by the length limit compete with finished ones.
  for (const BeamCandidate& c : live) {
    finished.push_back({normalise(c.score, in.step + 1), step,
                        static_cast<int32_t>(in.first_row + c.parent), c.token, false});
  }
  return true;
}

Hypothesis BestFinished(const std::vector<FinishedBeam>& finished, const BackPointer* back,
                        int64_t stride) {
  const FinishedBeam& best = *std::max_element(
      finished.begin(), finished.end(),
      [](const FinishedBeam& a, const FinishedBeam& b) { return a.score < b.score; });
  Hypothesis h;
  h.tokens.resize(best.step + (best.last >= 0 ? 1 : 0));
  int32_t row = best.row;
  for (int64_t s = best.step - 1; s >= 0; --s) {
    const BackPointer& p = back[s * stride + row];
    h.tokens[s] = p.token;
    row = p.parent;
  }
  if (best.last >= 0) h.tokens.back() = best.last;
  h.score = best.score;
  h.reached_eos = best.reached_eos;
  return h;
}

}  // namespace taskmoe::models
