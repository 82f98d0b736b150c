#pragma once
// Preemption: a scheduler (Slurm, Kubernetes, a person) asks a run to stop with SIGTERM or
// SIGUSR1. The trainer finishes the step it is in, writes a checkpoint on every rank and
// exits with kPreemptedExitStatus, so `train --resume` continues from exactly that step. A
// second signal exits at once (status 128 + the signal), for a job that must go now.
//
// Several ranks may get the signal at different moments (or only some of them): after every
// step each rank offers its flag to an all-reduce (max) over the world group, so all ranks see
// the request at the same step and stop there together. One int64 per step: negligible.
#include <cstdint>

#include "framework/device.h"
#include "framework/distributed/local_launcher.h"
#include "framework/distributed/process_group.h"

namespace zt {

// The exit status of a run that stopped on request at a checkpoint (also the launcher's when
// its ranks did so).
constexpr int kPreemptedExitStatus = kRankPreemptedStatus;

class PreemptionWatch {
 public:
  // Installs the SIGTERM and SIGUSR1 handlers (idempotent) and clears an earlier request.
  PreemptionWatch();
  // Restores the handlers that were there before.
  ~PreemptionWatch();
  PreemptionWatch(const PreemptionWatch&) = delete;
  PreemptionWatch& operator=(const PreemptionWatch&) = delete;

  // The signal this process received (0: none yet).
  static int local_signal();
  // Whether any rank of `world` received a signal; a collective: every rank calls it after
  // the same step. Returns the signal (the largest number seen) or 0.
  int agreed_signal(ProcessGroup& world, Device device) const;
};

// "SIGTERM", "SIGUSR1", or "signal N".
const char* signal_name(int sig);

}  // namespace zt
