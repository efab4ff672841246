// Helpers shared by the fuzz targets: invariant checks that abort with a message (libFuzzer
// reports an abort as a crash and keeps the input; the corpus replay test fails), and the demo
// model's files, which the tokenizer and request targets load once.
#ifndef TASKMOE_FUZZ_FUZZ_UTIL_H_
#define TASKMOE_FUZZ_FUZZ_UTIL_H_

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/statusor.h"
#include "models/format/config.h"
#include "models/text/tokenizer.h"
#include "models/text/utf8.h"

namespace taskmoe::fuzz {

[[noreturn]] inline void Fail(const char* file, int line, const char* condition,
                              const std::string& message) {
  std::fprintf(stderr, "%s:%d: fuzz check failed: %s: %s\n", file, line, condition,
               message.c_str());
  std::abort();
}

// Checks `condition`; `message` (a std::string expression) is evaluated only when it fails.
#define TASKMOE_FUZZ_CHECK(condition, message)                                          \
  do {                                                                                  \
    if (!(condition)) ::taskmoe::fuzz::Fail(__FILE__, __LINE__, #condition, (message)); \
  } while (false)

inline std::string_view AsText(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// Whether `text` is well-formed UTF-8, by the models/ definition (what protobuf `string`
// fields need).
inline bool IsValidUtf8(std::string_view text) {
  while (!text.empty()) {
    const int length = models::ValidUtf8CharLength(text);
    if (length == 0) return false;
    text.remove_prefix(static_cast<size_t>(length));
  }
  return true;
}

// The demo model directory (config.json and spm.model are read; model.safetensors is not).
// TASKMOE_DEMO_MODEL_DIR is set by fuzz/CMakeLists.txt to the source tree's copy.
inline std::string DemoModelDir() {
  if (const char* dir = std::getenv("TASKMOE_FUZZ_DEMO_MODEL_DIR"); dir != nullptr && *dir) {
    return dir;
  }
  return TASKMOE_DEMO_MODEL_DIR;
}

// The demo model's config and tokenizer; a target keeps them for the whole process.
struct DemoTokenizer {
  models::ModelConfig config;
  std::shared_ptr<const models::Tokenizer> tokenizer;
};

inline DemoTokenizer LoadDemoTokenizer() {
  const std::string dir = DemoModelDir();
  absl::StatusOr<models::ModelConfig> config = models::LoadModelConfig(dir);
  TASKMOE_FUZZ_CHECK(config.ok(), std::string(config.status().message()));
  absl::StatusOr<std::shared_ptr<const models::Tokenizer>> tokenizer =
      models::Tokenizer::Load(dir + "/spm.model", *config);
  TASKMOE_FUZZ_CHECK(tokenizer.ok(), std::string(tokenizer.status().message()));
  return {*std::move(config), *std::move(tokenizer)};
}

}  // namespace taskmoe::fuzz

#endif  // TASKMOE_FUZZ_FUZZ_UTIL_H_
