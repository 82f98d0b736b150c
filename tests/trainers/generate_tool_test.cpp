// The generate tool on a checkpoint written by the trainer: it loads the model from the
// checkpoint's stored config, continues a prompt, and reports bad arguments as
// "generate: <message>" with exit status 1 (2 for a bad command line).
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "trainers/checkpoint.h"
#include "trainers/data/token_shard.h"
#include "trainers/model_state.h"
#include "trainers/trainer.h"

namespace zt {
namespace {

namespace fs = std::filesystem;

struct Result {
  int status;
  std::string out, err;
};

Result run(const std::string& args, const fs::path& dir) {
  const std::string cmd = std::string(ZTRAIN_BIN_DIR) + "/generate " + args + " > " + (dir / "out.txt").string() +
                          " 2> " + (dir / "err.txt").string();
  const int rc = std::system(cmd.c_str());
  auto slurp = [](const fs::path& p) {
    std::ifstream in(p);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, slurp(dir / "out.txt"), slurp(dir / "err.txt")};
}

TEST(GenerateTool, SamplesFromATrainedCheckpoint) {
  const std::string vocab = std::string(ZTRAIN_SOURCE_DIR) + "/data/gpt2";
  if (!fs::exists(std::string(ZTRAIN_BIN_DIR) + "/generate")) GTEST_SKIP() << "generate tool not built";
  if (!fs::exists(vocab + "/encoder.json")) GTEST_SKIP() << "no GPT-2 vocabulary (tools/fetch_data.sh --vocab-only)";

  const fs::path dir = fs::temp_directory_path() / ("ztrain_generate_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::vector<int32_t> ids;
  for (int i = 0; i < 3000; ++i) ids.push_back(static_cast<int32_t>((i * 7919) % 50257));
  data::write_token_shard((dir / "train.bin").string(), ids);
  const Config cfg = parse_config(
      "model: {n_layer: 1, n_head: 2, d_model: 16, seq_len: 8}\n"
      "train: {batch_size: 2, max_steps: 2, device: cpu}\n"
      "log: {eval_every: 0, eval_batches: 1}\n",
      "generate_test.yaml",
      {"data.train=" + (dir / "train.bin").string(), "data.val=" + (dir / "train.bin").string(),
       "log.out_dir=" + (dir / "run").string()});
  TrainOptions quiet;
  quiet.out = std::fopen("/dev/null", "w");
  quiet.terminal = 0;
  train(cfg, quiet);

  // More tokens than seq_len: the context window slides.
  const std::string common = " --vocab-dir " + vocab + " --prompt 'The jury said' --max-tokens 12 --no-stop";
  Result greedy = run("--checkpoint " + (dir / "run").string() + " --temperature 0" + common, dir);
  ASSERT_EQ(greedy.status, 0) << greedy.err;
  EXPECT_EQ(greedy.out.rfind("The jury said", 0), 0u) << greedy.out;
  EXPECT_GT(greedy.out.size(), std::string("The jury said\n").size());
  EXPECT_NE(greedy.err.find("step 2"), std::string::npos) << greedy.err;
  Result again = run("--checkpoint " + (dir / "run").string() + " --temperature 0" + common, dir);
  EXPECT_EQ(again.out, greedy.out);  // greedy is deterministic
  Result a = run("--checkpoint " + (dir / "run").string() + " --seed 3 --top-k 5" + common, dir);
  Result b = run("--checkpoint " + (dir / "run").string() + " --seed 3 --top-k 5" + common, dir);
  EXPECT_EQ(a.status, 0) << a.err;
  EXPECT_EQ(a.out, b.out);  // same seed, same text

  Result missing = run("--checkpoint " + (dir / "nothing").string() + common, dir);
  EXPECT_EQ(missing.status, 1);
  EXPECT_EQ(missing.err.rfind("generate: no checkpoint found", 0), 0u) << missing.err;
  Result bad_temp = run("--checkpoint " + (dir / "run").string() + " --temperature -1" + common, dir);
  EXPECT_EQ(bad_temp.status, 2);  // a usage error
  EXPECT_NE(bad_temp.err.find("--temperature"), std::string::npos) << bad_temp.err;
  fs::remove_all(dir);
}

// A tiny crafted checkpoint that states a huge model is refused from its header, before the
// model is built (which would take minutes and gigabytes).
TEST(GenerateTool, CraftedCheckpointFailsFast) {
  if (!fs::exists(std::string(ZTRAIN_BIN_DIR) + "/generate")) GTEST_SKIP() << "generate tool not built";
  const fs::path dir = fs::temp_directory_path() / ("ztrain_generate_crafted_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  Checkpoint c;
  c.meta = {{"step", 1}};
  c.config_yaml = "model: {n_layer: 1024, n_head: 16, d_model: 4096}\ndata: {train: t.bin, val: v.bin}\n";
  c.tensors["model/wte.weight"] = Tensor::zeros({2, 2}, DType::f32);
  const std::string path = (dir / "crafted.ckpt").string();
  write_checkpoint(path, c);
  const auto t0 = std::chrono::steady_clock::now();
  Result r = run("--checkpoint " + path + " --prompt hi --vocab-dir " + dir.string(), dir);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 10.0);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("holds 4 model parameters"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(path), std::string::npos) << r.err;

  // A damaged checkpoint named directly is an error naming the tensor.
  c.config_yaml = "model: {n_layer: 1, n_head: 1, d_model: 2, seq_len: 2, vocab_size: 2, vocab_multiple: 1}\n"
                  "data: {train: t.bin, val: v.bin}\n";
  Generator init(0);
  c.tensors.clear();
  save_model(*make_model(parse_config(c.config_yaml, "crafted").model, init), c);
  write_checkpoint(path, c);
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-64, std::ios::end);  // the last tensor (wte, 2 x 2 f32), padded to 64 bytes
    f.put('\x7f');
  }
  r = run("--checkpoint " + path + " --prompt hi --vocab-dir " + dir.string(), dir);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("tensor 'model/wte.weight' fails its checksum"), std::string::npos) << r.err;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace zt
