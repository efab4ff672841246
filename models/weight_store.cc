// Content-addressed sharing of packed weights.
#include "models/weight_store.h"

#include "absl/hash/hash.h"

namespace taskmoe::models {

WeightStore::Key WeightStore::ContentKey(std::string_view a, std::string_view b, int tag) {
  // FNV-1a as a second hash, independent of absl's, makes a silent collision (which would
  // hand one model another's weights) practically impossible.
  uint64_t fnv = 1469598103934665603ull;
  for (std::string_view part : {a, b}) {
    for (unsigned char c : part) fnv = (fnv ^ c) * 1099511628211ull;
    fnv = (fnv ^ part.size()) * 1099511628211ull;
  }
  const uint64_t h = absl::HashOf(absl::string_view(a.data(), a.size()),
                                  absl::string_view(b.data(), b.size()), tag);
  return {h, fnv ^ static_cast<uint64_t>(tag)};
}

absl::StatusOr<std::shared_ptr<const kernels::PackedLinear>> WeightStore::GetLinear(
    std::string_view weight_bytes, std::string_view bias_bytes, kernels::Precision precision,
    const LinearFactory& make) {
  const Key key = ContentKey(weight_bytes, bias_bytes, static_cast<int>(precision));
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = linears_.find(key); it != linears_.end()) return it->second;
  }
  // Packed outside the lock: packing a large matrix takes milliseconds.
  absl::StatusOr<kernels::PackedLinear> packed = make();
  if (!packed.ok()) return packed.status();
  auto shared = std::make_shared<const kernels::PackedLinear>(*std::move(packed));
  std::lock_guard<std::mutex> lock(mu_);
  auto [it, inserted] = linears_.emplace(key, shared);
  return it->second;
}

absl::StatusOr<std::shared_ptr<const kernels::Tensor>> WeightStore::GetTensor(
    std::string_view bytes, const TensorFactory& make) {
  const Key key = ContentKey(bytes, {}, -1);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = tensors_.find(key); it != tensors_.end()) return it->second;
  }
  absl::StatusOr<kernels::Tensor> tensor = make();
  if (!tensor.ok()) return tensor.status();
  auto shared = std::make_shared<const kernels::Tensor>(*std::move(tensor));
  std::lock_guard<std::mutex> lock(mu_);
  auto [it, inserted] = tensors_.emplace(key, shared);
  return it->second;
}

void WeightStore::Prune() {
  std::lock_guard<std::mutex> lock(mu_);
  std::erase_if(linears_, [](const auto& entry) { return entry.second.use_count() == 1; });
  std::erase_if(tensors_, [](const auto& entry) { return entry.second.use_count() == 1; });
}

size_t WeightStore::shared_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  size_t bytes = 0;
  for (const auto& [key, linear] : linears_) {
    if (linear.use_count() > 2) bytes += linear->memory_bytes();
  }
  for (const auto& [key, tensor] : tensors_) {
    if (tensor.use_count() > 2) bytes += tensor->bytes();
  }
  return bytes;
}

size_t WeightStore::total_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  size_t bytes = 0;
  for (const auto& [key, linear] : linears_) bytes += linear->memory_bytes();
  for (const auto& [key, tensor] : tensors_) bytes += tensor->bytes();
  return bytes;
}

}  // namespace taskmoe::models
