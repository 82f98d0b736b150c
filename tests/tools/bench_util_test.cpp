// The helpers the tools share (tools/tool_main.h, tools/bench_util.h): list splitting, the
// statistics the benchmarks report, and the --out writer's errors.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "tests/support/check.h"
#include "tests/support/multi_rank.h"
#include "tools/bench_util.h"
#include "tools/tool_main.h"

namespace zt {
namespace {

using Items = std::vector<std::string>;

TEST(ToolMain, SplitListKeepsEmptyItemsButNoTrailingOne) {
  EXPECT_EQ(tool::split_list("cudnn,flash"), (Items{"cudnn", "flash"}));
  EXPECT_EQ(tool::split_list("a,,b"), (Items{"a", "", "b"}));
  EXPECT_EQ(tool::split_list("a,b,"), (Items{"a", "b"}));
  EXPECT_EQ(tool::split_list(",a"), (Items{"", "a"}));
  EXPECT_EQ(tool::split_list(""), Items{});
  EXPECT_EQ(tool::split_list("2048x50304"), Items{"2048x50304"});
}

// bench_xent reports the median (the mean of the middle two for an even count); bench_step
// and the CUDA-event timings the nearest-rank percentile 0.5 (the upper middle one).
TEST(BenchUtil, MedianAndPercentile) {
  EXPECT_EQ(bench::median({3, 1, 2}), 2);
  EXPECT_EQ(bench::median({4, 1, 3, 2}), 2.5);
  EXPECT_EQ(bench::percentile({3, 1, 2}, 0.5), 2);
  EXPECT_EQ(bench::percentile({4, 1, 3, 2}, 0.5), 3);
  const std::vector<double> ten = {9, 0, 8, 1, 7, 2, 6, 3, 5, 4};
  EXPECT_EQ(bench::percentile(ten, 0.1), 1);
  EXPECT_EQ(bench::percentile(ten, 0.9), 8);
  EXPECT_EQ(bench::percentile(ten, 0.0), 0);
  EXPECT_EQ(bench::percentile(ten, 1.0), 9);
}

TEST(BenchUtil, WriteOutFileWritesOrNamesThePath) {
  test::TempDir dir;
  const std::string path = dir.path() + "/table.md";
  bench::write_out_file(path, "| a |\n");
  std::ifstream f(path);
  std::stringstream text;
  text << f.rdbuf();
  EXPECT_EQ(text.str(), "| a |\n");
  const std::string missing = dir.path() + "/no/such/dir/x.json";
  EXPECT_EQ(test::error_of([&] { bench::write_out_file(missing, "{}"); }),
            "--out " + missing + ": cannot open for writing");
  EXPECT_TRUE(bench::is_json_path("a/b.json"));
  EXPECT_FALSE(bench::is_json_path("a/b.md"));
  EXPECT_FALSE(bench::is_json_path("json"));
}

TEST(BenchUtil, RequireGpuMatchesTheBuildAndMachine) {
  const std::string err = test::error_of([] { bench::require_gpu("--device cuda: "); });
  if (cuda_available()) {
    EXPECT_EQ(err, "(no error)");
  } else {
#ifdef ZTRAIN_WITH_CUDA
    EXPECT_EQ(err, "--device cuda: no CUDA GPU visible");
#else
    EXPECT_EQ(err, "--device cuda: this ztrain was built without CUDA");
#endif
  }
}

}  // namespace
}  // namespace zt
