#include "trainers/data/byte_unicode.h"

#include <gtest/gtest.h>

#include <set>

#include "framework/error.h"
#include "trainers/data/utf8.h"

namespace zt::data {
namespace {

TEST(ByteUnicode, IsGpt2sMapping) {
  EXPECT_EQ(byte_to_codepoint('A'), static_cast<uint32_t>('A'));
  EXPECT_EQ(byte_to_codepoint('!'), static_cast<uint32_t>('!'));
  EXPECT_EQ(byte_to_codepoint(0x00), 0x100u);
  EXPECT_EQ(byte_to_codepoint(' '), 0x120u);  // "Ġ"
  EXPECT_EQ(byte_to_codepoint('\n'), 0x10Au);  // "Ċ"
  EXPECT_EQ(byte_to_codepoint(0xAD), 0x143u);  // soft hyphen, the last shifted byte
  EXPECT_EQ(byte_to_codepoint(0xFF), 0xFFu);
  std::set<uint32_t> seen;
  for (int b = 0; b < 256; ++b) seen.insert(byte_to_codepoint(static_cast<uint8_t>(b)));
  EXPECT_EQ(seen.size(), 256u) << "the mapping must be a bijection";
}

TEST(ByteUnicode, SpellingRoundTrip) {
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  EXPECT_EQ(spelling_to_bytes(bytes_to_spelling(all)), all);
  EXPECT_EQ(bytes_to_spelling(" the"), "Ġthe");
  EXPECT_EQ(spelling_to_bytes("ĠHello"), " Hello");
  EXPECT_THROW(spelling_to_bytes("\xff"), zt::Error);
  EXPECT_THROW(spelling_to_bytes("中"), zt::Error);
}

TEST(Utf8, ValidatesSequences) {
  EXPECT_TRUE(is_valid_utf8("plain ascii"));
  EXPECT_TRUE(is_valid_utf8("é中😀\u00a0"));
  EXPECT_TRUE(is_valid_utf8(std::string("\0", 1)));
  for (const char* bad : {"\x80", "\xc0\x80", "\xc1\xbf", "\xe0\x80\x80", "\xed\xa0\x80", "\xf0\x80\x80\x80",
                          "\xf4\x90\x80\x80", "\xf5\x80\x80\x80", "\xff", "\xe2\x82", "\xc3"})
    EXPECT_FALSE(is_valid_utf8(bad)) << "bytes: " << bad;
  EXPECT_EQ(utf8_valid_prefix("ab\xff" "cd"), 2u);
  EXPECT_EQ(utf8_valid_prefix("ab\xff" "cd", 3), 2u);
  EXPECT_EQ(utf8_sequence_length("\xf0\x9f\x98\x80", 0), 4u);
  std::string s;
  for (uint32_t cp : {0x41u, 0x7FFu, 0x800u, 0xFFFFu, 0x10000u, 0x10FFFFu}) append_utf8(s, cp);
  EXPECT_TRUE(is_valid_utf8(s));
  EXPECT_EQ(s.size(), 1u + 2 + 3 + 3 + 4 + 4);
  EXPECT_THROW(append_utf8(s, 0xD800), zt::Error);
  EXPECT_THROW(append_utf8(s, 0x110000), zt::Error);
}

}  // namespace
}  // namespace zt::data
