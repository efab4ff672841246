// Naive reference implementations the kernels are tested against: plain loops in double
// precision, written for obviousness rather than speed.
#ifndef TASKMOE_TESTS_KERNELS_REFERENCE_H_
#define TASKMOE_TESTS_KERNELS_REFERENCE_H_

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "kernels/activation.h"
#include "kernels/runtime.h"
#include "kernels/tensor.h"

namespace taskmoe::kernels::testing {

// Normally distributed f32 values, seeded for reproducibility.
std::vector<float> RandomVector(int64_t count, uint32_t seed, float stddev = 1.0f);
Tensor RandomTensor(const Shape& shape, uint32_t seed, float stddev = 1.0f);
// t's values as floats: f32 as they are, bf16 widened exactly.
std::vector<float> ToVector(const Tensor& t);
// Each value rounded to the nearest bf16 (what a bf16 kernel sees).
std::vector<float> RoundToBFloat16(const std::vector<float>& values);

// y[m, n] = act(sum_k x[m, k] * w[n, k] + b[n]); b may be empty.
std::vector<double> NaiveLinear(const std::vector<float>& x, const std::vector<float>& w,
                                const std::vector<float>& b, int64_t m, int64_t k, int64_t n,
                                Activation activation);

std::vector<double> NaiveLayerNorm(const std::vector<float>& x, const std::vector<float>& gamma,
                                   const std::vector<float>& beta, int64_t rows, int64_t d,
                                   double eps);

// Attention with explicit masks, one head at a time; layout as kernels/attention.h.
std::vector<double> NaiveAttention(const std::vector<float>& q, const std::vector<float>& k,
                                   const std::vector<float>& v, int64_t batch, int64_t tq,
                                   int64_t tk, int64_t d, int heads,
                                   const std::vector<int32_t>& key_lengths, bool causal,
                                   int64_t causal_offset);

// Largest |a - b| / (atol + rtol * |b|) over all elements: <= 1 means within tolerance.
double WorstToleranceRatio(const std::vector<float>& actual, const std::vector<double>& expected,
                           double atol, double rtol);

// Not a reference, but shared by the kernel tests: sets the kernel thread count (runtime.h)
// and restores the previous one when it leaves scope.
class ThreadSettingScope {
 public:
  explicit ThreadSettingScope(int threads) : saved_(NumThreads()) {
    EXPECT_TRUE(SetNumThreads(threads).ok());
  }
  ~ThreadSettingScope() { EXPECT_TRUE(SetNumThreads(saved_).ok()); }
  ThreadSettingScope(const ThreadSettingScope&) = delete;
  ThreadSettingScope& operator=(const ThreadSettingScope&) = delete;

 private:
  int saved_;
};

}  // namespace taskmoe::kernels::testing

#endif  // TASKMOE_TESTS_KERNELS_REFERENCE_H_
