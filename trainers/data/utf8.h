#pragma once
// Small UTF-8 helpers for the tokenizer: validation (so PCRE2 can skip its own per-call
// check and so invalid bytes can be routed around the regex) and code point encoding.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace zt::data {

// Length in bytes of the well-formed UTF-8 sequence starting at s[i], or 0 when the bytes
// there are not one (stray continuation byte, overlong form, surrogate, > U+10FFFF, cut short).
size_t utf8_sequence_length(std::string_view s, size_t i);

// Length of the longest prefix of s[from..] that is valid UTF-8.
size_t utf8_valid_prefix(std::string_view s, size_t from = 0);

bool is_valid_utf8(std::string_view s);

// Appends the UTF-8 encoding of code point cp (must be <= U+10FFFF and not a surrogate).
void append_utf8(std::string& out, uint32_t cp);

}  // namespace zt::data
