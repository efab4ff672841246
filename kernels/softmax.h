// Softmax and log-softmax over the last dimension, in place.
#ifndef TASKMOE_KERNELS_SOFTMAX_H_
#define TASKMOE_KERNELS_SOFTMAX_H_

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/quantize.h"
#include "kernels/tensor.h"

namespace taskmoe::kernels {

// x[..., i] = exp(x_i - max) / sum_j exp(x_j - max), per row of the last dimension.
absl::Status SoftmaxInPlace(Tensor& x);
// x[..., i] = x_i - max - log(sum_j exp(x_j - max)).
absl::Status LogSoftmaxInPlace(Tensor& x);

// Per row of x [..., n]: the index of its largest value (the first of equal ones; 0 when the
// row's maximum is NaN) and log(sum_j exp(x_j)), the shift that turns logits into
// log-probabilities. Reads x once and writes nothing to it: what greedy and beam search need
// from a 64k-wide logit row, without the write pass of LogSoftmaxInPlace. argmax (s32) and
// log_sum_exp (f32) are resized to x's shape without its last dimension, flattened: [rows].
absl::Status ArgMaxAndLogSumExp(const Tensor& x, Tensor& argmax, Tensor& log_sum_exp);

// ArgMaxAndLogSumExp over `rows` rows of `n` (>= 1) values at `values`, or over their
// dequantisation when one is given (computed block by block in cache and never written), plus
// each row's maximum (the best value) when `max` is not null. One pass over memory: the
// exponential sum is rescaled whenever a block raises the maximum. A row whose values are all
// NaN gets index 0 and NaN maximum and shift. A null `log_sum_exp` skips the exponentials
// (a greedy decoder that reports no scores needs only the arg-max): the same arg-max and
// maximum from a pass of vectorised maxima.
void ArgMaxAndLogSumExpRows(const float* values, int64_t rows, int64_t n,
                            const Dequantisation* dequantisation, int32_t* argmax, float* max,
                            float* log_sum_exp);

// ArgMaxAndLogSumExpRows on the calling thread alone: for a loop that is already shared among
// the threads (matmul.h's column panels).
void ArgMaxAndLogSumExpRowsOnThisThread(const float* values, int64_t rows, int64_t n,
                                        const Dequantisation* dequantisation, int32_t* argmax,
                                        float* max, float* log_sum_exp);

// The same on one row of `count` values (count >= 1); the building blocks of the above.
void SoftmaxRow(float* values, int64_t count);
void LogSoftmaxRow(float* values, int64_t count);

}  // namespace taskmoe::kernels

#endif  // TASKMOE_KERNELS_SOFTMAX_H_
