// The int8 GEMM tile in its AVX-VNNI form (vpdpbusd); this file alone is compiled with
// -mavxvnni (kernels/CMakeLists.txt) and runs only where cpu_features.h finds AVX-VNNI.
#include "kernels/int8_gemm_tile.h"

#if !defined(__AVXVNNI__)
#error "int8_gemm_vnni.cc must be compiled with -mavxvnni"
#endif

namespace taskmoe::kernels {

void Int8GemmColumnTilesAvxVnni(const Int8GemmArgs& args, int64_t first_tile, int64_t tile_count) {
  GemmColumnTiles(args, first_tile, tile_count);
}

}  // namespace taskmoe::kernels
