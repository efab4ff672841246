// Content-addressed sharing of packed weights.
#include "models/weight_store.h"

#include <cstring>

#include "absl/hash/hash.h"

namespace taskmoe::models {

namespace {

// A second hash of `bytes`, of another construction than absl's, so that a silent collision of
// both (which would hand one model another's weights) is practically impossible. Eight bytes
// at a time with a multiply and a shift (a byte at a time, FNV-1a, took a third of the
// server's start), in four independent lanes so that no multiply waits for the one before
// (one lane was a fifth of the paper-shape start). The length goes in last.
uint64_t WordHash(std::string_view bytes, uint64_t seed) {
  constexpr uint64_t kMultiplier = 0x9e3779b97f4a7c15ull;
  auto mix = [](uint64_t h, uint64_t word) {
    h = (h ^ word) * kMultiplier;
    return h ^ (h >> 29);
  };
  uint64_t lanes[4] = {seed, seed + 1, seed + 2, seed + 3};
  size_t i = 0;
  for (; i + 32 <= bytes.size(); i += 32) {
    uint64_t words[4];
    std::memcpy(words, bytes.data() + i, sizeof(words));
    for (int lane = 0; lane < 4; ++lane) lanes[lane] = mix(lanes[lane], words[lane]);
  }
  uint64_t h = mix(mix(mix(lanes[0], lanes[1]), lanes[2]), lanes[3]);
  for (; i + 8 <= bytes.size(); i += 8) {
    uint64_t word;
    std::memcpy(&word, bytes.data() + i, 8);
    h = mix(h, word);
  }
  uint64_t tail = 0;
  if (i < bytes.size()) std::memcpy(&tail, bytes.data() + i, bytes.size() - i);
  h = mix(h, tail);
  h = (h ^ bytes.size()) * kMultiplier;
  return h ^ (h >> 32);
}

}  // namespace

WeightStore::Key WeightStore::ContentKey(std::string_view a, std::string_view b, int tag) {
  const uint64_t second = WordHash(b, WordHash(a, 0x243f6a8885a308d3ull));
  const uint64_t h = absl::HashOf(absl::string_view(a.data(), a.size()),
                                  absl::string_view(b.data(), b.size()), tag);
  return {h, second ^ static_cast<uint64_t>(tag)};
}

template <typename T, typename Factory>
absl::StatusOr<WeightStore::Use<T>> WeightStore::GetOrMake(EntryMap<T>& map, const Key& key,
                                                           const Factory& make) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = map.find(key); it != map.end()) return Use<T>{it->second->value, it->second};
  }
  // Made outside the lock: packing a large matrix takes milliseconds.
  absl::StatusOr<std::shared_ptr<const T>> made = make();
  if (!made.ok()) return made.status();
  auto entry = std::make_shared<Entry<T>>();
  entry->value = *std::move(made);
  std::lock_guard<std::mutex> lock(mu_);
  auto [it, inserted] = map.emplace(key, std::move(entry));  // a racing maker may have won
  return Use<T>{it->second->value, it->second};
}

absl::StatusOr<WeightStore::Use<kernels::PackedLinear>> WeightStore::GetLinear(
    std::string_view weight_bytes, std::string_view bias_bytes, kernels::Precision precision,
    const LinearFactory& make) {
  return GetOrMake(linears_, ContentKey(weight_bytes, bias_bytes, static_cast<int>(precision)),
                   [&]() -> absl::StatusOr<std::shared_ptr<const kernels::PackedLinear>> {
                     absl::StatusOr<kernels::PackedLinear> made = make();
                     if (!made.ok()) return made.status();
                     return std::make_shared<const kernels::PackedLinear>(*std::move(made));
                   });
}

absl::StatusOr<WeightStore::Use<kernels::Tensor>> WeightStore::GetTensor(
    std::string_view bytes, const TensorFactory& make) {
  return GetOrMake(tensors_, ContentKey(bytes, {}, -1),
                   [&]() -> absl::StatusOr<std::shared_ptr<const kernels::Tensor>> {
                     absl::StatusOr<kernels::Tensor> made = make();
                     if (!made.ok()) return made.status();
                     return std::make_shared<const kernels::Tensor>(*std::move(made));
                   });
}

absl::StatusOr<WeightStore::Use<SentencePieceModel>> WeightStore::GetSentencePiece(
    std::string_view spm_bytes, const SentencePieceFactory& make) {
  return GetOrMake(sentence_pieces_, ContentKey(spm_bytes, {}, -2),
                   [&]() -> absl::StatusOr<std::shared_ptr<const SentencePieceModel>> {
                     absl::StatusOr<std::unique_ptr<SentencePieceModel>> made = make();
                     if (!made.ok()) return made.status();
                     return std::shared_ptr<const SentencePieceModel>(*std::move(made));
                   });
}

// An entry's handle count is 1 (the store's) plus one per model that uses it.
void WeightStore::Prune() {
  std::lock_guard<std::mutex> lock(mu_);
  std::erase_if(linears_, [](const auto& entry) { return entry.second.use_count() == 1; });
  std::erase_if(tensors_, [](const auto& entry) { return entry.second.use_count() == 1; });
  std::erase_if(sentence_pieces_, [](const auto& entry) { return entry.second.use_count() == 1; });
}

size_t WeightStore::shared_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  size_t bytes = 0;
  for (const auto& [key, entry] : linears_) {
    if (entry.use_count() > 2) bytes += entry->value->memory_bytes();
  }
  for (const auto& [key, entry] : tensors_) {
    if (entry.use_count() > 2) bytes += entry->value->bytes();
  }
  return bytes;
}

size_t WeightStore::total_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  size_t bytes = 0;
  for (const auto& [key, entry] : linears_) bytes += entry->value->memory_bytes();
  for (const auto& [key, entry] : tensors_) bytes += entry->value->bytes();
  return bytes;
}

}  // namespace taskmoe::models
