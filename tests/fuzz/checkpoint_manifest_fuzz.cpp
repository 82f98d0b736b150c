// libFuzzer target: a tensor-parallel checkpoint (manifest + 2 shard files) with one file
// spoiled by the input, read the ways --resume and generate read it: checkpoint_damage
// (the newest-checkpoint search), read_checkpoint_for_rank under the saved layout and another.
//
// Input byte 0 picks the file (bit 0: the manifest or shard 0) and the mode (bit 1): the rest
// of the input is either the whole file, or edits to a valid one (3 bytes each: a 16-bit
// offset and a byte to put there; an offset past the end cuts the file there), so the fuzzer
// reaches the binding checks (shard records, sizes, digests) as well as the parsers.
#include <filesystem>
#include <fstream>
#include <iterator>

#include "tests/fuzz/fuzz_input.h"
#include "trainers/checkpoint.h"
#include "trainers/sharded_checkpoint.h"

namespace {

namespace fs = std::filesystem;

struct Fixture {
  std::string dir, manifest, shard0;
  std::string good_manifest, good_shard0;
  Fixture() {
    dir = "/tmp/ztrain-fuzz-manifest-" + std::to_string(::getpid());
    fs::remove_all(dir);
    manifest = zt::checkpoint_path(dir, 5);
    fs::create_directories(fs::path(manifest).parent_path());
    zt::Checkpoint ck;
    ck.meta = {{"step", 5}, {"run_id", 11}};
    ck.config_yaml = "model: {}\n";
    const auto split = [](const std::string& key) { return key == "w" ? zt::ShardSpec{0, 2} : zt::ShardSpec{}; };
    for (int r = 0; r < 2; ++r) {
      zt::Checkpoint shard = ck;
      shard.tensors["w"] = zt::Tensor::full({2, 3}, r + 1.0, zt::DType::f32);
      shard.tensors["b"] = zt::Tensor::full({3}, 0.5, zt::DType::f32);
      const std::string p = zt::write_checkpoint_shard(manifest, shard, r, 2);
      if (r == 0) shard0 = p;
    }
    zt::write_checkpoint_manifest(manifest, ck, 2, {"w", "b"}, split);
    good_manifest = slurp(manifest);
    good_shard0 = slurp(shard0);
  }
  static std::string slurp(const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }
  static void spit(const std::string& p, const std::string& bytes) {
    std::ofstream(p, std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Fixture fx;
  if (size == 0) return 0;
  const bool spoil_shard = data[0] & 1, raw = data[0] & 2;
  std::string bytes = spoil_shard ? fx.good_shard0 : fx.good_manifest;
  if (raw) {
    bytes.assign(reinterpret_cast<const char*>(data + 1), size - 1);
  } else {
    for (size_t i = 1; i + 3 <= size; i += 3) {
      const size_t at = static_cast<size_t>(data[i]) | static_cast<size_t>(data[i + 1]) << 8;
      if (at < bytes.size()) bytes[at] = static_cast<char>(data[i + 2]);
      else bytes.resize(at % (bytes.size() + 1));
    }
  }
  Fixture::spit(fx.manifest, spoil_shard ? fx.good_manifest : bytes);
  Fixture::spit(fx.shard0, spoil_shard ? bytes : fx.good_shard0);
  const auto split = [](const std::string& key) { return key == "w" ? zt::ShardSpec{0, 2} : zt::ShardSpec{}; };
  zt::fuzz::expect_clean_refusal([&] { (void)zt::checkpoint_damage(fx.manifest); });
  zt::fuzz::expect_clean_refusal([&] { (void)zt::newest_good_checkpoint(fx.dir); });
  for (int tp : {1, 2})
    zt::fuzz::expect_clean_refusal([&] {
      const zt::Checkpoint ck = zt::read_checkpoint_for_rank(fx.manifest, 0, tp, split);
      for (const auto& [name, t] : ck.tensors)
        if (t.nbytes() > bytes.size() + fx.good_shard0.size()) __builtin_trap();
    });
  return 0;
}
