#include "trainers/data/token_shard.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <functional>

#include "framework/error.h"
#include "framework/random.h"
#include "tests/support/check.h"
#include "tests/support/input_files.h"
#include "tests/trainers/data/data_test_util.h"

namespace zt::data {
namespace {

using test::TempDir;

using ::zt::test::error_of;

std::vector<int32_t> random_ids(size_t n) {
  Generator& gen = zt::test::test_generator();
  std::vector<int32_t> ids(n);
  for (int32_t& id : ids) id = static_cast<int32_t>(gen.below(65536));
  if (n >= 2) {
    ids[0] = 0;
    ids[1] = 65535;
  }
  return ids;
}

TEST(TokenShard, WriteReadRoundTripInLlmcFormat) {
  TempDir dir;
  for (size_t n : {size_t{0}, size_t{1}, size_t{1000}, size_t{(1 << 20) + 17}}) {  // the last spans buffer flushes
    const auto ids = random_ids(n);
    const std::string path = dir / ("s" + std::to_string(n) + ".bin");
    write_token_shard(path, ids);
    const std::string bytes = test::read_file(path);
    ASSERT_EQ(bytes.size(), 1024 + 2 * n);
    int32_t header[256];
    std::memcpy(header, bytes.data(), sizeof(header));
    EXPECT_EQ(header[0], 20240520);
    EXPECT_EQ(header[1], 1);
    EXPECT_EQ(header[2], static_cast<int32_t>(n));
    for (int i = 3; i < 256; ++i) ASSERT_EQ(header[i], 0) << "header int " << i;
    const auto back = read_token_shard(path);
    ASSERT_EQ(back.size(), n);
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(back[i], static_cast<uint32_t>(ids[i])) << i;
    const TokenShard shard = TokenShard::open(path);
    EXPECT_EQ(shard.size(), static_cast<int64_t>(n));
    EXPECT_EQ(shard.version(), 1);
    if (n > 1) {
      EXPECT_EQ(shard.max_token(), 65535u);
    }
    EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  }
}

// Version 2: the same header with [1] = 2, then little-endian uint32 ids.
TEST(TokenShard, Version2RoundTripHoldsIdsAbove65535) {
  TempDir dir;
  Generator& gen = zt::test::test_generator();
  for (size_t n : {size_t{0}, size_t{3}, size_t{(1 << 20) + 5}}) {
    std::vector<int32_t> ids(n);
    for (int32_t& id : ids) id = static_cast<int32_t>(gen.below(200019));
    if (n >= 3) {
      ids[0] = 0;
      ids[1] = 65536;
      ids[2] = INT32_MAX;
    }
    const std::string path = dir / ("v2_" + std::to_string(n) + ".bin");
    write_token_shard(path, ids, kShardVersionU32);
    const std::string bytes = test::read_file(path);
    ASSERT_EQ(bytes.size(), 1024 + 4 * n);
    int32_t header[256];
    std::memcpy(header, bytes.data(), sizeof(header));
    EXPECT_EQ(header[0], 20240520);
    EXPECT_EQ(header[1], 2);
    EXPECT_EQ(header[2], static_cast<int32_t>(n));
    for (int i = 3; i < 256; ++i) ASSERT_EQ(header[i], 0) << "header int " << i;
    if (n >= 3) {
      const unsigned char le[4] = {0x00, 0x00, 0x01, 0x00};  // 65536, little-endian
      EXPECT_EQ(std::memcmp(bytes.data() + 1024 + 4, le, 4), 0);
    }
    const auto back = read_token_shard(path);
    ASSERT_EQ(back.size(), n);
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(back[i], static_cast<uint32_t>(ids[i])) << i;
    const TokenShard shard = TokenShard::open(path);
    EXPECT_EQ(shard.version(), 2);
    EXPECT_EQ(shard.size(), static_cast<int64_t>(n));
    if (n >= 3) {
      EXPECT_EQ(shard.max_token(), static_cast<uint32_t>(INT32_MAX));
      std::vector<uint32_t> got(2);
      shard.read(1, 2, got.data());
      EXPECT_EQ(got, (std::vector<uint32_t>{65536, static_cast<uint32_t>(INT32_MAX)}));
    }
  }
}

TEST(TokenShard, VersionForAVocabulary) {
  EXPECT_EQ(shard_version_for_vocab(50257), 1);
  EXPECT_EQ(shard_version_for_vocab(65536), 1) << "ids 0..65535 fit uint16";
  EXPECT_EQ(shard_version_for_vocab(65537), 2);
  EXPECT_EQ(shard_version_for_vocab(200019), 2);
  EXPECT_EQ(shard_token_bytes(1), 2);
  EXPECT_EQ(shard_token_bytes(2), 4);
  EXPECT_THROW(shard_token_bytes(3), zt::Error);
  TempDir dir;
  const std::string msg = error_of([&] { TokenShardWriter w(dir / "v3.bin", 3); });
  EXPECT_NE(msg.find("version 3"), std::string::npos) << msg;
}

TEST(TokenShard, WriterRejectsIdsThatDoNotFitAndLeavesNoPartialFile) {
  TempDir dir;
  const std::string path = dir / "bad.bin";
  std::string msg = error_of([&] { write_token_shard(path, {1, 2, 70000}); });
  EXPECT_NE(msg.find("70000"), std::string::npos) << msg;
  EXPECT_THROW(write_token_shard(path, {-1}), zt::Error);
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  msg = error_of([&] { write_token_shard(path, {1, -5}, kShardVersionU32); });
  EXPECT_NE(msg.find("-5"), std::string::npos) << msg;
  EXPECT_NE(msg.find("32-bit"), std::string::npos) << msg;
  EXPECT_FALSE(std::filesystem::exists(path));
  {
    TokenShardWriter w(path);
    w.append({1, 2, 3});
  }  // never finished
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
}

TEST(TokenShard, CorruptTruncatedAndForeignFilesAreClearErrors) {
  TempDir dir;
  const std::string good = dir / "good.bin";
  write_token_shard(good, random_ids(100));
  const std::string bytes = test::read_file(good);
  const auto expect_error = [&](const std::string& name, const std::string& content,
                                const std::vector<std::string>& words) {
    const std::string path = dir / name;
    test::write_file(path, content);
    const std::string msg = error_of([&] { TokenShard::open(path); });
    EXPECT_NE(msg.find(path), std::string::npos) << "message must name the file: " << msg;
    for (const auto& w : words) EXPECT_NE(msg.find(w), std::string::npos) << "missing '" << w << "' in: " << msg;
  };
  expect_error("cut_body.bin", bytes.substr(0, bytes.size() - 3), {"truncated", "100 tokens"});
  expect_error("cut_header.bin", bytes.substr(0, 500), {"truncated", "500 bytes"});
  expect_error("empty.bin", "", {"truncated"});
  expect_error("trailing.bin", bytes + "xx", {"2 bytes after"});
  expect_error("text.bin", std::string(2000, 'x'), {"not a token shard", "magic"});
  std::string v3 = bytes;
  v3[4] = 3;
  expect_error("v3.bin", v3, {"version 3"});
  // A version 1 body under a version 2 header: 100 uint16 ids are only 50 uint32 ones.
  std::string v2 = bytes;
  v2[4] = 2;
  expect_error("v2_short.bin", v2, {"truncated", "100 tokens of 4 bytes", "version 2"});

  // Version 2 files: the sizes are checked against 4 bytes a token.
  const std::string good2 = dir / "good2.bin";
  write_token_shard(good2, random_ids(100), kShardVersionU32);
  const std::string bytes2 = test::read_file(good2);
  ASSERT_EQ(bytes2.size(), 1024u + 400u);
  expect_error("v2_cut.bin", bytes2.substr(0, bytes2.size() - 2), {"truncated", "100 tokens"});
  expect_error("v2_trailing.bin", bytes2 + "abcd", {"4 bytes after", "version 2"});
  std::string v1 = bytes2;
  v1[4] = 1;
  expect_error("v1_long.bin", v1, {"200 bytes after", "version 1"});
  std::string negative = bytes;
  const int32_t minus_one = -1;
  std::memcpy(negative.data() + 8, &minus_one, 4);
  expect_error("negative.bin", negative, {"negative token count"});

  const std::string missing = error_of([&] { TokenShard::open(dir / "nope.bin"); });
  EXPECT_NE(missing.find("nope.bin"), std::string::npos) << missing;
}

TEST(TokenShard, AFifoIsRefusedWithoutBlocking) {
  TempDir dir;
  const std::string msg =
      zt::test::error_of_reading_fifo(dir / "pipe.bin", [](const std::string& p) { TokenShard::open(p); });
  EXPECT_NE(msg.find("token shard '" + (dir / "pipe.bin") + "' is a FIFO"), std::string::npos) << msg;
}

TEST(TokenShard, ReadsRangesAndRefusesOnesOutside) {
  TempDir dir;
  const std::vector<int32_t> ids = random_ids(50);
  write_token_shard(dir / "s.bin", ids);
  const TokenShard s = TokenShard::open(dir / "s.bin");
  std::vector<uint32_t> got(10);
  s.read(40, 10, got.data());
  for (int i = 0; i < 10; ++i) EXPECT_EQ(got[i], static_cast<uint32_t>(ids[40 + i]));
  const std::string msg = error_of([&] { s.read(41, 10, got.data()); });
  EXPECT_NE(msg.find("tokens [41, 51) are outside its 50 tokens"), std::string::npos) << msg;
}

}  // namespace
}  // namespace zt::data
