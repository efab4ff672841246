// MemoryTrimmer: it returns freed memory to the system, and stopping it never waits for its
// interval.
#include "server/memory_trimmer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <memory>
#include <vector>

#include "absl/time/clock.h"
#include "util/sanitizer.h"

namespace taskmoe::server {
namespace {

TEST(MemoryTrimmer, StopsAtOnceWhateverItsInterval) {
  const absl::Time start = absl::Now();
  { MemoryTrimmer trimmer(absl::Hours(1)); }
  { MemoryTrimmer off(absl::ZeroDuration()); }
  // Generous: the point is "not an hour".
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
}

// Resident memory of this process, from /proc/self/statm (pages).
int64_t ResidentBytes() {
  std::ifstream statm("/proc/self/statm");
  int64_t size = 0, resident = 0;
  statm >> size >> resident;
  return resident * sysconf(_SC_PAGESIZE);
}

TEST(MemoryTrimmer, GivesFreedArenaMemoryBack) {
#ifdef TASKMOE_SANITIZER_BUILD
  GTEST_SKIP() << "sanitizers replace malloc; malloc_trim acts on glibc's heap only";
#endif
  // 64 MiB of small blocks (below the mmap threshold, so they live in the heap), written so
  // they are resident, then all freed but the last, which pins the top of the heap: malloc
  // keeps the freed pages until trimmed.
  std::vector<std::unique_ptr<char[]>> blocks;
  for (int i = 0; i < 4096; ++i) {
    blocks.push_back(std::make_unique<char[]>(16 << 10));
    std::memset(blocks.back().get(), 1, 16 << 10);
  }
  for (size_t i = 0; i + 1 < blocks.size(); ++i) blocks[i].reset();
  const int64_t before = ResidentBytes();
  {
    MemoryTrimmer trimmer(absl::Milliseconds(10));
    absl::SleepFor(absl::Milliseconds(300));
  }
  const int64_t after = ResidentBytes();
  EXPECT_GT(before - after, int64_t{32} << 20)
      << "resident " << (before >> 20) << " MiB before, " << (after >> 20) << " MiB after";
}

}  // namespace
}  // namespace taskmoe::server
