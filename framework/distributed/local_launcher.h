#pragma once
// Starts the ranks of a job on this machine, as torchrun does: N copies of one command with
// RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE and ZTRAIN_STORE_DIR set. Used by the
// `launch` tool and by tools that run their own ranks (xent --tp).
#include <string>
#include <vector>

namespace zt {

struct LaunchOptions {
  int nproc = 1;
  std::vector<std::string> command;  // program (searched in PATH) and its arguments
  // Rendezvous directory; empty: a fresh temporary directory, removed afterwards.
  std::string store_dir;
};

// Runs the ranks and waits for all of them. When one fails (non-zero exit or a signal) the
// others are stopped (SIGTERM, then SIGKILL) and zt::Error names the failed rank and how it
// ended. OMP_NUM_THREADS, when unset, becomes (cores / nproc), at least 1, so ranks do not
// oversubscribe the machine.
void run_local_ranks(const LaunchOptions& options);

// Path of the running executable (/proc/self/exe), for tools that launch themselves.
std::string current_executable();

}  // namespace zt
