// A minimal fiber: a stack of its own and a switch between two saved register sets, so that a
// stretch of control flow can leave the OS thread it runs on and be resumed by another one
// (WorkSharingTeam::RunCarried hands a decoding step's control flow to whichever of its
// threads the OS is running). x86-64 System V only. ThreadSanitizer is told of every switch,
// so that it checks the code on both sides of one as it checks threads; in the other
// sanitizer builds (AddressSanitizer's fake stacks would need annotating too) and elsewhere
// kFibersSupported is false and nothing here may be used.
//
// A switch saves the callee-saved registers, MXCSR and the x87 control word on the current
// stack, stores the stack pointer and loads another: about as cheap as a function call, with
// no system call (glibc's swapcontext saves the signal mask with one, a microsecond a switch).
#ifndef TASKMOE_KERNELS_FIBER_H_
#define TASKMOE_KERNELS_FIBER_H_

#include <cstddef>

#include "absl/status/statusor.h"
#include "util/sanitizer.h"

namespace taskmoe::kernels {

// TASKMOE_FIBERS: defined (to 1) where fibers work; fiber.cc compiles its switch only then.
#if defined(__x86_64__) && defined(__linux__) && \
    (!defined(TASKMOE_SANITIZER_BUILD) || defined(TASKMOE_TSAN_BUILD))
#define TASKMOE_FIBERS 1
inline constexpr bool kFibersSupported = true;
#else
inline constexpr bool kFibersSupported = false;
#endif

// A fiber's stack: reserved with mmap (pages are committed only as they are touched), with an
// inaccessible guard page below it so that an overflow faults instead of corrupting memory.
class FiberStack {
 public:
  static absl::StatusOr<FiberStack> Create(size_t bytes);
  FiberStack(FiberStack&& other) noexcept;
  FiberStack& operator=(FiberStack&& other) noexcept;
  FiberStack(const FiberStack&) = delete;
  FiberStack& operator=(const FiberStack&) = delete;
  ~FiberStack();

  // The stack's highest address (it grows down), 64-byte aligned.
  char* top() const { return top_; }
  // ThreadSanitizer's fiber for the context that runs on this stack (made and destroyed with
  // it), to pass to SwitchContext; null in other builds.
  void* sanitizer_fiber() const { return sanitizer_fiber_; }

 private:
  FiberStack(void* mapping, size_t mapped_bytes, char* top);

  void* mapping_ = nullptr;
  size_t mapped_bytes_ = 0;
  char* top_ = nullptr;
  void* sanitizer_fiber_ = nullptr;
};

// A saved execution context: the stack pointer of a stack whose top holds the registers
// SwitchContext saved.
using FiberContext = void*;

// Prepares `stack` so that the first SwitchContext to the returned context calls
// entry(argument) on it. `entry` must never return: it ends by switching away for good.
FiberContext PrepareFiber(const FiberStack& stack, void (*entry)(void*), void* argument);

// ThreadSanitizer's fiber for the calling thread's own context (null in other builds): what a
// switch back to that thread's context passes to SwitchContext.
void* CallingThreadSanitizerFiber();

// Saves the calling context into *save and resumes `resume`, whose ThreadSanitizer fiber is
// `resume_sanitizer_fiber` (FiberStack::sanitizer_fiber or CallingThreadSanitizerFiber; unused
// in other builds); returns when some thread switches back to *save.
void SwitchContext(FiberContext* save, FiberContext resume, void* resume_sanitizer_fiber);

}  // namespace taskmoe::kernels

#endif  // TASKMOE_KERNELS_FIBER_H_
