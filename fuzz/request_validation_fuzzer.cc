// Fuzz target: request validation of the server (server/validation.h), on what a client can
// send: the input parsed as a serialised taskmoe.v1.TranslateRequest and as a
// TranslateStreamRequest, and the raw input as one text.
//
// Each request goes through what TranslationCore::Admit runs before anything is queued,
// under the default limits and under tight ones: CheckRequestId and server::PrepareRequest (the
// text count, the decode options, each text's CheckText and its preparation by a task of the
// demo model, models::TaskModel::PrepareText), the very functions Admit calls. Beyond "no
// crash", the fuzzer checks that what passes really is within the limits and ready for the
// decoder (target tag, ids in the vocabulary, EOS, the length limit), that a refusal is
// INVALID_ARGUMENT naming the field, and that CheckText and models::CountUtf8Chars agree with a
// character-by-character count over models::ValidUtf8CharLength on which texts are well formed
// and how many characters they hold.
// Seeds: fuzz/corpus/request_validation/ (serialised requests written by fuzz/make_seeds.py).
#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "fuzz/fuzz_util.h"
#include "google/protobuf/stubs/logging.h"
#include "models/task_model.h"
#include "models/text/utf8.h"
#include "models/weight_store.h"
#include "server/options.h"
#include "server/validation.h"
#include "taskmoe/v1/translation.pb.h"

namespace taskmoe::fuzz {
namespace {

using server::RequestLimits;

struct Context {
  // Two tasks of the demo model (the input's size picks one), sharing their weights.
  std::vector<std::shared_ptr<const models::TaskModel>> tasks;
  RequestLimits limits[2];  // the server's defaults, and tight ones
};

const Context& GetContext() {
  static const Context* const context = [] {
    // A proto3 string field with invalid UTF-8 fails the parse with an ERROR log line per
    // input; the refusal is what is tested, the log line only slows the fuzzer down.
    google::protobuf::SetLogHandler(
        +[](google::protobuf::LogLevel, const char*, int, const std::string&) {});
    auto* c = new Context;
    auto store = std::make_shared<models::WeightStore>();
    for (const char* task : {"en-de", "de-en"}) {
      absl::StatusOr<std::shared_ptr<const models::TaskModel>> model =
          models::TaskModel::Load(DemoModelDir(), task, {.weight_store = store});
      TASKMOE_FUZZ_CHECK(model.ok(), std::string(model.status().message()));
      c->tasks.push_back(*std::move(model));
    }
    RequestLimits& tight = c->limits[1];
    tight.max_texts_per_request = 2;
    tight.max_text_chars = 5;
    tight.max_output_tokens = 1;
    tight.max_beam_size = 1;
    tight.max_request_id_bytes = 4;
    return c;
  }();
  return *context;
}

// server/ takes absl::string_view, which Debian's Abseil does not alias to std::string_view.
absl::string_view Absl(std::string_view text) { return {text.data(), text.size()}; }

// Characters of `text` by the tokenizer's decoder, or -1 (and the offset of the first bad
// sequence) when it is not well formed.
int64_t ReferenceCount(std::string_view text, size_t* error_offset) {
  int64_t chars = 0;
  for (size_t i = 0; i < text.size(); ++chars) {
    const int length = models::ValidUtf8CharLength(text.substr(i));
    if (length == 0) {
      *error_offset = i;
      return -1;
    }
    i += static_cast<size_t>(length);
  }
  return chars;
}

// CheckText on one text, against a count of its own.
void CheckOneText(const RequestLimits& limits, std::string_view text, const std::string& field) {
  size_t offset = 0, reference_offset = 0;
  const int64_t chars = models::CountUtf8Chars(text, &offset);
  const int64_t reference = ReferenceCount(text, &reference_offset);
  TASKMOE_FUZZ_CHECK(chars == reference, absl::StrCat("CountUtf8Chars says ", chars,
                                                      ", the tokenizer's decoder ", reference));
  if (chars < 0) {
    TASKMOE_FUZZ_CHECK(offset == reference_offset,
                       absl::StrCat("bad byte at ", offset, " or ", reference_offset));
  }
  const absl::Status status = server::CheckText(Absl(text), field, limits);
  const bool acceptable = !text.empty() && chars >= 0 && chars <= limits.max_text_chars;
  TASKMOE_FUZZ_CHECK(status.ok() == acceptable,
                     absl::StrCat("CheckText: ", status.ToString(), " for ", chars, " chars"));
  if (!status.ok()) {
    TASKMOE_FUZZ_CHECK(absl::StartsWith(status.message(), field + ": "),
                       std::string(status.message()));
  }
}

// A whole request through PrepareRequest, as Admit sends it.
void CheckPrepared(const RequestLimits& limits, const models::TaskModel& task,
                   const std::vector<absl::string_view>& texts, const v1::DecodeOptions& options,
                   bool stream) {
  const absl::StatusOr<server::PreparedRequest> prepared =
      server::PrepareRequest(task, texts, options, stream, limits);
  if (!prepared.ok()) {
    const absl::Status& status = prepared.status();
    TASKMOE_FUZZ_CHECK(status.code() == absl::StatusCode::kInvalidArgument, status.ToString());
    TASKMOE_FUZZ_CHECK(absl::StartsWith(status.message(), stream ? "text: " : "texts") ||
                           absl::StartsWith(status.message(), "options."),
                       status.ToString());
    return;
  }
  TASKMOE_FUZZ_CHECK(!texts.empty() && prepared->texts.size() == texts.size(),
                     absl::StrCat(prepared->texts.size(), " prepared of ", texts.size()));
  TASKMOE_FUZZ_CHECK(stream || static_cast<int>(texts.size()) <= limits.max_texts_per_request,
                     absl::StrCat(texts.size(), " texts"));
  const models::DecodeSettings& settings = prepared->settings;
  TASKMOE_FUZZ_CHECK(settings.beam_size >= 1 && settings.beam_size <= limits.max_beam_size &&
                         (!stream || settings.beam_size == 1),
                     absl::StrCat("beam_size ", settings.beam_size));
  for (size_t i = 0; i < texts.size(); ++i) {
    TASKMOE_FUZZ_CHECK(server::CheckText(texts[i], "text", limits).ok(), "an accepted bad text");
    TASKMOE_FUZZ_CHECK(!prepared->texts[i].empty(), "a text without sentences");
    for (const models::SourceSentence& sentence : prepared->texts[i]) {
      const std::vector<int32_t>& ids = sentence.ids;
      TASKMOE_FUZZ_CHECK(
          ids.size() >= 2 && static_cast<int64_t>(ids.size()) <= task.max_source_tokens(),
          absl::StrCat(ids.size(), " source tokens"));
      TASKMOE_FUZZ_CHECK(ids.front() == task.info().target_tag_id && ids.back() == task.eos_id(),
                         "a source without its target tag or EOS");
      for (int32_t id : ids) {
        TASKMOE_FUZZ_CHECK(id >= 0 && id < task.tokenizer().vocab_size(), absl::StrCat(id));
      }
    }
  }
}

void CheckRequestId(const RequestLimits& limits, std::string_view request_id) {
  const absl::Status status = server::CheckRequestId(Absl(request_id), limits);
  bool acceptable = request_id.size() <= static_cast<size_t>(limits.max_request_id_bytes);
  for (char c : request_id) acceptable = acceptable && c >= 0x20 && c <= 0x7E;
  TASKMOE_FUZZ_CHECK(status.ok() == acceptable, status.ToString());
  if (!status.ok()) {
    TASKMOE_FUZZ_CHECK(absl::StartsWith(status.message(), "request_id: "), status.ToString());
  }
}

void CheckOptions(const RequestLimits& limits, const v1::DecodeOptions& options) {
  absl::StatusOr<models::DecodeSettings> settings = server::ResolveDecodeOptions(options, limits);
  if (!settings.ok()) {
    TASKMOE_FUZZ_CHECK(absl::StartsWith(settings.status().message(), "options."),
                       settings.status().ToString());
    return;
  }
  TASKMOE_FUZZ_CHECK(settings->beam_size >= 1 && settings->beam_size <= limits.max_beam_size,
                     absl::StrCat("beam_size ", settings->beam_size));
  TASKMOE_FUZZ_CHECK(
      settings->max_output_tokens >= 1 && settings->max_output_tokens <= limits.max_output_tokens,
      absl::StrCat("max_output_tokens ", settings->max_output_tokens));
  TASKMOE_FUZZ_CHECK(settings->length_penalty >= 0.0f && settings->length_penalty <= 10.0f,
                     absl::StrCat("length_penalty ", settings->length_penalty));
}

void Run(std::string_view input) {
  const Context& context = GetContext();
  const models::TaskModel& task = *context.tasks[input.size() % context.tasks.size()];

  v1::TranslateRequest request;
  const bool is_request = request.ParseFromArray(input.data(), static_cast<int>(input.size()));
  v1::TranslateStreamRequest stream;
  const bool is_stream = stream.ParseFromArray(input.data(), static_cast<int>(input.size()));

  for (const RequestLimits& limits : context.limits) {
    if (is_request) {
      CheckRequestId(limits, request.request_id());
      CheckOptions(limits, request.options());
      // At most a few texts more than the limit, so a huge list costs little per input.
      std::vector<absl::string_view> texts;
      for (int i = 0; i < std::min(request.texts_size(), limits.max_texts_per_request + 2); ++i) {
        texts.push_back(request.texts(i));
        CheckOneText(limits, request.texts(i), absl::StrCat("texts[", i, "]"));
      }
      CheckPrepared(limits, task, texts, request.options(), /*stream=*/false);
    }
    if (is_stream) {
      CheckRequestId(limits, stream.request_id());
      CheckOptions(limits, stream.options());
      CheckOneText(limits, stream.text(), "text");
      CheckPrepared(limits, task, {Absl(stream.text())}, stream.options(), /*stream=*/true);
    }
    CheckOneText(limits, input, "text");
    CheckPrepared(limits, task, {Absl(input)}, v1::DecodeOptions(), /*stream=*/true);
  }
}

}  // namespace
}  // namespace taskmoe::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  taskmoe::fuzz::Run(taskmoe::fuzz::AsText(data, size));
  return 0;
}
