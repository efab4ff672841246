// Task mix parsing and weighting, text sources and the request stream.
#include "loadtest/workload.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <fstream>
#include <map>

#include "absl/strings/str_split.h"
#include "tests/common/process.h"

namespace taskmoe::loadtest {
namespace {

TEST(TaskMixTest, ParsesWeights) {
  absl::StatusOr<TaskMix> mix = TaskMix::Parse("en-de:3, de-en ,fr-en:0.5");
  ASSERT_TRUE(mix.ok()) << mix.status();
  ASSERT_EQ(mix->tasks().size(), 3u);
  EXPECT_EQ(mix->tasks()[0].task, "en-de");
  EXPECT_EQ(mix->tasks()[0].weight, 3);
  EXPECT_EQ(mix->tasks()[1].task, "de-en");
  EXPECT_EQ(mix->tasks()[1].weight, 1);
  EXPECT_DOUBLE_EQ(mix->Share(0), 3 / 4.5);
  EXPECT_DOUBLE_EQ(mix->Share(2), 0.5 / 4.5);
}

TEST(TaskMixTest, RejectsBadMixes) {
  for (const char* bad :
       {"", ",", "en-de:0", "en-de:-1", "en-de:x", "en-de,en-de", ":2", "en-de:nan", "en-de:inf"}) {
    absl::StatusOr<TaskMix> mix = TaskMix::Parse(bad);
    EXPECT_FALSE(mix.ok()) << "'" << bad << "' was accepted";
    if (!mix.ok()) {
      EXPECT_NE(mix.status().message().find("--tasks"), std::string::npos);
    }
  }
  EXPECT_FALSE(TaskMix::Uniform({}).ok());
}

TEST(TaskMixTest, PickFollowsCumulativeWeights) {
  absl::StatusOr<TaskMix> mix = TaskMix::Parse("a:1,b:2,c:1");
  ASSERT_TRUE(mix.ok());
  EXPECT_EQ(mix->Pick(0.0), "a");
  EXPECT_EQ(mix->Pick(0.2499), "a");
  EXPECT_EQ(mix->Pick(0.25), "b");
  EXPECT_EQ(mix->Pick(0.7499), "b");
  EXPECT_EQ(mix->Pick(0.75), "c");
  EXPECT_EQ(mix->Pick(0.9999999999), "c");
}

TEST(WorkloadTest, RequestsFollowTheMix) {
  absl::StatusOr<TaskMix> mix = TaskMix::Parse("en-de:3,de-en:1");
  ASSERT_TRUE(mix.ok());
  absl::StatusOr<Workload> workload = Workload::Create(*mix, "", 5, 1, /*seed=*/9);
  ASSERT_TRUE(workload.ok()) << workload.status();
  std::map<std::string, int> counts;
  constexpr int kN = 20000;
  for (int i = 0; i < kN; ++i) ++counts[workload->Next().task];
  // Binomial standard deviation sqrt(n p (1-p)) ~ 61 of 15000: 2% is ~5 sigma.
  EXPECT_NEAR(counts["en-de"], 0.75 * kN, 0.02 * kN);
  EXPECT_NEAR(counts["de-en"], 0.25 * kN, 0.02 * kN);
}

TEST(WorkloadTest, DeterministicInSeed) {
  absl::StatusOr<TaskMix> mix = TaskMix::Parse("a,b,c");
  ASSERT_TRUE(mix.ok());
  auto sequence = [&](uint64_t seed) {
    absl::StatusOr<Workload> w = Workload::Create(*mix, "", 4, 2, seed);
    std::vector<std::string> out;
    for (int i = 0; i < 50; ++i) {
      RequestSpec spec = w->Next();
      out.push_back(spec.task + ":" + spec.texts[0] + "|" + spec.texts[1]);
    }
    return out;
  };
  EXPECT_EQ(sequence(1), sequence(1));
  EXPECT_NE(sequence(1), sequence(2));
}

TEST(WorkloadTest, TextsCycleInOrderPerTask) {
  absl::StatusOr<TaskMix> mix = TaskMix::Parse("en-de");
  ASSERT_TRUE(mix.ok());
  Workload workload(*mix, {{"en-de", {"one", "two", "three"}}}, /*texts_per_request=*/2, 1);
  EXPECT_EQ(workload.Next().texts, (std::vector<std::string>{"one", "two"}));
  EXPECT_EQ(workload.Next().texts, (std::vector<std::string>{"three", "one"}));
  workload.set_texts_per_request(4);
  EXPECT_EQ(workload.Next().texts, (std::vector<std::string>{"two", "three", "one", "two"}));
}

TEST(SyntheticTextTest, HasTheRequestedWordsAndIsDeterministic) {
  const std::string text = SyntheticText(12, 3, 7);
  EXPECT_EQ(std::vector<std::string>(absl::StrSplit(text, ' ')).size(), 12u);
  EXPECT_EQ(text.back(), '.');
  EXPECT_EQ(text, SyntheticText(12, 3, 7));
  EXPECT_NE(text, SyntheticText(12, 3, 8));
  EXPECT_EQ(std::vector<std::string>(absl::StrSplit(SyntheticText(1, 0, 0), ' ')).size(), 1u);
}

class TextFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::taskmoe::testing::MakeTempDir("loadtest-texts");
    ASSERT_FALSE(dir_.empty());
  }
  void Write(const std::string& name, const std::string& content) {
    std::ofstream(dir_ + "/" + name) << content;
  }
  std::string dir_;
};

TEST_F(TextFileTest, ReadsLinesPerTaskFromAPattern) {
  Write("test.en-de.en", "Hello there.\n\n  Good morning.  \n");
  Write("test.de-en.de", "Guten Tag.\n");
  absl::StatusOr<std::vector<std::string>> en = ReadTexts(dir_ + "/test.{task}.{src}", "en-de");
  ASSERT_TRUE(en.ok()) << en.status();
  EXPECT_EQ(*en, (std::vector<std::string>{"Hello there.", "Good morning."}));
  absl::StatusOr<TaskMix> mix = TaskMix::Parse("en-de,de-en");
  ASSERT_TRUE(mix.ok());
  absl::StatusOr<Workload> workload = Workload::Create(*mix, dir_ + "/test.{task}.{src}", 0, 1, 1);
  ASSERT_TRUE(workload.ok()) << workload.status();
  for (int i = 0; i < 10; ++i) {
    const RequestSpec spec = workload->Next();
    EXPECT_EQ(spec.texts.front() == "Guten Tag.", spec.task == "de-en");
  }
}

TEST_F(TextFileTest, MissingOrEmptyFileIsAClearError) {
  Write("empty.txt", "\n  \n");
  absl::StatusOr<std::vector<std::string>> empty = ReadTexts(dir_ + "/empty.txt", "en-de");
  ASSERT_FALSE(empty.ok());
  EXPECT_NE(empty.status().message().find("holds no text"), std::string::npos);
  absl::StatusOr<std::vector<std::string>> missing = ReadTexts(dir_ + "/test.{task}", "xx-yy");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("test.xx-yy"), std::string::npos);
}

}  // namespace
}  // namespace taskmoe::loadtest
