#include "trainers/data/token_shard.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <utility>

#include "framework/error.h"

namespace zt::data {

static_assert(std::endian::native == std::endian::little, "token shards are little-endian; add byte swapping");

// ---- writer ---------------------------------------------------------------------------

TokenShardWriter::TokenShardWriter(std::string path) : path_(std::move(path)), tmp_path_(path_ + ".tmp") {
  file_ = std::fopen(tmp_path_.c_str(), "wb");
  ZT_CHECK(file_, "cannot create token shard '", tmp_path_, "': ", std::strerror(errno));
  const int32_t header[kShardHeaderInts] = {};  // written for real in finish()
  ZT_CHECK(std::fwrite(header, sizeof(header), 1, file_) == 1, "cannot write '", tmp_path_, "': ",
           std::strerror(errno));
  buffer_.reserve(1 << 20);
}

TokenShardWriter::~TokenShardWriter() {
  if (file_) {
    std::fclose(file_);
    std::remove(tmp_path_.c_str());
  }
}

void TokenShardWriter::flush_buffer() {
  if (buffer_.empty()) return;
  ZT_CHECK(std::fwrite(buffer_.data(), 2, buffer_.size(), file_) == buffer_.size(), "cannot write '", tmp_path_,
           "': ", std::strerror(errno));
  buffer_.clear();
}

void TokenShardWriter::append(const int32_t* ids, size_t n) {
  ZT_CHECK(file_, "token shard '", path_, "' is already finished");
  for (size_t i = 0; i < n; ++i) {
    ZT_CHECK(ids[i] >= 0 && ids[i] <= 0xFFFF, "token id ", ids[i], " does not fit the uint16 tokens of shard '",
             path_, "'");
    buffer_.push_back(static_cast<uint16_t>(ids[i]));
    if (buffer_.size() == buffer_.capacity()) flush_buffer();
  }
  count_ += static_cast<int64_t>(n);
}

void TokenShardWriter::finish() {
  ZT_CHECK(file_, "token shard '", path_, "' is already finished");
  ZT_CHECK(count_ <= INT32_MAX, "token shard '", path_, "' has ", count_,
           " tokens; the header's int32 count holds at most 2^31-1 (use smaller shards)");
  flush_buffer();
  int32_t header[kShardHeaderInts] = {};
  header[0] = kShardMagic;
  header[1] = kShardVersion;
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

void write_token_shard(const std::string& path, const std::vector<int32_t>& ids) {
  TokenShardWriter w(path);
  w.append(ids);
  w.finish();
}

// ---- reader ---------------------------------------------------------------------------

TokenShard TokenShard::open(const std::string& path) {
  TokenShard s;
  s.path_ = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  ZT_CHECK(fd >= 0, "cannot open token shard '", path, "': ", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    ZT_FAIL("token shard '", path, "' is not a regular file");
  }
  const auto bytes = static_cast<int64_t>(st.st_size);
  if (bytes < kShardHeaderBytes) {
    ::close(fd);
    ZT_FAIL("token shard '", path, "' is truncated: ", bytes, " bytes, shorter than the ", kShardHeaderBytes,
            "-byte header");
  }
  void* map = ::mmap(nullptr, static_cast<size_t>(bytes), PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_errno = errno;
  ::close(fd);
  ZT_CHECK(map != MAP_FAILED, "cannot map token shard '", path, "': ", std::strerror(map_errno));
  s.map_ = map;
  s.map_bytes_ = static_cast<size_t>(bytes);  // from here on the destructor unmaps

  int32_t header[3];
  std::memcpy(header, map, sizeof(header));
  ZT_CHECK(header[0] == kShardMagic, "'", path, "' is not a token shard: magic number ", header[0], " (expected ",
           kShardMagic, ", llm.c's format)");
  ZT_CHECK(header[1] == kShardVersion, "token shard '", path, "' has version ", header[1], "; only version ",
           kShardVersion, " (uint16 tokens) is supported");
  const int64_t count = header[2];
  ZT_CHECK(count >= 0, "token shard '", path, "' has a negative token count ", count, " in its header");
  const int64_t expected = kShardHeaderBytes + 2 * count;
  ZT_CHECK(bytes >= expected, "token shard '", path, "' is truncated: header says ", count, " tokens (", expected,
           " bytes) but the file has ", bytes, " bytes");
  ZT_CHECK(bytes == expected, "token shard '", path, "' has ", bytes - expected, " bytes after the ", count,
           " tokens its header declares (", bytes, " bytes, expected ", expected, ")");
  s.count_ = count;
  s.tokens_ = reinterpret_cast<const uint16_t*>(static_cast<const char*>(map) + kShardHeaderBytes);
  return s;
}

TokenShard::~TokenShard() {
  if (map_) ::munmap(map_, map_bytes_);
}

TokenShard::TokenShard(TokenShard&& other) noexcept { *this = std::move(other); }

TokenShard& TokenShard::operator=(TokenShard&& other) noexcept {
  if (this != &other) {
    if (map_) ::munmap(map_, map_bytes_);
    path_ = std::move(other.path_);
    map_ = std::exchange(other.map_, nullptr);
    map_bytes_ = std::exchange(other.map_bytes_, 0);
    tokens_ = std::exchange(other.tokens_, nullptr);
    count_ = std::exchange(other.count_, 0);
  }
  return *this;
}

uint16_t TokenShard::max_token() const {
  return count_ == 0 ? 0 : *std::max_element(tokens_, tokens_ + count_);
}

std::vector<uint16_t> read_token_shard(const std::string& path) {
  const TokenShard s = TokenShard::open(path);
  return std::vector<uint16_t>(s.tokens(), s.tokens() + s.size());
}

}  // namespace zt::data
