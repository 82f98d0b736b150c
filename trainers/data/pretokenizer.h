#pragma once
// The pre-tokenizer of byte-level BPE: splits text into the chunks that BPE then works on,
// with a scheme's regex (the patterns below), compiled by PCRE2 in UTF + UCP mode (so \p{L},
// \p{N} and \s are the Unicode classes), JIT-compiled when the library supports it.
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

// GPT-2 (and r50k): the regex of OpenAI's encoder.py.
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// cl100k_base, and Llama 3 (which took cl100k's). tiktoken writes the contractions as
// (?i:'s|'t|...); the JavaScript encoders spell the ASCII case variants out, and so does this,
// so that Unicode case folding (PCRE2 would let 's match 'ſ, U+017F) cannot make a difference.
constexpr const char* kCl100kPattern =
    R"('(?:[sS]|[tT]|[rR][eE]|[vV][eE]|[mM]|[lL][lL]|[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|)"
    R"( ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// o200k_base: words split at case changes, contractions attached, "/" kept with newlines.
constexpr const char* kO200kPattern =
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+)"
    R"((?:'(?:[sS]|[tT]|[rR][eE]|[vV][eE]|[mM]|[lL][lL]|[dD]))?|)"
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*)"
    R"((?:'(?:[sS]|[tT]|[rR][eE]|[vV][eE]|[mM]|[lL][lL]|[dD]))?|)"
    R"(\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

class Pretokenizer {
 public:
  // A pattern that PCRE2 cannot compile is a zt::Error quoting PCRE2's message.
  explicit Pretokenizer(const char* pattern);
  ~Pretokenizer();
  Pretokenizer(Pretokenizer&&) noexcept;
  Pretokenizer& operator=(Pretokenizer&&) noexcept;

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
