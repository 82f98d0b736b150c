// The run directory: the lock refuses a second trainer (in this process or another, and
// is released when its holder dies), stale temp files are removed, and each start
// (fresh, --resume, --overwrite) is decided from what the directory holds with a message
// that offers the way out.
#include "trainers/run_dir.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "framework/error.h"
#include "tests/support/check.h"
#include "trainers/checkpoint.h"

namespace zt {
namespace {

namespace fs = std::filesystem;
using ::zt::test::error_of;

fs::path fresh_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("ztrain_rundir_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

TEST(RunDirLock, ASecondLockInThisProcessIsRefusedNamingTheHolder) {
  const fs::path dir = fresh_dir("lock_same") / "run";
  {
    RunDirLock first(dir.string());
    const std::string msg = error_of([&] { RunDirLock second(dir.string()); });
    EXPECT_NE(msg.find("in use by another trainer"), std::string::npos) << msg;
    EXPECT_NE(msg.find("pid " + std::to_string(::getpid()) + " host "), std::string::npos) << msg;
    EXPECT_NE(msg.find(dir.string()), std::string::npos) << msg;
  }
  RunDirLock again(dir.string());  // released with its holder
  fs::remove_all(dir.parent_path());
}

TEST(RunDirLock, HeldByAnotherProcessUntilItIsKilled) {
  const fs::path dir = fresh_dir("lock_fork");
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {  // holds the lock until killed
    try {
      RunDirLock lock(dir.string());
      char ok = 'y';
      if (::write(ready[1], &ok, 1) != 1) ::_exit(2);
      for (;;) ::pause();
    } catch (...) {
      ::_exit(3);
    }
  }
  char ok = 0;
  ASSERT_EQ(::read(ready[0], &ok, 1), 1);
  const std::string msg = error_of([&] { RunDirLock lock(dir.string()); });
  EXPECT_NE(msg.find("pid " + std::to_string(child) + " host "), std::string::npos) << msg;
  ::kill(child, SIGKILL);  // no destructor runs: the kernel releases the lock
  int status = 0;
  ::waitpid(child, &status, 0);
  EXPECT_EQ(error_of([&] { RunDirLock lock(dir.string()); }), "(no error)");
  ::close(ready[0]);
  ::close(ready[1]);
  fs::remove_all(dir);
}

TEST(RunDir, StaleTempFilesAreRemovedOnceLocked) {
  const fs::path dir = fresh_dir("tmpfiles");
  fs::create_directories(dir / "checkpoints" / "step_00000020");
  const std::vector<fs::path> stale = {dir / "checkpoints" / "step_00000010.ckpt.tmp.4242",
                                       dir / "config.yaml.tmp.17", dir / "metrics.jsonl.tmp.99999999",
                                       dir / "checkpoints" / "step_00000020" / "rank_0.ckpt.tmp.5"};
  const std::vector<fs::path> kept = {dir / "checkpoints" / "step_00000010.ckpt", dir / "metrics.jsonl",
                                      dir / "notes.tmp.txt", dir / "config.yaml.tmp."};
  for (const auto& p : stale) std::ofstream(p) << "partial";
  for (const auto& p : kept) std::ofstream(p) << "keep";
  RunDirLock lock(dir.string());
  const auto removed = remove_stale_temp_files(lock);
  EXPECT_EQ(removed.size(), stale.size());
  for (const auto& p : stale) EXPECT_FALSE(fs::exists(p)) << p;
  for (const auto& p : kept) EXPECT_TRUE(fs::exists(p)) << p;
  EXPECT_NE(removed[0].find("(7 bytes)"), std::string::npos) << removed[0];
  fs::remove_all(dir);
}

TEST(RunDir, PlanRunStartSaysWhatIsThereAndTheWayOut) {
  const fs::path dir = fresh_dir("plan");
  const std::string run = (dir / "run").string();
  EXPECT_EQ(plan_run_start(run, false, false), RunStart::fresh);  // does not exist yet
  EXPECT_NE(error_of([&] { plan_run_start(run, true, false); }).find("no checkpoint"), std::string::npos);

  fs::create_directories(run);
  std::ofstream(fs::path(run) / "metrics.jsonl") << "{\"step\": 1}\n";  // stopped before its first checkpoint
  std::string msg = error_of([&] { plan_run_start(run, false, false); });
  EXPECT_NE(msg.find("stopped before its first checkpoint"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--overwrite"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("--resume"), std::string::npos) << msg;  // it cannot be resumed: don't offer it
  msg = error_of([&] { plan_run_start(run, true, false); });
  EXPECT_NE(msg.find("no checkpoint"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--overwrite instead of --resume"), std::string::npos) << msg;
  EXPECT_EQ(plan_run_start(run, false, true), RunStart::overwrite);

  Checkpoint c;
  write_checkpoint(checkpoint_path(run, 3), c);
  msg = error_of([&] { plan_run_start(run, false, false); });
  EXPECT_NE(msg.find("already holds a run"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--resume"), std::string::npos) << msg;
  EXPECT_EQ(plan_run_start(run, true, false), RunStart::resume);
  EXPECT_NE(error_of([&] { plan_run_start(run, true, true); }).find("exclude each other"), std::string::npos);

  // A regular file where the checkpoints folder belongs is named as such, not "a run".
  const std::string other = (dir / "other").string();
  fs::create_directories(other);
  std::ofstream(fs::path(other) / "checkpoints") << "not a folder";
  for (bool resume : {false, true}) {
    msg = error_of([&] { plan_run_start(other, resume, false); });
    EXPECT_NE(msg.find("checkpoints' is not a directory"), std::string::npos) << msg;
    EXPECT_EQ(msg.find("already holds"), std::string::npos) << msg;
  }
  // checkpoints/ as a symlink loop was read as "no checkpoint yet" and --overwrite (which
  // deletes the run) was offered: the error now names the path and what is wrong with it.
  const std::string looped = (dir / "looped").string();
  fs::create_directories(looped);
  std::ofstream(fs::path(looped) / "metrics.jsonl") << "{\"step\": 1}\n";
  fs::create_symlink(fs::path(looped) / "checkpoints", fs::path(looped) / "checkpoints");
  for (bool resume : {false, true}) {
    msg = error_of([&] { plan_run_start(looped, resume, false); });
    EXPECT_NE(msg.find("checkpoints' cannot be read: Too many levels of symbolic links"), std::string::npos) << msg;
    EXPECT_EQ(msg.find("--overwrite"), std::string::npos) << msg;
    EXPECT_EQ(msg.find("first checkpoint"), std::string::npos) << msg;
  }
  std::ofstream(dir / "afile") << "x";
  msg = error_of([&] { RunDirLock lock((dir / "afile").string()); });
  EXPECT_NE(msg.find("afile' is not a directory"), std::string::npos) << msg;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace zt
