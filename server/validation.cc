// Request validation.
#include "server/validation.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "models/text/utf8.h"

namespace taskmoe::server {

absl::Status CheckText(absl::string_view text, absl::string_view field,
                       const RequestLimits& limits) {
  if (text.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": empty text; send non-empty text"));
  }
  // A cheap bound first, so a huge text is refused without scanning it: a character takes at
  // most 4 bytes of UTF-8, so n bytes hold at least n / 4 characters.
  if (text.size() > static_cast<size_t>(limits.max_text_chars) * 4) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": more than the limit of ", limits.max_text_chars, " characters (its ",
                     text.size(), " bytes of UTF-8 hold at least ", (text.size() + 3) / 4, ")"));
  }
  size_t offset = 0;
  const int64_t chars = models::CountUtf8Chars(std::string_view(text.data(), text.size()), &offset);
  if (chars < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": not valid UTF-8 (bad byte sequence at byte ", offset, ")"));
  }
  if (chars > limits.max_text_chars) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ": ", chars, " characters, more than the limit of ", limits.max_text_chars));
  }
  return absl::OkStatus();
}

absl::Status CheckRequestId(absl::string_view request_id, const RequestLimits& limits) {
  if (request_id.size() > static_cast<size_t>(limits.max_request_id_bytes)) {
    return absl::InvalidArgumentError(absl::StrCat("request_id: ", request_id.size(),
                                                   " bytes, more than the limit of ",
                                                   limits.max_request_id_bytes));
  }
  for (char c : request_id) {
    if (c < 0x20 || c > 0x7E) {
      return absl::InvalidArgumentError(
          "request_id: only printable ASCII characters are allowed (it is logged)");
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<models::DecodeSettings> ResolveDecodeOptions(const v1::DecodeOptions& options,
                                                            const RequestLimits& limits) {
  models::DecodeSettings s;
  s.beam_size = options.beam_size() == 0 ? 1 : static_cast<int>(options.beam_size());
  if (options.beam_size() > static_cast<uint32_t>(limits.max_beam_size)) {
    return absl::InvalidArgumentError(absl::StrCat("options.beam_size: ", options.beam_size(),
                                                   " is more than the server's limit of ",
                                                   limits.max_beam_size));
  }
  if (options.max_output_tokens() > static_cast<uint32_t>(limits.max_output_tokens)) {
    return absl::InvalidArgumentError(
        absl::StrCat("options.max_output_tokens: ", options.max_output_tokens(),
                     " is more than the server's limit of ", limits.max_output_tokens));
  }
  s.max_output_tokens = options.max_output_tokens() == 0
                            ? limits.max_output_tokens
                            : static_cast<int>(options.max_output_tokens());
  const float alpha = options.length_penalty();
  if (!std::isfinite(alpha) || alpha < 0.0f || alpha > 10.0f) {
    return absl::InvalidArgumentError(absl::StrCat("options.length_penalty: ", alpha,
                                                   " is outside [0, 10] (0 means no penalty)"));
  }
  s.length_penalty = alpha;
  // Only a score that is reported has to be exact: without one, greedy decoding may take the
  // output projection's candidate filter (models::DecodeSettings::exact_scores).
  s.exact_scores = options.return_scores();
  s.max_output_ratio = limits.max_output_ratio;
  s.max_output_offset = limits.max_output_offset;
  return s;
}

absl::StatusOr<models::TextOptions> ResolveTextOptions(const v1::DecodeOptions& options) {
  models::TextOptions text;
  text.split_sentences = !options.no_sentence_splitting();
  switch (options.unknown_pieces()) {
    case v1::UNKNOWN_PIECES_COPY_SOURCE:
      text.unknown_pieces = models::UnknownPieces::kCopySource;
      break;
    case v1::UNKNOWN_PIECES_DROP:
      text.unknown_pieces = models::UnknownPieces::kDrop;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("options.unknown_pieces: ", static_cast<int>(options.unknown_pieces()),
                       " is not a value of UnknownPieces (0 COPY_SOURCE, 1 DROP)"));
  }
  return text;
}

absl::StatusOr<PreparedRequest> PrepareRequest(const models::TaskModel& task,
                                               absl::Span<const absl::string_view> texts,
                                               const v1::DecodeOptions& options, bool stream,
                                               const RequestLimits& limits) {
  if (!stream) {
    if (texts.empty()) {
      return absl::InvalidArgumentError("texts: no text given; send at least one");
    }
    if (static_cast<int>(texts.size()) > limits.max_texts_per_request) {
      return absl::InvalidArgumentError(
          absl::StrCat("texts: ", texts.size(), " texts, more than the limit of ",
                       limits.max_texts_per_request, " per request; split the request"));
    }
  }
  PreparedRequest prepared;
  absl::StatusOr<models::DecodeSettings> settings = ResolveDecodeOptions(options, limits);
  if (!settings.ok()) return settings.status();
  if (stream && settings->beam_size > 1) {
    return absl::InvalidArgumentError(
        "options.beam_size: TranslateStream decodes greedily; use beam_size 0 or 1");
  }
  prepared.settings = *settings;
  absl::StatusOr<models::TextOptions> text_options = ResolveTextOptions(options);
  if (!text_options.ok()) return text_options.status();
  prepared.text_options = *text_options;
  for (size_t i = 0; i < texts.size(); ++i) {
    const std::string field = stream ? "text" : absl::StrCat("texts[", i, "]");
    if (absl::Status s = CheckText(texts[i], field, limits); !s.ok()) return s;
    absl::StatusOr<std::vector<models::SourceSentence>> sentences =
        task.PrepareText(std::string_view(texts[i].data(), texts[i].size()), prepared.text_options);
    if (!sentences.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(field, ": ", sentences.status().message()));
    }
    prepared.texts.push_back(*std::move(sentences));
  }
  return prepared;
}

}  // namespace taskmoe::server
