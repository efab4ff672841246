// The malloc_trim timer thread.
#include "server/memory_trimmer.h"

#include <malloc.h>

namespace taskmoe::server {

MemoryTrimmer::MemoryTrimmer(absl::Duration interval) {
  if (interval > absl::ZeroDuration()) thread_ = std::thread([this, interval] { Loop(interval); });
}

MemoryTrimmer::~MemoryTrimmer() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  stop_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void MemoryTrimmer::Loop(absl::Duration interval) {
  std::unique_lock<std::mutex> lock(mu_);
  while (
      !stop_.wait_for(lock, absl::ToChronoMicroseconds(interval), [this] { return stopping_; })) {
    lock.unlock();
    malloc_trim(0);
    lock.lock();
  }
}

}  // namespace taskmoe::server
