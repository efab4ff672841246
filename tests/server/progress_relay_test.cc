// ProgressBatch and ProgressRelay: each request's listener runs once per batch, in order, on
// the relay's thread, and no progress is missed while listeners and workers run together.
#include "server/progress_relay.h"

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "absl/time/clock.h"

namespace taskmoe::server {
namespace {

// A streamed request of `sentences` sentences of three source tokens each.
std::shared_ptr<RequestState> StreamedRequest(int sentences = 1) {
  std::vector<std::vector<models::SourceSentence>> texts(
      1, std::vector<models::SourceSentence>(
             sentences, models::SourceSentence{.ids = {4, 10, 3}, .separator = " "}));
  return std::make_shared<RequestState>(/*task=*/nullptr, models::DecodeSettings{},
                                        models::TextOptions{}, std::move(texts),
                                        absl::Now() + absl::Seconds(60), /*streams_tokens=*/true);
}

TEST(ProgressBatch, RunsEachListenerOnceInTheOrderOfFirstProgress) {
  std::shared_ptr<RequestState> first = StreamedRequest(2);
  std::shared_ptr<RequestState> second = StreamedRequest();
  std::vector<std::string> calls;
  std::vector<int32_t> first_tokens;
  first->SetProgressListener([&] {
    calls.push_back("first");
    for (int32_t t : first->TakeTokens(0)) first_tokens.push_back(t);
  });
  second->SetProgressListener([&] { calls.push_back("second"); });
  ProgressBatch batch;
  first->AddToken(0, 11, &batch);
  second->AddToken(0, 21, &batch);
  first->AddToken(0, 12, &batch);
  first->Finish(1, models::Hypothesis{}, &batch);
  second->Finish(0, models::Hypothesis{}, &batch);
  EXPECT_TRUE(calls.empty()) << "queued listeners run when the batch runs, not before";
  batch.Run();
  EXPECT_EQ(calls, (std::vector<std::string>{"first", "second"}));
  EXPECT_EQ(first_tokens, (std::vector<int32_t>{11, 12}));
  EXPECT_TRUE(batch.empty());
  // Once run, new progress queues the listener again.
  first->AddToken(0, 13, &batch);
  batch.Run();
  EXPECT_EQ(calls, (std::vector<std::string>{"first", "second", "first"}));
  EXPECT_EQ(first_tokens, (std::vector<int32_t>{11, 12, 13}));
}

TEST(ProgressBatch, RequestsWithoutAListenerAreNotQueued) {
  std::shared_ptr<RequestState> request = StreamedRequest();
  ProgressBatch batch;
  request->AddToken(0, 11, &batch);
  request->Finish(0, models::Hypothesis{}, &batch);
  EXPECT_TRUE(batch.empty());
}

TEST(ProgressBatch, WithoutABatchTheListenerRunsAtOnce) {
  std::shared_ptr<RequestState> request = StreamedRequest();
  int calls = 0;
  request->SetProgressListener([&] { ++calls; });
  request->AddToken(0, 11);
  EXPECT_EQ(calls, 1);
  request->Finish(0, models::Hypothesis{});
  EXPECT_EQ(calls, 2);
}

TEST(ProgressBatch, AQueuedRequestLivesUntilItsListenerRan) {
  std::shared_ptr<RequestState> request = StreamedRequest();
  int calls = 0;
  request->SetProgressListener([&] { ++calls; });
  std::weak_ptr<RequestState> weak = request;
  ProgressBatch batch;
  request->Finish(0, models::Hypothesis{}, &batch);
  request.reset();  // the worker's and the handler's references gone
  ASSERT_FALSE(weak.expired());
  batch.Run();
  EXPECT_EQ(calls, 1);
  EXPECT_TRUE(weak.expired());
}

TEST(ProgressRelay, RunsListenersOnItsOwnThread) {
  ProgressRelay relay;
  std::shared_ptr<RequestState> request = StreamedRequest();
  std::atomic<bool> ran{false};
  std::thread::id listener_thread;
  request->SetProgressListener([&] {
    listener_thread = std::this_thread::get_id();
    ran.store(true);
  });
  ProgressBatch batch;
  request->AddToken(0, 11, &batch);
  relay.Deliver(batch);
  EXPECT_TRUE(batch.empty());
  relay.Stop();  // runs what was delivered before it returns
  ASSERT_TRUE(ran.load());
  EXPECT_NE(listener_thread, std::this_thread::get_id());
}

TEST(ProgressRelay, AfterStopDeliveredListenersRunOnTheCallersThread) {
  ProgressRelay relay;
  relay.Stop();
  relay.Stop();  // idempotent
  std::shared_ptr<RequestState> request = StreamedRequest();
  std::thread::id listener_thread;
  request->SetProgressListener([&] { listener_thread = std::this_thread::get_id(); });
  ProgressBatch batch;
  request->AddToken(0, 11, &batch);
  relay.Deliver(batch);
  EXPECT_EQ(listener_thread, std::this_thread::get_id());
  EXPECT_TRUE(batch.empty());
}

TEST(ProgressRelay, NoTokenIsMissedWhileListenersAndWorkersRunTogether) {
  // Two workers decode their own requests step after step and deliver after each step, while
  // the relay's thread runs the listeners, which take the tokens: every token reaches its
  // handler, and the last listener call sees every sentence done.
  constexpr int kRequests = 8;
  constexpr int kSteps = 200;
  ProgressRelay relay;
  std::vector<std::shared_ptr<RequestState>> requests;
  std::vector<int> taken(kRequests, 0);  // touched by the relay's thread only
  std::vector<std::atomic<bool>> saw_done(kRequests);
  for (int r = 0; r < kRequests; ++r) {
    requests.push_back(StreamedRequest());
    RequestState& request = *requests.back();
    request.SetProgressListener([&request, &taken, &saw_done, r] {
      // As slow as a message to gRPC, so that workers add tokens while listeners run.
      absl::SleepFor(absl::Microseconds(20));
      taken[r] += static_cast<int>(request.TakeTokens(0).size());
      if (request.SentenceDone(0)) saw_done[r].store(true);
    });
  }
  std::vector<std::thread> workers;
  for (int w = 0; w < 2; ++w) {
    workers.emplace_back([&, w] {
      ProgressBatch batch;
      for (int step = 0; step < kSteps; ++step) {
        for (int r = w; r < kRequests; r += 2) requests[r]->AddToken(0, step, &batch);
        relay.Deliver(batch);
      }
      for (int r = w; r < kRequests; r += 2) requests[r]->Finish(0, models::Hypothesis{}, &batch);
      relay.Deliver(batch);
    });
  }
  for (std::thread& worker : workers) worker.join();
  relay.Stop();
  for (int r = 0; r < kRequests; ++r) {
    EXPECT_EQ(taken[r], kSteps) << "request " << r;
    EXPECT_TRUE(saw_done[r].load()) << "request " << r;
  }
}

}  // namespace
}  // namespace taskmoe::server
