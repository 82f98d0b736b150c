// launch: starts N local ranks of a program, as torchrun does on one machine.
//
//   launch --nproc N [--store-dir DIR] -- PROGRAM ARGS...
//
// Each rank gets RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE and ZTRAIN_STORE_DIR (a fresh
// temporary directory unless --store-dir), and OMP_NUM_THREADS = cores / N when unset. Exits
// 0 when every rank does; otherwise stops the others and exits 1 naming the failed rank
// (2 for a bad command line). SIGINT, SIGTERM, SIGHUP and SIGUSR1 are passed on to the ranks,
// which get --stop-grace seconds to stop (train checkpoints and exits 75; launch then exits 75
// too); a second signal stops them at once. Ranks die with the launcher (even kill -9 of it).
#include <string>
#include <vector>

#include "framework/distributed/local_launcher.h"
#include "tools/tool_main.h"

int main(int argc, char** argv) {
  // Everything after "--" is the program; CLI11 sees only what comes before.
  int split = argc;
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == "--") {
      split = i;
      break;
    }
  zt::LaunchOptions opt;
  for (int i = split + 1; i < argc; ++i) opt.command.emplace_back(argv[i]);

  CLI::App app{"launch: run N local ranks of PROGRAM (launch --nproc N [--store-dir DIR] -- PROGRAM ARGS...)"};
  app.add_option("--nproc", opt.nproc, "number of ranks")->required()->check(CLI::Range(1, 1024));
  app.add_option("--store-dir", opt.store_dir, "rendezvous directory (default: a fresh temporary one)");
  app.add_option("--stop-grace", opt.stop_grace_s,
                 "seconds the ranks get to stop by themselves after a signal is passed on to them")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  return zt::tool::run_tool("launch", app, split, argv, [&] { return zt::run_local_ranks(opt); });
}
