// The playground: one self-contained HTML page (no external scripts, fonts or styles) that
// the HTTP gateway serves at / when started with --playground. It lists the tasks
// (GET /v1/tasks), and translates what is typed with POST /v1/translate:stream, showing the
// translation as its tokens arrive, the time to the first token and the whole call, and the
// server's error message when a call fails.
#ifndef TASKMOE_SERVER_PLAYGROUND_H_
#define TASKMOE_SERVER_PLAYGROUND_H_

#include "absl/strings/string_view.h"

namespace taskmoe::server {

absl::string_view PlaygroundPage();

}  // namespace taskmoe::server

#endif  // TASKMOE_SERVER_PLAYGROUND_H_
