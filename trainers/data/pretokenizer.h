#pragma once
// GPT-2's pre-tokenizer: splits text into the chunks that BPE then works on, with the
// regex from OpenAI's encoder.py, compiled by PCRE2 in UTF + UCP mode (so \p{L}, \p{N}
// and \s are the Unicode classes), JIT-compiled when the library supports it.
//
// Invalid UTF-8 never reaches the regex: each maximal run of bytes that is not valid UTF-8
// becomes a chunk of its own (byte fallback), and the valid text around it is split as
// usual. Chunks always tile the input exactly, so no byte is ever lost.
//
// Thread-safe: the compiled pattern is shared, match scratch is per thread.
#include <memory>
#include <string_view>
#include <vector>

namespace zt::data {

class Gpt2Pretokenizer {
 public:
  static constexpr const char* kPattern =
      R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

  Gpt2Pretokenizer();
  ~Gpt2Pretokenizer();
  Gpt2Pretokenizer(Gpt2Pretokenizer&&) noexcept;
  Gpt2Pretokenizer& operator=(Gpt2Pretokenizer&&) noexcept;

  // Appends the chunks of text to out (views into text).
  void split(std::string_view text, std::vector<std::string_view>& out) const;
  std::vector<std::string_view> split(std::string_view text) const;

  bool uses_jit() const;

 private:
  struct Compiled;
  std::unique_ptr<Compiled> compiled_;
  void split_valid(std::string_view text, std::vector<std::string_view>& out) const;
};

}  // namespace zt::data
