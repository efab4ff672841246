// Checks of request fields against the server's limits. Each failure is an INVALID_ARGUMENT
// status whose message names the field and says what is wrong, so clients can fix the call.
#ifndef TASKMOE_SERVER_VALIDATION_H_
#define TASKMOE_SERVER_VALIDATION_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "models/text_pipeline.h"
#include "server/options.h"
#include "server/request_state.h"
#include "taskmoe/v1/translation.pb.h"

namespace taskmoe::server {

// Checks one source text; `field` names it in messages ("texts[3]", "text").
absl::Status CheckText(absl::string_view text, absl::string_view field,
                       const RequestLimits& limits);

// Checks the request id (printable ASCII, bounded) that the server logs and echoes.
absl::Status CheckRequestId(absl::string_view request_id, const RequestLimits& limits);

// DecodeOptions with the server's defaults filled in, after checking them.
absl::StatusOr<DecodeSettings> ResolveDecodeOptions(const v1::DecodeOptions& options,
                                                    const RequestLimits& limits);

// How texts are split and unknown pieces replaced (DecodeOptions' text fields), after checking.
absl::StatusOr<models::TextOptions> ResolveTextOptions(const v1::DecodeOptions& options);

}  // namespace taskmoe::server

#endif  // TASKMOE_SERVER_VALIDATION_H_
