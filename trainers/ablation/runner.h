#pragma once
// Runs an ablation: every grid point as one `train` process, one after the other, each in its
// own directory <out_dir>/<run name>, resumable.
//
// Per run directory, besides what train writes (metrics.jsonl, checkpoints, resolved config):
//   train.log           train's stdout and stderr (appended across attempts)
//   ablate_args.json    the train command of the latest attempt
//   ablate.done         written after train exits 0: the run is finished and is not rerun
//   ablate.failed       written when train fails (exit status), removed on the next attempt
// A run without ablate.done (killed, or failed) that left a checkpoint (<run>/checkpoints/
// step_*.ckpt) is continued with `train --resume`; one that left metrics.jsonl but no
// checkpoint starts over with `train --overwrite` (train refuses a directory holding a run
// otherwise, and --resume needs a checkpoint). With log.checkpoint_every = 0 a run only
// checkpoints at its end, so set it for long runs to make them resumable mid-way.
// The ablation directory gets ablation.json (the plan and the runs in order: the plot script
// reads it), summary.md and summary.csv.
#include <cstdint>
#include <filesystem>
#include <ostream>
#include <string>
#include <vector>

#include "trainers/ablation/grid.h"
#include "trainers/ablation/spikes.h"
#include "trainers/ablation/summary.h"
#include "trainers/ablation/sweep.h"

namespace zt::ablation {

struct AblationPlan {
  std::filesystem::path config;         // passed to train --config
  std::vector<Sweep> sweeps;
  int64_t seeds = 1;                    // runs seeds 0..seeds-1 (train.seed)
  std::vector<std::string> sets;        // "section.key=value", passed to every run
  std::filesystem::path out_dir;        // the ablation directory
  std::filesystem::path train_bin;      // the train program
  bool stream_train_output = false;     // train's output to this terminal instead of train.log
};

// How a run is started: in an empty directory, from its newest checkpoint, or over a
// previous attempt that left no checkpoint.
enum class Attempt { kFresh, kResume, kStartOver };

enum class RunStatus { kAlreadyDone, kDone, kFailed };

struct RunOutcome {
  RunSpec run;
  RunStatus status = RunStatus::kFailed;
  Attempt attempt = Attempt::kFresh;  // how it was started (kFresh also for kAlreadyDone)
  std::string detail;  // why it failed
};

// Throws zt::Error when a --set is not "section.key=value" or sets what ablate owns
// (a swept key, train.seed, log.out_dir).
void validate_plan(const AblationPlan& plan);

std::filesystem::path run_directory(const AblationPlan& plan, const RunSpec& run);
// The "section.key=value" overrides of one run: the plan's sets, the swept values, train.seed,
// log.out_dir (in that order).
std::vector<std::string> train_overrides(const AblationPlan& plan, const RunSpec& run);
Attempt next_attempt(const std::filesystem::path& run_dir);

// The full command: train_bin --config FILE (--set k=v)... [--resume | --overwrite].
std::vector<std::string> train_command(const AblationPlan& plan, const RunSpec& run, Attempt attempt);

bool run_finished(const std::filesystem::path& run_dir);   // has ablate.done
bool run_started(const std::filesystem::path& run_dir);    // has metrics.jsonl or a checkpoint
bool run_resumable(const std::filesystem::path& run_dir);  // has a checkpoint

// Writes ablation.json, then runs every unfinished run in grid order, printing progress lines
// "[2/8] z_loss_weight=1e-4 seed=0 ..." to `progress`. A failed run does not stop the others.
std::vector<RunOutcome> run_ablation(const AblationPlan& plan, std::ostream& progress);

// Reads every run's metrics.jsonl and status ("done", "failed", "unfinished", "not run").
std::vector<SummaryRow> collect_summary(const AblationPlan& plan, const SpikeOptions& spikes);
// Writes summary.md (with links to the plots that exist under <out_dir>/plots) and summary.csv.
void write_summary(const AblationPlan& plan, const std::vector<SummaryRow>& rows, const SpikeOptions& spikes);

// Runs a program (argv[0] is its path) and waits; stdout and stderr appended to log_file, or
// inherited when log_file is empty. Returns the exit status, or 128 + signal when a signal
// ended it. Throws zt::Error when the program cannot be started.
int run_program(const std::vector<std::string>& argv, const std::filesystem::path& log_file);

}  // namespace zt::ablation
