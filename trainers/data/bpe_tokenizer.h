#pragma once
// The byte-level BPE engine behind every tokenizer of tokenizer.h.
//
// Encoding: split the text at the special tokens' texts (when allowed), pre-tokenize each
// stretch with the scheme's regex (pretokenizer.h), turn each chunk into its byte tokens and
// merge them (bpe_merges.h), with a per-thread cache of chunk -> ids. Merging follows GPT-2's
// merges list, or, rank_based (tiktoken, Llama 3), the ranks: the adjacent pair whose
// concatenation is the token of lowest rank (rank = id) merges first, and a chunk that is
// itself a token is that token without merging, as the reference encoders do. Decoding
// concatenates bytes.
//
// Any byte string round-trips: decode(encode(s)) == s. Valid UTF-8 gives exactly the ids of
// the reference encoder; bytes that are not valid UTF-8 are kept as byte tokens (each maximal
// invalid run is its own chunk) instead of being replaced by U+FFFD, so nothing is lost and
// nothing crashes. decode() returns raw bytes, which need not be valid UTF-8 when the ids are
// an arbitrary slice of a sequence (a token may hold half a character).
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "trainers/data/bpe_merges.h"
#include "trainers/data/pretokenizer.h"
#include "trainers/data/tokenizer.h"

namespace zt::data {

// Transparent hash, so string_views look up std::string keys without a copy.
struct BytesHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

// Everything a scheme's files and table entry give the engine.
struct BpeVocabulary {
  std::string name;
  std::vector<std::string> bytes_of;  // id -> raw bytes; empty: an unused id
  // Special tokens: text -> id. Each text starts with "<|", ends with "|>" and holds no other
  // "|>" (so leftmost matches cannot overlap); bytes_of[id] is the text.
  std::vector<std::pair<std::string, int32_t>> special;
  std::unique_ptr<BpeMerges> merges;  // the merges list; null when rank_based
  const char* pattern = nullptr;      // pre-tokenizer regex
  std::string document_separator;     // the text of a special token
  bool rank_based = false;
  std::string source;  // the files, for messages
};

class BpeTokenizer final : public Tokenizer {
 public:
  // Checks the vocabulary (every byte has a token, special token texts as above, rank_based:
  // no two tokens with the same bytes); errors name vocabulary.source.
  explicit BpeTokenizer(BpeVocabulary vocabulary);
  ~BpeTokenizer() override;

  const std::string& name() const override { return v_.name; }
  void encode_append(std::string_view text, std::vector<int32_t>& out, SpecialTokens special) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;
  const std::string& token_bytes(int32_t id) const override;
  int32_t vocab_size() const override { return static_cast<int32_t>(v_.bytes_of.size()); }
  int32_t special_id(std::string_view text) const override;
  int32_t document_separator() const override { return separator_id_; }

  int32_t num_merges() const { return v_.merges ? v_.merges->size() : 0; }  // of a merges list
  bool uses_jit() const { return pretokenizer_.uses_jit(); }

 private:
  void encode_ordinary(std::string_view text, std::vector<int32_t>& out) const;
  void encode_chunk(std::string_view chunk, std::vector<int32_t>& out) const;
  bool is_token(int32_t id) const;

  BpeVocabulary v_;
  Pretokenizer pretokenizer_;
  int32_t byte_id_[256] = {};  // byte -> id of its one-byte token
  int32_t separator_id_ = -1;
  size_t longest_special_ = 0;
  std::unordered_map<std::string, int32_t, BytesHash, std::equal_to<>> special_ids_;
  std::unordered_map<std::string_view, int32_t> id_of_bytes_;  // rank_based: views into v_.bytes_of
  uint64_t serial_ = 0;  // identifies this vocabulary in the per-thread caches
};

}  // namespace zt::data
