// Tests of the ablation tooling: sweep parser, grid expansion and run names, spike counter,
// metrics reading and summary (hand-computed values), resume of a half-finished ablation with
// a stub train program, the ablate command line, the plot script, and, with the real train
// program on a tiny model, parallel runs (--jobs) against solo runs, kill -9 then resume,
// and a diverging run; the learning-rate sensitivity table against a hand computation.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "framework/error.h"
#include "trainers/ablation/grid.h"
#include "trainers/ablation/lr_sensitivity.h"
#include "trainers/ablation/process.h"
#include "trainers/ablation/run_metrics.h"
#include "trainers/ablation/runner.h"
#include "trainers/ablation/spikes.h"
#include "trainers/ablation/summary.h"
#include "trainers/ablation/scheduler.h"
#include "trainers/ablation/sweep.h"
#include "trainers/data/token_shard.h"

namespace zt::ablation {
namespace {

namespace fs = std::filesystem;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// A fresh, empty directory per test, removed afterwards.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = fs::temp_directory_path() /
            ("ztrain_ablation_" + std::to_string(getpid()) + "_" + info->test_suite_name() + "_" + info->name());
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

void write_file(const fs::path& file, const std::string& text) {
  fs::create_directories(file.parent_path());
  std::ofstream out(file, std::ios::binary);
  out << text;
}

std::string read_file(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<std::string> read_lines(const fs::path& file) {
  std::vector<std::string> lines;
  std::ifstream in(file);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// EXPECT that `f` throws zt::Error whose message contains `part`.
template <class F>
::testing::AssertionResult throws_error_containing(F&& f, const std::string& part) {
  try {
    f();
  } catch (const zt::Error& e) {
    if (std::string(e.what()).find(part) != std::string::npos) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << "message '" << e.what() << "' lacks '" << part << "'";
  }
  return ::testing::AssertionFailure() << "no zt::Error thrown (expected one mentioning '" << part << "')";
}

// ---- sweep parser ------------------------------------------------------------------------

TEST(SweepParser, ParsesKeyAndValuesInOrder) {
  Sweep s = parse_sweep("loss.z_loss_weight=0,1e-4,1e-3");
  EXPECT_EQ(s.key, "loss.z_loss_weight");
  EXPECT_EQ(s.values, (std::vector<std::string>{"0", "1e-4", "1e-3"}));

  s = parse_sweep(" optim.lr = 6e-4 , 3e-4 ");
  EXPECT_EQ(s.key, "optim.lr");
  EXPECT_EQ(s.values, (std::vector<std::string>{"6e-4", "3e-4"}));

  s = parse_sweep("loss.z_loss_weight=1e-2");
  EXPECT_EQ(s.values, (std::vector<std::string>{"1e-2"}));
}

// Decision: values are strings; their type is the trainer config loader's business (ablate
// checks every grid point with it before running; see AblateCli.RejectsABadValueBeforeRunning).
TEST(SweepParser, KeepsNonNumericValuesAsStrings) {
  Sweep s = parse_sweep("loss.z_loss_weight=abc,1e-3");
  EXPECT_EQ(s.values, (std::vector<std::string>{"abc", "1e-3"}));
  s = parse_sweep("train.dtype=f32,bf16");
  EXPECT_EQ(s.values, (std::vector<std::string>{"f32", "bf16"}));
  s = parse_sweep("loss.z_loss_schedule=constant,linear_warmup");
  EXPECT_EQ(s.values, (std::vector<std::string>{"constant", "linear_warmup"}));
}

TEST(SweepParser, KeepsCommasInsideBrackets) {
  Sweep s = parse_sweep("data.train=[a.bin,b.bin],[c.bin]");
  EXPECT_EQ(s.values, (std::vector<std::string>{"[a.bin,b.bin]", "[c.bin]"}));
}

TEST(SweepParser, RejectsBadArguments) {
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"loss.z_loss_weight", "no '='"},
      {"loss.z_loss_weight 0,1e-4", "no '='"},
      {"loss.z_loss_weight=", "no values"},
      {"loss.z_loss_weight=  ", "no values"},
      {"loss.z_loss_weight=0,,1e-3", "value 2 of 3 is empty"},
      {"loss.z_loss_weight=0,1e-3,", "value 3 of 3 is empty"},
      {"loss.z_loss_weight=,0", "value 1 of 2 is empty"},
      {"z_loss_weight=0,1", "not of the form section.key"},
      {"=0,1", "not of the form section.key"},
      {"loss.=0", "not of the form section.key"},
      {".z=0", "not of the form section.key"},
      {"a.b.c=0", "not of the form section.key"},
      {"loss.z-weight=0", "not of the form section.key"},
      {"loss.z_loss_weight=1e-3,0.001", "repeats"},
      {"loss.z_loss_weight=0,1e-4,0", "repeats"},
      {"train.dtype=f32,f32", "repeats"},
      {"data.train=[a,b", "unbalanced"},
      {"data.train=a],[b", "unbalanced"},
  };
  for (const auto& [argument_in, reason] : bad) {
    const std::string& argument = argument_in;  // clang 14 cannot capture a structured binding
    EXPECT_TRUE(throws_error_containing([&] { parse_sweep(argument); }, reason)) << argument;
    // The message names the argument, so the user sees which --sweep is wrong.
    EXPECT_TRUE(throws_error_containing([&] { parse_sweep(argument); }, "--sweep '" + argument + "'")) << argument;
  }
}

// ---- grid expansion and run names ----------------------------------------------------------

TEST(Grid, ExpandsTheProductFirstSweepSlowestSeedFastest) {
  const std::vector<Sweep> sweeps = {parse_sweep("loss.z_loss_weight=0,1e-4,1e-3"), parse_sweep("optim.lr=6e-4,3e-4")};
  const auto runs = expand_grid(sweeps, 2);
  ASSERT_EQ(runs.size(), 12u);
  std::vector<std::string> names;
  for (const auto& r : runs) names.push_back(r.name);
  const std::vector<std::string> expected = {
      "z_loss_weight=0_lr=6e-4_seed=0",    "z_loss_weight=0_lr=6e-4_seed=1",    "z_loss_weight=0_lr=3e-4_seed=0",
      "z_loss_weight=0_lr=3e-4_seed=1",    "z_loss_weight=1e-4_lr=6e-4_seed=0", "z_loss_weight=1e-4_lr=6e-4_seed=1",
      "z_loss_weight=1e-4_lr=3e-4_seed=0", "z_loss_weight=1e-4_lr=3e-4_seed=1", "z_loss_weight=1e-3_lr=6e-4_seed=0",
      "z_loss_weight=1e-3_lr=6e-4_seed=1", "z_loss_weight=1e-3_lr=3e-4_seed=0", "z_loss_weight=1e-3_lr=3e-4_seed=1",
  };
  EXPECT_EQ(names, expected);
  EXPECT_EQ(runs[5].label, "z_loss_weight=1e-4 lr=6e-4 seed=1");
  EXPECT_EQ(runs[5].seed, 1);
  ASSERT_EQ(runs[5].values.size(), 2u);
  EXPECT_EQ(runs[5].values[0], (std::pair<std::string, std::string>{"loss.z_loss_weight", "1e-4"}));
  EXPECT_EQ(runs[5].values[1], (std::pair<std::string, std::string>{"optim.lr", "6e-4"}));
}

TEST(Grid, SeedsOnlyWithoutSweeps) {
  const auto runs = expand_grid({}, 3);
  ASSERT_EQ(runs.size(), 3u);
  EXPECT_EQ(runs[0].name, "seed=0");
  EXPECT_EQ(runs[2].name, "seed=2");
  EXPECT_TRUE(runs[2].values.empty());
}

TEST(Grid, NamesAreFilesystemSafe) {
  EXPECT_EQ(filesystem_safe("a/b c:[d,e]*?"), "a_b_c__d_e___");
  EXPECT_EQ(filesystem_safe("z=1e-4_x+1.5"), "z=1e-4_x+1.5");
  const auto runs = expand_grid({parse_sweep("data.train=[a.bin,b.bin],../c.bin")}, 1);
  EXPECT_EQ(runs[0].name, "train=_a.bin_b.bin__seed=0");
  EXPECT_EQ(runs[1].name, "train=.._c.bin_seed=0");
  EXPECT_EQ(runs[0].label, "train=[a.bin,b.bin] seed=0");  // labels keep the user's text
  for (const auto& r : runs) EXPECT_EQ(r.name.find('/'), std::string::npos);
}

TEST(Grid, SharedLastKeyPartsUseTheFullKey) {
  const std::vector<Sweep> sweeps = {parse_sweep("model.dropout=0,0.1"), parse_sweep("attn.dropout=0.2"),
                                     parse_sweep("optim.lr=1e-3")};
  EXPECT_EQ(short_key(sweeps, 0), "model.dropout");
  EXPECT_EQ(short_key(sweeps, 1), "attn.dropout");
  EXPECT_EQ(short_key(sweeps, 2), "lr");
  EXPECT_EQ(expand_grid(sweeps, 1)[1].name, "model.dropout=0.1_attn.dropout=0.2_lr=1e-3_seed=0");
}

TEST(Grid, RejectsBadGrids) {
  EXPECT_TRUE(throws_error_containing([] { expand_grid({parse_sweep("loss.z_loss_weight=0")}, 0); }, "--seeds"));
  EXPECT_TRUE(throws_error_containing(
      [] { expand_grid({parse_sweep("loss.z_loss_weight=0"), parse_sweep("loss.z_loss_weight=1")}, 1); },
      "given twice"));
  EXPECT_TRUE(throws_error_containing([] { expand_grid({parse_sweep("train.seed=1,2")}, 1); }, "--seeds"));
  EXPECT_TRUE(throws_error_containing([] { expand_grid({parse_sweep("log.out_dir=a,b")}, 1); }, "log.out_dir"));
  // "a/b" and "a:b" both become "a_b": two runs, one directory.
  EXPECT_TRUE(throws_error_containing([] { expand_grid({parse_sweep("data.train=a/b,a:b")}, 1); },
                                      "share the directory name 'train=a_b_seed=0'"));
  EXPECT_TRUE(throws_error_containing([] { expand_grid({parse_sweep("data.train=" + std::string(300, 'x'))}, 1); },
                                      "longer than"));
}

// `ablate --seeds 100000000 --dry-run` grew without bound before printing anything.
TEST(Grid, AGridTooLargeToRunIsRefusedAtOnce) {
  EXPECT_TRUE(throws_error_containing([] { expand_grid({parse_sweep("loss.z_loss_weight=0,1")}, 100000000); },
                                      "2 setting(s) x --seeds 100000000 runs, more than 10000"));
  EXPECT_TRUE(throws_error_containing([] { expand_grid({}, INT64_MAX); }, "more than 10000"));
  std::string many = "optim.lr=1";
  for (int i = 2; i <= 200; ++i) many += "," + std::to_string(i);
  std::string more = "train.batch_size=1";
  for (int i = 2; i <= 200; ++i) more += "," + std::to_string(i);
  EXPECT_TRUE(throws_error_containing([&] { expand_grid({parse_sweep(many), parse_sweep(more)}, 1); },
                                      "the grid (200 x 200 x ...) has more than 10000 runs"));
  EXPECT_EQ(expand_grid({parse_sweep(many)}, 50).size(), 10000u);
}

// ---- spike counter -------------------------------------------------------------------------

// Reference: the definition written out with a full sort of each window.
std::vector<size_t> reference_spikes(const std::vector<double>& loss, int64_t window, double factor) {
  std::vector<size_t> out;
  std::vector<double> finite_history;
  for (size_t i = 0; i < loss.size(); ++i) {
    if (!std::isfinite(loss[i])) {
      out.push_back(i);
      continue;
    }
    const size_t n = std::min<size_t>(finite_history.size(), static_cast<size_t>(window));
    if (n > 0) {
      std::vector<double> w(finite_history.end() - static_cast<std::ptrdiff_t>(n), finite_history.end());
      std::sort(w.begin(), w.end());
      const double median = n % 2 ? w[n / 2] : 0.5 * (w[n / 2 - 1] + w[n / 2]);
      if (loss[i] > factor * median) out.push_back(i);
    }
    finite_history.push_back(loss[i]);
  }
  return out;
}

TEST(Spikes, FlatSeriesHasNone) {
  EXPECT_EQ(count_loss_spikes(std::vector<double>(500, 3.0)), 0);
  std::mt19937_64 rng(11);
  std::uniform_real_distribution<double> noise(-0.05, 0.05);
  std::vector<double> noisy;
  for (int i = 0; i < 500; ++i) noisy.push_back(3.0 * (1 + noise(rng)));
  EXPECT_EQ(count_loss_spikes(noisy), 0);
  std::vector<double> decaying;  // a healthy training curve
  for (int i = 0; i < 500; ++i) decaying.push_back(3.0 + 8.0 * std::exp(-i / 40.0));
  EXPECT_EQ(count_loss_spikes(decaying), 0);
  EXPECT_EQ(count_loss_spikes(std::vector<double>{}), 0);
  EXPECT_EQ(count_loss_spikes(std::vector<double>{100.0}), 0);  // no history: never a spike
}

TEST(Spikes, CountsInjectedSpikesExactly) {
  std::vector<double> loss;
  for (int i = 0; i < 400; ++i) loss.push_back(3.0 + 8.0 * std::exp(-i / 40.0));
  const std::vector<size_t> at = {60, 250, 251, 252, 399};  // one spike lasting 3 records, two single ones
  for (size_t i : at) loss[i] *= 2.0;
  EXPECT_EQ(find_loss_spikes(loss), at);
  EXPECT_EQ(count_loss_spikes(loss), 5);
  // Just below and just above the factor.
  std::vector<double> edge(100, 2.0);
  edge[70] = 2.0 * 1.5 * (1 - 1e-9);
  edge[80] = 2.0 * 1.5 * (1 + 1e-9);
  EXPECT_EQ(find_loss_spikes(edge), (std::vector<size_t>{80}));
  EXPECT_EQ(count_loss_spikes(edge, {50, 1.4}), 2);
}

TEST(Spikes, NonFiniteLossIsASpikeAndLeavesTheWindow) {
  std::vector<double> loss(60, 3.0);
  loss[30] = kNaN;
  loss[40] = std::numeric_limits<double>::infinity();
  EXPECT_EQ(find_loss_spikes(loss), (std::vector<size_t>{30, 40}));
}

TEST(Spikes, UsesOnlyThePreviousWindowAndTheTrueMedian) {
  // W=3: at index 6 the previous three are 1,1,1 (median 1) -> 2 is a spike; the whole history
  // (median 5.5) would not call it one.
  EXPECT_EQ(find_loss_spikes(std::vector<double>{10, 10, 10, 1, 1, 1, 2}, {3, 1.5}), (std::vector<size_t>{6}));
  // W=4, even window: median of {1,1,3,3} is 2, so 2.9 is not above 1.5 x 2 and 3.1 is.
  EXPECT_EQ(find_loss_spikes(std::vector<double>{1, 1, 3, 3, 2.9}, {4, 1.5}), (std::vector<size_t>{2, 3}));
  EXPECT_EQ(find_loss_spikes(std::vector<double>{1, 1, 3, 3, 3.1}, {4, 1.5}), (std::vector<size_t>{2, 3, 4}));
}

TEST(Spikes, MatchesTheReferenceOnRandomSeries) {
  std::mt19937_64 rng(20240601);
  for (int trial = 0; trial < 30; ++trial) {
    std::uniform_int_distribution<int> length(1, 400), window(1, 60);
    std::uniform_real_distribution<double> base(0.5, 5), noise(0.8, 1.25), coin(0, 1), factor(1.0, 2.0);
    std::vector<double> loss;
    const double b = base(rng);
    const int n = length(rng);
    for (int i = 0; i < n; ++i) {
      double x = b * noise(rng);
      if (coin(rng) < 0.05) x *= 3;
      if (coin(rng) < 0.01) x = kNaN;
      loss.push_back(x);
    }
    const int64_t w = window(rng);
    const double f = factor(rng);
    EXPECT_EQ(find_loss_spikes(loss, {w, f}), reference_spikes(loss, w, f)) << "trial " << trial;
  }
}

TEST(Spikes, RejectsBadOptions) {
  const std::vector<double> loss = {1, 2};
  EXPECT_TRUE(throws_error_containing([&] { count_loss_spikes(loss, {0, 1.5}); }, "window"));
  EXPECT_TRUE(throws_error_containing([&] { count_loss_spikes(loss, {50, 0.5}); }, "factor"));
  EXPECT_TRUE(throws_error_containing([&] { count_loss_spikes(loss, {50, kNaN}); }, "factor"));
}

// ---- metrics reading -----------------------------------------------------------------------

std::string step_line(int64_t step, double loss, double lse_mean = 5, double lse_max = 6, double tps = 100) {
  std::ostringstream s;
  s << R"({"step":)" << step << R"(,"tokens":)" << step * 64 << R"(,"lr":0.001,"loss":)" << loss
    << R"(,"ce_loss":)" << loss - 0.01 << R"(,"z_loss":0.01,"lse_mean":)" << lse_mean << R"(,"lse_max":)" << lse_max
    << R"(,"grad_norm":1.5,"z_loss_weight":0.0001,"tokens_per_s":)" << tps << R"(,"elapsed_s":1})" << "\n";
  return s.str();
}

TEST(Metrics, ReadsStepAndEvalRecords) {
  std::string text = step_line(1, 4.5) + R"({"step":1,"tokens":64,"val_loss":4.7,"elapsed_s":1})" "\n" +
                     step_line(2, 4.25) +
                     R"({"step":2,"tokens":128,"loss":4.0,"ce_loss":null,"val_loss":4.1})" "\n" +
                     R"({"event":"start","config":"x"})" "\n" + "\n";
  RunMetrics m = parse_metrics(text, "m.jsonl");
  ASSERT_EQ(m.steps.size(), 2u);  // the step-2 record of the combined line replaced the first
  EXPECT_EQ(m.steps[0].step, 1);
  EXPECT_DOUBLE_EQ(m.steps[0].tokens, 64);
  EXPECT_DOUBLE_EQ(m.steps[0].lr, 0.001);
  EXPECT_DOUBLE_EQ(m.steps[0].loss, 4.5);
  EXPECT_DOUBLE_EQ(m.steps[0].ce_loss, 4.49);
  EXPECT_DOUBLE_EQ(m.steps[0].z_loss, 0.01);
  EXPECT_DOUBLE_EQ(m.steps[0].lse_mean, 5);
  EXPECT_DOUBLE_EQ(m.steps[0].lse_max, 6);
  EXPECT_DOUBLE_EQ(m.steps[0].grad_norm, 1.5);
  EXPECT_DOUBLE_EQ(m.steps[0].z_loss_weight, 0.0001);
  EXPECT_DOUBLE_EQ(m.steps[0].tokens_per_s, 100);
  EXPECT_DOUBLE_EQ(m.steps[1].loss, 4.0);
  EXPECT_TRUE(std::isnan(m.steps[1].ce_loss));       // null
  EXPECT_TRUE(std::isnan(m.steps[1].tokens_per_s));  // missing
  ASSERT_EQ(m.evals.size(), 2u);
  EXPECT_EQ(m.evals[0].step, 1);
  EXPECT_DOUBLE_EQ(m.evals[0].val_loss, 4.7);
  EXPECT_EQ(m.evals[1].step, 2);
  EXPECT_DOUBLE_EQ(m.evals[1].val_loss, 4.1);
}

TEST(Metrics, AResumedRunReplacesTheStepsItLoggedAgain) {
  // Killed after step 5 with a checkpoint at step 3; the resumed run logs 4, 5, 6 again.
  std::string text;
  for (int s = 1; s <= 5; ++s) text += step_line(s, 10.0 + s);
  text += R"({"step":4,"val_loss":9.0})" "\n";
  for (int s = 4; s <= 6; ++s) text += step_line(s, 20.0 + s);
  text += R"({"step":4,"val_loss":8.0})" "\n";
  RunMetrics m = parse_metrics(text, "m.jsonl");
  ASSERT_EQ(m.steps.size(), 6u);
  const double expected[] = {11, 12, 13, 24, 25, 26};
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_EQ(m.steps[i].step, static_cast<int64_t>(i + 1));
    EXPECT_DOUBLE_EQ(m.steps[i].loss, expected[i]);
  }
  ASSERT_EQ(m.evals.size(), 1u);
  EXPECT_DOUBLE_EQ(m.evals[0].val_loss, 8.0);
}

TEST(Metrics, IgnoresACutShortLastLineAndRejectsOtherBadLines) {
  RunMetrics m = parse_metrics(step_line(1, 4) + step_line(2, 3) + R"({"step":3,"lo)", "m.jsonl");
  EXPECT_EQ(m.steps.size(), 2u);
  EXPECT_TRUE(throws_error_containing([] { parse_metrics(step_line(1, 4) + "{oops\n" + step_line(2, 3), "m.jsonl"); },
                                      "m.jsonl:2: not a JSON object"));
  EXPECT_TRUE(throws_error_containing([] { parse_metrics("[1,2]\n", "m.jsonl"); }, "m.jsonl:1"));
  EXPECT_TRUE(throws_error_containing([] { parse_metrics(R"({"loss":1.0})" "\n", "m.jsonl"); }, "integer \"step\""));
  EXPECT_TRUE(throws_error_containing([] { parse_metrics(R"({"step":1,"loss":"x"})" "\n", "m.jsonl"); },
                                      "\"loss\" is not a number"));
  EXPECT_TRUE(throws_error_containing([] { read_metrics("/nonexistent/metrics.jsonl"); }, "/nonexistent"));
  EXPECT_TRUE(read_metrics_if_present("/nonexistent/metrics.jsonl").steps.empty());
}

// ---- summary ---------------------------------------------------------------------------------

// 20 steps by hand: loss 4.0 except 8.0 at step 12 (one spike: 8 > 1.5 x median 4);
// lse_mean = 0.1 step except -9 at step 5; lse_max = lse_mean + 1 except 7.5 at step 7;
// tokens/s 10 at step 1 (warm-up, left out), 100 + step after; evals 5.0, 3.5, 3.7.
std::string hand_metrics() {
  std::string text = R"({"step":0,"tokens":0,"val_loss":5.0})" "\n";
  for (int s = 1; s <= 20; ++s) {
    const double loss = s == 12 ? 8.0 : 4.0;
    const double lse_mean = s == 5 ? -9.0 : 0.1 * s;
    const double lse_max = s == 7 ? 7.5 : lse_mean + 1;
    text += step_line(s, loss, lse_mean, lse_max, s == 1 ? 10.0 : 100.0 + s);
    if (s == 10) text += R"({"step":10,"tokens":640,"val_loss":3.5})" "\n";
  }
  return text + R"({"step":20,"tokens":1280,"val_loss":3.7})" "\n";
}

TEST(Summary, ComputesTheColumnsByHand) {
  const RunSummary s = summarize(parse_metrics(hand_metrics(), "hand.jsonl"));
  EXPECT_EQ(s.steps, 20);
  EXPECT_DOUBLE_EQ(s.final_loss, 4.0);
  EXPECT_DOUBLE_EQ(s.final_val_loss, 3.7);
  EXPECT_DOUBLE_EQ(s.best_val_loss, 3.5);
  EXPECT_NEAR(s.mean_lse_last10, (1.9 + 2.0) / 2, 1e-12);  // last 10% of 20 records: steps 19, 20
  EXPECT_DOUBLE_EQ(s.max_abs_lse, 9.0);                     // |lse_mean| at step 5 beats lse_max 7.5
  EXPECT_EQ(s.loss_spikes, 1);
  EXPECT_NEAR(s.tokens_per_s, 111.0, 1e-12);  // mean of 100 + s for s = 2..20
  EXPECT_EQ(summarize(parse_metrics(hand_metrics(), "hand.jsonl"), {5, 1.5}).loss_spikes, 1);
  EXPECT_EQ(summarize(parse_metrics(hand_metrics(), "hand.jsonl"), {50, 2.5}).loss_spikes, 0);
}

TEST(Summary, TailIsAtLeastOneRecordAndRoundsUp) {
  std::string text;
  for (int s = 1; s <= 11; ++s) text += step_line(s, 3.0, s, s + 1);
  // 11 records: ceil(1.1) = 2 -> steps 10 and 11.
  EXPECT_DOUBLE_EQ(summarize(parse_metrics(text, "x")).mean_lse_last10, 10.5);
  EXPECT_DOUBLE_EQ(summarize(parse_metrics(step_line(1, 3.0, 7.0, 8.0, 55.0), "x")).mean_lse_last10, 7.0);
  EXPECT_DOUBLE_EQ(summarize(parse_metrics(step_line(1, 3.0, 7.0, 8.0, 55.0), "x")).tokens_per_s, 55.0);
}

TEST(Summary, EmptyRunHasNoNumbers) {
  const RunSummary s = summarize(RunMetrics{});
  EXPECT_EQ(s.steps, -1);
  EXPECT_TRUE(std::isnan(s.final_val_loss));
  EXPECT_TRUE(std::isnan(s.best_val_loss));
  EXPECT_TRUE(std::isnan(s.mean_lse_last10));
  EXPECT_TRUE(std::isnan(s.max_abs_lse));
  EXPECT_TRUE(std::isnan(s.tokens_per_s));
  EXPECT_EQ(s.loss_spikes, 0);
}

TEST(Summary, WritesMarkdownAndCsvFromMetricsFiles) {
  TempDir tmp;
  const std::vector<Sweep> sweeps = {parse_sweep("loss.z_loss_weight=0,1e-4")};
  const auto runs = expand_grid(sweeps, 2);
  write_file(tmp.path() / runs[0].name / "metrics.jsonl", hand_metrics());
  // Run 1: three steps, loss 6, 5, 4 (no spike), no evaluation; last-10% lse = the last
  // record's 3.05; max |lse| = |-4.5|; tokens/s mean(70, 92) = 81.
  write_file(tmp.path() / runs[1].name / "metrics.jsonl",
             step_line(1, 6, 1, 2, 50) + step_line(2, 5, 2, 3, 70) + step_line(3, 4, 3.05, -4.5, 92));
  std::vector<SummaryRow> rows;
  const char* statuses[] = {"done", "done", "failed", "not run"};
  for (size_t i = 0; i < runs.size(); ++i) {
    rows.push_back({runs[i], statuses[i], summarize(read_metrics_if_present(tmp.path() / runs[i].name / "metrics.jsonl"))});
  }
  const std::string csv = summary_csv(sweeps, rows);
  const std::string expected_csv =
      "run,loss.z_loss_weight,seed,status,steps,final_loss,final_val_loss,best_val_loss,mean_lse_last10,"
      "max_abs_lse,loss_spikes,tokens_per_s\n"
      "z_loss_weight=0_seed=0,0,0,done,20,4,3.7,3.5,1.95,9,1,111\n"
      "z_loss_weight=0_seed=1,0,1,done,3,4,,,3.05,4.5,0,81\n"
      "z_loss_weight=1e-4_seed=0,1e-4,0,failed,,,,,,,,\n"
      "z_loss_weight=1e-4_seed=1,1e-4,1,not run,,,,,,,,\n";
  EXPECT_EQ(csv, expected_csv);

  const std::string md = summary_markdown(sweeps, rows, {50, 1.5});
  EXPECT_NE(md.find("| run | z_loss_weight | seed | status | steps | final loss | final val_loss | best val_loss | "
                    "mean lse (last 10%) | max \\|lse\\| | loss spikes | tokens/s |"),
            std::string::npos)
      << md;
  EXPECT_NE(md.find("| z_loss_weight=0_seed=0 | 0 | 0 | done | 20 | 4.0000 | 3.7000 | 3.5000 | 1.950 | 9.000 | 1 | 111 |"),
            std::string::npos)
      << md;
  EXPECT_NE(md.find("| z_loss_weight=1e-4_seed=1 | 1e-4 | 1 | not run | - | - | - | - | - | - | - | - |"),
            std::string::npos)
      << md;
  EXPECT_NE(md.find("1.5 x the median of the previous 50"), std::string::npos);
  // Two seeds per setting: the mean table over finished seeds. Setting 0: both done;
  // val_loss only from seed 0 (seed 1 has none); lse (1.95 + 3.05) / 2; max |lse| (9 + 4.5) / 2;
  // spikes (1 + 0) / 2; tokens/s (111 + 81) / 2.
  EXPECT_NE(md.find("| 0 | 2/2 | 3.7000 | 3.5000 | 2.500 | 6.750 | 0.5 | 96 |"), std::string::npos) << md;
  EXPECT_NE(md.find("| 1e-4 | 0/2 | - | - | - | - | - | - |"), std::string::npos) << md;
}

TEST(Summary, CsvQuotesValuesWithCommas) {
  const std::vector<Sweep> sweeps = {parse_sweep("data.train=[a,b]")};
  const auto runs = expand_grid(sweeps, 1);
  const std::string csv = summary_csv(sweeps, {{runs[0], "not run", summarize({})}});
  EXPECT_NE(csv.find("\ntrain=_a_b__seed=0,\"[a,b]\",0,not run,"), std::string::npos) << csv;
}

// ---- resume of a half-finished ablation, with a stub train program ----------------------------

// Behaves like train for ablate's purposes: writes metrics.jsonl and checkpoints into
// log.out_dir, logs its command line to invocations.txt, and fails when told to by a file
// <ablation>/fail_<run name> ("exit": status 3 after step 4; "signal": killed by SIGKILL;
// "sleep": sleeps a minute after step 3).
// Fresh: steps 1-3, checkpoint at 3, then 4-6 and an evaluation. Like the real trainer,
// --resume continues from the newest checkpoint (step 3) keeping the earlier records and
// fails without a checkpoint; without --resume it refuses a directory holding a run unless
// --overwrite is given.
const char* kStubTrain = R"STUB(#!/bin/bash
out=""; resume=0; overwrite=0; z=0
all="$*"
while [ $# -gt 0 ]; do
  case "$1" in
    --config) shift 2 ;;
    --set) case "$2" in log.out_dir=*) out="${2#log.out_dir=}" ;; loss.z_loss_weight=*) z="${2#*=}" ;; esac; shift 2 ;;
    --resume) resume=1; shift ;;
    --overwrite) overwrite=1; shift ;;
    *) echo "stub train: unexpected argument $1" >&2; exit 64 ;;
  esac
done
[ -n "$out" ] || { echo "stub train: no log.out_dir" >&2; exit 65; }
if [ $resume = 0 ] && [ $overwrite = 0 ] && { [ -f "$out/metrics.jsonl" ] || [ -n "$(ls "$out/checkpoints" 2>/dev/null)" ]; }; then
  echo "stub train: $out already holds a run" >&2; exit 67
fi
mkdir -p "$out/checkpoints"
echo "$all" >> "$out/invocations.txt"
echo "stub train: run $(basename "$out") resume=$resume"
step() { echo "{\"step\":$1,\"tokens\":$(($1*64)),\"lr\":0.001,\"loss\":$2,\"ce_loss\":$2,\"z_loss\":0,\"lse_mean\":5,\"lse_max\":6,\"grad_norm\":1,\"z_loss_weight\":$z,\"tokens_per_s\":1000}" >> "$out/metrics.jsonl"; }
if [ $resume = 0 ]; then
  : > "$out/metrics.jsonl"; rm -f "$out"/checkpoints/*
  step 1 4.0; step 2 3.9; step 3 3.8
  : > "$out/checkpoints/step_00000003.ckpt"
else
  [ -f "$out/checkpoints/step_00000003.ckpt" ] || { echo "stub train: --resume without a checkpoint" >&2; exit 66; }
fi
fail="$(dirname "$out")/fail_$(basename "$out")"
if [ -f "$fail" ] && grep -q sleep "$fail"; then exec -a "sleeping $out" sleep 60; fi
if [ -f "$fail" ]; then
  step 4 3.75
  echo "stub train: boom" >&2
  if grep -q signal "$fail"; then kill -KILL $$; fi
  exit 3
fi
step 4 3.7; step 5 3.6; step 6 3.5
echo "{\"step\":6,\"tokens\":384,\"val_loss\":3.55}" >> "$out/metrics.jsonl"
: > "$out/checkpoints/step_00000006.ckpt"
exit 0
)STUB";

fs::path write_stub_train(const fs::path& dir) {
  const fs::path stub = dir / "stub_train.sh";
  write_file(stub, kStubTrain);
  fs::permissions(stub, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec);
  return stub;
}

class AblationResume : public ::testing::Test {
 protected:
  void SetUp() override {
    plan_.config = tmp_.path() / "cfg.yaml";
    write_file(plan_.config, "data:\n  train: [train.bin]\n  val: [val.bin]\ntrain:\n  max_steps: 6\n");
    plan_.sweeps = {parse_sweep("loss.z_loss_weight=0,1e-4,1e-3")};
    plan_.seeds = 2;
    plan_.sets = {"train.max_steps=6", "optim.lr=1e-3"};
    plan_.out_dir = tmp_.path() / "ablation";
    plan_.train_bin = write_stub_train(tmp_.path());
    runs_ = expand_grid(plan_.sweeps, plan_.seeds);
  }
  fs::path dir(size_t i) const { return plan_.out_dir / runs_[i].name; }
  std::vector<std::string> invocations(size_t i) const { return read_lines(dir(i) / "invocations.txt"); }

  TempDir tmp_;
  AblationPlan plan_;
  std::vector<RunSpec> runs_;
};

TEST_F(AblationResume, FinishedRunsAreNotRerunAndTheUnfinishedOneResumes) {
  ASSERT_EQ(runs_.size(), 6u);
  ASSERT_EQ(runs_[3].name, "z_loss_weight=1e-4_seed=1");
  fs::create_directories(plan_.out_dir);
  write_file(plan_.out_dir / ("fail_" + runs_[3].name), "exit\n");

  // First pass: run 4 of 6 fails after its step-3 checkpoint; the others still run.
  std::ostringstream progress1;
  auto outcomes = run_ablation(plan_, progress1);
  ASSERT_EQ(outcomes.size(), 6u);
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_EQ(outcomes[i].status, i == 3 ? RunStatus::kFailed : RunStatus::kDone) << i;
    EXPECT_EQ(outcomes[i].attempt, Attempt::kFresh) << i;
    ASSERT_EQ(invocations(i).size(), 1u) << i;
    EXPECT_EQ(fs::exists(dir(i) / "ablate.done"), i != 3) << i;
  }
  EXPECT_EQ(outcomes[3].detail, "train exited with status 3");
  EXPECT_TRUE(fs::exists(dir(3) / "ablate.failed"));
  EXPECT_NE(read_file(dir(3) / "train.log").find("stub train: boom"), std::string::npos);
  // The exact command: the config, the plan's sets, the swept value, the seed, the run directory.
  EXPECT_EQ(invocations(3)[0], "--config " + plan_.config.string() +
                                   " --set train.max_steps=6 --set optim.lr=1e-3 --set loss.z_loss_weight=1e-4"
                                   " --set train.seed=1 --set log.out_dir=" + dir(3).string());
  const std::string p1 = progress1.str();
  EXPECT_NE(p1.find("[1/6] z_loss_weight=0 seed=0 ...\n"), std::string::npos) << p1;
  EXPECT_NE(p1.find("[4/6] z_loss_weight=1e-4 seed=1 FAILED"), std::string::npos) << p1;
  EXPECT_NE(p1.find("stub train: boom"), std::string::npos) << p1;  // the log's tail is shown
  EXPECT_NE(p1.find("[6/6] z_loss_weight=1e-3 seed=1 done in"), std::string::npos) << p1;

  auto rows = collect_summary(plan_, {});
  EXPECT_EQ(rows[0].status, "done");
  EXPECT_EQ(rows[3].status, "failed");
  EXPECT_EQ(rows[3].summary.steps, 4);

  // Between the passes: run 5 was never started (its directory is gone), and run 6 was killed
  // before its first checkpoint (metrics but no checkpoint and no marker).
  fs::remove(plan_.out_dir / ("fail_" + runs_[3].name));
  fs::remove_all(dir(4));
  fs::remove(dir(5) / "ablate.done");
  fs::remove_all(dir(5) / "checkpoints");
  EXPECT_EQ(collect_summary(plan_, {})[5].status, "unfinished");
  EXPECT_EQ(collect_summary(plan_, {})[4].status, "not run");

  std::ostringstream progress2;
  outcomes = run_ablation(plan_, progress2);
  const std::string p2 = progress2.str();
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(outcomes[i].status, RunStatus::kAlreadyDone) << i;
    EXPECT_EQ(invocations(i).size(), 1u) << "finished run " << i << " was rerun";
  }
  EXPECT_NE(p2.find("[1/6] z_loss_weight=0 seed=0 already finished"), std::string::npos) << p2;
  EXPECT_EQ(p2.find("note:"), std::string::npos) << p2;  // same command as before

  EXPECT_EQ(outcomes[3].status, RunStatus::kDone);
  EXPECT_EQ(outcomes[3].attempt, Attempt::kResume);
  ASSERT_EQ(invocations(3).size(), 2u);
  EXPECT_EQ(invocations(3)[1], invocations(3)[0] + " --resume");
  EXPECT_NE(p2.find("[4/6] z_loss_weight=1e-4 seed=1 ... (resuming"), std::string::npos) << p2;
  EXPECT_FALSE(fs::exists(dir(3) / "ablate.failed"));

  EXPECT_EQ(outcomes[4].status, RunStatus::kDone);
  EXPECT_EQ(outcomes[4].attempt, Attempt::kFresh);
  EXPECT_EQ(invocations(4).size(), 1u);

  EXPECT_EQ(outcomes[5].status, RunStatus::kDone);
  EXPECT_EQ(outcomes[5].attempt, Attempt::kStartOver);  // no checkpoint to resume from
  ASSERT_EQ(invocations(5).size(), 2u);
  EXPECT_EQ(invocations(5)[1], invocations(5)[0] + " --overwrite");
  EXPECT_NE(p2.find("starting over"), std::string::npos) << p2;

  // The resumed run's metrics: the failed attempt's step 4 (loss 3.75) was replaced.
  rows = collect_summary(plan_, {});
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_EQ(rows[i].status, "done") << i;
    EXPECT_EQ(rows[i].summary.steps, 6) << i;
    EXPECT_DOUBLE_EQ(rows[i].summary.final_val_loss, 3.55) << i;
  }
  const RunMetrics resumed = read_metrics(dir(3) / "metrics.jsonl");
  ASSERT_EQ(resumed.steps.size(), 6u);
  EXPECT_DOUBLE_EQ(resumed.steps[3].loss, 3.7);

  write_summary(plan_, rows, {});
  EXPECT_EQ(read_lines(plan_.out_dir / "summary.csv").size(), 7u);
  EXPECT_NE(read_file(plan_.out_dir / "summary.md").find("| z_loss_weight=1e-3_seed=1 | 1e-3 | 1 | done | 6 |"),
            std::string::npos);
  const std::string manifest = read_file(plan_.out_dir / "ablation.json");
  EXPECT_NE(manifest.find("\"z_loss_weight=1e-4_seed=1\""), std::string::npos);

  // Third pass: nothing left to do, nothing runs.
  std::ostringstream progress3;
  outcomes = run_ablation(plan_, progress3);
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_EQ(outcomes[i].status, RunStatus::kAlreadyDone) << i;
  }
  EXPECT_EQ(invocations(3).size(), 2u);
  EXPECT_EQ(invocations(5).size(), 2u);

  // A changed command for finished runs is pointed out, not silently mixed in.
  plan_.sets = {"train.max_steps=6", "optim.lr=2e-3"};
  std::ostringstream progress4;
  run_ablation(plan_, progress4);
  EXPECT_NE(progress4.str().find("note: it finished with a different train command"), std::string::npos);
  EXPECT_EQ(invocations(0).size(), 1u);
}

TEST_F(AblationResume, ReportsARunKilledByASignal) {
  plan_.sweeps = {parse_sweep("loss.z_loss_weight=0")};
  plan_.seeds = 1;
  runs_ = expand_grid(plan_.sweeps, plan_.seeds);
  fs::create_directories(plan_.out_dir);
  write_file(plan_.out_dir / ("fail_" + runs_[0].name), "signal\n");
  std::ostringstream progress;
  auto outcomes = run_ablation(plan_, progress);
  ASSERT_EQ(outcomes.size(), 1u);
  EXPECT_EQ(outcomes[0].status, RunStatus::kFailed);
  EXPECT_EQ(outcomes[0].detail, "train was killed by signal 9");
}

TEST_F(AblationResume, RejectsAMissingTrainProgramAndConflictingSets) {
  plan_.train_bin = tmp_.path() / "no_such_train";
  std::ostringstream progress;
  EXPECT_TRUE(throws_error_containing([&] { run_ablation(plan_, progress); }, "no_such_train"));
  EXPECT_FALSE(fs::exists(plan_.out_dir));
  plan_.train_bin = write_stub_train(tmp_.path());
  for (const char* set : {"loss.z_loss_weight=1", "train.seed=3", "log.out_dir=x", "no_equals"}) {
    plan_.sets = {set};
    EXPECT_THROW(run_ablation(plan_, progress), zt::Error) << set;
  }
  EXPECT_FALSE(fs::exists(plan_.out_dir));
}

// ---- the ablate program ------------------------------------------------------------------------

int run_shell(const std::string& command) {
  const int status = std::system(command.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

class AblateCli : public ::testing::Test {
 protected:
  void SetUp() override {
    ablate_ = fs::path(ZTRAIN_BIN_DIR) / "ablate";
    if (!fs::exists(ablate_)) GTEST_SKIP() << ablate_ << " is not built";
    config_ = tmp_.path() / "gpt_stub.yaml";
    write_file(config_, "data:\n  train: [train.bin]\n  val: [val.bin]\ntrain:\n  max_steps: 6\nloss:\n  z_loss_weight: 0.0\n");
    stub_ = write_stub_train(tmp_.path());
  }
  std::string command(const std::string& args) const {
    return "cd " + tmp_.path().string() + " && " + ablate_.string() + " --config " + config_.string() +
           " --train-bin " + stub_.string() + " --no-plots " + args + " > out.txt 2>&1";
  }
  std::string output() const { return read_file(tmp_.path() / "out.txt"); }

  TempDir tmp_;
  fs::path ablate_, config_, stub_;
};

TEST_F(AblateCli, RunsTheGridAndWritesTheSummary) {
  ASSERT_EQ(run_shell(command("--sweep loss.z_loss_weight=0,1e-3 --seeds 1")), 0) << output();
  const fs::path dir = tmp_.path() / "runs" / "ablate-gpt_stub";  // the default directory
  EXPECT_TRUE(fs::exists(dir / "z_loss_weight=0_seed=0" / "ablate.done")) << output();
  EXPECT_TRUE(fs::exists(dir / "z_loss_weight=1e-3_seed=0" / "ablate.done")) << output();
  EXPECT_EQ(read_lines(dir / "summary.csv").size(), 3u);
  EXPECT_NE(output().find("[2/2] z_loss_weight=1e-3 seed=0 ..."), std::string::npos) << output();

  // One run told to fail: the exit status says so, the other run is already finished.
  write_file(tmp_.path() / "abl" / "fail_z_loss_weight=1e-2_seed=0", "exit\n");
  EXPECT_EQ(run_shell(command("--out abl --sweep loss.z_loss_weight=1e-2,1e-4")), 1) << output();
  EXPECT_NE(output().find("failed runs"), std::string::npos) << output();
  EXPECT_TRUE(fs::exists(tmp_.path() / "abl" / "z_loss_weight=1e-4_seed=0" / "ablate.done"));
}

TEST_F(AblateCli, RejectsABadValueBeforeRunning) {
  // The parser keeps "abc" as a string; the trainer's config loader, run on every grid point
  // before the first run, rejects it, naming the key.
  EXPECT_EQ(run_shell(command("--out abl --sweep loss.z_loss_weight=0,abc")), 2) << output();
  EXPECT_NE(output().find("loss.z_loss_weight"), std::string::npos) << output();
  EXPECT_FALSE(fs::exists(tmp_.path() / "abl"));
  EXPECT_EQ(run_shell(command("--out abl --sweep loss.z_loss_weight")), 2) << output();
  EXPECT_NE(output().find("no '='"), std::string::npos) << output();
  EXPECT_EQ(run_shell(command("--out abl --sweep loss.no_such_key=1")), 2) << output();
  EXPECT_NE(output().find("no_such_key"), std::string::npos) << output();
  EXPECT_FALSE(fs::exists(tmp_.path() / "abl"));
}

// ---- the plot script -------------------------------------------------------------------------

TEST(PlotScript, WritesEveryFigureFromSyntheticMetrics) {
  if (run_shell("/usr/bin/python3 -c 'import matplotlib' > /dev/null 2>&1") != 0) {
    GTEST_SKIP() << "/usr/bin/python3 with matplotlib is not installed";
  }
  TempDir tmp;
  const fs::path dir = tmp.path() / "abl";
  const std::vector<Sweep> sweeps = {parse_sweep("loss.z_loss_weight=0,1e-3")};
  AblationPlan plan;
  plan.config = "cfg.yaml";
  plan.sweeps = sweeps;
  plan.seeds = 2;
  plan.out_dir = dir;
  const auto runs = expand_grid(sweeps, 2);
  std::mt19937_64 rng(5);
  std::normal_distribution<double> noise(0, 0.02);
  for (size_t r = 0; r < runs.size(); ++r) {
    std::string text;
    for (int s = 1; s <= 80; ++s) {
      text += step_line(s, 3 + 7 * std::exp(-s / 10.0) + noise(rng) + 0.05 * r, 4 + 0.01 * s, 6 + 0.02 * s);
      if (s % 20 == 0) text += "{\"step\":" + std::to_string(s) + ",\"val_loss\":" + std::to_string(3.2 + 0.02 * r) + "}\n";
    }
    write_file(dir / runs[r].name / "metrics.jsonl", text);
  }
  // The manifest, as ablate writes it, with the last run not started (no metrics).
  write_file(dir / "ablation.json",
             "{\"runs\":[{\"name\":\"" + runs[0].name + "\",\"label\":\"" + runs[0].label +
                 "\",\"seed\":0,\"values\":{\"loss.z_loss_weight\":\"0\"}},{\"name\":\"" + runs[1].name +
                 "\",\"label\":\"" + runs[1].label + "\",\"seed\":1,\"values\":{\"loss.z_loss_weight\":\"0\"}},"
                 "{\"name\":\"" + runs[2].name + "\",\"label\":\"" + runs[2].label +
                 "\",\"seed\":0,\"values\":{\"loss.z_loss_weight\":\"1e-3\"}},{\"name\":\"never_run\",\"seed\":0}]}\n");
  const fs::path script = fs::path(ZTRAIN_SOURCE_DIR) / "tools" / "plot_ablation.py";
  ASSERT_EQ(run_shell("/usr/bin/python3 " + script.string() + " " + dir.string() + " > " +
                      (tmp.path() / "plot.txt").string() + " 2>&1"),
            0)
      << read_file(tmp.path() / "plot.txt");
  for (const char* metric : {"loss", "ce_loss", "z_loss", "lse_mean", "lse_max", "combined"}) {
    for (const char* x : {"step", "tokens"}) {
      const fs::path png = dir / "plots" / (std::string(metric) + "_vs_" + x + ".png");
      ASSERT_TRUE(fs::exists(png)) << png;
      EXPECT_GT(fs::file_size(png), 5000u) << png;
      EXPECT_EQ(read_file(png).substr(0, 8), "\x89PNG\r\n\x1a\n") << png;
    }
  }
  // summary.md links the combined figures once they exist.
  write_summary(plan, {}, {});
  EXPECT_NE(read_file(dir / "summary.md").find("](plots/combined_vs_step.png)"), std::string::npos);
  // An empty ablation directory is a clear error (status 2), not a traceback.
  fs::create_directories(tmp.path() / "empty");
  EXPECT_EQ(run_shell("/usr/bin/python3 " + script.string() + " " + (tmp.path() / "empty").string() +
                      " > /dev/null 2>&1"),
            2);
}

// ---- parallel runs: slots, devices, threads, ETA -----------------------------------------------

TEST(Scheduler, ParsesDeviceLists) {
  EXPECT_EQ(parse_devices("0"), (std::vector<int64_t>{0}));
  EXPECT_EQ(parse_devices("3,0,1"), (std::vector<int64_t>{3, 0, 1}));
  EXPECT_TRUE(throws_error_containing([] { parse_devices(""); }, "item 1 is empty"));
  EXPECT_TRUE(throws_error_containing([] { parse_devices("0,,1"); }, "item 2 is empty"));
  EXPECT_TRUE(throws_error_containing([] { parse_devices("0,"); }, "item 2 is empty"));
  EXPECT_TRUE(throws_error_containing([] { parse_devices("0,-1"); }, "'-1' is not a CUDA device id"));
  EXPECT_TRUE(throws_error_containing([] { parse_devices("cuda:0"); }, "'cuda:0' is not"));
  EXPECT_TRUE(throws_error_containing([] { parse_devices("1,0,1"); }, "device 1 is listed twice"));
}

TEST(Scheduler, PlacesRunsRoundRobinAndSplitsThreads) {
  EXPECT_EQ(threads_per_run(16, 4), 4);
  EXPECT_EQ(threads_per_run(2, 4), 1);
  EXPECT_EQ(threads_per_run(7, 2), 3);
  EXPECT_GE(available_cores(), 1);
  const std::vector<int64_t> devices = {2, 5};
  for (size_t slot = 0; slot < 5; ++slot) {
    EXPECT_EQ(placement_sets(devices, slot, true, false, 3),
              (std::vector<std::string>{"train.device=cuda:" + std::to_string(devices[slot % 2])}))
        << slot;
  }
  EXPECT_EQ(placement_sets({}, 1, true, false, 3), (std::vector<std::string>{"train.threads=3"}));
  EXPECT_TRUE(placement_sets({}, 1, true, true, 3).empty());    // the user's train.threads stays
  EXPECT_TRUE(placement_sets({}, 1, false, false, 3).empty());  // a GPU run
  EXPECT_TRUE(placement_sets({}, 0, true, false, 0).empty());   // --jobs 1
}

TEST(Scheduler, EstimatesTheTimeLeft) {
  EXPECT_LT(estimate_eta(-1, {3.0}, 4, 2), 0);  // no run ended yet
  EXPECT_EQ(format_duration(-1), "?");
  // mean 10 s; running 4 s and 12 s in (rests 6 and 0); 3 left: (6 + 0 + 30) / 2 = 18.
  EXPECT_DOUBLE_EQ(estimate_eta(10, {4.0, 12.0}, 3, 2), 18.0);
  // One slot busy for another 9 s, nothing left: the longest rest, not 9 / 4.
  EXPECT_DOUBLE_EQ(estimate_eta(10, {1.0}, 0, 4), 9.0);
  EXPECT_EQ(format_duration(42.4), "42 s");
  EXPECT_EQ(format_duration(725), "12 min 5 s");
  EXPECT_EQ(format_duration(3 * 3600 + 4 * 60 + 10), "3 h 4 min");
}

TEST_F(AblationResume, RunsSeveralAtOnceOnTheListedDevices) {
  plan_.jobs = 3;
  plan_.devices = {4, 7};
  std::ostringstream progress;
  const auto outcomes = run_ablation(plan_, progress);
  ASSERT_EQ(outcomes.size(), 6u);
  std::map<std::string, int> per_device;
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_EQ(outcomes[i].status, RunStatus::kDone) << i << progress.str();
    ASSERT_EQ(invocations(i).size(), 1u) << i;
    const std::string command = invocations(i)[0];
    const bool on4 = command.find("--set train.device=cuda:4") != std::string::npos;
    const bool on7 = command.find("--set train.device=cuda:7") != std::string::npos;
    EXPECT_TRUE(on4 != on7) << command;
    ++per_device[on4 ? "4" : "7"];
    // The placement is not part of the run's identity.
    EXPECT_EQ(read_file(dir(i) / "ablate_args.json").find("train.device"), std::string::npos);
  }
  EXPECT_GE(per_device["4"], 1);
  EXPECT_GE(per_device["7"], 1);
  EXPECT_NE(progress.str().find("6/6 done, 0 running, 0 left"), std::string::npos) << progress.str();

  // A train.device of the user's own conflicts with --devices; so does streaming with jobs > 1.
  plan_.sets.push_back("train.device=cpu");
  EXPECT_TRUE(throws_error_containing([&] { validate_plan(plan_); }, "--devices gives each run its train.device"));
  plan_.sets.pop_back();
  plan_.stream_train_output = true;
  EXPECT_TRUE(throws_error_containing([&] { validate_plan(plan_); }, "--show-train-output needs --jobs 1"));
  plan_.stream_train_output = false;
  plan_.jobs = 0;
  EXPECT_TRUE(throws_error_containing([&] { validate_plan(plan_); }, "--jobs must be >= 1"));
}

TEST_F(AblationResume, AFailedRunDoesNotStopTheOthersRunningBesideIt) {
  plan_.jobs = 2;
  fs::create_directories(plan_.out_dir);
  write_file(plan_.out_dir / ("fail_" + runs_[0].name), "exit\n");
  std::ostringstream progress;
  const auto outcomes = run_ablation(plan_, progress);
  for (size_t i = 0; i < 6; ++i) EXPECT_EQ(outcomes[i].status, i == 0 ? RunStatus::kFailed : RunStatus::kDone) << i;
  // The failure is reported with the last lines of its train.log; it is a crash, not a divergence.
  EXPECT_NE(progress.str().find("[1/6] z_loss_weight=0 seed=0 FAILED"), std::string::npos) << progress.str();
  EXPECT_NE(progress.str().find("stub train: boom"), std::string::npos) << progress.str();
  EXPECT_TRUE(fs::exists(dir(0) / "ablate.failed"));
  EXPECT_FALSE(fs::exists(dir(0) / "ablate.diverged"));
}

// Processes whose command line mentions `text` (the orphans a killed ablate could leave).
std::vector<pid_t> processes_mentioning(const std::string& text) {
  std::vector<pid_t> found;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string cmdline = read_file(entry.path() / "cmdline");
    std::replace(cmdline.begin(), cmdline.end(), '\0', ' ');
    const pid_t pid = static_cast<pid_t>(std::stol(name));
    if (pid != getpid() && cmdline.find(text) != std::string::npos) found.push_back(pid);
  }
  return found;
}

// Waits up to `seconds` for `done` to hold; returns whether it did.
template <class F>
bool wait_until(F&& done, double seconds) {
  for (int i = 0; i < static_cast<int>(seconds * 100); ++i) {
    if (done()) return true;
    usleep(10000);
  }
  return done();
}

class AblateProcess : public AblateCli {
 protected:
  pid_t start(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {ablate_.string(), "--config", config_.string(), "--train-bin", stub_.string(),
                                     "--no-plots", "--out", (tmp_.path() / "abl").string()};
    argv.insert(argv.end(), args.begin(), args.end());
    return spawn_program(argv, tmp_.path() / "out.txt");
  }
};

// SIGTERM to ablate: it stops its trains, waits for them and exits 128 + 15; no train is left.
// kill -9 of ablate: its trains die with it (PR_SET_PDEATHSIG), none is orphaned.
TEST_F(AblateProcess, ASignalToAblateEndsItsTrains) {
  const fs::path abl = tmp_.path() / "abl";
  for (const char* run : {"z_loss_weight=0_seed=0", "z_loss_weight=1e-3_seed=0"}) {
    write_file(abl / (std::string("fail_") + run), "sleep\n");
  }
  for (const int sig : {SIGTERM, SIGKILL}) {
    fs::remove_all(abl / "z_loss_weight=0_seed=0");
    fs::remove_all(abl / "z_loss_weight=1e-3_seed=0");
    const pid_t pid = start({"--jobs", "2", "--sweep", "loss.z_loss_weight=0,1e-3"});
    ASSERT_TRUE(wait_until([&] { return processes_mentioning(abl.string() + "/z_loss_weight=").size() >= 2; }, 20))
        << output();
    ASSERT_TRUE(wait_until([&] { return fs::exists(abl / "z_loss_weight=1e-3_seed=0" / "metrics.jsonl"); }, 20));
    kill(pid, sig);
    EXPECT_EQ(wait_program(pid), 128 + sig) << output();
    EXPECT_TRUE(wait_until([&] { return processes_mentioning(abl.string() + "/z_loss_weight=").empty(); }, 10))
        << "signal " << sig << ": trains left running";
    if (sig == SIGTERM) EXPECT_NE(output().find("stopped by signal 15"), std::string::npos) << output();
    // Neither run is marked failed: a rerun resumes them.
    EXPECT_FALSE(fs::exists(abl / "z_loss_weight=0_seed=0" / "ablate.failed"));
  }
}

TEST_F(AblateCli, DryRunShowsThePlacement) {
  ASSERT_EQ(run_shell(command("--out abl --dry-run --jobs 4 --devices 0,1 --sweep loss.z_loss_weight=0,1e-3")), 0)
      << output();
  EXPECT_NE(output().find("4 at a time on cuda:0,1 round-robin"), std::string::npos) << output();
  EXPECT_EQ(run_shell(command("--out abl --jobs 2 --devices 0,0 --sweep loss.z_loss_weight=0")), 2) << output();
  EXPECT_NE(output().find("listed twice"), std::string::npos) << output();
  EXPECT_EQ(run_shell(command("--out abl --jobs 0 --sweep loss.z_loss_weight=0")), 2) << output();
  EXPECT_EQ(run_shell(command("--out abl --devices 0 --set train.device=cpu --sweep loss.z_loss_weight=0")), 2)
      << output();
}

// ---- learning-rate sensitivity, by hand ----------------------------------------------------------

// A run's metrics: step-0 evaluation `init` (none when NaN), steps 1..3 ending at `last_loss`,
// and an evaluation `final_val` at step 3 (none when NaN; JSON null when infinite).
std::string lr_metrics(double init, double last_loss, double final_val) {
  std::string text;
  auto number = [](double v) { return std::isfinite(v) ? std::to_string(v) : std::string("null"); };
  if (!std::isnan(init)) text += R"({"step":0,"val_loss":)" + number(init) + "}\n";
  text += step_line(1, 6.0) + step_line(2, 5.0) + step_line(3, last_loss);
  if (!std::isnan(final_val)) text += R"({"step":3,"val_loss":)" + number(final_val) + "}\n";
  return text;
}

TEST(LrSensitivity, MatchesAHandComputation) {
  TempDir tmp;
  AblationPlan plan;
  plan.config = tmp.path() / "cfg.yaml";
  write_file(plan.config, "model: {vocab_size: 64}\ndata: {train: [t.bin], val: [v.bin]}\n");
  plan.sweeps = {parse_sweep("loss.z_loss_weight=0,1e-3"), parse_sweep("optim.lr=1e-2,1e-3,1e-1")};
  plan.seeds = 2;
  plan.out_dir = tmp.path() / "abl";
  const auto runs = expand_grid(plan.sweeps, plan.seeds);
  ASSERT_EQ(runs.size(), 12u);
  const double inf = std::numeric_limits<double>::infinity();
  const double ln64 = std::log(64.0);
  struct Case {
    const char* marker;  // "done", "diverged", "failed"
    double init, last_loss, final_val;
  };
  // Grid order: z (slow), lr as swept 1e-2, 1e-3, 1e-1, seed (fast).
  const Case cases[12] = {
      // z=0, lr=1e-2: 3.0 and 3.2 -> L = 3.1
      {"done", 4.0, 3.5, 3.0}, {"done", 4.2, 3.5, 3.2},
      // z=0, lr=1e-3: 3.6 and, without evaluations, the last training loss 3.8 -> L = 3.7
      {"done", 4.0, 3.5, 3.6}, {"done", kNaN, 3.8, kNaN},
      // z=0, lr=1e-1: stopped non-finite (counts as its init 4.1); final 4.5 > init 4.3 -> 4.3.
      {"diverged", 4.1, 9.0, kNaN}, {"done", 4.3, 4.0, 4.5},
      // z=1e-3, lr=1e-2: 2.9 and a crash (left out) -> L = 2.9
      {"done", 4.0, 3.0, 2.9}, {"failed", 4.0, 3.0, kNaN},
      // z=1e-3, lr=1e-3: non-finite final val_loss (counts as init 4.0) and 3.4 -> L = 3.7
      {"done", 4.0, 3.0, inf}, {"done", 4.0, 3.0, 3.4},
      // z=1e-3, lr=1e-1: both crashed -> no L, no sensitivity
      {"failed", 4.0, 3.0, kNaN}, {"failed", 4.0, 3.0, kNaN},
  };
  for (size_t i = 0; i < runs.size(); ++i) {
    const fs::path dir = plan.out_dir / runs[i].name;
    write_file(dir / "metrics.jsonl", lr_metrics(cases[i].init, cases[i].last_loss, cases[i].final_val));
    write_file(dir / (std::string("ablate.") + cases[i].marker), "stopped on a non-finite loss at step 3\n");
  }
  const auto rows = collect_summary(plan, {});
  // Statuses: the marker, or diverged by the loss (final above init, non-finite final).
  const std::vector<std::string> statuses = {"done", "done", "done",     "done",     "diverged", "diverged",
                                             "done", "failed", "diverged", "done",  "failed",   "failed"};
  for (size_t i = 0; i < rows.size(); ++i) EXPECT_EQ(rows[i].status, statuses[i]) << i;
  EXPECT_DOUBLE_EQ(rows[3].init_loss, ln64);  // no step-0 evaluation: ln(vocab_size)
  EXPECT_EQ(rows[4].diverged, "stopped on a non-finite loss at step 3");
  EXPECT_EQ(rows[5].diverged, "final loss above the loss at initialisation");
  EXPECT_EQ(rows[8].diverged, "non-finite final loss");
  EXPECT_EQ(divergence_reason(false, 3.0, 4.0), "");

  const auto settings = lr_sensitivity(plan.sweeps, rows);
  ASSERT_TRUE(settings.has_value());
  ASSERT_EQ(settings->size(), 2u);
  const LrSetting& z0 = (*settings)[0];
  EXPECT_EQ(z0.label, "z_loss_weight=0");
  ASSERT_EQ(z0.points.size(), 3u);
  EXPECT_EQ(z0.points[0].lr, "1e-3");  // ascending
  EXPECT_EQ(z0.points[1].lr, "1e-2");
  EXPECT_EQ(z0.points[2].lr, "1e-1");
  EXPECT_NEAR(z0.points[0].loss, 3.7, 1e-12);
  EXPECT_NEAR(z0.points[1].loss, 3.1, 1e-12);
  EXPECT_NEAR(z0.points[2].loss, (4.1 + 4.3) / 2, 1e-12);
  EXPECT_EQ(z0.points[2].diverged, 2);
  EXPECT_EQ(z0.best_lr, "1e-2");
  EXPECT_NEAR(z0.best_loss, 3.1, 1e-12);
  const double z0_init = (4.0 + 4.2 + 4.0 + ln64 + 4.1 + 4.3) / 6;
  EXPECT_NEAR(z0.init_loss, z0_init, 1e-12);
  // mean over lr of min(L, init) - best: (3.7 - 3.1 + 0 + min(4.2, init) - 3.1) / 3
  EXPECT_NEAR(z0.sensitivity, (3.7 - 3.1 + 0.0 + std::min(4.2, z0_init) - 3.1) / 3, 1e-12);
  EXPECT_EQ(z0.diverged, 2);
  EXPECT_EQ(z0.crashed, 0);

  const LrSetting& z1 = (*settings)[1];
  EXPECT_NEAR(z1.points[0].loss, (4.0 + 3.4) / 2, 1e-12);
  EXPECT_NEAR(z1.points[1].loss, 2.9, 1e-12);
  EXPECT_TRUE(std::isnan(z1.points[2].loss));
  EXPECT_EQ(z1.best_lr, "1e-2");
  EXPECT_TRUE(std::isnan(z1.sensitivity));  // lr=1e-1 has no finished run
  EXPECT_EQ(z1.crashed, 3);
  EXPECT_EQ(z1.diverged, 1);

  const std::string md = summary_markdown(plan.sweeps, rows, {});
  EXPECT_NE(md.find("## Learning-rate sensitivity"), std::string::npos) << md;
  EXPECT_NE(md.find("| z_loss_weight | lr=1e-3 | lr=1e-2 | lr=1e-1 | best lr | loss at init | diverged | crashed | "
                    "LR sensitivity |"),
            std::string::npos)
      << md;
  char expected_row[256];
  std::snprintf(expected_row, sizeof expected_row, "| 0 | 3.7000 | 3.1000 | 4.2000 (2/2 diverged) | 1e-2 | %.4f | 2/6 | 0 | %.4f |",
                z0_init, z0.sensitivity);
  EXPECT_NE(md.find(expected_row), std::string::npos) << expected_row << "\n" << md;
  EXPECT_NE(md.find("| 1e-3 | 3.7000 (1/2 diverged) | 2.9000 | - | 1e-2 | 4.0000 | 1/6 | 3 | - |"), std::string::npos)
      << md;

  // Without an lr sweep of two values there is no section.
  EXPECT_FALSE(lr_sensitivity({parse_sweep("optim.lr=1e-3")}, rows).has_value());
  EXPECT_FALSE(lr_sensitivity({parse_sweep("loss.z_loss_weight=0,1e-3")}, rows).has_value());

  // The plot script draws final loss against learning rate from lr_sensitivity.json.
  write_lr_sensitivity_data(plan, rows);
  ASSERT_TRUE(fs::exists(plan.out_dir / "lr_sensitivity.json"));
  if (run_shell("/usr/bin/python3 -c 'import matplotlib' > /dev/null 2>&1") != 0) {
    GTEST_SKIP() << "/usr/bin/python3 with matplotlib is not installed";
  }
  const fs::path script = fs::path(ZTRAIN_SOURCE_DIR) / "tools" / "plot_ablation.py";
  ASSERT_EQ(run_shell("/usr/bin/python3 " + script.string() + " " + plan.out_dir.string() +
                      " --only final_loss_vs_lr > " + (tmp.path() / "plot.txt").string() + " 2>&1"),
            0)
      << read_file(tmp.path() / "plot.txt");
  const fs::path png = plan.out_dir / "plots" / "final_loss_vs_lr.png";
  ASSERT_TRUE(fs::exists(png)) << read_file(tmp.path() / "plot.txt");
  EXPECT_GT(fs::file_size(png), 5000u);
  EXPECT_EQ(read_file(png).substr(0, 8), "\x89PNG\r\n\x1a\n");
  EXPECT_FALSE(fs::exists(plan.out_dir / "plots" / "loss_vs_step.png"));  // --only
  write_summary(plan, rows, {});
  EXPECT_NE(read_file(plan.out_dir / "summary.md").find("](plots/final_loss_vs_lr.png)"), std::string::npos);
}

// ---- the real train program on a tiny model ------------------------------------------------------

// A repeating 16-token pattern over ids < 64.
std::vector<int32_t> pattern_tokens(int64_t n) {
  std::vector<int32_t> ids;
  for (int64_t i = 0; i < n; ++i) ids.push_back(static_cast<int32_t>((3 + 5 * (i % 16) + i / 97) % 64));
  return ids;
}

class RealTrain : public ::testing::Test {
 protected:
  void SetUp() override {
    ablate_ = fs::path(ZTRAIN_BIN_DIR) / "ablate";
    train_ = fs::path(ZTRAIN_BIN_DIR) / "train";
    if (!fs::exists(ablate_) || !fs::exists(train_)) GTEST_SKIP() << "ablate and train are not built";
    data::write_token_shard((tmp_.path() / "train_000.bin").string(), pattern_tokens(6000));
    data::write_token_shard((tmp_.path() / "val_000.bin").string(), pattern_tokens(800));
    config_ = tmp_.path() / "tiny.yaml";
    write_file(config_,
               "model: {n_layer: 1, n_head: 2, d_model: 32, seq_len: 16, vocab_size: 64, vocab_multiple: 128}\n"
               "loss: {z_loss_weight: 1.0e-4}\n"
               "optim: {lr: 1.0e-2, min_lr: 1.0e-3, weight_decay: 0.1, grad_clip: 1.0}\n"
               "schedule: {warmup_steps: 3}\n"
               "data: {train: [" + (tmp_.path() / "train_000.bin").string() + "], val: [" +
                   (tmp_.path() / "val_000.bin").string() + "]}\n"
               "train: {batch_size: 4, max_steps: 24, seed: 7, device: cpu}\n"
               "log: {log_every: 1, eval_every: 8, eval_batches: 2, checkpoint_every: 4}\n");
  }
  std::vector<std::string> ablate_args(const std::string& out, const std::vector<std::string>& extra) const {
    std::vector<std::string> argv = {ablate_.string(), "--config", config_.string(), "--train-bin",
                                     train_.string(), "--no-plots", "--out", (tmp_.path() / out).string()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return argv;
  }
  int ablate(const std::string& out, const std::vector<std::string>& extra) const {
    return run_program(ablate_args(out, extra), tmp_.path() / (out + ".txt"));
  }
  std::string output(const std::string& out) const { return read_file(tmp_.path() / (out + ".txt")); }

  TempDir tmp_;
  fs::path ablate_, train_, config_;
};

// Every logged number of two runs but the timings.
::testing::AssertionResult same_metrics(const fs::path& a, const fs::path& b) {
  const RunMetrics x = read_metrics(a), y = read_metrics(b);
  if (x.steps.size() != y.steps.size() || x.evals.size() != y.evals.size() || x.steps.empty()) {
    return ::testing::AssertionFailure() << a << " and " << b << " differ in their numbers of records";
  }
  for (size_t i = 0; i < x.steps.size(); ++i) {
    const StepRecord &p = x.steps[i], &q = y.steps[i];
    const double pv[] = {p.tokens, p.lr, p.loss, p.ce_loss, p.z_loss, p.lse_mean, p.lse_max, p.grad_norm};
    const double qv[] = {q.tokens, q.lr, q.loss, q.ce_loss, q.z_loss, q.lse_mean, q.lse_max, q.grad_norm};
    if (p.step != q.step || !std::equal(std::begin(pv), std::end(pv), std::begin(qv))) {
      return ::testing::AssertionFailure() << a << " and " << b << " differ at step " << p.step << ": loss "
                                           << p.loss << " vs " << q.loss;
    }
  }
  for (size_t i = 0; i < x.evals.size(); ++i) {
    if (x.evals[i].step != y.evals[i].step || x.evals[i].val_loss != y.evals[i].val_loss) {
      return ::testing::AssertionFailure() << a << " and " << b << " differ in val_loss at step " << x.evals[i].step;
    }
  }
  return ::testing::AssertionSuccess();
}

const std::vector<std::string> kFourRuns = {"--sweep", "optim.lr=1e-2,3e-3", "--seeds", "2"};

// Two runs at a time give each run exactly the numbers it gets alone (train run by hand with
// the same settings and the thread count ablate gives it).
TEST_F(RealTrain, ParallelRunsMatchTheSameRunsAlone) {
  std::vector<std::string> args = kFourRuns;
  args.insert(args.end(), {"--jobs", "2"});
  ASSERT_EQ(ablate("par", args), 0) << output("par");
  const int64_t threads = threads_per_run(available_cores(), 2);
  AblationPlan plan;
  plan.config = config_;
  plan.sweeps = {parse_sweep("optim.lr=1e-2,3e-3")};
  plan.seeds = 2;
  plan.out_dir = tmp_.path() / "par";
  plan.train_bin = train_;
  for (const RunSpec& run : expand_grid(plan.sweeps, plan.seeds)) {
    const fs::path dir = plan.out_dir / run.name;
    ASSERT_TRUE(fs::exists(dir / "ablate.done")) << run.name << output("par");
    EXPECT_NE(read_file(dir / "train.log").find("--set train.threads=" + std::to_string(threads)), std::string::npos)
        << read_file(dir / "train.log");
    std::vector<std::string> solo = train_command(plan, run, Attempt::kFresh);
    solo.back() = "log.out_dir=" + (tmp_.path() / "solo" / run.name).string();
    solo.insert(solo.end(), {"--set", "train.threads=" + std::to_string(threads)});
    ASSERT_EQ(run_program(solo, tmp_.path() / "solo.txt"), 0) << read_file(tmp_.path() / "solo.txt");
    EXPECT_TRUE(same_metrics(dir / "metrics.jsonl", tmp_.path() / "solo" / run.name / "metrics.jsonl")) << run.name;
  }
  EXPECT_NE(output("par").find("4/4 done, 0 running, 0 left"), std::string::npos) << output("par");
  // The first two ran side by side: the second started before the first ended.
  const size_t second_started = output("par").find("[2/4] lr=1e-2 seed=1 ...");
  const size_t first_ended = output("par").find("[1/4] lr=1e-2 seed=0 done");
  ASSERT_NE(second_started, std::string::npos) << output("par");
  ASSERT_NE(first_ended, std::string::npos) << output("par");
  EXPECT_LT(second_started, first_ended) << output("par");
  EXPECT_NE(read_file(plan.out_dir / "summary.md").find("## Learning-rate sensitivity"), std::string::npos);
}

// kill -9 of ablate mid-sweep kills its trains too; rerunning the command resumes the
// interrupted runs from their checkpoints and ends with the numbers of an uninterrupted sweep.
TEST_F(RealTrain, KillNineMidSweepThenRerunResumes) {
  std::vector<std::string> args = kFourRuns;
  args.insert(args.end(), {"--jobs", "2", "--set", "train.max_steps=120", "--set", "log.eval_every=40"});
  ASSERT_EQ(ablate("whole", args), 0) << output("whole");

  const fs::path abl = tmp_.path() / "killed";
  const pid_t pid = spawn_program(ablate_args("killed", args), tmp_.path() / "killed.txt");
  // Once some run has a checkpoint past its first, and before any has finished.
  const bool mid = wait_until(
      [&] {
        if (!fs::exists(abl)) return false;
        for (const auto& entry : fs::directory_iterator(abl)) {
          if (fs::exists(entry.path() / "checkpoints" / "step_00000008.ckpt")) return true;
        }
        return false;
      },
      60);
  kill(pid, SIGKILL);
  EXPECT_EQ(wait_program(pid), 128 + SIGKILL);
  ASSERT_TRUE(mid) << output("killed");
  EXPECT_TRUE(wait_until([&] { return processes_mentioning(abl.string() + "/").empty(); }, 10))
      << "trains outlived ablate";
  size_t unfinished = 0;
  for (const auto& entry : fs::directory_iterator(abl)) {
    if (entry.is_directory() && !fs::exists(entry.path() / "ablate.done")) ++unfinished;
  }
  ASSERT_GE(unfinished, 1u);

  ASSERT_EQ(ablate("killed", args), 0) << output("killed");
  EXPECT_NE(output("killed").find("(resuming from its newest checkpoint)"), std::string::npos) << output("killed");
  for (const RunSpec& run : expand_grid({parse_sweep("optim.lr=1e-2,3e-3")}, 2)) {
    EXPECT_TRUE(same_metrics(abl / run.name / "metrics.jsonl", tmp_.path() / "whole" / run.name / "metrics.jsonl"))
        << run.name;
  }
}

// A learning rate of 1e3 without clipping diverges: the run stops on a non-finite loss, and
// ablate marks it diverged (not failed), does not rerun it, and exits 0.
TEST_F(RealTrain, ADivergingRunIsDivergedNotCrashed) {
  const std::vector<std::string> args = {"--sweep",        "optim.lr=1e-2,1e3", "--set", "optim.grad_clip=0",
                                         "--set",          "train.on_nonfinite=stop", "--set",
                                         "train.max_steps=16", "--set", "schedule.warmup_steps=0",
                                         "--set",          "train.threads=1"};
  ASSERT_EQ(ablate("div", args), 0) << output("div");
  const fs::path bad = tmp_.path() / "div" / "lr=1e3_seed=0";
  ASSERT_TRUE(fs::exists(bad / "ablate.diverged")) << output("div") << read_file(bad / "train.log");
  EXPECT_FALSE(fs::exists(bad / "ablate.failed"));
  EXPECT_NE(output("div").find("[2/2] lr=1e3 seed=0 DIVERGED"), std::string::npos) << output("div");
  EXPECT_NE(read_file(bad / "ablate.diverged").find("non-finite"), std::string::npos);
  const std::string md = read_file(tmp_.path() / "div" / "summary.md");
  EXPECT_NE(md.find("| lr=1e3_seed=0 | 1e3 | 0 | diverged |"), std::string::npos) << md;
  EXPECT_NE(md.find("| all | "), std::string::npos) << md;
  EXPECT_NE(md.find("(1/1 diverged) | 1e-2 |"), std::string::npos) << md;
  // Its instability signals (logged every step here) show the blow-up: the max |logit| grows
  // from its first value to 10x that or beyond the finite before the run stops; the stable
  // run's stays within 10x.
  auto absmax = [&](const std::string& run) {
    std::vector<double> out;
    std::ifstream in(tmp_.path() / "div" / run / "metrics.jsonl");
    for (std::string line; std::getline(in, line);) {
      const auto j = nlohmann::json::parse(line);
      if (j.contains("logits_absmax"))
        out.push_back(j["logits_absmax"].is_number() ? j["logits_absmax"].get<double>() : INFINITY);
    }
    return out;
  };
  const std::vector<double> blown = absmax("lr=1e3_seed=0"), calm = absmax("lr=1e-2_seed=0");
  ASSERT_GE(blown.size(), 2u) << read_file(bad / "metrics.jsonl");
  ASSERT_EQ(calm.size(), 16u);
  EXPECT_TRUE(std::isfinite(blown.front()));
  EXPECT_GT(*std::max_element(blown.begin() + 1, blown.end()), 10 * blown.front()) << read_file(bad / "metrics.jsonl");
  EXPECT_LT(*std::max_element(calm.begin(), calm.end()), 10 * calm.front());
  // The summary's figure of them (when matplotlib is there).
  if (run_shell("/usr/bin/python3 -c 'import matplotlib' > /dev/null 2>&1") == 0) {
    const fs::path script = fs::path(ZTRAIN_SOURCE_DIR) / "tools" / "plot_ablation.py";
    ASSERT_EQ(run_shell("/usr/bin/python3 " + script.string() + " " + (tmp_.path() / "div").string() +
                        " --only signals_diverged > " + (tmp_.path() / "plot.txt").string() + " 2>&1"),
              0)
        << read_file(tmp_.path() / "plot.txt");
    const fs::path png = tmp_.path() / "div" / "plots" / "signals_diverged.png";
    ASSERT_TRUE(fs::exists(png)) << read_file(tmp_.path() / "plot.txt");
    EXPECT_EQ(read_file(png).substr(0, 8), "\x89PNG\r\n\x1a\n");
  }
  // A rerun leaves it alone.
  ASSERT_EQ(ablate("div", args), 0) << output("div");
  EXPECT_NE(output("div").find("[2/2] lr=1e3 seed=0 already finished (diverged)"), std::string::npos) << output("div");
  EXPECT_NE(read_file(tmp_.path() / "div" / "summary.md").find("](plots/signals_diverged.png)"), std::string::npos);
}

}  // namespace
}  // namespace zt::ablation
