#include "trainers/preemption.h"

#include <unistd.h>

#include <array>
#include <csignal>
#include <string>

#include "framework/tensor.h"

namespace zt {

namespace {

volatile std::sig_atomic_t g_received = 0;

extern "C" void on_stop_signal(int sig) {
  if (g_received != 0) ::_exit(128 + sig);  // the second signal: go now
  g_received = sig;
}

constexpr std::array<int, 2> kSignals = {SIGTERM, SIGUSR1};
std::array<struct sigaction, 2> g_previous;

}  // namespace

PreemptionWatch::PreemptionWatch() {
  g_received = 0;
  struct sigaction sa = {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;  // reads and writes in progress go on
  for (size_t i = 0; i < kSignals.size(); ++i) ::sigaction(kSignals[i], &sa, &g_previous[i]);
}

PreemptionWatch::~PreemptionWatch() {
  for (size_t i = 0; i < kSignals.size(); ++i) ::sigaction(kSignals[i], &g_previous[i], nullptr);
}

int PreemptionWatch::local_signal() { return g_received; }

int PreemptionWatch::agreed_signal(ProcessGroup& world, Device device) const {
  const int64_t mine = g_received;
  if (world.size() == 1) return static_cast<int>(mine);
  Tensor t = Tensor::from_vector(std::vector<int64_t>{mine}, {1}, device);
  world.all_reduce(t, ReduceOp::max);
  return static_cast<int>(t.to_vector<int64_t>()[0]);
}

const char* signal_name(int sig) {
  switch (sig) {
    case SIGTERM: return "SIGTERM";
    case SIGUSR1: return "SIGUSR1";
    case SIGINT: return "SIGINT";
    default: return "a signal";
  }
}

}  // namespace zt
