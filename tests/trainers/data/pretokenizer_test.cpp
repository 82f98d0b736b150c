#include "trainers/data/pretokenizer.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "framework/random.h"
#include "tests/support/check.h"

namespace zt::data {
namespace {

const Pretokenizer& pretokenizer(const char* pattern) {
  static const Pretokenizer gpt2(kGpt2Pattern), cl100k(kCl100kPattern), o200k(kO200kPattern);
  return pattern == kCl100kPattern ? cl100k : pattern == kO200kPattern ? o200k : gpt2;
}

std::vector<std::string> chunks(const std::string& text, const char* pattern = kGpt2Pattern) {
  std::vector<std::string> out;
  for (std::string_view c : pretokenizer(pattern).split(text)) out.emplace_back(c);
  return out;
}

const char* const kPatterns[] = {kGpt2Pattern, kCl100kPattern, kO200kPattern};

using V = std::vector<std::string>;

TEST(Pretokenizer, SplitsLikeGpt2) {
  EXPECT_EQ(chunks("Hello world"), (V{"Hello", " world"}));
  EXPECT_EQ(chunks("I'm here, they'll go"), (V{"I", "'m", " here", ",", " they", "'ll", " go"}));
  EXPECT_EQ(chunks("DON'T"), (V{"DON", "'", "T"})) << "contractions are case-sensitive, as in GPT-2";
  EXPECT_EQ(chunks("abc123 4.5"), (V{"abc", "123", " 4", ".", "5"}));
  // Whitespace: a run before a word leaves its last space to the word (\s+(?!\S)).
  EXPECT_EQ(chunks("a   b"), (V{"a", "  ", " b"}));
  EXPECT_EQ(chunks("a\n\n b"), (V{"a", "\n\n", " b"}));
  EXPECT_EQ(chunks("end   "), (V{"end", "   "}));
  EXPECT_EQ(chunks("x\t\ny"), (V{"x", "\t", "\n", "y"})) << "backtracks to leave a space before y";
  EXPECT_EQ(chunks(" !!?? ..."), (V{" !!??", " ..."}));
  // Unicode classes: letters of any script, other numbers, NBSP as whitespace.
  EXPECT_EQ(chunks("Привет мир"), (V{"Привет", " мир"}));
  EXPECT_EQ(chunks("日本語テキスト"), (V{"日本語テキスト"}));
  EXPECT_EQ(chunks("x ½²"), (V{"x", " ½²"}));
  EXPECT_EQ(chunks("a\u00a0b"), (V{"a", "\u00a0", "b"}));
  EXPECT_EQ(chunks("😀😀 ok"), (V{"😀😀", " ok"}));
  EXPECT_TRUE(chunks("").empty());
}

TEST(Pretokenizer, SplitsLikeCl100k) {
  const char* p = kCl100kPattern;
  EXPECT_EQ(chunks("Hello world", p), (V{"Hello", " world"}));
  EXPECT_EQ(chunks("DON'T I'm", p), (V{"DON", "'T", " I", "'m"})) << "contractions in either case";
  EXPECT_EQ(chunks("abc1234567 x", p), (V{"abc", "123", "456", "7", " x"})) << "digits in threes";
  EXPECT_EQ(chunks("(word)", p), (V{"(word", ")"})) << "one non-letter joins the word";
  EXPECT_EQ(chunks("a.\n\n b", p), (V{"a", ".\n\n", " b"}));
  EXPECT_EQ(chunks("x  \n  y", p), (V{"x", "  \n", " ", " y"}));
}

TEST(Pretokenizer, SplitsLikeO200k) {
  const char* p = kO200kPattern;
  EXPECT_EQ(chunks("CamelCaseWORD here", p), (V{"Camel", "Case", "WORD", " here"}));
  EXPECT_EQ(chunks("I'm DON'T", p), (V{"I'm", " DON'T"})) << "contractions stay with the word";
  EXPECT_EQ(chunks("a1234", p), (V{"a", "123", "4"}));
  EXPECT_EQ(chunks("x //\n/y", p), (V{"x", " //\n/", "y"})) << "slashes follow the newline";
}

TEST(Pretokenizer, InvalidUtf8BecomesItsOwnChunk) {
  EXPECT_EQ(chunks("ab\xff\xfe" "cd"), (V{"ab", "\xff\xfe", "cd"}));
  EXPECT_EQ(chunks("ab\xff\xfe" "cd", kCl100kPattern), (V{"ab", "\xff\xfe", "cd"}));
  EXPECT_EQ(chunks("x \xe2\x82"), (V{"x", " ", "\xe2\x82"}));  // cut-off 3-byte sequence at the end
  EXPECT_EQ(chunks("\xed\xa0\x80" "a"), (V{"\xed\xa0\x80", "a"}));  // encoded surrogate
  EXPECT_EQ(chunks("\xc0\x80"), (V{"\xc0\x80"}));                 // overlong NUL
}

TEST(Pretokenizer, ChunksTileTheInputExactly) {
  Generator& gen = zt::test::test_generator();
  const char* pieces[] = {" ", "  ", "\n", "\t", "a", "Z", "7", "'s", "'", "é", "ж", "中", "😀", ".", ",", "\xff", "\xe2"};
  for (int k = 0; k < 300; ++k) {
    const Pretokenizer& pre = pretokenizer(kPatterns[k % 3]);
    std::string s;
    const int n = static_cast<int>(gen.below(40));
    for (int i = 0; i < n; ++i) s += pieces[gen.below(std::size(pieces))];
    std::string joined;
    for (std::string_view c : pre.split(s)) {
      ASSERT_FALSE(c.empty());
      ASSERT_EQ(c.data(), s.data() + joined.size()) << "chunks must be consecutive views";
      joined += c;
    }
    ASSERT_EQ(joined, s);
  }
}

TEST(Pretokenizer, HugeRunsDoNotExhaustTheMatcher) {
  for (const char* pattern : kPatterns) {
  const Pretokenizer& pre = pretokenizer(pattern);
  const std::string spaces(2 << 20, ' ');
  const std::string text = "a" + spaces + "b";  // chunks are views: the text must outlive them
  auto out = pre.split(text);
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[1].size(), spaces.size() - 1);
  EXPECT_EQ(out[2], " b");
  const std::string letters(2 << 20, 'q');
  EXPECT_EQ(pre.split(letters).size(), 1u);
  std::string punct(1 << 20, '#');
  EXPECT_EQ(pre.split(punct).size(), 1u);
  }
}

TEST(Pretokenizer, ABadPatternIsAnErrorQuotingPcre2) {
  const std::string msg = zt::test::error_of([] { Pretokenizer bad("a(b"); });
  EXPECT_NE(msg.find("cannot compile"), std::string::npos) << msg;
  EXPECT_NE(msg.find("a(b"), std::string::npos) << msg;
}

}  // namespace
}  // namespace zt::data
