// Tensor and data parallelism end to end, through the real tools: build/bin/launch starts
// build/bin/train on N CPU ranks (Gloo), and every layout must train the same model as one
// rank: per-step loss, grad norm and val_loss within 1e-4 relative (f32; label smoothing 0.1,
// z-loss 1e-3, two micro-batches per step). Also: resume at TP=2 and at DP=2 is exact, a TP=2
// checkpoint resumes on one rank and a one-rank checkpoint on TP=2 x DP=2 (re-sharded), and
// the layout errors name their values.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "tests/support/multi_rank.h"
#include "trainers/checkpoint.h"
#include "trainers/data/token_shard.h"

namespace zt {
namespace {

namespace fs = std::filesystem;

struct Result {
  int status = -1;
  std::string output;
};

Result sh(const std::string& cmd) {
  Result r;
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  while (size_t n = std::fread(buf, 1, sizeof buf, p)) r.output.append(buf, n);
  const int rc = ::pclose(p);
  r.status = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  return r;
}

// Per step: loss, grad_norm; per evaluation: val_loss (keyed by -step - 1).
std::map<int64_t, std::pair<double, double>> read_metrics(const fs::path& file) {
  std::map<int64_t, std::pair<double, double>> out;
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    const int64_t step = j.at("step").get<int64_t>();
    if (j.contains("val_loss")) out[-step - 1] = {j.at("val_loss").get<double>(), 0.0};
    else out[step] = {j.at("loss").get<double>(), j.at("grad_norm").get<double>()};
  }
  return out;
}

// Per step, the instability signals (trainers/signals.h): every field of a log step's record
// that is one of them.
using Signals = std::map<int64_t, std::map<std::string, double>>;
Signals read_signals(const fs::path& file) {
  Signals out;
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    for (const auto& [key, value] : j.items())
      if (key.rfind("logits_", 0) == 0 || key.rfind("attn_score_max", 0) == 0 || key.rfind("grad_norm/", 0) == 0 ||
          key.rfind("update_ratio/", 0) == 0)
        out[j.at("step").get<int64_t>()][key] = value.is_number() ? value.get<double>() : NAN;
  }
  return out;
}

// Every record of a run's metrics.jsonl but the timings (elapsed, throughput, MFU).
std::vector<nlohmann::json> records_of(const fs::path& file) {
  std::vector<nlohmann::json> out;
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line)) {
    nlohmann::json j = nlohmann::json::parse(line);
    for (const char* timing : {"tokens_per_s", "elapsed_s", "mfu"}) j.erase(timing);
    out.push_back(j);
  }
  return out;
}

// The same fields at the same steps, each within `rel` relative (layouts and the fused head
// round differently, and the small early scores and update ratios move with the weights;
// logits_mean, about 0, is
// within rel of logits_std).
void expect_signals_close(const Signals& a, const Signals& b, double rel, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  ASSERT_FALSE(a.empty()) << what;
  for (const auto& [step, fields] : a) {
    ASSERT_EQ(b.at(step).size(), fields.size()) << what << " at " << step;
    ASSERT_TRUE(fields.count("logits_absmax") && fields.count("attn_score_max/layer_1") &&
                fields.count("grad_norm/attention") && fields.count("update_ratio/mlp"))
        << what << " at " << step;
    for (const auto& [key, v] : fields) {
      const double slack = key == "logits_mean" ? rel * fields.at("logits_std") : rel * std::fabs(v) + 1e-9;
      EXPECT_NEAR(b.at(step).at(key), v, slack) << what << ": " << key << " at " << step;
    }
  }
}

class ParallelTraining : public ::testing::Test {
 protected:
  void SetUp() override {
    ZT_REQUIRE_GLOO();
    bin_ = ZTRAIN_BIN_DIR;
    if (!fs::exists(bin_ + "/train") || !fs::exists(bin_ + "/launch")) GTEST_SKIP() << "build train and launch first";
    // A token stream with structure (a mix of a period-7 and a period-11 pattern), vocab 256.
    std::vector<int32_t> ids;
    for (int i = 0; i < 12000; ++i) ids.push_back((i * 37 % 7) * 31 + (i * 13 % 11) * 3 + (i % 5));
    data::write_token_shard((dir_.path() + "/train_000.bin"), ids);
    data::write_token_shard((dir_.path() + "/val_000.bin"), std::vector<int32_t>(ids.begin(), ids.begin() + 2000));
    std::ofstream(dir_.path() + "/c.yaml")
        << "model: {n_layer: 2, n_head: 4, d_model: 32, seq_len: 16, vocab_size: 250, vocab_multiple: 8}\n"
           "loss: {z_loss_weight: 1.0e-3, label_smoothing: 0.1}\n"
           "optim: {lr: 1.0e-2, min_lr: 1.0e-3, weight_decay: 0.1, grad_clip: 1.0}\n"
           "schedule: {warmup_steps: 2}\n"
           "train: {batch_size: 4, grad_accum: 2, max_steps: 6, seed: 5, device: cpu, dtype: f32, threads: 1}\n"
           "log: {log_every: 1, eval_every: 3, eval_batches: 2, checkpoint_every: 3}\n"
           "data: {train: " << dir_.path() << "/train_000.bin, val: " << dir_.path() << "/val_000.bin}\n";
  }

  // train (under launch when nproc > 1) with the run in dir/<name>; returns the tool's result.
  Result train(const std::string& name, int nproc, int tp, const std::string& extra = "") {
    std::string cmd = bin_ + "/train --config " + dir_.path() + "/c.yaml --set log.out_dir=" + dir_.path() + "/" +
                      name + " --set parallel.tensor_parallel_size=" + std::to_string(tp) + " " + extra;
    if (nproc > 1) cmd = bin_ + "/launch --nproc " + std::to_string(nproc) + " -- " + cmd;
    return sh(cmd);
  }
  std::map<int64_t, std::pair<double, double>> metrics(const std::string& name) {
    return read_metrics(dir_.path() + "/" + name + "/metrics.jsonl");
  }
  Signals signals(const std::string& name) { return read_signals(dir_.path() + "/" + name + "/metrics.jsonl"); }
  std::vector<nlohmann::json> records(const std::string& name) {
    return records_of(dir_.path() + "/" + name + "/metrics.jsonl");
  }

  // ZeRO's comparisons: <tag>_z0 at zero_stage 0, then <tag>_z1 and <tag>_z2, each said to hold
  // 1/D of the state, and `compare(stage, name, base, run)` after each (clipping acting on the
  // base: its first grad norm above 0.5).
  using StageCheck = std::function<void(int, const std::string&, const Result&, const Result&)>;
  void run_zero_stages(const std::string& tag, int nproc, int tp, const std::string& extra, const StageCheck& compare) {
    const Result base = train(tag + "_z0", nproc, tp, extra);
    ASSERT_EQ(base.status, 0) << tag << "\n" << base.output;
    const auto ref = metrics(tag + "_z0");
    ASSERT_EQ(ref.size(), 6u + 3u) << tag;
    EXPECT_GT(ref.at(1).second, 0.5) << "clipping should act";
    for (int stage : {1, 2}) {
      const std::string name = tag + "_z" + std::to_string(stage);
      const Result r = train(name, nproc, tp, extra + " --set parallel.zero_stage=" + std::to_string(stage));
      ASSERT_EQ(r.status, 0) << name << "\n" << r.output;
      EXPECT_NE(r.output.find("parallel.zero_stage " + std::to_string(stage) + ": this rank's shard, 1/" +
                              std::to_string(nproc / tp)),
                std::string::npos)
          << r.output;
      compare(stage, name, base, r);
    }
  }

  static void expect_close(const std::map<int64_t, std::pair<double, double>>& a,
                           const std::map<int64_t, std::pair<double, double>>& b, const std::string& what) {
    ASSERT_EQ(a.size(), b.size()) << what;
    for (const auto& [step, v] : a) {
      const auto& w = b.at(step);
      EXPECT_NEAR(v.first, w.first, 1e-4 * std::fabs(v.first)) << what << ": loss at " << step;
      EXPECT_NEAR(v.second, w.second, 1e-4 * std::fabs(v.second) + 1e-9) << what << ": grad_norm at " << step;
    }
  }

  test::TempDir dir_;
  std::string bin_;
};

TEST_F(ParallelTraining, EveryLayoutTrainsTheSingleRankModel) {
  const Result one = train("one", 1, 1);
  ASSERT_EQ(one.status, 0) << one.output;
  const auto ref = metrics("one");
  ASSERT_EQ(ref.size(), 6u + 3u);  // 6 steps, evaluations at 0, 3, 6
  EXPECT_LT(ref.at(6).first, ref.at(1).first);  // it learns

  for (auto [name, nproc, tp] : {std::tuple{"tp2", 2, 2}, std::tuple{"dp2", 2, 1}, std::tuple{"tp2dp2", 4, 2}}) {
    const Result r = train(name, nproc, tp);
    ASSERT_EQ(r.status, 0) << name << "\n" << r.output;
    EXPECT_NE(r.output.find("parallel: " + std::to_string(nproc) + " ranks (launch): tensor parallel " +
                            std::to_string(tp) + " x data parallel " + std::to_string(nproc / tp)),
              std::string::npos)
        << r.output;
    expect_close(ref, metrics(name), name);
    // The signals are the whole model's on every layout: vocab shards and heads combined over
    // the tensor-parallel group, tokens over the data-parallel ranks.
    expect_signals_close(signals("one"), signals(name), 1e-4, name);
  }
  // The TP=2 run's checkpoint is a manifest plus one shard file per rank.
  EXPECT_TRUE(fs::exists(dir_.path() + "/tp2/checkpoints/step_00000006.ckpt"));
  EXPECT_TRUE(fs::exists(dir_.path() + "/tp2/checkpoints/step_00000006.tp0of2.ckpt"));
  EXPECT_TRUE(fs::exists(dir_.path() + "/tp2/checkpoints/step_00000006.tp1of2.ckpt"));
}

// The llama family (RMSNorm, SwiGLU, RoPE, QK-norm, 4 query / 2 key-value heads, untied head)
// through the same launcher: every layout equals one rank within 1e-6 relative, and a TP=2
// run interrupted and resumed equals its uninterrupted run bit for bit.
TEST_F(ParallelTraining, LlamaEveryLayoutTrainsTheSingleRankModelAndResumesExactly) {
  const std::string llama = "--set model.arch=llama --set model.n_kv_head=2 --set model.qk_norm=true";
  const Result one = train("one", 1, 1, llama);
  ASSERT_EQ(one.status, 0) << one.output;
  EXPECT_NE(one.output.find("model: llama (rmsnorm, swiglu"), std::string::npos) << one.output;
  const auto ref = metrics("one");
  ASSERT_EQ(ref.size(), 6u + 3u);
  EXPECT_LT(ref.at(6).first, ref.at(1).first);
  for (auto [name, nproc, tp] : {std::tuple{"tp2", 2, 2}, std::tuple{"dp2", 2, 1}, std::tuple{"tp2dp2", 4, 2}}) {
    const Result r = train(name, nproc, tp, llama);
    ASSERT_EQ(r.status, 0) << name << "\n" << r.output;
    const auto got = metrics(name);
    ASSERT_EQ(got.size(), ref.size()) << name;
    for (const auto& [step, v] : ref) {
      EXPECT_NEAR(got.at(step).first, v.first, 1e-6 * std::fabs(v.first)) << name << ": loss at " << step;
      EXPECT_NEAR(got.at(step).second, v.second, 1e-6 * std::fabs(v.second) + 1e-9) << name << ": grad_norm at " << step;
    }
    expect_signals_close(signals("one"), signals(name), 1e-4, name);
  }
  ASSERT_EQ(train("cut", 2, 2, llama + " --stop-after 3").status, 0);
  // The TP=2 checkpoint at step 3 resumed by one rank: re-sharded (the k|v and gate|up blocks
  // cut separately), the same training.
  fs::copy(dir_.path() + "/cut", dir_.path() + "/resharded", fs::copy_options::recursive);
  const Result single = train("resharded", 1, 1, llama + " --resume");
  ASSERT_EQ(single.status, 0) << single.output;
  EXPECT_NE(single.output.find("saved with tensor_parallel_size 2"), std::string::npos) << single.output;
  const auto resharded = metrics("resharded");
  for (int64_t step = 4; step <= 6; ++step)
    EXPECT_NEAR(resharded.at(step).first, ref.at(step).first, 1e-5 * ref.at(step).first) << "resharded, step " << step;
  const Result rest = train("cut", 2, 2, llama + " --resume");
  ASSERT_EQ(rest.status, 0) << rest.output;
  const auto full = metrics("tp2"), cut = metrics("cut");
  ASSERT_EQ(full.size(), cut.size());
  for (const auto& [step, v] : full) {
    EXPECT_EQ(v.first, cut.at(step).first) << "loss at " << step;
    EXPECT_EQ(v.second, cut.at(step).second) << "grad_norm at " << step;
  }
  // A llama checkpoint does not resume as GPT-2: the family is part of the model's shape.
  const Result wrong = train("cut", 2, 2, "--resume --set train.max_steps=7");
  EXPECT_NE(wrong.status, 0);
  EXPECT_NE(wrong.output.find("model.arch: llama -> gpt2"), std::string::npos) << wrong.output;
}

// loss.fused_head: the head product and the loss as one op (the logits never whole) trains the
// same model as the unfused head, on one rank and on TP=2 x DP=2, for the tied GPT-2 head and
// the untied llama head, with soft-capping on too.
TEST_F(ParallelTraining, FusedHeadTrainsTheUnfusedModelOnEveryLayout) {
  for (const std::string family : {"", "--set model.arch=llama --set model.n_kv_head=2 --set model.qk_norm=true"}) {
    const std::string extra = family + " --set loss.logit_softcap=30";
    const std::string tag = family.empty() ? "gpt2" : "llama";
    const Result off = train(tag + "off", 1, 1, extra + " --set loss.fused_head=off");
    ASSERT_EQ(off.status, 0) << off.output;
    const auto ref = metrics(tag + "off");
    for (auto [name, nproc, tp] : {std::tuple{"on", 1, 1}, std::tuple{"on_tp2dp2", 4, 2}}) {
      const Result r = train(tag + name, nproc, tp, extra + " --set loss.fused_head=on");
      ASSERT_EQ(r.status, 0) << tag << name << "\n" << r.output;
      EXPECT_NE(r.output.find("fused head (loss.fused_head on"), std::string::npos) << r.output;
      const auto got = metrics(tag + name);
      ASSERT_EQ(got.size(), ref.size()) << tag << name;
      for (const auto& [step, v] : ref) {
        EXPECT_NEAR(got.at(step).first, v.first, 1e-6 * std::fabs(v.first)) << tag << name << ": loss at " << step;
        EXPECT_NEAR(got.at(step).second, v.second, 1e-6 * std::fabs(v.second) + 1e-9)
            << tag << name << ": grad_norm at " << step;
      }
      // The fused head's logits are recomputed in chunks: the same statistics.
      expect_signals_close(signals(tag + "off"), signals(tag + name), 1e-4, tag + name);
    }
  }
}

// train.activation_checkpointing: block and mlp regions train the very same model as none through
// launch + train, every logged number equal (not close): at DP=2 with dropout (the regions
// rewind its stream; the data-parallel buckets' all-reduces start from the leaf-ready hook while
// backward recomputes) and at TP=2 (the recomputation repeats the forward's all-reduces).
TEST_F(ParallelTraining, ActivationCheckpointingTrainsTheSameBits) {
  for (auto [tag, nproc, tp, extra] : {std::tuple{"dp2", 2, 1, std::string("--set model.dropout=0.1")},
                                       std::tuple{"tp2", 2, 2, std::string()}}) {
    const Result none = train(std::string(tag) + "none", nproc, tp, extra);
    ASSERT_EQ(none.status, 0) << none.output;
    const auto want = records(std::string(tag) + "none");
    ASSERT_EQ(want.size(), 6u + 3u) << tag;
    for (const char* mode : {"block", "mlp"}) {
      const std::string name = std::string(tag) + mode;
      const Result r = train(name, nproc, tp, extra + " --set train.activation_checkpointing=" + mode);
      ASSERT_EQ(r.status, 0) << name << "\n" << r.output;
      EXPECT_NE(r.output.find(std::string("activation checkpointing ") + mode), std::string::npos) << r.output;
      const auto got = records(name);
      ASSERT_EQ(got.size(), want.size()) << name;
      for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(got[i], want[i]) << name << ": record " << i;
    }
  }
}

TEST_F(ParallelTraining, ResumeIsExactAndCheckpointsReshardAcrossLayouts) {
  ASSERT_EQ(train("full", 2, 2).status, 0);
  const Result first = train("cut", 2, 2, "--stop-after 3");
  ASSERT_EQ(first.status, 0) << first.output;
  const Result rest = train("cut", 2, 2, "--resume");
  ASSERT_EQ(rest.status, 0) << rest.output;
  // CPU, same layout: bit for bit.
  const auto full = metrics("full"), cut = metrics("cut");
  ASSERT_EQ(full.size(), cut.size());
  for (const auto& [step, v] : full) {
    EXPECT_EQ(v.first, cut.at(step).first) << "loss at " << step;
    EXPECT_EQ(v.second, cut.at(step).second) << "grad_norm at " << step;
  }

  // Data parallel too: DP=2, interrupted and resumed, equals its uninterrupted run exactly.
  ASSERT_EQ(train("dpfull", 2, 1).status, 0);
  ASSERT_EQ(train("dpcut", 2, 1, "--stop-after 3").status, 0);
  ASSERT_EQ(train("dpcut", 2, 1, "--resume").status, 0);
  const auto dpfull = metrics("dpfull"), dpcut = metrics("dpcut");
  ASSERT_EQ(dpfull.size(), dpcut.size());
  for (const auto& [step, v] : dpfull) EXPECT_EQ(v.first, dpcut.at(step).first) << "DP=2 loss at " << step;

  // The TP=2 checkpoint at step 3, resumed by one rank: re-sharded, the same training.
  fs::copy(dir_.path() + "/cut", dir_.path() + "/one", fs::copy_options::recursive);
  for (const char* f : {"step_00000006.ckpt", "step_00000006.tp0of2.ckpt", "step_00000006.tp1of2.ckpt"})
    fs::remove(dir_.path() + "/one/checkpoints/" + f);
  const Result single = train("one", 1, 1, "--resume");
  ASSERT_EQ(single.status, 0) << single.output;
  EXPECT_NE(single.output.find("saved with tensor_parallel_size 2"), std::string::npos) << single.output;
  const auto one = metrics("one");
  for (int64_t step = 4; step <= 6; ++step) {
    EXPECT_NEAR(one.at(step).first, full.at(step).first, 1e-4 * full.at(step).first) << step;
    EXPECT_NEAR(one.at(step).second, full.at(step).second, 1e-4 * full.at(step).second) << step;
  }

  // And the other way: a one-rank checkpoint resumed by TP=2 x DP=2.
  ASSERT_EQ(train("single", 1, 1, "--stop-after 3").status, 0);
  const Result four = train("single", 4, 2, "--resume");
  ASSERT_EQ(four.status, 0) << four.output;
  EXPECT_NE(four.output.find("saved with tensor_parallel_size 1; its tensors were re-sharded for 2"),
            std::string::npos)
      << four.output;
  const auto resharded = metrics("single");
  for (int64_t step = 4; step <= 6; ++step)
    EXPECT_NEAR(resharded.at(step).first, full.at(step).first, 1e-4 * full.at(step).first) << step;
}

// The number after `label` in a tool's output ("optimizer state per rank: 123 bytes").
int64_t number_after(const std::string& output, const std::string& label) {
  const size_t at = output.find(label);
  if (at == std::string::npos) return -1;
  return std::stoll(output.substr(at + label.size()));
}

// parallel.zero_stage 1 and 2 (the AdamW state, and the gradients, sharded over the
// data-parallel ranks) train the zero_stage 0 model within 1e-6 at DP=2, DP=4 and TP=2 x DP=2
// (two micro-batches per step, clipping active), each rank holding 1/D of the optimizer state
// (and at stage 2 of the gradients); a stage 1 run resumes bit for bit, and its checkpoint
// resumes under another data-parallel size and stage 0.
TEST_F(ParallelTraining, ZeroShardsTheOptimizerAndTrainsTheSameModel) {
  const std::string clip = " --set optim.grad_clip=0.5";  // acts on every step (norms 0.6-0.8)
  const std::string llama = clip + " --set model.arch=llama --set model.n_kv_head=2 --set model.qk_norm=true";
  for (auto [tag, nproc, tp, family] : {std::tuple{"dp2", 2, 1, clip}, std::tuple{"dp4", 4, 1, clip},
                                        std::tuple{"tp2dp2", 4, 2, clip}, std::tuple{"llama_tp2dp2", 4, 2, llama}}) {
    const int dp = nproc / tp;
    const std::string z0 = std::string(tag) + "_z0";
    run_zero_stages(tag, nproc, tp, family, [&](int stage, const std::string& name, const Result& base, const Result& r) {
      // 1/D of stage 0's bytes, up to the padding of each bucket to D x 64 elements.
      const int64_t state0 = number_after(base.output, "optimizer state per rank: ");
      const int64_t state = number_after(r.output, "optimizer state per rank: ");
      ASSERT_GT(state0, 0) << base.output;
      EXPECT_GE(state * dp, state0) << name;
      EXPECT_LT(state * dp - state0, 8 * 64 * dp) << name;
      if (stage == 2) {
        const int64_t grads0 = number_after(base.output, "gradient buffers ");
        const int64_t grads = number_after(r.output, "gradient buffers ");
        ASSERT_GT(grads0, 0) << base.output;
        EXPECT_GE(grads * dp, grads0) << name;
        EXPECT_LT(grads * dp - grads0, 4 * 64 * dp) << name;
      }
      const auto ref = metrics(z0), got = metrics(name);
      ASSERT_EQ(got.size(), ref.size()) << name;
      for (const auto& [step, v] : ref) {
        EXPECT_NEAR(got.at(step).first, v.first, 1e-6 * std::fabs(v.first)) << name << ": loss at " << step;
        EXPECT_NEAR(got.at(step).second, v.second, 1e-6 * std::fabs(v.second) + 1e-9) << name << ": grad_norm at " << step;
      }
      // The per-group gradient norms from this rank's shard, summed over the data-parallel
      // group; the update ratios from the all-gathered weights.
      expect_signals_close(signals(z0), signals(name), 1e-4, name);
    });
  }
  // ZeRO-2 reduces every micro-batch from the leaf-ready hook; with recomputed blocks the hook
  // fires from inside the regions' backward: the same bits as without them.
  const Result regions = train("dp2_z2_block", 2, 1, clip + " --set parallel.zero_stage=2 --set train.activation_checkpointing=block");
  ASSERT_EQ(regions.status, 0) << regions.output;
  const auto plain = metrics("dp2_z2"), recomputed = metrics("dp2_z2_block");
  ASSERT_EQ(plain.size(), recomputed.size());
  for (const auto& [step, v] : plain) {
    EXPECT_EQ(v.first, recomputed.at(step).first) << "ZeRO-2 with block regions, loss at " << step;
    EXPECT_EQ(v.second, recomputed.at(step).second) << "ZeRO-2 with block regions, grad_norm at " << step;
  }
  // One data-parallel rank: nothing to shard, and train says so.
  const Result lone = train("lone_z1", 1, 1, clip + " --set parallel.zero_stage=1");
  ASSERT_EQ(lone.status, 0) << lone.output;
  EXPECT_NE(lone.output.find("parallel.zero_stage 1 shards nothing with one data-parallel rank"), std::string::npos)
      << lone.output;
  // Resume under the same layout and stage: bit for bit.
  const std::string z1 = clip + " --set parallel.zero_stage=1";
  ASSERT_EQ(train("cut", 2, 1, z1 + " --stop-after 3").status, 0);
  const Result rest = train("cut", 2, 1, z1 + " --resume");
  ASSERT_EQ(rest.status, 0) << rest.output;
  const auto full = metrics("dp2_z1"), cut = metrics("cut");
  ASSERT_EQ(full.size(), cut.size());
  for (const auto& [step, v] : full) {
    EXPECT_EQ(v.first, cut.at(step).first) << "loss at " << step;
    EXPECT_EQ(v.second, cut.at(step).second) << "grad_norm at " << step;
  }
  // A DP=4 stage-1 checkpoint resumed by DP=2 at stage 0, and by DP=2 at stage 2: the state is
  // saved per parameter, each rank takes its part.
  ASSERT_EQ(train("dp4cut", 4, 1, z1 + " --stop-after 3").status, 0);
  fs::copy(dir_.path() + "/dp4cut", dir_.path() + "/dp4cut2", fs::copy_options::recursive);
  const auto dp4 = metrics("dp4_z1");
  for (auto [dir, stage] : {std::pair{"dp4cut", 0}, std::pair{"dp4cut2", 2}}) {
    const Result r = train(dir, 2, 1, clip + " --resume --set parallel.zero_stage=" + std::to_string(stage));
    ASSERT_EQ(r.status, 0) << r.output;
    const auto resumed = metrics(dir);
    for (int64_t step = 4; step <= 6; ++step) {
      EXPECT_NEAR(resumed.at(step).first, dp4.at(step).first, 1e-4 * dp4.at(step).first) << dir << " step " << step;
      EXPECT_NEAR(resumed.at(step).second, dp4.at(step).second, 1e-4 * dp4.at(step).second) << dir << " step " << step;
    }
  }
}

// The same training, record by record: every number equal, except the norms of the gradients
// and of the updates, f64 sums that ZeRO adds up piece by piece of its shards (the same
// squares in another order), within 1e-10 relative; with `rel`, every number within that.
void expect_same_training(const std::vector<nlohmann::json>& got, const std::vector<nlohmann::json>& want,
                          const std::string& what, double rel = 0) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_EQ(got[i].size(), want[i].size()) << what << ": record " << i;
    for (const auto& [key, v] : want[i].items()) {
      const nlohmann::json& g = got[i].at(key);
      const bool norm = key.rfind("grad_norm", 0) == 0 || key.rfind("update_ratio/", 0) == 0;
      if (v.is_number_float() && (norm || rel > 0))
        EXPECT_NEAR(g.get<double>(), v.get<double>(), std::max(rel, norm ? 1e-10 : 0.0) * std::fabs(v.get<double>()))
            << what << ": " << key << " at record " << i;
      else
        EXPECT_EQ(g, v) << what << ": " << key << " at record " << i;
    }
  }
}

// The tensors of two checkpoint files (model weights, AdamW's m and v), f32, each element
// equal, or with `rel` within that relative (plus 1e-12).
void expect_same_tensors(const std::string& a, const std::string& b, double rel = 0) {
  const Checkpoint x = read_checkpoint(a), y = read_checkpoint(b);
  ASSERT_EQ(x.tensors.size(), y.tensors.size()) << a << " vs " << b;
  ASSERT_FALSE(x.tensors.empty()) << a;
  for (const auto& [name, t] : x.tensors) {
    const Tensor& u = y.tensors.at(name);
    ASSERT_EQ(t.dtype(), DType::f32) << name;
    ASSERT_EQ(u.dtype(), DType::f32) << name;
    if (rel == 0) {
      EXPECT_EQ(t.to_vector<float>(), u.to_vector<float>()) << name << ": " << a << " vs " << b;
      continue;
    }
    const std::vector<float> p = t.to_vector<float>(), q = u.to_vector<float>();
    ASSERT_EQ(p.size(), q.size()) << name;
    for (size_t i = 0; i < p.size(); ++i)
      ASSERT_NEAR(q[i], p[i], rel * std::fabs(p[i]) + 1e-12) << name << "[" << i << "]: " << a << " vs " << b;
  }
}

// ZeRO with bf16 compute shards the f32 master weights too: each rank keeps the masters of its
// shard next to m and v, the model's leaves hold bf16 weights (all-gathered in place), and
// stage 1 trains stage 0's bits in bf16 (expect_same_training; the checkpoints' tensors equal)
// at DP=2 and TP=2 x DP=2 for both families, two micro-batches per step and clipping active.
// Stage 2 adds each micro-batch's reduced gradient into its shard, another order than stage
// 0's sum, so a rare gradient element differs in its last bit as in f32 (gpt_tiny, 4 steps:
// 47 of 21.7M checkpoint values, the losses still equal): held to 1e-6 as in f32. Each rank
// holds 12/D bytes of optimizer state per parameter instead of 8 and 2 bytes of weights
// instead of 4. A stage-1 checkpoint (f32 masters, whole) resumes bit for bit at stage 1 and
// stage 0, and at another data-parallel size.
TEST_F(ParallelTraining, ZeroShardsTheBf16MasterWeightsAndTrainsTheSameBits) {
  const std::string bf16 = " --set train.dtype=bf16 --set optim.grad_clip=0.5";
  const std::string llama = bf16 + " --set model.arch=llama --set model.n_kv_head=2 --set model.qk_norm=true";
  auto step6 = [&](const std::string& name, const std::string& shard) {
    return dir_.path() + "/" + name + "/checkpoints/step_00000006" + shard + ".ckpt";
  };
  for (auto [tag, nproc, tp, family] : {std::tuple{"dp2", 2, 1, bf16}, std::tuple{"tp2dp2", 4, 2, bf16},
                                        std::tuple{"llama_dp2", 2, 1, llama}, std::tuple{"llama_tp2dp2", 4, 2, llama}}) {
    const int dp = nproc / tp;
    // Shard suffixes of the checkpoint files (a named copy: lambdas may not capture a binding).
    const std::vector<std::string> shards =
        tp == 1 ? std::vector<std::string>{""} : std::vector<std::string>{".tp0of2", ".tp1of2"};
    const std::string z0 = std::string(tag) + "_z0";
    run_zero_stages(tag, nproc, tp, family, [&](int stage, const std::string& name, const Result& base, const Result& r) {
      EXPECT_NE(base.output.find("bytes (AdamW m, v); weights "), std::string::npos) << base.output;
      EXPECT_NE(r.output.find("bytes (AdamW m, v, f32 master weights; parallel.zero_stage"), std::string::npos)
          << r.output;
      // m, v and the masters: 12/D bytes per parameter instead of 8, up to the padding of each
      // bucket to D x 64 elements; the weights bf16, 2 bytes instead of 4, up to the padding of
      // each of the model's tensors (fewer than 40) to 64 elements and of the bucket.
      const int64_t state0 = number_after(base.output, "optimizer state per rank: ");
      const int64_t weights0 = number_after(base.output, "); weights ");
      const int64_t state = number_after(r.output, "optimizer state per rank: ");
      const int64_t weights = number_after(r.output, "); weights ");
      ASSERT_GT(state0, 0) << base.output;
      ASSERT_GT(weights0, 0) << base.output;
      EXPECT_GE(2 * state * dp, 3 * state0) << name;
      EXPECT_LT(2 * state * dp - 3 * state0, 2 * 12 * 64 * dp) << name;
      EXPECT_GE(2 * weights, weights0) << name;
      EXPECT_LT(2 * weights - weights0, 4 * 64 * (40 + dp)) << name;
      const double rel = stage == 1 ? 0 : 1e-6;
      expect_same_training(records(name), records(z0), name, rel);
      for (const std::string& shard : shards) expect_same_tensors(step6(z0, shard), step6(name, shard), rel);
    });
  }
  // A stage-1 run interrupted at step 3 resumes bit for bit, and at stage 0 too: its checkpoint
  // holds the f32 masters, whole.
  const std::string z1 = bf16 + " --set parallel.zero_stage=1";
  ASSERT_EQ(train("cut", 2, 1, z1 + " --stop-after 3").status, 0);
  for (const char* copy : {"cut_z0", "cut_dp4_z0", "cut_dp4_z1", "cut_one"})
    fs::copy(dir_.path() + "/cut", dir_.path() + "/" + copy, fs::copy_options::recursive);
  const Result rest = train("cut", 2, 1, z1 + " --resume");
  ASSERT_EQ(rest.status, 0) << rest.output;
  expect_same_training(records("cut"), records("dp2_z1"), "resumed at stage 1");
  const Result as_z0 = train("cut_z0", 2, 1, bf16 + " --resume");
  ASSERT_EQ(as_z0.status, 0) << as_z0.output;
  expect_same_training(records("cut_z0"), records("dp2_z0"), "resumed at stage 0");
  // At DP=4, stage 1 (each rank takes its quarter of the masters) trains on exactly as stage 0
  // from the same checkpoint.
  for (const char* dir : {"cut_dp4_z0", "cut_dp4_z1"}) {
    const Result r = train(dir, 4, 1, bf16 + " --resume --set parallel.zero_stage=" + std::string(dir).substr(9));
    ASSERT_EQ(r.status, 0) << r.output;
  }
  expect_same_training(records("cut_dp4_z1"), records("cut_dp4_z0"), "resumed at DP=4");
  // Resumed by one rank, the same training as DP=2 within bf16's rounding: each rank rounds
  // its gradients to bf16 before the data-parallel sum, so layouts differ by more than in f32
  // (uninterrupted, one rank and DP=2 differ by 1e-2 relative in the grad norm and 2e-4 in the
  // loss within six steps; from the checkpoint at step 3, 4e-4 and 3e-5 measured).
  const Result one = train("cut_one", 1, 1, bf16 + " --resume");
  ASSERT_EQ(one.status, 0) << one.output;
  const auto dp2 = metrics("dp2_z1"), resumed = metrics("cut_one");
  for (int64_t step = 4; step <= 6; ++step) {
    EXPECT_NEAR(resumed.at(step).first, dp2.at(step).first, 1e-4 * dp2.at(step).first) << "step " << step;
    EXPECT_NEAR(resumed.at(step).second, dp2.at(step).second, 1e-3 * dp2.at(step).second) << "step " << step;
  }
}

TEST_F(ParallelTraining, LayoutErrorsNameTheirValues) {
  Result r = train("odd", 3, 2);
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("parallel.tensor_parallel_size 2 does not divide the 3 ranks of this job"),
            std::string::npos)
      << r.output;
  r = train("batch", 3, 1);  // DP=3 does not divide the global micro-batch of 4
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("train.batch_size 4 (sequences per micro-batch over all data-parallel ranks) does not "
                          "divide by the 3 data-parallel ranks"),
            std::string::npos)
      << r.output;
  r = train("heads", 2, 2, "--set model.n_head=2 --set parallel.tensor_parallel_size=3");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("tensor_parallel_size 3 does not divide model.n_head 2"), std::string::npos) << r.output;
  // Ranks that resolve different configs refuse to train together.
  r = sh(bin_ + "/launch --nproc 2 -- sh -c '" + bin_ + "/train --config " + dir_.path() +
         "/c.yaml --set log.out_dir=" + dir_.path() + "/mixed --set train.seed=$RANK'");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("runs a different config than rank 0"), std::string::npos) << r.output;
}

// The newest TP=2 checkpoint with its shard files swapped between the ranks, or one shard
// missing: --resume loaded the swapped ones without a word (a mixed model) and stopped on the
// missing one. Now it names the file, falls back to the newest complete checkpoint (step 3)
// and trains on to the same numbers as the uninterrupted run.
TEST_F(ParallelTraining, ADamagedShardFallsBackToTheNewestCompleteCheckpoint) {
  ASSERT_EQ(train("full", 2, 2).status, 0);
  const auto full = metrics("full");
  const std::string shard0 = "/checkpoints/step_00000006.tp0of2.ckpt", shard1 = "/checkpoints/step_00000006.tp1of2.ckpt";
  for (const std::string name : {"swapped", "missing"}) {
    SCOPED_TRACE(name);
    const std::string run = dir_.path() + "/" + name;
    fs::copy(dir_.path() + "/full", run, fs::copy_options::recursive);
    if (name == "swapped") {
      fs::rename(run + shard0, run + "/x");
      fs::rename(run + shard1, run + shard0);
      fs::rename(run + "/x", run + shard1);
    } else {
      fs::remove(run + shard1);
    }
    const Result r = train(name, 2, 2, "--resume");
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("skipping damaged checkpoint '" + run + "/checkpoints/step_00000006.ckpt': shard file '"),
              std::string::npos)
        << r.output;
    EXPECT_NE(r.output.find(name == "swapped" ? "holds tensor-parallel rank 1 of 2, not rank 0 of 2" : "is missing"),
              std::string::npos)
        << r.output;
    EXPECT_NE(r.output.find("resumed at step 3"), std::string::npos) << r.output;
    const auto resumed = metrics(name);
    ASSERT_EQ(resumed.size(), full.size());
    for (const auto& [step, v] : full) EXPECT_EQ(v.first, resumed.at(step).first) << "loss at " << step;
  }
}

}  // namespace
}  // namespace zt
