// FiberStack's mapping, the first frame PrepareFiber lays out, and the switch itself.
#include "kernels/fiber.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"

#ifdef TASKMOE_TSAN_BUILD
#include <sanitizer/tsan_interface.h>
#endif
#ifdef TASKMOE_ASAN_BUILD
#include <sanitizer/common_interface_defs.h>
#endif

#ifdef TASKMOE_FIBERS
// taskmoe_switch_context(save, resume): pushes the callee-saved registers and the floating-point
// control words, stores %rsp in *save, loads `resume` and pops the same set from there.
// taskmoe_fiber_start: where a prepared fiber's first switch returns to; calls r13(r12).
asm(R"(
  .text
  .p2align 4
  .globl taskmoe_switch_context
  .hidden taskmoe_switch_context
  .type taskmoe_switch_context, @function
taskmoe_switch_context:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $16, %rsp
  stmxcsr 8(%rsp)
  fnstcw (%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr 8(%rsp)
  fldcw (%rsp)
  addq $16, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size taskmoe_switch_context, .-taskmoe_switch_context

  .p2align 4
  .globl taskmoe_fiber_start
  .hidden taskmoe_fiber_start
  .type taskmoe_fiber_start, @function
taskmoe_fiber_start:
  movq %r12, %rdi
  callq *%r13
  ud2
  .size taskmoe_fiber_start, .-taskmoe_fiber_start
)");

extern "C" void taskmoe_switch_context(void** save, void* resume);
extern "C" void taskmoe_fiber_start();
#endif

namespace taskmoe::kernels {

absl::StatusOr<FiberStack> FiberStack::Create(size_t bytes) {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const size_t usable = (bytes + page - 1) / page * page;
  const size_t mapped = usable + page;  // the guard page below the stack
  void* mapping = mmap(nullptr, mapped, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
  if (mapping == MAP_FAILED) {
    return absl::ResourceExhaustedError(
        absl::StrCat("fiber stack of ", mapped, " bytes: mmap failed: ", std::strerror(errno)));
  }
  if (mprotect(mapping, page, PROT_NONE) != 0) {
    const int error = errno;
    munmap(mapping, mapped);
    return absl::InternalError(
        absl::StrCat("fiber stack guard page: mprotect failed: ", std::strerror(error)));
  }
  char* top = static_cast<char*>(mapping) + mapped;
  top -= reinterpret_cast<uintptr_t>(top) % 64;
  return FiberStack(mapping, mapped, static_cast<char*>(mapping) + page, top);
}

namespace {

void DestroyTsanFiber(void* fiber) {
#ifdef TASKMOE_TSAN_BUILD
  if (fiber != nullptr) __tsan_destroy_fiber(fiber);
#else
  (void)fiber;
#endif
}

}  // namespace

FiberStack::FiberStack(void* mapping, size_t mapped_bytes, char* bottom, char* top)
    : mapping_(mapping), mapped_bytes_(mapped_bytes), bottom_(bottom), top_(top) {
#ifdef TASKMOE_TSAN_BUILD
  tsan_fiber_ = __tsan_create_fiber(0);
#endif
}

FiberStack::FiberStack(FiberStack&& other) noexcept
    : mapping_(std::exchange(other.mapping_, nullptr)),
      mapped_bytes_(std::exchange(other.mapped_bytes_, 0)),
      bottom_(std::exchange(other.bottom_, nullptr)),
      top_(std::exchange(other.top_, nullptr)),
      tsan_fiber_(std::exchange(other.tsan_fiber_, nullptr)) {}

FiberStack& FiberStack::operator=(FiberStack&& other) noexcept {
  if (this != &other) {
    if (mapping_ != nullptr) munmap(mapping_, mapped_bytes_);
    DestroyTsanFiber(tsan_fiber_);
    mapping_ = std::exchange(other.mapping_, nullptr);
    mapped_bytes_ = std::exchange(other.mapped_bytes_, 0);
    bottom_ = std::exchange(other.bottom_, nullptr);
    top_ = std::exchange(other.top_, nullptr);
    tsan_fiber_ = std::exchange(other.tsan_fiber_, nullptr);
  }
  return *this;
}

FiberStack::~FiberStack() {
  if (mapping_ != nullptr) munmap(mapping_, mapped_bytes_);
  DestroyTsanFiber(tsan_fiber_);
}

SanitizerContext FiberStack::sanitizer_context() const {
  return {.tsan_fiber = tsan_fiber_,
          .stack_bottom = bottom_,
          .stack_size = static_cast<size_t>(top_ - bottom_)};
}

SanitizerContext CallingThreadSanitizerContext() {
#ifdef TASKMOE_TSAN_BUILD
  return {.tsan_fiber = __tsan_get_current_fiber()};
#else
  return {};
#endif
}

#ifdef TASKMOE_FIBERS

FiberContext PrepareFiber(const FiberStack& stack, void (*entry)(void*), void* argument) {
  // The frame taskmoe_switch_context pops, from the lowest address: the x87 control word and
  // MXCSR (16 bytes), r15, r14, r13 (entry), r12 (argument), rbx, rbp, then the address it
  // returns to, taskmoe_fiber_start. Above that the stack is 16-byte aligned, so that the call
  // there enters `entry` as the ABI requires.
  auto* frame = reinterpret_cast<uint64_t*>(stack.top() - 16) - 9;
  uint32_t mxcsr = 0;
  uint16_t x87_control = 0;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(x87_control));
  std::memset(frame, 0, 9 * sizeof(uint64_t));
  std::memcpy(&frame[0], &x87_control, sizeof(x87_control));
  std::memcpy(reinterpret_cast<char*>(&frame[1]), &mxcsr, sizeof(mxcsr));
  frame[4] = reinterpret_cast<uint64_t>(entry);     // r13
  frame[5] = reinterpret_cast<uint64_t>(argument);  // r12
  frame[8] = reinterpret_cast<uint64_t>(&taskmoe_fiber_start);
  return frame;
}

namespace {

// Tells the sanitizers, just before a switch, of the context about to run; AddressSanitizer
// keeps the leaving context's fake stack in *fake_stack (null: the context ends). Always
// inlined: ThreadSanitizer keeps each fiber's calls on its own shadow stack, and a function
// that returned after announcing the switch would pop a frame of the context switched to.
[[gnu::always_inline]] inline void StartSwitch(const SanitizerContext& target, void** fake_stack) {
#ifdef TASKMOE_ASAN_BUILD
  __sanitizer_start_switch_fiber(fake_stack, target.stack_bottom, target.stack_size);
#else
  (void)fake_stack;
#endif
#ifdef TASKMOE_TSAN_BUILD
  // Flags 0: the switch orders what the context left did before it with what the one resumed
  // does after it, as the switch itself does.
  __tsan_switch_to_fiber(target.tsan_fiber, 0);
#else
  (void)target;
#endif
}

// Completes a switch, on the context resumed: its fake stack back, and the stack bounds of the
// context that switched.
void FinishSwitch(void* fake_stack, SanitizerContext* came_from) {
#ifdef TASKMOE_ASAN_BUILD
  const void* bottom = nullptr;
  size_t size = 0;
  __sanitizer_finish_switch_fiber(fake_stack, &bottom, &size);
  if (came_from != nullptr) {
    came_from->stack_bottom = bottom;
    came_from->stack_size = size;
  }
#else
  (void)fake_stack;
  (void)came_from;
#endif
}

}  // namespace

void SwitchContext(FiberContext* save, FiberContext resume, const SanitizerContext& target,
                   SanitizerContext* came_from) {
  void* fake_stack = nullptr;
  StartSwitch(target, &fake_stack);
  taskmoe_switch_context(save, resume);
  FinishSwitch(fake_stack, came_from);
}

void BeginFiber(SanitizerContext* came_from) { FinishSwitch(nullptr, came_from); }

void ExitFiber(FiberContext* save, FiberContext resume, const SanitizerContext& target) {
  // No local from here on: AddressSanitizer may keep the fiber's locals on a fake stack, which
  // the call below drops.
  StartSwitch(target, nullptr);
  taskmoe_switch_context(save, resume);
  __builtin_trap();
}

#else

FiberContext PrepareFiber(const FiberStack&, void (*)(void*), void*) { return nullptr; }
void SwitchContext(FiberContext*, FiberContext, const SanitizerContext&, SanitizerContext*) {
  __builtin_trap();
}
void BeginFiber(SanitizerContext*) { __builtin_trap(); }
void ExitFiber(FiberContext*, FiberContext, const SanitizerContext&) { __builtin_trap(); }

#endif

}  // namespace taskmoe::kernels
