#include "trainers/ablation/runner.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <deque>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "framework/error.h"
#include "trainers/ablation/run_metrics.h"
#include "trainers/checkpoint.h"

extern char** environ;

namespace zt::ablation {
namespace fs = std::filesystem;
namespace {

constexpr const char* kDoneMarker = "ablate.done";
constexpr const char* kFailedMarker = "ablate.failed";
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
bool run_started(const fs::path& run_dir) { return fs::exists(run_dir / kMetrics) || run_resumable(run_dir); }
bool run_resumable(const fs::path& run_dir) { return newest_checkpoint(run_dir.string()).has_value(); }

Attempt next_attempt(const fs::path& run_dir) {
  if (run_resumable(run_dir)) return Attempt::kResume;
  return run_started(run_dir) ? Attempt::kStartOver : Attempt::kFresh;
}

int run_program(const std::vector<std::string>& argv, const fs::path& log_file) {
  ZT_CHECK(!argv.empty(), "run_program: empty command");
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  const std::string log = log_file.string();
  if (!log.empty()) {
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  }
  pid_t pid = 0;
  const int err = posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ZT_CHECK(err == 0, "cannot start ", argv[0], ": ", std::strerror(err));

  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    ZT_CHECK(errno == EINTR, "waiting for ", argv[0], ": ", std::strerror(errno));
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

std::vector<RunOutcome> run_ablation(const AblationPlan& plan, std::ostream& progress) {
  validate_plan(plan);
  const std::vector<RunSpec> runs = expand_grid(plan.sweeps, plan.seeds);
  ZT_CHECK(access(plan.train_bin.c_str(), X_OK) == 0, "the train program ", plan.train_bin.string(),
           " does not exist or is not executable (build it, or pass --train-bin PATH)");
  fs::create_directories(plan.out_dir);
  write_text(plan.out_dir / "ablation.json", manifest(plan, runs).dump(2) + "\n");

  std::vector<RunOutcome> outcomes;
  const size_t total = runs.size();
  for (size_t i = 0; i < total; ++i) {
    const RunSpec& run = runs[i];
    const fs::path dir = run_directory(plan, run);
    const std::string tag = "[" + std::to_string(i + 1) + "/" + std::to_string(total) + "] " + run.label;
    RunOutcome outcome;
    outcome.run = run;

    const nlohmann::json args = train_command(plan, run, Attempt::kFresh);
    if (run_finished(dir)) {
      outcome.status = RunStatus::kAlreadyDone;
      progress << tag << " already finished\n";
      if (fs::exists(dir / kArgsFile) && nlohmann::json::parse(read_text(dir / kArgsFile), nullptr, false) != args) {
        progress << "    note: it finished with a different train command (see " << (dir / kArgsFile).string()
                 << "); delete " << dir.string() << " to rerun it with this one\n";
      }
      progress.flush();
      outcomes.push_back(outcome);
      continue;
    }

    outcome.attempt = next_attempt(dir);
    progress << tag << " ..."
             << (outcome.attempt == Attempt::kResume      ? " (resuming from its newest checkpoint)"
                 : outcome.attempt == Attempt::kStartOver ? " (an earlier attempt left no checkpoint: starting over)"
                                                          : "")
             << "\n";
    progress.flush();
    fs::create_directories(dir);
    fs::remove(dir / kFailedMarker);
    write_text(dir / kArgsFile, args.dump(2) + "\n");

    const auto start = std::chrono::steady_clock::now();
    const int code = run_program(train_command(plan, run, outcome.attempt),
                                 plan.stream_train_output ? fs::path() : dir / kTrainLog);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

    if (code == 0) {
      write_text(dir / kDoneMarker, "train exited 0 after " + format_seconds(seconds) + "\n");
      outcome.status = RunStatus::kDone;
      const RunSummary s = summarize(read_metrics_if_present(dir / kMetrics));
      progress << tag << " done in " << format_seconds(seconds);
      if (!std::isnan(s.final_loss)) progress << ", final loss " << s.final_loss;
      if (!std::isnan(s.final_val_loss)) progress << ", val_loss " << s.final_val_loss;
      progress << "\n";
    } else {
      outcome.status = RunStatus::kFailed;
      outcome.detail = code > 128 ? "train was killed by signal " + std::to_string(code - 128)
                                  : "train exited with status " + std::to_string(code);
      write_text(dir / kFailedMarker, outcome.detail + "\n");
      progress << tag << " FAILED after " << format_seconds(seconds) << ": " << outcome.detail;
      if (!plan.stream_train_output) {
        progress << "; last lines of " << (dir / kTrainLog).string() << ":\n" << tail_lines(dir / kTrainLog, 15);
      } else {
        progress << "\n";
      }
    }
    progress.flush();
    outcomes.push_back(outcome);
  }
  return outcomes;
}

std::vector<SummaryRow> collect_summary(const AblationPlan& plan, const SpikeOptions& spikes) {
  std::vector<SummaryRow> rows;
  for (const RunSpec& run : expand_grid(plan.sweeps, plan.seeds)) {
    const fs::path dir = run_directory(plan, run);
    SummaryRow row;
    row.run = run;
    row.status = run_finished(dir)               ? "done"
                 : fs::exists(dir / kFailedMarker) ? "failed"
                 : run_started(dir)              ? "unfinished"
                                                 : "not run";
    row.summary = summarize(read_metrics_if_present(dir / kMetrics), spikes);
    rows.push_back(std::move(row));
  }
  return rows;
}

void write_summary(const AblationPlan& plan, const std::vector<SummaryRow>& rows, const SpikeOptions& spikes) {
  fs::create_directories(plan.out_dir);
  std::string md = "# Ablation " + plan.out_dir.filename().string() + "\n\nConfig: `" + plan.config.string() +
                   "`, seeds: " + std::to_string(plan.seeds);
  for (const std::string& set : plan.sets) md += ", `--set " + set + "`";
  md += "\n\n" + summary_markdown(plan.sweeps, rows, spikes);
  const fs::path plots = plan.out_dir / "plots";
  for (const char* figure : {"combined_vs_step.png", "combined_vs_tokens.png"}) {
    if (fs::exists(plots / figure)) md += "\n![" + std::string(figure) + "](plots/" + figure + ")\n";
  }
  write_text(plan.out_dir / "summary.md", md);
  write_text(plan.out_dir / "summary.csv", summary_csv(plan.sweeps, rows));
}

}  // namespace zt::ablation
