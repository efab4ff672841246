// How a TranslateStream call ends when writing its messages failed: the status recorded in
// taskmoe_requests_total and logged, whichever of gRPC's callbacks came first.
#include "server/translation_call.h"

#include <gtest/gtest.h>

namespace taskmoe::server {
namespace {

const absl::Status kDeadline = absl::DeadlineExceededError("deadline");
const absl::Status kCancelled = absl::CancelledError("cancelled");

TEST(StreamEndStatus, WithoutAFailedWriteTheDecodingSaysHowItEnded) {
  for (const absl::Status& decoded :
       {absl::OkStatus(), kDeadline, kCancelled, absl::InternalError("broken")}) {
    EXPECT_EQ(StreamEndStatus(decoded, /*write_failed=*/false, /*cancelled=*/true,
                              /*deadline_passed=*/true),
              decoded);
  }
}

TEST(StreamEndStatus, AWriteThatFailedAfterTheDeadlineIsTheDeadline) {
  // gRPC may fail the write before it calls OnCancel (CI saw it under ASan): not yet
  // cancelled, and decoding, stopped by the write failure, may even have ended well.
  for (const absl::Status& decoded : {absl::OkStatus(), kDeadline, kCancelled}) {
    for (bool cancelled : {false, true}) {
      EXPECT_EQ(StreamEndStatus(decoded, /*write_failed=*/true, cancelled,
                                /*deadline_passed=*/true)
                    .code(),
                absl::StatusCode::kDeadlineExceeded)
          << decoded << " cancelled=" << cancelled;
    }
  }
}

TEST(StreamEndStatus, AWriteThatFailedBeforeTheDeadlineIsACallerGoneAway) {
  EXPECT_EQ(StreamEndStatus(absl::OkStatus(), /*write_failed=*/true, /*cancelled=*/false,
                            /*deadline_passed=*/false)
                .code(),
            absl::StatusCode::kCancelled);
  EXPECT_EQ(StreamEndStatus(absl::InternalError("broken"), /*write_failed=*/true,
                            /*cancelled=*/false, /*deadline_passed=*/false)
                .code(),
            absl::StatusCode::kCancelled);
  // A caller that cancelled: decoding's own status already says so.
  EXPECT_EQ(StreamEndStatus(kCancelled, /*write_failed=*/true, /*cancelled=*/true,
                            /*deadline_passed=*/false),
            kCancelled);
}

}  // namespace
}  // namespace taskmoe::server
