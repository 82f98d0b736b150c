// train: trains a GPT from a YAML config.
//   train --config configs/gpt_tiny.yaml
//   train --config configs/gpt_small.yaml --set train.batch_size=32 --set loss.z_loss_weight=1e-3
//   train --config configs/gpt_tiny.yaml --resume        continue from the newest checkpoint
//   launch --nproc 4 -- train --config configs/gpt_small.yaml --set parallel.tensor_parallel_size=2
// Errors print "train: <message>" (with several ranks "train rank R: <message>") and exit 2
// for a bad command line, 1 for anything else (bad config, missing data, non-finite loss);
// see tools/tool_main.h. Only rank 0 prints progress. SIGTERM or SIGUSR1 stops the run after
// the current step with a checkpoint on every rank and exit status 75 (trainers/preemption.h);
// a second signal exits at once.
#include <cstdio>
#include <iostream>

#include "framework/distributed/local_launcher.h"
#include "framework/distributed/process_group.h"
#include "framework/error.h"
#include "tools/tool_main.h"
#include "trainers/config.h"
#include "trainers/preemption.h"
#include "trainers/trainer.h"

namespace {
// "train", or "train rank R" when several ranks run (a bad rank environment is reported later).
std::string tool_name(int* rank) {
  *rank = 0;
  try {
    const zt::RankInfo info = zt::rank_info_from_env();
    *rank = info.rank;
    if (info.world_size > 1) return "train rank " + std::to_string(info.rank);
  } catch (const zt::Error&) {
  }
  return "train";
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Train a language model (GPT-2 or llama family) from a YAML config (see configs/ and the README's table of keys)"};
  std::string config_path;
  std::vector<std::string> overrides;
  bool resume = false, overwrite = false, print_config = false, list_keys = false;
  int64_t stop_after = 0;
  app.add_option("--config", config_path, "YAML config file");
  app.add_option("--set", overrides, "override a key: --set section.key=value (repeatable)")->take_all();
  app.add_flag("--resume", resume, "continue from the newest checkpoint in log.out_dir");
  app.add_flag("--overwrite", overwrite, "start over in a log.out_dir that holds a previous run");
  app.add_flag("--print-config", print_config, "print the resolved config and exit");
  app.add_flag("--list-keys", list_keys, "print the table of config keys (markdown) and exit");
  app.add_option("--stop-after", stop_after,
                 "stop after this many steps of this invocation, as if interrupted: no extra checkpoint, "
                 "metrics as far as they got (for resume tests; 0 = run to train.max_steps)")
      ->check(CLI::NonNegativeNumber);
  int rank = 0;
  const std::string name = tool_name(&rank);
  return zt::tool::run_tool(name.c_str(), app, argc, argv, [&] {
    zt::bind_to_launcher();  // a rank of build/bin/launch dies with it
    if (list_keys) {
      std::cout << zt::config_keys_markdown();
      return 0;
    }
    zt::tool::usage_check(!config_path.empty(), "--config FILE is required (e.g. --config configs/gpt_tiny.yaml)");
    zt::tool::usage_check(!(resume && overwrite), "--resume and --overwrite exclude each other");
    const zt::Config config = zt::load_config(config_path, overrides);
    if (print_config) {
      std::cout << zt::config_to_yaml(config);
      return 0;
    }
    zt::TrainOptions options;
    options.resume = resume;
    options.overwrite = overwrite;
    options.stop_after = stop_after;
    const zt::TrainSummary s = zt::train(config, options);
    if (s.stop_signal) return zt::kPreemptedExitStatus;  // the trainer said where it stopped
    if (rank != 0) return 0;
    if (resume && s.first_step == s.last_step) {  // nothing ran: there is no loss to report
      std::printf("done: the run in %s already finished at step %lld (train.max_steps = %lld); nothing to do "
                  "(raise train.max_steps with --set to train further)\n",
                  config.log.out_dir.c_str(), static_cast<long long>(s.last_step),
                  static_cast<long long>(config.train.max_steps));
      return 0;
    }
    std::printf("done: step %lld, loss %.4f, val_loss %.4f, %.1f s; metrics in %s/metrics.jsonl\n",
                static_cast<long long>(s.last_step), s.last_loss, s.last_val_loss, s.seconds,
                config.log.out_dir.c_str());
    return 0;
  });
}
