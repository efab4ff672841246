// The feed-forward block of a Transformer layer, in its three forms: dense (any width), a
// task-routed Mixture-of-Experts (one fixed expert choice for the whole batch, from the task,
// or one per block of rows in a batch of several tasks) and a token-routed Mixture-of-Experts
// (a choice per token: gather, per-expert GEMM, weighted scatter-add).
#ifndef TASKMOE_MODELS_FFN_H_
#define TASKMOE_MODELS_FFN_H_

#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "kernels/matmul.h"
#include "kernels/tensor.h"
#include "models/format/config.h"

namespace taskmoe::models {

using LinearPtr = std::shared_ptr<const kernels::PackedLinear>;

struct DenseFfnWeights {
  LinearPtr fc1;  // [ff, d_model] with bias
  LinearPtr fc2;  // [d_model, ff] with bias
};

struct MoeFfnWeights {
  Routing routing = Routing::kNone;
  int top_k = 0;
  std::vector<DenseFfnWeights> experts;
  LinearPtr router;             // token routing: [num_experts, d_model], no bias, f32
  kernels::Tensor task_logits;  // task routing: f32 [num_task_keys, num_experts]
};

// The experts a gate picks and their renormalised weights, largest first.
struct ExpertChoice {
  std::vector<int> experts;
  std::vector<float> gates;
};

// docs/model-format.md gating: p = softmax(logits) over all experts, the top_k largest (ties
// to the lower index), g_i = p_i / sum of the chosen p.
ExpertChoice ChooseExperts(const float* logits, int num_experts, int top_k);

// Buffers of ChooseExpertsInto, kept by the caller so that per-token gating never allocates.
struct GateScratch {
  std::vector<float> probs;
  std::vector<float> top_probs;
  std::vector<int32_t> top_experts;
};

// ChooseExperts into `choice`, reusing its storage and `scratch`.
void ChooseExpertsInto(const float* logits, int num_experts, int top_k, GateScratch& scratch,
                       ExpertChoice& choice);

// Consecutive rows of a batch that go through one task-routed MoE layer with one choice.
struct TaskMoeBlock {
  const MoeFfnWeights* moe = nullptr;
  const ExpertChoice* choice = nullptr;
  int64_t rows = 0;
};

// Buffers reused from call to call so that a decoding loop does not allocate.
struct FfnWorkspace {
  kernels::Tensor hidden;
  kernels::Tensor expert_out;
  kernels::Tensor router_logits;
  kernels::Tensor gathered;
  std::vector<std::vector<int32_t>> rows_per_expert;
  std::vector<std::vector<float>> gates_per_expert;
  GateScratch gate_scratch;
  ExpertChoice token_choice;
  // GroupedTaskMoeForward: the blocks, the distinct experts among them, and each row's expert
  // outputs by slot, [rows, top_k, d_model].
  std::vector<TaskMoeBlock> blocks;
  std::vector<const DenseFfnWeights*> distinct_experts;
  std::vector<int64_t> expert_rows;  // per distinct expert: the rows of the blocks that chose it
  kernels::Tensor slot_outputs;
  // Per distinct expert (in distinct_experts' order), when they run side by side: its
  // gathered rows, hidden activations and outputs (gathered, hidden and expert_out otherwise).
  std::vector<kernels::Tensor> expert_inputs, expert_hidden, expert_outputs;
};

// y = fc2(act(fc1(x))). x: f32 [..., d_model]; y resized to x's shape. `hidden` (or
// ws.hidden) holds act(fc1(x)).
absl::Status DenseFfnForward(const DenseFfnWeights& ffn, kernels::Activation activation,
                             const kernels::Tensor& x, kernels::Tensor& hidden, kernels::Tensor& y);
absl::Status DenseFfnForward(const DenseFfnWeights& ffn, kernels::Activation activation,
                             const kernels::Tensor& x, FfnWorkspace& ws, kernels::Tensor& y);

// y = sum_i g_i Expert_i(x) over `choice`, the same experts for every row.
absl::Status TaskMoeForward(const MoeFfnWeights& moe, const ExpertChoice& choice,
                            kernels::Activation activation, const kernels::Tensor& x,
                            FfnWorkspace& ws, kernels::Tensor& y);

// TaskMoeForward for a batch whose consecutive row blocks chose different experts (rows of
// several tasks, x: f32 [rows, d_model] or [sentences, length, d_model] with the blocks' rows
// counted along the flattened leading dimensions): every distinct expert (the same weight
// object, whichever MoeFfnWeights holds it) runs once over the rows of every block that chose
// it, as a token-routed layer runs its experts. A row's output is summed in its choice's order,
// as TaskMoeForward sums it, so rows get TaskMoeForward's arithmetic.
absl::Status GroupedTaskMoeForward(const std::vector<TaskMoeBlock>& blocks,
                                   kernels::Activation activation, const kernels::Tensor& x,
                                   FfnWorkspace& ws, kernels::Tensor& y);

// Per row r: y[r] = sum over its top_k experts of g_i Expert_i(x[r]).
absl::Status TokenMoeForward(const MoeFfnWeights& moe, kernels::Activation activation,
                             const kernels::Tensor& x, FfnWorkspace& ws, kernels::Tensor& y);

}  // namespace taskmoe::models

#endif  // TASKMOE_MODELS_FFN_H_
