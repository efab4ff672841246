// CPU model, oneDNN's instruction-set level and the feature probes behind the matmul paths.
#include "kernels/cpu_features.h"

#include <cpuid.h>

#include <fstream>
#include <oneapi/dnnl/dnnl.hpp>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "kernels/bf16_dot_rate.h"
#include "kernels/runtime.h"

namespace taskmoe::kernels {
namespace {

using dnnl::cpu_isa;

// Whether oneDNN's level (ONEDNN_MAX_CPU_ISA included) reaches at least AVX2, at least a VNNI
// level (avx2_vnni, or any AVX-512 level with VNNI), and at least AVX-512 (avx512_core).
struct IsaLevel {
  bool avx2 = false;
  bool vnni = false;
  bool avx512 = false;
};

IsaLevel EffectiveLevel() {
  switch (dnnl::get_effective_cpu_isa()) {
    case cpu_isa::avx512_core_amx:
    case cpu_isa::avx512_core_bf16:
    case cpu_isa::avx512_core_vnni:
      return {.avx2 = true, .vnni = true, .avx512 = true};
    case cpu_isa::avx2_vnni:
      return {.avx2 = true, .vnni = true};
    case cpu_isa::avx512_core:
      return {.avx2 = true, .vnni = false, .avx512 = true};
    case cpu_isa::avx2:
      return {.avx2 = true, .vnni = false};
    default:
      return {};
  }
}

// Whether oneDNN creates a 64 x 64 x 64 matmul of this source/weight type with weights in the
// layout it prefers, and the name of the implementation it picks ("" when it cannot).
std::string ProbeMatmul(dnnl::memory::data_type type) {
  using dnnl::memory;
  try {
    const memory::desc src({64, 64}, type, memory::format_tag::ab);
    const memory::desc weights({64, 64}, type, memory::format_tag::any);
    const memory::desc dst({64, 64}, memory::data_type::f32, memory::format_tag::ab);
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src, weights, dst), Engine());
    return pd.impl_info_str();
  } catch (const dnnl::error&) {
    return "";
  }
}

}  // namespace

const std::string& CpuModelName() {
  static const std::string name = [] {
    std::ifstream cpuinfo("/proc/cpuinfo");
    std::string line;
    while (std::getline(cpuinfo, line)) {
      absl::string_view view(line);
      if (!absl::ConsumePrefix(&view, "model name")) continue;
      const size_t colon = view.find(':');
      if (colon == absl::string_view::npos) continue;
      return std::string(absl::StripAsciiWhitespace(view.substr(colon + 1)));
    }
    return std::string("unknown");
  }();
  return name;
}

const char* CpuIsaName() {
  switch (dnnl::get_effective_cpu_isa()) {
    case cpu_isa::avx512_core_amx:
      return "avx512_core_amx";
    case cpu_isa::avx512_core_bf16:
      return "avx512_core_bf16";
    case cpu_isa::avx512_core_vnni:
      return "avx512_core_vnni";
    case cpu_isa::avx512_core:
      return "avx512_core";
    case cpu_isa::avx2_vnni:
      return "avx2_vnni";
    case cpu_isa::avx2:
      return "avx2";
    default:
      return "other";
  }
}

bool CpuHasAvx2() {
  static const bool has = EffectiveLevel().avx2 && __builtin_cpu_supports("avx2");
  return has;
}

bool CpuHasAvx512() {
  static const bool has = EffectiveLevel().avx512 && __builtin_cpu_supports("avx512f") &&
                          __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  return has;
}

bool CpuHasAvxVnni() {
  // CPUID leaf 7, sub-leaf 1, EAX bit 4 (clang 14's __builtin_cpu_supports has no "avxvnni").
  static const bool has = [] {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (!EffectiveLevel().vnni || !__builtin_cpu_supports("avx2")) return false;
    if (__get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx) == 0) return false;
    return (eax & (1u << 4)) != 0;
  }();
  return has;
}

bool CpuHasAvx512Vnni() {
  static const bool has =
      CpuHasAvx512() && EffectiveLevel().vnni && __builtin_cpu_supports("avx512vnni");
  return has;
}

bool OneDnnHasBF16Matmul() {
  // Only with the bf16 instructions themselves: on plain avx512_core (Skylake-SP, Cascade
  // Lake, Ice Lake) oneDNN 2.6 emulates them, and the paper-shape subnetwork then decoded
  // 0.40x f32's tokens/s at batch 128 (0.58x at batch 8).
  static const bool has = [] {
    const cpu_isa isa = dnnl::get_effective_cpu_isa();
    if (isa != cpu_isa::avx512_core_bf16 && isa != cpu_isa::avx512_core_amx) return false;
    return !ProbeMatmul(dnnl::memory::data_type::bf16).empty();
  }();
  return has;
}

bool OneDnnHasF32Brgemm() {
  static const bool has = ProbeMatmul(dnnl::memory::data_type::f32).starts_with("brg");
  return has;
}

namespace {

// BF16DotToFmaRatio() once per process, where the CPU has the bf16 instructions (oneDNN's
// avx512_core_bf16 or above); nullopt elsewhere.
std::optional<double> BF16DotRatio() {
  static const std::optional<double> ratio = []() -> std::optional<double> {
    const cpu_isa isa = dnnl::get_effective_cpu_isa();
    if (isa != cpu_isa::avx512_core_bf16 && isa != cpu_isa::avx512_core_amx) return std::nullopt;
    return BF16DotToFmaRatio();
  }();
  return ratio;
}

}  // namespace

bool CpuBF16OutrunsF32() {
  static const bool outruns = [] {
    if (!OneDnnHasBF16Matmul()) return false;
    if (dnnl::get_effective_cpu_isa() == cpu_isa::avx512_core_amx) return true;
    // Between the full-rate bf16 dot product (2x) and an FMA's rate (1x), well above what
    // Emerald Rapids measured (0.6x), so that noise cannot flip it.
    const std::optional<double> ratio = BF16DotRatio();
    return ratio.has_value() && *ratio >= 1.5;
  }();
  return outruns;
}

bool OneDnnHasInt8Brgemm() {
  static const bool has = ProbeMatmul(dnnl::memory::data_type::s8).starts_with("brg");
  return has;
}

std::string CpuSummary() {
  const std::optional<double> bf16_dot_rate = BF16DotRatio();
  return absl::StrCat(
      "cpu=\"", CpuModelName(), "\" isa=", CpuIsaName(), " avx512=", CpuHasAvx512() ? "yes" : "no",
      " avx_vnni=", CpuHasAvxVnni() ? "yes" : "no",
      " avx512_vnni=", CpuHasAvx512Vnni() ? "yes" : "no",
      " f32_brgemm=", OneDnnHasF32Brgemm() ? "yes" : "no",
      " bf16_matmul=", OneDnnHasBF16Matmul() ? "yes" : "no",
      bf16_dot_rate.has_value() ? absl::StrFormat(" bf16_dot_rate=%.1fx", *bf16_dot_rate)
                                : std::string(),
      " int8_brgemm=", OneDnnHasInt8Brgemm() ? "yes" : "no");
}

}  // namespace taskmoe::kernels
