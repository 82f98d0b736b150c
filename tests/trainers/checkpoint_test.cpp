// Checkpoint files: round trip, atomic replacement, truncated, overlong, damaged, edited,
// old-version and foreign files, the fallback to the newest intact checkpoint, and the
// metrics.jsonl writer's resume truncation (damaged lines set aside with a note).
#include "trainers/checkpoint.h"

#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <filesystem>
#include <fstream>

#include "framework/error.h"
#include "trainers/metrics.h"
#include "trainers/sharded_checkpoint.h"
#include "tests/support/check.h"
#include "tests/support/input_files.h"

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

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void spit(const fs::path& p, const std::string& bytes) { std::ofstream(p, std::ios::binary | std::ios::trunc) << bytes; }

// The file offset of a tensor's first byte: 24-byte prefix, header, then the data section.
uint64_t data_offset(const std::string& path, const std::string& tensor) {
  const std::string bytes = slurp(path);
  uint64_t hlen = 0;
  std::memcpy(&hlen, bytes.data() + 8, 8);
  for (const auto& t : read_checkpoint_header(path).tensors)
    if (t.name == tensor) return 24 + hlen + t.offset;
  ADD_FAILURE() << "no tensor " << tensor;
  return 0;
}

void flip_byte(const std::string& path, uint64_t at) {
  std::string bytes = slurp(path);
  bytes.at(at) ^= 0x10;
  spit(path, bytes);
}

TEST(Checkpoint, LongerThanItsHeaderIsNotCalledTruncated) {
  const fs::path dir = fresh_dir("ckpt_long");
  const std::string path = (dir / "step_00000001.ckpt").string();
  write_checkpoint(path, sample());
  std::ofstream(path, std::ios::binary | std::ios::app) << "trailing";
  const std::string msg = error_of([&] { read_checkpoint(path); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("longer than"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("truncated"), std::string::npos) << msg;
  fs::remove_all(dir);
}

TEST(Checkpoint, FlippedTensorByteIsAnErrorNamingFileAndTensor) {
  const fs::path dir = fresh_dir("ckpt_flip");
  const std::string path = (dir / "step_00000001.ckpt").string();
  for (const std::string tensor : {"a", "b", "c"}) {
    write_checkpoint(path, sample());
    EXPECT_EQ(checkpoint_damage(path), "");
    flip_byte(path, data_offset(path, tensor) + 5);
    const std::string msg = error_of([&] { read_checkpoint(path); });
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find("tensor '" + tensor + "' fails its checksum"), std::string::npos) << msg;
    EXPECT_EQ(checkpoint_damage(path), msg);  // the streaming check finds the same
    // A reader asking only for other tensors does not read (or trip over) the damaged one.
    if (tensor == "a") EXPECT_EQ(read_checkpoint(path, "b").tensors.size(), 1u);
  }
  fs::remove_all(dir);
}

TEST(Checkpoint, EditedHeaderFailsItsChecksum) {
  const fs::path dir = fresh_dir("ckpt_edit");
  const std::string path = (dir / "step_00000042.ckpt").string();
  write_checkpoint(path, sample());
  std::string bytes = slurp(path);
  const auto at = bytes.find("\"step\":42");
  ASSERT_NE(at, std::string::npos);
  bytes.replace(at, 9, "\"step\":99");  // same length: only the checksum can tell
  spit(path, bytes);
  const std::string msg = error_of([&] { read_checkpoint_header(path); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("header fails its checksum"), std::string::npos) << msg;
  fs::remove_all(dir);
}

TEST(Checkpoint, OldFormatVersionIsAClearError) {
  const fs::path dir = fresh_dir("ckpt_v1");
  const std::string path = (dir / "step_00000001.ckpt").string();
  write_checkpoint(path, sample());
  std::string bytes = slurp(path);
  bytes[7] = '1';  // "ZTCKPT01"
  spit(path, bytes);
  const std::string msg = error_of([&] { read_checkpoint(path); });
  EXPECT_NE(msg.find("format version 1"), std::string::npos) << msg;
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  fs::remove_all(dir);
}

TEST(Checkpoint, ReadsOnlyThePrefixAskedFor) {
  const fs::path dir = fresh_dir("ckpt_prefix");
  const std::string path = (dir / "x.ckpt").string();
  Checkpoint c = sample();
  c.tensors["model/w"] = Tensor::zeros({2}, DType::f32);
  write_checkpoint(path, c);
  const Checkpoint r = read_checkpoint(path, "model/");
  ASSERT_EQ(r.tensors.size(), 1u);
  EXPECT_TRUE(r.tensors.count("model/w"));
  EXPECT_EQ(read_checkpoint_header(path).tensors.size(), c.tensors.size());
  fs::remove_all(dir);
}

TEST(Checkpoint, FallsBackToTheNewestIntactCheckpoint) {
  const fs::path dir = fresh_dir("ckpt_fallback");
  for (int64_t s : {5, 20, 100}) {
    Checkpoint c = sample();
    c.meta["step"] = s;
    write_checkpoint(checkpoint_path(dir.string(), s), c);
  }
  const std::string newest = checkpoint_path(dir.string(), 100);
  CheckpointChoice ok = newest_good_checkpoint(dir.string());
  EXPECT_EQ(*ok.path, newest);
  EXPECT_TRUE(ok.skipped.empty());

  flip_byte(newest, data_offset(newest, "a"));
  // A sound file under another step's name is not trusted either.
  fs::copy_file(checkpoint_path(dir.string(), 5), checkpoint_path(dir.string(), 200));
  CheckpointChoice c = newest_good_checkpoint(dir.string());
  ASSERT_TRUE(c.path.has_value());
  EXPECT_EQ(*c.path, checkpoint_path(dir.string(), 20));
  ASSERT_EQ(c.skipped.size(), 2u);
  EXPECT_NE(c.skipped[0].find("not the step its name says"), std::string::npos) << c.skipped[0];
  EXPECT_NE(c.skipped[1].find(newest), std::string::npos) << c.skipped[1];
  EXPECT_NE(c.skipped[1].find("tensor 'a' fails its checksum"), std::string::npos) << c.skipped[1];
  ASSERT_EQ(c.damaged.size(), 2u);

  const auto aside = set_aside_damaged(c.damaged);
  EXPECT_EQ(aside[1], newest + ".damaged");
  EXPECT_TRUE(fs::exists(newest + ".damaged"));
  EXPECT_EQ(*newest_checkpoint(dir.string()), checkpoint_path(dir.string(), 20));
  prune_checkpoints(dir.string(), 1);  // never touches the set-aside files
  EXPECT_TRUE(fs::exists(newest + ".damaged"));
  EXPECT_FALSE(fs::exists(checkpoint_path(dir.string(), 5)));

  flip_byte(checkpoint_path(dir.string(), 20), 30);  // in the header
  CheckpointChoice none = newest_good_checkpoint(dir.string());
  EXPECT_FALSE(none.path.has_value());
  ASSERT_EQ(none.skipped.size(), 1u);
  EXPECT_NE(none.skipped[0].find("header fails its checksum"), std::string::npos) << none.skipped[0];
  fs::remove_all(dir);
}

TEST(Metrics, ResumeSetsDamagedLinesAsideAndSaysSo) {
  const fs::path dir = fresh_dir("metrics_damaged");
  const std::string path = (dir / "metrics.jsonl").string();
  spit(path, "{\"step\": 1, \"loss\": 1}\nnot json at all\n{\"step\": 2, \"loss\": 0.5}\n[1, 2]\n{\"step\": 3}\n");
  MetricsWriter w = MetricsWriter::resume(path, 2);
  ASSERT_EQ(w.notes().size(), 1u);
  const std::string note = w.notes()[0];
  EXPECT_NE(note.find(path), std::string::npos) << note;
  EXPECT_NE(note.find("line 2, 4"), std::string::npos) << note;
  EXPECT_EQ(slurp(path), "{\"step\": 1, \"loss\": 1}\n{\"step\": 2, \"loss\": 0.5}\n");
  EXPECT_EQ(slurp(path + ".damaged"), "not json at all\n[1, 2]\n");
  EXPECT_TRUE(MetricsWriter::resume(path, 2).notes().empty());  // a clean file: nothing to say
  fs::remove_all(dir);
}

// --resume reads metrics.jsonl: a FIFO there blocked it forever and a link to /dev/zero was
// read until memory ran out. Both are refused at once, naming the file (the link here goes to
// /dev/null, the same kind of file, so the test cannot exhaust memory if the check is lost).
TEST(Metrics, ResumeRefusesAFifoOrADeviceInPlaceOfTheFile) {
  const fs::path dir = fresh_dir("metrics_special");
  const std::string path = (dir / "metrics.jsonl").string();
  std::string msg = test::error_of_reading_fifo(path, [](const std::string& p) { MetricsWriter::resume(p, 2); });
  EXPECT_NE(msg.find("metrics.jsonl' is a FIFO"), std::string::npos) << msg;
  fs::remove(path);
  fs::create_symlink("/dev/null", path);
  msg = test::error_of([&] { MetricsWriter::resume(path, 2); });
  EXPECT_NE(msg.find("metrics.jsonl' is a character device"), std::string::npos) << msg;
  EXPECT_TRUE(fs::is_symlink(path));  // left as it was
  fs::remove(path);
  MetricsWriter::resume(path, 2);  // no file at all: an empty record
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

// Tensor-parallel shard files go with their manifest: pruned with it, or left over from a
// run killed before its manifest was written (older than the newest manifest: removed). A
// shard newer than every manifest may be a write in progress and stays.
TEST(Checkpoint, PruneShardedRemovesShardsWithoutAManifest) {
  const fs::path dir = fresh_dir("ckpt_prune_shards");
  for (int64_t s : {2, 4, 6}) write_checkpoint(checkpoint_path(dir.string(), s), sample());
  const fs::path c = dir / "checkpoints";
  for (const char* f : {"step_00000001.tp0of2.ckpt", "step_00000002.tp0of2.ckpt", "step_00000002.tp1of2.ckpt",
                        "step_00000006.tp1of2.ckpt", "step_00000009.tp0of2.ckpt"})
    std::ofstream(c / f) << "shard";
  prune_sharded_checkpoints(dir.string(), 2);  // keeps steps 4 and 6
  EXPECT_EQ(list_checkpoints(c.string()),
            (std::vector<std::string>{checkpoint_path(dir.string(), 4), checkpoint_path(dir.string(), 6)}));
  for (const char* gone : {"step_00000001.tp0of2.ckpt", "step_00000002.tp0of2.ckpt", "step_00000002.tp1of2.ckpt"})
    EXPECT_FALSE(fs::exists(c / gone)) << gone;
  for (const char* kept : {"step_00000006.tp1of2.ckpt", "step_00000009.tp0of2.ckpt"})
    EXPECT_TRUE(fs::exists(c / kept)) << kept;
  fs::remove_all(dir);
}

// ---- sharded checkpoints: the manifest binds its shard files --------------------------------

// A TP=2 checkpoint of `step` in run `run_id` under dir: two shard files (tensor "w" holds
// step * 10 + rank, so a mixed load would show) and the manifest.
std::string write_tp2(const fs::path& dir, int64_t step, int64_t run_id, float bias = 0) {
  const std::string manifest = checkpoint_path(dir.string(), step);
  fs::create_directories(fs::path(manifest).parent_path());
  Checkpoint ck;
  ck.meta = {{"step", step}, {"run_id", run_id}};
  ck.config_yaml = "model: {}\n";
  for (int r = 0; r < 2; ++r) {
    Checkpoint shard = ck;
    shard.tensors["w"] = Tensor::full({4}, static_cast<double>(step * 10 + r) + bias, DType::f32);
    write_checkpoint_shard(manifest, shard, r, 2);
  }
  write_checkpoint_manifest(manifest, ck, 2, {"w"}, [](const std::string&) { return ShardSpec{}; });
  return manifest;
}

std::string shard_file(const std::string& manifest, int r) {
  return manifest.substr(0, manifest.size() - 5) + ".tp" + std::to_string(r) + "of2.ckpt";
}

float loaded_w(const std::string& manifest, int r) {
  const Checkpoint c = read_checkpoint_for_rank(manifest, r, 2, [](const std::string&) { return ShardSpec{}; });
  return c.tensors.at("w").to_vector<float>()[0];
}

// Shards swapped between ranks, replaced by the same rank's shard of an older step, taken from
// another run, rewritten with other contents, truncated or missing: each loaded without a word
// (a mixed model). Now each is an error naming the shard file, and the newest-checkpoint
// search (--resume, generate) falls back to the newest complete checkpoint, saying why.
TEST(ShardedCheckpoint, TheManifestBindsItsShards) {
  const fs::path dir = fresh_dir("ckpt_bind"), other = fresh_dir("ckpt_bind_other");
  struct Case {
    const char* name;
    std::function<void(const std::string&)> spoil;
    std::string expect;
  };
  const std::string older = checkpoint_path(dir.string(), 3);
  const std::vector<Case> cases = {
      {"swapped",
       [](const std::string& m) {
         fs::rename(shard_file(m, 0), shard_file(m, 0) + ".x");
         fs::rename(shard_file(m, 1), shard_file(m, 0));
         fs::rename(shard_file(m, 0) + ".x", shard_file(m, 1));
       },
       "holds tensor-parallel rank 1 of 2, not rank 0 of 2"},
      {"older step", [&](const std::string& m) { fs::copy_file(shard_file(older, 0), shard_file(m, 0), fs::copy_options::overwrite_existing); },
       "is of step 3, the manifest of step 6"},
      {"other run",
       [&](const std::string& m) {
         fs::copy_file(shard_file(write_tp2(other, 6, 999), 0), shard_file(m, 0), fs::copy_options::overwrite_existing);
       },
       "was written by another run (run id 999, the manifest's 7)"},
      {"rewritten",
       [&](const std::string& m) {
         write_tp2(other, 6, 7, 0.5f);  // same step, rank and run; other values
         fs::copy_file(shard_file(checkpoint_path(other.string(), 6), 0), shard_file(m, 0),
                       fs::copy_options::overwrite_existing);
       },
       "is not the file the manifest was written with"},
      {"missing", [](const std::string& m) { fs::remove(shard_file(m, 0)); }, "is missing"},
      {"truncated", [](const std::string& m) { fs::resize_file(shard_file(m, 0), fs::file_size(shard_file(m, 0)) - 8); },
       "truncated"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    fs::remove_all(dir);
    write_tp2(dir, 3, 7);
    const std::string m = write_tp2(dir, 6, 7);
    EXPECT_EQ(loaded_w(m, 0), 60.0f);
    EXPECT_EQ(loaded_w(m, 1), 61.0f);
    EXPECT_EQ(checkpoint_damage(m), "");
    c.spoil(m);
    const std::string msg = error_of([&] { loaded_w(m, 0); });
    EXPECT_NE(msg.find(c.expect), std::string::npos) << msg;
    EXPECT_NE(msg.find("step_00000006.tp0of2.ckpt"), std::string::npos) << msg;
    const CheckpointChoice choice = newest_good_checkpoint(dir.string());
    ASSERT_TRUE(choice.path.has_value());
    EXPECT_EQ(*choice.path, older);
    ASSERT_EQ(choice.skipped.size(), 1u);
    EXPECT_NE(choice.skipped[0].find(c.expect), std::string::npos) << choice.skipped[0];
    EXPECT_EQ(loaded_w(older, 1), 31.0f);  // the fallback is whole
  }
  fs::remove_all(dir);
  fs::remove_all(other);
}

}  // namespace
}  // namespace zt
