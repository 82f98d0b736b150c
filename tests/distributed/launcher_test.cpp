// The local launcher (library and the `launch` tool): environment of each rank, failures
// named by rank, the other ranks stopped.
#include "framework/distributed/local_launcher.h"

#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <signal.h>

#include <gtest/gtest.h>

#include "tests/support/multi_rank.h"

namespace zt {
namespace {

std::string read_file(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

std::string error_of(const LaunchOptions& o) {
  try {
    run_local_ranks(o);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// Runs a shell command line, returning its exit status and combined output.
std::pair<int, std::string> run_command(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen(("(" + cmd + ") 2>&1").c_str(), "r");
  std::array<char, 4096> buf;
  while (size_t n = std::fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  const int status = ::pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

TEST(Launcher, EveryRankGetsItsEnvironment) {
  test::TempDir dir;
  LaunchOptions o;
  o.nproc = 3;
  o.store_dir = dir.path();
  o.command = {"sh", "-c",
               "echo \"$RANK $WORLD_SIZE $LOCAL_RANK $LOCAL_WORLD_SIZE $ZTRAIN_STORE_DIR\" > "
               "\"$ZTRAIN_STORE_DIR/out_$RANK\""};
  ASSERT_EQ(error_of(o), "(no error)");
  for (int r = 0; r < 3; ++r)
    EXPECT_EQ(read_file(dir.path() + "/out_" + std::to_string(r)),
              std::to_string(r) + " 3 " + std::to_string(r) + " 3 " + dir.path() + "\n");
}

TEST(Launcher, DefaultStoreIsAFreshDirectoryRemovedAfterwards) {
  test::TempDir dir;
  LaunchOptions o;
  o.nproc = 2;
  o.command = {"sh", "-c", "ls -A \"$ZTRAIN_STORE_DIR\" | wc -l > " + dir.path() + "/count_$RANK; echo \"$ZTRAIN_STORE_DIR\" > " +
                               dir.path() + "/dir_$RANK"};
  ASSERT_EQ(error_of(o), "(no error)");
  const std::string store = read_file(dir.path() + "/dir_0");
  EXPECT_EQ(store, read_file(dir.path() + "/dir_1"));
  EXPECT_FALSE(std::filesystem::exists(store.substr(0, store.size() - 1)));
}

TEST(Launcher, AFailedRankIsNamedAndTheOthersAreStopped) {
  LaunchOptions o;
  o.nproc = 3;
  o.command = {"sh", "-c", "if [ \"$RANK\" = 1 ]; then exit 3; fi; sleep 30"};
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(error_of(o), "rank 1 of 3 exited with status 3; stopped the other ranks");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
}

TEST(Launcher, ASignalledRankIsNamed) {
  LaunchOptions o;
  o.nproc = 2;
  o.command = {"sh", "-c", "if [ \"$RANK\" = 0 ]; then kill -9 $$; fi; sleep 30"};
  const std::string msg = error_of(o);
  EXPECT_NE(msg.find("rank 0 of 2 was killed by signal 9"), std::string::npos) << msg;
}

TEST(Launcher, BadArguments) {
  LaunchOptions o;
  o.nproc = 2;
  o.command = {"/nonexistent/program"};
  EXPECT_NE(error_of(o).find("cannot start '/nonexistent/program' for rank 0"), std::string::npos);
  o.command = {};
  EXPECT_NE(error_of(o).find("no program to run"), std::string::npos);
  o.command = {"true"};
  o.nproc = 0;
  EXPECT_NE(error_of(o).find("between 1 and 1024"), std::string::npos);
}

TEST(LaunchTool, SigtermStopsEveryRank) {
  test::TempDir dir;
  const std::string launch = std::string(ZTRAIN_BIN_DIR) + "/launch";
  // Ranks record their pid and sleep; the launcher gets SIGTERM; no rank may survive it.
  const std::string cmd = launch + " --nproc 2 -- sh -c 'echo $$ > " + dir.path() + "/pid_$RANK; echo $ZTRAIN_STORE_DIR > " +
                          dir.path() + "/store_$RANK; exec sleep 30' & L=$!; sleep 0.5; kill -TERM $L; wait $L; echo status=$?";
  const auto t0 = std::chrono::steady_clock::now();
  auto [status, out] = run_command(cmd);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
  EXPECT_NE(out.find("launch: interrupted by signal 15"), std::string::npos) << out;
  EXPECT_NE(out.find("status=1"), std::string::npos) << out;
  for (int r = 0; r < 2; ++r) {
    const std::string pid = read_file(dir.path() + "/pid_" + std::to_string(r));
    ASSERT_FALSE(pid.empty());
    EXPECT_NE(::kill(std::stoi(pid), 0), 0) << "rank " << r << " (pid " << pid << ") still runs";
  }
  // The temporary store directory goes with the job.
  const std::string store = read_file(dir.path() + "/store_0");
  ASSERT_GT(store.size(), 1u);
  EXPECT_FALSE(std::filesystem::exists(store.substr(0, store.size() - 1))) << store;
}

TEST(LaunchTool, ExitStatusAndMessages) {
  const std::string launch = std::string(ZTRAIN_BIN_DIR) + "/launch";
  auto [ok_status, ok_out] = run_command(launch + " --nproc 2 -- sh -c 'exit 0'");
  EXPECT_EQ(ok_status, 0) << ok_out;
  auto [bad_status, bad_out] = run_command(launch + " --nproc 2 -- sh -c '[ $RANK = 1 ] && exit 7; exit 0'");
  EXPECT_EQ(bad_status, 1);
  EXPECT_NE(bad_out.find("launch: rank 1 of 2 exited with status 7"), std::string::npos) << bad_out;
  auto [usage_status, usage_out] = run_command(launch + " -- true");
  EXPECT_EQ(usage_status, 2);  // a usage error (tools/tool_main.h)
  EXPECT_NE(usage_out.find("launch: --nproc is required"), std::string::npos) << usage_out;
}

}  // namespace
}  // namespace zt
