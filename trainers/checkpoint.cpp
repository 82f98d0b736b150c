#include "trainers/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>

#include "framework/checked_size.h"
#include "framework/error.h"
#include "framework/io/input_file.h"

namespace zt {

namespace fs = std::filesystem;

namespace {

constexpr char kMagic[8] = {'Z', 'T', 'C', 'K', 'P', 'T', '0', '1'};
constexpr uint64_t kAlign = 64;
constexpr uint64_t kMaxHeader = 1ull << 30;

uint64_t align_up(uint64_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

class File {  // an fd that closes itself; errors name the path
 public:
  File(const std::string& path, int flags) : path_(path), fd_(::open(path.c_str(), flags, 0644)) {
    ZT_CHECK(fd_ >= 0, "cannot open '", path, "': ", std::strerror(errno));
  }
  ~File() {
    if (fd_ >= 0) ::close(fd_);
  }
  void write_all(const void* data, size_t n) {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
      ssize_t w = ::write(fd_, p, n);
      if (w < 0 && errno == EINTR) continue;
      ZT_CHECK(w > 0, "writing '", path_, "' failed: ", std::strerror(errno));
      p += w;
      n -= static_cast<size_t>(w);
    }
  }
  void sync() { ZT_CHECK(::fsync(fd_) == 0, "fsync of '", path_, "' failed: ", std::strerror(errno)); }
  void close() {
    int rc = ::close(fd_);
    fd_ = -1;
    ZT_CHECK(rc == 0, "closing '", path_, "' failed: ", std::strerror(errno));
  }

 private:
  std::string path_;
  int fd_;
};

void sync_dir(const fs::path& dir) {
  int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return;  // some filesystems refuse; the rename is still atomic
  ::fsync(fd);
  ::close(fd);
}

std::string tmp_name(const std::string& path) { return path + ".tmp." + std::to_string(::getpid()); }

template <class WriteBody>
void write_atomic(const std::string& path, WriteBody&& body) {
  const fs::path target(path);
  if (target.has_parent_path()) fs::create_directories(target.parent_path());
  const std::string tmp = tmp_name(path);
  try {
    File f(tmp, O_WRONLY | O_CREAT | O_TRUNC);
    body(f);
    f.sync();
    f.close();
    ZT_CHECK(::rename(tmp.c_str(), path.c_str()) == 0, "renaming '", tmp, "' to '", path,
             "' failed: ", std::strerror(errno));
  } catch (...) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw;
  }
  sync_dir(target.parent_path());
}

uint64_t step_of(const fs::path& p) {  // step_00000100.ckpt -> 100; not a checkpoint -> UINT64_MAX
  static const std::regex re("step_([0-9]+)\\.ckpt");
  std::smatch m;
  const std::string name = p.filename().string();
  if (!std::regex_match(name, m, re)) return UINT64_MAX;
  uint64_t step = 0;
  const std::string digits = m[1].str();
  const auto r = std::from_chars(digits.data(), digits.data() + digits.size(), step);
  ZT_CHECK(r.ec == std::errc() && step < UINT64_MAX, "checkpoint file '", p.string(),
           "': the step number in its name does not fit in 64 bits (rename or remove the file)");
  return step;
}

// A count of the header: JSON's other numbers (negative, fractional, 1e300) would wrap or be
// undefined when cast, so they are refused here.
uint64_t header_count(const nlohmann::json& v, const std::string& path, const char* what) {
  ZT_CHECK(v.is_number_unsigned(), "checkpoint '", path, "' has a malformed header: ", what,
           " is not a non-negative integer: ", v.dump());
  return v.get<uint64_t>();
}

std::vector<fs::path> list_checkpoints(const fs::path& dir) {  // ascending step
  std::vector<fs::path> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file() && step_of(e.path()) != UINT64_MAX) out.push_back(e.path());
  std::sort(out.begin(), out.end(), [](const fs::path& a, const fs::path& b) { return step_of(a) < step_of(b); });
  return out;
}

}  // namespace

void write_file_atomic(const std::string& path, const std::string& text) {
  write_atomic(path, [&](File& f) { f.write_all(text.data(), text.size()); });
}

void write_checkpoint(const std::string& path, const Checkpoint& ckpt) {
  // Index first: offsets are relative to the start of the data section.
  nlohmann::json index = nlohmann::json::array();
  std::vector<Tensor> host;
  uint64_t offset = 0;
  for (const auto& [name, t] : ckpt.tensors) {
    Tensor h = t.to(Device::cpu()).contiguous();
    index.push_back({{"name", name},
                     {"dtype", dtype_name(h.dtype())},
                     {"shape", h.shape()},
                     {"offset", offset},
                     {"nbytes", h.nbytes()}});
    offset = align_up(offset + h.nbytes());
    host.push_back(h);
  }
  nlohmann::json header = {{"format", "ztrain checkpoint"},
                           {"version", 1},
                           {"meta", ckpt.meta},
                           {"config", ckpt.config_yaml},
                           {"tensors", index},
                           {"data_bytes", offset}};
  std::string htext = header.dump();
  htext.resize(align_up(htext.size() + 16) - 16, ' ');  // data starts 64-byte aligned in the file
  write_atomic(path, [&](File& f) {
    const uint64_t hlen = htext.size();
    f.write_all(kMagic, 8);
    f.write_all(&hlen, 8);
    f.write_all(htext.data(), htext.size());
    static const char zeros[kAlign] = {};
    uint64_t written = 0;
    for (const Tensor& h : host) {
      f.write_all(h.raw_data(), h.nbytes());
      written += h.nbytes();
      const uint64_t pad = align_up(written) - written;
      f.write_all(zeros, pad);
      written += pad;
    }
  });
}

Checkpoint read_checkpoint(const std::string& path) {
  io::require_regular_file(path, "checkpoint");
  const uint64_t file_size = fs::file_size(path);
  std::ifstream in(path, std::ios::binary);
  ZT_CHECK(in, "cannot open checkpoint '", path, "'");
  char magic[8] = {};
  uint64_t hlen = 0;
  in.read(magic, 8);
  ZT_CHECK(in && std::memcmp(magic, kMagic, 8) == 0, "'", path, "' is not a ztrain checkpoint (bad magic)");
  in.read(reinterpret_cast<char*>(&hlen), 8);
  ZT_CHECK(in && hlen <= kMaxHeader && 16 + hlen <= file_size, "checkpoint '", path,
           "' is truncated or corrupt (header of ", hlen, " bytes in a file of ", file_size, ")");
  std::string htext(hlen, '\0');
  in.read(htext.data(), static_cast<std::streamsize>(hlen));
  ZT_CHECK(in, "checkpoint '", path, "' is truncated (header)");
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(htext);
  } catch (const nlohmann::json::exception& e) {
    ZT_FAIL("checkpoint '", path, "' has a corrupt header: ", e.what());
  }
  Checkpoint ckpt;
  try {
    ZT_CHECK(header.at("version") == 1, "checkpoint '", path, "' has format version ",
             header.at("version").dump(), "; this ztrain reads version 1");
    const uint64_t data_bytes = header_count(header.at("data_bytes"), path, "data_bytes");
    const uint64_t data_start = 16 + hlen;
    ZT_CHECK(file_size - data_start == data_bytes, "checkpoint '", path, "' is truncated: ", file_size,
             " bytes, expected ", data_start, " + ", data_bytes);
    ckpt.meta = header.at("meta");
    ckpt.config_yaml = header.at("config").get<std::string>();
    for (const auto& e : header.at("tensors")) {
      const std::string name = e.at("name").get<std::string>();
      const nlohmann::json& dims = e.at("shape");
      ZT_CHECK(dims.is_array(), "checkpoint '", path, "': tensor '", name, "' has no shape list");
      Shape shape;
      for (const auto& d : dims) shape.push_back(static_cast<int64_t>(header_count(d, path, "a dimension")));
      const DType dtype = parse_dtype(e.at("dtype").get<std::string>());
      const uint64_t off = header_count(e.at("offset"), path, "offset");
      const uint64_t nbytes = header_count(e.at("nbytes"), path, "nbytes");
      // Sizes from the file are checked before anything is allocated.
      const std::string what = "checkpoint '" + path + "': tensor '" + name + "'";
      ZT_CHECK(checked_nbytes(shape, dtype, what) == nbytes && nbytes <= data_bytes && off <= data_bytes - nbytes, what,
               " has an inconsistent extent");
      Tensor t = Tensor::empty(shape, dtype);
      in.seekg(static_cast<std::streamoff>(data_start + off));
      in.read(static_cast<char*>(t.raw_data()), static_cast<std::streamsize>(nbytes));
      ZT_CHECK(in, "checkpoint '", path, "' is truncated in tensor '", name, "'");
      ckpt.tensors.emplace(name, std::move(t));
    }
  } catch (const nlohmann::json::exception& e) {
    ZT_FAIL("checkpoint '", path, "' has a malformed header: ", e.what());
  }
  return ckpt;
}

std::string checkpoint_path(const std::string& run_dir, int64_t step) {
  char name[64];
  std::snprintf(name, sizeof name, "step_%08lld.ckpt", static_cast<long long>(step));
  return (fs::path(run_dir) / "checkpoints" / name).string();
}

std::optional<std::string> newest_checkpoint(const std::string& where) {
  std::error_code ec;
  if (fs::is_regular_file(where, ec)) return where;
  for (const fs::path& dir : {fs::path(where) / "checkpoints", fs::path(where)}) {
    auto all = list_checkpoints(dir);
    if (!all.empty()) return all.back().string();
  }
  return std::nullopt;
}

void prune_checkpoints(const std::string& run_dir, int64_t keep) {
  if (keep <= 0) return;
  auto all = list_checkpoints(fs::path(run_dir) / "checkpoints");
  for (size_t i = 0; i + static_cast<size_t>(keep) < all.size(); ++i) {
    std::error_code ec;
    fs::remove(all[i], ec);
  }
}

}  // namespace zt
