#include "trainers/ablation/process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "framework/error.h"

extern char** environ;

namespace zt::ablation {
namespace {

// In the child between fork and exec only async-signal-safe calls: report errno and leave.
[[noreturn]] void child_fail(int pipe_fd, int err) {
  (void)!write(pipe_fd, &err, sizeof err);
  _exit(127);
}

}  // namespace

pid_t spawn_program(const std::vector<std::string>& argv, const std::filesystem::path& log_file) {
  ZT_CHECK(!argv.empty(), "spawn_program: empty command");
  // Everything the child needs is prepared before fork.
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const std::string log = log_file.string();
  int report[2];
  ZT_CHECK(pipe2(report, O_CLOEXEC) == 0, "cannot start ", argv[0], ": pipe: ", std::strerror(errno));
  const pid_t parent = getpid();

  const pid_t pid = fork();
  if (pid < 0) {
    const int err = errno;
    close(report[0]);
    close(report[1]);
    ZT_FAIL("cannot start ", argv[0], ": fork: ", std::strerror(err));
  }
  if (pid == 0) {
    close(report[0]);
    // The child dies with ablate. If ablate died before prctl took effect, leave now.
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) child_fail(report[1], errno);
    if (getppid() != parent) _exit(137);
    // Caught signals go back to their defaults at exec; the mask would be inherited.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    if (!log.empty()) {
      const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
      if (fd < 0) child_fail(report[1], errno);
      if (dup2(fd, STDOUT_FILENO) < 0 || dup2(fd, STDERR_FILENO) < 0) child_fail(report[1], errno);
    }
    execve(args[0], args.data(), environ);
    child_fail(report[1], errno);
  }

  close(report[1]);
  int err = 0;
  ssize_t n;
  do {
    n = read(report[0], &err, sizeof err);
  } while (n < 0 && errno == EINTR);
  close(report[0]);
  if (n == static_cast<ssize_t>(sizeof err)) {
    (void)wait_program(pid);
    ZT_FAIL("cannot start ", argv[0], ": ", std::strerror(err),
            log.empty() ? std::string() : " (log " + log + ")");
  }
  return pid;
}

int exit_code_of(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

int wait_program(pid_t pid) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    ZT_CHECK(errno == EINTR, "waiting for process ", pid, ": ", std::strerror(errno));
  }
  return exit_code_of(status);
}

bool poll_program(pid_t pid, int* exit_code) {
  int status = 0;
  pid_t r;
  do {
    r = waitpid(pid, &status, WNOHANG);
  } while (r < 0 && errno == EINTR);
  ZT_CHECK(r >= 0, "waiting for process ", pid, ": ", std::strerror(errno));
  if (r == 0) return false;
  *exit_code = exit_code_of(status);
  return true;
}

}  // namespace zt::ablation
