// The safetensors container: mapping and validating a file, converting tensors to f32,
// writing files atomically, and SHA-256 digests of files.
#include "models/format/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <optional>
#include <set>
#include <tuple>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/dtype.h"
#include "nlohmann/json.hpp"
#include "util/scoped_fd.h"

namespace taskmoe::models {

using util::ScopedFd;
namespace {

// The file stores little-endian data and we copy it as is.
static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian");

using HeaderJson = nlohmann::json;

constexpr size_t kLengthPrefixBytes = 8;
// Real headers are a few hundred kilobytes even for thousands of tensors; the reference
// implementation refuses more than 100 MB too, which bounds what a corrupt length can make
// us parse.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
// A valid header nests three levels ({name: {shape: [...]}}); deeper JSON is refused before
// it costs anything.
constexpr int kMaxHeaderDepth = 8;
constexpr char kMetadataKey[] = "__metadata__";
// Read and conversion chunk sizes: large enough to amortise system calls, small enough to
// stay in cache.
constexpr size_t kIoChunkBytes = 1 << 20;
constexpr size_t kConvertChunkElements = 1 << 16;

absl::Status FormatError(const std::string& message) { return absl::InvalidArgumentError(message); }

absl::Status TensorError(const std::string& name, const std::string& problem) {
  return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "': ", problem));
}

absl::Status ErrnoError(int error_number, const std::string& what) {
  return absl::ErrnoToStatus(error_number, what);
}

std::string DescribeHeaderValue(const HeaderJson& v) {
  if (v.is_structured()) return v.type_name();
  std::string text = v.dump(-1, ' ', false, HeaderJson::error_handler_t::replace);
  if (text.size() > 40) text = absl::StrCat(text.substr(0, 40), "...");
  return text;
}

uint64_t ReadLittleEndian64(const uint8_t* p) {
  uint64_t value;
  std::memcpy(&value, p, sizeof(value));
  return value;
}

// A non-negative JSON integer, or nullopt.
std::optional<uint64_t> AsUnsigned(const HeaderJson& v) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer() && v.get<int64_t>() >= 0)
    return static_cast<uint64_t>(v.get<int64_t>());
  return std::nullopt;
}

absl::StatusOr<StoredDType> ParseDType(const std::string& name) {
  if (name == "F32") return StoredDType::kF32;
  if (name == "BF16") return StoredDType::kBF16;
  if (name == "F16") return StoredDType::kF16;
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported dtype '", name, "' (only F32, BF16 and F16 are read)"));
}

// Validates one header entry against a data section of `data_size` bytes.
absl::StatusOr<StoredTensorInfo> ParseEntry(const std::string& name, const HeaderJson& entry,
                                            uint64_t data_size) {
  if (!entry.is_object()) {
    return TensorError(name, absl::StrCat("entry is a ", entry.type_name(), ", not an object"));
  }
  StoredTensorInfo info;
  auto dtype_it = entry.find("dtype");
  if (dtype_it == entry.end()) return TensorError(name, "entry has no dtype");
  if (!dtype_it->is_string()) {
    return TensorError(name,
                       absl::StrCat("dtype is ", DescribeHeaderValue(*dtype_it), ", not a string"));
  }
  absl::StatusOr<StoredDType> dtype = ParseDType(dtype_it->get<std::string>());
  if (!dtype.ok()) return TensorError(name, std::string(dtype.status().message()));
  info.dtype = *dtype;

  auto shape_it = entry.find("shape");
  if (shape_it == entry.end()) return TensorError(name, "entry has no shape");
  if (!shape_it->is_array()) {
    return TensorError(name,
                       absl::StrCat("shape is ", DescribeHeaderValue(*shape_it), ", not an array"));
  }
  // numel is 0 when any dimension is; otherwise the product of the dimensions must fit in
  // int64 (checked over the non-zero ones, so that every partial product downstream fits).
  uint64_t nonzero_product = 1;
  bool has_zero = false;
  for (const HeaderJson& dim : *shape_it) {
    const std::optional<uint64_t> d = AsUnsigned(dim);
    if (!d.has_value() || *d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return TensorError(name, absl::StrCat("shape entry ", DescribeHeaderValue(dim),
                                            " is not a non-negative integer"));
    }
    info.shape.push_back(static_cast<int64_t>(*d));
    if (*d == 0) {
      has_zero = true;
    } else if (__builtin_mul_overflow(nonzero_product, *d, &nonzero_product) ||
               nonzero_product > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return TensorError(name, "shape has more elements than fit in 64 bits");
    }
  }
  const uint64_t numel = has_zero ? 0 : nonzero_product;
  uint64_t bytes = 0;
  if (__builtin_mul_overflow(numel, static_cast<uint64_t>(StoredDTypeSize(info.dtype)), &bytes)) {
    return TensorError(name, "shape has more bytes than fit in 64 bits");
  }

  auto offsets_it = entry.find("data_offsets");
  if (offsets_it == entry.end()) return TensorError(name, "entry has no data_offsets");
  if (!offsets_it->is_array() || offsets_it->size() != 2) {
    return TensorError(name, absl::StrCat("data_offsets is ", DescribeHeaderValue(*offsets_it),
                                          ", not [begin, end]"));
  }
  const std::optional<uint64_t> begin = AsUnsigned((*offsets_it)[0]);
  const std::optional<uint64_t> end = AsUnsigned((*offsets_it)[1]);
  if (!begin.has_value() || !end.has_value()) {
    return TensorError(name, "data_offsets must be two non-negative integers");
  }
  if (*begin > *end || *end > data_size) {
    return TensorError(name,
                       absl::StrCat("data_offsets [", *begin, ", ", *end,
                                    ") are outside the data section of ", data_size, " bytes"));
  }
  if (*end - *begin != bytes) {
    return TensorError(name, absl::StrCat("data_offsets span ", *end - *begin, " bytes but shape ",
                                          shape_it->dump(), " of ", StoredDTypeName(info.dtype),
                                          " needs ", bytes));
  }
  info.begin = *begin;
  info.end = *end;
  return info;
}

absl::Status WriteAll(int fd, const void* data, size_t size, const std::string& path) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (size > 0) {
    const ssize_t n = write(fd, p, std::min(size, kIoChunkBytes));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(errno, absl::StrCat(path, ": write failed"));
    }
    p += n;
    size -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

// What a writer emits: the padded header text and the tensors in file order.
struct WritePlan {
  std::string header;
  std::vector<const TensorToWrite*> order;  // by name
  std::vector<uint64_t> numels;             // of `order`
  uint64_t data_bytes = 0;
};

absl::StatusOr<WritePlan> PlanWrite(const std::vector<TensorToWrite>& tensors, StoredDType dtype,
                                    const std::map<std::string, std::string>& metadata) {
  if (dtype == StoredDType::kF16) {
    return absl::InvalidArgumentError("writing F16 is not supported (use F32 or BF16)");
  }
  const uint64_t item_size = StoredDTypeSize(dtype);
  WritePlan plan;
  // Tensors in name order; one dtype per file keeps each tensor aligned to its element size
  // once the data section starts 8-byte aligned.
  for (const TensorToWrite& t : tensors) plan.order.push_back(&t);
  std::sort(plan.order.begin(), plan.order.end(),
            [](const TensorToWrite* a, const TensorToWrite* b) { return a->name < b->name; });

  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header[kMetadataKey] = metadata;
  uint64_t offset = 0;
  for (size_t i = 0; i < plan.order.size(); ++i) {
    const TensorToWrite& t = *plan.order[i];
    if (t.name.empty() || t.name == kMetadataKey) {
      return absl::InvalidArgumentError(absl::StrCat("invalid tensor name '", t.name, "'"));
    }
    if (i > 0 && t.name == plan.order[i - 1]->name) {
      return TensorError(t.name, "is given twice");
    }
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      if (d < 0 || __builtin_mul_overflow(numel, static_cast<uint64_t>(d), &numel)) {
        return TensorError(t.name, "has an invalid shape");
      }
    }
    if (numel > 0 && t.data == nullptr) return TensorError(t.name, "has no data");
    uint64_t end = 0;
    if (__builtin_mul_overflow(numel, item_size, &end) ||
        __builtin_add_overflow(offset, end, &end)) {
      return TensorError(t.name, "is too large");
    }
    header[t.name] = {
        {"dtype", StoredDTypeName(dtype)}, {"shape", t.shape}, {"data_offsets", {offset, end}}};
    plan.numels.push_back(numel);
    offset = end;
  }
  plan.data_bytes = offset;
  try {
    plan.header = header.dump();  // throws on names that are not UTF-8
  } catch (const nlohmann::ordered_json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("cannot encode the header: ", e.what()));
  }
  plan.header.append((8 - plan.header.size() % 8) % 8, ' ');
  return plan;
}

// Emits the file's bytes in order through `sink(const void*, size_t) -> absl::Status`.
template <typename Sink>
absl::Status EmitFile(const WritePlan& plan, StoredDType dtype, Sink&& sink) {
  const uint64_t length = plan.header.size();
  if (absl::Status s = sink(&length, sizeof(length)); !s.ok()) return s;
  if (absl::Status s = sink(plan.header.data(), plan.header.size()); !s.ok()) return s;
  std::vector<uint16_t> converted;
  for (size_t i = 0; i < plan.order.size(); ++i) {
    const float* data = plan.order[i]->data;
    const uint64_t numel = plan.numels[i];
    if (dtype == StoredDType::kF32) {
      if (absl::Status s = sink(data, numel * sizeof(float)); !s.ok()) return s;
      continue;
    }
    for (uint64_t start = 0; start < numel; start += kConvertChunkElements) {
      const size_t count =
          static_cast<size_t>(std::min<uint64_t>(kConvertChunkElements, numel - start));
      converted.resize(count);
      for (size_t j = 0; j < count; ++j) {
        converted[j] = kernels::FloatToBFloat16(data[start + j]).bits;
      }
      if (absl::Status s = sink(converted.data(), count * sizeof(uint16_t)); !s.ok()) return s;
    }
  }
  return absl::OkStatus();
}

}  // namespace

const char* StoredDTypeName(StoredDType dtype) {
  switch (dtype) {
    case StoredDType::kF32:
      return "F32";
    case StoredDType::kBF16:
      return "BF16";
    case StoredDType::kF16:
      return "F16";
  }
  return "?";
}

size_t StoredDTypeSize(StoredDType dtype) { return dtype == StoredDType::kF32 ? 4 : 2; }

float HalfToFloat(uint16_t bits) {
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
  const uint32_t exponent = (bits >> 10) & 0x1fu;
  uint32_t mantissa = bits & 0x3ffu;
  uint32_t out;
  if (exponent == 0x1f) {
    // Infinity or NaN: keep the payload, shifted to the top of the f32 mantissa.
    out = sign | 0x7f800000u | (mantissa << 13);
  } else if (exponent != 0) {
    out = sign | ((exponent + (127 - 15)) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    out = sign;  // signed zero
  } else {
    // Subnormal: value = mantissa * 2^-24. Normalise it; every half subnormal is an f32 normal.
    int e = -1;
    do {
      ++e;
      mantissa <<= 1;
    } while ((mantissa & 0x400u) == 0);
    out = sign | (static_cast<uint32_t>(127 - 15 - e) << 23) | ((mantissa & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &out, sizeof(f));
  return f;
}

SafetensorsFile::~SafetensorsFile() {
  if (mapped_) munmap(const_cast<uint8_t*>(base_), size_);
}

absl::StatusOr<std::shared_ptr<const SafetensorsFile>> SafetensorsFile::Open(
    const std::string& path) {
  ScopedFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return ErrnoError(errno, absl::StrCat(path, ": cannot open"));
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return ErrnoError(errno, absl::StrCat(path, ": cannot stat"));
  if (!S_ISREG(st.st_mode)) return FormatError(absl::StrCat(path, ": not a regular file"));
  const size_t size = static_cast<size_t>(st.st_size);
  if (size < kLengthPrefixBytes) {
    return FormatError(absl::StrCat(path, ": ", size,
                                    " bytes, shorter than the 8-byte header "
                                    "length of a safetensors file"));
  }
  // The constructor is private, so make_shared cannot reach it; ownership is immediate.
  std::shared_ptr<SafetensorsFile> file(new SafetensorsFile());
  // Read-only and private: the file is never modified through us. The descriptor may be
  // closed once mapped. (Truncating a mapped file makes later reads fault; writers replace
  // files by rename, which leaves this mapping intact.)
  void* base = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd.get(), 0);
  if (base == MAP_FAILED) return ErrnoError(errno, absl::StrCat(path, ": mmap failed"));
  file->base_ = static_cast<const uint8_t*>(base);
  file->size_ = size;
  file->mapped_ = true;
  if (absl::Status s = file->Parse(); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat(path, ": ", std::string(s.message())));
  }
  return std::shared_ptr<const SafetensorsFile>(std::move(file));
}

absl::StatusOr<std::shared_ptr<const SafetensorsFile>> SafetensorsFile::FromBytes(
    std::string bytes) {
  std::shared_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->owned_bytes_ = std::move(bytes);
  file->base_ = reinterpret_cast<const uint8_t*>(file->owned_bytes_.data());
  file->size_ = file->owned_bytes_.size();
  if (absl::Status s = file->Parse(); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("safetensors: ", std::string(s.message())));
  }
  return std::shared_ptr<const SafetensorsFile>(std::move(file));
}

absl::Status SafetensorsFile::Parse() {
  if (size_ < kLengthPrefixBytes) {
    return FormatError(absl::StrCat(size_, " bytes, shorter than the 8-byte header length"));
  }
  const uint64_t header_bytes = ReadLittleEndian64(base_);
  if (header_bytes > size_ - kLengthPrefixBytes) {
    return FormatError(absl::StrCat("header length ", header_bytes, " runs past the end of the ",
                                    size_, "-byte file"));
  }
  if (header_bytes > kMaxHeaderBytes) {
    return FormatError(
        absl::StrCat("header length ", header_bytes, " exceeds the limit of ", kMaxHeaderBytes));
  }
  data_start_ = kLengthPrefixBytes + static_cast<size_t>(header_bytes);
  const uint64_t data_size = size_ - data_start_;

  // The callback sees every key of the top-level object (depth 1) before duplicates collapse
  // into one, and bounds the nesting.
  const char* header_begin = reinterpret_cast<const char*>(base_) + kLengthPrefixBytes;
  std::set<std::string> names;
  std::string duplicate;
  bool too_deep = false;
  HeaderJson header;
  try {
    header = HeaderJson::parse(header_begin, header_begin + header_bytes,
                               [&](int depth, HeaderJson::parse_event_t event, HeaderJson& parsed) {
                                 if (depth > kMaxHeaderDepth) too_deep = true;
                                 if (depth == 1 && event == HeaderJson::parse_event_t::key &&
                                     !names.insert(parsed.get<std::string>()).second &&
                                     duplicate.empty()) {
                                   duplicate = parsed.get<std::string>();
                                 }
                                 return true;
                               });
  } catch (const HeaderJson::exception& e) {
    return FormatError(absl::StrCat("header is not valid JSON: ", e.what()));
  }
  if (too_deep) return FormatError("header JSON nests too deeply");
  if (!header.is_object()) {
    return FormatError(absl::StrCat("header is a JSON ", header.type_name(), ", not an object"));
  }
  if (!duplicate.empty()) return TensorError(duplicate, "appears twice in the header");

  for (const auto& [name, entry] : header.items()) {
    if (name == kMetadataKey) {
      if (!entry.is_object()) {
        return FormatError(
            absl::StrCat("__metadata__ is a JSON ", entry.type_name(), ", not an object"));
      }
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string()) {
          return FormatError(absl::StrCat("__metadata__ value of '", key, "' is ",
                                          DescribeHeaderValue(value), ", not a string"));
        }
        metadata_[key] = value.get<std::string>();
      }
      continue;
    }
    absl::StatusOr<StoredTensorInfo> info = ParseEntry(name, entry, data_size);
    if (!info.ok()) return info.status();
    tensors_.emplace(name, *std::move(info));
  }

  // Sorted by begin, two non-empty ranges overlap iff some adjacent pair does.
  std::vector<std::pair<const std::string*, const StoredTensorInfo*>> spans;
  for (const auto& [name, info] : tensors_) {
    if (info.end > info.begin) spans.emplace_back(&name, &info);
  }
  std::sort(spans.begin(), spans.end(), [](const auto& a, const auto& b) {
    return std::tie(a.second->begin, a.second->end) < std::tie(b.second->begin, b.second->end);
  });
  for (size_t i = 1; i < spans.size(); ++i) {
    if (spans[i].second->begin < spans[i - 1].second->end) {
      return TensorError(
          *spans[i].first,
          absl::StrCat("data [", spans[i].second->begin, ", ", spans[i].second->end,
                       ") overlaps tensor '", *spans[i - 1].first, "' [",
                       spans[i - 1].second->begin, ", ", spans[i - 1].second->end, ")"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<kernels::Tensor> SafetensorsFile::GetFloat(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    return absl::NotFoundError(absl::StrCat("tensor '", name, "' is not in the file"));
  }
  const StoredTensorInfo& info = it->second;
  absl::StatusOr<kernels::Shape> shape = kernels::Shape::Make(info.shape);
  if (!shape.ok()) return TensorError(name, std::string(shape.status().message()));
  const uint8_t* src = base_ + data_start_ + info.begin;
  const int64_t n = shape->numel();

  if (info.dtype == StoredDType::kF32) {
    if (reinterpret_cast<uintptr_t>(src) % alignof(float) == 0) {
      // The Tensor API is not const-aware; the mapping is PROT_READ, so a write faults
      // instead of silently changing the weights.
      return kernels::Tensor::Wrap(kernels::DType::kF32, *shape, const_cast<uint8_t*>(src),
                                   shared_from_this());
    }
    kernels::Tensor out = kernels::Tensor::Allocate(kernels::DType::kF32, *shape);
    if (n > 0) std::memcpy(out.raw_data(), src, out.bytes());
    return out;
  }

  kernels::Tensor out = kernels::Tensor::Allocate(kernels::DType::kF32, *shape);
  float* dst = out.data<float>();
  if (info.dtype == StoredDType::kBF16) {
    // bf16 is the upper half of an f32: a shift, in a loop the compiler vectorises (a
    // bf16-stored model's tensors come this way at load).
    for (int64_t i = 0; i < n; ++i) {
      uint16_t bits;  // memcpy: the data may be unaligned
      std::memcpy(&bits, src + 2 * i, sizeof(bits));
      const uint32_t widened = static_cast<uint32_t>(bits) << 16;
      std::memcpy(dst + i, &widened, sizeof(widened));
    }
    return out;
  }
  for (int64_t i = 0; i < n; ++i) {
    uint16_t bits;
    std::memcpy(&bits, src + 2 * i, sizeof(bits));
    dst[i] = HalfToFloat(bits);
  }
  return out;
}

absl::StatusOr<std::string_view> SafetensorsFile::RawBytes(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    return absl::NotFoundError(absl::StrCat("tensor '", name, "' is not in the file"));
  }
  const StoredTensorInfo& info = it->second;
  return std::string_view(reinterpret_cast<const char*>(base_ + data_start_ + info.begin),
                          info.end - info.begin);
}

absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              StoredDType dtype,
                              const std::map<std::string, std::string>& metadata) {
  absl::StatusOr<WritePlan> plan = PlanWrite(tensors, dtype, metadata);
  if (!plan.ok()) {
    return absl::Status(plan.status().code(),
                        absl::StrCat(path, ": ", std::string(plan.status().message())));
  }

  // Write next to the target and rename over it: readers see the old file or the new one.
  std::string temp_path = absl::StrCat(path, ".tmp.XXXXXX");
  ScopedFd fd(mkstemp(temp_path.data()));
  if (fd.get() < 0) return ErrnoError(errno, absl::StrCat(temp_path, ": cannot create"));
  struct TempFileGuard {
    const std::string& path;
    bool keep = false;
    ~TempFileGuard() {
      if (!keep) unlink(path.c_str());
    }
  } guard{temp_path};
  // mkstemp creates 0600; model files are meant to be read by the serving user too.
  if (fchmod(fd.get(), 0644) != 0) return ErrnoError(errno, absl::StrCat(temp_path, ": chmod"));

  absl::Status written = EmitFile(*plan, dtype, [&](const void* data, size_t size) {
    return WriteAll(fd.get(), data, size, temp_path);
  });
  if (!written.ok()) return written;
  // fsync before rename: otherwise a crash can leave the new name pointing at missing data.
  if (fsync(fd.get()) != 0) return ErrnoError(errno, absl::StrCat(temp_path, ": fsync failed"));
  if (fd.Close() != 0) return ErrnoError(errno, absl::StrCat(temp_path, ": close failed"));
  if (rename(temp_path.c_str(), path.c_str()) != 0) {
    return ErrnoError(errno, absl::StrCat(path, ": cannot rename ", temp_path, " over it"));
  }
  guard.keep = true;
  return absl::OkStatus();
}

absl::StatusOr<std::string> SerializeSafetensors(
    const std::vector<TensorToWrite>& tensors, StoredDType dtype,
    const std::map<std::string, std::string>& metadata) {
  absl::StatusOr<WritePlan> plan = PlanWrite(tensors, dtype, metadata);
  if (!plan.ok()) return plan.status();
  std::string bytes;
  bytes.reserve(kLengthPrefixBytes + plan->header.size() + plan->data_bytes);
  absl::Status emitted = EmitFile(*plan, dtype, [&bytes](const void* data, size_t size) {
    bytes.append(static_cast<const char*>(data), size);
    return absl::OkStatus();
  });
  if (!emitted.ok()) return emitted;
  return bytes;
}

}  // namespace taskmoe::models
