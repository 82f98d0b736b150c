#include "trainers/data/token_shard.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <utility>

#include "framework/error.h"
#include "framework/io/input_file.h"

namespace zt::data {

static_assert(std::endian::native == std::endian::little, "token shards are little-endian; add byte swapping");

// ---- versions ---------------------------------------------------------------------------

int64_t shard_token_bytes(int32_t version) {
  ZT_CHECK(version == kShardVersionU16 || version == kShardVersionU32, "token shard version ", version,
           " is not supported (1: uint16 ids, 2: uint32 ids)");
  return version == kShardVersionU16 ? 2 : 4;
}

int32_t shard_version_for_vocab(int64_t vocab_size) {
  return vocab_size <= 65536 ? kShardVersionU16 : kShardVersionU32;
}

// ---- writer ---------------------------------------------------------------------------

TokenShardWriter::TokenShardWriter(std::string path, int32_t version)
    : path_(std::move(path)), tmp_path_(path_ + ".tmp"), version_(version) {
  (void)shard_token_bytes(version_);  // validates it
  file_ = std::fopen(tmp_path_.c_str(), "wb");
  ZT_CHECK(file_, "cannot create token shard '", tmp_path_, "': ", std::strerror(errno));
  const int32_t header[kShardHeaderInts] = {};  // written for real in finish()
  ZT_CHECK(std::fwrite(header, sizeof(header), 1, file_) == 1, "cannot write '", tmp_path_, "': ",
           std::strerror(errno));
  (version_ == kShardVersionU16 ? buffer16_.reserve(1 << 20) : buffer32_.reserve(1 << 20));
}

TokenShardWriter::~TokenShardWriter() {
  if (file_) {
    std::fclose(file_);
    std::remove(tmp_path_.c_str());
  }
}

namespace {

template <class T>
void flush(std::vector<T>& buffer, std::FILE* file, const std::string& path) {
  if (buffer.empty()) return;
  ZT_CHECK(std::fwrite(buffer.data(), sizeof(T), buffer.size(), file) == buffer.size(), "cannot write '", path,
           "': ", std::strerror(errno));
  buffer.clear();
}

template <class T>
void append_ids(std::vector<T>& buffer, const int32_t* ids, size_t n, std::FILE* file, const std::string& tmp_path,
                const std::string& path) {
  constexpr int64_t top = std::numeric_limits<T>::max();
  for (size_t i = 0; i < n; ++i) {
    ZT_CHECK(ids[i] >= 0 && ids[i] <= top, "token id ", ids[i], " does not fit the ", 8 * sizeof(T),
             "-bit tokens of shard '", path, "'");
    buffer.push_back(static_cast<T>(ids[i]));
    if (buffer.size() == buffer.capacity()) flush(buffer, file, tmp_path);
  }
}

}  // namespace

void TokenShardWriter::flush_buffer() {
  flush(buffer16_, file_, tmp_path_);
  flush(buffer32_, file_, tmp_path_);
}

void TokenShardWriter::append(const int32_t* ids, size_t n) {
  ZT_CHECK(file_, "token shard '", path_, "' is already finished");
  if (version_ == kShardVersionU16)
    append_ids(buffer16_, ids, n, file_, tmp_path_, path_);
  else
    append_ids(buffer32_, ids, n, file_, tmp_path_, path_);
  count_ += static_cast<int64_t>(n);
}

void TokenShardWriter::finish() {
  ZT_CHECK(file_, "token shard '", path_, "' is already finished");
  ZT_CHECK(count_ <= INT32_MAX, "token shard '", path_, "' has ", count_,
           " tokens; the header's int32 count holds at most 2^31-1 (use smaller shards)");
  flush_buffer();
  int32_t header[kShardHeaderInts] = {};
  header[0] = kShardMagic;
  header[1] = version_;
  header[2] = static_cast<int32_t>(count_);
  const bool ok = std::fseek(file_, 0, SEEK_SET) == 0 && std::fwrite(header, sizeof(header), 1, file_) == 1;
  const bool closed = std::fclose(file_) == 0;
  file_ = nullptr;
  if (!ok || !closed) {
    std::remove(tmp_path_.c_str());
    ZT_FAIL("cannot write token shard '", tmp_path_, "': ", std::strerror(errno));
  }
  if (std::rename(tmp_path_.c_str(), path_.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp_path_.c_str());
    ZT_FAIL("cannot rename '", tmp_path_, "' to '", path_, "': ", std::strerror(err));
  }
}

void write_token_shard(const std::string& path, const std::vector<int32_t>& ids, int32_t version) {
  TokenShardWriter w(path, version);
  w.append(ids);
  w.finish();
}

// ---- reader ---------------------------------------------------------------------------

TokenShard TokenShard::open(const std::string& path) {
  io::require_regular_file(path, "token shard");  // a FIFO would block open() forever
  TokenShard s;
  s.path_ = path;
  s.fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);  // from here on the destructor closes
  ZT_CHECK(s.fd_ >= 0, "cannot open token shard '", path, "': ", std::strerror(errno));
  struct stat st {};
  ZT_CHECK(::fstat(s.fd_, &st) == 0 && S_ISREG(st.st_mode), "token shard '", path, "' is not a regular file");
  const auto bytes = static_cast<int64_t>(st.st_size);
  ZT_CHECK(bytes >= kShardHeaderBytes, "token shard '", path, "' is truncated: ", bytes,
           " bytes, shorter than the ", kShardHeaderBytes, "-byte header");
  int32_t header[3];
  ZT_CHECK(::pread(s.fd_, header, sizeof(header), 0) == static_cast<ssize_t>(sizeof(header)),
           "cannot read the header of token shard '", path, "': ", std::strerror(errno));
  ZT_CHECK(header[0] == kShardMagic, "'", path, "' is not a token shard: magic number ", header[0], " (expected ",
           kShardMagic, ", llm.c's format)");
  ZT_CHECK(header[1] == kShardVersionU16 || header[1] == kShardVersionU32, "token shard '", path,
           "' has version ", header[1], "; only versions 1 (uint16 tokens) and 2 (uint32 tokens) are supported");
  s.version_ = header[1];
  const int64_t count = header[2];  // an int32: 4 * count cannot overflow
  ZT_CHECK(count >= 0, "token shard '", path, "' has a negative token count ", count, " in its header");
  const int64_t width = shard_token_bytes(s.version_);
  const int64_t expected = kShardHeaderBytes + width * count;
  ZT_CHECK(bytes >= expected, "token shard '", path, "' is truncated: header says ", count, " tokens of ", width,
           " bytes (", expected, " bytes, version ", s.version_, ") but the file has ", bytes, " bytes");
  ZT_CHECK(bytes == expected, "token shard '", path, "' has ", bytes - expected, " bytes after the ", count,
           " tokens its header declares (", bytes, " bytes, expected ", expected, " for version ", s.version_, ")");
  s.count_ = count;
  return s;
}

void TokenShard::read(int64_t first, int64_t n, uint32_t* out) const {
  ZT_CHECK(first >= 0 && n >= 0 && n <= count_ - first, "token shard '", path_, "': tokens [", first, ", ",
           first + n, ") are outside its ", count_, " tokens");
  if (version_ == kShardVersionU32) {
    read_bytes(first, n, out);
    return;
  }
  std::vector<uint16_t> narrow(static_cast<size_t>(n));
  read_bytes(first, n, narrow.data());
  std::copy(narrow.begin(), narrow.end(), out);
}

void TokenShard::read_bytes(int64_t first, int64_t n, void* out) const {
  const int64_t width = shard_token_bytes(version_);
  auto* dst = static_cast<char*>(out);
  size_t left = static_cast<size_t>(n * width);
  off_t at = kShardHeaderBytes + width * first;
  while (left > 0) {
    const ssize_t got = ::pread(fd_, dst, left, at);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      const int err = errno;
      struct stat st {};
      const int64_t now = ::fstat(fd_, &st) == 0 ? static_cast<int64_t>(st.st_size) : -1;
      ZT_CHECK(got == 0, "reading token shard '", path_, "' failed: ", std::strerror(err));
      ZT_FAIL("token shard '", path_, "' changed while in use: it had ", kShardHeaderBytes + width * count_,
              " bytes when opened and now has ", now, " (do not rewrite shards while a run reads them)");
    }
    dst += got;
    left -= static_cast<size_t>(got);
    at += got;
  }
}

TokenShard::~TokenShard() {
  if (fd_ >= 0) ::close(fd_);
}

TokenShard::TokenShard(TokenShard&& other) noexcept { *this = std::move(other); }

TokenShard& TokenShard::operator=(TokenShard&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    path_ = std::move(other.path_);
    fd_ = std::exchange(other.fd_, -1);
    version_ = other.version_;
    count_ = std::exchange(other.count_, 0);
  }
  return *this;
}

uint32_t TokenShard::max_token() const {
  std::vector<uint32_t> chunk(static_cast<size_t>(std::min<int64_t>(count_, 1 << 20)));
  uint32_t top = 0;
  for (int64_t first = 0; first < count_; first += static_cast<int64_t>(chunk.size())) {
    const int64_t n = std::min<int64_t>(static_cast<int64_t>(chunk.size()), count_ - first);
    read(first, n, chunk.data());
    top = std::max(top, *std::max_element(chunk.begin(), chunk.begin() + n));
  }
  return top;
}

std::vector<uint32_t> read_token_shard(const std::string& path) {
  const TokenShard s = TokenShard::open(path);
  std::vector<uint32_t> tokens(static_cast<size_t>(s.size()));
  s.read(0, s.size(), tokens.data());
  return tokens;
}

}  // namespace zt::data
