#pragma once
// What the trainer does with a step whose loss or gradient norm is not finite
// (train.on_nonfinite): stop at once, or skip the update, but only up to a limit. A run
// that skips too many updates has diverged; past train.max_skipped_consecutive skips in a
// row or train.max_skipped_total in all, it stops (non-zero exit, no checkpoint of the
// broken model) instead of finishing "done" on weights that no longer learn.
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace zt {

class NonFinitePolicy {
 public:
  enum class Action { update, skip, stop };
  struct Decision {
    Action action = Action::update;
    std::string reason;  // skip: the counts against the limits; stop: why, and the way out
  };

  // mode: "stop" | "skip" (train.on_nonfinite); the limits apply to skip.
  NonFinitePolicy(std::string mode, int64_t max_consecutive, int64_t max_total);

  // Called once per optimizer step with whether its loss and gradient norm were finite.
  Decision on_step(bool finite);

  // False while the newest step was skipped: a periodic checkpoint then would save a model
  // that just produced non-finite values (the final checkpoint is written regardless).
  bool may_checkpoint() const { return consecutive_ == 0; }
  int64_t consecutive() const { return consecutive_; }
  int64_t total() const { return total_; }
  // Saved in checkpoints, so a resumed run counts on from where the run was.
  nlohmann::json state() const;
  void restore(const nlohmann::json& state);  // a missing state (older checkpoint) is zero counts

 private:
  std::string mode_;
  int64_t max_consecutive_, max_total_;
  int64_t consecutive_ = 0, total_ = 0;
};

}  // namespace zt
