// Weight packing and the threaded driver of our int8 GEMM.
#include "kernels/int8_gemm.h"

#include <algorithm>
#include <cstring>

#include "kernels/runtime.h"

namespace taskmoe::kernels {
namespace {

// Column tiles are handed to threads in this many contiguous runs at most: enough to balance
// two to a few dozen threads, few enough that the per-run call costs nothing.
constexpr int64_t kMaxTileRuns = 64;

}  // namespace

int64_t Int8GemmPaddedInputs(int64_t in_features) { return (in_features + 3) / 4 * 4; }

int64_t Int8GemmPaddedColumns(int64_t out_features) {
  return (out_features + kInt8GemmTileColumns - 1) / kInt8GemmTileColumns * kInt8GemmTileColumns;
}

int64_t Int8GemmPackedBytes(int64_t out_features, int64_t in_features) {
  return Int8GemmPaddedColumns(out_features) * Int8GemmPaddedInputs(in_features);
}

void Int8GemmShiftCorrection(const int8_t* w, int64_t n, int64_t k, int32_t* correction) {
  std::memset(correction, 0, Int8GemmPaddedColumns(n) * sizeof(int32_t));
  for (int64_t c = 0; c < n; ++c) {
    int32_t sum = 0;
    for (int64_t i = 0; i < k; ++i) sum += w[c * k + i];
    correction[c] = 128 * sum;
  }
}

void PackInt8GemmWeights(const int8_t* w, int64_t n, int64_t k, int8_t* packed) {
  const int64_t padded_in = Int8GemmPaddedInputs(k);
  std::memset(packed, 0, Int8GemmPackedBytes(n, k));
  for (int64_t c = 0; c < n; ++c) {
    const int64_t tile = c / kInt8GemmTileColumns, lane = c % kInt8GemmTileColumns;
    int8_t* tile_start = packed + tile * padded_in * kInt8GemmTileColumns;
    for (int64_t i = 0; i < k; ++i) {
      tile_start[(i / 4) * kInt8GemmUnitBytes + lane * 4 + i % 4] = w[c * k + i];
    }
  }
}

int64_t Int8GemmTilesPerStep(Int8GemmIsa isa, int64_t m) {
  return isa == Int8GemmIsa::kAvx512Vnni ? Int8GemmAvx512TilesPerStep(m) : 1;
}

void Int8Gemm(Int8GemmIsa isa, const Int8GemmArgs& args) {
  if (args.m == 0 || args.n == 0) return;
  const int64_t tiles = (args.n + kInt8GemmTileColumns - 1) / kInt8GemmTileColumns;
  // Runs start at multiples of the tiles a form multiplies side by side, so that no run is
  // left with a narrower remainder than it must.
  const int64_t step = Int8GemmTilesPerStep(isa, args.m);
  const int64_t units = (tiles + step - 1) / step;
  const int64_t runs = std::min(units, kMaxTileRuns);
  const auto body = isa == Int8GemmIsa::kAvx512Vnni ? Int8GemmColumnTilesAvx512Vnni
                    : isa == Int8GemmIsa::kAvxVnni  ? Int8GemmColumnTilesAvxVnni
                                                    : Int8GemmColumnTilesAvx2;
  ParallelFor(runs, args.m * args.n * args.padded_in >= kParallelMacs, [&](int64_t run) {
    const int64_t first = units * run / runs * step;
    const int64_t last = std::min(tiles, units * (run + 1) / runs * step);
    body(args, first, last - first);
  });
}

}  // namespace taskmoe::kernels
