#include "trainers/ablation/runner.h"

#include <signal.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <csignal>
#include <deque>
#include <fstream>
#include <numeric>
#include <optional>
#include <sstream>

#include <nlohmann/json.hpp>

#include "framework/error.h"
#include "framework/device.h"
#include "trainers/ablation/lr_sensitivity.h"
#include "trainers/ablation/process.h"
#include "trainers/ablation/run_metrics.h"
#include "trainers/ablation/scheduler.h"
#include "trainers/checkpoint.h"
#include "trainers/config.h"

namespace zt::ablation {
namespace fs = std::filesystem;
namespace {

constexpr const char* kDoneMarker = "ablate.done";
constexpr const char* kFailedMarker = "ablate.failed";
constexpr const char* kDivergedMarker = "ablate.diverged";
constexpr const char* kArgsFile = "ablate_args.json";
constexpr const char* kTrainLog = "train.log";
constexpr const char* kMetrics = "metrics.jsonl";

void write_text(const fs::path& file, const std::string& text) {
  // Write then rename, so a kill never leaves a half-written marker or summary.
  const fs::path temporary = file.string() + ".tmp";
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    ZT_CHECK(out.good(), "cannot write ", temporary.string());
    out << text;
    out.close();
    ZT_CHECK(out.good(), "cannot write ", temporary.string());
  }
  fs::rename(temporary, file);
}

std::string read_text(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

std::string key_of(const std::string& assignment) { return assignment.substr(0, assignment.find('=')); }

// The last `count` lines of a text file, for failure reports.
std::string tail_lines(const fs::path& file, size_t count) {
  std::ifstream in(file);
  std::deque<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    lines.push_back(line);
    if (lines.size() > count) lines.pop_front();
  }
  std::string out;
  for (const std::string& line : lines) out += "    " + line + "\n";
  return out;
}

std::string format_seconds(double seconds) {
  std::ostringstream s;
  s.setf(std::ios::fixed);
  s.precision(1);
  s << seconds << " s";
  return s.str();
}

nlohmann::json manifest(const AblationPlan& plan, const std::vector<RunSpec>& runs) {
  nlohmann::json j;
  j["config"] = plan.config.string();
  j["seeds"] = plan.seeds;
  j["sets"] = plan.sets;
  j["sweeps"] = nlohmann::json::array();
  for (size_t i = 0; i < plan.sweeps.size(); ++i) {
    j["sweeps"].push_back(
        {{"key", plan.sweeps[i].key}, {"short", short_key(plan.sweeps, i)}, {"values", plan.sweeps[i].values}});
  }
  j["runs"] = nlohmann::json::array();
  for (const RunSpec& run : runs) {
    nlohmann::json values = nlohmann::json::object();
    for (const auto& [key, value] : run.values) values[key] = value;
    j["runs"].push_back({{"name", run.name}, {"label", run.label}, {"seed", run.seed}, {"values", values}});
  }
  return j;
}

}  // namespace

void validate_plan(const AblationPlan& plan) {
  for (const std::string& set : plan.sets) {
    const size_t eq = set.find('=');
    ZT_CHECK(eq != std::string::npos && eq > 0, "--set '", set, "': expected section.key=value");
    const std::string key = key_of(set);
    ZT_CHECK(key != "log.out_dir", "--set ", set, ": ablate sets log.out_dir per run; use --out for the ablation directory");
    ZT_CHECK(key != "train.seed", "--set ", set, ": ablate sets train.seed per run; use --seeds N");
    for (const Sweep& sweep : plan.sweeps) {
      ZT_CHECK(key != sweep.key, "--set ", set, ": ", key, " is also swept (--sweep ", sweep.key, "=...)");
    }
  }
  ZT_CHECK(!plan.out_dir.empty(), "the ablation directory (--out) is empty");
  ZT_CHECK(plan.jobs >= 1, "--jobs must be >= 1, got ", plan.jobs);
  ZT_CHECK(!plan.stream_train_output || plan.jobs == 1,
           "--show-train-output needs --jobs 1 (the output of ", plan.jobs, " trains would interleave)");
  if (!plan.devices.empty()) {
    for (const std::string& set : plan.sets) {
      ZT_CHECK(key_of(set) != "train.device", "--set ", set, ": --devices gives each run its train.device");
    }
    for (const Sweep& sweep : plan.sweeps) {
      ZT_CHECK(sweep.key != "train.device", "--sweep train.device: --devices gives each run its train.device");
    }
  }
}

fs::path run_directory(const AblationPlan& plan, const RunSpec& run) { return plan.out_dir / run.name; }

std::vector<std::string> train_overrides(const AblationPlan& plan, const RunSpec& run) {
  std::vector<std::string> overrides = plan.sets;
  for (const auto& [key, value] : run.values) overrides.push_back(key + "=" + value);
  overrides.push_back("train.seed=" + std::to_string(run.seed));
  overrides.push_back("log.out_dir=" + run_directory(plan, run).string());
  return overrides;
}

std::vector<std::string> train_command(const AblationPlan& plan, const RunSpec& run, Attempt attempt) {
  std::vector<std::string> argv = {plan.train_bin.string(), "--config", plan.config.string()};
  for (const std::string& set : train_overrides(plan, run)) {
    argv.push_back("--set");
    argv.push_back(set);
  }
  if (attempt == Attempt::kResume) argv.push_back("--resume");
  if (attempt == Attempt::kStartOver) argv.push_back("--overwrite");
  return argv;
}

bool run_finished(const fs::path& run_dir) { return fs::exists(run_dir / kDoneMarker); }
bool run_diverged(const fs::path& run_dir) { return fs::exists(run_dir / kDivergedMarker); }
bool run_started(const fs::path& run_dir) { return fs::exists(run_dir / kMetrics) || run_resumable(run_dir); }
bool run_resumable(const fs::path& run_dir) { return newest_checkpoint(run_dir.string()).has_value(); }

Attempt next_attempt(const fs::path& run_dir) {
  if (run_resumable(run_dir)) return Attempt::kResume;
  return run_started(run_dir) ? Attempt::kStartOver : Attempt::kFresh;
}

int run_program(const std::vector<std::string>& argv, const fs::path& log_file) {
  return wait_program(spawn_program(argv, log_file));
}

std::string stopped_on_nonfinite(const fs::path& run_dir, int exit_code) {
  if (exit_code == 0 || exit_code > 128) return "";  // finished, or killed by a signal
  try {
    const RunMetrics metrics = read_metrics_if_present(run_dir / kMetrics);
    if (!metrics.steps.empty()) {
      const StepRecord& last = metrics.steps.back();
      if (!std::isfinite(last.loss) || !std::isfinite(last.grad_norm)) {
        return "stopped on a non-finite " + std::string(std::isfinite(last.loss) ? "gradient norm" : "loss") +
               " at step " + std::to_string(last.step);
      }
    }
  } catch (const Error&) {
    // An unreadable metrics file: the log below decides.
  }
  std::ifstream in(run_dir / kTrainLog);
  std::deque<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    lines.push_back(line);
    if (lines.size() > 20) lines.pop_front();
  }
  for (const std::string& line : lines) {
    if (line.find("non-finite") != std::string::npos && line.rfind("ablate:", 0) != 0) {
      return "stopped on a non-finite value: " + line.substr(0, 200);
    }
  }
  return "";
}

namespace {

// The signal that asks run_ablation to stop (SIGINT, SIGTERM); 0 while none came.
volatile std::sig_atomic_t g_stop_signal = 0;
extern "C" void on_stop_signal(int signal) { g_stop_signal = signal; }

// Installs the handlers for the life of run_ablation and puts the previous ones back.
// SA_RESTART keeps writes and reads going; nanosleep returns early on a signal regardless.
class StopSignals {
 public:
  StopSignals() {
    g_stop_signal = 0;
    struct sigaction action {};
    action.sa_handler = on_stop_signal;
    action.sa_flags = SA_RESTART;
    sigemptyset(&action.sa_mask);
    sigaction(SIGINT, &action, &old_int_);
    sigaction(SIGTERM, &action, &old_term_);
  }
  ~StopSignals() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

 private:
  struct sigaction old_int_ {}, old_term_ {};
};

using Clock = std::chrono::steady_clock;

struct ActiveRun {
  size_t index = 0;
  pid_t pid = 0;
  Clock::time_point start;
};

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

void sleep_briefly() {
  timespec pause{0, 50 * 1000 * 1000};
  nanosleep(&pause, nullptr);  // a signal ends it early
}

// Stops the running trains: SIGTERM, then SIGKILL to those still running after `grace`.
void stop_children(std::vector<std::optional<ActiveRun>>& slots, double grace_seconds) {
  for (auto& slot : slots) {
    if (slot) kill(slot->pid, SIGTERM);
  }
  const auto start = Clock::now();
  int code = 0;
  while (true) {
    bool running = false;
    for (auto& slot : slots) {
      if (slot && !poll_program(slot->pid, &code)) running = true;
      else if (slot) slot.reset();
    }
    if (!running) return;
    if (seconds_since(start) > grace_seconds) break;
    sleep_briefly();
  }
  for (auto& slot : slots) {
    if (!slot) continue;
    kill(slot->pid, SIGKILL);
    (void)wait_program(slot->pid);
    slot.reset();
  }
}

}  // namespace

std::vector<RunOutcome> run_ablation(const AblationPlan& plan, std::ostream& progress) {
  validate_plan(plan);
  const std::vector<RunSpec> runs = expand_grid(plan.sweeps, plan.seeds);
  ZT_CHECK(access(plan.train_bin.c_str(), X_OK) == 0, "the train program ", plan.train_bin.string(),
           " does not exist or is not executable (build it, or pass --train-bin PATH)");
  fs::create_directories(plan.out_dir);
  write_text(plan.out_dir / "ablation.json", manifest(plan, runs).dump(2) + "\n");

  const size_t total = runs.size();
  auto tag_of = [&](size_t i) {
    return "[" + std::to_string(i + 1) + "/" + std::to_string(total) + "] " + runs[i].label;
  };
  std::vector<RunOutcome> outcomes(total);
  std::deque<size_t> pending;
  for (size_t i = 0; i < total; ++i) {
    outcomes[i].run = runs[i];
    const fs::path dir = run_directory(plan, runs[i]);
    if (!run_finished(dir) && !run_diverged(dir)) {
      pending.push_back(i);
      continue;
    }
    outcomes[i].status = RunStatus::kAlreadyDone;
    progress << tag_of(i) << " already finished" << (run_finished(dir) ? "" : " (diverged)") << "\n";
    const nlohmann::json args = train_command(plan, runs[i], Attempt::kFresh);
    if (fs::exists(dir / kArgsFile) && nlohmann::json::parse(read_text(dir / kArgsFile), nullptr, false) != args) {
      progress << "    note: it finished with a different train command (see " << (dir / kArgsFile).string()
               << "); delete " << dir.string() << " to rerun it with this one\n";
    }
  }
  progress.flush();

  // Where each run goes (scheduler.h): the thread count is fixed for this invocation.
  const int64_t jobs = plan.jobs;
  int64_t cpu_threads = 0;
  if (plan.devices.empty() && jobs > 1 && !pending.empty()) {
    cpu_threads = threads_per_run(plan.cpu_cores > 0 ? plan.cpu_cores : available_cores(), jobs);
  }
  auto placement = [&](size_t index, size_t slot) {
    bool cpu_run = false, threads_set = true;
    if (plan.devices.empty() && cpu_threads > 0) {
      const Config cfg = load_config(plan.config.string(), train_overrides(plan, runs[index]));
      cpu_run = cfg.train.device == "cpu" || (cfg.train.device == "auto" && !cuda_available());
      threads_set = cfg.train.threads > 0;
    }
    return placement_sets(plan.devices, slot, cpu_run, threads_set, cpu_threads);
  };

  // One slot per run at most: a huge --jobs allocates nothing it cannot use.
  std::vector<std::optional<ActiveRun>> slots(std::max<size_t>(1, std::min<size_t>(jobs, pending.size())));
  std::vector<double> durations;  // of the runs that ended done or diverged here
  size_t ended = total - pending.size(), failed = 0;
  bool status_shown = false;
  auto clear_status = [&] {
    if (status_shown) progress << "\r\033[K";
    status_shown = false;
  };
  auto sweep_state = [&] {
    std::vector<double> elapsed;
    for (const auto& slot : slots) {
      if (slot) elapsed.push_back(seconds_since(slot->start));
    }
    double mean = -1;
    if (!durations.empty()) mean = std::accumulate(durations.begin(), durations.end(), 0.0) / durations.size();
    std::string state = std::to_string(ended) + "/" + std::to_string(total) + " done, " +
                        std::to_string(elapsed.size()) + " running, " + std::to_string(pending.size()) + " left";
    if (failed) state += ", " + std::to_string(failed) + " failed";
    if (!elapsed.empty() || !pending.empty()) {
      state += ", ETA " + format_duration(estimate_eta(mean, elapsed, pending.size(), static_cast<int64_t>(slots.size())));
    }
    return state;
  };

  auto start_run = [&](size_t slot) {
    const size_t i = pending.front();
    pending.pop_front();
    const RunSpec& run = runs[i];
    const fs::path dir = run_directory(plan, run);
    RunOutcome& outcome = outcomes[i];
    outcome.attempt = next_attempt(dir);
    std::vector<std::string> command = train_command(plan, run, outcome.attempt);
    const std::vector<std::string> where = placement(i, slot);
    for (const std::string& set : where) command.insert(command.end(), {"--set", set});
    clear_status();
    progress << tag_of(i) << " ..."
             << (outcome.attempt == Attempt::kResume      ? " (resuming from its newest checkpoint)"
                 : outcome.attempt == Attempt::kStartOver ? " (an earlier attempt left no checkpoint: starting over)"
                                                          : "");
    for (const std::string& set : where) progress << " [" << set << "]";
    progress << "\n";
    progress.flush();
    fs::create_directories(dir);
    fs::remove(dir / kFailedMarker);
    write_text(dir / kArgsFile, nlohmann::json(train_command(plan, run, Attempt::kFresh)).dump(2) + "\n");
    const fs::path log = plan.stream_train_output ? fs::path() : dir / kTrainLog;
    if (!log.empty()) {
      std::ofstream out(log, std::ios::app);
      out << "ablate: starting:";
      for (const std::string& a : command) out << " " << a;
      out << "\n";
    }
    ActiveRun active;
    active.index = i;
    active.start = Clock::now();
    try {
      active.pid = spawn_program(command, log);
    } catch (const Error& e) {
      outcome.status = RunStatus::kFailed;
      outcome.detail = e.what();
      write_text(dir / kFailedMarker, outcome.detail + "\n");
      ++ended;
      ++failed;
      progress << tag_of(i) << " FAILED: " << outcome.detail << "\n";
      return;
    }
    slots[slot] = active;
  };

  auto finish_run = [&](const ActiveRun& active, int code) {
    const size_t i = active.index;
    const fs::path dir = run_directory(plan, runs[i]);
    RunOutcome& outcome = outcomes[i];
    outcome.seconds = seconds_since(active.start);
    ++ended;
    clear_status();
    const std::string tag = tag_of(i);
    if (code == 0) {
      write_text(dir / kDoneMarker, "train exited 0 after " + format_seconds(outcome.seconds) + "\n");
      outcome.status = RunStatus::kDone;
      durations.push_back(outcome.seconds);
      const RunSummary s = summarize(read_metrics_if_present(dir / kMetrics));
      progress << tag << " done in " << format_seconds(outcome.seconds);
      if (!std::isnan(s.final_loss)) progress << ", final loss " << s.final_loss;
      if (!std::isnan(s.final_val_loss)) progress << ", val_loss " << s.final_val_loss;
      progress << " (" << sweep_state() << ")\n";
    } else if (std::string why = stopped_on_nonfinite(dir, code); !why.empty()) {
      outcome.status = RunStatus::kDiverged;
      outcome.detail = why;
      durations.push_back(outcome.seconds);
      write_text(dir / kDivergedMarker, why + "\n");
      progress << tag << " DIVERGED after " << format_seconds(outcome.seconds) << ": " << why << " ("
               << sweep_state() << ")\n";
    } else {
      outcome.status = RunStatus::kFailed;
      outcome.detail = code > 128 ? "train was killed by signal " + std::to_string(code - 128)
                                  : "train exited with status " + std::to_string(code);
      ++failed;
      write_text(dir / kFailedMarker, outcome.detail + "\n");
      progress << tag << " FAILED after " << format_seconds(outcome.seconds) << ": " << outcome.detail;
      if (!plan.stream_train_output) {
        progress << "; last lines of " << (dir / kTrainLog).string() << ":\n" << tail_lines(dir / kTrainLog, 15);
      } else {
        progress << "\n";
      }
      progress << "    (" << sweep_state() << ")\n";
    }
    progress.flush();
  };

  StopSignals signals;
  auto last_status = Clock::now() - std::chrono::seconds(10);
  while (true) {
    if (g_stop_signal != 0) {
      const int signal = g_stop_signal;
      clear_status();
      progress << "ablate: got signal " << signal << ": stopping the running trains\n";
      progress.flush();
      std::vector<size_t> stopped;
      for (const auto& slot : slots) {
        if (slot) stopped.push_back(slot->index);
      }
      stop_children(slots, 10.0);
      for (size_t i : stopped) outcomes[i] = {runs[i], RunStatus::kInterrupted, outcomes[i].attempt,
                                              "stopped by signal " + std::to_string(signal), 0, signal};
      for (size_t i : pending) outcomes[i] = {runs[i], RunStatus::kInterrupted, Attempt::kFresh, "not started", 0, signal};
      return outcomes;
    }
    for (size_t slot = 0; slot < slots.size(); ++slot) {
      if (!slots[slot] && !pending.empty()) start_run(slot);
    }
    const bool running = std::any_of(slots.begin(), slots.end(), [](const auto& s) { return s.has_value(); });
    if (!running && pending.empty()) break;
    bool any_ended = false;
    for (auto& slot : slots) {
      int code = 0;
      if (slot && poll_program(slot->pid, &code)) {
        const ActiveRun active = *slot;
        slot.reset();
        finish_run(active, code);
        any_ended = true;
      }
    }
    if (any_ended) continue;
    if (plan.progress_line && seconds_since(last_status) >= 1.0) {
      progress << "\r\033[Kablate: " << sweep_state();
      progress.flush();
      status_shown = true;
      last_status = Clock::now();
    }
    sleep_briefly();
  }
  clear_status();
  progress.flush();
  return outcomes;
}

namespace {

// ln(model.vocab_size) of the run: from the config train resolved into the run directory, else
// from the plan's; NaN when neither loads.
double log_vocab(const AblationPlan& plan, const RunSpec& run) {
  const fs::path resolved = run_directory(plan, run) / "config.yaml";
  try {
    if (fs::exists(resolved)) return std::log(static_cast<double>(load_config(resolved.string()).model.vocab_size));
  } catch (const Error&) {
  }
  try {
    return std::log(static_cast<double>(load_config(plan.config.string(), train_overrides(plan, run)).model.vocab_size));
  } catch (const Error&) {
    return std::nan("");
  }
}

std::string first_line(const std::string& text) { return text.substr(0, text.find('\n')); }

}  // namespace

std::vector<SummaryRow> collect_summary(const AblationPlan& plan, const SpikeOptions& spikes) {
  std::vector<SummaryRow> rows;
  for (const RunSpec& run : expand_grid(plan.sweeps, plan.seeds)) {
    const fs::path dir = run_directory(plan, run);
    SummaryRow row;
    row.run = run;
    row.status = run_finished(dir)                 ? "done"
                 : run_diverged(dir)               ? "diverged"
                 : fs::exists(dir / kFailedMarker) ? "failed"
                 : run_started(dir)                ? "unfinished"
                                                   : "not run";
    row.summary = summarize(read_metrics_if_present(dir / kMetrics), spikes);
    if (row.status == "done" || row.status == "diverged") {
      row.init_loss = std::isnan(row.summary.initial_val_loss) ? log_vocab(plan, run) : row.summary.initial_val_loss;
      const bool stopped = row.status == "diverged";
      row.diverged = divergence_reason(stopped, final_loss_of(row.summary), row.init_loss);
      if (stopped) {
        const std::string why = first_line(read_text(dir / kDivergedMarker));
        if (!why.empty()) row.diverged = why;
      }
      if (!row.diverged.empty()) row.status = "diverged";
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

void write_lr_sensitivity_data(const AblationPlan& plan, const std::vector<SummaryRow>& rows) {
  const fs::path file = plan.out_dir / "lr_sensitivity.json";
  const auto settings = lr_sensitivity(plan.sweeps, rows);
  if (!settings) {
    fs::remove(file);  // from an earlier ablation in this directory
    return;
  }
  fs::create_directories(plan.out_dir);
  write_text(file, lr_sensitivity_json(plan.sweeps, *settings, rows).dump(2) + "\n");
}

void write_summary(const AblationPlan& plan, const std::vector<SummaryRow>& rows, const SpikeOptions& spikes) {
  fs::create_directories(plan.out_dir);
  std::string md = "# Ablation " + plan.out_dir.filename().string() + "\n\nConfig: `" + plan.config.string() +
                   "`, seeds: " + std::to_string(plan.seeds);
  for (const std::string& set : plan.sets) md += ", `--set " + set + "`";
  md += "\n\n" + summary_markdown(plan.sweeps, rows, spikes);
  const fs::path plots = plan.out_dir / "plots";
  for (const char* figure : {"combined_vs_step.png", "combined_vs_tokens.png", "final_loss_vs_lr.png",
                             "signals_diverged.png"}) {
    if (fs::exists(plots / figure)) md += "\n![" + std::string(figure) + "](plots/" + figure + ")\n";
  }
  write_text(plan.out_dir / "summary.md", md);
  write_text(plan.out_dir / "summary.csv", summary_csv(plan.sweeps, rows));
}

}  // namespace zt::ablation
