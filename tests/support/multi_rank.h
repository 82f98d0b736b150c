#pragma once
// Runs a test body on N ranks inside one test process: one thread per rank, each with its own
// FileStore (in a fresh shared directory) and its own Gloo process group, so the collectives
// go through the real backend over loopback TCP. GoogleTest assertions work on every rank's
// thread; an exception on a rank becomes a test failure naming the rank.
#include <chrono>
#include <functional>
#include <memory>

#include "framework/distributed/process_group.h"

namespace zt::test {

using RankFn = std::function<void(ProcessGroup& group)>;

// backend "gloo" (CPU tensors). Ranks that throw are reported; the others run on until their
// collectives time out (timeout), so keep rank bodies symmetric.
void run_on_ranks(int world_size, const RankFn& fn, const std::string& backend = "gloo",
                  std::chrono::milliseconds timeout = std::chrono::seconds(30));

// The same, handing each rank its group as a shared_ptr (for APIs that keep the group, such
// as a tensor-parallel model or the cross-entropy's options).
using SharedRankFn = std::function<void(const std::shared_ptr<ProcessGroup>& group)>;
void run_on_shared_ranks(int world_size, const SharedRankFn& fn, std::chrono::milliseconds timeout = std::chrono::seconds(30));

// A fresh empty directory under $TMPDIR (or /tmp), removed when the returned holder dies.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace zt::test

// CPU process groups of more than one rank need Gloo; builds without it (the GPU host has
// none) skip the test instead of failing it.
#ifdef ZTRAIN_WITH_GLOO
#define ZT_REQUIRE_GLOO() (void)0
#else
#define ZT_REQUIRE_GLOO() GTEST_SKIP() << "built without Gloo: no CPU process groups of several ranks"
#endif
