#include "trainers/data/data_loader.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <map>
#include <set>

#include "framework/error.h"
#include "tests/trainers/data/data_test_util.h"
#include "tests/support/check.h"

namespace zt::data {
namespace {

using test::TempDir;

// Shards whose token at position p of shard s is 1000 s + p (mod 65536) — so a window's
// first token says exactly where it came from.
struct Corpus {
  TempDir dir;
  std::vector<std::string> paths;
  // versions: each shard's format (default: all version 1); the ids are the same either way.
  explicit Corpus(const std::vector<int64_t>& sizes, const std::vector<int32_t>& versions = {}) {
    for (size_t s = 0; s < sizes.size(); ++s) {
      std::vector<int32_t> ids(static_cast<size_t>(sizes[s]));
      for (int64_t p = 0; p < sizes[s]; ++p) ids[p] = static_cast<int32_t>((1000 * s + p) % 65536);
      paths.push_back(dir / ("train_" + std::to_string(100 + s).substr(1) + ".bin"));
      write_token_shard(paths.back(), ids, versions.empty() ? kShardVersionU16 : versions[s]);
    }
  }
  std::string glob() const { return dir.path() + "/train_*.bin"; }
};

DataLoaderOptions opts(const std::string& pattern, int64_t B, int64_t T, uint64_t seed = 1) {
  DataLoaderOptions o;
  o.shards = {pattern};
  o.batch_size = B;
  o.seq_len = T;
  o.seed = seed;
  return o;
}

std::vector<int64_t> values(const Batch& b) {
  auto in = b.inputs.to_vector<int64_t>(), tg = b.targets.to_vector<int64_t>();
  in.insert(in.end(), tg.begin(), tg.end());
  return in;
}

using ::zt::test::error_of;

TEST(DataLoader, WindowsAreShiftedPairsFromOneShard) {
  Corpus c({333, 250, 100});  // T = 8: 41 + 31 + 12 = 84 windows
  DataLoader dl(opts(c.glob(), 4, 8));
  EXPECT_EQ(dl.shard_paths(), c.paths) << "glob must expand sorted";
  EXPECT_EQ(dl.num_windows(), 41 + 31 + 12);
  EXPECT_EQ(dl.num_tokens(), 333 + 250 + 100);
  EXPECT_EQ(dl.batches_per_epoch(), 84 / 4);
  for (int step = 0; step < 30; ++step) {
    const Batch b = dl.next();
    ASSERT_EQ(b.inputs.shape(), (Shape{4, 8}));
    ASSERT_EQ(b.inputs.dtype(), DType::i64);
    ASSERT_EQ(b.targets.shape(), (Shape{4, 8}));
    const auto in = b.inputs.to_vector<int64_t>(), tg = b.targets.to_vector<int64_t>();
    for (int r = 0; r < 4; ++r) {
      const int64_t first = in[r * 8];
      const int64_t shard = first / 1000, pos = first % 1000;
      EXPECT_EQ(pos % 8, 0) << "windows start every T tokens";
      for (int t = 0; t < 8; ++t) {
        ASSERT_EQ(in[r * 8 + t], first + t) << "window crosses a shard boundary or is out of order";
        ASSERT_EQ(tg[r * 8 + t], first + t + 1);
      }
      const int64_t shard_size = std::vector<int64_t>{333, 250, 100}[shard];
      EXPECT_LE(pos + 9, shard_size) << "window runs past the end of shard " << shard;
    }
  }
}

TEST(DataLoader, Version1And2ShardsGiveTheSameBatches) {
  Corpus v1({333, 250, 100}), mixed({333, 250, 100}, {kShardVersionU32, kShardVersionU16, kShardVersionU32});
  ASSERT_EQ(TokenShard::open(mixed.paths[0]).version(), 2);
  DataLoader a(opts(v1.glob(), 4, 8)), b(opts(mixed.glob(), 4, 8));
  EXPECT_EQ(b.num_windows(), a.num_windows());
  for (int step = 0; step < 25; ++step) ASSERT_EQ(values(b.next()), values(a.next())) << "step " << step;
}

TEST(DataLoader, AnEpochVisitsEachWindowOnce) {
  Corpus c({8 * 30 + 1, 8 * 18 + 1});  // 48 windows = 12 batches of 4
  DataLoader dl(opts(c.glob(), 4, 8, 99));
  for (int epoch = 0; epoch < 2; ++epoch) {
    std::set<int64_t> seen;
    std::vector<int64_t> order;
    for (int64_t k = 0; k < dl.batches_per_epoch(); ++k) {
      const auto in = dl.next().inputs.to_vector<int64_t>();
      for (int r = 0; r < 4; ++r) {
        EXPECT_TRUE(seen.insert(in[r * 8]).second) << "window " << in[r * 8] << " twice in epoch " << epoch;
        order.push_back(in[r * 8]);
      }
    }
    EXPECT_EQ(seen.size(), 48u);
    EXPECT_EQ(dl.state(), (DataLoaderState{epoch + 1, 0}));
    std::vector<int64_t> sorted(seen.begin(), seen.end());
    EXPECT_NE(order, sorted) << "shuffled mode should not visit windows in file order";
  }
}

TEST(DataLoader, SameSeedSameBatchesOtherSeedOtherBatches) {
  Corpus c({2000});
  DataLoader a(opts(c.glob(), 3, 16, 5)), b(opts(c.glob(), 3, 16, 5)), other(opts(c.glob(), 3, 16, 6));
  bool differs = false;
  for (int k = 0; k < 50; ++k) {
    const auto va = values(a.next());
    ASSERT_EQ(va, values(b.next())) << "batch " << k;
    differs |= va != values(other.next());
  }
  EXPECT_TRUE(differs);
}

TEST(DataLoader, RestoredStateContinuesExactlyLikeAnUninterruptedRun) {
  Corpus c({700, 300});  // T = 10: 69 + 29 = 98 windows, 16 batches of 6 per epoch
  for (int64_t stop : {0, 1, 7, 15, 16, 23}) {  // includes stops at and across epoch ends
    DataLoader straight(opts(c.glob(), 6, 10, 42));
    for (int64_t k = 0; k < stop; ++k) straight.next();
    const DataLoaderState saved = straight.state();
    std::vector<std::vector<int64_t>> expected;
    for (int k = 0; k < 20; ++k) expected.push_back(values(straight.next()));

    DataLoader resumed(opts(c.glob(), 6, 10, 42));
    resumed.next();  // a used loader must not carry anything over either
    resumed.restore(saved);
    for (int k = 0; k < 20; ++k) ASSERT_EQ(values(resumed.next()), expected[k]) << "stop " << stop << " batch " << k;
  }
}

TEST(DataLoader, RanksReadDisjointSlicesOfTheGlobalBatch) {
  Corpus c({3000});
  const int64_t B = 2, world = 3;
  auto o = opts(c.glob(), B * world, 12, 7);
  DataLoader global(o);
  std::vector<std::unique_ptr<DataLoader>> ranks;
  for (int64_t r = 0; r < world; ++r) {
    auto ro = opts(c.glob(), B, 12, 7);
    ro.rank = r;
    ro.world = world;
    ranks.push_back(std::make_unique<DataLoader>(ro));
    EXPECT_EQ(ranks.back()->batches_per_epoch(), global.batches_per_epoch());
  }
  for (int step = 0; step < 2 * global.batches_per_epoch() + 3; ++step) {
    const auto g = global.next().inputs.to_vector<int64_t>();
    std::set<int64_t> starts;
    for (int64_t r = 0; r < world; ++r) {
      const auto in = ranks[r]->next().inputs.to_vector<int64_t>();
      const std::vector<int64_t> slice(g.begin() + r * B * 12, g.begin() + (r + 1) * B * 12);
      ASSERT_EQ(in, slice) << "rank " << r << " step " << step;
      for (int64_t row = 0; row < B; ++row) starts.insert(in[row * 12]);
    }
    EXPECT_EQ(starts.size(), static_cast<size_t>(B * world)) << "ranks overlap at step " << step;
  }
}

TEST(DataLoader, SequentialModeGivesFixedBatchesInFileOrder) {
  Corpus c({8 * 10 + 1, 8 * 6 + 1});  // 16 windows, 4 batches of 4
  auto o = opts(c.glob(), 4, 8);
  o.shuffle = false;
  DataLoader dl(o);
  std::vector<std::vector<int64_t>> first_pass;
  for (int k = 0; k < 4; ++k) first_pass.push_back(values(dl.next()));
  // File order: shard 0 windows 0..9, then shard 1 windows 0..5.
  const auto b0 = first_pass[0];
  EXPECT_EQ(b0[0], 0);
  EXPECT_EQ(b0[8], 8);
  EXPECT_EQ(first_pass[2][16], 1000 + 0) << "batch 2 row 2 is shard 1's first window";
  for (int k = 0; k < 4; ++k) EXPECT_EQ(values(dl.next()), first_pass[k]) << "second pass, batch " << k;
  dl.next();
  dl.reset();
  EXPECT_EQ(values(dl.next()), first_pass[0]);
}

TEST(DataLoader, ClearErrors) {
  Corpus c({100});
  std::string msg = error_of([&] { DataLoader(opts(c.glob(), 4, 32)); });  // 3 windows < 4
  EXPECT_NE(msg.find("3 windows"), std::string::npos) << msg;
  EXPECT_NE(msg.find("fewer than one global batch"), std::string::npos) << msg;

  msg = error_of([&] { DataLoader(opts(c.dir / "val_*.bin", 1, 8)); });
  EXPECT_NE(msg.find("matches no files"), std::string::npos) << msg;
  msg = error_of([&] { DataLoader(opts(c.dir / "missing.bin", 1, 8)); });
  EXPECT_NE(msg.find("missing.bin"), std::string::npos) << msg;

  auto o = opts(c.glob(), 1, 8);
  o.rank = 2;
  o.world = 2;
  EXPECT_THROW(DataLoader{o}, zt::Error);
  o = opts(c.glob(), 0, 8);
  EXPECT_THROW(DataLoader{o}, zt::Error);

  o = opts(c.glob(), 1, 8);
  o.vocab_size = 50;  // the shard holds ids up to 99
  msg = error_of([&] { DataLoader{o}; });
  EXPECT_NE(msg.find("token id 99"), std::string::npos) << msg;

  DataLoader dl(opts(c.glob(), 2, 8));
  msg = error_of([&] { dl.restore({0, 6}); });  // 12 windows -> 6 batches: batch 6 does not exist
  EXPECT_NE(msg.find("6 batches"), std::string::npos) << msg;

  test::write_file(c.dir / "train_zz.bin", "not a shard");
  msg = error_of([&] { DataLoader(opts(c.glob(), 1, 8)); });
  EXPECT_NE(msg.find("train_zz.bin"), std::string::npos) << msg;
}

// Regression: shards were memory-mapped, and truncating one while a run read it killed the
// trainer with SIGBUS. Now the next batch is a zt::Error naming the shard.
TEST(DataLoader, AShardTruncatedWhileOpenIsAClearErrorNotASignal) {
  Corpus c({1000});
  DataLoader dl(opts(c.glob(), 4, 16));
  dl.next();
  std::filesystem::resize_file(c.paths[0], kShardHeaderBytes + 10);
  const DataLoaderState before = dl.state();
  const std::string msg = error_of([&] { dl.next(); });
  EXPECT_NE(msg.find("token shard '" + c.paths[0] + "' changed while in use"), std::string::npos) << msg;
  EXPECT_EQ(dl.state(), before) << "a failed batch must not advance the position";
}

// A shard replaced by rename (as prepare_data writes them) keeps serving the file the loader
// opened: same batches as before, no error.
TEST(DataLoader, AShardReplacedByRenameKeepsServingTheOpenedFile) {
  Corpus c({200});
  DataLoader dl(opts(c.glob(), 2, 8));
  write_token_shard(c.paths[0] + ".new", std::vector<int32_t>(300, 7));
  std::filesystem::rename(c.paths[0] + ".new", c.paths[0]);
  for (int k = 0; k < 3; ++k) {
    const std::vector<int64_t> in = dl.next().inputs.to_vector<int64_t>();
    for (size_t i = 0; i < in.size(); i += 8) EXPECT_EQ(in[i] % 8, 0) << "windows of the original file start at p = 8 w";
    for (size_t i = 1; i < in.size(); ++i)
      if (i % 8) EXPECT_EQ(in[i], in[i - 1] + 1) << "the original file holds 0, 1, 2, ...";
  }
}

TEST(DataLoader, LoadsThePreparedBrownShards) {
  const std::string dir = test::data_dir() + "/brown";
  if (!std::filesystem::exists(dir + "/train_000.bin"))
    GTEST_SKIP() << dir << " has no shards (tools/fetch_data.sh --prepare build/bin)";
  auto o = opts(dir + "/train_*.bin", 8, 256);
  o.vocab_size = 50257;
  DataLoader train(o);
  EXPECT_GT(train.num_tokens(), 1'000'000);
  const Batch b = train.next();
  for (int64_t v : b.inputs.to_vector<int64_t>()) ASSERT_LT(v, 50257);
  o.shards = {dir + "/val_000.bin"};
  o.shuffle = false;
  DataLoader val(o);
  EXPECT_GT(val.num_tokens(), 50'000);
  EXPECT_EQ(val.next().inputs.to_vector<int64_t>()[0], 50256) << "a val shard starts with <|endoftext|>";
}

}  // namespace
}  // namespace zt::data
