// The roll call before a job's backend connects (framework/distributed/rendezvous.h), with
// ranks as threads over one FileStore directory, and the FileStore's stale-key rule.
#include "framework/distributed/rendezvous.h"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <mutex>
#include <thread>

#include "tests/support/check.h"
#include "tests/support/multi_rank.h"

namespace zt {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

RankInfo info(int rank, int world, const std::string& vars = "") {
  RankInfo i;
  i.rank = rank;
  i.world_size = world;
  i.launcher = "launch";
  i.variables = vars.empty() ? "RANK=" + std::to_string(rank) + " WORLD_SIZE=" + std::to_string(world) : vars;
  return i;
}

// Each entry runs roll_call on its own thread (after `delay`) and records its error ("" if none).
struct Arrival {
  RankInfo info;
  std::chrono::milliseconds delay{0};
  std::chrono::milliseconds timeout{5000};
};
std::vector<std::string> run_roll_call(const std::string& dir, const std::vector<Arrival>& ranks) {
  std::vector<std::string> errors(ranks.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < ranks.size(); ++i)
    threads.emplace_back([&, i] {
      std::this_thread::sleep_for(ranks[i].delay);
      auto store = make_file_store(dir);
      errors[i] = test::error_of([&] { roll_call(*store, ranks[i].info, ranks[i].timeout); });
    });
  for (auto& t : threads) t.join();
  return errors;
}

TEST(RollCall, EveryRankArrives) {
  test::TempDir dir;
  for (const auto& e : run_roll_call(dir.path(), {{info(0, 3)}, {info(1, 3), 50ms}, {info(2, 3), 100ms}}))
    EXPECT_EQ(e, "(no error)");
}

// RANK=0 WORLD_SIZE=1048576 waited 150 s; now the timeout (parallel.rendezvous_timeout_s)
// bounds it and the message names the missing ranks and the store.
TEST(RollCall, MissingRanksAreNamedWithinTheTimeout) {
  test::TempDir dir;
  const auto t0 = std::chrono::steady_clock::now();
  const auto errors = run_roll_call(dir.path(), {{info(0, 4), 0ms, 300ms}, {info(2, 4), 0ms, 300ms}});
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  for (const auto& e : errors) {
    EXPECT_NE(e.find("2 of 4 ranks never arrived in the store directory '" + dir.path() + "': ranks 1, 3"),
              std::string::npos)
        << e;
    EXPECT_NE(e.find("parallel.rendezvous_timeout_s"), std::string::npos) << e;
  }
}

// Ranks started with different world sizes failed with a Gloo enforce message.
TEST(RollCall, DifferentWorldSizesAreNamed) {
  test::TempDir dir;
  const auto errors = run_roll_call(dir.path(), {{info(0, 2)}, {info(1, 3)}});
  EXPECT_NE(errors[0].find("rank 1 (pid"), std::string::npos) << errors[0];
  EXPECT_NE(errors[0].find("was started with RANK=1 WORLD_SIZE=3 but this rank"), std::string::npos) << errors[0];
  EXPECT_NE(errors[0].find("with RANK=0 WORLD_SIZE=2"), std::string::npos) << errors[0];
  EXPECT_NE(errors[1].find("the same world size"), std::string::npos) << errors[1];
}

TEST(RollCall, TwoProcessesAsOneRankAreNamed) {
  test::TempDir dir;
  const auto errors = run_roll_call(
      dir.path(), {{info(0, 2, "RANK=0 (first)")}, {info(0, 2, "RANK=0 (second)"), 100ms}, {info(1, 2), 300ms}});
  EXPECT_NE(errors[0].find("two processes were started as rank 0"), std::string::npos) << errors[0];
  EXPECT_EQ(errors[2], "(no error)");
}

// A key file older than the store's creation minus its timeout is an earlier job's: it reads
// as absent (no "Connection refused" at a dead job's address), and a wait on it says so.
TEST(FileStore, StaleKeysOfAnEarlierJobAreNotRead) {
  test::TempDir dir;
  make_file_store(dir.path())->set("addr", {'o', 'l', 'd'});
  fs::last_write_time(dir.path() + "/addr", fs::file_time_type::clock::now() - std::chrono::hours(1));
  auto store = make_file_store(dir.path(), 200ms);
  EXPECT_FALSE(store->try_get("addr").has_value());
  const std::string msg = test::error_of([&] { store->get("addr"); });
  EXPECT_NE(msg.find("the key there is stale"), std::string::npos) << msg;
  store->set("addr", {'n', 'e', 'w'});
  EXPECT_EQ(store->get("addr"), (std::vector<char>{'n', 'e', 'w'}));
}

TEST(JobId, FromTheLauncherOrTheScheduler) {
  for (const char* v : {"ZTRAIN_JOB_ID", "SLURM_JOB_ID", "SLURM_STEP_ID", "PMIX_NAMESPACE", "OMPI_MCA_ess_base_jobid"})
    ::unsetenv(v);
  EXPECT_EQ(job_id_from_env(), "");
  ::setenv("SLURM_JOB_ID", "123", 1);
  ::setenv("SLURM_STEP_ID", "4", 1);
  EXPECT_EQ(job_id_from_env(), "123.4");
  ::setenv("ZTRAIN_JOB_ID", "host-1/x", 1);
  EXPECT_EQ(job_id_from_env(), "host-1_x");
  for (const char* v : {"ZTRAIN_JOB_ID", "SLURM_JOB_ID", "SLURM_STEP_ID"}) ::unsetenv(v);
}

}  // namespace
}  // namespace zt
