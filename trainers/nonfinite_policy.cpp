#include "trainers/nonfinite_policy.h"

#include "framework/error.h"

namespace zt {

NonFinitePolicy::NonFinitePolicy(std::string mode, int64_t max_consecutive, int64_t max_total)
    : mode_(std::move(mode)), max_consecutive_(max_consecutive), max_total_(max_total) {
  ZT_CHECK(mode_ == "stop" || mode_ == "skip", "train.on_nonfinite: must be stop or skip, got '", mode_, "'");
  ZT_CHECK(max_consecutive_ >= 1 && max_total_ >= 1, "train.max_skipped_consecutive and train.max_skipped_total must be >= 1");
}

NonFinitePolicy::Decision NonFinitePolicy::on_step(bool finite) {
  if (finite) {
    consecutive_ = 0;
    return {Action::update, ""};
  }
  if (mode_ == "stop") return {Action::stop, "set train.on_nonfinite=skip to skip such updates instead"};
  ++consecutive_;
  ++total_;
  const std::string counts = std::to_string(consecutive_) + " in a row (train.max_skipped_consecutive = " +
                             std::to_string(max_consecutive_) + "), " + std::to_string(total_) +
                             " in this run (train.max_skipped_total = " + std::to_string(max_total_) + ")";
  if (consecutive_ > max_consecutive_ || total_ > max_total_)
    return {Action::stop, "too many skipped updates: " + counts +
                              "; the run has diverged, so it stops without checkpointing this model. Resume from "
                              "the newest checkpoint with a lower optim.lr (or raise the limits)"};
  return {Action::skip, "update skipped (train.on_nonfinite=skip; " + counts + ")"};
}

nlohmann::json NonFinitePolicy::state() const { return {{"consecutive", consecutive_}, {"total", total_}}; }

void NonFinitePolicy::restore(const nlohmann::json& state) {
  consecutive_ = state.is_object() ? state.value("consecutive", int64_t{0}) : 0;
  total_ = state.is_object() ? state.value("total", int64_t{0}) : 0;
}

}  // namespace zt
