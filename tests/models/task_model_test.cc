// models::TaskModel, the serving seam: loading a task of the demo model (what it says about
// itself, refusals of a task it does not serve and of files outside a repository, one
// vocabulary shared by the tasks of a weight store), the request pipeline through it against
// the Translator's, and the repository listing.
#include "models/task_model.h"

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/matmul.h"
#include "models/translator.h"
#include "models/weight_store.h"
#include "tests/common/process.h"

namespace taskmoe::models {
namespace {

const std::string kDemoDir = std::string(TASKMOE_SOURCE_DIR) + "/demo/taskmoe";

class TaskModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto loaded = TaskModel::Load(kDemoDir, "en-de", {});
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    task_ = new std::shared_ptr<const TaskModel>(*std::move(loaded));
  }
  static void TearDownTestSuite() {
    delete task_;
    task_ = nullptr;
  }
  static const TaskModel& task() { return **task_; }

  static std::shared_ptr<const TaskModel>* task_;
};

std::shared_ptr<const TaskModel>* TaskModelTest::task_ = nullptr;

TEST_F(TaskModelTest, DescribesItself) {
  const TaskDescription& d = task().description();
  EXPECT_EQ(d.id, "en-de");
  EXPECT_EQ(d.source_language, "en");
  EXPECT_EQ(d.target_language, "de");
  ASSERT_EQ(d.version.size(), std::string("sha256:").size() + 16) << d.version;
  EXPECT_TRUE(d.version.starts_with("sha256:")) << d.version;
  EXPECT_EQ(d.precision, "f32");
  EXPECT_GT(d.parameters, 0);
  EXPECT_GT(d.memory_bytes, 0u);
  EXPECT_TRUE(d.parent_digest.empty());  // the full checkpoint, not an extracted subnetwork
  // The demo is bf16-stored: its f32 layers run our kernel on every CPU, and greedy steps
  // filter the head's candidates through an int8 copy (docs/api.md, "Scores and the greedy
  // head").
  EXPECT_EQ(d.matmul_path, "avx2_f32");
  // Through the fastest form of our int8 kernel this CPU has.
  ASSERT_TRUE(kernels::OwnInt8Path().has_value());
  EXPECT_EQ(d.greedy_head_filter, kernels::MatmulPathName(*kernels::OwnInt8Path()));
  EXPECT_GT(task().max_source_tokens(), 0);
  EXPECT_EQ(task().Piece(task().eos_id()), "</s>");
  // The same files give the same version.
  auto again = TaskModel::Load(kDemoDir, "de-en", {});
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ((*again)->version(), d.version);
  // An int8 model's head is int8 already: no filter.
  auto int8 = TaskModel::Load(kDemoDir, "en-de", {.precision = Precision::kInt8});
  ASSERT_TRUE(int8.ok()) << int8.status();
  EXPECT_EQ((*int8)->description().precision, "int8");
  EXPECT_EQ((*int8)->description().greedy_head_filter, "");
}

TEST_F(TaskModelTest, PrepareDecodeFinishMatchesTheTranslator) {
  const std::vector<std::string> texts = {"Open the file.", "Save it. Then close the window."};
  const TextOptions text_options;
  DecodeOptions decode;
  decode.max_output_ratio = 1.5f;
  decode.max_output_offset = 10;
  DecodeWorkspace workspace;
  std::vector<std::string> ours;
  for (const std::string& text : texts) {
    auto sentences = task().PrepareText(text, text_options);
    ASSERT_TRUE(sentences.ok()) << sentences.status();
    std::vector<std::vector<int32_t>> sources;
    for (const SourceSentence& s : *sentences) sources.push_back(s.ids);
    auto hypotheses = task().Decode(sources, decode, &workspace);
    ASSERT_TRUE(hypotheses.ok()) << hypotheses.status();
    std::vector<const Hypothesis*> parts;
    for (const Hypothesis& h : *hypotheses) parts.push_back(&h);
    auto finished = task().FinishText(*sentences, parts, text_options.unknown_pieces);
    ASSERT_TRUE(finished.ok()) << finished.status();
    EXPECT_FALSE(finished->text.empty());
    ours.push_back(finished->text);
  }
  const Translator translator(*task_);
  TranslateOptions options;
  options.decode = decode;
  auto translated = translator.Translate(texts, options);
  ASSERT_TRUE(translated.ok()) << translated.status();
  ASSERT_EQ(translated->size(), texts.size());
  for (size_t i = 0; i < texts.size(); ++i) EXPECT_EQ((*translated)[i].text, ours[i]);
}

TEST_F(TaskModelTest, PrepareRefusesWhatTheModelCannotTake) {
  std::string long_text;
  for (int i = 0; i < 600; ++i) long_text += "word ";
  auto refused = task().PrepareText(long_text, {.split_sentences = false});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("more than the model's limit"), std::string::npos)
      << refused.status();
}

TEST(TaskModelLoad, RefusesATaskTheModelDoesNotServe) {
  auto refused = TaskModel::Load(kDemoDir, "xx-yy", {});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("its config.json serves "), std::string::npos)
      << refused.status();
  EXPECT_NE(refused.status().message().find("en-de"), std::string::npos) << refused.status();
}

TEST(TaskModelLoad, RefusesFilesOutsideItsRepository) {
  const std::string repository = ::taskmoe::testing::MakeTempDir("task-model-repository");
  ASSERT_FALSE(repository.empty());
  std::filesystem::create_directory_symlink(kDemoDir, repository + "/en-de");
  auto refused = TaskModel::Load(repository + "/en-de", "en-de", {.repository = repository});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(refused.status().message().find("outside the model repository"), std::string::npos)
      << refused.status();
  // Without a repository to stay in, the same directory loads.
  EXPECT_TRUE(TaskModel::Load(repository + "/en-de", "en-de", {}).ok());
}

TEST(TaskModelLoad, TasksOfOneStoreShareTheVocabularyAndABadOneIsRefused) {
  const std::string dir = ::taskmoe::testing::MakeTempDir("task-model-vocabulary");
  ASSERT_FALSE(dir.empty());
  for (const char* file : {"config.json", "model.safetensors"}) {
    std::filesystem::create_symlink(kDemoDir + "/" + file, dir + "/" + file);
  }
  auto store = std::make_shared<WeightStore>();
  // Missing, then another file than config.json records: refused, naming the file.
  auto refused = TaskModel::Load(dir, "en-de", {.weight_store = store});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kNotFound) << refused.status();
  EXPECT_NE(refused.status().message().find("spm.model"), std::string::npos) << refused.status();
  std::ofstream(dir + "/spm.model", std::ios::binary) << "not a model";
  refused = TaskModel::Load(dir, "en-de", {.weight_store = store});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition) << refused.status();
  EXPECT_NE(refused.status().message().find("spm.model"), std::string::npos) << refused.status();

  std::filesystem::copy_file(kDemoDir + "/spm.model", dir + "/spm.model",
                             std::filesystem::copy_options::overwrite_existing);
  auto en_de = TaskModel::Load(dir, "en-de", {.weight_store = store});
  auto fr_en = TaskModel::Load(kDemoDir, "fr-en", {.weight_store = store});
  ASSERT_TRUE(en_de.ok()) << en_de.status();
  ASSERT_TRUE(fr_en.ok()) << fr_en.status();
  // Two directories, one vocabulary file's content: one model.
  EXPECT_EQ(&(*en_de)->tokenizer().model(), &(*fr_en)->tokenizer().model());
}

TEST(TaskRepository, ListsTaskDirectoriesByValidName) {
  const std::string repository = ::taskmoe::testing::MakeTempDir("task-listing");
  ASSERT_FALSE(repository.empty());
  auto empty = ListTaskDirectories(repository);
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(empty.status().message().find("holds no task"), std::string::npos);
  for (const char* dir : {"en-de", "de-en", ".hidden", "no-config"}) {
    std::filesystem::create_directory(repository + "/" + dir);
  }
  for (const char* dir : {"en-de", "de-en", ".hidden"}) {
    std::ofstream(repository + "/" + dir + "/config.json") << "{}";
  }
  auto listed = ListTaskDirectories(repository);
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_EQ(*listed, (std::vector<std::string>{"de-en", "en-de"}));
  EXPECT_TRUE(HasTaskDirectory(repository, "en-de"));
  EXPECT_FALSE(HasTaskDirectory(repository, "no-config"));
  EXPECT_EQ(ListTaskDirectories(repository + "/missing").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(TaskRepository, TaskNamesCannotLeaveTheRepository) {
  for (const char* good : {"en-de", "en_de.v2", "A-1"}) EXPECT_TRUE(IsValidTaskName(good)) << good;
  for (const char* bad : {"", ".", "..", "../etc", "a/b", ".hidden", "en de", "é"}) {
    EXPECT_FALSE(IsValidTaskName(bad)) << bad;
  }
  EXPECT_FALSE(IsValidTaskName(std::string(65, 'a')));
}

}  // namespace
}  // namespace taskmoe::models
