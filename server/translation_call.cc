// Translation calls in flight: their replies built from what the batch workers decoded.
#include "server/translation_call.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace taskmoe::server {
namespace {

// How often a waiting transport checks whether its caller went away. Cancellation reaches the
// decoder within this plus one decoding step.
constexpr absl::Duration kPollInterval = absl::Milliseconds(20);

v1::FinishReason ToProto(models::FinishReason reason) {
  switch (reason) {
    case models::FinishReason::kEndOfSentence:
      return v1::FINISH_REASON_END_OF_SENTENCE;
    case models::FinishReason::kLength:
      return v1::FINISH_REASON_LENGTH;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

}  // namespace

TranslationCall::TranslationCall(TranslationCore& core,
                                 std::unique_ptr<TranslationCore::InFlight> in_flight,
                                 CallContext call, std::string request_id, std::string task_label,
                                 absl::Time start, std::shared_ptr<RequestState> state)
    : core_(core),
      call_(std::move(call)),
      request_id_(std::move(request_id)),
      task_label_(std::move(task_label)),
      start_(start),
      state_(std::move(state)),
      in_flight_(std::move(in_flight)),
      inflight_gauge_(*core_.metrics_.ForTask(task_label_).inflight) {
  inflight_gauge_.Increment();
}

TranslationCall::~TranslationCall() { inflight_gauge_.Decrement(); }

void TranslationCall::Stop() {
  state_->Cancel();
  core_.scheduler_.Withdraw(*state_);
}

void TranslationCall::WaitForProgress() {
  if (state_->Wait(kPollInterval)) return;
  if (Cancelled()) state_->Cancel();
  // Queued sentences of a stopped (cancelled or expired) request leave the queue now, not
  // when a worker gets to them; running ones leave their batch at its next step.
  if (state_->ShouldStop()) core_.scheduler_.Withdraw(*state_);
}

void TranslationCall::Record(const char* method, const absl::Status& status,
                             int64_t output_tokens) {
  core_.Record(method, task_label_, request_id_, status, start_, state_.get(), output_tokens);
}

PendingTranslation::PendingTranslation(TranslationCore& core,
                                       std::unique_ptr<TranslationCore::InFlight> in_flight,
                                       CallContext call, const v1::TranslateRequest& request,
                                       std::string task_label, absl::Time start,
                                       std::shared_ptr<RequestState> state)
    : TranslationCall(core, std::move(in_flight), std::move(call), request.request_id(),
                      std::move(task_label), start, std::move(state)),
      return_scores_(request.options().return_scores()),
      return_tokens_(request.options().return_tokens()) {}

absl::Status PendingTranslation::Finish(v1::TranslateResponse& response) {
  absl::Status status = core_.FinalStatus(call_, *state_);
  int64_t output_tokens = 0;
  if (status.ok()) {
    const models::TaskModel& task = state_->task();
    int64_t input_tokens = 0;
    for (int i = 0; i < state_->size(); ++i) input_tokens += state_->source(i).size();
    for (int t = 0; t < state_->text_count(); ++t) {
      absl::StatusOr<models::TextTranslation> text = task.FinishText(
          state_->TextSentences(t), state_->TextResults(t), state_->text_options().unknown_pieces);
      if (!text.ok()) {
        status = absl::InternalError(absl::StrCat("detokenising: ", text.status().message()));
        break;
      }
      v1::Translation* translation = response.add_translations();
      translation->set_text(std::move(text->text));
      if (return_scores_) translation->set_score(text->score);
      if (return_tokens_) {
        for (int32_t id : text->token_ids) {
          translation->add_token_ids(id);
          translation->add_tokens(task.Piece(id));
        }
      }
      translation->set_finish_reason(ToProto(text->finish_reason));
      translation->set_sentences(static_cast<uint32_t>(state_->TextSentences(t).size()));
      output_tokens += static_cast<int64_t>(text->token_ids.size());
    }
    response.set_request_id(request_id_);
    response.set_model_version(task.version());
    response.set_input_tokens(static_cast<uint32_t>(input_tokens));
    response.set_output_tokens(static_cast<uint32_t>(output_tokens));
  }
  if (!status.ok()) {
    response.Clear();
    output_tokens = 0;
  }
  Record("Translate", status, output_tokens);
  return status;
}

TranslationStream::TranslationStream(TranslationCore& core,
                                     std::unique_ptr<TranslationCore::InFlight> in_flight,
                                     CallContext call, const v1::TranslateStreamRequest& request,
                                     std::string task_label, absl::Time start,
                                     std::shared_ptr<RequestState> state)
    : TranslationCall(core, std::move(in_flight), std::move(call), request.request_id(),
                      std::move(task_label), start, std::move(state)),
      eos_(state_->task().eos_id()),
      sentence_count_(static_cast<int>(state_->TextSentences(0).size())),
      return_scores_(request.options().return_scores()),
      text_stream_(state_->task().StartStream(state_->TextSentences(0),
                                              state_->text_options().unknown_pieces)) {}

bool TranslationStream::TakeMessages(std::vector<v1::TranslateStreamResponse>& out) {
  if (complete_) return true;
  const models::TaskModel& task = state_->task();
  while (text_stream_.sentence() < sentence_count_) {
    const int sentence = text_stream_.sentence();
    // Done first: tokens are all added before a sentence is done, so none are missed.
    const bool sentence_done = state_->SentenceDone(sentence);
    for (int32_t token : state_->TakeTokens(sentence)) {
      if (token == eos_) continue;
      v1::TranslateStreamResponse message;
      message.set_token_id(token);
      message.set_token(task.Piece(token));
      message.set_sentence(static_cast<uint32_t>(sentence));
      message.set_text_delta(text_stream_.AddToken(token));
      // A stopped request's tokens go nowhere: its call is ending.
      if (!state_->ShouldStop()) out.push_back(std::move(message));
    }
    if (!sentence_done) return false;
    text_stream_.EndSentence();
  }
  complete_ = true;
  status_ = core_.FinalStatus(call_, *state_);
  if (!status_.ok()) return true;
  const absl::Span<const models::SourceSentence> sentences = state_->TextSentences(0);
  absl::StatusOr<models::TextTranslation> text =
      task.FinishText(sentences, state_->TextResults(0), state_->text_options().unknown_pieces);
  if (!text.ok()) {
    status_ = absl::InternalError(absl::StrCat("detokenising: ", text.status().message()));
    return true;
  }
  output_tokens_ = static_cast<int64_t>(text->token_ids.size());
  v1::TranslateStreamResponse& last = out.emplace_back();
  last.set_done(true);
  last.set_text(std::move(text->text));
  if (return_scores_) last.set_score(text->score);
  last.set_finish_reason(ToProto(text->finish_reason));
  last.set_sentence(static_cast<uint32_t>(sentence_count_ - 1));
  return true;
}

absl::Status StreamEndStatus(absl::Status decoded, bool write_failed, bool cancelled,
                             bool deadline_passed) {
  if (!write_failed) return decoded;
  // gRPC fails the writes of a call whose deadline passed, and whether that failure or
  // OnCancel comes first is up to it: the clock, not the order, tells an expired call.
  if (deadline_passed) {
    return absl::DeadlineExceededError("the deadline passed before the stream was written");
  }
  // The caller is gone, whatever decoding made of it, unless it cancelled, which says more.
  if (!decoded.ok() && cancelled) return decoded;
  return absl::CancelledError("the client went away");
}

absl::Status TranslationStream::Finish() {
  const absl::Status status =
      StreamEndStatus(status_, write_failed_.load(), Cancelled(), state_->DeadlineExpired());
  if (!status.ok()) output_tokens_ = 0;
  Record("TranslateStream", status, output_tokens_);
  return status;
}

void TranslationStream::WriteFailed() {
  write_failed_.store(true);
  Stop();
}

}  // namespace taskmoe::server
