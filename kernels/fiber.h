// A minimal fiber: a stack of its own and a switch between two saved register sets, so that a
// stretch of control flow can leave the OS thread it runs on and be resumed by another one
// (WorkSharingTeam::RunCarried hands a decoding step's control flow to whichever of its
// threads the OS is running). x86-64 System V only. ThreadSanitizer and AddressSanitizer are
// told of every switch (the context resumed: its ThreadSanitizer fiber, its stack's bounds),
// so that they check the code on both sides of one as they check threads; under other
// sanitizers and elsewhere kFibersSupported is false and nothing here may be used.
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
#if defined(__x86_64__) && defined(__linux__) &&                         \
    (!defined(TASKMOE_SANITIZER_BUILD) || defined(TASKMOE_TSAN_BUILD) || \
     defined(TASKMOE_ASAN_BUILD))
#define TASKMOE_FIBERS 1
inline constexpr bool kFibersSupported = true;
#else
inline constexpr bool kFibersSupported = false;
#endif

// What the sanitizers must be told of an execution context to follow a switch into it:
// ThreadSanitizer's fiber, and the bounds of its stack for AddressSanitizer. Unused outside
// those builds.
struct SanitizerContext {
  void* tsan_fiber = nullptr;
  const void* stack_bottom = nullptr;
  size_t stack_size = 0;
};

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
  // The context that runs on this stack as the sanitizers know it (its ThreadSanitizer fiber
  // is made and destroyed with the stack), for a switch into it.
  SanitizerContext sanitizer_context() const;

 private:
  FiberStack(void* mapping, size_t mapped_bytes, char* bottom, char* top);

  void* mapping_ = nullptr;
  size_t mapped_bytes_ = 0;
  char* bottom_ = nullptr;  // the usable stack's lowest address, above the guard page
  char* top_ = nullptr;
  void* tsan_fiber_ = nullptr;
};

// A saved execution context: the stack pointer of a stack whose top holds the registers
// SwitchContext saved.
using FiberContext = void*;

// Prepares `stack` so that the first SwitchContext to the returned context calls
// entry(argument) on it. `entry` must never return: it ends by switching away for good.
FiberContext PrepareFiber(const FiberStack& stack, void (*entry)(void*), void* argument);

// The calling thread's own context as far as the sanitizers know it before any switch: its
// ThreadSanitizer fiber (the bounds of its stack come from the switch away from it: BeginFiber's
// and SwitchContext's `came_from`).
SanitizerContext CallingThreadSanitizerContext();

// Saves the calling context into *save and resumes `resume`, which the sanitizers know as
// `target`; returns when some thread switches back to *save, and then sets the stack bounds in
// *came_from (unless null) to those of the context that switched back.
void SwitchContext(FiberContext* save, FiberContext resume, const SanitizerContext& target,
                   SanitizerContext* came_from);

// The first call of a fiber's entry, on its own stack: completes the switch into it for the
// sanitizers and sets the stack bounds in *came_from to those of the context that switched in.
void BeginFiber(SanitizerContext* came_from);

// How a fiber that has finished leaves for good: resumes `resume`, known to the sanitizers as
// `target`, and lets them drop the fiber's state. The switch stores the finished context in
// *save, which must not be a local of the fiber.
[[noreturn]] void ExitFiber(FiberContext* save, FiberContext resume,
                            const SanitizerContext& target);

}  // namespace taskmoe::kernels

#endif  // TASKMOE_KERNELS_FIBER_H_
