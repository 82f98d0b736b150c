#pragma once
// Grad mode: while a NoGradGuard is alive on this thread, ops build no graph
// (evaluation, optimizer updates, generation). GradModeGuard(true) turns it back on inside one
// (a checkpoint region recomputes its forward with a graph during backward, which runs without).
namespace zt {

bool grad_enabled();

// Sets grad mode for its lifetime, then restores what was there.
class GradModeGuard {
 public:
  explicit GradModeGuard(bool enabled);
  ~GradModeGuard();
  GradModeGuard(const GradModeGuard&) = delete;
  GradModeGuard& operator=(const GradModeGuard&) = delete;

 private:
  bool prev_;
};

class NoGradGuard : public GradModeGuard {
 public:
  NoGradGuard() : GradModeGuard(false) {}
};

}  // namespace zt
