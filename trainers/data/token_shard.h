#pragma once
// Token shards: llm.c's file format, so shards made by llm.c's scripts load here and back,
// extended by a version 2 for vocabularies that do not fit 16-bit ids.
//
//   header  256 x int32 little-endian: [0] magic 20240520, [1] version (1 or 2), [2] token
//           count n, the rest 0
//   body    version 1 (llm.c's): n x uint16 little-endian token ids
//           version 2:           n x uint32 little-endian token ids
//
// The file size is exactly 1024 + 2n (version 1) or 1024 + 4n (version 2) bytes; anything
// else is rejected when opened. Writers choose version 1 whenever the vocabulary fits it
// (shard_version_for_vocab), so GPT-2 shards stay llm.c-compatible.
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace zt::data {

constexpr int32_t kShardMagic = 20240520;
constexpr int32_t kShardVersionU16 = 1;  // llm.c's uint16 ids
constexpr int32_t kShardVersionU32 = 2;  // uint32 ids
constexpr int64_t kShardHeaderInts = 256;
constexpr int64_t kShardHeaderBytes = kShardHeaderInts * 4;

// Bytes per token id of a shard version (2 or 4); a zt::Error for any other version.
int64_t shard_token_bytes(int32_t version);
// The version a vocabulary of vocab_size ids needs: 1 when every id fits 16 bits, else 2.
int32_t shard_version_for_vocab(int64_t vocab_size);

// Streams tokens into a shard. The file appears under its final name only when finish()
// succeeds (written as path + ".tmp", then renamed), so a crash never leaves a shard that
// looks complete. Destroying an unfinished writer removes the temporary file.
class TokenShardWriter {
 public:
  explicit TokenShardWriter(std::string path, int32_t version = kShardVersionU16);
  ~TokenShardWriter();
  TokenShardWriter(const TokenShardWriter&) = delete;
  TokenShardWriter& operator=(const TokenShardWriter&) = delete;

  // Ids must fit the version's width (uint16 or uint32); a negative or larger id is a
  // zt::Error naming it.
  void append(const int32_t* ids, size_t n);
  void append(const std::vector<int32_t>& ids) { append(ids.data(), ids.size()); }
  int64_t size() const { return count_; }
  int32_t version() const { return version_; }
  void finish();

 private:
  std::string path_, tmp_path_;
  std::FILE* file_ = nullptr;
  int32_t version_;
  int64_t count_ = 0;
  std::vector<uint16_t> buffer16_;
  std::vector<uint32_t> buffer32_;
  void flush_buffer();
};

// Writes a whole shard at once.
void write_token_shard(const std::string& path, const std::vector<int32_t>& ids,
                       int32_t version = kShardVersionU16);

// A shard opened read-only, either version. Opening validates magic, version and that the file
// length matches the header; errors are zt::Error naming the file and the problem.
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
  int32_t version() const { return version_; }
  // Tokens [first, first + n) into out (widened to uint32 for version 1); a range outside the
  // shard or a file that no longer holds it is a zt::Error naming the file.
  void read(int64_t first, int64_t n, uint32_t* out) const;
  uint32_t max_token() const;  // scans the shard

 private:
  std::string path_;
  int fd_ = -1;
  int32_t version_ = kShardVersionU16;
  int64_t count_ = 0;
  void read_bytes(int64_t first, int64_t n, void* out) const;
};

// Reads all tokens of a shard (tests, small tools).
std::vector<uint32_t> read_token_shard(const std::string& path);

}  // namespace zt::data
