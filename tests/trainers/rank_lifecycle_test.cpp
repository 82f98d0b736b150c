// What happens to a multi-rank job when a process goes away or is asked to stop, through the
// real tools: build/bin/launch starts build/bin/train on 2 CPU ranks (Gloo), and the test
// signals or kills real processes.
//   - SIGTERM to the launcher, or SIGUSR1 to one rank only: every rank stops at the same step
//     after writing its checkpoint, launch exits 75, and --resume continues from that step.
//   - kill -9 of the launcher: the ranks die with it (PR_SET_PDEATHSIG), instead of training on.
//   - errors of several ranks are whole lines.
//   - a second SIGTERM exits at once.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include "tests/support/multi_rank.h"
#include "trainers/checkpoint.h"
#include "trainers/data/token_shard.h"
#include "trainers/preemption.h"

namespace zt {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Step records in a metrics.jsonl (evaluations excluded) and the last step among them.
std::pair<int64_t, int64_t> step_records(const std::string& path) {
  std::ifstream in(path);
  int64_t n = 0, last = 0;
  static const std::regex step_re("\"step\":([0-9]+)");
  for (std::string line; std::getline(in, line);) {
    std::smatch m;
    if (line.find("\"loss\"") == std::string::npos || !std::regex_search(line, m, step_re)) continue;
    ++n;
    last = std::stoll(m[1]);
  }
  return {n, last};
}

// A process started with /bin/sh -c, its output in a file.
struct Process {
  pid_t pid = -1;
  Process() = default;
  Process(Process&& o) noexcept : pid(o.pid) { o.pid = -1; }
  Process(const Process&) = delete;
  static Process start(const std::string& cmd, const std::string& log) {
    Process p;
    p.pid = ::fork();
    if (p.pid == 0) {
      ::execl("/bin/sh", "sh", "-c", ("exec " + cmd + " > " + log + " 2>&1").c_str(), nullptr);
      ::_exit(127);
    }
    return p;
  }
  // The exit status (-signal when killed), or INT32_MIN after `seconds` without an end.
  int wait(double seconds) {
    const auto end = Clock::now() + std::chrono::duration<double>(seconds);
    while (Clock::now() < end) {
      int status = 0;
      if (::waitpid(pid, &status, WNOHANG) == pid) {
        pid = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return INT32_MIN;
  }
  ~Process() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  }
};

// The children of `pid` (the launcher's ranks).
std::vector<pid_t> children_of(pid_t pid) {
  std::vector<pid_t> out;
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    const std::string stat = slurp(e.path().string() + "/stat");
    const size_t close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(stat.substr(close + 2));
    char state = 0;
    pid_t ppid = 0;
    rest >> state >> ppid;
    if (ppid == pid) out.push_back(static_cast<pid_t>(std::stol(name)));
  }
  return out;
}

// Alive and not a zombie.
bool running(pid_t pid) {
  const std::string stat = slurp("/proc/" + std::to_string(pid) + "/stat");
  const size_t close = stat.rfind(')');
  return close != std::string::npos && stat.size() > close + 2 && stat[close + 2] != 'Z' && stat[close + 2] != 'X';
}

class RankLifecycle : public ::testing::Test {
 protected:
  void SetUp() override {
    ZT_REQUIRE_GLOO();
    bin_ = ZTRAIN_BIN_DIR;
    if (!fs::exists(bin_ + "/train") || !fs::exists(bin_ + "/launch")) GTEST_SKIP() << "build train and launch first";
    std::vector<int32_t> ids;
    for (int i = 0; i < 6000; ++i) ids.push_back((i * 37 % 7) * 31 + (i % 5));
    data::write_token_shard(dir_.path() + "/train_000.bin", ids);
    data::write_token_shard(dir_.path() + "/val_000.bin", std::vector<int32_t>(ids.begin(), ids.begin() + 1000));
    std::ofstream(dir_.path() + "/c.yaml")
        << "model: {n_layer: 1, n_head: 2, d_model: 16, seq_len: 8, vocab_size: 250, vocab_multiple: 8}\n"
           "train: {batch_size: 2, max_steps: 1000000, seed: 5, device: cpu, dtype: f32, threads: 1}\n"
           "log: {log_every: 1, eval_every: 0, eval_batches: 1, checkpoint_every: 0}\n"
           "data: {train: " << dir_.path() << "/train_000.bin, val: " << dir_.path() << "/val_000.bin}\n";
  }

  std::string train_cmd(const std::string& run, int tp, const std::string& extra = "") const {
    return bin_ + "/train --config " + dir_.path() + "/c.yaml --set log.out_dir=" + dir_.path() + "/" + run +
           " --set parallel.tensor_parallel_size=" + std::to_string(tp) + " " + extra;
  }

  // Starts `launch --nproc 2 -- train` and waits until it has run `steps` steps.
  Process start_job(const std::string& run, const std::string& extra_launch = "", int steps = 2) {
    fs::create_directories(dir_.path() + "/tmp");  // the launcher's temporary store goes here
    Process p = Process::start("env TMPDIR=" + dir_.path() + "/tmp " + bin_ + "/launch --nproc 2 " + extra_launch +
                                   " -- " + train_cmd(run, 2),
                               dir_.path() + "/" + run + ".log");
    const auto end = Clock::now() + std::chrono::seconds(60);
    while (Clock::now() < end && step_records(dir_.path() + "/" + run + "/metrics.jsonl").first < steps)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    return p;
  }

  test::TempDir dir_;
  std::string bin_;
};

// SIGTERM to the launcher (passed on to every rank) or SIGUSR1 to rank 1 alone: both ranks
// stop after the same step with its checkpoint written, and the job exits 75.
TEST_F(RankLifecycle, ASignalStopsEveryRankAtOneStepWithACheckpoint) {
  for (const bool to_launcher : {true, false}) {
    SCOPED_TRACE(to_launcher ? "SIGTERM to launch" : "SIGUSR1 to rank 1");
    const std::string run = to_launcher ? "term" : "usr1";
    Process job = start_job(run);
    ASSERT_GE(step_records(dir_.path() + "/" + run + "/metrics.jsonl").first, 2) << slurp(dir_.path() + "/" + run + ".log");
    if (to_launcher) {
      ::kill(job.pid, SIGTERM);
    } else {
      const std::vector<pid_t> ranks = children_of(job.pid);
      ASSERT_EQ(ranks.size(), 2u);
      // Rank 1 is the later-started child: the larger pid unless pids wrapped.
      ::kill(std::max(ranks[0], ranks[1]), SIGUSR1);
    }
    const int status = job.wait(60);
    const std::string log = slurp(dir_.path() + "/" + run + ".log");
    EXPECT_EQ(status, kPreemptedExitStatus) << log;
    const auto [records, last] = step_records(dir_.path() + "/" + run + "/metrics.jsonl");
    EXPECT_EQ(records, last) << "one record per step, no gap or repeat";
    const std::string ckpt = checkpoint_path(dir_.path() + "/" + run, last);
    EXPECT_TRUE(fs::exists(ckpt)) << ckpt << "\n" << log;
    EXPECT_NE(log.find("stopped by " + std::string(to_launcher ? "SIGTERM" : "SIGUSR1") + " at step " +
                       std::to_string(last) + " after its checkpoint"),
              std::string::npos)
        << log;
    // The checkpoint is complete on every rank: the job resumes from it.
    Process resumed = Process::start(bin_ + "/launch --nproc 2 -- " +
                                         train_cmd(run, 2, "--resume --set train.max_steps=" + std::to_string(last + 1)),
                                     dir_.path() + "/" + run + ".resume.log");
    EXPECT_EQ(resumed.wait(60), 0) << slurp(dir_.path() + "/" + run + ".resume.log");
    EXPECT_NE(slurp(dir_.path() + "/" + run + ".resume.log").find("resumed at step " + std::to_string(last)),
              std::string::npos);
  }
}

// kill -9 of the launcher left both ranks training (holding the run directory's lock); now
// they die with it.
TEST_F(RankLifecycle, RanksDieWithTheirLauncher) {
  Process job = start_job("orphans");
  const std::vector<pid_t> ranks = children_of(job.pid);
  ASSERT_EQ(ranks.size(), 2u) << slurp(dir_.path() + "/orphans.log");
  ::kill(job.pid, SIGKILL);
  job.wait(10);
  const auto end = Clock::now() + std::chrono::seconds(10);
  while (Clock::now() < end && (running(ranks[0]) || running(ranks[1])))
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  for (pid_t r : ranks) {
    EXPECT_FALSE(running(r)) << "rank pid " << r << " outlived its launcher";
    if (running(r)) ::kill(r, SIGKILL);  // this test's own processes, by pid
  }
  // Its temporary store directory could not be removed by the dead launcher: the next launch
  // on this machine removes it.
  std::vector<fs::path> stores;
  for (const auto& e : fs::directory_iterator(dir_.path() + "/tmp"))
    if (e.path().filename().string().rfind("ztrain-store-", 0) == 0) stores.push_back(e.path());
  ASSERT_EQ(stores.size(), 1u);
  Process next = Process::start("env TMPDIR=" + dir_.path() + "/tmp " + bin_ + "/launch --nproc 1 -- true",
                                dir_.path() + "/next.log");
  EXPECT_EQ(next.wait(30), 0);
  EXPECT_FALSE(fs::exists(stores[0])) << stores[0];
}

// Errors of several ranks are whole lines ("train rank 1train rank 0: : ..." was seen).
TEST_F(RankLifecycle, ErrorsOfSeveralRanksAreWholeLines) {
  for (int attempt = 0; attempt < 3; ++attempt) {
    Process job = Process::start(bin_ + "/launch --nproc 8 -- " + bin_ + "/train --config " + dir_.path() +
                                     "/no-such-config-file-with-a-long-name-to-widen-the-window.yaml",
                                 dir_.path() + "/lines.log");
    EXPECT_EQ(job.wait(30), 1);
    std::istringstream log(slurp(dir_.path() + "/lines.log"));
    static const std::regex whole("(train rank [0-7]: config file '.*' does not exist|launch: .*)");
    for (std::string line; std::getline(log, line);) EXPECT_TRUE(std::regex_match(line, whole)) << line;
  }
}

// RANK=0 WORLD_SIZE=1048576 waited 150 s for ranks that could not come; ranks started with
// different world sizes failed inside Gloo. Both now end within parallel.rendezvous_timeout_s
// with the ranks and variables named.
TEST_F(RankLifecycle, AnImpossibleWorldFailsWithinTheTimeout) {
  const std::string store = dir_.path() + "/store";
  const auto t0 = Clock::now();
  Process lone = Process::start("env RANK=0 WORLD_SIZE=1048576 LOCAL_RANK=0 ZTRAIN_STORE_DIR=" + store + " " +
                                    train_cmd("lone", 1, "--set parallel.rendezvous_timeout_s=1"),
                                dir_.path() + "/lone.log");
  EXPECT_EQ(lone.wait(60), 1);
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(30));
  const std::string log = slurp(dir_.path() + "/lone.log");
  EXPECT_NE(log.find("train rank 0: rendezvous: after 1 s (parallel.rendezvous_timeout_s) ranks never arrived in the "
                     "store directory '" + store + "': ranks 1, 2, 3,"),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("and maybe more of the 1048576 ranks expected. This rank has RANK=0 WORLD_SIZE=1048576"),
            std::string::npos)
      << log;

  const std::string store2 = dir_.path() + "/store2";
  Process a = Process::start("env RANK=0 WORLD_SIZE=2 ZTRAIN_STORE_DIR=" + store2 + " " + train_cmd("a", 1),
                             dir_.path() + "/a.log");
  Process b = Process::start("env RANK=1 WORLD_SIZE=3 ZTRAIN_STORE_DIR=" + store2 + " " + train_cmd("b", 1),
                             dir_.path() + "/b.log");
  EXPECT_EQ(a.wait(60), 1);
  EXPECT_EQ(b.wait(60), 1);
  const std::string la = slurp(dir_.path() + "/a.log");
  EXPECT_NE(la.find("was started with RANK=1 WORLD_SIZE=3 LOCAL_RANK=(unset) but this rank"), std::string::npos) << la;
  EXPECT_NE(slurp(dir_.path() + "/b.log").find("the same world size"), std::string::npos);
}

// The first SIGTERM asks for a checkpoint at the end of the step; a second one exits at once
// with 128 + the signal (a run that must go now).
TEST(Preemption, TheSecondSignalExitsAtOnce) {
  const pid_t child = ::fork();
  if (child == 0) {
    const PreemptionWatch watch;
    ::raise(SIGTERM);
    if (PreemptionWatch::local_signal() != SIGTERM) ::_exit(1);
    ::raise(SIGUSR1);
    ::_exit(2);  // not reached
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 128 + SIGUSR1);
}

}  // namespace
}  // namespace zt
