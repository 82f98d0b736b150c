// The training loop end to end on a synthetic token stream: the loss falls, a resumed run
// reproduces the uninterrupted one bit for bit, non-finite losses stop (or skip), and bad
// data files or run directories give clear errors.
#include "trainers/trainer.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "framework/device.h"
#include "framework/error.h"
#include "trainers/checkpoint.h"
#include "trainers/data/token_shard.h"
#include "trainers/metrics.h"
#include "trainers/run_dir.h"
#include "tests/support/check.h"

namespace zt {
namespace {

namespace fs = std::filesystem;

fs::path fresh_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("ztrain_trainer_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

// A repeating 16-token pattern (ids 3, 7, 11, ... < 64): a model that learns it predicts
// every token but each window's first.
std::vector<int32_t> pattern_stream(int64_t n) {
  std::vector<int32_t> ids;
  for (int64_t i = 0; i < n; ++i) ids.push_back(static_cast<int32_t>((3 + 4 * (i % 16)) % 64));
  return ids;
}

struct TestRun {
  fs::path dir;
  Config cfg;
};

TestRun make_run(const std::string& name, const std::vector<std::string>& extra = {}) {
  TestRun r;
  r.dir = fresh_dir(name);
  data::write_token_shard((r.dir / "train_000.bin").string(), pattern_stream(4000));
  data::write_token_shard((r.dir / "val_000.bin").string(), pattern_stream(600));
  const std::string yaml =
      "model: {n_layer: 2, n_head: 2, d_model: 32, seq_len: 16, vocab_size: 64, vocab_multiple: 128}\n"
      "loss: {z_loss_weight: 1.0e-4}\n"
      "optim: {lr: 1.0e-2, min_lr: 1.0e-3, weight_decay: 0.1, grad_clip: 1.0}\n"
      "schedule: {warmup_steps: 5}\n"
      "train: {batch_size: 4, max_steps: 40, seed: 7, device: cpu}\n"
      "log: {log_every: 10, eval_every: 10, eval_batches: 2, checkpoint_every: 0}\n";
  std::vector<std::string> sets = {"data.train=" + (r.dir / "train_*.bin").string(),
                                   "data.val=" + (r.dir / "val_000.bin").string(),
                                   "log.out_dir=" + (r.dir / "run").string()};
  sets.insert(sets.end(), extra.begin(), extra.end());
  r.cfg = parse_config(yaml, name + ".yaml", sets);
  return r;
}

TrainOptions quiet() {
  TrainOptions o;
  o.out = std::fopen("/dev/null", "w");
  o.terminal = 0;
  return o;
}

std::vector<nlohmann::json> read_metrics(const fs::path& run_dir) {
  std::ifstream in(run_dir / "metrics.jsonl");
  std::vector<nlohmann::json> out;
  std::string line;
  while (std::getline(in, line)) out.push_back(nlohmann::json::parse(line));
  return out;
}

std::vector<nlohmann::json> without_timing(std::vector<nlohmann::json> records) {
  for (auto& r : records)
    for (auto it = r.begin(); it != r.end();) it = is_timing_field(it.key()) ? r.erase(it) : std::next(it);
  return records;
}

using ::zt::test::error_of;

TEST(Trainer, LossFallsOnARepeatingStream) {
  TestRun r = make_run("falls");
  const TrainSummary s = train(r.cfg, quiet());
  EXPECT_EQ(s.last_step, 40);
  const auto m = read_metrics(r.cfg.log.out_dir);
  std::vector<nlohmann::json> steps, evals;
  for (const auto& j : m) (j.contains("val_loss") ? evals : steps).push_back(j);
  ASSERT_EQ(steps.size(), 40u);
  ASSERT_EQ(evals.size(), 5u);  // before step 1, then every 10 steps
  EXPECT_EQ(evals.front()["step"], 0);
  EXPECT_NEAR(steps.front()["ce_loss"].get<double>(), std::log(64.0), 0.3);  // starts near uniform
  EXPECT_LT(steps.back()["loss"].get<double>(), 0.5);
  EXPECT_LT(evals.back()["val_loss"].get<double>(), 0.5);
  EXPECT_LT(s.last_val_loss, s.first_val_loss - 3.0);
  // Field contents of one step record.
  const auto& j = steps[9];
  EXPECT_EQ(j["step"], 10);
  EXPECT_EQ(j["tokens"], 10 * 4 * 16);
  EXPECT_DOUBLE_EQ(j["z_loss_weight"].get<double>(), 1e-4);
  EXPECT_NEAR(j["loss"].get<double>(), j["ce_loss"].get<double>() + j["z_loss"].get<double>(), 1e-12);
  EXPECT_NEAR(j["z_loss"].get<double>(), 1e-4 * j["lse_mean"].get<double>() * j["lse_mean"].get<double>(),
              1e-4 * j["lse_mean"].get<double>());  // z * mean(lse^2) ~ z * mean(lse)^2
  EXPECT_GE(j["lse_max"].get<double>(), j["lse_mean"].get<double>());
  EXPECT_GT(j["grad_norm"].get<double>(), 0);
  EXPECT_GT(j["tokens_per_s"].get<double>(), 0);
  EXPECT_FALSE(j.contains("mfu"));  // CPU run
  EXPECT_TRUE(fs::exists(fs::path(r.cfg.log.out_dir) / "config.yaml"));
  EXPECT_TRUE(fs::exists(checkpoint_path(r.cfg.log.out_dir, 40)));  // always one at the end
  fs::remove_all(r.dir);
}

TEST(Trainer, Bf16ComputeTrains) {
  TestRun r = make_run("bf16", {"train.dtype=bf16", "train.max_steps=20", "log.eval_every=0"});
  const TrainSummary s = train(r.cfg, quiet());
  EXPECT_LT(s.last_val_loss, s.first_val_loss - 1.0);
  // Parameters and optimizer state stay f32 in the checkpoint.
  const Checkpoint c = read_checkpoint(checkpoint_path(r.cfg.log.out_dir, 20));
  EXPECT_EQ(c.tensors.at("model/wte.weight").dtype(), DType::f32);
  fs::remove_all(r.dir);
}

TEST(Trainer, ResumeReproducesTheUninterruptedRunBitForBit) {
  // Dropout, gradient accumulation, warmups of lr and z-loss: every piece of state matters.
  const std::vector<std::string> extra = {"model.dropout=0.1", "train.grad_accum=2", "train.max_steps=9",
                                          "loss.z_loss_schedule=linear_warmup", "loss.z_loss_start=0",
                                          "loss.z_loss_warmup_steps=4", "log.eval_every=2",
                                          "log.checkpoint_every=3", "loss.label_smoothing=0.05"};
  TestRun a = make_run("resume_a", extra);
  TestRun b = make_run("resume_b", extra);
  train(a.cfg, quiet());

  TrainOptions interrupted = quiet();
  interrupted.stop_after = 5;  // dies after step 5; the newest checkpoint is step 3
  EXPECT_EQ(train(b.cfg, interrupted).last_step, 5);
  EXPECT_EQ(read_metrics(b.cfg.log.out_dir).back()["step"], 5);
  TrainOptions resume = quiet();
  resume.resume = true;
  const TrainSummary s = train(b.cfg, resume);
  EXPECT_EQ(s.first_step, 3);
  EXPECT_EQ(s.last_step, 9);

  const auto ma = without_timing(read_metrics(a.cfg.log.out_dir));
  const auto mb = without_timing(read_metrics(b.cfg.log.out_dir));
  ASSERT_EQ(ma.size(), mb.size());
  for (size_t i = 0; i < ma.size(); ++i) EXPECT_EQ(ma[i].dump(), mb[i].dump()) << "record " << i;

  const Checkpoint ca = read_checkpoint(checkpoint_path(a.cfg.log.out_dir, 9));
  const Checkpoint cb = read_checkpoint(checkpoint_path(b.cfg.log.out_dir, 9));
  ASSERT_EQ(ca.tensors.size(), cb.tensors.size());
  for (const auto& [name, t] : ca.tensors) EXPECT_EQ(t.to_vector<float>(), cb.tensors.at(name).to_vector<float>()) << name;
  // keep_checkpoints: 2 -> steps 6 and 9 remain.
  EXPECT_FALSE(fs::exists(checkpoint_path(a.cfg.log.out_dir, 3)));
  EXPECT_TRUE(fs::exists(checkpoint_path(a.cfg.log.out_dir, 6)));
  fs::remove_all(a.dir);
  fs::remove_all(b.dir);
}

TEST(Trainer, NonFiniteLossStopsWithTheStep) {
  // lr 1e30 sends the weights to +-1e30 in one step; the next forward overflows.
  TestRun r = make_run("nonfinite", {"optim.lr=1e30", "optim.min_lr=0", "schedule.warmup_steps=0", "optim.grad_clip=0"});
  const std::string msg = error_of([&] { train(r.cfg, quiet()); });
  EXPECT_NE(msg.find("non-finite"), std::string::npos) << msg;
  EXPECT_NE(msg.find("at step 2"), std::string::npos) << msg;
  const auto m = read_metrics(r.cfg.log.out_dir);
  EXPECT_EQ(m.back()["step"], 2);  // the bad step is logged before stopping
  fs::remove_all(r.dir);
}

TEST(Trainer, NonFiniteLossSkipsWhenConfigured) {
  TestRun r = make_run("skip", {"optim.lr=1e30", "optim.min_lr=0", "schedule.warmup_steps=0", "optim.grad_clip=0",
                            "train.on_nonfinite=skip", "train.max_steps=4"});
  EXPECT_EQ(train(r.cfg, quiet()).last_step, 4);
  int skipped = 0;
  for (const auto& j : read_metrics(r.cfg.log.out_dir))
    if (j.contains("skipped")) {
      ++skipped;
      EXPECT_EQ(j["skipped"], true);
    }
  EXPECT_EQ(skipped, 3);  // steps 2, 3, 4
  fs::remove_all(r.dir);
}

TEST(Trainer, TruncatedOrForeignDataFilesAreClearErrors) {
  TestRun r = make_run("baddata");
  const std::string shard = (r.dir / "train_000.bin").string();
  fs::resize_file(shard, fs::file_size(shard) - 3);
  std::string msg = error_of([&] { train(r.cfg, quiet()); });
  EXPECT_NE(msg.find(shard), std::string::npos) << msg;
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(fs::path(r.cfg.log.out_dir) / "metrics.jsonl"));  // failed before writing anything

  std::ofstream(shard, std::ios::trunc) << std::string(5000, 'x');
  msg = error_of([&] { train(r.cfg, quiet()); });
  EXPECT_NE(msg.find("is not a token shard"), std::string::npos) << msg;

  TestRun v = make_run("bigvocab", {"model.vocab_size=32"});  // the stream holds ids up to 63
  msg = error_of([&] { train(v.cfg, quiet()); });
  EXPECT_NE(msg.find("token id 63"), std::string::npos) << msg;

  TestRun missing = make_run("missing", {"data.val=/nonexistent/val_*.bin"});
  msg = error_of([&] { train(missing.cfg, quiet()); });
  EXPECT_NE(msg.find("/nonexistent/val_*.bin"), std::string::npos) << msg;
  for (const TestRun* x : {&r, &v, &missing}) fs::remove_all(x->dir);
}

TEST(Trainer, RunDirectoryRules) {
  TestRun r = make_run("rundir", {"train.max_steps=2", "log.eval_every=0"});
  TrainOptions resume = quiet();
  resume.resume = true;
  EXPECT_NE(error_of([&] { train(r.cfg, resume); }).find("no checkpoint"), std::string::npos);
  train(r.cfg, quiet());
  const std::string msg = error_of([&] { train(r.cfg, quiet()); });
  EXPECT_NE(msg.find("already holds a run"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--resume"), std::string::npos) << msg;
  TrainOptions overwrite = quiet();
  overwrite.overwrite = true;
  EXPECT_EQ(train(r.cfg, overwrite).last_step, 2);
  EXPECT_EQ(read_metrics(r.cfg.log.out_dir).size(), 4u);  // 2 steps + evals at 0 and 2, nothing left over
  // Resuming a finished run does nothing more.
  EXPECT_EQ(train(r.cfg, resume).last_step, 2);
  fs::remove_all(r.dir);
}

TEST(Trainer, ASecondTrainerOnTheRunDirectoryIsRefused) {
  TestRun r = make_run("locked", {"train.max_steps=2", "log.eval_every=0"});
  {
    RunDirLock other(r.cfg.log.out_dir);  // as a trainer running in this directory holds it
    const std::string msg = error_of([&] { train(r.cfg, quiet()); });
    EXPECT_NE(msg.find("in use by another trainer"), std::string::npos) << msg;
    EXPECT_FALSE(fs::exists(fs::path(r.cfg.log.out_dir) / "metrics.jsonl"));  // nothing touched
  }
  EXPECT_EQ(train(r.cfg, quiet()).last_step, 2);
  fs::remove_all(r.dir);
}

TEST(Trainer, ResumeFallsBackFromADamagedCheckpointAndCleansTempFiles) {
  const std::vector<std::string> extra = {"train.max_steps=9", "log.eval_every=3", "log.checkpoint_every=3",
                                          "log.keep_checkpoints=0"};
  TestRun a = make_run("fallback_a", extra);
  TestRun b = make_run("fallback_b", extra);
  train(a.cfg, quiet());
  TrainOptions interrupted = quiet();
  interrupted.stop_after = 7;  // checkpoints at 3 and 6
  train(b.cfg, interrupted);
  const std::string six = checkpoint_path(b.cfg.log.out_dir, 6);
  {
    std::fstream f(six, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-100, std::ios::end);  // inside the last tensor's data
    f.put('\x7f');
  }
  const std::string tmp = six + ".tmp.123456";  // a write killed mid-way
  std::ofstream(tmp) << "partial";
  TrainOptions resume = quiet();
  resume.resume = true;
  const TrainSummary s = train(b.cfg, resume);
  EXPECT_EQ(s.first_step, 3);
  EXPECT_EQ(s.last_step, 9);
  EXPECT_FALSE(fs::exists(tmp));
  EXPECT_TRUE(fs::exists(six + ".damaged"));
  EXPECT_EQ(checkpoint_damage(six), "");  // written again by the resumed run
  const auto ma = without_timing(read_metrics(a.cfg.log.out_dir));
  const auto mb = without_timing(read_metrics(b.cfg.log.out_dir));
  ASSERT_EQ(ma.size(), mb.size());
  for (size_t i = 0; i < ma.size(); ++i) EXPECT_EQ(ma[i].dump(), mb[i].dump()) << "record " << i;
  fs::remove_all(a.dir);
  fs::remove_all(b.dir);
}

TEST(Trainer, ResumeWithADifferentModelIsRefusedAndPrunesNothing) {
  TestRun r = make_run("othermodel", {"train.max_steps=4", "log.eval_every=0", "log.checkpoint_every=2",
                                      "log.keep_checkpoints=1"});
  TrainOptions interrupted = quiet();
  interrupted.stop_after = 3;
  train(r.cfg, interrupted);
  const Config bigger = parse_config(config_to_yaml(r.cfg), "resolved", {"model.n_layer=3", "model.d_model=64"});
  TrainOptions resume = quiet();
  resume.resume = true;
  const std::string msg = error_of([&] { train(bigger, resume); });
  EXPECT_NE(msg.find("model.n_layer: 2 -> 3"), std::string::npos) << msg;
  EXPECT_NE(msg.find("model.d_model: 32 -> 64"), std::string::npos) << msg;
  EXPECT_TRUE(fs::exists(checkpoint_path(r.cfg.log.out_dir, 2)));
  EXPECT_EQ(read_metrics(r.cfg.log.out_dir).back()["step"], 3);  // metrics untouched too
  // Other keys may change.
  const Config tuned = parse_config(config_to_yaml(r.cfg), "resolved", {"optim.lr=5e-3"});
  EXPECT_EQ(train(tuned, resume).last_step, 4);
  fs::remove_all(r.dir);
}

TEST(Trainer, SkippingStopsPastTheLimitWithoutACheckpointOfTheBrokenModel) {
  // lr 1e30: step 1 sends the weights to +-1e30, every later step is non-finite.
  TestRun r = make_run("skiplimit", {"optim.lr=1e30", "optim.min_lr=0", "schedule.warmup_steps=0",
                                     "optim.grad_clip=0", "train.on_nonfinite=skip", "log.checkpoint_every=1",
                                     "log.keep_checkpoints=0", "log.eval_every=0"});
  const std::string msg = error_of([&] { train(r.cfg, quiet()); });
  EXPECT_NE(msg.find("at step 7"), std::string::npos) << msg;
  EXPECT_NE(msg.find("too many skipped updates: 6 in a row (train.max_skipped_consecutive = 5)"), std::string::npos)
      << msg;
  EXPECT_EQ(*newest_checkpoint(r.cfg.log.out_dir), checkpoint_path(r.cfg.log.out_dir, 1));  // none while skipping
  EXPECT_EQ(read_metrics(r.cfg.log.out_dir).back()["step"], 7);
  fs::remove_all(r.dir);
}

TEST(Trainer, AConfigThatCannotFitIsRefusedBeforeAllocating) {
  TestRun r = make_run("toobig", {"model.n_layer=1024", "model.d_model=65536", "model.n_head=1"});
  const auto t0 = std::chrono::steady_clock::now();
  const std::string msg = error_of([&] { train(r.cfg, quiet()); });
  EXPECT_NE(msg.find("training this config needs at least"), std::string::npos) << msg;
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 5.0);
  fs::remove_all(r.dir);
}

// Dropout has no CUDA kernel: train.device auto that resolves to a GPU is refused at start-up,
// naming both keys, before the model is built or anything is written.
TEST(Trainer, DropoutOnAGpuIsRefusedAtStartUp) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA GPU (train.device auto resolves to the CPU)";
  TestRun r = make_run("dropout_gpu", {"train.device=auto", "model.dropout=0.1"});
  const std::string msg = error_of([&] { train(r.cfg, quiet()); });
  EXPECT_NE(msg.find("--set model.dropout=0.1: model.dropout: 0.1 needs train.device: cpu"), std::string::npos) << msg;
  EXPECT_NE(msg.find("train.device is auto, resolved to cuda:"), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(fs::path(r.cfg.log.out_dir) / "metrics.jsonl"));
  fs::remove_all(r.dir);
}

// The command-line tool: errors print "train: <message>" and exit 1.
TEST(TrainTool, ConfigErrorsExitOneWithMessage) {
  const std::string bin = std::string(ZTRAIN_BIN_DIR) + "/train";
  if (!fs::exists(bin)) GTEST_SKIP() << "build the train tool first: " << bin;
  const fs::path dir = fresh_dir("tool");
  std::ofstream(dir / "bad.yaml") << "model:\n  n_layer: 2\nloss:\n  z_loss_weight: -1\n";
  const std::string cmd = bin + " --config " + (dir / "bad.yaml").string() + " 2> " + (dir / "err.txt").string();
  const int rc = std::system(cmd.c_str());
  ASSERT_TRUE(WIFEXITED(rc));
  EXPECT_EQ(WEXITSTATUS(rc), 1);
  std::ifstream in(dir / "err.txt");
  std::string err((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(err.rfind("train: ", 0), 0u) << err;
  EXPECT_NE(err.find("bad.yaml:4:18: loss.z_loss_weight: must be >= 0"), std::string::npos) << err;
  fs::remove_all(dir);
}

// Resuming a finished run says so instead of printing a loss of 0.
TEST(TrainTool, ResumingAFinishedRunSaysItIsFinished) {
  const std::string bin = std::string(ZTRAIN_BIN_DIR) + "/train";
  if (!fs::exists(bin)) GTEST_SKIP() << "build the train tool first: " << bin;
  TestRun r = make_run("finished_tool", {"train.max_steps=2", "log.eval_every=0"});
  std::ofstream(r.dir / "cfg.yaml") << config_to_yaml(r.cfg);
  const std::string base = bin + " --config " + (r.dir / "cfg.yaml").string();
  ASSERT_EQ(std::system((base + " > /dev/null").c_str()), 0);
  const int rc = std::system((base + " --resume > " + (r.dir / "out.txt").string()).c_str());
  ASSERT_TRUE(WIFEXITED(rc));
  EXPECT_EQ(WEXITSTATUS(rc), 0);
  std::ifstream in(r.dir / "out.txt");
  std::string out((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(out.find("already finished at step 2"), std::string::npos) << out;
  EXPECT_EQ(out.find("loss 0.0000"), std::string::npos) << out;
  fs::remove_all(r.dir);
}

// `train ... | head -1`: the trainer died of SIGPIPE at its first progress line after head
// exited. Now the progress stops and the run goes on: exit 0, every step in metrics.jsonl, the
// final checkpoint written.
TEST(TrainTool, AClosedStdoutStopsTheProgressNotTheRun) {
  const std::string bin = std::string(ZTRAIN_BIN_DIR) + "/train";
  if (!fs::exists(bin)) GTEST_SKIP() << "build the train tool first: " << bin;
  TestRun r = make_run("sigpipe", {"train.max_steps=6", "log.eval_every=0", "log.log_every=1",
                                   "log.checkpoint_every=3"});
  std::ofstream(r.dir / "cfg.yaml") << config_to_yaml(r.cfg);
  const std::string status = (r.dir / "status").string();
  const std::string cmd = "bash -c '" + bin + " --config " + (r.dir / "cfg.yaml").string() +
                          " 2>/dev/null | head -1 > /dev/null; echo ${PIPESTATUS[0]} > " + status + "'";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  std::ifstream in(status);
  int code = -1;
  in >> code;
  EXPECT_EQ(code, 0) << "train's exit status (141 = killed by SIGPIPE)";
  int64_t records = 0;
  std::ifstream metrics(fs::path(r.cfg.log.out_dir) / "metrics.jsonl");
  for (std::string line; std::getline(metrics, line);) records += line.find("\"loss\"") != std::string::npos;
  EXPECT_EQ(records, 6);
  EXPECT_TRUE(fs::exists(checkpoint_path(r.cfg.log.out_dir, 6)));
  fs::remove_all(r.dir);
}

}  // namespace
}  // namespace zt
