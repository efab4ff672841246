// The engine's compute settings and facts as the layers above models/ (the server, the tools)
// see them: the precision linear layers run in, how this CPU computes them, and the compute
// threads. They are the kernels' own (kernels/precision.h, runtime.h, cpu_features.h,
// cpu_budget.h), named here so that callers go through models/ and never include kernels/.
#ifndef TASKMOE_MODELS_COMPUTE_H_
#define TASKMOE_MODELS_COMPUTE_H_

#include <string>

#include "absl/status/status.h"
#include "kernels/precision.h"

namespace taskmoe::models {

using kernels::MatmulPath;
using kernels::MatmulPathName;
using kernels::ParsePrecision;
using kernels::Precision;
using kernels::PrecisionName;

// The path linear layers of `precision` take on this CPU unless a task says otherwise.
MatmulPath DefaultMatmulPath(Precision precision);

// One line on this CPU and the engine's choices on it, for the start-up log.
std::string CpuSummary();
const std::string& CpuModelName();
// The best instruction set the engine uses here ("avx512_core_bf16", "avx2", ...).
const char* CpuIsaName();

// Threads each decode computes with (oneDNN and the engine's own loops).
absl::Status SetComputeThreads(int threads);
int ComputeThreads();
// Where the default number of compute threads comes from (cgroup quota, affinity), in words.
std::string DescribeComputeThreadBudget();

}  // namespace taskmoe::models

#endif  // TASKMOE_MODELS_COMPUTE_H_
