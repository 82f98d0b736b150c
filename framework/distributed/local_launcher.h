#pragma once
// Starts the ranks of a job on this machine, as torchrun does: N copies of one command with
// RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE and ZTRAIN_STORE_DIR set. Used by the
// `launch` tool and by tools that run their own ranks (xent --tp).
#include <string>
#include <vector>

namespace zt {

// A rank that stopped on request (SIGTERM/SIGUSR1) after writing its checkpoint exits with
// this status (train: trainers/preemption.h); the launcher then waits for the others and
// exits with it too.
constexpr int kRankPreemptedStatus = 75;  // EX_TEMPFAIL: "try again later" (with --resume)

struct LaunchOptions {
  int nproc = 1;
  std::vector<std::string> command;  // program (searched in PATH) and its arguments
  // Rendezvous directory; empty: a fresh temporary directory ($TMPDIR/ztrain-store-*), removed
  // afterwards (and, when its launcher was killed with SIGKILL, by the next launcher here).
  std::string store_dir;
  // After SIGINT/SIGTERM/SIGHUP/SIGUSR1 reaches the launcher it passes the signal on and
  // waits this long for the ranks to stop by themselves (train checkpoints first), then
  // kills them. A second signal kills them at once.
  double stop_grace_s = 120;
};

// Runs the ranks and waits for all of them. When one fails (non-zero exit or a signal) the
// others are stopped (SIGTERM, then SIGKILL) and zt::Error names the failed rank and how it
// ended. OMP_NUM_THREADS, when unset, becomes (cores / nproc), at least 1, so ranks do not
// oversubscribe the machine. Each rank gets ZTRAIN_LAUNCHER_PID (see bind_to_launcher).
// Returns 0, or kRankPreemptedStatus when the ranks stopped on request at a checkpoint.
int run_local_ranks(const LaunchOptions& options);

// In a rank started by run_local_ranks (ZTRAIN_LAUNCHER_PID set): the rank gets SIGKILL when
// its launcher dies (PR_SET_PDEATHSIG), and a launcher already gone (it died before this ran)
// is a zt::Error. A launcher killed with SIGKILL thus never leaves ranks training on, holding
// the run directory's lock. Does nothing outside a launcher, or when the launcher is not the
// parent (a shell between them): then the launcher's own death handling applies.
void bind_to_launcher();

// Path of the running executable (/proc/self/exe), for tools that launch themselves.
std::string current_executable();

}  // namespace zt
