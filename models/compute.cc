// The kernels' compute settings, forwarded.
#include "models/compute.h"

#include "kernels/cpu_budget.h"
#include "kernels/cpu_features.h"
#include "kernels/matmul.h"
#include "kernels/runtime.h"

namespace taskmoe::models {

MatmulPath DefaultMatmulPath(Precision precision) { return kernels::DefaultMatmulPath(precision); }
std::string CpuSummary() { return kernels::CpuSummary(); }
const std::string& CpuModelName() { return kernels::CpuModelName(); }
const char* CpuIsaName() { return kernels::CpuIsaName(); }
absl::Status SetComputeThreads(int threads) { return kernels::SetNumThreads(threads); }
int ComputeThreads() { return kernels::NumThreads(); }
std::string DescribeComputeThreadBudget() { return kernels::DescribeComputeThreadBudget(); }

}  // namespace taskmoe::models
