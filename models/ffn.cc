// Dense, task-routed and token-routed feed-forward blocks.
#include "models/ffn.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "kernels/runtime.h"
#include "kernels/topk.h"

namespace taskmoe::models {

using kernels::DType;
using kernels::Shape;
using kernels::Tensor;

namespace {

// Below this many multiply-adds in all the experts of a grouped layer, one thread runs them
// (as the kernels' own parallel threshold decides for one matmul).
constexpr int64_t kParallelExpertMacs = int64_t{1} << 17;
// The largest share of rows (of all blocks that chose it) an expert may have to run beside the
// others: a decoding step's shares are far smaller, and the buffers this needs per expert stay
// as large as the largest share they held.
constexpr int64_t kMaxSideBySideRows = 64;

}  // namespace

ExpertChoice ChooseExperts(const float* logits, int num_experts, int top_k) {
  GateScratch scratch;
  ExpertChoice choice;
  ChooseExpertsInto(logits, num_experts, top_k, scratch, choice);
  return choice;
}

void ChooseExpertsInto(const float* logits, int num_experts, int top_k, GateScratch& scratch,
                       ExpertChoice& choice) {
  std::vector<float>& probs = scratch.probs;
  probs.assign(logits, logits + num_experts);
  const float max_logit = *std::max_element(probs.begin(), probs.end());
  for (float& p : probs) p = std::exp(p - max_logit);
  // The softmax denominator cancels in the renormalisation, so it is never computed.
  // The lower index wins a tie, so the choice is deterministic.
  scratch.top_probs.resize(top_k);
  scratch.top_experts.resize(top_k);
  kernels::TopKOfRow(probs.data(), num_experts, top_k, scratch.top_probs.data(),
                     scratch.top_experts.data());
  choice.experts.clear();
  choice.gates.clear();
  float chosen_sum = 0.0f;
  for (int i = 0; i < top_k; ++i) chosen_sum += scratch.top_probs[i];
  for (int i = 0; i < top_k; ++i) {
    choice.experts.push_back(scratch.top_experts[i]);
    choice.gates.push_back(scratch.top_probs[i] / chosen_sum);
  }
}

absl::Status DenseFfnForward(const DenseFfnWeights& ffn, kernels::Activation activation,
                             const Tensor& x, Tensor& hidden, Tensor& y) {
  if (absl::Status s = ffn.fc1->Forward(x, activation, hidden); !s.ok()) return s;
  return ffn.fc2->Forward(hidden, kernels::Activation::kNone, y);
}

absl::Status DenseFfnForward(const DenseFfnWeights& ffn, kernels::Activation activation,
                             const Tensor& x, FfnWorkspace& ws, Tensor& y) {
  return DenseFfnForward(ffn, activation, x, ws.hidden, y);
}

absl::Status TaskMoeForward(const MoeFfnWeights& moe, const ExpertChoice& choice,
                            kernels::Activation activation, const Tensor& x, FfnWorkspace& ws,
                            Tensor& y) {
  y.Resize(DType::kF32, x.shape());
  std::memset(y.raw_data(), 0, y.bytes());
  for (size_t i = 0; i < choice.experts.size(); ++i) {
    const int e = choice.experts[i];
    if (e < 0 || e >= static_cast<int>(moe.experts.size())) {
      return absl::InvalidArgumentError(absl::StrCat("task MoE: expert ", e, " out of range"));
    }
    if (absl::Status s = DenseFfnForward(moe.experts[e], activation, x, ws, ws.expert_out);
        !s.ok()) {
      return s;
    }
    const float g = choice.gates[i];
    const float* src = ws.expert_out.data<float>();
    float* dst = y.data<float>();
    const int64_t count = y.numel();  // hoisted: a call per element kept the loop scalar
    for (int64_t j = 0; j < count; ++j) dst[j] += g * src[j];
  }
  return absl::OkStatus();
}

absl::Status GroupedTaskMoeForward(const std::vector<TaskMoeBlock>& blocks,
                                   kernels::Activation activation, const Tensor& x,
                                   FfnWorkspace& ws, Tensor& y) {
  const int64_t d = x.dim(x.rank() - 1);
  const int64_t rows = x.numel() / d;
  int64_t covered = 0;
  size_t slots = 0;
  std::vector<const DenseFfnWeights*>& distinct = ws.distinct_experts;
  distinct.clear();
  for (const TaskMoeBlock& block : blocks) {
    covered += block.rows;
    slots = std::max(slots, block.choice->experts.size());
    for (int e : block.choice->experts) {
      if (e < 0 || e >= static_cast<int>(block.moe->experts.size())) {
        return absl::InvalidArgumentError(absl::StrCat("task MoE: expert ", e, " out of range"));
      }
      const DenseFfnWeights* expert = &block.moe->experts[e];
      const auto same = [expert](const DenseFfnWeights* seen) {
        return seen->fc1 == expert->fc1 && seen->fc2 == expert->fc2;
      };
      if (std::none_of(distinct.begin(), distinct.end(), same)) distinct.push_back(expert);
    }
  }
  if (covered != rows) {
    return absl::InvalidArgumentError(
        absl::StrCat("task MoE: blocks cover ", covered, " rows of ", rows));
  }
  // The slot at which `block` chose `expert`, or -1.
  const auto slot_of = [](const TaskMoeBlock& block, const DenseFfnWeights* expert) {
    for (size_t s = 0; s < block.choice->experts.size(); ++s) {
      const DenseFfnWeights& chosen = block.moe->experts[block.choice->experts[s]];
      if (chosen.fc1 == expert->fc1 && chosen.fc2 == expert->fc2) return static_cast<int>(s);
    }
    return -1;
  };
  const auto slot_count = static_cast<int64_t>(slots);
  ws.slot_outputs.Resize(DType::kF32, Shape{rows, slot_count, d});
  const float* in = x.data<float>();
  float* outputs = ws.slot_outputs.data<float>();
  // In the weights' order, which does not change from step to step while the same experts
  // are chosen: when they run side by side (below), the work team's home ranges then give each
  // thread the same experts, whose weights stay in its caches (the order changes no result).
  std::sort(distinct.begin(), distinct.end(),
            [](const DenseFfnWeights* a, const DenseFfnWeights* b) {
              return std::less<const kernels::PackedLinear*>()(a->fc1.get(), b->fc1.get());
            });
  const auto experts = static_cast<int64_t>(distinct.size());
  std::vector<int64_t>& expert_rows = ws.expert_rows;  // of all blocks that chose each
  expert_rows.assign(distinct.size(), 0);
  for (int64_t k = 0; k < experts; ++k) {
    for (const TaskMoeBlock& block : blocks) {
      expert_rows[k] += slot_of(block, distinct[k]) >= 0 ? block.rows : 0;
    }
  }
  // Expert k's rows of every block that chose it, into `gathered`; its outputs back by slot.
  const auto gather = [&](int64_t k, Tensor& gathered) {
    gathered.Resize(DType::kF32, Shape{expert_rows[k], d});
    int64_t first = 0, at = 0;
    for (const TaskMoeBlock& block : blocks) {
      if (slot_of(block, distinct[k]) >= 0) {
        std::memcpy(gathered.data<float>() + at * d, in + first * d,
                    sizeof(float) * block.rows * d);
        at += block.rows;
      }
      first += block.rows;
    }
  };
  const auto scatter = [&](int64_t k, const Tensor& expert_out) {
    int64_t first = 0, at = 0;
    for (const TaskMoeBlock& block : blocks) {
      if (const int slot = slot_of(block, distinct[k]); slot >= 0) {
        for (int64_t r = 0; r < block.rows; ++r) {
          std::memcpy(outputs + ((first + r) * slot_count + slot) * d,
                      expert_out.data<float>() + (at + r) * d, sizeof(float) * d);
        }
        at += block.rows;
      }
      first += block.rows;
    }
  };

  // With several threads and small shares (a decoding step's), every expert runs in one
  // parallel loop, each on one thread (its matmuls' own loops then run inline): one wait for
  // the team per layer instead of two per expert, and each expert's small matmuls on one core
  // rather than split across cores that would each read their part of the weights and the
  // other's outputs. Only on our own kernels: oneDNN's primitives are cached per thread, and a
  // helper meeting a layer for the first time would create them. (An int8 kernel's input
  // scratch is per thread too: it grows to the largest input each thread has seen, then
  // stays.) Such experts need buffers of their own, kept per expert: kMaxSideBySideRows bounds
  // them; larger shares (an encoder pass over many sentences) run one expert after another on
  // shared buffers, each matmul split across the threads.
  int64_t macs = 0;
  bool side_by_side = experts > 1 && kernels::NumThreads() > 1;
  for (int64_t k = 0; k < experts; ++k) {
    const DenseFfnWeights& expert = *distinct[k];
    macs += expert_rows[k] * d * expert.fc1->out_features() * 2;
    side_by_side = side_by_side && expert_rows[k] <= kMaxSideBySideRows &&
                   expert.fc1->RunsOwnKernel() && expert.fc2->RunsOwnKernel();
  }
  if (!side_by_side || macs < kParallelExpertMacs) {
    for (int64_t k = 0; k < experts; ++k) {
      gather(k, ws.gathered);
      if (absl::Status s =
              DenseFfnForward(*distinct[k], activation, ws.gathered, ws, ws.expert_out);
          !s.ok()) {
        return s;
      }
      scatter(k, ws.expert_out);
    }
  } else {
    if (ws.expert_inputs.size() < distinct.size()) {
      ws.expert_inputs.resize(distinct.size());
      ws.expert_hidden.resize(distinct.size());
      ws.expert_outputs.resize(distinct.size());
    }
    for (int64_t k = 0; k < experts; ++k) gather(k, ws.expert_inputs[k]);
    absl::Status failure;
    std::mutex failure_mutex;
    kernels::ParallelFor(experts, true, [&](int64_t k) {
      absl::Status s = DenseFfnForward(*distinct[k], activation, ws.expert_inputs[k],
                                       ws.expert_hidden[k], ws.expert_outputs[k]);
      if (!s.ok()) {
        std::lock_guard<std::mutex> lock(failure_mutex);
        if (failure.ok()) failure = std::move(s);
      }
    });
    if (!failure.ok()) return failure;
    for (int64_t k = 0; k < experts; ++k) scatter(k, ws.expert_outputs[k]);
  }
  // y = sum over the choice, in its order, of gate * expert output: TaskMoeForward's sums.
  y.Resize(DType::kF32, x.shape());
  std::memset(y.raw_data(), 0, y.bytes());
  int64_t first = 0;
  for (const TaskMoeBlock& block : blocks) {
    for (size_t s = 0; s < block.choice->experts.size(); ++s) {
      const float g = block.choice->gates[s];
      for (int64_t r = first; r < first + block.rows; ++r) {
        const float* src = outputs + (r * slot_count + static_cast<int64_t>(s)) * d;
        float* dst = y.data<float>() + r * d;
        for (int64_t j = 0; j < d; ++j) dst[j] += g * src[j];
      }
    }
    first += block.rows;
  }
  return absl::OkStatus();
}

absl::Status TokenMoeForward(const MoeFfnWeights& moe, kernels::Activation activation,
                             const Tensor& x, FfnWorkspace& ws, Tensor& y) {
  const int num_experts = static_cast<int>(moe.experts.size());
  const int64_t d = x.dim(x.rank() - 1);
  const int64_t rows = x.numel() / d;
  if (absl::Status s = moe.router->Forward(x, kernels::Activation::kNone, ws.router_logits);
      !s.ok()) {
    return s;
  }
  ws.rows_per_expert.resize(num_experts);
  ws.gates_per_expert.resize(num_experts);
  for (int e = 0; e < num_experts; ++e) {
    ws.rows_per_expert[e].clear();
    ws.gates_per_expert[e].clear();
  }
  for (int64_t r = 0; r < rows; ++r) {
    ExpertChoice& choice = ws.token_choice;
    ChooseExpertsInto(ws.router_logits.data<float>() + r * num_experts, num_experts, moe.top_k,
                      ws.gate_scratch, choice);
    for (int i = 0; i < moe.top_k; ++i) {
      ws.rows_per_expert[choice.experts[i]].push_back(static_cast<int32_t>(r));
      ws.gates_per_expert[choice.experts[i]].push_back(choice.gates[i]);
    }
  }

  y.Resize(DType::kF32, x.shape());
  std::memset(y.raw_data(), 0, y.bytes());
  const float* in = x.data<float>();
  for (int e = 0; e < num_experts; ++e) {
    const std::vector<int32_t>& expert_rows = ws.rows_per_expert[e];
    const int64_t count = static_cast<int64_t>(expert_rows.size());
    if (count == 0) continue;
    ws.gathered.Resize(DType::kF32, Shape{count, d});
    for (int64_t i = 0; i < count; ++i) {
      std::memcpy(ws.gathered.data<float>() + i * d, in + expert_rows[i] * d, d * sizeof(float));
    }
    if (absl::Status s =
            DenseFfnForward(moe.experts[e], activation, ws.gathered, ws, ws.expert_out);
        !s.ok()) {
      return s;
    }
    const float* out = ws.expert_out.data<float>();
    float* dst = y.data<float>();
    for (int64_t i = 0; i < count; ++i) {
      const float g = ws.gates_per_expert[e][i];
      float* row = dst + expert_rows[i] * d;
      for (int64_t j = 0; j < d; ++j) row[j] += g * out[i * d + j];
    }
  }
  return absl::OkStatus();
}

}  // namespace taskmoe::models
