// A byte-wise trie from strings to ids, walked one byte at a time: the vocabulary lookup of
// the unigram tokenizer (every piece that starts at a position) and the user-defined symbol
// matcher of the normaliser.
#ifndef TASKMOE_MODELS_TEXT_BYTE_TRIE_H_
#define TASKMOE_MODELS_TEXT_BYTE_TRIE_H_

#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"

namespace taskmoe::models {

class ByteTrie {
 public:
  static constexpr int32_t kRoot = 0;
  static constexpr int32_t kNoNode = -1;

  ByteTrie() : values_(1, kNoValue) {}

  // Maps `key` (non-empty) to `value` (>= 0); a later insert of the same key wins.
  void Insert(std::string_view key, int32_t value);
  // The child of `node` along `byte`, or kNoNode.
  int32_t Child(int32_t node, uint8_t byte) const {
    auto it = children_.find(EdgeKey(node, byte));
    return it == children_.end() ? kNoNode : it->second;
  }
  // The value stored at `node`, or -1 if no key ends there.
  int32_t Value(int32_t node) const { return values_[node]; }
  // Length of the longest key that is a prefix of `text` (0 if none); its value in *value.
  size_t LongestPrefix(std::string_view text, int32_t* value) const;
  bool empty() const { return values_.size() == 1; }

 private:
  static constexpr int32_t kNoValue = -1;
  static uint64_t EdgeKey(int32_t node, uint8_t byte) {
    return (static_cast<uint64_t>(node) << 8) | byte;
  }

  absl::flat_hash_map<uint64_t, int32_t> children_;
  std::vector<int32_t> values_;  // per node
};

}  // namespace taskmoe::models

#endif  // TASKMOE_MODELS_TEXT_BYTE_TRIE_H_
