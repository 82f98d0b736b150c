#include "trainers/run_dir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <regex>

#include "framework/error.h"
#include "trainers/checkpoint.h"

namespace zt {

namespace fs = std::filesystem;

namespace {

std::string holder_text() {
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) std::strcpy(host, "?");
  char when[32] = {};
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  ::gmtime_r(&now, &tm);
  std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return "pid " + std::to_string(::getpid()) + " host " + host + " since " + when;
}

std::string read_fd(int fd) {
  std::string text(512, '\0');
  const ssize_t n = ::pread(fd, text.data(), text.size(), 0);
  text.resize(n > 0 ? static_cast<size_t>(n) : 0);
  while (!text.empty() && (text.back() == '\n' || text.back() == '\0')) text.pop_back();
  return text;
}

void check_is_directory_if_present(const fs::path& p, const std::string& what) {
  std::error_code ec;
  const auto st = fs::status(p, ec);
  // A path that cannot be looked at (a symlink loop, no permission) is that error, named as
  // such: reading it as "absent" led to advice (--overwrite) that deletes the run.
  ZT_CHECK(!ec || ec == std::errc::no_such_file_or_directory, what, " '", p.string(), "' cannot be read: ",
           ec.message(), "; fix or remove that path by hand (nothing was changed)");
  ZT_CHECK(!fs::exists(st) || fs::is_directory(st), what, " '", p.string(),
           "' is not a directory (a file of that name is in the way); move it, or choose another directory "
           "with --set log.out_dir=DIR");
}

}  // namespace

RunDirLock::RunDirLock(const std::string& run_dir) : run_dir_(run_dir) {
  check_is_directory_if_present(run_dir, "log.out_dir");
  std::error_code ec;
  fs::create_directories(run_dir, ec);
  ZT_CHECK(!ec, "cannot create log.out_dir '", run_dir, "': ", ec.message());
  const std::string path = (fs::path(run_dir) / ".lock").string();
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  ZT_CHECK(fd_ >= 0, "cannot open the lock file '", path, "': ", std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    const std::string holder = read_fd(fd_);
    ::close(fd_);
    fd_ = -1;
    ZT_CHECK(err != EWOULDBLOCK, "log.out_dir '", run_dir, "' is in use by another trainer (",
             holder.empty() ? std::string("holder unknown") : holder, "; lock file ", path,
             "); wait for it to finish or stop it, or choose another directory with --set log.out_dir=DIR");
    ZT_FAIL("cannot lock '", path, "': ", std::strerror(err), " (the run directory's filesystem must support flock)");
  }
  const std::string text = holder_text() + "\n";
  // Best effort: the lock is the flock, the text only tells a refused trainer who holds it.
  [[maybe_unused]] const bool written =
      ::ftruncate(fd_, 0) == 0 && ::pwrite(fd_, text.data(), text.size(), 0) == static_cast<ssize_t>(text.size());
}

RunDirLock::~RunDirLock() {
  if (fd_ >= 0) ::close(fd_);  // closing the last descriptor releases the flock
}

RunDirLock::RunDirLock(RunDirLock&& o) noexcept : run_dir_(std::move(o.run_dir_)), fd_(o.fd_) { o.fd_ = -1; }

std::vector<std::string> remove_stale_temp_files(const RunDirLock& lock) {
  static const std::regex tmp_name(".+\\.tmp\\.[0-9]+");
  std::vector<std::string> removed;
  std::error_code ec;
  fs::recursive_directory_iterator it(lock.run_dir(), ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    if (it.depth() >= 2) it.disable_recursion_pending();  // checkpoints/<subfolder>/ at most
    if (!it->is_regular_file(ec) || !std::regex_match(it->path().filename().string(), tmp_name)) continue;
    const auto bytes = it->file_size(ec);
    if (fs::remove(it->path(), ec)) removed.push_back(it->path().string() + " (" + std::to_string(bytes) + " bytes)");
  }
  return removed;
}

RunStart plan_run_start(const std::string& run_dir, bool resume, bool overwrite) {
  ZT_CHECK(!(resume && overwrite), "--resume and --overwrite exclude each other");
  const fs::path dir(run_dir), ckpt_dir = dir / "checkpoints", metrics = dir / "metrics.jsonl";
  check_is_directory_if_present(dir, "log.out_dir");
  check_is_directory_if_present(ckpt_dir, "the checkpoints folder");
  std::error_code ec;
  const bool has_ckpt = newest_checkpoint(ckpt_dir.string()).has_value();
  const bool has_metrics = fs::exists(metrics, ec);
  if (resume) {
    ZT_CHECK(has_ckpt || !has_metrics, "--resume: no checkpoint in '", ckpt_dir.string(), "': the run in '", run_dir,
             "' stopped before its first checkpoint, so there is nothing to resume; start it over with --overwrite "
             "instead of --resume (log.checkpoint_every sets how often checkpoints are written)");
    ZT_CHECK(has_ckpt, "--resume: no checkpoint in '", ckpt_dir.string(),
             "' (nothing to resume; run without --resume to start)");
    return RunStart::resume;
  }
  if (!has_ckpt && !has_metrics) return RunStart::fresh;
  if (overwrite) return RunStart::overwrite;
  ZT_CHECK(!has_ckpt, "log.out_dir '", run_dir, "' already holds a run (metrics.jsonl and checkpoints); pass "
           "--resume to continue it, --overwrite to start over, or choose another directory with --set log.out_dir=DIR");
  ZT_FAIL("log.out_dir '", run_dir, "' already holds a run that stopped before its first checkpoint (metrics.jsonl, "
          "no checkpoint), so it cannot be resumed; pass --overwrite to start over, or choose another directory with "
          "--set log.out_dir=DIR");
}

}  // namespace zt
