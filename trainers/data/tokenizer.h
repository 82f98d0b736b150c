#pragma once
// Tokenizers by name: the interface the tools and the data pipeline use, and the factory.
//
//   name     ids      what                                    files in the vocabulary dir
//   gpt2     50257    GPT-2 / r50k_base, merges-list BPE      encoder.json, vocab.bpe
//   cl100k   100277   cl100k_base (GPT-3.5, GPT-4), ranks     cl100k_base.tiktoken, special_tokens.json
//   o200k    200019   o200k_base (GPT-4o), ranks              o200k_base.tiktoken, special_tokens.json
//   llama3   128256   Llama 3, ranks                          llama3.tiktoken, special_tokens.json
//
// All four are byte-level BPE run by one engine (bpe_tokenizer.h) with the scheme's own
// pre-tokenizer regex (pretokenizer.h); tools/fetch_data.sh --tokenizers NAME downloads the
// files into data/NAME. "ids" is vocab_size(), one past the largest id (cl100k and o200k have
// unused ids below it).
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace zt::data {

// What encode() does with the text of a special token ("<|endoftext|>", "<|begin_of_text|>").
enum class SpecialTokens {
  as_text,  // encode it like any other text
  allowed,  // emit the special token's id
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  virtual const std::string& name() const = 0;

  // Thread-safe; concurrent calls from several threads are the fast way to encode many texts.
  // Any byte string round-trips: decode(encode(s)) == s (bytes that are not valid UTF-8 are
  // kept as byte tokens).
  virtual void encode_append(std::string_view text, std::vector<int32_t>& out, SpecialTokens special) const = 0;
  std::vector<int32_t> encode(std::string_view text, SpecialTokens special = SpecialTokens::as_text) const;

  // Raw bytes of the tokens (a special token decodes to its text); an id that is not a token
  // is a zt::Error naming it.
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  virtual const std::string& token_bytes(int32_t id) const = 0;

  virtual int32_t vocab_size() const = 0;  // one past the largest id
  // The id of a special token's text, or -1.
  virtual int32_t special_id(std::string_view text) const = 0;
  // The id prepare_data writes before every document: <|endoftext|> (llm.c's GPT-2
  // convention), <|begin_of_text|> for llama3.
  virtual int32_t document_separator() const = 0;
};

// "gpt2", "cl100k", "o200k", "llama3".
const std::vector<std::string>& tokenizer_names();

// data/NAME, relative to the working directory (what tools/fetch_data.sh writes).
std::string default_vocab_dir(const std::string& name);

// The files make_tokenizer reads from vocab_dir (for manifests and messages).
std::vector<std::string> tokenizer_files(const std::string& name, const std::string& vocab_dir);

// Loads tokenizer `name` from vocab_dir (empty: default_vocab_dir(name)). An unknown name is a
// zt::Error naming it and the known ones; a missing or malformed file one naming the file.
std::unique_ptr<Tokenizer> make_tokenizer(const std::string& name, const std::string& vocab_dir = "");

}  // namespace zt::data
