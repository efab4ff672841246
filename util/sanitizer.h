// TASKMOE_SANITIZER_BUILD: defined (to 1) when this translation unit is compiled with
// AddressSanitizer, ThreadSanitizer or MemorySanitizer, by gcc (which defines
// __SANITIZE_ADDRESS__ / __SANITIZE_THREAD__) or by clang (which answers __has_feature
// instead). For code whose behaviour a sanitizer changes: kernels/cpu_dispatch.h drops its
// ifunc clones, and tests of resident memory allow for the sanitizer's own allocator. Header
// only; includes nothing, so every layer may use it.
#ifndef TASKMOE_UTIL_SANITIZER_H_
#define TASKMOE_UTIL_SANITIZER_H_

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define TASKMOE_SANITIZER_BUILD 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
#define TASKMOE_SANITIZER_BUILD 1
#endif
#endif

// TASKMOE_TSAN_BUILD and TASKMOE_ASAN_BUILD: defined (to 1) under ThreadSanitizer or
// AddressSanitizer, which follow fibers when told of each switch (kernels/fiber.cc does).
#if defined(__SANITIZE_THREAD__)
#define TASKMOE_TSAN_BUILD 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TASKMOE_TSAN_BUILD 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define TASKMOE_ASAN_BUILD 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TASKMOE_ASAN_BUILD 1
#endif
#endif

#endif  // TASKMOE_UTIL_SANITIZER_H_
