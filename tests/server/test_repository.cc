// Random model repositories for the server tests.
#include "tests/server/test_repository.h"

#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "models/extract.h"
#include "models/testing/random_model.h"

namespace taskmoe::server::testing {
namespace {

models::ModelConfig TinyConfig(int d_model) {
  models::ModelShape shape{.d_model = d_model,
                           .num_heads = 4,
                           .encoder_layers = 2,
                           .decoder_layers = 2,
                           .d_ff = 48,
                           .vocab_size = 16000,  // the demo spm.model's
                           .num_experts = 4,
                           .top_k = 2,
                           .max_positions = 512,
                           .num_languages = 3};  // en, de, fr
  models::ModelConfig config = MakeRandomModelConfig(shape, models::ModelKind::kTaskMoe);
  // The tag ids of the demo vocabulary, which random configs do not know.
  const std::map<std::string, int32_t> tag_ids = {{"de", 4}, {"en", 5}, {"fr", 7}};
  for (models::TaskInfo& task : config.tasks) task.target_tag_id = tag_ids.at(task.target);
  return config;
}

absl::Status WriteTasks(const std::string& dir, const std::vector<std::string>& tasks,
                        uint64_t seed, int d_model = 32) {
  const models::ModelConfig config = TinyConfig(d_model);
  absl::StatusOr<std::shared_ptr<const models::SafetensorsFile>> weights =
      models::MakeRandomWeights(config, seed);
  if (!weights.ok()) return weights.status();
  for (const std::string& task : tasks) {
    absl::StatusOr<models::Subnetwork> sub =
        models::ExtractSubnetwork(config, **weights, task, ParentDigest(seed));
    if (!sub.ok()) return sub.status();
    if (absl::Status s = models::WriteModelDirectory(dir + "/" + task, *sub,
                                                     models::StoredDType::kF32, TASKMOE_SPM_MODEL);
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::string ParentDigest(uint64_t seed) { return absl::StrFormat("sha256:%064x", seed); }

std::vector<std::string> RandomRepositoryTasks() { return {"de-en", "en-de", "en-fr", "fr-en"}; }

absl::Status WriteRandomRepository(const std::string& dir, uint64_t seed) {
  return WriteTasks(dir, RandomRepositoryTasks(), seed);
}

absl::Status WriteRandomTask(const std::string& dir, const std::string& task, uint64_t seed) {
  return WriteTasks(dir, {task}, seed);
}

absl::Status WriteRandomTaskOfWidth(const std::string& dir, const std::string& task, uint64_t seed,
                                    int d_model) {
  return WriteTasks(dir, {task}, seed, d_model);
}

void RandomRepositoryTest::SetUp() {
  repository_ = MakeTempDir("repository");
  ASSERT_FALSE(repository_.empty());
  ASSERT_TRUE(WriteRandomRepository(repository_, 1).ok());
}

std::unique_ptr<ServerProcess> RandomRepositoryTest::StartServer(
    const std::vector<std::string>& flags) {
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(repository_, flags);
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? *std::move(server) : nullptr;
}

}  // namespace taskmoe::server::testing
