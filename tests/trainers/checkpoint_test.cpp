// Checkpoint files: round trip, atomic replacement, truncated and foreign files, and the
// metrics.jsonl writer's resume truncation.
#include "trainers/checkpoint.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "framework/error.h"
#include "trainers/metrics.h"
#include "tests/support/check.h"

namespace zt {
namespace {

namespace fs = std::filesystem;

fs::path fresh_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("ztrain_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

using ::zt::test::error_of;

Checkpoint sample() {
  Generator g(1);
  Checkpoint c;
  c.meta = {{"step", 42}, {"rng", {1, 2, 3}}};
  c.config_yaml = "model:\n  n_layer: 2\n";
  c.tensors["a"] = Tensor::randn({3, 5}, DType::f32, g);
  c.tensors["b"] = Tensor::from_vector<int64_t>({1, -2, 3}, {3});
  c.tensors["c"] = Tensor::randn({2, 2, 2}, DType::f64, g).transpose(0, 2);  // strided: written contiguous
  c.tensors["empty"] = Tensor::zeros({0, 4}, DType::f32);
  return c;
}

TEST(Checkpoint, RoundTrip) {
  const fs::path dir = fresh_dir("ckpt_rt");
  const std::string path = checkpoint_path(dir.string(), 42);
  EXPECT_EQ(fs::path(path).filename(), "step_00000042.ckpt");
  const Checkpoint c = sample();
  write_checkpoint(path, c);
  const Checkpoint r = read_checkpoint(path);
  EXPECT_EQ(r.meta, c.meta);
  EXPECT_EQ(r.config_yaml, c.config_yaml);
  ASSERT_EQ(r.tensors.size(), c.tensors.size());
  for (const auto& [name, t] : c.tensors) {
    const Tensor& u = r.tensors.at(name);
    EXPECT_EQ(u.shape(), t.shape()) << name;
    EXPECT_EQ(u.dtype(), t.dtype()) << name;
    EXPECT_EQ(u.to_vector<double>(), t.to_vector<double>()) << name;
  }
  for (const auto& e : fs::directory_iterator(dir / "checkpoints"))
    EXPECT_EQ(e.path().extension(), ".ckpt") << "left behind: " << e.path();
  fs::remove_all(dir);
}

TEST(Checkpoint, TruncatedAndForeignFilesAreClearErrors) {
  const fs::path dir = fresh_dir("ckpt_bad");
  const std::string path = (dir / "step_00000001.ckpt").string();
  write_checkpoint(path, sample());
  const auto size = fs::file_size(path);
  for (uintmax_t cut : {size - 1, size / 2, uintmax_t{20}, uintmax_t{10}, uintmax_t{3}}) {
    const std::string cut_path = (dir / ("cut_" + std::to_string(cut))).string();
    fs::copy_file(path, cut_path);
    fs::resize_file(cut_path, cut);
    const std::string msg = error_of([&] { read_checkpoint(cut_path); });
    EXPECT_NE(msg.find(cut_path), std::string::npos) << cut << ": " << msg;
    EXPECT_TRUE(msg.find("truncated") != std::string::npos || msg.find("not a ztrain checkpoint") != std::string::npos)
        << cut << ": " << msg;
  }
  const std::string foreign = (dir / "foreign.ckpt").string();
  std::ofstream(foreign) << "this is a text file, not a checkpoint at all";
  EXPECT_NE(error_of([&] { read_checkpoint(foreign); }).find("not a ztrain checkpoint"), std::string::npos);
  EXPECT_NE(error_of([&] { read_checkpoint((dir / "missing.ckpt").string()); }).find("does not exist"),
            std::string::npos);
  fs::remove_all(dir);
}

TEST(Checkpoint, NewestAndPrune) {
  const fs::path dir = fresh_dir("ckpt_newest");
  EXPECT_FALSE(newest_checkpoint(dir.string()).has_value());
  for (int64_t s : {5, 100, 20}) write_checkpoint(checkpoint_path(dir.string(), s), sample());
  std::ofstream(dir / "checkpoints" / "step_00000999.ckpt.tmp.1") << "partial";  // an interrupted write
  EXPECT_EQ(*newest_checkpoint(dir.string()), checkpoint_path(dir.string(), 100));
  EXPECT_EQ(*newest_checkpoint((dir / "checkpoints").string()), checkpoint_path(dir.string(), 100));
  EXPECT_EQ(*newest_checkpoint(checkpoint_path(dir.string(), 5)), checkpoint_path(dir.string(), 5));
  prune_checkpoints(dir.string(), 2);
  EXPECT_FALSE(fs::exists(checkpoint_path(dir.string(), 5)));
  EXPECT_TRUE(fs::exists(checkpoint_path(dir.string(), 20)));
  EXPECT_TRUE(fs::exists(checkpoint_path(dir.string(), 100)));
  fs::remove_all(dir);
}

TEST(Checkpoint, AtomicWriteReplaces) {
  const fs::path dir = fresh_dir("atomic");
  const std::string path = (dir / "x.txt").string();
  write_file_atomic(path, "one");
  write_file_atomic(path, "two");
  std::ifstream in(path);
  std::string s;
  in >> s;
  EXPECT_EQ(s, "two");
  EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator()), 1);
  fs::remove_all(dir);
}

TEST(Metrics, RecordsAndResumeTruncation) {
  const fs::path dir = fresh_dir("metrics");
  const std::string path = (dir / "metrics.jsonl").string();
  {
    MetricsWriter w = MetricsWriter::fresh(path);
    for (int s = 1; s <= 4; ++s) {
      StepMetrics m;
      m.step = s;
      m.loss = s == 3 ? NAN : 1.0 / s;
      w.write(m.to_json());
    }
    EvalMetrics e;
    e.step = 4;
    e.val_loss = 0.5;
    w.write(e.to_json());
  }
  {
    std::ofstream(path, std::ios::app) << "{\"step\": 5, \"loss\": 0.";  // a write cut short
  }
  MetricsWriter w = MetricsWriter::resume(path, 3);
  StepMetrics m;
  m.step = 4;
  m.loss = 0.25;
  m.mfu = 0.4;
  w.write(m.to_json());
  std::ifstream in(path);
  std::vector<nlohmann::json> lines;
  std::string line;
  while (std::getline(in, line)) lines.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[0]["step"], 1);
  EXPECT_TRUE(lines[2]["loss"].is_null());  // NaN is written as null
  EXPECT_EQ(lines[3]["step"], 4);
  EXPECT_EQ(lines[3]["mfu"], 0.4);
  EXPECT_FALSE(lines[0].contains("mfu"));
  for (const char* k : {"step", "tokens", "lr", "loss", "ce_loss", "z_loss", "lse_mean", "lse_max", "grad_norm",
                        "z_loss_weight", "tokens_per_s"})
    EXPECT_TRUE(lines[0].contains(k)) << k;
  EXPECT_FALSE(EvalMetrics{}.to_json().contains("loss"));  // eval records are told apart by val_loss
  fs::remove_all(dir);
}

}  // namespace
}  // namespace zt
