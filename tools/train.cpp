// train: trains a GPT from a YAML config.
//   train --config configs/gpt_tiny.yaml
//   train --config configs/gpt_small.yaml --set train.batch_size=32 --set loss.z_loss_weight=1e-3
//   train --config configs/gpt_tiny.yaml --resume        continue from the newest checkpoint
//   launch --nproc 4 -- train --config configs/gpt_small.yaml --set parallel.tensor_parallel_size=2
// Errors (bad config, missing data, non-finite loss) print "train: <message>" and exit 1; with
// several ranks, "train: rank R: <message>". Only rank 0 prints progress.
#include <CLI/CLI.hpp>

#include <iostream>

#include "framework/distributed/process_group.h"
#include "framework/error.h"
#include "trainers/config.h"
#include "trainers/trainer.h"

int main(int argc, char** argv) {
  CLI::App app{"Train a GPT model from a YAML config (see configs/ and the README's table of keys)"};
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
                 "metrics as far as they got (for resume tests; 0 = run to train.max_steps)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "train: " << e.what() << " (see --help)\n";
    return 1;
  }

  std::string who = "train: ";
  try {
    const zt::RankInfo rank = zt::rank_info_from_env();
    if (rank.world_size > 1) who += "rank " + std::to_string(rank.rank) + ": ";
    if (list_keys) {
      std::cout << zt::config_keys_markdown();
      return 0;
    }
    ZT_CHECK(!config_path.empty(), "--config FILE is required (e.g. --config configs/gpt_tiny.yaml)");
    ZT_CHECK(!(resume && overwrite), "--resume and --overwrite exclude each other");
    const zt::Config config = zt::load_config(config_path, overrides);
    if (print_config) {
      std::cout << zt::config_to_yaml(config);
      return 0;
    }
    zt::TrainOptions options;
    options.resume = resume;
    options.overwrite = overwrite;
    ZT_CHECK(stop_after >= 0, "--stop-after must be >= 0, got ", stop_after);
    options.stop_after = stop_after;
    const zt::TrainSummary s = zt::train(config, options);
    if (resume && s.first_step == s.last_step && rank.rank == 0) {  // nothing ran: there is no loss to report
      std::printf("done: the run in %s already finished at step %lld (train.max_steps = %lld); nothing to do "
                  "(raise train.max_steps with --set to train further)\n",
                  config.log.out_dir.c_str(), static_cast<long long>(s.last_step),
                  static_cast<long long>(config.train.max_steps));
      return 0;
    }
    if (rank.rank == 0)
      std::printf("done: step %lld, loss %.4f, val_loss %.4f, %.1f s; metrics in %s/metrics.jsonl\n",
                static_cast<long long>(s.last_step), s.last_loss, s.last_val_loss, s.seconds,
                config.log.out_dir.c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::cerr << who << e.what() << "\n";
    return 1;
  }
}
