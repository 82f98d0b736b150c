#include "framework/distributed/local_launcher.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <thread>

#include <spawn.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "framework/error.h"

extern char** environ;

namespace zt {

namespace {

namespace fs = std::filesystem;

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "was killed by signal " + std::to_string(WTERMSIG(status)) + " (" +
                                  strsignal(WTERMSIG(status)) + ")";
  return "ended with wait status " + std::to_string(status);
}

// The parent's environment with the rank variables replaced.
std::vector<std::string> rank_environment(int rank, int nproc, const std::string& store_dir, const std::string& job) {
  std::map<std::string, std::string> env;
  for (char** e = environ; e && *e; ++e) {
    const char* eq = std::strchr(*e, '=');
    if (eq) env[std::string(*e, static_cast<size_t>(eq - *e))] = eq + 1;
  }
  env["RANK"] = std::to_string(rank);
  env["LOCAL_RANK"] = std::to_string(rank);
  env["WORLD_SIZE"] = std::to_string(nproc);
  env["LOCAL_WORLD_SIZE"] = std::to_string(nproc);
  env["ZTRAIN_STORE_DIR"] = store_dir;
  env["ZTRAIN_LAUNCHER_PID"] = std::to_string(::getpid());
  env["ZTRAIN_JOB_ID"] = job;
  if (!env.count("OMP_NUM_THREADS")) {
    const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
    env["OMP_NUM_THREADS"] = std::to_string(std::max(1u, cores / static_cast<unsigned>(nproc)));
  }
  std::vector<std::string> out;
  for (auto& [k, v] : env) out.push_back(k + "=" + v);
  return out;
}

std::vector<char*> c_strings(std::vector<std::string>& v) {
  std::vector<char*> out;
  for (auto& s : v) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// Removes the temporary store directory on every way out.
struct TempDir {
  std::string path;
  ~TempDir() {
    if (path.empty()) return;
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

// Each rank runs in its own process group so that stopping it also stops what it started
// (a shell's children, say); -pid addresses the whole group.
void stop_all(std::map<pid_t, int>& running) {
  for (auto& [pid, rank] : running) ::kill(-pid, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!running.empty() && std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid > 0) running.erase(pid);
    else std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  for (auto& [pid, rank] : running) {
    ::kill(-pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
  }
  running.clear();
}

// SIGINT/SIGTERM/SIGHUP to the launcher (which the ranks, in their own process groups, do not
// see from a terminal) are recorded here and passed on to the ranks by the wait loop.
volatile std::sig_atomic_t g_signal = 0, g_signal_count = 0;
extern "C" void record_signal(int sig) {
  g_signal = sig;
  g_signal_count = g_signal_count + 1;
}

class ForwardSignals {
 public:
  ForwardSignals() {
    struct sigaction sa = {};
    sa.sa_handler = record_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;
    for (size_t i = 0; i < kSignals.size(); ++i) ::sigaction(kSignals[i], &sa, &old_[i]);
    g_signal = 0;
    g_signal_count = 0;
  }
  ~ForwardSignals() {
    for (size_t i = 0; i < kSignals.size(); ++i) ::sigaction(kSignals[i], &old_[i], nullptr);
  }

 private:
  static constexpr std::array<int, 4> kSignals = {SIGINT, SIGTERM, SIGHUP, SIGUSR1};
  std::array<struct sigaction, 4> old_;
};

std::string host_name() {
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) host[0] = '\0';
  return host;
}

constexpr const char* kOwnerFile = "launcher.owner";  // "<host> <pid>" of the launcher

// Temporary store directories (<parent>/ztrain-store-*) whose launcher on this host is gone:
// left by a launcher killed with SIGKILL. Removed, best effort.
void remove_orphaned_stores(const std::string& parent) {
  std::error_code ec;
  const std::string me = host_name();
  for (const auto& e : fs::directory_iterator(parent, ec)) {
    if (e.path().filename().string().rfind("ztrain-store-", 0) != 0) continue;
    std::ifstream owner(e.path() / kOwnerFile);
    std::string host;
    long pid = 0;
    if (!(owner >> host >> pid) || host != me || pid <= 0) continue;
    if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;  // alive (or not ours to judge)
    std::error_code rm;
    fs::remove_all(e.path(), rm);
  }
}

// host-pid-random: unique among jobs that share a store directory, even across machines.
std::string job_identity() {
  std::string h = host_name();
  for (char& ch : h)
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '-') ch = '_';
  std::random_device rd;
  char nonce[17];
  std::snprintf(nonce, sizeof nonce, "%08x%08x", rd(), rd());
  return (h.empty() ? "host" : h) + "-" + std::to_string(::getpid()) + "-" + nonce;
}

}  // namespace

std::string current_executable() {
  std::error_code ec;
  const fs::path p = fs::read_symlink("/proc/self/exe", ec);
  ZT_CHECK(!ec, "cannot find the running executable (/proc/self/exe): ", ec.message());
  return p.string();
}

void bind_to_launcher() {
  const char* v = std::getenv("ZTRAIN_LAUNCHER_PID");
  if (!v || !*v) return;
  char* end = nullptr;
  const long launcher = std::strtol(v, &end, 10);
  ZT_CHECK(end && *end == '\0' && launcher > 0, "ZTRAIN_LAUNCHER_PID='", v, "' is not a process id");
  if (::getppid() != static_cast<pid_t>(launcher)) {
    // Either a program in between (a shell) or the launcher died before the prctl below
    // could watch it; the latter shows as a launcher that no longer exists.
    ZT_CHECK(::kill(static_cast<pid_t>(launcher), 0) == 0 || errno != ESRCH, "the launcher (pid ", launcher,
             ", ZTRAIN_LAUNCHER_PID) is gone; not starting this rank");
    return;
  }
  ZT_CHECK(::prctl(PR_SET_PDEATHSIG, SIGKILL) == 0, "prctl(PR_SET_PDEATHSIG): ", std::strerror(errno));
  // The launcher may have died between fork and prctl: then the parent is already another.
  ZT_CHECK(::getppid() == static_cast<pid_t>(launcher), "the launcher (pid ", launcher,
           ", ZTRAIN_LAUNCHER_PID) is gone; not starting this rank");
}

int run_local_ranks(const LaunchOptions& options) {
  ZT_CHECK(options.nproc >= 1 && options.nproc <= 1024, "number of ranks ", options.nproc,
           " must be between 1 and 1024");
  ZT_CHECK(!options.command.empty(), "no program to run (put it after --)");

  TempDir temp;
  std::string store_dir = options.store_dir;
  if (store_dir.empty()) {
    const char* tmp = std::getenv("TMPDIR");
    const std::string parent = tmp && *tmp ? tmp : "/tmp";
    remove_orphaned_stores(parent);
    std::string templ = parent + "/ztrain-store-XXXXXX";
    ZT_CHECK(::mkdtemp(templ.data()), "cannot create a temporary store directory from '", templ,
             "': ", std::strerror(errno));
    store_dir = temp.path = templ;
    // Who owns it: a launcher killed with SIGKILL cannot remove it; the next one on this
    // machine does (remove_orphaned_stores).
    std::ofstream(store_dir + "/" + kOwnerFile) << host_name() << " " << ::getpid() << "\n";
  } else {
    std::error_code ec;
    fs::create_directories(store_dir, ec);
    ZT_CHECK(!ec, "cannot create store directory '", store_dir, "': ", ec.message());
  }
  // This job's identity: its ranks keep their keys in <store>/job-<id> (the trainer's
  // rendezvous), so a --store-dir reused after a crash or shared with another job never mixes
  // keys; that subfolder is removed on the way out.
  const std::string job = job_identity();
  TempDir job_keys;
  if (!options.store_dir.empty()) job_keys.path = store_dir + "/job-" + job;

  std::vector<std::string> args = options.command;
  std::vector<char*> argv = c_strings(args);
  ForwardSignals forward;
  posix_spawnattr_t attr;
  ::posix_spawnattr_init(&attr);
  ::posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
  ::posix_spawnattr_setpgroup(&attr, 0);  // a new process group led by the rank
  std::map<pid_t, int> running;  // pid -> rank
  for (int rank = 0; rank < options.nproc; ++rank) {
    std::vector<std::string> env = rank_environment(rank, options.nproc, store_dir, job);
    std::vector<char*> envp = c_strings(env);
    pid_t pid = 0;
    const int rc = ::posix_spawnp(&pid, argv[0], nullptr, &attr, argv.data(), envp.data());
    if (rc != 0) {
      ::posix_spawnattr_destroy(&attr);
      stop_all(running);
      ZT_FAIL("cannot start '", options.command[0], "' for rank ", rank, ": ", std::strerror(rc));
    }
    running[pid] = rank;
  }
  ::posix_spawnattr_destroy(&attr);

  // A signal is passed on to the ranks, which get stop_grace_s to end by themselves (train
  // writes a checkpoint and exits with kRankPreemptedStatus); a second signal, or the end of
  // the grace, stops them (SIGTERM, then SIGKILL).
  int handled_signals = 0, forwarded = 0, preempted = 0;
  auto grace_end = std::chrono::steady_clock::time_point::max();
  while (!running.empty()) {
    int status = 0;
    // Polling (not a blocking wait) so a signal that lands between checks is never missed.
    const pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (g_signal_count != handled_signals) {
      handled_signals = g_signal_count;
      const int sig = g_signal;
      if (forwarded) {
        stop_all(running);
        ZT_FAIL("interrupted by a second signal ", sig, " (", strsignal(sig), "); stopped the ranks");
      }
      forwarded = sig;
      for (auto& [p, rank] : running) ::kill(-p, sig);
      grace_end = std::chrono::steady_clock::now() +
                  std::chrono::milliseconds(static_cast<int64_t>(options.stop_grace_s * 1000));
    }
    if (std::chrono::steady_clock::now() > grace_end) {
      stop_all(running);
      ZT_FAIL("interrupted by signal ", forwarded, " (", strsignal(forwarded), "); the ranks did not stop within ",
              options.stop_grace_s, " s and were killed");
    }
    if (pid == 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      continue;
    }
    if (pid < 0) {
      if (errno == EINTR) continue;
      stop_all(running);
      ZT_FAIL("waitpid failed: ", std::strerror(errno));
    }
    auto it = running.find(pid);
    if (it == running.end()) continue;  // not one of ours
    const int rank = it->second;
    running.erase(it);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) continue;
    // Stopped on request at a checkpoint: the others stop at the same step (they agree on it).
    if (WIFEXITED(status) && WEXITSTATUS(status) == kRankPreemptedStatus) {
      ++preempted;
      continue;
    }
    const size_t others = running.size();
    stop_all(running);
    ZT_CHECK(!forwarded, "interrupted by signal ", forwarded, " (", strsignal(forwarded), "); rank ", rank, " ",
             describe_status(status), others ? "; stopped the other ranks" : "");
    ZT_FAIL("rank ", rank, " of ", options.nproc, " ", describe_status(status),
            others ? "; stopped the other ranks" : "");
  }
  return preempted > 0 ? kRankPreemptedStatus : 0;
}

}  // namespace zt
