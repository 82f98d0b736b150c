// The command-line contract of every tool (tools/tool_main.h): exit 2 and one line for a bad
// command line, exit 1 and one line naming the thing for a runtime error, never CLI11's own
// exit codes (100+) or a silent success.
#include <gtest/gtest.h>

#include <filesystem>

#include "framework/device.h"
#include "tests/support/multi_rank.h"
#include "tests/support/tool_run.h"

namespace zt {
namespace {

// One line on stderr, starting with the tool's name.
void expect_one_line(const test::ToolResult& r, const std::string& tool, const std::string& part) {
  EXPECT_EQ(r.err.rfind(tool + ": ", 0), 0u) << r.err;
  EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << "more than one line: " << r.err;
  EXPECT_NE(r.err.find(part), std::string::npos) << "expected '" << part << "' in: " << r.err;
}

TEST(ToolExit, UsageErrorsExitTwoEverywhere) {
  for (const char* tool : {"train", "generate", "xent", "tokenize", "prepare_data", "ablate", "launch", "bench_xent",
                           "bench_step", "bench_gemm", "bench_attention"}) {
    if (!test::tool_built(tool)) continue;
    SCOPED_TRACE(tool);
    const test::ToolResult r = test::run_tool(tool, "--no-such-option 1");
    EXPECT_EQ(r.status, 2) << r.err;
    expect_one_line(r, tool, "(see --help)");
    EXPECT_EQ(test::run_tool(tool, "--help").status, 0);
  }
}

// The GPU benchmarks on a machine (or build) without a GPU: exit 1 and one line naming CUDA
// (tools/bench_util.h's require_gpu), never a success or a crash in the first CUDA call.
TEST(ToolExit, GpuBenchmarksNeedAGpu) {
  if (cuda_available()) GTEST_SKIP() << "a GPU is visible";
  for (auto [tool, args] : {std::pair{"bench_step", ""}, std::pair{"bench_gemm", ""}, std::pair{"bench_attention", ""},
                            std::pair{"bench_xent", "--device cuda"}}) {
    if (!test::tool_built(tool)) continue;
    SCOPED_TRACE(tool);
    const test::ToolResult r = test::run_tool(tool, args);
    EXPECT_EQ(r.status, 1) << r.err;
    expect_one_line(r, tool, "CUDA");
    EXPECT_EQ(r.out, "");
  }
}

TEST(ToolExit, TrainNamesADirectoryGivenAsConfig) {
  if (!test::tool_built("train")) GTEST_SKIP() << "train not built";
  test::TempDir dir;
  test::ToolResult r = test::run_tool("train", "--config " + dir.path());
  EXPECT_EQ(r.status, 1);
  expect_one_line(r, "train", "config file '" + dir.path() + "' is a directory");
  r = test::run_tool("train", "");  // no --config
  EXPECT_EQ(r.status, 2);
  expect_one_line(r, "train", "--config FILE is required");
  r = test::run_tool("train", "--set model.n_layer=x");  // CLI11: --set takes values, --config missing
  EXPECT_EQ(r.status, 2);
}

// Regression: `tokenize --file DIR` printed nothing and exited 0.
TEST(ToolExit, TokenizeNamesADirectoryGivenAsFile) {
  if (!test::tool_built("tokenize")) GTEST_SKIP() << "tokenize not built";
  test::TempDir dir;
  const std::string vocab = " --vocab-dir " + std::string(ZTRAIN_SOURCE_DIR) + "/tests/fuzz/tiny_vocab";
  test::ToolResult r = test::run_tool("tokenize", "--file " + dir.path() + vocab);
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.out, "");
  expect_one_line(r, "tokenize", "--file '" + dir.path() + "' is a directory");
  r = test::run_tool("tokenize", "--text hello" + vocab);
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "259\n");  // the tiny vocabulary's "hello"
  r = test::run_tool("tokenize", vocab);  // neither --text, --file nor --decode
  EXPECT_EQ(r.status, 2);
  expect_one_line(r, "tokenize", "give one of --text, --file or --decode");
  r = test::run_tool("tokenize", "--decode 99999" + vocab);
  EXPECT_EQ(r.status, 1);
  expect_one_line(r, "tokenize", "--decode: id 99999 is outside the vocabulary");
}

// Regression: generate's device error named the config key train.device.
TEST(ToolExit, GenerateNamesItsDeviceOption) {
  if (!test::tool_built("generate")) GTEST_SKIP() << "generate not built";
  if (cuda_available()) GTEST_SKIP() << "a GPU is visible: --device cuda is no error here";
  test::TempDir dir;
  test::ToolResult r = test::run_tool("generate", "--checkpoint " + dir.path() + " --prompt hi --device cuda");
  EXPECT_EQ(r.status, 1);
  expect_one_line(r, "generate", "--device: 'cuda' requested but no GPU is available");
  EXPECT_EQ(r.err.find("train.device"), std::string::npos) << r.err;
  r = test::run_tool("generate", "--checkpoint " + dir.path() + " --prompt hi --temperature -1");
  EXPECT_EQ(r.status, 2);
  expect_one_line(r, "generate", "--temperature must be >= 0");
  r = test::run_tool("generate", "--prompt hi");  // --checkpoint missing
  EXPECT_EQ(r.status, 2);
  expect_one_line(r, "generate", "--checkpoint is required");
}

TEST(ToolExit, PrepareDataChecksItsOptions) {
  if (!test::tool_built("prepare_data")) GTEST_SKIP() << "prepare_data not built";
  test::TempDir dir;
  test::ToolResult r = test::run_tool("prepare_data", "--input " + dir.path() + " --out " + dir.path() + "/o --val-fraction 1");
  EXPECT_EQ(r.status, 2);
  expect_one_line(r, "prepare_data", "--val-fraction must be in [0, 1), got 1");
  r = test::run_tool("prepare_data", "--input " + dir.path() + " --out " + dir.path() + "/o --format csv");
  EXPECT_EQ(r.status, 2);
  expect_one_line(r, "prepare_data", "--format");
  r = test::run_tool("prepare_data", "--input " + dir.path() + "/missing --out " + dir.path() + "/o --quiet");
  EXPECT_EQ(r.status, 1);
  expect_one_line(r, "prepare_data", "missing' does not exist");
}

// CLI11 read integers with strtoll: a value past the type's range became its limit
// (--max-tokens 99999999999999999999 ran "forever"), -1 for an unsigned option became 2^64-1
// (--seed -1), 010 was octal. Every integer option of every tool now takes decimal digits in
// range, or exits 2 naming the option and the value.
TEST(ToolExit, IntegerOptionsAreDecimalAndInRange) {
  if (!test::tool_built("generate")) GTEST_SKIP() << "generate not built";
  const std::string base = "--checkpoint /nonexistent --prompt x ";
  for (auto [args, part] : {std::pair{"--max-tokens 99999999999999999999", "'99999999999999999999' is out of range"},
                            std::pair{"--max-tokens -99999999999999999999", "is out of range"},
                            std::pair{"--seed -1", "'-1' is negative"},
                            std::pair{"--seed 18446744073709551616", "out of range"},
                            std::pair{"--top-k 0x10", "'0x10' is not a decimal integer"},
                            std::pair{"--top-k 1e3", "not a decimal integer"}}) {
    SCOPED_TRACE(args);
    const test::ToolResult r = test::run_tool("generate", base + args);
    EXPECT_EQ(r.status, 2) << r.err;
    expect_one_line(r, "generate", part);
  }
  // In range, a leading zero is decimal: the run gets past the command line (to the checkpoint).
  const test::ToolResult r = test::run_tool("generate", base + "--seed 18446744073709551615 --top-k 010");
  EXPECT_EQ(r.status, 1) << r.err;
  expect_one_line(r, "generate", "/nonexistent");
}

TEST(ToolExit, PrepareDataBoundsItsThreads) {
  if (!test::tool_built("prepare_data")) GTEST_SKIP() << "prepare_data not built";
  test::TempDir dir;
  for (const char* t : {"-1", "100000"}) {
    SCOPED_TRACE(t);
    const test::ToolResult r =
        test::run_tool("prepare_data", "--input " + dir.path() + " --out " + dir.path() + "/o --threads " + t);
    EXPECT_EQ(r.status, 2) << r.err;
    expect_one_line(r, "prepare_data", "--threads");
  }
}

// `ablate --seeds 100000000 --dry-run` grew without bound before printing anything.
TEST(ToolExit, AblateBoundsItsGrid) {
  if (!test::tool_built("ablate")) GTEST_SKIP() << "ablate not built";
  test::TempDir dir;
  const test::ToolResult r = test::run_tool(
      "ablate", "--config " + dir.path() + "/c.yaml --out " + dir.path() + "/a --seeds 100000000 --dry-run");
  EXPECT_EQ(r.status, 2) << r.err;  // a grid the command line asked for: a usage error
  expect_one_line(r, "ablate", "more than 10000");
}

}  // namespace
}  // namespace zt
