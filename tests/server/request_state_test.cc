// RequestState's hand-over between the decoding worker and the RPC handler: which tokens a
// handler sees, and when Wait() reports the request done.
#include "server/request_state.h"

#include <gtest/gtest.h>

#include "absl/time/clock.h"

namespace taskmoe::server {
namespace {

RequestState MakeState(bool streams_tokens, int sentences = 1) {
  return RequestState(/*task=*/nullptr, DecodeSettings{},
                      std::vector<std::vector<int32_t>>(sentences, {4, 10, 3}),
                      absl::Now() + absl::Seconds(60), streams_tokens);
}

TEST(RequestState, StreamHandlerTakesTokensAsTheyCome) {
  RequestState state = MakeState(/*streams_tokens=*/true);
  state.AddToken(0, 17);
  state.AddToken(0, 18);
  // New tokens end the wait before the request is done.
  EXPECT_FALSE(state.Wait(absl::ZeroDuration()));
  EXPECT_EQ(state.TakeTokens(), (std::vector<int32_t>{17, 18}));
  EXPECT_TRUE(state.TakeTokens().empty());
  EXPECT_TRUE(state.first_token_time().has_value());
}

TEST(RequestState, UnaryRequestKeepsNoTokensButTheFirstTokenTime) {
  // Tokens nobody takes would make every Wait() return at once: the handler would spin.
  RequestState state = MakeState(/*streams_tokens=*/false, /*sentences=*/2);
  state.AddToken(0, 17);
  state.AddToken(1, 19);
  EXPECT_TRUE(state.TakeTokens().empty());
  EXPECT_TRUE(state.first_token_time().has_value());
  EXPECT_FALSE(state.Wait(absl::ZeroDuration()));
  state.Finish(0, models::Hypothesis{});
  EXPECT_FALSE(state.done());
  state.Finish(1, models::Hypothesis{});
  EXPECT_TRUE(state.Wait(absl::ZeroDuration()));
  EXPECT_TRUE(state.done());
  EXPECT_EQ(state.results().size(), 2u);
}

TEST(RequestState, StopsOnCancelAndReportsWhy) {
  RequestState state = MakeState(/*streams_tokens=*/false);
  EXPECT_FALSE(state.ShouldStop());
  EXPECT_TRUE(state.StopStatus().ok());
  state.Cancel();
  EXPECT_TRUE(state.ShouldStop());
  EXPECT_EQ(state.StopStatus().code(), absl::StatusCode::kCancelled);
}

TEST(RequestState, DeadlineWinsOverCancellation) {
  RequestState state(nullptr, DecodeSettings{}, {{4, 3}}, absl::Now() - absl::Seconds(1),
                     /*streams_tokens=*/false);
  state.Cancel();
  EXPECT_TRUE(state.ShouldStop());
  EXPECT_EQ(state.StopStatus().code(), absl::StatusCode::kDeadlineExceeded);
}

}  // namespace
}  // namespace taskmoe::server
