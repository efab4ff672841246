// WeightStore: keeps packed weights that are byte-identical across models once in memory.
// The subnetworks extracted from one TaskMoE share their embeddings, attention and dense
// layers; loading N tasks through one store costs those once plus each task's own experts.
// Their SentencePiece vocabulary, the same file in every task, is kept once in the same way.
// Identity is by content (two independent 64-bit hashes of the stored bytes, shape and
// precision), so it needs no naming convention and survives re-extraction.
#ifndef TASKMOE_MODELS_WEIGHT_STORE_H_
#define TASKMOE_MODELS_WEIGHT_STORE_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string_view>
#include <utility>

#include "absl/status/statusor.h"
#include "kernels/matmul.h"
#include "kernels/tensor.h"
#include "models/text/sentencepiece_model.h"

namespace taskmoe::models {

class WeightStore {
 public:
  using LinearFactory = std::function<absl::StatusOr<kernels::PackedLinear>()>;
  using TensorFactory = std::function<absl::StatusOr<kernels::Tensor>()>;
  using SentencePieceFactory = std::function<absl::StatusOr<std::unique_ptr<SentencePieceModel>>()>;

  // A stored weight, and the handle by which a model declares that it uses it. A model keeps
  // one handle per distinct entry for as long as it lives (however many of its layers hold
  // the value): the store counts models by handles, never references to the value.
  template <typename T>
  struct Use {
    std::shared_ptr<const T> value;
    std::shared_ptr<const void> handle;
  };

  // The linear stored under this content, or make() packed and remembered. `content` is the
  // raw stored bytes of the weight and bias (and anything else that defines the result).
  absl::StatusOr<Use<kernels::PackedLinear>> GetLinear(std::string_view weight_bytes,
                                                       std::string_view bias_bytes,
                                                       kernels::Precision precision,
                                                       const LinearFactory& make);
  absl::StatusOr<Use<kernels::Tensor>> GetTensor(std::string_view bytes, const TensorFactory& make);
  // The SentencePiece model read from these spm.model bytes, or make()'s.
  absl::StatusOr<Use<SentencePieceModel>> GetSentencePiece(std::string_view spm_bytes,
                                                           const SentencePieceFactory& make);

  // Drops entries no model uses any more (call after unloading a model).
  void Prune();
  // Bytes held by entries that more than one model uses, and by all entries.
  size_t shared_bytes() const;
  size_t total_bytes() const;

 private:
  using Key = std::pair<uint64_t, uint64_t>;
  static Key ContentKey(std::string_view a, std::string_view b, int tag);

  // Held by the store and, through Use::handle, once by every model that uses the entry.
  template <typename T>
  struct Entry {
    std::shared_ptr<const T> value;
  };
  template <typename T>
  using EntryMap = std::map<Key, std::shared_ptr<Entry<T>>>;
  // make() returns absl::StatusOr<std::shared_ptr<const T>>.
  template <typename T, typename Factory>
  absl::StatusOr<Use<T>> GetOrMake(EntryMap<T>& map, const Key& key, const Factory& make);

  mutable std::mutex mu_;
  EntryMap<kernels::PackedLinear> linears_;
  EntryMap<kernels::Tensor> tensors_;
  EntryMap<SentencePieceModel> sentence_pieces_;
};

}  // namespace taskmoe::models

#endif  // TASKMOE_MODELS_WEIGHT_STORE_H_
