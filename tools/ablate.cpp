// ablate: runs a grid of training runs (e.g. a z-loss sweep), `--jobs N` `train` processes at
// a time (spread over --devices), each in its own directory under one ablation directory;
// resumable; then writes summary.md / summary.csv and the loss/lse plots. See
// docs/ablations.md.
//
//   ablate --config configs/gpt_tiny.yaml --sweep loss.z_loss_weight=0,1e-4,1e-3,1e-2
//   ablate --config configs/gpt_small.yaml --sweep optim.lr=1e-4,3e-4,1e-3 --jobs 4 --devices 0,1
//
// Exit status: 0 when every run finished or diverged, 1 when some run failed (the others still
// ran), 2 on a usage or config error (nothing ran), 128 + signal when stopped by SIGINT/SIGTERM
// (its trains stopped; rerun to resume).
#include <unistd.h>

#include <algorithm>

#include <filesystem>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "framework/error.h"
#include "trainers/ablation/grid.h"
#include "trainers/ablation/runner.h"
#include "trainers/ablation/scheduler.h"
#include "trainers/ablation/spikes.h"
#include "trainers/ablation/sweep.h"
#include "tools/tool_main.h"
#include "trainers/config.h"

namespace fs = std::filesystem;
using namespace zt::ablation;

namespace {

fs::path this_program_dir() {
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::current_path() : exe.parent_path();
}

// The plot script: next to the sources this program was built from, or under the checkout
// that holds build/bin/ablate, or ./tools when run from the repository root.
fs::path find_plot_script() {
  const fs::path candidates[] = {
      fs::path(__FILE__).parent_path() / "plot_ablation.py",
      this_program_dir().parent_path().parent_path() / "tools" / "plot_ablation.py",
      fs::path("tools") / "plot_ablation.py",
  };
  for (const fs::path& p : candidates) {
    if (fs::exists(p)) return p;
  }
  return {};
}

std::string shell_quote(const std::string& s) {
  if (!s.empty() && s.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-+=.,/:@") ==
                        std::string::npos) {
    return s;
  }
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// Plots are a convenience: every problem here is a warning, never a failure of the ablation.
void make_plots(const fs::path& python, fs::path script, const fs::path& ablation_dir, const std::string& ema) {
  if (script.empty()) script = find_plot_script();
  if (script.empty() || !fs::exists(script)) {
    std::cerr << "ablate: warning: plots skipped: tools/plot_ablation.py not found (pass --plot-script PATH)\n";
    return;
  }
  if (access(python.c_str(), X_OK) != 0) {
    std::cerr << "ablate: warning: plots skipped: " << python.string()
              << " not found (on Debian: apt-get install python3-matplotlib)\n";
    return;
  }
  std::cout << "ablate: plotting into " << (ablation_dir / "plots").string() << "\n" << std::flush;
  std::vector<std::string> command = {python.string(), script.string(), ablation_dir.string()};
  if (!ema.empty()) command.insert(command.end(), {"--ema", ema});
  const int code = run_program(command, {});
  if (code == 3) {
    std::cerr << "ablate: warning: plots skipped: " << python.string()
              << " has no matplotlib (on Debian: apt-get install python3-matplotlib)\n";
  } else if (code != 0) {
    std::cerr << "ablate: warning: the plot script exited with status " << code << "; plots may be missing\n";
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Runs an ablation grid of train runs, then writes summary.md, summary.csv and plots."};
  std::string config, out, train_bin, plot_script, python = "/usr/bin/python3";
  std::vector<std::string> sweep_args, sets;
  int64_t seeds = 1;
  SpikeOptions spikes;
  std::optional<double> ema;
  bool no_plots = false, dry_run = false, show_output = false;
  int64_t jobs = 0;
  std::string devices;
  app.add_option("--config", config, "training config (YAML)")->required();
  app.add_option("--sweep", sweep_args, "section.key=v1,v2,... (repeatable: the grid is their product)")
      ->allow_extra_args(false);
  app.add_option("--seeds", seeds, "runs seeds 0..N-1 of every setting (sets train.seed)")->capture_default_str();
  app.add_option("--out", out, "ablation directory (default: runs/ablate-<config stem>)");
  app.add_option("--set", sets, "section.key=value for every run (repeatable)")->allow_extra_args(false);
  app.add_option("--jobs,-j", jobs, "runs at once (default 1; with --devices, one per device)")
      ->check(CLI::PositiveNumber);
  app.add_option("--devices", devices,
                 "CUDA devices to spread the runs over, round-robin: 0,1,... (each run gets --set "
                 "train.device=cuda:K)");
  app.add_option("--train-bin", train_bin, "the train program (default: train next to ablate)");
  app.add_flag("--no-plots", no_plots, "skip the plots");
  app.add_option("--python", python, "Python with matplotlib for the plots")->capture_default_str();
  app.add_option("--plot-script", plot_script, "plot_ablation.py (default: found next to the sources)");
  app.add_option("--ema", ema, "plot smoothing: EMA weight of the previous value, in [0, 1) (default: 1 - 50/records)");
  app.add_option("--spike-window", spikes.window, "loss spikes: records in the rolling median")->capture_default_str();
  app.add_option("--spike-factor", spikes.factor, "loss spikes: loss > factor x rolling median")->capture_default_str();
  app.add_flag("--show-train-output", show_output, "train's output to this terminal instead of <run>/train.log");
  app.add_flag("--dry-run", dry_run, "print the runs and their train commands, run nothing");
  return zt::tool::run_tool("ablate", app, argc, argv, [&] {
    std::vector<RunOutcome> outcomes;
    AblationPlan plan;
    try {
      ZT_CHECK(!ema || (*ema >= 0 && *ema < 1), "--ema must be in [0, 1), got ", ema.value_or(0));
      validate(spikes);
      plan.config = config;
      for (const std::string& s : sweep_args) plan.sweeps.push_back(parse_sweep(s));
      plan.seeds = seeds;
      plan.sets = sets;
      plan.out_dir = out.empty() ? fs::path("runs") / ("ablate-" + fs::path(config).stem().string()) : fs::path(out);
      plan.train_bin = train_bin.empty() ? this_program_dir() / "train" : fs::path(train_bin);
      plan.stream_train_output = show_output;
      if (!devices.empty()) plan.devices = parse_devices(devices);
      plan.jobs = jobs > 0 ? jobs : std::max<int64_t>(1, static_cast<int64_t>(plan.devices.size()));
      plan.progress_line = isatty(STDOUT_FILENO) == 1 && !show_output;
      validate_plan(plan);
      const std::vector<RunSpec> runs = expand_grid(plan.sweeps, plan.seeds);

      // Every grid point's config is checked up front, so a typo in a key or value fails now,
      // not hours later at the fifth run.
      for (const RunSpec& run : runs) (void)zt::load_config(plan.config.string(), train_overrides(plan, run));

      if (dry_run) {
        std::cout << runs.size() << " runs under " << plan.out_dir.string() << ", " << plan.jobs << " at a time";
        if (!plan.devices.empty()) std::cout << " on cuda:" << devices << " round-robin (--set train.device=cuda:K)";
        else if (plan.jobs > 1) std::cout << " (CPU runs: --set train.threads=" << threads_per_run(available_cores(), plan.jobs) << " unless set)";
        std::cout << ":\n";
        for (const RunSpec& run : runs) {
          const fs::path dir = run_directory(plan, run);
          const Attempt attempt = next_attempt(dir);
          std::cout << "  " << run.label
                    << (run_finished(dir)                 ? "  [finished]"
                        : attempt == Attempt::kResume    ? "  [would resume]"
                        : attempt == Attempt::kStartOver ? "  [would start over]"
                                                         : "")
                    << "\n    ";
          for (const std::string& a : train_command(plan, run, run_finished(dir) ? Attempt::kFresh : attempt)) {
            std::cout << shell_quote(a) << " ";
          }
          std::cout << "\n";
        }
        return 0;
      }
      outcomes = run_ablation(plan, std::cout);
    } catch (const zt::Error& e) {
      // The plan and every run's config are what the command line asked for.
      throw zt::tool::UsageError(e.what());
    }

    int interrupted_by = 0;
    for (const RunOutcome& o : outcomes) {
      if (o.status == RunStatus::kInterrupted) interrupted_by = o.signal;
    }
    if (interrupted_by) {
      std::cerr << "ablate: stopped by signal " << interrupted_by
                << "; rerun the same command to resume the unfinished runs\n";
      return 128 + interrupted_by;
    }

    std::vector<SummaryRow> rows;
    try {
      rows = collect_summary(plan, spikes);
      write_lr_sensitivity_data(plan, rows);  // read by the plot script
    } catch (const zt::Error& e) {
      std::cerr << "ablate: writing the summary: " << e.what() << "\n";
      return 1;
    }
    if (!no_plots) make_plots(python, plot_script, plan.out_dir, ema ? std::to_string(*ema) : std::string());
    try {
      write_summary(plan, rows, spikes);
    } catch (const zt::Error& e) {
      std::cerr << "ablate: writing the summary: " << e.what() << "\n";
      return 1;
    }

    size_t failed = 0, skipped = 0, diverged = 0;
    std::string failed_labels;
    for (const RunOutcome& o : outcomes) {
      if (o.status == RunStatus::kFailed) {
        ++failed;
        failed_labels += "\n  " + o.run.label + ": " + o.detail + " (" +
                         (run_directory(plan, o.run) / "train.log").string() + ")";
      }
      if (o.status == RunStatus::kAlreadyDone) ++skipped;
      if (o.status == RunStatus::kDiverged) ++diverged;
    }
    std::cout << "ablate: " << outcomes.size() << (outcomes.size() == 1 ? " run, " : " runs, ")
              << outcomes.size() - failed << " finished ("
              << skipped << " already before, " << diverged << " diverged now), " << failed << " failed. Summary: "
              << (plan.out_dir / "summary.md").string() << "\n";
    if (failed) {
      std::cerr << "ablate: failed runs (rerun the same command to resume them):" << failed_labels << "\n";
      return 1;
    }
    return 0;
  });
}
