// Checks of request fields against the server's limits, and PrepareRequest: every check of a
// translation request that needs no transport, with the task's preparation of its texts. Each
// failure is an INVALID_ARGUMENT status whose message names the field and says what is wrong,
// so clients can fix the call. TranslationService admits through PrepareRequest; the request
// fuzzer drives it directly.
#ifndef TASKMOE_SERVER_VALIDATION_H_
#define TASKMOE_SERVER_VALIDATION_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "models/decoding.h"
#include "models/task_model.h"
#include "models/text_pipeline.h"
#include "server/options.h"
#include "taskmoe/v1/translation.pb.h"

namespace taskmoe::server {

// Checks one source text; `field` names it in messages ("texts[3]", "text").
absl::Status CheckText(absl::string_view text, absl::string_view field,
                       const RequestLimits& limits);

// Checks the request id (printable ASCII, bounded) that the server logs and echoes.
absl::Status CheckRequestId(absl::string_view request_id, const RequestLimits& limits);

// DecodeOptions with the server's defaults filled in, after checking them.
absl::StatusOr<models::DecodeSettings> ResolveDecodeOptions(const v1::DecodeOptions& options,
                                                            const RequestLimits& limits);

// How texts are split and unknown pieces replaced (DecodeOptions' text fields), after checking.
absl::StatusOr<models::TextOptions> ResolveTextOptions(const v1::DecodeOptions& options);

// A request's texts as the scheduler queues them, and how to decode them.
struct PreparedRequest {
  models::DecodeSettings settings;
  models::TextOptions text_options;
  std::vector<std::vector<models::SourceSentence>> texts;  // each text's sentences
};

// Checks a request for `task` in the order a client would fix it (the number of texts, the
// decode options, then each text: CheckText, and the task's PrepareText with its length
// limit) and prepares its texts. `stream`: a TranslateStream request (one text, named "text";
// greedy only) rather than Translate (texts named "texts[i]").
absl::StatusOr<PreparedRequest> PrepareRequest(const models::TaskModel& task,
                                               absl::Span<const absl::string_view> texts,
                                               const v1::DecodeOptions& options, bool stream,
                                               const RequestLimits& limits);

}  // namespace taskmoe::server

#endif  // TASKMOE_SERVER_VALIDATION_H_
