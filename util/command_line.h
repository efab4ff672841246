// Flag parsing shared by every main (the server, the client, the load tester, the tools):
// --help that lists the program's own flags, then absl's parsing. Header only.
#ifndef TASKMOE_UTIL_COMMAND_LINE_H_
#define TASKMOE_UTIL_COMMAND_LINE_H_

#include <string>
#include <vector>

#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"

namespace taskmoe::util {

// Sets `usage` as the program's usage message and parses the command line; --help and
// --helpshort list the flags defined in `flags_file` (e.g. "tools/extract_main.cc",
// "server/flags.cc"). absl's
// default matches only files named after the binary, which none of ours is ("No flags
// matched"). Returns the positional arguments, argv[0] first.
inline std::vector<char*> ParseCommandLine(int argc, char** argv, absl::string_view usage,
                                           const char* flags_file) {
  absl::FlagsUsageConfig config;
  config.contains_help_flags = [flags_file](absl::string_view file) {
    return absl::EndsWith(file, flags_file);
  };
  config.contains_helpshort_flags = config.contains_help_flags;
  absl::SetFlagsUsageConfig(config);
  absl::SetProgramUsageMessage(usage);
  return absl::ParseCommandLine(argc, argv);
}

}  // namespace taskmoe::util

#endif  // TASKMOE_UTIL_COMMAND_LINE_H_
