// models::ContinuousBatch against per-task decoding: subnetworks of the demo model (extracted
// here, loaded through one weight store, so attention and embeddings are shared objects and
// the task-MoE layers are not) decode sentences of several tasks that join a running batch at
// different steps and leave at different steps; every sentence's tokens must be those of
// decoding it alone and those of its per-task batch (f32 greedy, with the trainer's length
// limits), and scores equal within 1e-4 (a row's arithmetic does not depend on its batch, but
// oneDNN may block a GEMM differently for other row counts). Also: the full checkpoint mixing
// tasks by route, leaving early (RemoveIf), and the refusals.
#include "models/continuous_batch.h"

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "models/extract.h"
#include "models/format/config.h"
#include "models/format/safetensors.h"
#include "models/weight_store.h"
#include "tests/common/process.h"

namespace taskmoe::models {
namespace {

const std::string kDemoDir = std::string(TASKMOE_SOURCE_DIR) + "/demo/taskmoe";
const std::vector<std::string> kTasks = {"en-de", "de-en", "en-fr", "fr-en", "en-ru"};

// Texts of every task's source language (the demo model's domain: software UI strings).
const std::map<std::string, std::vector<std::string>> kTexts = {
    {"en",
     {"Open the file.", "Save the document before closing the window.", "Print",
      "The connection to the server was lost. Try again later.", "Delete all selected items?",
      "Show hidden files"}},
    {"de",
     {"Datei öffnen", "Die Verbindung zum Server wurde unterbrochen.", "Drucken",
      "Alle ausgewählten Elemente löschen?", "Einstellungen"}},
    {"fr",
     {"Ouvrir le fichier", "Enregistrer le document avant de fermer la fenêtre.", "Imprimer",
      "La connexion au serveur a été perdue.", "Afficher les fichiers cachés"}},
};

struct Case {
  std::shared_ptr<const TaskModel> task;
  std::vector<int32_t> source;
};

DecodeSettings TrainerSettings() {
  DecodeSettings settings;
  settings.max_output_tokens = 64;
  settings.max_output_ratio = 1.5f;
  settings.max_output_offset = 10;
  return settings;
}

class ContinuousBatchTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(taskmoe::testing::MakeTempDir("subnetworks"));
    const std::string& dir = *dir_;
    ASSERT_FALSE(dir.empty());
    absl::StatusOr<ModelConfig> config = LoadModelConfig(kDemoDir);
    ASSERT_TRUE(config.ok()) << config.status();
    auto weights = SafetensorsFile::Open(kDemoDir + "/model.safetensors");
    ASSERT_TRUE(weights.ok()) << weights.status();
    auto store = std::make_shared<WeightStore>();
    tasks_ = new std::map<std::string, std::shared_ptr<const TaskModel>>();
    for (const std::string& task : kTasks) {
      absl::StatusOr<Subnetwork> sub =
          ExtractSubnetwork(*config, **weights, task, "sha256:" + std::string(64, '0'));
      ASSERT_TRUE(sub.ok()) << sub.status();
      ASSERT_TRUE(
          WriteModelDirectory(dir + "/" + task, *sub, StoredDType::kF32, kDemoDir + "/spm.model")
              .ok());
      auto loaded = TaskModel::Load(dir + "/" + task, task, {.weight_store = store});
      ASSERT_TRUE(loaded.ok()) << loaded.status();
      (*tasks_)[task] = *std::move(loaded);
    }
  }
  static void TearDownTestSuite() {
    delete tasks_;
    tasks_ = nullptr;
    delete dir_;
    dir_ = nullptr;
  }

  // Every text of every task, prepared: the cases in a fixed interleaved order.
  static std::vector<Case> Cases(
      const std::map<std::string, std::shared_ptr<const TaskModel>>& tasks) {
    std::vector<Case> cases;
    for (size_t i = 0; i < 6; ++i) {
      for (const auto& [id, task] : tasks) {
        const std::vector<std::string>& texts = kTexts.at(task->description().source_language);
        if (i >= texts.size()) continue;
        auto sentences = task->PrepareText(texts[i], {});
        EXPECT_TRUE(sentences.ok()) << sentences.status();
        for (SourceSentence& s : *sentences) cases.push_back({task, std::move(s.ids)});
      }
    }
    return cases;
  }

  // The hypothesis of each case decoded alone.
  static std::vector<Hypothesis> DecodeAlone(const std::vector<Case>& cases) {
    std::vector<Hypothesis> results;
    for (const Case& c : cases) {
      auto h = c.task->Decode({c.source}, DecodeOptions(TrainerSettings()), nullptr);
      EXPECT_TRUE(h.ok()) << h.status();
      results.push_back(std::move((*h)[0]));
    }
    return results;
  }

  // Runs `cases` through one ContinuousBatch, case i joining before step join_step(i); also
  // checks that each case's streamed tokens are its final ones (plus EOS).
  static std::vector<Hypothesis> DecodeContinuously(const std::vector<Case>& cases,
                                                    const std::function<int(size_t)>& join_step) {
    ContinuousBatch batch;
    std::vector<Hypothesis> results(cases.size());
    std::vector<std::vector<int32_t>> streamed(cases.size());
    std::vector<bool> done(cases.size(), false);
    size_t finished = 0;
    for (int step = 0; finished < cases.size(); ++step) {
      std::vector<ContinuousBatch::Sentence> joining;
      for (size_t i = 0; i < cases.size(); ++i) {
        if (join_step(i) == step) {
          joining.push_back({cases[i].task, cases[i].source, TrainerSettings(), i});
        }
      }
      EXPECT_TRUE(batch.Admit(std::move(joining)).ok());
      EXPECT_LE(batch.distinct_tasks(), static_cast<int>(kTasks.size()));
      absl::Status s =
          batch.Step([&](uint64_t key, int32_t token) { streamed[key].push_back(token); },
                     [&](uint64_t key, Hypothesis h) {
                       EXPECT_FALSE(done[key]);
                       done[key] = true;
                       results[key] = std::move(h);
                       ++finished;
                     });
      EXPECT_TRUE(s.ok()) << s;
      if (!s.ok() || step > 1000) break;
    }
    EXPECT_TRUE(batch.empty());
    for (size_t i = 0; i < cases.size(); ++i) {
      std::vector<int32_t> expected = results[i].tokens;
      if (results[i].reached_eos) expected.push_back(cases[i].task->eos_id());
      EXPECT_EQ(streamed[i], expected) << "case " << i;
    }
    return results;
  }

  static void ExpectSameHypotheses(const std::vector<Hypothesis>& expected,
                                   const std::vector<Hypothesis>& actual) {
    ASSERT_EQ(expected.size(), actual.size());
    for (size_t i = 0; i < expected.size(); ++i) {
      EXPECT_EQ(actual[i].tokens, expected[i].tokens) << "case " << i;
      EXPECT_EQ(actual[i].reached_eos, expected[i].reached_eos) << "case " << i;
      EXPECT_NEAR(actual[i].score, expected[i].score, 1e-4) << "case " << i;
      EXPECT_TRUE(actual[i].status.ok());
    }
  }

  static std::map<std::string, std::shared_ptr<const TaskModel>>* tasks_;
  static std::string* dir_;  // the subnetworks' directories
};

std::map<std::string, std::shared_ptr<const TaskModel>>* ContinuousBatchTest::tasks_ = nullptr;
std::string* ContinuousBatchTest::dir_ = nullptr;

TEST_F(ContinuousBatchTest, SubnetworksShareTheirAttentionButNotTheirExperts) {
  const TransformerModel& en_de = tasks_->at("en-de")->transformer();
  const TransformerModel& fr_en = tasks_->at("fr-en")->transformer();
  EXPECT_TRUE(TransformerModel::CanShareBatch(en_de, fr_en));
  // What makes the grouping matter: both kinds of layer in one batch.
  const StepCost a = en_de.DecoderStepCost(tasks_->at("en-de")->route());
  EXPECT_GT(a.weight_bytes, 0u);
}

TEST_F(ContinuousBatchTest, JoiningAtAnyStepGivesTheTokensOfDecodingAlone) {
  const std::vector<Case> cases = Cases(*tasks_);
  ASSERT_GT(cases.size(), 20u);
  const std::vector<Hypothesis> alone = DecodeAlone(cases);
  // All at once; one by one at every step; in bursts every third step (rows of one task end
  // up apart in the batch, so their own layers run on gathered rows).
  ExpectSameHypotheses(alone, DecodeContinuously(cases, [](size_t) { return 0; }));
  ExpectSameHypotheses(alone,
                       DecodeContinuously(cases, [](size_t i) { return static_cast<int>(i); }));
  ExpectSameHypotheses(
      alone, DecodeContinuously(cases, [](size_t i) { return static_cast<int>(i / 4) * 3; }));
}

TEST_F(ContinuousBatchTest, MatchesPerTaskBatches) {
  const std::vector<Case> cases = Cases(*tasks_);
  std::vector<Hypothesis> per_task(cases.size());
  DecodeWorkspace workspace;
  for (const auto& [id, task] : *tasks_) {
    std::vector<std::vector<int32_t>> sources;
    std::vector<size_t> index;
    for (size_t i = 0; i < cases.size(); ++i) {
      if (cases[i].task == task) {
        sources.push_back(cases[i].source);
        index.push_back(i);
      }
    }
    auto batch = task->Decode(sources, DecodeOptions(TrainerSettings()), &workspace);
    ASSERT_TRUE(batch.ok()) << batch.status();
    for (size_t j = 0; j < index.size(); ++j) per_task[index[j]] = std::move((*batch)[j]);
  }
  ExpectSameHypotheses(per_task,
                       DecodeContinuously(cases, [](size_t i) { return static_cast<int>(i % 7); }));
}

TEST_F(ContinuousBatchTest, TheFullCheckpointMixesTasksByRoute) {
  // One model object per task through one store: every weight shared, the task-MoE layers
  // grouped by each task's expert choice.
  auto store = std::make_shared<WeightStore>();
  std::map<std::string, std::shared_ptr<const TaskModel>> full;
  for (const std::string task : {"en-de", "de-en", "en-ru"}) {
    auto loaded = TaskModel::Load(kDemoDir, task, {.weight_store = store});
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    full[task] = *std::move(loaded);
  }
  const std::vector<Case> cases = Cases(full);
  ExpectSameHypotheses(DecodeAlone(cases),
                       DecodeContinuously(cases, [](size_t i) { return static_cast<int>(i % 3); }));
}

TEST_F(ContinuousBatchTest, WithoutAWeightStoreEveryLayerRunsPerTaskAndGivesTheSameTokens) {
  // Loaded apart, no two tasks share a weight object: embeddings, norms and every linear layer
  // run per group (gathered where a task's rows sit apart).
  std::map<std::string, std::shared_ptr<const TaskModel>> apart;
  for (const std::string task : {"en-de", "fr-en", "en-ru"}) {
    auto loaded = TaskModel::Load(*dir_ + "/" + task, task, {});
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    apart[task] = *std::move(loaded);
  }
  const std::vector<Case> cases = Cases(apart);
  ExpectSameHypotheses(DecodeAlone(cases),
                       DecodeContinuously(cases, [](size_t i) { return static_cast<int>(i / 3); }));
}

TEST_F(ContinuousBatchTest, RowsLeaveWhenTheCallerSaysAndTheOthersAreUnaffected) {
  const std::vector<Case> cases = Cases(*tasks_);
  const std::vector<Hypothesis> alone = DecodeAlone(cases);
  ContinuousBatch batch;
  std::vector<ContinuousBatch::Sentence> joining;
  for (size_t i = 0; i < cases.size(); ++i) {
    joining.push_back({cases[i].task, cases[i].source, TrainerSettings(), i});
  }
  ASSERT_TRUE(batch.Admit(std::move(joining)).ok());
  std::vector<Hypothesis> results(cases.size());
  std::vector<bool> left(cases.size(), false);
  auto finish = [&](uint64_t key, Hypothesis h) { results[key] = std::move(h); };
  for (int step = 0; !batch.empty(); ++step) {
    if (step == 2) {
      const int64_t before = batch.rows();
      ASSERT_TRUE(batch
                      .RemoveIf([](uint64_t key) { return key % 3 == 1; },
                                [&](uint64_t key, Hypothesis h) {
                                  left[key] = true;
                                  EXPECT_LE(h.tokens.size(), 2u);
                                  results[key] = std::move(h);
                                })
                      .ok());
      EXPECT_LT(batch.rows(), before);
    }
    ASSERT_TRUE(batch.Step([](uint64_t, int32_t) {}, finish).ok());
  }
  for (size_t i = 0; i < cases.size(); ++i) {
    if (left[i]) continue;
    EXPECT_EQ(results[i].tokens, alone[i].tokens) << "case " << i;
  }
  EXPECT_TRUE(std::count(left.begin(), left.end(), true) > 0);
}

TEST_F(ContinuousBatchTest, RefusesWhatCannotJoinAndKeepsTheRunningRows) {
  const std::vector<Case> cases = Cases(*tasks_);
  ContinuousBatch batch;
  ASSERT_TRUE(batch.Admit({{cases[0].task, cases[0].source, TrainerSettings(), 0}}).ok());
  // Beam search, a missing task, bad limits, another precision: refused, naming why.
  DecodeSettings beam = TrainerSettings();
  beam.beam_size = 4;
  absl::Status s = batch.Admit({{cases[1].task, cases[1].source, beam, 1}});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("beam"), std::string::npos) << s;
  EXPECT_EQ(batch.Admit({{nullptr, cases[1].source, TrainerSettings(), 1}}).code(),
            absl::StatusCode::kInvalidArgument);
  DecodeSettings no_tokens = TrainerSettings();
  no_tokens.max_output_tokens = 0;
  EXPECT_EQ(batch.Admit({{cases[1].task, cases[1].source, no_tokens, 1}}).code(),
            absl::StatusCode::kInvalidArgument);
  auto int8 = TaskModel::Load(kDemoDir, "en-de", {.precision = Precision::kInt8});
  ASSERT_TRUE(int8.ok()) << int8.status();
  EXPECT_FALSE(batch.CanAdmit(**int8));
  s = batch.Admit({{*int8, cases[1].source, TrainerSettings(), 1}});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("cannot share a batch"), std::string::npos) << s;
  // An empty source is the engine's refusal; nothing joins.
  EXPECT_FALSE(batch.Admit({{cases[1].task, {}, TrainerSettings(), 1}}).ok());
  EXPECT_EQ(batch.rows(), 1);
  // The running row decodes on to the tokens it has alone.
  Hypothesis result;
  while (!batch.empty()) {
    ASSERT_TRUE(
        batch.Step([](uint64_t, int32_t) {}, [&](uint64_t, Hypothesis h) { result = std::move(h); })
            .ok());
  }
  EXPECT_EQ(result.tokens, DecodeAlone({cases[0]})[0].tokens);
}

}  // namespace
}  // namespace taskmoe::models
