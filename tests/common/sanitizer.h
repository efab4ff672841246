// Whether this test binary was built with AddressSanitizer or ThreadSanitizer, by gcc (which
// defines __SANITIZE_ADDRESS__ / __SANITIZE_THREAD__) or by clang (which answers
// __has_feature instead). Tests whose subject a sanitizer changes, such as resident memory
// under its own allocator, ask this rather than spelling out both compilers' checks.
#ifndef TASKMOE_TESTS_COMMON_SANITIZER_H_
#define TASKMOE_TESTS_COMMON_SANITIZER_H_

namespace taskmoe::testing {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr bool kUnderSanitizer = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
inline constexpr bool kUnderSanitizer = true;
#else
inline constexpr bool kUnderSanitizer = false;
#endif
#else
inline constexpr bool kUnderSanitizer = false;
#endif

}  // namespace taskmoe::testing

#endif  // TASKMOE_TESTS_COMMON_SANITIZER_H_
