// io::require_regular_file / read_regular_file: what every reader of a user-named file calls
// first, so a FIFO, directory or device is refused at once with a message naming it.
#include "framework/io/input_file.h"

#include <gtest/gtest.h>

#include <fstream>

#include "tests/support/check.h"
#include "tests/support/input_files.h"
#include "tests/support/multi_rank.h"

namespace zt {
namespace {

using test::error_of;

TEST(InputFile, ReadsARegularFileWhole) {
  test::TempDir dir;
  const std::string p = dir.path() + "/a.txt";
  std::ofstream(p, std::ios::binary) << std::string("x\0y\n", 4);
  EXPECT_EQ(io::read_regular_file(p, "input"), std::string("x\0y\n", 4));
  std::ofstream(dir.path() + "/empty");
  EXPECT_EQ(io::read_regular_file(dir.path() + "/empty", "input"), "");
}

TEST(InputFile, NamesWhatThePathIsInstead) {
  test::TempDir dir;
  std::string msg = error_of([&] { io::require_regular_file(dir.path() + "/nope", "token shard"); });
  EXPECT_EQ(msg, "token shard '" + dir.path() + "/nope' does not exist");
  msg = error_of([&] { io::read_regular_file(dir.path(), "config file"); });
  EXPECT_EQ(msg, "config file '" + dir.path() + "' is a directory, not a regular file");
  msg = error_of([&] { io::read_regular_file("/dev/null", "--file"); });
  EXPECT_EQ(msg, "--file '/dev/null' is a character device, not a regular file");
  msg = test::error_of_reading_fifo(dir.path() + "/fifo", [](const std::string& p) { io::read_regular_file(p, "x"); });
  EXPECT_EQ(msg, "x '" + dir.path() + "/fifo' is a FIFO (named pipe), not a regular file");
}

}  // namespace
}  // namespace zt
