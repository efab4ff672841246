// Byte-wise trie over a hash map of edges.
#include "models/text/byte_trie.h"

namespace taskmoe::models {

void ByteTrie::Insert(std::string_view key, int32_t value) {
  int32_t node = kRoot;
  for (char c : key) {
    const uint64_t edge = EdgeKey(node, static_cast<uint8_t>(c));
    auto it = children_.find(edge);
    if (it == children_.end()) {
      const auto child = static_cast<int32_t>(values_.size());
      values_.push_back(kNoValue);
      it = children_.emplace(edge, child).first;
    }
    node = it->second;
  }
  values_[node] = value;
}

size_t ByteTrie::LongestPrefix(std::string_view text, int32_t* value) const {
  size_t longest = 0;
  int32_t node = kRoot;
  for (size_t i = 0; i < text.size(); ++i) {
    node = Child(node, static_cast<uint8_t>(text[i]));
    if (node == kNoNode) break;
    if (values_[node] != kNoValue) {
      longest = i + 1;
      *value = values_[node];
    }
  }
  return longest;
}

}  // namespace taskmoe::models
