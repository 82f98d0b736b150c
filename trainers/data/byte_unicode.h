#pragma once
// GPT-2's reversible byte <-> unicode mapping. encoder.json and vocab.bpe spell every token
// as a string of "visible" code points, one per byte: printable Latin-1 bytes stand for
// themselves, the other 68 bytes (controls, space, 0x7F-0xA0, soft hyphen) are shifted to
// U+0100.. in byte order. So a space byte is written "Ġ" (U+0120) and a newline "Ċ" (U+010A).
#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace zt::data {

// Code point that stands for byte b.
uint32_t byte_to_codepoint(uint8_t b);

// Inverse mapping: the bytes a vocabulary spelling stands for. Throws zt::Error naming the
// spelling when it is not valid UTF-8 or holds a code point outside the 256 used ones.
std::string spelling_to_bytes(std::string_view spelling);

// The vocabulary spelling of raw bytes (for messages and tests).
std::string bytes_to_spelling(std::string_view bytes);

}  // namespace zt::data
