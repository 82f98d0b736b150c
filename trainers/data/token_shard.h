#pragma once
// Token shards: llm.c's file format, so shards made by llm.c's scripts load here and back.
//
//   header  256 x int32 little-endian: [0] magic 20240520, [1] version 1, [2] token count n,
//           the rest 0
//   body    n x uint16 little-endian token ids
//
// The file size is exactly 1024 + 2n bytes; anything else is rejected when opened.
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace zt::data {

constexpr int32_t kShardMagic = 20240520;
constexpr int32_t kShardVersion = 1;
constexpr int64_t kShardHeaderInts = 256;
constexpr int64_t kShardHeaderBytes = kShardHeaderInts * 4;

// Streams tokens into a shard. The file appears under its final name only when finish()
// succeeds (written as path + ".tmp", then renamed), so a crash never leaves a shard that
// looks complete. Destroying an unfinished writer removes the temporary file.
class TokenShardWriter {
 public:
  explicit TokenShardWriter(std::string path);
  ~TokenShardWriter();
  TokenShardWriter(const TokenShardWriter&) = delete;
  TokenShardWriter& operator=(const TokenShardWriter&) = delete;

  // Ids must fit in uint16 (GPT-2's 50257 do); a larger id is a zt::Error naming it.
  void append(const int32_t* ids, size_t n);
  void append(const std::vector<int32_t>& ids) { append(ids.data(), ids.size()); }
  int64_t size() const { return count_; }
  void finish();

 private:
  std::string path_, tmp_path_;
  std::FILE* file_ = nullptr;
  int64_t count_ = 0;
  std::vector<uint16_t> buffer_;
  void flush_buffer();
};

// Writes a whole shard at once.
void write_token_shard(const std::string& path, const std::vector<int32_t>& ids);

// A shard opened read-only. Opening validates magic, version and that the file length
// matches the header; errors are zt::Error naming the file and the problem.
//
// Tokens are read with pread(2) into the caller's buffer, not memory-mapped: a shard that is
// truncated while a run has it open would make a mapped read die of SIGBUS, whereas here a
// short read is a zt::Error naming the file. (A shard replaced by rename keeps serving the
// original file, which this descriptor still holds.)
class TokenShard {
 public:
  static TokenShard open(const std::string& path);
  TokenShard() = default;
  ~TokenShard();
  TokenShard(TokenShard&& other) noexcept;
  TokenShard& operator=(TokenShard&& other) noexcept;
  TokenShard(const TokenShard&) = delete;
  TokenShard& operator=(const TokenShard&) = delete;

  const std::string& path() const { return path_; }
  int64_t size() const { return count_; }
  // Tokens [first, first + n) into out; a range outside the shard or a file that no longer
  // holds it is a zt::Error naming the file.
  void read(int64_t first, int64_t n, uint16_t* out) const;
  uint16_t max_token() const;  // scans the shard

 private:
  std::string path_;
  int fd_ = -1;
  int64_t count_ = 0;
};

// Reads all tokens of a shard (tests, small tools).
std::vector<uint16_t> read_token_shard(const std::string& path);

}  // namespace zt::data
