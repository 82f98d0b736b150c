#pragma once
// The run directory (log.out_dir) over the life of a run: an exclusive lock, what a start
// (fresh, --resume, --overwrite) may do with what the directory already holds, and the
// clean-up of temp files an interrupted write left behind.
#include <string>
#include <vector>

namespace zt {

// An OS lock (flock) on <run_dir>/.lock, held while the object lives and released by the
// kernel when the process dies (kill -9 included), so it never goes stale. The holder writes
// "pid P host H since T" into the file; a second trainer on the directory is refused with
// that text. The file itself stays (removing a lock file races with a new holder).
class RunDirLock {
 public:
  explicit RunDirLock(const std::string& run_dir);  // creates run_dir; zt::Error when held
  ~RunDirLock();
  RunDirLock(RunDirLock&&) noexcept;
  RunDirLock(const RunDirLock&) = delete;
  RunDirLock& operator=(const RunDirLock&) = delete;
  RunDirLock& operator=(RunDirLock&&) = delete;

  const std::string& run_dir() const { return run_dir_; }

 private:
  std::string run_dir_;
  int fd_ = -1;
};

// Removes the temp files of writes that never finished (<name>.tmp.<pid>: checkpoints,
// config.yaml, metrics.jsonl) in the locked run directory and its subfolders. Holding the
// lock makes every such file stale, whatever its pid: no other trainer can be writing here.
// Call at start-up, before this run writes anything. Returns "<path> (<bytes> bytes)" per file.
std::vector<std::string> remove_stale_temp_files(const RunDirLock& lock);

// How a run starts in its directory.
enum class RunStart { fresh, overwrite, resume };

// Decides from what run_dir holds (metrics.jsonl, checkpoints/step_*.ckpt) and the flags
// (--resume, --overwrite), or throws a zt::Error that says what is there and the way out:
// a file where the directory or its checkpoints/ folder should be, --resume with no
// checkpoint (a run that stopped before its first one: --overwrite), a held run without
// either flag.
RunStart plan_run_start(const std::string& run_dir, bool resume, bool overwrite);

}  // namespace zt
