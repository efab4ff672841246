// Naive reference implementations for the kernel tests.
#include "tests/kernels/reference.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>

namespace taskmoe::kernels::testing {

std::vector<float> RandomVector(int64_t count, uint32_t seed, float stddev) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, stddev);
  std::vector<float> values(count);
  for (float& v : values) v = dist(rng);
  return values;
}

Tensor RandomTensor(const Shape& shape, uint32_t seed, float stddev) {
  return Tensor::FromVector(shape, RandomVector(shape.numel(), seed, stddev));
}

std::vector<float> ToVector(const Tensor& t) {
  if (t.dtype() == DType::kBF16) {
    std::vector<float> widened(t.numel());
    for (int64_t i = 0; i < t.numel(); ++i) widened[i] = BFloat16ToFloat(t.data<BFloat16>()[i]);
    return widened;
  }
  assert(t.dtype() == DType::kF32);
  return std::vector<float>(t.data<float>(), t.data<float>() + t.numel());
}

std::vector<float> RoundToBFloat16(const std::vector<float>& values) {
  std::vector<float> rounded(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    rounded[i] = BFloat16ToFloat(FloatToBFloat16(values[i]));
  }
  return rounded;
}

std::vector<double> NaiveLinear(const std::vector<float>& x, const std::vector<float>& w,
                                const std::vector<float>& b, int64_t m, int64_t k, int64_t n,
                                Activation activation) {
  std::vector<double> y(m * n);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double acc = b.empty() ? 0.0 : b[j];
      for (int64_t p = 0; p < k; ++p) acc += static_cast<double>(x[i * k + p]) * w[j * k + p];
      if (activation == Activation::kRelu) acc = std::max(acc, 0.0);
      if (activation == Activation::kGelu) acc = 0.5 * acc * (1.0 + std::erf(acc / std::sqrt(2.0)));
      y[i * n + j] = acc;
    }
  }
  return y;
}

std::vector<double> NaiveLayerNorm(const std::vector<float>& x, const std::vector<float>& gamma,
                                   const std::vector<float>& beta, int64_t rows, int64_t d,
                                   double eps) {
  std::vector<double> y(rows * d);
  for (int64_t r = 0; r < rows; ++r) {
    double mean = 0, var = 0;
    for (int64_t i = 0; i < d; ++i) mean += x[r * d + i];
    mean /= d;
    for (int64_t i = 0; i < d; ++i) var += (x[r * d + i] - mean) * (x[r * d + i] - mean);
    var /= d;
    for (int64_t i = 0; i < d; ++i) {
      y[r * d + i] = (x[r * d + i] - mean) / std::sqrt(var + eps) * gamma[i] + beta[i];
    }
  }
  return y;
}

std::vector<double> NaiveAttention(const std::vector<float>& q, const std::vector<float>& k,
                                   const std::vector<float>& v, int64_t batch, int64_t tq,
                                   int64_t tk, int64_t d, int heads,
                                   const std::vector<int32_t>& key_lengths, bool causal,
                                   int64_t causal_offset) {
  const int64_t hd = d / heads;
  std::vector<double> out(batch * tq * d, 0.0);
  for (int64_t b = 0; b < batch; ++b) {
    for (int h = 0; h < heads; ++h) {
      for (int64_t t = 0; t < tq; ++t) {
        std::vector<double> scores(tk, -INFINITY);
        bool any = false;
        for (int64_t j = 0; j < tk; ++j) {
          const bool padded = !key_lengths.empty() && j >= key_lengths[b];
          const bool future = causal && j > t + causal_offset;
          if (padded || future) continue;
          double dot = 0;
          for (int64_t i = 0; i < hd; ++i) {
            dot += static_cast<double>(q[(b * tq + t) * d + h * hd + i]) *
                   k[(b * tk + j) * d + h * hd + i];
          }
          scores[j] = dot / std::sqrt(static_cast<double>(hd));
          any = true;
        }
        if (!any) continue;
        const double mx = *std::max_element(scores.begin(), scores.end());
        double sum = 0;
        for (double& s : scores) {
          s = std::isinf(s) ? 0.0 : std::exp(s - mx);
          sum += s;
        }
        for (int64_t j = 0; j < tk; ++j) {
          for (int64_t i = 0; i < hd; ++i) {
            out[(b * tq + t) * d + h * hd + i] +=
                scores[j] / sum * v[(b * tk + j) * d + h * hd + i];
          }
        }
      }
    }
  }
  return out;
}

double WorstToleranceRatio(const std::vector<float>& actual, const std::vector<double>& expected,
                           double atol, double rtol) {
  assert(actual.size() == expected.size());
  double worst = 0;
  for (size_t i = 0; i < actual.size(); ++i) {
    const double err = std::fabs(actual[i] - expected[i]);
    worst = std::max(worst, err / (atol + rtol * std::fabs(expected[i])));
  }
  return worst;
}

}  // namespace taskmoe::kernels::testing
