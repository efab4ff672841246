// RequestState's hand-over between the decoding worker and the RPC handler: which tokens a
// handler sees, and when Wait() reports the request done.
#include "server/request_state.h"

#include <gtest/gtest.h>

#include "absl/time/clock.h"

namespace taskmoe::server {
namespace {

// One text per entry of `sentences_per_text`, each of that many sentences.
std::vector<std::vector<models::SourceSentence>> Texts(std::vector<int> sentences_per_text) {
  std::vector<std::vector<models::SourceSentence>> texts;
  for (int n : sentences_per_text) {
    texts.emplace_back(n, models::SourceSentence{.ids = {4, 10, 3}, .separator = " "});
  }
  return texts;
}

RequestState MakeState(bool streams_tokens, int sentences = 1,
                       absl::Time deadline = absl::Now() + absl::Seconds(60)) {
  return RequestState(/*task=*/nullptr, models::DecodeSettings{}, models::TextOptions{},
                      Texts({sentences}), deadline, streams_tokens);
}

TEST(RequestState, StreamHandlerTakesTokensAsTheyCome) {
  RequestState state = MakeState(/*streams_tokens=*/true);
  state.AddToken(0, 17);
  state.AddToken(0, 18);
  // New tokens end the wait before the request is done.
  EXPECT_FALSE(state.Wait(absl::ZeroDuration()));
  EXPECT_EQ(state.TakeTokens(0), (std::vector<int32_t>{17, 18}));
  EXPECT_TRUE(state.TakeTokens(0).empty());
  EXPECT_TRUE(state.first_token_time().has_value());
}

TEST(RequestState, UnaryRequestKeepsNoTokensButTheFirstTokenTime) {
  // Tokens nobody takes would make every Wait() return at once: the handler would spin.
  RequestState state = MakeState(/*streams_tokens=*/false, /*sentences=*/2);
  state.AddToken(0, 17);
  state.AddToken(1, 19);
  EXPECT_TRUE(state.TakeTokens(0).empty());
  EXPECT_TRUE(state.first_token_time().has_value());
  EXPECT_FALSE(state.Wait(absl::ZeroDuration()));
  state.Finish(0, models::Hypothesis{});
  EXPECT_FALSE(state.done());
  state.Finish(1, models::Hypothesis{});
  EXPECT_TRUE(state.Wait(absl::ZeroDuration()));
  EXPECT_TRUE(state.done());
  EXPECT_EQ(state.results().size(), 2u);
}

TEST(RequestState, ProgressListenerHearsOfEveryStreamedTokenAndEverySentenceDone) {
  RequestState state = MakeState(/*streams_tokens=*/true, /*sentences=*/2);
  int calls = 0;
  std::vector<int32_t> seen;
  // The listener runs outside the state's lock: it may take the tokens itself.
  state.SetProgressListener([&] {
    ++calls;
    for (int32_t token : state.TakeTokens(0)) seen.push_back(token);
  });
  state.AddToken(0, 17);
  state.AddToken(0, 18);
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(seen, (std::vector<int32_t>{17, 18}));
  state.Finish(0, models::Hypothesis{});
  state.Finish(1, models::Hypothesis{});
  EXPECT_EQ(calls, 4);
  EXPECT_TRUE(state.done());
}

TEST(RequestState, ProgressListenerOfAUnaryRequestHearsOnlyOfSentencesDone) {
  RequestState state = MakeState(/*streams_tokens=*/false);
  int calls = 0;
  state.SetProgressListener([&] { ++calls; });
  state.AddToken(0, 17);
  EXPECT_EQ(calls, 0);
  state.Finish(0, models::Hypothesis{});
  EXPECT_EQ(calls, 1);
}

TEST(RequestState, StopsOnCancelAndReportsWhy) {
  RequestState state = MakeState(/*streams_tokens=*/false);
  EXPECT_FALSE(state.ShouldStop());
  EXPECT_TRUE(state.StopStatus().ok());
  state.Cancel();
  EXPECT_TRUE(state.ShouldStop());
  EXPECT_EQ(state.StopStatus().code(), absl::StatusCode::kCancelled);
}

TEST(RequestState, ACancellationWithinTheTimeoutsRoundingIsTheDeadlines) {
  // A client's gRPC cancels when its deadline passes, before ours (the timeout it sends is
  // rounded up): 2% of the timeout, at least 5 ms, before the deadline counts as the deadline.
  RequestState due = MakeState(/*streams_tokens=*/false, 1, absl::Now() + absl::Milliseconds(4));
  due.Cancel();
  EXPECT_EQ(due.StopStatus().code(), absl::StatusCode::kDeadlineExceeded);
  // 500 ms: the window is 10 ms.
  RequestState proportional =
      MakeState(/*streams_tokens=*/false, 1, absl::Now() + absl::Milliseconds(500));
  absl::SleepFor(absl::Milliseconds(492));
  proportional.Cancel();
  EXPECT_EQ(proportional.StopStatus().code(), absl::StatusCode::kDeadlineExceeded);
  // A cancellation well before a short deadline is a cancellation.
  RequestState early = MakeState(/*streams_tokens=*/false, 1, absl::Now() + absl::Seconds(1));
  early.Cancel();
  EXPECT_EQ(early.StopStatus().code(), absl::StatusCode::kCancelled);
}

TEST(RequestState, DeadlineWinsOverCancellation) {
  RequestState state = MakeState(/*streams_tokens=*/false, 1, absl::Now() - absl::Seconds(1));
  state.Cancel();
  EXPECT_TRUE(state.ShouldStop());
  EXPECT_EQ(state.StopStatus().code(), absl::StatusCode::kDeadlineExceeded);
}

TEST(RequestState, StreamWaitsOnTheSentenceItReadsAndMovesOnWhenItIsDone) {
  RequestState state = MakeState(/*streams_tokens=*/true, /*sentences=*/2);
  EXPECT_TRUE(state.TakeTokens(0).empty());
  // A later sentence's tokens do not wake a handler still reading sentence 0 (it would spin),
  // and they wait for it.
  state.AddToken(1, 21);
  EXPECT_FALSE(state.Wait(absl::ZeroDuration()));
  state.AddToken(0, 17);
  state.Finish(0, models::Hypothesis{.tokens = {17}, .reached_eos = true});
  EXPECT_TRUE(state.SentenceDone(0));
  EXPECT_FALSE(state.SentenceDone(1));
  EXPECT_EQ(state.TakeTokens(0), (std::vector<int32_t>{17}));
  EXPECT_EQ(state.TakeTokens(1), (std::vector<int32_t>{21}));
  state.Finish(1, models::Hypothesis{.tokens = {21}, .reached_eos = false});
  EXPECT_TRUE(state.Wait(absl::ZeroDuration()));
}

TEST(RequestState, TimePerOutputTokenNeedsTwoTokens) {
  RequestState state(/*task=*/nullptr, models::DecodeSettings{}, models::TextOptions{}, Texts({2}),
                     absl::Now() + absl::Seconds(60), /*streams_tokens=*/false);
  EXPECT_FALSE(state.TimePerOutputToken().has_value());
  state.AddToken(0, 17);
  EXPECT_FALSE(state.TimePerOutputToken().has_value());
  absl::SleepFor(absl::Milliseconds(20));
  state.AddToken(1, 18);
  absl::SleepFor(absl::Milliseconds(20));
  state.AddToken(0, 19);
  // Two gaps of at least 20 ms between three tokens: at least 20 ms a token.
  ASSERT_TRUE(state.TimePerOutputToken().has_value());
  EXPECT_GE(*state.TimePerOutputToken(), absl::Milliseconds(20));
  EXPECT_LE(*state.TimePerOutputToken(), absl::Now() - *state.first_token_time());
}

TEST(RequestState, KeepsEachTextsSentencesTogether) {
  RequestState state(/*task=*/nullptr, models::DecodeSettings{}, models::TextOptions{},
                     Texts({2, 1, 3}), absl::Now() + absl::Seconds(60), /*streams_tokens=*/false);
  EXPECT_EQ(state.size(), 6);
  ASSERT_EQ(state.text_count(), 3);
  EXPECT_EQ(state.TextSentences(0).size(), 2u);
  EXPECT_EQ(state.TextSentences(1).size(), 1u);
  EXPECT_EQ(state.TextSentences(2).size(), 3u);
  for (int s = 0; s < state.size(); ++s) {
    state.Finish(s, models::Hypothesis{.tokens = {100 + s}});
  }
  ASSERT_TRUE(state.done());
  const std::vector<const models::Hypothesis*> third = state.TextResults(2);
  ASSERT_EQ(third.size(), 3u);
  EXPECT_EQ(third[0]->tokens, (std::vector<int32_t>{103}));
  EXPECT_EQ(third[2]->tokens, (std::vector<int32_t>{105}));
}

}  // namespace
}  // namespace taskmoe::server
