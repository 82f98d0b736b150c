#pragma once
// Runs an ablation: every grid point as one `train` process, `jobs` of them at once (see
// scheduler.h for devices and threads), each in its own directory <out_dir>/<run name>,
// resumable whatever `jobs` was.
//
// Per run directory, besides what train writes (metrics.jsonl, checkpoints, resolved config):
//   train.log           train's stdout and stderr (appended across attempts)
//   ablate_args.json    the train command of the latest attempt
//   ablate.done         written after train exits 0: the run is finished and is not rerun
//   ablate.diverged     written when train stopped on a non-finite loss or gradient norm (it
//                       exited non-zero and its last step record is non-finite, or its error
//                       says non-finite): a result, not rerun (a rerun would diverge again)
//   ablate.failed       written when train fails otherwise (exit status, signal): crashed;
//                       removed on the next attempt
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
  int64_t jobs = 1;                     // runs at once
  std::vector<int64_t> devices;         // CUDA devices, round-robin over the slots; empty: none
  int64_t cpu_cores = 0;                // cores split among CPU runs; 0: available_cores()
  bool progress_line = false;           // redraw a sweep-level status line (on a terminal)
};

// How a run is started: in an empty directory, from its newest checkpoint, or over a
// previous attempt that left no checkpoint.
enum class Attempt { kFresh, kResume, kStartOver };

// kAlreadyDone: done or diverged before this invocation. kInterrupted: stopped by ablate on
// SIGINT/SIGTERM (or never started then); left for the next invocation to resume.
enum class RunStatus { kAlreadyDone, kDone, kDiverged, kFailed, kInterrupted };

struct RunOutcome {
  RunSpec run;
  RunStatus status = RunStatus::kFailed;
  Attempt attempt = Attempt::kFresh;  // how it was started (kFresh also for kAlreadyDone)
  std::string detail;  // why it failed or diverged
  double seconds = 0;  // how long train ran in this invocation
  int signal = 0;      // kInterrupted: the signal ablate got
};

// Throws zt::Error when a --set is not "section.key=value" or sets what ablate owns
// (a swept key, train.seed, log.out_dir; train.device with devices), when jobs < 1, or when
// train output is streamed with jobs > 1.
void validate_plan(const AblationPlan& plan);

std::filesystem::path run_directory(const AblationPlan& plan, const RunSpec& run);
// The "section.key=value" overrides of one run: the plan's sets, the swept values, train.seed,
// log.out_dir (in that order).
std::vector<std::string> train_overrides(const AblationPlan& plan, const RunSpec& run);
Attempt next_attempt(const std::filesystem::path& run_dir);

// The full command: train_bin --config FILE (--set k=v)... [--resume | --overwrite].
std::vector<std::string> train_command(const AblationPlan& plan, const RunSpec& run, Attempt attempt);

bool run_finished(const std::filesystem::path& run_dir);   // has ablate.done
bool run_diverged(const std::filesystem::path& run_dir);   // has ablate.diverged
bool run_started(const std::filesystem::path& run_dir);    // has metrics.jsonl or a checkpoint
bool run_resumable(const std::filesystem::path& run_dir);  // has a checkpoint

// Why a run whose train exited with `exit_code` != 0 diverged: it was not killed by a signal,
// and its last step record has a non-finite loss or grad_norm, or the last lines of its
// train.log report a non-finite value. "" when it crashed instead.
std::string stopped_on_nonfinite(const std::filesystem::path& run_dir, int exit_code);

// Writes ablation.json, then runs every run that is neither done nor diverged, in grid order,
// plan.jobs at a time, printing to `progress` a line when a run starts
// "[2/8] z_loss_weight=1e-4 seed=0 ..." and one when it ends (done / DIVERGED / FAILED with
// the last lines of its train.log, and the sweep's done / running / left and ETA), and with
// plan.progress_line a status line redrawn in place. A failed run does not stop the others.
// On SIGINT or SIGTERM it stops the running trains (SIGTERM, then SIGKILL after 10 s), waits
// for them, and returns with those runs and the ones not started kInterrupted.
std::vector<RunOutcome> run_ablation(const AblationPlan& plan, std::ostream& progress);

// Reads every run's metrics.jsonl and status ("done", "diverged", "failed", "unfinished",
// "not run"), its loss at initialisation and whether it diverged (lr_sensitivity.h).
std::vector<SummaryRow> collect_summary(const AblationPlan& plan, const SpikeOptions& spikes);
// Writes lr_sensitivity.json when the grid sweeps optim.lr (for the plot script); nothing
// otherwise.
void write_lr_sensitivity_data(const AblationPlan& plan, const std::vector<SummaryRow>& rows);
// Writes summary.md (with links to the plots that exist under <out_dir>/plots) and summary.csv.
void write_summary(const AblationPlan& plan, const std::vector<SummaryRow>& rows, const SpikeOptions& spikes);

// Runs a program (argv[0] is its path) and waits; stdout and stderr appended to log_file, or
// inherited when log_file is empty. Returns the exit status, or 128 + signal when a signal
// ended it. Throws zt::Error when the program cannot be started.
int run_program(const std::vector<std::string>& argv, const std::filesystem::path& log_file);

}  // namespace zt::ablation
