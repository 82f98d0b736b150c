// .npy read/write: round trips of every supported dtype and shape, and clear errors for
// files that are not what we read.
#include "framework/io/npy.h"

#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "tests/support/check.h"
#include "tests/support/input_files.h"
#include "tests/support/multi_rank.h"

namespace zt {
namespace {

std::string error_of_read(const std::string& path) {
  try {
    io::read_npy(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// A hand-made .npy v1.0 file: header dict (padded to 64) and raw payload.
void write_raw(const std::string& path, const std::string& dict, const std::string& payload,
               const std::string& magic = std::string("\x93NUMPY\x01\x00", 8)) {
  std::string header = dict;
  while ((10 + header.size() + 1) % 64) header += ' ';
  header += '\n';
  std::ofstream f(path, std::ios::binary);
  f << magic;
  f.put(static_cast<char>(header.size() & 0xff));
  f.put(static_cast<char>(header.size() >> 8));
  f << header << payload;
}

TEST(Npy, RoundTripEveryDtypeAndShape) {
  test::TempDir dir;
  for (DType dt : {DType::f32, DType::f64, DType::i32, DType::i64})
    for (const Shape& shape : {Shape{}, Shape{1}, Shape{7}, Shape{3, 5}, Shape{2, 3, 4}, Shape{0, 3}}) {
      SCOPED_TRACE(detail::cat(dtype_name(dt), " ", shape_str(shape)));
      Tensor t = Tensor::randn(shape, DType::f64, test::test_generator(), 0, 100).to(dt);
      const std::string path = dir.path() + "/t.npy";
      io::write_npy(path, t);
      Tensor back = io::read_npy(path);
      EXPECT_EQ(back.dtype(), dt);
      EXPECT_EQ(back.shape(), shape);
      EXPECT_TRUE(test::close_rel(back, t, 0));
    }
}

TEST(Npy, Bf16IsWrittenAsF32AndStridedTensorsInCOrder) {
  test::TempDir dir;
  const Tensor t = Tensor::randn({4, 6}, DType::f32, test::test_generator()).to(DType::bf16);
  io::write_npy(dir.path() + "/b.npy", t);
  const Tensor b = io::read_npy(dir.path() + "/b.npy");
  EXPECT_EQ(b.dtype(), DType::f32);
  EXPECT_TRUE(test::close_rel(b, t, 0));
  const Tensor tr = Tensor::randn({3, 5}, DType::f64, test::test_generator()).transpose(0, 1);
  io::write_npy(dir.path() + "/t.npy", tr);
  EXPECT_TRUE(test::close_rel(io::read_npy(dir.path() + "/t.npy"), tr, 0));
}

TEST(Npy, ReadsHandWrittenHeadersLikeNumpys) {
  test::TempDir dir;
  const std::string path = dir.path() + "/h.npy";
  const int32_t data[3] = {5, -6, 7};
  write_raw(path, "{'descr': '<i4', 'fortran_order': False, 'shape': (3,), }",
            std::string(reinterpret_cast<const char*>(data), sizeof data));
  EXPECT_EQ(io::read_npy(path).to_vector<int32_t>(), (std::vector<int32_t>{5, -6, 7}));
  // Different key order and spacing, version 2.0 header length field.
  const double d[2] = {1.5, -2.5};
  std::string dict = "{\"shape\":(1,2),\"fortran_order\":False,\"descr\":\"<f8\"}";
  std::string header = dict;
  while ((12 + header.size() + 1) % 64) header += ' ';
  header += '\n';
  std::ofstream f(path, std::ios::binary);
  f << std::string("\x93NUMPY\x02\x00", 8);
  const uint32_t len = static_cast<uint32_t>(header.size());
  f.write(reinterpret_cast<const char*>(&len), 4);
  f << header << std::string(reinterpret_cast<const char*>(d), sizeof d);
  f.close();
  const Tensor t = io::read_npy(path);
  EXPECT_EQ(t.shape(), (Shape{1, 2}));
  EXPECT_EQ(t.to_vector<double>(), (std::vector<double>{1.5, -2.5}));
}

TEST(Npy, ClearErrors) {
  test::TempDir dir;
  const std::string p = dir.path() + "/bad.npy";
  EXPECT_NE(error_of_read(dir.path() + "/missing.npy").find("missing.npy' does not exist"), std::string::npos);
  std::ofstream(p) << "a,b,c\n1,2,3\n";
  EXPECT_NE(error_of_read(p).find("not a .npy file"), std::string::npos);
  const std::string four(16, '\0');
  write_raw(p, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", four);
  EXPECT_NE(error_of_read(p).find("Fortran-order arrays are not supported"), std::string::npos);
  write_raw(p, "{'descr': '>f4', 'fortran_order': False, 'shape': (4,), }", four);
  EXPECT_NE(error_of_read(p).find("big-endian dtype '>f4'"), std::string::npos);
  write_raw(p, "{'descr': '<f2', 'fortran_order': False, 'shape': (8,), }", four);
  EXPECT_NE(error_of_read(p).find("dtype '<f2' is not supported"), std::string::npos);
  write_raw(p, "{'descr': '|b1', 'fortran_order': False, 'shape': (16,), }", four);
  EXPECT_NE(error_of_read(p).find("dtype '|b1' is not supported"), std::string::npos);
  write_raw(p, "{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }", four);
  EXPECT_NE(error_of_read(p).find("truncated data: shape [5] <f4 needs 20 bytes, found 16"), std::string::npos);
  write_raw(p, "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", four);
  EXPECT_NE(error_of_read(p).find("trailing bytes"), std::string::npos);
  write_raw(p, "{'descr': '<f4', 'shape': (4,), }", four);
  EXPECT_NE(error_of_read(p).find("not a valid .npy header"), std::string::npos);
  write_raw(p, "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", four, std::string("\x93NUMPY\x09\x00", 8));
  EXPECT_NE(error_of_read(p).find("unsupported .npy format version 9"), std::string::npos);
  EXPECT_NE(error_of_read(p).find(p), std::string::npos);  // every message names the file
}

// Regression: a shape whose element count wraps past 2^64 made the old reader allocate a
// few bytes and read past them (xent crashed with SIGSEGV).
TEST(Npy, ShapesFromTheFileAreCheckedBeforeAllocating) {
  test::TempDir dir;
  const std::string p = dir.path() + "/huge.npy";
  const std::string four(16, '\0');
  // 2^32 x 2^32 elements: the product is exactly 2^64, i.e. 0 after wrapping.
  write_raw(p, "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", four);
  std::string e = error_of_read(p);
  EXPECT_NE(e.find(p), std::string::npos) << e;
  EXPECT_NE(e.find("is too large: its dimensions multiply past 2^63-1"), std::string::npos) << e;
  // Fits in int64 as elements but not as bytes.
  write_raw(p, "{'descr': '<f8', 'fortran_order': False, 'shape': (999999999999999, 5000), }", four);
  e = error_of_read(p);
  EXPECT_NE(e.find("more than 2^63-1 bytes"), std::string::npos) << e;
  // No element, but dimensions whose strides would overflow.
  write_raw(p, "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 4294967296, 4294967296), }", "");
  e = error_of_read(p);
  EXPECT_NE(e.find("is too large"), std::string::npos) << e;
  // Representable but far larger than the file: refused before a terabyte allocation.
  write_raw(p, "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000,), }", four);
  e = error_of_read(p);
  EXPECT_NE(e.find("needs 4000000000000 bytes, found 16"), std::string::npos) << e;
}

TEST(Npy, RefusesAFifoAndADirectoryWithoutBlocking) {
  test::TempDir dir;
  const std::string e = test::error_of_reading_fifo(dir.path() + "/pipe.npy", [](const std::string& p) { io::read_npy(p); });
  EXPECT_NE(e.find("pipe.npy' is a FIFO (named pipe), not a regular file"), std::string::npos) << e;
  EXPECT_NE(error_of_read(dir.path()).find("is a directory"), std::string::npos);
}

}  // namespace
}  // namespace zt
