#include "framework/io/npy.h"

#include <bit>
#include <cctype>
#include <cstring>
#include <fstream>

#include "framework/checked_size.h"
#include "framework/error.h"
#include "framework/io/input_file.h"

namespace zt::io {

static_assert(std::endian::native == std::endian::little, "npy I/O assumes a little-endian host");

namespace {

constexpr char kMagic[] = "\x93NUMPY";

const char* descr_of(DType t) {
  switch (t) {
    case DType::f32: return "<f4";
    case DType::f64: return "<f8";
    case DType::i32: return "<i4";
    case DType::i64: return "<i8";
    default: return nullptr;
  }
}

// A minimal reader of the header dict, e.g. {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
class HeaderParser {
 public:
  HeaderParser(std::string text, std::string path) : s_(std::move(text)), path_(std::move(path)) {}

  void parse(std::string& descr, bool& fortran, Shape& shape) {
    bool have_descr = false, have_fortran = false, have_shape = false;
    expect('{');
    for (;;) {
      skip_ws();
      if (peek() == '}') break;
      const std::string key = quoted();
      expect(':');
      if (key == "descr") {
        descr = quoted();
        have_descr = true;
      } else if (key == "fortran_order") {
        skip_ws();
        if (s_.compare(i_, 4, "True") == 0) fortran = true, i_ += 4;
        else if (s_.compare(i_, 5, "False") == 0) fortran = false, i_ += 5;
        else fail("fortran_order is neither True nor False");
        have_fortran = true;
      } else if (key == "shape") {
        shape = tuple();
        have_shape = true;
      } else {
        fail("unexpected key '" + key + "'");
      }
      skip_ws();
      if (peek() == ',') ++i_;
    }
    if (!have_descr || !have_fortran || !have_shape) fail("missing 'descr', 'fortran_order' or 'shape'");
  }

 private:
  [[noreturn]] void fail(const std::string& why) const {
    ZT_FAIL(path_, ": not a valid .npy header (", why, "): ", s_);
  }
  void skip_ws() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
  }
  char peek() {
    skip_ws();
    return i_ < s_.size() ? s_[i_] : '\0';
  }
  void expect(char c) {
    if (peek() != c) fail(std::string("expected '") + c + "'");
    ++i_;
  }
  std::string quoted() {
    const char q = peek();
    if (q != '\'' && q != '"') fail("expected a quoted string");
    const size_t end = s_.find(q, i_ + 1);
    if (end == std::string::npos) fail("unterminated string");
    std::string r = s_.substr(i_ + 1, end - i_ - 1);
    i_ = end + 1;
    return r;
  }
  Shape tuple() {
    Shape shape;
    expect('(');
    for (;;) {
      if (peek() == ')') break;
      size_t start = i_;
      while (i_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[i_]))) ++i_;
      if (start == i_ || i_ - start > 15) fail("bad dimension in shape");
      shape.push_back(std::stoll(s_.substr(start, i_ - start)));
      if (peek() == ',') ++i_;
    }
    ++i_;
    return shape;
  }

  std::string s_, path_;
  size_t i_ = 0;
};

}  // namespace

Tensor read_npy(const std::string& path) {
  require_regular_file(path, ".npy file");
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  ZT_CHECK(f.good(), path, ": cannot open for reading");
  const auto file_bytes = static_cast<int64_t>(f.tellg());
  f.seekg(0);
  char magic[8] = {};
  f.read(magic, 8);
  ZT_CHECK(f.gcount() == 8 && std::memcmp(magic, kMagic, 6) == 0, path,
           ": not a .npy file (it does not start with \\x93NUMPY)");
  const int major = static_cast<unsigned char>(magic[6]);
  ZT_CHECK(major >= 1 && major <= 3, path, ": unsupported .npy format version ", major, ".",
           static_cast<int>(static_cast<unsigned char>(magic[7])));
  uint32_t header_len = 0;
  if (major == 1) {
    unsigned char b[2] = {};
    f.read(reinterpret_cast<char*>(b), 2);
    header_len = b[0] | (b[1] << 8);
  } else {
    unsigned char b[4] = {};
    f.read(reinterpret_cast<char*>(b), 4);
    header_len = b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<uint32_t>(b[3]) << 24);
  }
  ZT_CHECK(f.good() && header_len < (1u << 20), path, ": truncated or corrupt .npy header");
  std::string header(header_len, '\0');
  f.read(header.data(), header_len);
  ZT_CHECK(f.gcount() == static_cast<std::streamsize>(header_len), path, ": truncated .npy header");

  std::string descr;
  bool fortran = false;
  Shape shape;
  HeaderParser(header, path).parse(descr, fortran, shape);
  ZT_CHECK(!fortran, path, ": Fortran-order arrays are not supported (save with np.ascontiguousarray)");
  DType dtype;
  if (descr == "<f4") dtype = DType::f32;
  else if (descr == "<f8") dtype = DType::f64;
  else if (descr == "<i4") dtype = DType::i32;
  else if (descr == "<i8") dtype = DType::i64;
  else if (descr.size() > 1 && descr[0] == '>')
    ZT_FAIL(path, ": big-endian dtype '", descr, "' is not supported (little-endian f4, f8, i4, i8 only)");
  else
    ZT_FAIL(path, ": dtype '", descr, "' is not supported (little-endian f4, f8, i4, i8 only)");

  // Sizes come from the file: checked before anything is allocated or read.
  const auto nbytes = static_cast<int64_t>(checked_nbytes(shape, dtype, path));
  const int64_t data_bytes = file_bytes - static_cast<int64_t>(f.tellg());
  ZT_CHECK(data_bytes >= nbytes, path, ": truncated data: shape ", shape_str(shape), " ", descr, " needs ", nbytes,
           " bytes, found ", data_bytes);
  ZT_CHECK(data_bytes == nbytes, path, ": ", data_bytes - nbytes, " trailing bytes after the ", shape_str(shape),
           " array");
  Tensor t = Tensor::empty(shape, dtype);
  f.read(static_cast<char*>(t.raw_data()), static_cast<std::streamsize>(nbytes));
  ZT_CHECK(f.gcount() == static_cast<std::streamsize>(nbytes), path, ": truncated data (the file shrank while read)");
  return t;
}

void write_npy(const std::string& path, const Tensor& tensor) {
  ZT_CHECK(tensor.defined(), "write_npy ", path, ": undefined tensor");
  Tensor t = tensor.to(Device::cpu());
  if (t.dtype() == DType::bf16) t = t.to(DType::f32);
  t = t.contiguous();
  const char* descr = descr_of(t.dtype());
  ZT_CHECK(descr, "write_npy ", path, ": dtype ", dtype_name(t.dtype()), " has no .npy form here");

  // Python tuple syntax: "()", "(5,)", "(2, 3)".
  std::string shape = "(";
  for (size_t i = 0; i < t.shape().size(); ++i) shape += (i ? ", " : "") + std::to_string(t.shape()[i]);
  shape += t.dim() == 1 ? ",)" : ")";
  std::string header = std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  // Version 1.0: magic (6) + version (2) + length (2) + header, padded with spaces to a
  // multiple of 64 and ended by '\n'.
  const size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header += '\n';
  ZT_CHECK(header.size() < 65536, "write_npy ", path, ": header too long");

  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  ZT_CHECK(f.good(), path, ": cannot open for writing");
  f.write(kMagic, 6);
  const char version[2] = {1, 0};
  f.write(version, 2);
  const unsigned char len[2] = {static_cast<unsigned char>(header.size() & 0xff),
                                static_cast<unsigned char>(header.size() >> 8)};
  f.write(reinterpret_cast<const char*>(len), 2);
  f.write(header.data(), static_cast<std::streamsize>(header.size()));
  f.write(static_cast<const char*>(t.raw_data()), static_cast<std::streamsize>(t.nbytes()));
  ZT_CHECK(f.good(), path, ": write failed");
}

}  // namespace zt::io
