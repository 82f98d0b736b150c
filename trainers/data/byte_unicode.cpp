#include "trainers/data/byte_unicode.h"

#include "framework/error.h"
#include "trainers/data/utf8.h"

namespace zt::data {

namespace {

bool stands_for_itself(int b) { return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF); }

struct Tables {
  std::array<uint32_t, 256> to_cp{};
  std::array<int16_t, 324> to_byte{};  // code points used are < 256 + 68
  Tables() {
    to_byte.fill(-1);
    uint32_t shifted = 256;
    for (int b = 0; b < 256; ++b) {
      to_cp[b] = stands_for_itself(b) ? static_cast<uint32_t>(b) : shifted++;
      to_byte[to_cp[b]] = static_cast<int16_t>(b);
    }
  }
};

const Tables& tables() {
  static const Tables t;
  return t;
}

}  // namespace

uint32_t byte_to_codepoint(uint8_t b) { return tables().to_cp[b]; }

std::string spelling_to_bytes(std::string_view spelling) {
  const Tables& t = tables();
  std::string out;
  out.reserve(spelling.size());
  size_t i = 0;
  while (i < spelling.size()) {
    const size_t len = utf8_sequence_length(spelling, i);
    ZT_CHECK(len > 0, "vocabulary entry is not valid UTF-8 at byte ", i, ": \"", spelling, "\"");
    uint32_t cp = static_cast<uint8_t>(spelling[i]);
    if (len > 1) {
      cp &= (0xFFu >> (len + 1));
      for (size_t k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<uint8_t>(spelling[i + k]) & 0x3F);
    }
    ZT_CHECK(cp < t.to_byte.size() && t.to_byte[cp] >= 0, "vocabulary entry \"", spelling,
             "\" holds code point U+", std::hex, cp, " which is not one of GPT-2's 256 byte symbols");
    out.push_back(static_cast<char>(t.to_byte[cp]));
    i += len;
  }
  return out;
}

std::string bytes_to_spelling(std::string_view bytes) {
  std::string out;
  for (char c : bytes) append_utf8(out, byte_to_codepoint(static_cast<uint8_t>(c)));
  return out;
}

}  // namespace zt::data
