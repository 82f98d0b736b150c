#include "trainers/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <zlib.h>

#include <algorithm>
#include <bit>
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

// The format is little-endian (checkpoint.h); header fields and tensor bytes are written and
// read as they lie in memory.
static_assert(std::endian::native == std::endian::little, "checkpoints are little-endian; add byte swapping");

namespace {

constexpr char kMagic[8] = {'Z', 'T', 'C', 'K', 'P', 'T', '0', '2'};
constexpr char kMagicV1[8] = {'Z', 'T', 'C', 'K', 'P', 'T', '0', '1'};
constexpr int kVersion = 2;
constexpr uint64_t kPrefix = 24;  // magic, header length, header crc32, zero
constexpr uint64_t kAlign = 64;
constexpr uint64_t kMaxHeader = 1ull << 30;

uint32_t crc32_of(const void* data, size_t n, uint32_t crc = 0) {
  return static_cast<uint32_t>(::crc32_z(crc, static_cast<const Bytef*>(data), n));
}

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

std::vector<fs::path> list_checkpoint_paths(const fs::path& dir) {  // ascending step
  std::vector<fs::path> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file() && step_of(e.path()) != UINT64_MAX) out.push_back(e.path());
  std::sort(out.begin(), out.end(), [](const fs::path& a, const fs::path& b) { return step_of(a) < step_of(b); });
  return out;
}

}  // namespace

std::vector<std::string> list_checkpoints(const std::string& checkpoints_dir) {
  std::vector<std::string> out;
  for (const fs::path& p : list_checkpoint_paths(checkpoints_dir)) out.push_back(p.string());
  return out;
}

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
                     {"nbytes", h.nbytes()},
                     {"crc32", crc32_of(h.raw_data(), h.nbytes())}});
    offset = align_up(offset + h.nbytes());
    host.push_back(h);
  }
  nlohmann::json header = {{"format", "ztrain checkpoint"},
                           {"version", kVersion},
                           {"meta", ckpt.meta},
                           {"config", ckpt.config_yaml},
                           {"tensors", index},
                           {"data_bytes", offset}};
  std::string htext = header.dump();
  htext.resize(align_up(htext.size() + kPrefix) - kPrefix, ' ');  // data starts 64-byte aligned in the file
  write_atomic(path, [&](File& f) {
    const uint64_t hlen = htext.size();
    const uint32_t hcrc[2] = {crc32_of(htext.data(), htext.size()), 0};
    f.write_all(kMagic, 8);
    f.write_all(&hlen, 8);
    f.write_all(hcrc, 8);
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

namespace {

// An open checkpoint whose header has been read and checked; tensors are read on demand.
struct OpenCheckpoint {
  std::string path;
  std::ifstream in;
  CheckpointHeader header;
  uint64_t data_start = 0;

  explicit OpenCheckpoint(const std::string& p) : path(p) {
    io::require_regular_file(path, "checkpoint");  // never blocks on a FIFO
    const uint64_t file_size = fs::file_size(path);
    in.open(path, std::ios::binary);
    ZT_CHECK(in, "cannot open checkpoint '", path, "'");
    char magic[8] = {};
    in.read(magic, 8);
    ZT_CHECK(!(in && std::memcmp(magic, kMagicV1, 8) == 0), "checkpoint '", path,
             "' is format version 1 (written by an older ztrain, without checksums); this ztrain reads version ",
             kVersion, " only: finish that run with the ztrain that wrote it, or start over with --overwrite");
    ZT_CHECK(in && std::memcmp(magic, kMagic, 8) == 0, "'", path, "' is not a ztrain checkpoint (bad magic)");
    uint64_t hlen = 0;
    uint32_t hcrc[2] = {};
    in.read(reinterpret_cast<char*>(&hlen), 8);
    in.read(reinterpret_cast<char*>(hcrc), 8);
    ZT_CHECK(in && hlen <= kMaxHeader && kPrefix + hlen <= file_size, "checkpoint '", path,
             "' is truncated or corrupt (header of ", hlen, " bytes in a file of ", file_size, ")");
    std::string htext(hlen, '\0');
    in.read(htext.data(), static_cast<std::streamsize>(hlen));
    ZT_CHECK(in, "checkpoint '", path, "' is truncated (header)");
    ZT_CHECK(crc32_of(htext.data(), htext.size()) == hcrc[0], "checkpoint '", path,
             "': the header fails its checksum (the file is damaged or was edited)");
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(htext);
    } catch (const nlohmann::json::exception& e) {
      ZT_FAIL("checkpoint '", path, "' has a corrupt header: ", e.what());
    }
    try {
      ZT_CHECK(j.at("version").get<int>() == kVersion, "checkpoint '", path, "' has format version ",
               j.at("version").dump(), "; this ztrain reads version ", kVersion);
      const uint64_t data_bytes = header_count(j.at("data_bytes"), path, "data_bytes");
      data_start = kPrefix + hlen;
      ZT_CHECK(data_bytes <= file_size && file_size - data_bytes >= data_start, "checkpoint '", path,
               "' is truncated: ", file_size, " bytes, expected ", data_start, " + ", data_bytes);
      ZT_CHECK(file_size == data_start + data_bytes, "checkpoint '", path, "' is ", file_size,
               " bytes, longer than the ", data_start + data_bytes,
               " its header accounts for (damaged, or appended to after it was written)");
      header.meta = j.at("meta");
      header.config_yaml = j.at("config").get<std::string>();
      for (const auto& e : j.at("tensors")) {
        CheckpointTensorEntry t;
        t.name = e.at("name").get<std::string>();
        t.dtype = parse_dtype(e.at("dtype").get<std::string>());
        const nlohmann::json& dims = e.at("shape");
        ZT_CHECK(dims.is_array(), "checkpoint '", path, "': tensor '", t.name, "' has no shape list");
        for (const auto& d : dims) t.shape.push_back(static_cast<int64_t>(header_count(d, path, "a dimension")));
        t.offset = header_count(e.at("offset"), path, "offset");
        t.nbytes = header_count(e.at("nbytes"), path, "nbytes");
        t.crc32 = e.at("crc32").get<uint32_t>();
        // The byte count the shape implies, overflow-checked (framework/checked_size.h): a
        // crafted shape must not become an allocation; the extent must lie inside the file.
        const std::string what = "checkpoint '" + path + "': tensor '" + t.name + "'";
        ZT_CHECK(checked_nbytes(t.shape, t.dtype, what) == t.nbytes && t.offset <= data_bytes &&
                     t.nbytes <= data_bytes - t.offset,
                 what, " has an inconsistent extent");
        header.tensors.push_back(std::move(t));
      }
    } catch (const nlohmann::json::exception& e) {
      ZT_FAIL("checkpoint '", path, "' has a malformed header: ", e.what());
    }
  }

  // Reads tensor bytes into `dst` (nbytes of them) and checks the checksum.
  void read_into(const CheckpointTensorEntry& t, char* dst) {
    in.seekg(static_cast<std::streamoff>(data_start + t.offset));
    in.read(dst, static_cast<std::streamsize>(t.nbytes));
    ZT_CHECK(in, "checkpoint '", path, "' is truncated in tensor '", t.name, "'");
    check_crc(t, crc32_of(dst, t.nbytes));
  }

  // Streams the tensor's bytes through the checksum without keeping them.
  void verify(const CheckpointTensorEntry& t) {
    static constexpr uint64_t kChunk = 16 << 20;
    std::vector<char> buf(std::min<uint64_t>(kChunk, t.nbytes));
    in.seekg(static_cast<std::streamoff>(data_start + t.offset));
    uint32_t crc = crc32_of(nullptr, 0);
    for (uint64_t done = 0; done < t.nbytes;) {
      const uint64_t n = std::min<uint64_t>(kChunk, t.nbytes - done);
      in.read(buf.data(), static_cast<std::streamsize>(n));
      ZT_CHECK(in, "checkpoint '", path, "' is truncated in tensor '", t.name, "'");
      crc = crc32_of(buf.data(), n, crc);
      done += n;
    }
    check_crc(t, crc);
  }

  void check_crc(const CheckpointTensorEntry& t, uint32_t crc) const {
    ZT_CHECK(crc == t.crc32, "checkpoint '", path, "': tensor '", t.name,
             "' fails its checksum (crc32 ", crc, ", stored ", t.crc32, "): the file is damaged");
  }
};

}  // namespace

CheckpointHeader read_checkpoint_header(const std::string& path) { return OpenCheckpoint(path).header; }

Checkpoint read_checkpoint(const std::string& path, const std::string& prefix) {
  OpenCheckpoint f(path);
  Checkpoint ckpt;
  ckpt.meta = f.header.meta;
  ckpt.config_yaml = f.header.config_yaml;
  for (const auto& e : f.header.tensors) {
    if (e.name.rfind(prefix, 0) != 0) continue;
    Tensor t = Tensor::empty(e.shape, e.dtype);
    f.read_into(e, static_cast<char*>(t.raw_data()));
    ckpt.tensors.emplace(e.name, std::move(t));
  }
  return ckpt;
}

std::string checkpoint_damage(const std::string& path) {
  nlohmann::json meta;
  try {
    OpenCheckpoint f(path);
    for (const auto& e : f.header.tensors) f.verify(e);
    meta = f.header.meta;
  } catch (const Error& e) {
    return e.what();
  }
  if (!meta.is_object() || !meta.contains("tensor_parallel")) return "";
  // A manifest: it is sound when every shard is its own and intact.
  try {
    const auto files = meta.at("tensor_parallel").at("files").get<std::vector<std::string>>();
    for (size_t r = 0; r < files.size(); ++r) {
      std::string why = shard_mismatch(path, meta, static_cast<int>(r));
      if (why.empty()) why = checkpoint_damage((fs::path(path).parent_path() / files[r]).string());
      if (!why.empty()) return why;
    }
  } catch (const nlohmann::json::exception& e) {
    return "checkpoint '" + path + "': bad tensor_parallel manifest (" + e.what() + ")";
  }
  return "";
}

uint32_t checkpoint_digest(const CheckpointHeader& h) {
  std::string text = h.meta.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + '\n' + h.config_yaml + '\n';
  for (const auto& t : h.tensors)
    text += t.name + ' ' + dtype_name(t.dtype) + ' ' + shape_str(t.shape) + ' ' + std::to_string(t.nbytes) + ' ' +
            std::to_string(t.crc32) + '\n';
  return crc32_of(text.data(), text.size());
}

std::string shard_mismatch(const std::string& manifest_path, const nlohmann::json& meta, int tp_rank) {
  try {
    const nlohmann::json& tp = meta.at("tensor_parallel");
    const int size = tp.at("size").get<int>();
    const auto files = tp.at("files").get<std::vector<std::string>>();
    if (tp_rank < 0 || tp_rank >= static_cast<int>(files.size()))
      return "checkpoint '" + manifest_path + "': no shard file for tensor-parallel rank " + std::to_string(tp_rank);
    const std::string file = (fs::path(manifest_path).parent_path() / files[static_cast<size_t>(tp_rank)]).string();
    const std::string of = "shard file '" + file + "' of checkpoint '" + manifest_path + "'";
    std::error_code ec;
    if (!fs::exists(fs::symlink_status(file, ec))) return of + " is missing";
    CheckpointHeader h;
    try {
      h = read_checkpoint_header(file);
    } catch (const Error& e) {
      return e.what();
    }
    const nlohmann::json& mine = h.meta.is_object() && h.meta.contains("shard") ? h.meta["shard"] : nlohmann::json();
    if (!tp.contains("shards")) return "";  // written before shards were bound: nothing to compare
    if (!mine.is_object()) return of + " is not a tensor-parallel shard (no shard record in its header)";
    const auto stated = [&](const char* key) { return mine.value(key, nlohmann::json()); };
    if (stated("tp_rank") != nlohmann::json(tp_rank) || stated("tp_size") != nlohmann::json(size))
      return of + " holds tensor-parallel rank " + stated("tp_rank").dump() + " of " + stated("tp_size").dump() +
             ", not rank " + std::to_string(tp_rank) + " of " + std::to_string(size) + " (shard files swapped?)";
    if (stated("step") != meta.value("step", nlohmann::json()))
      return of + " is of step " + stated("step").dump() + ", the manifest of step " +
             meta.value("step", nlohmann::json()).dump() + " (a shard of another checkpoint)";
    if (stated("run_id") != meta.value("run_id", nlohmann::json()))
      return of + " was written by another run (run id " + stated("run_id").dump() + ", the manifest's " +
             meta.value("run_id", nlohmann::json()).dump() + ")";
    const nlohmann::json& rec = tp.at("shards").at(static_cast<size_t>(tp_rank));
    const uint64_t bytes = fs::file_size(file, ec);
    if (ec || rec.at("bytes").get<uint64_t>() != bytes || rec.at("digest").get<uint32_t>() != checkpoint_digest(h))
      return of + " is not the file the manifest was written with (" + std::to_string(bytes) + " bytes, digest " +
             std::to_string(checkpoint_digest(h)) + "; the manifest records " + rec.at("bytes").dump() +
             " bytes, digest " + rec.at("digest").dump() + ")";
  } catch (const nlohmann::json::exception& e) {
    return "checkpoint '" + manifest_path + "': bad tensor_parallel manifest (" + e.what() + ")";
  }
  return "";
}

std::string checkpoint_path(const std::string& run_dir, int64_t step) {
  char name[64];
  std::snprintf(name, sizeof name, "step_%08lld.ckpt", static_cast<long long>(step));
  return (fs::path(run_dir) / "checkpoints" / name).string();
}

namespace {

// The folder `where` keeps its checkpoints in: where/checkpoints, or where itself.
std::vector<fs::path> checkpoints_under(const std::string& where) {
  for (const fs::path& dir : {fs::path(where) / "checkpoints", fs::path(where)}) {
    auto all = list_checkpoint_paths(dir);
    if (!all.empty()) return all;
  }
  return {};
}

}  // namespace

std::optional<std::string> newest_checkpoint(const std::string& where) {
  std::error_code ec;
  if (fs::is_regular_file(where, ec)) return where;
  auto all = checkpoints_under(where);
  if (all.empty()) return std::nullopt;
  return all.back().string();
}

CheckpointChoice newest_good_checkpoint(const std::string& where) {
  CheckpointChoice c;
  std::error_code ec;
  if (fs::is_regular_file(where, ec)) {
    c.path = where;
    return c;
  }
  auto all = checkpoints_under(where);
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    const std::string p = it->string();
    std::string why = checkpoint_damage(p);
    if (why.empty()) {
      // A sound file under another step's name (renamed or copied) would resume the wrong step.
      const nlohmann::json meta = read_checkpoint_header(p).meta;
      const nlohmann::json step = meta.is_object() ? meta.value("step", nlohmann::json()) : nlohmann::json();
      if (!step.is_number_integer() || step.get<int64_t>() != static_cast<int64_t>(step_of(*it)))
        why = "checkpoint '" + p + "' holds step " + step.dump() + ", not the step its name says";
    }
    if (why.empty()) {
      c.path = p;
      break;
    }
    c.skipped.push_back("skipping damaged checkpoint '" + p + "': " + why);
    c.damaged.push_back(p);
  }
  return c;
}

std::vector<std::string> set_aside_damaged(const std::vector<std::string>& damaged) {
  std::vector<std::string> out;
  for (const auto& p : damaged) {
    const std::string to = p + ".damaged";
    ZT_CHECK(::rename(p.c_str(), to.c_str()) == 0, "renaming damaged checkpoint '", p, "' to '", to,
             "' failed: ", std::strerror(errno));
    out.push_back(to);
  }
  return out;
}

void prune_checkpoints(const std::string& run_dir, int64_t keep) {
  if (keep <= 0) return;
  auto all = list_checkpoint_paths(fs::path(run_dir) / "checkpoints");
  for (size_t i = 0; i + static_cast<size_t>(keep) < all.size(); ++i) {
    std::error_code ec;
    fs::remove(all[i], ec);
  }
}

}  // namespace zt
