// models::ContinuousBatch against per-task decoding: subnetworks of the demo model (extracted
// here, loaded through one weight store, so attention and embeddings are shared objects and
// the task-MoE layers are not) decode sentences of several tasks that join a running batch at
// different steps and leave at different steps; every sentence's tokens must be those of
// decoding it alone and those of its per-task batch (f32 greedy, with the trainer's length
// limits), and scores equal within 1e-4 (a row's arithmetic does not depend on its batch, but
// oneDNN may block a GEMM differently for other row counts). The same for beam search, alone
// and beside greedy sentences of other tasks. Also: the full checkpoint mixing tasks by route,
// leaving early (RemoveIf), and the refusals.
#include "models/continuous_batch.h"

#include <algorithm>
#include <functional>
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
    delete alone_greedy_;
    alone_greedy_ = nullptr;
    delete alone_greedy_and_beams_;
    alone_greedy_and_beams_ = nullptr;
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

  using SettingsOf = std::function<DecodeSettings(size_t case_index)>;
  static DecodeSettings Greedy(size_t) { return TrainerSettings(); }
  // Greedy, beam 2, beam 4 with a length penalty, in turn.
  static DecodeSettings GreedyAndBeams(size_t i) {
    DecodeSettings settings = TrainerSettings();
    if (i % 3 == 1) settings.beam_size = 2;
    if (i % 3 == 2) {
      settings.beam_size = 4;
      settings.length_penalty = 0.6f;
    }
    return settings;
  }

  // The hypothesis of each case decoded alone.
  static std::vector<Hypothesis> DecodeAlone(const std::vector<Case>& cases,
                                             const SettingsOf& settings_of = Greedy) {
    std::vector<Hypothesis> results;
    for (size_t i = 0; i < cases.size(); ++i) {
      const Case& c = cases[i];
      auto h = c.task->Decode({c.source}, DecodeOptions(settings_of(i)), nullptr);
      EXPECT_TRUE(h.ok()) << h.status();
      results.push_back(std::move((*h)[0]));
    }
    return results;
  }

  // The hypotheses of Cases(*tasks_) decoded alone, greedy and GreedyAndBeams: the reference
  // of most tests here, decoded once for all of them (under ASan each decoding of the cases
  // takes seconds).
  static const std::vector<Hypothesis>& AloneGreedy() {
    if (alone_greedy_ == nullptr) {
      alone_greedy_ = new std::vector<Hypothesis>(DecodeAlone(Cases(*tasks_)));
    }
    return *alone_greedy_;
  }
  static const std::vector<Hypothesis>& AloneGreedyAndBeams() {
    if (alone_greedy_and_beams_ == nullptr) {
      alone_greedy_and_beams_ =
          new std::vector<Hypothesis>(DecodeAlone(Cases(*tasks_), GreedyAndBeams));
    }
    return *alone_greedy_and_beams_;
  }

  // The hypothesis of each case decoded in its task's per-task batch (decoding.h's Decode of
  // every case of the task at once).
  static std::vector<Hypothesis> DecodePerTask(const std::vector<Case>& cases,
                                               const DecodeSettings& settings) {
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
      auto batch = task->Decode(sources, DecodeOptions(settings), &workspace);
      EXPECT_TRUE(batch.ok()) << batch.status();
      if (!batch.ok()) continue;
      for (size_t j = 0; j < index.size(); ++j) per_task[index[j]] = std::move((*batch)[j]);
    }
    return per_task;
  }

  // How greedy newcomers to a running batch join: Admit at the step boundary,
  // AdmitWithFirstStep there, or AdmitDuringStep while the step waits after decoder layer
  // `case index % layers` (the step they join is the one under way; they take their first step
  // there and decode with the next).
  enum class Join { kAdmit, kFirstStep, kBetweenLayers };

  // Runs `cases` through one ContinuousBatch, case i joining before step join_step(i) (greedy
  // newcomers to a running batch as `join` says); also checks that each greedy case's streamed
  // tokens are its final ones (plus EOS), and that beam search streams none.
  static std::vector<Hypothesis> DecodeContinuously(const std::vector<Case>& cases,
                                                    const std::function<int(size_t)>& join_step,
                                                    const SettingsOf& settings_of = Greedy,
                                                    Join join = Join::kAdmit) {
    const bool first_step = join == Join::kFirstStep;
    ContinuousBatch batch;
    std::vector<Hypothesis> results(cases.size());
    std::vector<std::vector<int32_t>> streamed(cases.size());
    std::vector<bool> done(cases.size(), false);
    size_t finished = 0;
    auto on_token = [&](uint64_t key, int32_t token) { streamed[key].push_back(token); };
    auto on_finished = [&](uint64_t key, Hypothesis h) {
      EXPECT_FALSE(done[key]);
      EXPECT_TRUE(h.status.ok()) << h.status;
      done[key] = true;
      results[key] = std::move(h);
      ++finished;
    };
    for (int step = 0; finished < cases.size(); ++step) {
      std::vector<ContinuousBatch::Sentence> joining, greedy, during_step;
      std::vector<int> during_layer;  // after which layer each of during_step joins
      for (size_t i = 0; i < cases.size(); ++i) {
        if (join_step(i) != step) continue;
        const bool greedy_newcomer = !batch.empty() && settings_of(i).beam_size == 1;
        ContinuousBatch::Sentence sentence{cases[i].task, cases[i].source, settings_of(i), i};
        if (greedy_newcomer && join == Join::kBetweenLayers) {
          during_layer.push_back(
              static_cast<int>(i % cases[i].task->transformer().config().decoder_layers));
          during_step.push_back(std::move(sentence));
        } else {
          (greedy_newcomer && first_step ? greedy : joining).push_back(std::move(sentence));
        }
      }
      EXPECT_TRUE(batch.Admit(std::move(joining)).ok());
      const int64_t before = batch.sentences();
      const size_t newcomers = greedy.size(), finished_before = finished;
      EXPECT_TRUE(batch.AdmitWithFirstStep(std::move(greedy), on_token, on_finished).ok());
      EXPECT_EQ(batch.sentences() + static_cast<int64_t>(finished - finished_before),
                before + static_cast<int64_t>(newcomers));
      EXPECT_LE(batch.distinct_tasks(), static_cast<int>(kTasks.size()));
      int layer = 0;
      const int64_t running = batch.rows();
      auto after_each_layer = [&] {
        std::vector<ContinuousBatch::Sentence> now;
        for (size_t j = 0; j < during_step.size(); ++j) {
          if (during_layer[j] == layer) now.push_back(std::move(during_step[j]));
        }
        ++layer;
        if (now.empty()) return;
        const int64_t sentences_before = batch.sentences();
        const size_t count = now.size(), finished_before_layer = finished;
        std::vector<uint64_t> keys;
        for (const ContinuousBatch::Sentence& sentence : now) keys.push_back(sentence.key);
        absl::Status admitted = batch.AdmitDuringStep(std::move(now), on_token, on_finished);
        EXPECT_TRUE(admitted.ok()) << admitted;
        // Their first token comes now, not with the step under way.
        for (uint64_t key : keys) EXPECT_EQ(streamed[key].size(), 1u) << "case " << key;
        // Counted at once (the scheduler's free rows), decoded from the next step on.
        EXPECT_EQ(batch.sentences() + static_cast<int64_t>(finished - finished_before_layer),
                  sentences_before + static_cast<int64_t>(count));
        EXPECT_EQ(batch.rows(), running);
      };
      absl::Status s = batch.Step(on_token, on_finished, after_each_layer);
      EXPECT_TRUE(s.ok()) << s;
      if (!s.ok() || step > 1000) break;
    }
    EXPECT_TRUE(batch.empty());
    for (size_t i = 0; i < cases.size(); ++i) {
      std::vector<int32_t> expected = results[i].tokens;
      if (results[i].reached_eos) expected.push_back(cases[i].task->eos_id());
      if (settings_of(i).beam_size > 1) expected.clear();
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
  static std::vector<Hypothesis>* alone_greedy_;
  static std::vector<Hypothesis>* alone_greedy_and_beams_;
};

std::map<std::string, std::shared_ptr<const TaskModel>>* ContinuousBatchTest::tasks_ = nullptr;
std::string* ContinuousBatchTest::dir_ = nullptr;
std::vector<Hypothesis>* ContinuousBatchTest::alone_greedy_ = nullptr;
std::vector<Hypothesis>* ContinuousBatchTest::alone_greedy_and_beams_ = nullptr;

TEST_F(ContinuousBatchTest, SubnetworksShareTheirAttentionButNotTheirExperts) {
  const TransformerModel& en_de = tasks_->at("en-de")->transformer();
  const TransformerModel& fr_en = tasks_->at("fr-en")->transformer();
  EXPECT_TRUE(TransformerModel::CanShareBatch(en_de, fr_en));
  // What makes the grouping matter: both kinds of layer in one batch.
  const StepCost a = en_de.DecoderStepCost(tasks_->at("en-de")->route());
  EXPECT_GT(a.weight_bytes, 0u);
  // One vocabulary file, read once for every task of the store.
  EXPECT_EQ(&tasks_->at("en-de")->tokenizer().model(), &tasks_->at("fr-en")->tokenizer().model());
}

TEST_F(ContinuousBatchTest, JoiningAtAnyStepGivesTheTokensOfDecodingAlone) {
  const std::vector<Case> cases = Cases(*tasks_);
  ASSERT_GT(cases.size(), 20u);
  const std::vector<Hypothesis>& alone = AloneGreedy();
  // All at once; one by one at every step; in bursts every third step (rows of one task end
  // up apart in the batch, so their own layers run on gathered rows).
  ExpectSameHypotheses(alone, DecodeContinuously(cases, [](size_t) { return 0; }));
  ExpectSameHypotheses(alone,
                       DecodeContinuously(cases, [](size_t i) { return static_cast<int>(i); }));
  ExpectSameHypotheses(
      alone, DecodeContinuously(cases, [](size_t i) { return static_cast<int>(i / 4) * 3; }));
}

TEST_F(ContinuousBatchTest, NewcomersTakingTheirFirstStepApartGetTheTokensOfDecodingAlone) {
  // AdmitWithFirstStep: greedy newcomers step once by themselves, then their rows (caches,
  // lengths, positions) join the running batch; beside beam-searched sentences too.
  const std::vector<Case> cases = Cases(*tasks_);
  ExpectSameHypotheses(AloneGreedy(), DecodeContinuously(
                                          cases, [](size_t i) { return static_cast<int>(i); },
                                          Greedy, Join::kFirstStep));
  ExpectSameHypotheses(AloneGreedyAndBeams(),
                       DecodeContinuously(
                           cases, [](size_t i) { return static_cast<int>(i / 4) * 3; },
                           GreedyAndBeams, Join::kFirstStep));
}

TEST_F(ContinuousBatchTest, NewcomersAdmittedBetweenLayersGetTheTokensOfDecodingAlone) {
  // AdmitDuringStep: greedy newcomers encoded and stepped once while a step waits after one of
  // its decoder layers (each layer in turn, several at one layer, beside beam-searched rows),
  // joining when that step ends.
  const std::vector<Case> cases = Cases(*tasks_);
  ExpectSameHypotheses(AloneGreedy(), DecodeContinuously(
                                          cases, [](size_t i) { return static_cast<int>(i); },
                                          Greedy, Join::kBetweenLayers));
  ExpectSameHypotheses(AloneGreedyAndBeams(),
                       DecodeContinuously(
                           cases, [](size_t i) { return static_cast<int>(i / 6) * 2; },
                           GreedyAndBeams, Join::kBetweenLayers));
}

TEST_F(ContinuousBatchTest, ScoresOnlyTheSentencesThatAskForThem) {
  // Every other greedy sentence asks for its score: those get the exact one of decoding alone
  // (a step with one of them computes the log-sum-exp for every row), the others none, however
  // the two kinds share steps.
  const std::vector<Case> cases = Cases(*tasks_);
  const SettingsOf every_other = [](size_t i) {
    DecodeSettings settings = TrainerSettings();
    settings.exact_scores = i % 2 == 0;
    return settings;
  };
  const std::vector<Hypothesis> alone = DecodeAlone(cases, every_other);
  for (size_t i = 0; i < alone.size(); ++i) {
    if (i % 2 == 0) {
      EXPECT_LT(alone[i].score, 0.0f) << "case " << i;
    } else {
      EXPECT_EQ(alone[i].score, 0.0f) << "case " << i;
    }
  }
  ExpectSameHypotheses(alone,
                       DecodeContinuously(
                           cases, [](size_t i) { return static_cast<int>(i / 3); }, every_other));
  ExpectSameHypotheses(alone, DecodeContinuously(
                                  cases, [](size_t i) { return static_cast<int>(i); }, every_other,
                                  Join::kBetweenLayers));
}

TEST_F(ContinuousBatchTest, MatchesPerTaskBatches) {
  const std::vector<Case> cases = Cases(*tasks_);
  ExpectSameHypotheses(DecodePerTask(cases, TrainerSettings()),
                       DecodeContinuously(cases, [](size_t i) { return static_cast<int>(i % 7); }));
}

TEST_F(ContinuousBatchTest, TheFullCheckpointMixesTasksByRoute) {
  // One model object per task through one store: every weight shared; each task-MoE layer
  // runs each distinct expert once over the rows of every task that chose it.
  auto store = std::make_shared<WeightStore>();
  std::map<std::string, std::shared_ptr<const TaskModel>> full;
  for (const std::string& task : kTasks) {
    auto loaded = TaskModel::Load(kDemoDir, task, {.weight_store = store});
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    full[task] = *std::move(loaded);
  }
  // What makes the experts' grouping matter: two tasks whose choices in a layer share one
  // expert but not both.
  bool partial_overlap = false;
  for (const auto& [a_id, a] : full) {
    for (const auto& [b_id, b] : full) {
      for (size_t i = 0; i < a->route().decoder.size(); ++i) {
        const std::vector<int>& x = a->route().decoder[i].experts;
        const std::vector<int>& y = b->route().decoder[i].experts;
        const auto shared = std::count_if(
            x.begin(), x.end(), [&](int e) { return std::find(y.begin(), y.end(), e) != y.end(); });
        partial_overlap = partial_overlap || (shared > 0 && shared < static_cast<long>(x.size()));
      }
    }
  }
  EXPECT_TRUE(partial_overlap);
  const std::vector<Case> cases = Cases(full);
  ExpectSameHypotheses(DecodeAlone(cases),
                       DecodeContinuously(cases, [](size_t i) { return static_cast<int>(i % 3); }));
}

TEST_F(ContinuousBatchTest, UnfoldedSubnetworksShareExpertsAndGiveTheTokensOfTheFullModel) {
  // Subnetworks extracted with their experts kept apart, through one store: an expert two
  // tasks chose is one object, and a mixed step runs it once for both. Their arithmetic is the
  // full checkpoint's routed by task, so their tokens are those of the full model alone.
  absl::StatusOr<ModelConfig> config = LoadModelConfig(kDemoDir);
  ASSERT_TRUE(config.ok()) << config.status();
  auto weights = SafetensorsFile::Open(kDemoDir + "/model.safetensors");
  ASSERT_TRUE(weights.ok()) << weights.status();
  auto store = std::make_shared<WeightStore>();
  auto full_store = std::make_shared<WeightStore>();  // the full checkpoint's tensors, once
  std::map<std::string, std::shared_ptr<const TaskModel>> unfolded, full;
  for (const std::string& task : kTasks) {
    absl::StatusOr<Subnetwork> sub = ExtractSubnetwork(
        *config, **weights, task, "sha256:" + std::string(64, '0'), {.keep_experts = true});
    ASSERT_TRUE(sub.ok()) << sub.status();
    const std::string dir = *dir_ + "/unfolded/" + task;
    ASSERT_TRUE(WriteModelDirectory(dir, *sub, StoredDType::kF32, kDemoDir + "/spm.model").ok());
    auto loaded = TaskModel::Load(dir, task, {.weight_store = store});
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    unfolded[task] = *std::move(loaded);
    auto whole = TaskModel::Load(kDemoDir, task, {.weight_store = full_store});
    ASSERT_TRUE(whole.ok()) << whole.status();
    full[task] = *std::move(whole);
  }
  // The five subnetworks hold fewer bytes than the five folded ones through a store of their
  // own: the experts their tasks share are held once.
  auto folded_store = std::make_shared<WeightStore>();
  std::vector<std::shared_ptr<const TaskModel>> folded;
  for (const std::string& task : kTasks) {
    auto loaded = TaskModel::Load(*dir_ + "/" + task, task, {.weight_store = folded_store});
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    folded.push_back(*std::move(loaded));
  }
  EXPECT_LT(store->total_bytes(), folded_store->total_bytes());
  EXPECT_GT(store->shared_bytes(), folded_store->shared_bytes());
  const std::vector<Case> alone_cases = Cases(full);
  const std::vector<Case> cases = Cases(unfolded);
  ASSERT_EQ(cases.size(), alone_cases.size());
  const std::vector<Hypothesis> alone = DecodeAlone(alone_cases);
  ExpectSameHypotheses(alone, DecodeAlone(cases));
  ExpectSameHypotheses(alone,
                       DecodeContinuously(cases, [](size_t i) { return static_cast<int>(i % 5); }));
  ExpectSameHypotheses(
      DecodeAlone(alone_cases, GreedyAndBeams),
      DecodeContinuously(
          cases, [](size_t i) { return static_cast<int>(i / 3); }, GreedyAndBeams));
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
  EXPECT_NE(&apart.at("en-de")->tokenizer().model(), &apart.at("fr-en")->tokenizer().model());
  const std::vector<Case> cases = Cases(apart);
  ExpectSameHypotheses(DecodeAlone(cases),
                       DecodeContinuously(cases, [](size_t i) { return static_cast<int>(i / 3); }));
}

TEST_F(ContinuousBatchTest, BeamSearchBesideGreedyRowsGivesTheHypothesesOfDecodingAlone) {
  const std::vector<Case> cases = Cases(*tasks_);
  const std::vector<Hypothesis>& alone = AloneGreedyAndBeams();
  // Beam search must differ from greedy somewhere, or this would test nothing beyond greedy.
  const std::vector<Hypothesis>& greedy = AloneGreedy();
  int differ = 0;
  for (size_t i = 0; i < cases.size(); ++i) differ += alone[i].tokens != greedy[i].tokens;
  EXPECT_GT(differ, 0);
  ExpectSameHypotheses(alone, DecodeContinuously(
                                  cases, [](size_t) { return 0; }, GreedyAndBeams));
  ExpectSameHypotheses(alone,
                       DecodeContinuously(
                           cases, [](size_t i) { return static_cast<int>(i); }, GreedyAndBeams));
  ExpectSameHypotheses(
      alone, DecodeContinuously(
                 cases, [](size_t i) { return static_cast<int>(i / 4) * 3; }, GreedyAndBeams));
}

TEST_F(ContinuousBatchTest, BeamSearchMatchesPerTaskBeamBatches) {
  // Every case beam 3: the per-task batches of decoding.h's BeamDecode against one continuous
  // batch of every task, sentences joining over seven steps.
  const std::vector<Case> cases = Cases(*tasks_);
  DecodeSettings beam = TrainerSettings();
  beam.beam_size = 3;
  beam.length_penalty = 1.0f;
  ExpectSameHypotheses(
      DecodePerTask(cases, beam),
      DecodeContinuously(
          cases, [](size_t i) { return static_cast<int>(i % 7); }, [&](size_t) { return beam; }));
}

// The engine under a batch mixing greedy and beam rows: groups marked full_logits get the
// logits DecodeStep gives them (in batch order, packed), the other rows the greedy head of
// those logits. Through one shared output projection (a run of logits straight into place),
// through projections of their own (tasks loaded apart: each group its own run, copied into
// place), and with every row asking for logits.
TEST_F(ContinuousBatchTest, FullLogitsGroupsGetTheLogitsOfDecodeStep) {
  std::map<std::string, std::shared_ptr<const TaskModel>> apart;
  for (const std::string task : {"en-de", "fr-en", "en-ru"}) {
    auto loaded = TaskModel::Load(*dir_ + "/" + task, task, {});
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    apart[task] = *std::move(loaded);
  }
  const std::vector<std::string> order = {"en-de", "fr-en", "en-de", "en-ru", "fr-en"};
  const std::vector<std::vector<bool>> logit_choices = {{false, true, false, true, false},
                                                        {true, false, false, false, true},
                                                        {true, true, true, true, true}};
  for (const auto* tasks : {tasks_, &apart}) {
    std::vector<std::vector<int32_t>> sources;
    std::vector<RowGroup> groups;
    for (const std::string& id : order) {
      const TaskModel& task = *tasks->at(id);
      auto prepared = task.PrepareText(kTexts.at(task.description().source_language)[0], {});
      ASSERT_TRUE(prepared.ok()) << prepared.status();
      sources.push_back((*prepared)[0].ids);
      groups.push_back({&task.transformer(), &task.route(), 1});
    }
    const TaskModel& first = *tasks->at(order[0]);
    auto started = [&](DecoderState& state) {
      EncoderOutput encoder;
      ASSERT_TRUE(TransformerModel::Encode(groups, sources, encoder).ok());
      ASSERT_TRUE(first.transformer().StartDecoding(EncoderOutput(), 8, first.route(), state).ok());
      ASSERT_TRUE(TransformerModel::AddRows(groups, encoder, 8, state).ok());
    };
    const std::vector<int32_t> tokens(order.size(),
                                      first.transformer().config().special_tokens.bos);
    DecoderState reference_state;
    started(reference_state);
    kernels::Tensor reference;
    ASSERT_TRUE(TransformerModel::DecodeStep(groups, tokens, reference_state, reference).ok());
    const int64_t vocab = reference.dim(1);
    for (const std::vector<bool>& wants_logits : logit_choices) {
      for (size_t g = 0; g < groups.size(); ++g) groups[g].full_logits = wants_logits[g];
      DecoderState state;
      started(state);
      GreedyHead head;
      ASSERT_TRUE(TransformerModel::DecodeStepGreedy(groups, tokens, state, head).ok());
      int64_t packed = 0;
      for (size_t r = 0; r < order.size(); ++r) {
        const float* expected = reference.data<float>() + r * vocab;
        if (wants_logits[r]) {
          const float* actual = head.logits.data<float>() + packed * vocab;
          for (int64_t j = 0; j < vocab; ++j) ASSERT_NEAR(actual[j], expected[j], 1e-4) << r;
          ++packed;
        } else {
          const int32_t best = head.best.data<int32_t>()[r];
          EXPECT_EQ(best, std::max_element(expected, expected + vocab) - expected) << r;
          EXPECT_NEAR(head.best_logit.data<float>()[r], expected[best], 1e-4) << r;
        }
      }
      EXPECT_EQ(head.logits.dim(0), packed);
    }
  }
}

TEST_F(ContinuousBatchTest, RowsLeaveWhenTheCallerSaysAndTheOthersAreUnaffected) {
  // Greedy and beam-searched sentences; a leaving beam takes all its rows.
  const std::vector<Case> cases = Cases(*tasks_);
  const std::vector<Hypothesis>& alone = AloneGreedyAndBeams();
  ContinuousBatch batch;
  std::vector<ContinuousBatch::Sentence> joining;
  int64_t rows = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    joining.push_back({cases[i].task, cases[i].source, GreedyAndBeams(i), i});
    rows += ContinuousBatch::RowsOf(GreedyAndBeams(i));
  }
  ASSERT_TRUE(batch.Admit(std::move(joining)).ok());
  EXPECT_EQ(batch.rows(), rows);
  EXPECT_EQ(batch.sentences(), static_cast<int64_t>(cases.size()));
  std::vector<Hypothesis> results(cases.size());
  std::vector<bool> left(cases.size(), false);
  int64_t finished_count = 0;
  auto finish = [&](uint64_t key, Hypothesis h) {
    results[key] = std::move(h);
    ++finished_count;
  };
  for (int step = 0; !batch.empty(); ++step) {
    if (step == 2) {
      const int64_t before = batch.rows();
      int64_t leaving_rows = 0;
      ASSERT_TRUE(batch
                      .RemoveIf([](uint64_t key) { return key % 4 < 2; },
                                [&](uint64_t key, Hypothesis h) {
                                  EXPECT_FALSE(left[key]) << "told twice";
                                  left[key] = true;
                                  leaving_rows += ContinuousBatch::RowsOf(GreedyAndBeams(key));
                                  EXPECT_LE(h.tokens.size(), 2u);
                                  results[key] = std::move(h);
                                })
                      .ok());
      EXPECT_EQ(batch.rows(), before - leaving_rows);
    }
    ASSERT_TRUE(batch.Step([](uint64_t, int32_t) {}, finish).ok());
    // Every sentence is counted once, whatever its rows.
    const auto gone = finished_count + std::count(left.begin(), left.end(), true);
    EXPECT_EQ(batch.sentences(), static_cast<int64_t>(cases.size()) - gone) << "step " << step;
  }
  EXPECT_EQ(batch.sentences(), 0);
  bool beam_left = false;
  for (size_t i = 0; i < cases.size(); ++i) {
    beam_left = beam_left || (left[i] && GreedyAndBeams(i).beam_size > 1);
    if (left[i]) continue;
    EXPECT_EQ(results[i].tokens, alone[i].tokens) << "case " << i;
  }
  EXPECT_TRUE(std::count(left.begin(), left.end(), true) > 0);
  EXPECT_TRUE(beam_left);
}

// AllRowsOf (the server's test for a first step apart, --prefill_first_when_mixed): true for
// an empty batch and for one whose rows are all of the task, false once another task's runs.
TEST_F(ContinuousBatchTest, KnowsWhetherEveryRowIsOfOneTask) {
  const std::vector<Case> cases = Cases(*tasks_);
  size_t other = 1;
  while (other < cases.size() && cases[other].task == cases[0].task) ++other;
  ASSERT_LT(other, cases.size()) << "the cases need two tasks";
  const TaskModel& first = *cases[0].task;
  const TaskModel& second = *cases[other].task;
  ContinuousBatch batch;
  EXPECT_TRUE(batch.AllRowsOf(first));
  ASSERT_TRUE(batch.Admit({{cases[0].task, cases[0].source, TrainerSettings(), 0}}).ok());
  EXPECT_TRUE(batch.AllRowsOf(first));
  EXPECT_FALSE(batch.AllRowsOf(second));
  ASSERT_TRUE(batch.Admit({{cases[other].task, cases[other].source, TrainerSettings(), 1}}).ok());
  EXPECT_FALSE(batch.AllRowsOf(first));
  EXPECT_FALSE(batch.AllRowsOf(second));
  EXPECT_EQ(batch.distinct_tasks(), 2);
}

TEST_F(ContinuousBatchTest, RefusesWhatCannotJoinAndKeepsTheRunningRows) {
  const std::vector<Case> cases = Cases(*tasks_);
  ContinuousBatch batch;
  ASSERT_TRUE(batch.Admit({{cases[0].task, cases[0].source, TrainerSettings(), 0}}).ok());
  // A bad beam size, a missing task, bad limits, another precision: refused, naming why.
  DecodeSettings beam = TrainerSettings();
  beam.beam_size = 0;
  absl::Status s = batch.Admit({{cases[1].task, cases[1].source, beam, 1}});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("beam size"), std::string::npos) << s;
  DecodeSettings penalty = TrainerSettings();
  penalty.beam_size = 4;
  penalty.length_penalty = -1.0f;
  s = batch.Admit({{cases[1].task, cases[1].source, penalty, 1}});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("length penalty"), std::string::npos) << s;
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
  // Taking a first step apart: greedy sentences of a compatible task only; refused, nobody is
  // told and nothing joins.
  int told = 0;
  auto tell = [&](uint64_t, Hypothesis) { ++told; };
  auto ignore = [](uint64_t, int32_t) {};
  DecodeSettings beam_two = TrainerSettings();
  beam_two.beam_size = 2;
  s = batch.AdmitWithFirstStep({{cases[1].task, cases[1].source, beam_two, 1}}, ignore, tell);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("beam 2"), std::string::npos) << s;
  s = batch.AdmitWithFirstStep({{*int8, cases[1].source, TrainerSettings(), 1}}, ignore, tell);
  EXPECT_NE(s.message().find("cannot share a batch"), std::string::npos) << s;
  EXPECT_FALSE(
      batch.AdmitWithFirstStep({{cases[1].task, {}, TrainerSettings(), 1}}, ignore, tell).ok());
  EXPECT_EQ(told, 0);
  EXPECT_EQ(batch.rows(), 1);
  // Joining during a step: only between its layers, greedy and compatible; a refusal there
  // leaves the step and its rows as they were.
  s = batch.AdmitDuringStep({{cases[1].task, cases[1].source, TrainerSettings(), 1}}, ignore, tell);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  std::vector<absl::Status> during;
  s = batch.Step(ignore, tell, [&] {
    during.push_back(
        batch.AdmitDuringStep({{cases[1].task, cases[1].source, beam_two, 1}}, ignore, tell));
    during.push_back(
        batch.AdmitDuringStep({{*int8, cases[1].source, TrainerSettings(), 1}}, ignore, tell));
    during.push_back(
        batch.AdmitDuringStep({{cases[1].task, {}, TrainerSettings(), 1}}, ignore, tell));
  });
  EXPECT_TRUE(s.ok()) << s;
  ASSERT_EQ(during.size(),
            3u * static_cast<size_t>(cases[0].task->transformer().config().decoder_layers));
  EXPECT_EQ(during[0].code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(during[0].message().find("beam 2"), std::string::npos) << during[0];
  EXPECT_NE(during[1].message().find("cannot share a batch"), std::string::npos) << during[1];
  EXPECT_FALSE(during[2].ok());
  EXPECT_EQ(told, 0);
  EXPECT_EQ(batch.rows(), 1);
  EXPECT_EQ(batch.sentences(), 1);
  // Decoder states join only states of as many decoder layers, and never themselves.
  DecoderState running, layerless;
  ASSERT_TRUE(cases[0]
                  .task->transformer()
                  .StartDecoding(EncoderOutput(), 8, cases[0].task->route(), running)
                  .ok());
  layerless.batch = 1;
  s = running.AppendRows(layerless);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("0 decoder layers cannot join"), std::string::npos) << s;
  EXPECT_FALSE(running.AppendRows(running).ok());
  EXPECT_EQ(running.batch, 0);
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
