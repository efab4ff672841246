// Fuzz target: a safetensors blob (docs/model-format.md) through models::SafetensorsFile.
//
// FromBytes parses exactly what Open parses from a mapped file, so the in-memory entry point
// covers the loader's header and bounds checks without touching the disk. Any bytes must be
// refused with a status or accepted; for an accepted file every tensor's raw bytes and f32
// conversion must stay inside the data section (ASan checks each read), and writing the
// tensors back out (SerializeSafetensors) must give a file that reads back with the same
// names, shapes, values and metadata.
// Seeds: fuzz/corpus/safetensors/ (small files written by fuzz/make_seeds.py).
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "fuzz/fuzz_util.h"
#include "kernels/tensor.h"
#include "models/format/safetensors.h"

namespace taskmoe::fuzz {
namespace {

using models::SafetensorsFile;
using models::StoredTensorInfo;

void CheckAccepted(const SafetensorsFile& file, size_t size) {
  TASKMOE_FUZZ_CHECK(file.file_size() == size, absl::StrCat(file.file_size()));
  std::vector<models::TensorToWrite> to_write;
  std::vector<kernels::Tensor> values;  // keeps the data of to_write alive
  values.reserve(file.tensors().size());
  for (const auto& [name, info] : file.tensors()) {
    uint64_t numel = 1;
    for (int64_t d : info.shape) {
      TASKMOE_FUZZ_CHECK(d >= 0, absl::StrCat(name, ": dimension ", d));
      numel *= static_cast<uint64_t>(d);  // the reader checked that this fits
    }
    absl::StatusOr<std::string_view> raw = file.RawBytes(name);
    TASKMOE_FUZZ_CHECK(raw.ok(), std::string(raw.status().message()));
    TASKMOE_FUZZ_CHECK(info.end >= info.begin && raw->size() == info.end - info.begin &&
                           raw->size() == numel * models::StoredDTypeSize(info.dtype),
                       absl::StrCat(name, ": ", raw->size(), " bytes for ", numel, " elements"));
    absl::StatusOr<kernels::Tensor> tensor = file.GetFloat(name);
    if (info.shape.size() > static_cast<size_t>(kernels::Shape::kMaxRank)) {
      TASKMOE_FUZZ_CHECK(!tensor.ok(), absl::StrCat(name, ": rank ", info.shape.size()));
      continue;
    }
    TASKMOE_FUZZ_CHECK(tensor.ok(), std::string(tensor.status().message()));
    TASKMOE_FUZZ_CHECK(static_cast<uint64_t>(tensor->numel()) == numel, name);
    if (numel > 0 && info.dtype == models::StoredDType::kF32) {
      TASKMOE_FUZZ_CHECK(std::memcmp(tensor->raw_data(), raw->data(), raw->size()) == 0, name);
    }
    // Every converted value is read (and so checked by ASan) when the file is written below.
    to_write.push_back(
        {.name = name, .shape = info.shape, .data = numel > 0 ? tensor->data<float>() : nullptr});
    values.push_back(*std::move(tensor));
  }

  absl::StatusOr<std::string> written =
      models::SerializeSafetensors(to_write, models::StoredDType::kF32, file.metadata());
  // The writer refuses some names the reader takes (the empty name); that is not a bug.
  if (!written.ok()) return;
  absl::StatusOr<std::shared_ptr<const SafetensorsFile>> again =
      SafetensorsFile::FromBytes(*written);
  TASKMOE_FUZZ_CHECK(
      again.ok(), absl::StrCat("the written file does not read back: ", again.status().message()));
  TASKMOE_FUZZ_CHECK((*again)->metadata() == file.metadata(), "metadata changed");
  TASKMOE_FUZZ_CHECK((*again)->tensors().size() == to_write.size(), "tensor count changed");
  for (size_t i = 0; i < to_write.size(); ++i) {
    const std::string& name = to_write[i].name;
    auto it = (*again)->tensors().find(name);
    TASKMOE_FUZZ_CHECK(it != (*again)->tensors().end(), absl::StrCat(name, " is missing"));
    TASKMOE_FUZZ_CHECK(it->second.shape == to_write[i].shape, absl::StrCat(name, ": shape"));
    absl::StatusOr<std::string_view> raw = (*again)->RawBytes(name);
    TASKMOE_FUZZ_CHECK(raw.ok() && raw->size() == values[i].bytes(), name);
    TASKMOE_FUZZ_CHECK(
        raw->empty() || std::memcmp(raw->data(), values[i].raw_data(), raw->size()) == 0,
        absl::StrCat(name, ": values changed"));
  }
}

}  // namespace
}  // namespace taskmoe::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::StatusOr<std::shared_ptr<const taskmoe::models::SafetensorsFile>> file =
      taskmoe::models::SafetensorsFile::FromBytes(std::string(taskmoe::fuzz::AsText(data, size)));
  if (!file.ok()) {
    TASKMOE_FUZZ_CHECK(!file.status().message().empty(), "an error without a message");
    return 0;
  }
  taskmoe::fuzz::CheckAccepted(**file, size);
  return 0;
}
