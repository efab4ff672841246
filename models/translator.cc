// Texts -> translations for one task.
#include "models/translator.h"

#include <algorithm>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "models/model_files.h"

namespace taskmoe::models {

absl::StatusOr<std::unique_ptr<Translator>> Translator::Load(const std::string& model_dir,
                                                             const LoadOptions& options) {
  absl::StatusOr<std::shared_ptr<const TransformerModel>> model =
      TransformerModel::Load(model_dir, options);
  if (!model.ok()) return model.status();
  if (absl::Status s = VerifyModelFiles((*model)->config(), model_dir); !s.ok()) return s;
  absl::StatusOr<std::shared_ptr<const Tokenizer>> tokenizer =
      Tokenizer::Load(absl::StrCat(model_dir, "/", kTokenizerFileName), (*model)->config());
  if (!tokenizer.ok()) return tokenizer.status();
  return std::make_unique<Translator>(*std::move(model), *std::move(tokenizer));
}

Translator::Translator(std::shared_ptr<const TransformerModel> model,
                       std::shared_ptr<const Tokenizer> tokenizer)
    : model_(std::move(model)), tokenizer_(std::move(tokenizer)) {}

absl::StatusOr<std::vector<Translation>> Translator::Translate(
    std::string_view task_id, const std::vector<std::string>& texts,
    const TranslateOptions& options) const {
  const ModelConfig& config = model_->config();
  const TaskInfo* task = config.FindTask(task_id);
  if (task == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("task '", std::string(task_id), "' is not served by this model"));
  }
  if (options.max_batch_size < 1) {
    return absl::InvalidArgumentError("max_batch_size must be >= 1");
  }
  absl::StatusOr<const TaskRoute*> route =
      model_->RouteForTask(static_cast<int>(task - config.tasks.data()));
  if (!route.ok()) return route.status();

  std::vector<std::vector<int32_t>> sources(texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    absl::StatusOr<std::vector<int32_t>> ids = tokenizer_->EncodeSource(texts[i], *task);
    if (!ids.ok()) return ids.status();
    if (static_cast<int64_t>(ids->size()) > config.max_positions) {
      return absl::InvalidArgumentError(absl::StrCat("text ", i, " has ", ids->size(),
                                                     " tokens; the model takes at most ",
                                                     config.max_positions));
    }
    sources[i] = *std::move(ids);
  }
  // Longest first, stably, so each batch holds sentences of similar length.
  std::vector<size_t> order(texts.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return sources[a].size() > sources[b].size(); });

  std::vector<Translation> results(texts.size());
  DecodeWorkspace workspace;  // shared by the batches below
  for (size_t start = 0; start < order.size(); start += options.max_batch_size) {
    const size_t end = std::min(order.size(), start + options.max_batch_size);
    std::vector<std::vector<int32_t>> batch;
    for (size_t i = start; i < end; ++i) batch.push_back(std::move(sources[order[i]]));
    DecodeOptions decode = options.decode;
    // Callbacks speak in the caller's sentence indices, not the batch's.
    if (options.decode.is_cancelled) {
      decode.is_cancelled = [&, start](int s) {
        return options.decode.is_cancelled(order[start + s]);
      };
    }
    if (options.decode.on_token) {
      decode.on_token = [&, start](int s, int32_t t) {
        options.decode.on_token(order[start + s], t);
      };
    }
    absl::StatusOr<std::vector<Hypothesis>> hypotheses =
        Decode(*model_, **route, batch, decode, &workspace);
    if (!hypotheses.ok()) return hypotheses.status();
    for (size_t i = start; i < end; ++i) {
      Hypothesis& h = (*hypotheses)[i - start];
      Translation& t = results[order[i]];
      absl::StatusOr<std::string> text = tokenizer_->Decode(h.tokens);
      if (!text.ok()) return text.status();
      t.text = *std::move(text);
      t.score = h.score;
      t.token_ids = std::move(h.tokens);
      t.status = h.status;
    }
  }
  return results;
}

}  // namespace taskmoe::models
