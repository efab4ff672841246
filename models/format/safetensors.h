// Reading and writing the safetensors container (docs/model-format.md): an 8-byte
// little-endian header length, a JSON header of {name: {dtype, shape, data_offsets}}, raw
// little-endian row-major data. Files are mapped read-only and validated before any tensor
// is handed out; a bad file is refused with a message naming the tensor, never a crash.
#ifndef TASKMOE_MODELS_FORMAT_SAFETENSORS_H_
#define TASKMOE_MODELS_FORMAT_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/tensor.h"

namespace taskmoe::models {

// Element types the container may hold (we read F32, BF16 and F16; we write F32 and BF16).
enum class StoredDType : uint8_t { kF32, kBF16, kF16 };
const char* StoredDTypeName(StoredDType dtype);  // "F32", "BF16", "F16"
size_t StoredDTypeSize(StoredDType dtype);       // bytes per element

// IEEE 754 binary16 bits -> float, exactly (subnormals, infinities and NaN included).
float HalfToFloat(uint16_t bits);

struct StoredTensorInfo {
  StoredDType dtype = StoredDType::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte offsets into the data section, end exclusive
};

// Always owned by a shared_ptr (the factories make sure): zero-copy tensor views share
// ownership of the file, so the mapping outlives every view of it.
class SafetensorsFile : public std::enable_shared_from_this<SafetensorsFile> {
 public:
  // Maps and validates `path`: header length within the file, header JSON well formed, every
  // entry a known dtype with non-negative shape, offsets inside the data section and equal
  // to shape x dtype size, no two tensors overlapping.
  static absl::StatusOr<std::shared_ptr<const SafetensorsFile>> Open(const std::string& path);
  // The same over bytes in memory (tests, fuzzing); the bytes are copied.
  static absl::StatusOr<std::shared_ptr<const SafetensorsFile>> FromBytes(std::string bytes);

  const std::map<std::string, StoredTensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool Contains(const std::string& name) const { return tensors_.count(name) > 0; }

  // The tensor as f32. F32 data is returned as a view of the mapping when it is 4-byte
  // aligned (kept alive by the returned tensor); BF16/F16 are converted into new storage.
  // NotFound if absent; InvalidArgument if its rank exceeds kernels::Shape::kMaxRank.
  // A view of a mapped file is read-only memory: writing through it faults.
  absl::StatusOr<kernels::Tensor> GetFloat(const std::string& name) const;
  // Raw bytes of a tensor (for byte-identity checks across subnetworks).
  absl::StatusOr<std::string_view> RawBytes(const std::string& name) const;
  // Size of the whole file in bytes.
  size_t file_size() const { return size_; }

  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

 private:
  SafetensorsFile() = default;
  absl::Status Parse();

  const uint8_t* base_ = nullptr;  // start of the mapping (or of owned_bytes_)
  size_t size_ = 0;
  size_t data_start_ = 0;  // 8 + header length
  bool mapped_ = false;    // base_ is an mmap to release in the destructor
  std::string owned_bytes_;
  std::map<std::string, StoredTensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// A tensor to write: f32 values stored as F32 or rounded to BF16.
struct TensorToWrite {
  std::string name;
  std::vector<int64_t> shape;
  const float* data = nullptr;  // shape.numel() values
};

// Writes a safetensors file (tensors sorted by name, header padded with spaces to a multiple
// of 8 bytes). Writes to a temporary file and renames, so readers never see half a file.
absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              StoredDType dtype,
                              const std::map<std::string, std::string>& metadata = {});

// The bytes WriteSafetensors would write, in memory (tests, random models, subnetworks that
// are served without touching the disk).
absl::StatusOr<std::string> SerializeSafetensors(
    const std::vector<TensorToWrite>& tensors, StoredDType dtype,
    const std::map<std::string, std::string>& metadata = {});

}  // namespace taskmoe::models

#endif  // TASKMOE_MODELS_FORMAT_SAFETENSORS_H_
