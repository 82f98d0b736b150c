// Checkpoint files as untrusted input: sizes in a crafted header are checked before anything
// is allocated, odd file names and non-regular files are clear errors (issue 15).
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "framework/error.h"
#include "tests/support/check.h"
#include "tests/support/input_files.h"
#include "tests/support/multi_rank.h"
#include "trainers/checkpoint.h"

#include <zlib.h>

namespace zt {
namespace {

namespace fs = std::filesystem;
using ::zt::test::error_of;

// A checkpoint file (format version 2) with the given tensor index and `data` as its data
// section; the header's checksum is right, so the reader gets as far as the sizes.
void write_crafted(const std::string& path, nlohmann::json tensors, const std::string& data) {
  for (auto& t : tensors) t["crc32"] = 0;
  const nlohmann::json header = {{"format", "ztrain checkpoint"}, {"version", 2},      {"meta", {{"step", 1}}},
                                 {"config", ""},                  {"tensors", tensors}, {"data_bytes", data.size()}};
  const std::string text = header.dump();
  const uint64_t len = text.size();
  const uint32_t crc[2] = {static_cast<uint32_t>(::crc32(0L, reinterpret_cast<const Bytef*>(text.data()),
                                                         static_cast<uInt>(text.size()))),
                           0};
  std::ofstream f(path, std::ios::binary);
  f.write("ZTCKPT02", 8);
  f.write(reinterpret_cast<const char*>(&len), 8);
  f.write(reinterpret_cast<const char*>(crc), 8);
  f << text << data;
}

TEST(CheckpointInput, CraftedTensorSizesAreCheckedBeforeAllocating) {
  test::TempDir dir;
  const std::string path = dir.path() + "/crafted.ckpt";
  const std::string data(64, '\0');
  // 2^32 x 2^32 f32: the element count wraps to 0 in 64 bits, matching nbytes 0.
  write_crafted(path, {{{"name", "w"}, {"dtype", "f32"}, {"shape", {4294967296, 4294967296}}, {"offset", 0}, {"nbytes", 0}}},
                data);
  std::string msg = error_of([&] { read_checkpoint(path); });
  EXPECT_NE(msg.find("checkpoint '" + path + "': tensor 'w': shape [4294967296, 4294967296] is too large"),
            std::string::npos)
      << msg;
  // A huge but representable tensor is refused by its extent, not by a failed allocation.
  write_crafted(path, {{{"name", "w"}, {"dtype", "f32"}, {"shape", {1000000000000}}, {"offset", 0}, {"nbytes", 4000000000000}}},
                data);
  msg = error_of([&] { read_checkpoint(path); });
  EXPECT_NE(msg.find("tensor 'w' has an inconsistent extent"), std::string::npos) << msg;
  // offset + nbytes wrapping past 2^64 must not pass the extent check.
  write_crafted(path, {{{"name", "w"}, {"dtype", "f32"}, {"shape", {4}}, {"offset", UINT64_MAX - 7}, {"nbytes", 16}}}, data);
  msg = error_of([&] { read_checkpoint(path); });
  EXPECT_NE(msg.find("tensor 'w' has an inconsistent extent"), std::string::npos) << msg;
  // A dimension past INT64_MAX reads as negative.
  write_crafted(path, {{{"name", "w"}, {"dtype", "f32"}, {"shape", {UINT64_MAX}}, {"offset", 0}, {"nbytes", 16}}}, data);
  msg = error_of([&] { read_checkpoint(path); });
  EXPECT_NE(msg.find("negative dimension"), std::string::npos) << msg;
  // Numbers a cast would wrap or make undefined: refused, not converted.
  for (const nlohmann::json& bad : {nlohmann::json(-4), nlohmann::json(1e300), nlohmann::json(2.5)}) {
    write_crafted(path, {{{"name", "w"}, {"dtype", "f32"}, {"shape", {bad}}, {"offset", 0}, {"nbytes", 16}}}, data);
    msg = error_of([&] { read_checkpoint(path); });
    EXPECT_NE(msg.find("a dimension is not a non-negative integer: " + bad.dump()), std::string::npos) << msg;
  }
}

// Regression: a file named step_<20+ digits>.ckpt made every checkpoint lookup fail with
// std::stoull's bare "stoull".
TEST(CheckpointInput, AnOversizedStepInAFileNameIsNamed) {
  test::TempDir dir;
  fs::create_directories(dir.path() + "/checkpoints");
  const std::string odd = dir.path() + "/checkpoints/step_99999999999999999999999.ckpt";
  std::ofstream(odd) << "x";
  const std::string msg = error_of([&] { newest_checkpoint(dir.path()); });
  EXPECT_NE(msg.find("checkpoint file '" + odd + "': the step number in its name does not fit"), std::string::npos)
      << msg;
}

TEST(CheckpointInput, AFifoIsRefusedWithoutBlocking) {
  test::TempDir dir;
  const std::string msg =
      test::error_of_reading_fifo(dir.path() + "/step_00000001.ckpt", [](const std::string& p) { read_checkpoint(p); });
  EXPECT_NE(msg.find("step_00000001.ckpt' is a FIFO"), std::string::npos) << msg;
}

}  // namespace
}  // namespace zt
