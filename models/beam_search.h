// One sentence's step of beam search, shared by the two decoders that run it: decoding.cc's
// per-task batches and continuous_batch.cc's mixed batches. Both keep a sentence's `beam`
// hypotheses as neighbouring rows and back pointers per step; they differ only in where those
// rows sit, which the callers pass as offsets and strides.
#ifndef TASKMOE_MODELS_BEAM_SEARCH_H_
#define TASKMOE_MODELS_BEAM_SEARCH_H_

#include <cstdint>
#include <limits>
#include <vector>

#include "models/decoding.h"

namespace taskmoe::models {

// The score of a beam rank that holds no live hypothesis (a sentence's first step has only
// rank 0; a sentence with fewer live hypotheses than its beam pads with it): never chosen.
inline constexpr float kDeadHypothesisScore = -std::numeric_limits<float>::infinity();

// A continuation of a live hypothesis: its score, its parent's rank in the sentence's block,
// its token, and its position among the sentence's candidates (ties keep this order).
struct BeamCandidate {
  float score;
  int32_t parent;
  int32_t token;
  int32_t order;
};

// How a beam row came to be: its parent row in the previous step's layout and its last token.
struct BackPointer {
  int32_t parent;
  int32_t token;
};

// A hypothesis that left the beam, by reference into the back pointers until its tokens are
// needed: the tokens of `row` as it entered step `step`, then `last` when >= 0.
struct FinishedBeam {
  float score;
  int32_t step;
  int32_t row;
  int32_t last;
  bool reached_eos;
};

// The step's inputs for one sentence: its hypotheses' scores by rank, and their rows (rank k
// at row first_row + k of the top-k arrays), each with the best `candidates_per_row`
// continuations in descending order at top_tokens/top_logits[row * top_width ...] and the
// row's log-sum-exp (a logit minus it is a log-probability).
struct BeamStepInput {
  int beam = 0;
  int64_t step = 0;        // 0-based index of this step
  bool last_step = false;  // the sentence's length limit ends it after this step
  float length_penalty = 0.0f;
  int32_t eos = 0;
  int64_t first_row = 0;
  const float* scores = nullptr;  // [beam], by rank; -inf: no hypothesis of that rank
  const float* top_logits = nullptr;
  const int32_t* top_tokens = nullptr;
  const float* log_sum_exp = nullptr;  // [rows]
  int64_t top_width = 0;
  int64_t candidates_per_row = 0;
};

// Ranks the sentence's candidates (as docs/api.md describes beam search): the best ones not
// ending in EOS become `live` (at most beam), those ending in EOS among them join `finished`
// while it holds fewer than beam. Returns whether the sentence is done (its last step, or beam
// hypotheses finished); then the live ones have joined `finished` too, cut by the limit.
// `candidates` is scratch. Finished rows are row indices of the layout entering this step
// (first_row + rank).
bool RankBeamCandidates(const BeamStepInput& in, std::vector<BeamCandidate>& candidates,
                        std::vector<BeamCandidate>& live, std::vector<FinishedBeam>& finished);

// The best of `finished` (non-empty), its tokens read back through `back` (the pointers of step
// s at back[s * stride + row]).
Hypothesis BestFinished(const std::vector<FinishedBeam>& finished, const BackPointer* back,
                        int64_t stride);

}  // namespace taskmoe::models

#endif  // TASKMOE_MODELS_BEAM_SEARCH_H_
