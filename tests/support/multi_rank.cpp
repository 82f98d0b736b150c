#include "tests/support/multi_rank.h"

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "framework/distributed/store.h"
#include "framework/error.h"

namespace zt::test {

namespace {
void run_on_shared_ranks_with(int world_size, const SharedRankFn& fn, const std::string& backend,
                              std::chrono::milliseconds timeout);
}  // namespace

TempDir::TempDir() {
  const char* tmp = std::getenv("TMPDIR");
  std::string templ = std::string(tmp && *tmp ? tmp : "/tmp") + "/ztrain-test-XXXXXX";
  ZT_CHECK(::mkdtemp(templ.data()), "cannot create a temporary directory from ", templ, ": ", std::strerror(errno));
  path_ = templ;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

void run_on_ranks(int world_size, const RankFn& fn, const std::string& backend, std::chrono::milliseconds timeout) {
  run_on_shared_ranks_with(world_size, [&](const std::shared_ptr<ProcessGroup>& g) { fn(*g); }, backend, timeout);
}

void run_on_shared_ranks(int world_size, const SharedRankFn& fn, std::chrono::milliseconds timeout) {
  run_on_shared_ranks_with(world_size, fn, "gloo", timeout);
}

namespace {
void run_on_shared_ranks_with(int world_size, const SharedRankFn& fn, const std::string& backend,
                              std::chrono::milliseconds timeout) {
  TempDir dir;
  std::mutex mu;
  std::vector<std::string> errors;
  std::vector<std::thread> threads;
  for (int r = 0; r < world_size; ++r) {
    threads.emplace_back([&, r] {
      try {
        auto store = make_file_store(dir.path(), timeout);
        auto group = make_process_group(backend, RankInfo{r, world_size, r}, store, Device::cpu());
        fn(group);
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> lock(mu);
        errors.push_back("rank " + std::to_string(r) + ": " + e.what());
      }
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& e : errors) ADD_FAILURE() << e;
}
}  // namespace

}  // namespace zt::test
