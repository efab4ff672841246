// The int8 GEMM tile in its AVX2 form (vpmaddubsw + vpmaddwd); see int8_gemm_tile.h.
#include "kernels/int8_gemm_tile.h"

namespace taskmoe::kernels {

void Int8GemmColumnTilesAvx2(const Int8GemmArgs& args, int64_t first_tile, int64_t tile_count) {
  GemmColumnTiles(args, first_tile, tile_count);
}

}  // namespace taskmoe::kernels
