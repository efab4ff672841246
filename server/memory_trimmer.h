// MemoryTrimmer: gives memory the allocator keeps but no longer uses back to the system, on a
// timer. Decoding allocates and frees tensors of many sizes on every batch, from many threads;
// glibc's malloc keeps freed chunks in its arenas, and under mixed load the server's resident
// memory grew by 45 MiB a minute with the live heap flat (tools/soak.py, docs/reliability.md).
// malloc_trim() off the hot path returns those pages; a fixed mmap threshold would too, but
// halves decoding throughput.
#ifndef TASKMOE_SERVER_MEMORY_TRIMMER_H_
#define TASKMOE_SERVER_MEMORY_TRIMMER_H_

#include <condition_variable>
#include <mutex>
#include <thread>

#include "absl/time/time.h"

namespace taskmoe::server {

class MemoryTrimmer {
 public:
  // Trims every `interval`; a zero interval starts nothing.
  explicit MemoryTrimmer(absl::Duration interval);
  ~MemoryTrimmer();  // stops the thread
  MemoryTrimmer(const MemoryTrimmer&) = delete;
  MemoryTrimmer& operator=(const MemoryTrimmer&) = delete;

 private:
  void Loop(absl::Duration interval);

  std::mutex mu_;
  std::condition_variable stop_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace taskmoe::server

#endif  // TASKMOE_SERVER_MEMORY_TRIMMER_H_
