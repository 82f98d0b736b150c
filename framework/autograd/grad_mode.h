#pragma once
// Grad mode: while a NoGradGuard is alive on this thread, ops build no graph
// (evaluation, optimizer updates, generation).
namespace zt {

bool grad_enabled();

class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

}  // namespace zt
