// The malloc replacement behind counting_malloc.h: each function counts, then forwards to
// glibc's own allocator through its exported __libc_* entry points.
#include "tests/models/counting_malloc.h"

#include <execinfo.h>
#include <link.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"

extern "C" {
void* __libc_malloc(size_t size);
void* __libc_calloc(size_t count, size_t size);
void* __libc_realloc(void* p, size_t size);
void* __libc_memalign(size_t alignment, size_t size);
void __libc_free(void* p);
}

namespace {

std::atomic<int64_t> total{0}, attributed{0}, live{0};

// Address ranges of the attributed library's loaded segments (set once, then read-only).
constexpr int kMaxRanges = 8;
struct Range {
  uintptr_t begin, end;
};
Range ranges[kMaxRanges];
std::atomic<int> range_count{0};

// Set while this thread walks its stack: the unwinder may allocate, and those allocations
// must neither recurse nor be walked again.
thread_local bool walking = false;

// TASKMOE_TRACE_ALLOCATIONS=1 prints the stack of every unattributed allocation once
// attribution is on: how to find what a failing no-allocation test caught.
bool trace_unattributed = false;

bool InAttributedLibrary(uintptr_t address) {
  const int n = range_count.load(std::memory_order_acquire);
  for (int i = 0; i < n; ++i) {
    if (address >= ranges[i].begin && address < ranges[i].end) return true;
  }
  return false;
}

void Count() {
  total.fetch_add(1, std::memory_order_relaxed);
  live.fetch_add(1, std::memory_order_relaxed);
  if (range_count.load(std::memory_order_acquire) == 0 || walking) return;
  walking = true;
  void* frames[48];
  const int depth = backtrace(frames, 48);
  bool found = false;
  for (int i = 0; i < depth && !found; ++i) {
    found = InAttributedLibrary(reinterpret_cast<uintptr_t>(frames[i]));
  }
  if (found) {
    attributed.fetch_add(1, std::memory_order_relaxed);
  } else if (trace_unattributed) {
    // backtrace_symbols_fd writes straight to the descriptor, without allocating.
    backtrace_symbols_fd(frames, depth, STDERR_FILENO);
    constexpr char kSeparator[] = "----\n";
    (void)!write(STDERR_FILENO, kSeparator, sizeof(kSeparator) - 1);
  }
  walking = false;
}

void Uncount(void* p) {
  if (p != nullptr) live.fetch_sub(1, std::memory_order_relaxed);
}

struct Search {
  const char* library;
  int found = 0;
};

int CollectRanges(dl_phdr_info* info, size_t, void* data) {
  auto* search = static_cast<Search*>(data);
  if (info->dlpi_name == nullptr || std::strstr(info->dlpi_name, search->library) == nullptr) {
    return 0;
  }
  for (int i = 0; i < info->dlpi_phnum && search->found < kMaxRanges; ++i) {
    const ElfW(Phdr)& segment = info->dlpi_phdr[i];
    if (segment.p_type != PT_LOAD || (segment.p_flags & PF_X) == 0) continue;
    const uintptr_t begin = info->dlpi_addr + segment.p_vaddr;
    ranges[search->found++] = {begin, begin + segment.p_memsz};
  }
  return 0;
}

}  // namespace

namespace taskmoe::testing {

AllocationCounts CurrentAllocationCounts() {
  return {total.load(std::memory_order_relaxed), attributed.load(std::memory_order_relaxed),
          live.load(std::memory_order_relaxed)};
}

absl::Status AttributeAllocationsTo(const char* library) {
  // The first backtrace() loads the unwinder; do it before any allocation is walked.
  void* frames[4];
  backtrace(frames, 4);
  Search search{library};
  dl_iterate_phdr(CollectRanges, &search);
  if (search.found == 0) {
    return absl::NotFoundError(absl::StrCat("no loaded library matches '", library, "'"));
  }
  const char* trace = std::getenv("TASKMOE_TRACE_ALLOCATIONS");
  trace_unattributed = trace != nullptr && std::strcmp(trace, "1") == 0;
  range_count.store(search.found, std::memory_order_release);
  return absl::OkStatus();
}

}  // namespace taskmoe::testing

extern "C" {

void* malloc(size_t size) {
  Count();
  return __libc_malloc(size);
}

void* calloc(size_t count, size_t size) {
  Count();
  return __libc_calloc(count, size);
}

void* realloc(void* p, size_t size) {
  // A reallocation frees the old block (when there is one) and makes a new one.
  Uncount(p);
  Count();
  return __libc_realloc(p, size);
}

void free(void* p) {
  Uncount(p);
  __libc_free(p);
}

void* memalign(size_t alignment, size_t size) {
  Count();
  return __libc_memalign(alignment, size);
}

void* aligned_alloc(size_t alignment, size_t size) {
  Count();
  return __libc_memalign(alignment, size);
}

int posix_memalign(void** out, size_t alignment, size_t size) {
  if (alignment % sizeof(void*) != 0 || (alignment & (alignment - 1)) != 0) return EINVAL;
  Count();
  void* p = __libc_memalign(alignment, size);
  if (p == nullptr) return ENOMEM;
  *out = p;
  return 0;
}

void* valloc(size_t size) {
  Count();
  return __libc_memalign(static_cast<size_t>(sysconf(_SC_PAGESIZE)), size);
}

}  // extern "C"
