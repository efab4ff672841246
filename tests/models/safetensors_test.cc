// safetensors: write/read round trips (F32, BF16), F16 decoding, zero-copy views, SHA-256,
// and one corrupt file per validation rule (each refused naming the tensor or field).
#include "models/format/safetensors.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/dtype.h"
#include "models/format/sha256.h"

namespace taskmoe::models {
namespace {

namespace fs = std::filesystem;

// A fresh directory per test, removed afterwards.
class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(::testing::TempDir()) /
           (std::string("safetensors_") + info->name() + "_" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Path(const std::string& name) const { return (dir_ / name).string(); }

  fs::path dir_;
};

// An 8-byte little-endian length, the header text and the data, as a file's bytes.
std::string Container(const std::string& header, const std::string& data = "",
                      std::optional<uint64_t> length = std::nullopt) {
  const uint64_t n = length.value_or(header.size());
  std::string bytes(reinterpret_cast<const char*>(&n), sizeof(n));
  return bytes + header + data;
}

std::string Floats(const std::vector<float>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
}

std::string Halves(const std::vector<uint16_t>& bits) {
  return std::string(reinterpret_cast<const char*>(bits.data()), bits.size() * sizeof(uint16_t));
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

std::vector<float> Values(const kernels::Tensor& t) {
  return std::vector<float>(t.data<float>(), t.data<float>() + t.numel());
}

TEST_F(SafetensorsTest, RoundTripsF32) {
  const std::vector<float> a = {1.5f, -2.25f, 3e-8f, 1e30f, 0.0f, -0.0f};
  const std::vector<float> b = {42.0f};
  const std::vector<TensorToWrite> tensors = {
      {"z.weight", {2, 3}, a.data()}, {"a.scalar", {}, b.data()}, {"m.empty", {0, 4}, nullptr}};
  const std::string path = Path("model.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, tensors, StoredDType::kF32, {{"format", "pt"}}).ok());

  absl::StatusOr<std::shared_ptr<const SafetensorsFile>> file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  const SafetensorsFile& f = **file;
  EXPECT_EQ(f.file_size(), fs::file_size(path));
  EXPECT_EQ(f.metadata(), (std::map<std::string, std::string>{{"format", "pt"}}));
  ASSERT_EQ(f.tensors().size(), 3u);
  EXPECT_TRUE(f.Contains("z.weight"));
  EXPECT_FALSE(f.Contains("__metadata__"));

  // Data in name order, contiguous.
  const StoredTensorInfo& scalar = f.tensors().at("a.scalar");
  const StoredTensorInfo& empty = f.tensors().at("m.empty");
  const StoredTensorInfo& weight = f.tensors().at("z.weight");
  EXPECT_EQ(scalar.begin, 0u);
  EXPECT_EQ(scalar.end, 4u);
  EXPECT_EQ(empty.begin, 4u);
  EXPECT_EQ(empty.end, 4u);
  EXPECT_EQ(weight.begin, 4u);
  EXPECT_EQ(weight.end, 28u);
  EXPECT_EQ(weight.dtype, StoredDType::kF32);
  EXPECT_EQ(weight.shape, (std::vector<int64_t>{2, 3}));

  // The header is padded to a multiple of 8 bytes.
  uint64_t header_length = 0;
  std::ifstream(path, std::ios::binary).read(reinterpret_cast<char*>(&header_length), 8);
  EXPECT_EQ(header_length % 8, 0u);
  EXPECT_EQ(f.file_size(), 8 + header_length + 28);

  absl::StatusOr<kernels::Tensor> t = f.GetFloat("z.weight");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->shape(), (kernels::Shape{2, 3}));
  EXPECT_EQ(Values(*t), a);
  EXPECT_TRUE(std::signbit(t->data<float>()[5]));
  absl::StatusOr<kernels::Tensor> s = f.GetFloat("a.scalar");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->rank(), 0);
  EXPECT_EQ(s->data<float>()[0], 42.0f);
  absl::StatusOr<kernels::Tensor> e = f.GetFloat("m.empty");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->numel(), 0);

  absl::StatusOr<std::string_view> raw = f.RawBytes("a.scalar");
  ASSERT_TRUE(raw.ok());
  EXPECT_EQ(*raw, Floats(b));
  EXPECT_EQ(f.GetFloat("absent").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(f.RawBytes("absent").status().code(), absl::StatusCode::kNotFound);

  // Nothing but the file itself is left in the directory.
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 1);
}

TEST_F(SafetensorsTest, RoundTripsBF16WithRoundToNearestEven) {
  const std::vector<float> values = {1.0f,
                                     -2.0f,
                                     0.5f,
                                     1.00390625f /* tie: rounds to 1 */,
                                     1.01171875f /* tie: rounds up to 1.015625 */,
                                     3.14159265f,
                                     std::numeric_limits<float>::infinity(),
                                     -1e-20f};
  const std::string path = Path("bf16.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {{"w", {2, 4}, values.data()}}, StoredDType::kBF16).ok());
  absl::StatusOr<std::shared_ptr<const SafetensorsFile>> file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->tensors().at("w").dtype, StoredDType::kBF16);
  EXPECT_EQ((*file)->tensors().at("w").end, 16u);
  absl::StatusOr<kernels::Tensor> t = (*file)->GetFloat("w");
  ASSERT_TRUE(t.ok()) << t.status();
  const std::vector<float> got = Values(*t);
  for (size_t i = 0; i < values.size(); ++i) {
    EXPECT_EQ(got[i], kernels::BFloat16ToFloat(kernels::FloatToBFloat16(values[i]))) << i;
  }
  EXPECT_EQ(got[0], 1.0f);
  EXPECT_EQ(got[3], 1.0f);
  EXPECT_EQ(got[4], 1.015625f);
  EXPECT_TRUE(std::isinf(got[6]));
}

TEST(HalfToFloat, KnownValues) {
  EXPECT_EQ(HalfToFloat(0x3C00), 1.0f);
  EXPECT_EQ(HalfToFloat(0xC000), -2.0f);
  EXPECT_EQ(HalfToFloat(0x7BFF), 65504.0f);
  EXPECT_EQ(HalfToFloat(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal, 5.96e-8
  EXPECT_NEAR(HalfToFloat(0x0001), 5.96e-8f, 1e-10f);
  EXPECT_EQ(HalfToFloat(0x03FF), std::ldexp(1023.0f, -24));  // largest subnormal
  EXPECT_EQ(HalfToFloat(0x0400), std::ldexp(1.0f, -14));     // smallest normal
  EXPECT_EQ(HalfToFloat(0x7C00), std::numeric_limits<float>::infinity());
  EXPECT_EQ(HalfToFloat(0xFC00), -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(HalfToFloat(0x7E00)));
  EXPECT_TRUE(std::isnan(HalfToFloat(0x7C01)));
  EXPECT_EQ(HalfToFloat(0x0000), 0.0f);
  EXPECT_TRUE(std::signbit(HalfToFloat(0x8000)));
}

TEST(HalfToFloat, MatchesTheDefinitionForEveryFiniteValue) {
  for (uint32_t bits = 0; bits <= 0xFFFF; ++bits) {
    const uint32_t exponent = (bits >> 10) & 0x1F;
    if (exponent == 0x1F) continue;
    const double mantissa = bits & 0x3FF;
    const double magnitude = exponent == 0 ? std::ldexp(mantissa, -24)
                                           : std::ldexp(1.0 + mantissa / 1024.0, exponent - 15);
    const double expected = (bits & 0x8000) ? -magnitude : magnitude;
    ASSERT_EQ(HalfToFloat(static_cast<uint16_t>(bits)), static_cast<float>(expected)) << bits;
  }
}

TEST(Safetensors, ReadsF16) {
  const std::vector<uint16_t> bits = {0x3C00, 0xC000, 0x7BFF, 0x0001, 0x7C00, 0x3555};
  const std::string header = R"({"h":{"dtype":"F16","shape":[2,3],"data_offsets":[0,12]}})";
  absl::StatusOr<std::shared_ptr<const SafetensorsFile>> file =
      SafetensorsFile::FromBytes(Container(header, Halves(bits)));
  ASSERT_TRUE(file.ok()) << file.status();
  absl::StatusOr<kernels::Tensor> t = (*file)->GetFloat("h");
  ASSERT_TRUE(t.ok()) << t.status();
  const std::vector<float> got = Values(*t);
  EXPECT_EQ(got[0], 1.0f);
  EXPECT_EQ(got[1], -2.0f);
  EXPECT_EQ(got[2], 65504.0f);
  EXPECT_EQ(got[3], std::ldexp(1.0f, -24));
  EXPECT_EQ(got[4], std::numeric_limits<float>::infinity());
  EXPECT_NEAR(got[5], 1.0f / 3.0f, 1e-3f);
}

TEST_F(SafetensorsTest, F32IsAZeroCopyViewThatKeepsTheFileAlive) {
  const std::vector<float> values = {1, 2, 3, 4};
  const std::string path = Path("view.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {{"w", {4}, values.data()}}, StoredDType::kF32).ok());
  absl::StatusOr<std::shared_ptr<const SafetensorsFile>> file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  absl::StatusOr<kernels::Tensor> t = (*file)->GetFloat("w");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->raw_data(), static_cast<const void*>((*file)->RawBytes("w")->data()));

  std::weak_ptr<const SafetensorsFile> watch = *file;
  file->reset();
  EXPECT_FALSE(watch.expired());  // the view owns the mapping now
  EXPECT_EQ(Values(*t), values);
  *t = kernels::Tensor();
  EXPECT_TRUE(watch.expired());
}

TEST_F(SafetensorsTest, UnalignedF32IsCopied) {
  // A 10-byte header puts the data at offset 18: not 4-byte aligned in the mapping.
  const std::string header = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  std::string padded = header;
  while ((8 + padded.size()) % 4 != 2) padded += ' ';
  const std::vector<float> values = {0.25f, -8.0f};
  const std::string path = Path("unaligned.safetensors");
  WriteFile(path, Container(padded, Floats(values)));
  absl::StatusOr<std::shared_ptr<const SafetensorsFile>> file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  absl::StatusOr<kernels::Tensor> t = (*file)->GetFloat("w");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_NE(t->raw_data(), static_cast<const void*>((*file)->RawBytes("w")->data()));
  EXPECT_EQ(Values(*t), values);
}

TEST(Safetensors, RankAboveTheTensorLimitIsRefusedByGetFloat) {
  const std::string header =
      R"({"deep":{"dtype":"F32","shape":[1,1,1,1,1,1,1],"data_offsets":[0,4]}})";
  absl::StatusOr<std::shared_ptr<const SafetensorsFile>> file =
      SafetensorsFile::FromBytes(Container(header, Floats({1})));
  ASSERT_TRUE(file.ok()) << file.status();
  absl::StatusOr<kernels::Tensor> t = (*file)->GetFloat("deep");
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("deep"), std::string::npos);
}

TEST_F(SafetensorsTest, WriterRefusesBadInput) {
  const std::vector<float> v = {1, 2};
  const std::string path = Path("bad.safetensors");
  EXPECT_FALSE(
      WriteSafetensors(path, {{"a", {2}, v.data()}, {"a", {2}, v.data()}}, StoredDType::kF32).ok());
  EXPECT_FALSE(WriteSafetensors(path, {{"a", {-2}, v.data()}}, StoredDType::kF32).ok());
  EXPECT_FALSE(WriteSafetensors(path, {{"a", {2}, nullptr}}, StoredDType::kF32).ok());
  EXPECT_FALSE(WriteSafetensors(path, {{"__metadata__", {2}, v.data()}}, StoredDType::kF32).ok());
  EXPECT_FALSE(WriteSafetensors(path, {{"a", {2}, v.data()}}, StoredDType::kF16).ok());
  EXPECT_FALSE(
      WriteSafetensors(Path("missing_dir/x.safetensors"), {{"a", {2}, v.data()}}, StoredDType::kF32)
          .ok());
  EXPECT_TRUE(fs::is_empty(dir_));  // no file and no temporary left behind
}

TEST_F(SafetensorsTest, SerializeMatchesTheWrittenFile) {
  const std::vector<float> a = {1, 2, 3, 4, 5, 6}, b = {-1};
  const std::vector<TensorToWrite> tensors = {{"b", {1}, b.data()}, {"a", {3, 2}, a.data()}};
  for (StoredDType dtype : {StoredDType::kF32, StoredDType::kBF16}) {
    const std::string path = Path("m.safetensors");
    ASSERT_TRUE(WriteSafetensors(path, tensors, dtype, {{"k", "v"}}).ok());
    std::ifstream in(path, std::ios::binary);
    const std::string file_bytes((std::istreambuf_iterator<char>(in)),
                                 std::istreambuf_iterator<char>());
    absl::StatusOr<std::string> bytes = SerializeSafetensors(tensors, dtype, {{"k", "v"}});
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    EXPECT_EQ(*bytes, file_bytes);
    absl::StatusOr<std::shared_ptr<const SafetensorsFile>> f = SafetensorsFile::FromBytes(*bytes);
    ASSERT_TRUE(f.ok()) << f.status();
    EXPECT_EQ(Values(*(*f)->GetFloat("a")), a);
  }
  absl::StatusOr<std::string> bad =
      SerializeSafetensors({{"neg", {-1}, a.data()}}, StoredDType::kF32);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("'neg'"), std::string::npos) << bad.status();
}

TEST_F(SafetensorsTest, WriterReplacesAnExistingFile) {
  const std::vector<float> v1 = {1}, v2 = {2, 3};
  const std::string path = Path("m.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {{"a", {1}, v1.data()}}, StoredDType::kF32).ok());
  absl::StatusOr<std::shared_ptr<const SafetensorsFile>> old_file = SafetensorsFile::Open(path);
  ASSERT_TRUE(old_file.ok());
  ASSERT_TRUE(WriteSafetensors(path, {{"b", {2}, v2.data()}}, StoredDType::kF32).ok());
  // The old mapping still reads the old contents; a new open sees the new file.
  EXPECT_EQ(Values(*(*old_file)->GetFloat("a")), v1);
  absl::StatusOr<std::shared_ptr<const SafetensorsFile>> new_file = SafetensorsFile::Open(path);
  ASSERT_TRUE(new_file.ok());
  EXPECT_EQ(Values(*(*new_file)->GetFloat("b")), v2);
  EXPECT_FALSE((*new_file)->Contains("a"));
}

TEST_F(SafetensorsTest, Sha256) {
  WriteFile(Path("abc"), "abc");
  WriteFile(Path("empty"), "");
  EXPECT_EQ(*FileSha256(Path("abc")),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(*FileSha256(Path("empty")),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(FileSha256(Path("absent")).status().code(), absl::StatusCode::kNotFound);
}

// --- Corrupt files ---------------------------------------------------------------------------

TEST_F(SafetensorsTest, RefusesFilesTooShortOrMissing) {
  WriteFile(Path("empty"), "");
  WriteFile(Path("short"), "abcd");
  for (const char* name : {"empty", "short"}) {
    absl::StatusOr<std::shared_ptr<const SafetensorsFile>> f = SafetensorsFile::Open(Path(name));
    ASSERT_FALSE(f.ok()) << name;
    EXPECT_NE(f.status().message().find("8-byte"), std::string::npos) << f.status();
    EXPECT_NE(f.status().message().find(Path(name)), std::string::npos) << f.status();
  }
  EXPECT_FALSE(SafetensorsFile::FromBytes("").ok());
  EXPECT_EQ(SafetensorsFile::Open(Path("absent")).status().code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(SafetensorsFile::Open(dir_.string()).ok());  // a directory
}

TEST_F(SafetensorsTest, RefusesHeaderLongerThanTheCap) {
  // A sparse 200 MB file whose header claims 150 MB: within the file, over the limit.
  const std::string path = Path("huge.safetensors");
  WriteFile(path, Container("{}", "", 150'000'000));
  fs::resize_file(path, 200'000'000);
  absl::StatusOr<std::shared_ptr<const SafetensorsFile>> f = SafetensorsFile::Open(path);
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.status().message().find("exceeds the limit"), std::string::npos) << f.status();
}

struct CorruptFile {
  std::string name;
  std::string bytes;
  std::vector<std::string> expected;  // substrings of the error: the tensor, the problem
};

class RefusesCorruptFile : public ::testing::TestWithParam<CorruptFile> {};

std::string CorruptFileName(const ::testing::TestParamInfo<CorruptFile>& param) {
  return param.param.name;
}

TEST_P(RefusesCorruptFile, NamingTheProblem) {
  const CorruptFile& c = GetParam();
  absl::StatusOr<std::shared_ptr<const SafetensorsFile>> f = SafetensorsFile::FromBytes(c.bytes);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
  for (const std::string& part : c.expected) {
    EXPECT_NE(f.status().message().find(part), std::string::npos)
        << "'" << part << "' not in: " << f.status().message();
  }
}

std::string Entry(const std::string& name, const std::string& dtype, const std::string& shape,
                  const std::string& offsets) {
  return absl::StrCat("\"", name, "\":{\"dtype\":\"", dtype, "\",\"shape\":", shape,
                      ",\"data_offsets\":", offsets, "}");
}

// A header object of the given entries.
std::string Header(const std::vector<std::string>& entries) {
  return absl::StrCat("{", absl::StrJoin(entries, ","), "}");
}

const std::string kEightFloats = Floats({1, 2, 3, 4, 5, 6, 7, 8});

INSTANTIATE_TEST_SUITE_P(
    All, RefusesCorruptFile,
    ::testing::Values(
        CorruptFile{"ShorterThanLength", "1234567", {"8-byte"}},
        CorruptFile{"HeaderLengthPastEnd", Container("{}", "", 1000), {"header length 1000"}},
        CorruptFile{"HeaderLengthHuge", Container("{}", "", ~uint64_t{0}), {"runs past the end"}},
        CorruptFile{"HeaderNotJson", Container("{\"w\": [1, 2", ""), {"not valid JSON"}},
        CorruptFile{"HeaderNotUtf8", Container("{\"\xff\": 1}", ""), {"not valid JSON"}},
        CorruptFile{"HeaderNotObject", Container("[1, 2, 3]", ""), {"array", "not an object"}},
        CorruptFile{"HeaderTooDeep",
                    Container(std::string(100, '[') + std::string(100, ']')),
                    {"too deeply"}},
        CorruptFile{
            "EntryNotObject", Container("{\"w\": 5}", kEightFloats), {"'w'", "not an object"}},
        CorruptFile{"MissingDtype",
                    Container(R"({"w":{"shape":[2],"data_offsets":[0,8]}})", kEightFloats),
                    {"'w'", "no dtype"}},
        CorruptFile{"MissingShape",
                    Container(R"({"w":{"dtype":"F32","data_offsets":[0,8]}})", kEightFloats),
                    {"'w'", "no shape"}},
        CorruptFile{"MissingOffsets",
                    Container(R"({"w":{"dtype":"F32","shape":[2]}})", kEightFloats),
                    {"'w'", "no data_offsets"}},
        CorruptFile{"UnknownDtype",
                    Container(Header({Entry("w", "I64", "[1]", "[0,8]")}), kEightFloats),
                    {"'w'", "unsupported dtype 'I64'"}},
        CorruptFile{
            "DtypeNotString",
            Container(R"({"w":{"dtype":4,"shape":[1],"data_offsets":[0,4]}})", kEightFloats),
            {"'w'", "dtype"}},
        CorruptFile{"NegativeShape",
                    Container(Header({Entry("w", "F32", "[-2]", "[0,8]")}), kEightFloats),
                    {"'w'", "-2", "non-negative"}},
        CorruptFile{"FractionalShape",
                    Container(Header({Entry("w", "F32", "[2.5]", "[0,8]")}), kEightFloats),
                    {"'w'", "non-negative integer"}},
        CorruptFile{"ShapeNotArray",
                    Container(Header({Entry("w", "F32", "2", "[0,8]")}), kEightFloats),
                    {"'w'", "shape"}},
        CorruptFile{"ShapeOverflows",
                    Container(Header({Entry("w", "F32", "[4294967296,4294967296]", "[0,8]")}),
                              kEightFloats),
                    {"'w'", "64 bits"}},
        CorruptFile{"BytesOverflow",
                    Container(Header({Entry("w", "F32", "[4611686018427387904,2]", "[0,8]")}),
                              kEightFloats),
                    {"'w'", "64 bits"}},
        CorruptFile{"OffsetsNotPair",
                    Container(Header({Entry("w", "F32", "[2]", "[0]")}), kEightFloats),
                    {"'w'", "data_offsets"}},
        CorruptFile{"NegativeOffset",
                    Container(Header({Entry("w", "F32", "[2]", "[-8,0]")}), kEightFloats),
                    {"'w'", "non-negative"}},
        CorruptFile{"OffsetsPastData",
                    Container(Header({Entry("w", "F32", "[2]", "[32,40]")}), kEightFloats),
                    {"'w'", "[32, 40)", "outside the data section of 32 bytes"}},
        CorruptFile{"OffsetsReversed",
                    Container(Header({Entry("w", "F32", "[0]", "[8,0]")}), kEightFloats),
                    {"'w'", "outside"}},
        CorruptFile{"SizeMismatch",
                    Container(Header({Entry("w", "F32", "[3]", "[0,8]")}), kEightFloats),
                    {"'w'", "span 8 bytes", "needs 12"}},
        CorruptFile{"SizeMismatchBf16",
                    Container(Header({Entry("w", "BF16", "[2]", "[0,8]")}), kEightFloats),
                    {"'w'", "BF16", "needs 4"}},
        CorruptFile{"Overlap",
                    Container(Header({Entry("a", "F32", "[4]", "[0,16]"),
                                      Entry("b", "F32", "[4]", "[12,28]")}),
                              kEightFloats),
                    {"'b'", "overlaps tensor 'a'"}},
        CorruptFile{"Contained",
                    Container(Header({Entry("big", "F32", "[8]", "[0,32]"),
                                      Entry("small", "F32", "[1]", "[8,12]")}),
                              kEightFloats),
                    {"'small'", "overlaps tensor 'big'"}},
        CorruptFile{"DuplicateName",
                    Container(Header({Entry("w", "F32", "[1]", "[0,4]"),
                                      Entry("w", "F32", "[1]", "[4,8]")}),
                              kEightFloats),
                    {"'w'", "twice"}},
        CorruptFile{"TruncatedData",
                    Container(Header({Entry("a", "F32", "[4]", "[0,16]"),
                                      Entry("b", "F32", "[4]", "[16,32]")}),
                              kEightFloats.substr(0, 20)),
                    {"'b'", "outside the data section of 20 bytes"}},
        CorruptFile{"MetadataNotObject",
                    Container(R"({"__metadata__":["a"]})"),
                    {"__metadata__", "not an object"}},
        CorruptFile{"MetadataNotStrings",
                    Container(R"({"__metadata__":{"step":5}})"),
                    {"__metadata__", "'step'", "not a string"}}),
    CorruptFileName);

TEST(Safetensors, AcceptsEmptyHeaderAndZeroSizedTensorsAnywhere) {
  // Zero-sized tensors occupy no bytes and so overlap nothing.
  const std::string header =
      Header({Entry("a", "F32", "[2]", "[0,8]"), Entry("none", "F32", "[0,3]", "[4,4]")});
  EXPECT_TRUE(SafetensorsFile::FromBytes(Container(header, Floats({1, 2}))).ok());
  EXPECT_TRUE(SafetensorsFile::FromBytes(Container("{}")).ok());
  EXPECT_TRUE(SafetensorsFile::FromBytes(Container("{}     ")).ok());  // padding
}

}  // namespace
}  // namespace taskmoe::models
