// Model repositories of tiny random TaskMoE subnetworks for the server's tests: the real
// SentencePiece vocabulary of the demo model (so tokenisation is real) and random weights
// (so translations are junk, but deterministic junk that offline decoding must reproduce).
#ifndef TASKMOE_TESTS_SERVER_TEST_REPOSITORY_H_
#define TASKMOE_TESTS_SERVER_TEST_REPOSITORY_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "tests/common/process.h"
#include "tests/server/server_process.h"

namespace taskmoe::server::testing {

using ::taskmoe::testing::MakeTempDir;

// The parent digest recorded in the subnetworks of the random model of `seed`.
std::string ParentDigest(uint64_t seed);

// The tasks WriteRandomRepository writes: en<->de and en<->fr.
std::vector<std::string> RandomRepositoryTasks();

// Writes one subdirectory per task, extracted from a random TaskMoE model made from `seed`.
absl::Status WriteRandomRepository(const std::string& dir, uint64_t seed);
// Rewrites one task's subdirectory from the model of `seed` (a new version of it).
absl::Status WriteRandomTask(const std::string& dir, const std::string& task, uint64_t seed);
// The same with another model width (d_model; the others use 32): files of a different shape.
absl::Status WriteRandomTaskOfWidth(const std::string& dir, const std::string& task, uint64_t seed,
                                    int d_model);

// A test with a fresh repository of WriteRandomRepository(seed 1) in repository_. Fixtures
// that set up more call RandomRepositoryTest::SetUp() first.
class RandomRepositoryTest : public ::testing::Test {
 protected:
  void SetUp() override;
  // A server on repository_ with `flags`, ready; nullptr (the test failed) when it did not
  // start.
  std::unique_ptr<ServerProcess> StartServer(const std::vector<std::string>& flags = {});

  std::string repository_;
};

}  // namespace taskmoe::server::testing

#endif  // TASKMOE_TESTS_SERVER_TEST_REPOSITORY_H_
