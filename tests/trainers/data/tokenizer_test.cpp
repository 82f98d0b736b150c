#include "trainers/data/gpt2_tokenizer.h"

#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <functional>
#include <memory>
#include <thread>

#include "framework/error.h"
#include "framework/random.h"
#include "tests/support/check.h"
#include "tests/trainers/data/data_test_util.h"
#include "trainers/data/utf8.h"

namespace zt::data {
namespace {

using test::TempDir;

// The real vocabulary, loaded once for the suite (about 0.1 s).
const Gpt2Tokenizer& gpt2() {
  static const Gpt2Tokenizer tok = Gpt2Tokenizer::from_dir(test::gpt2_vocab_dir());
  return tok;
}

std::string random_unicode(Generator& gen, int max_chars, bool include_odd_spaces) {
  // Mixed scripts, digits, spaces, controls, combining marks and emoji, so that every regex
  // branch and multi-byte lengths 1..4 occur.
  static const std::array<std::pair<uint32_t, uint32_t>, 16> ranges = {{{0x20, 0x7E},
                                                                        {0x20, 0x7E},
                                                                        {0x09, 0x0D},
                                                                        {0xA0, 0x17F},
                                                                        {0x300, 0x36F},
                                                                        {0x370, 0x3FF},
                                                                        {0x400, 0x4FF},
                                                                        {0x590, 0x6FF},
                                                                        {0x900, 0x97F},
                                                                        {0x2000, 0x206F},
                                                                        {0x3040, 0x30FF},
                                                                        {0x4E00, 0x9FFF},
                                                                        {0xAC00, 0xD7A3},
                                                                        {0xFF00, 0xFFEF},
                                                                        {0x1F300, 0x1F6FF},
                                                                        {0x10000, 0x10FFFF}}};
  std::string s;
  const int n = static_cast<int>(gen.below(static_cast<uint64_t>(max_chars) + 1));
  for (int i = 0; i < n; ++i) {
    const auto& [lo, hi] = ranges[gen.below(ranges.size())];
    uint32_t cp = lo + static_cast<uint32_t>(gen.below(hi - lo + 1));
    if (cp >= 0xD800 && cp <= 0xDFFF) cp = ' ';
    if (include_odd_spaces && gen.below(20) == 0) cp = std::array<uint32_t, 3>{0x85, 0x180E, 0xFEFF}[gen.below(3)];
    if (gen.below(12) == 0) s += "'s";
    append_utf8(s, cp);
  }
  return s;
}

class Gpt2TokenizerTest : public ::testing::Test {
 protected:
  void SetUp() override { ZT_SKIP_WITHOUT_GPT2_VOCAB(); }
};

TEST_F(Gpt2TokenizerTest, KnownIds) {
  const Gpt2Tokenizer& tok = gpt2();
  EXPECT_EQ(tok.vocab_size(), 50257);
  EXPECT_EQ(tok.num_merges(), 50000);
  EXPECT_EQ(tok.eot_id(), 50256);
  EXPECT_EQ(tok.encode("Hello world"), (std::vector<int32_t>{15496, 995}));
  EXPECT_EQ(tok.encode(" Hello world"), (std::vector<int32_t>{18435, 995}));
  EXPECT_EQ(tok.decode({15496, 995}), "Hello world");
  EXPECT_TRUE(tok.encode("").empty());
}

// Ids computed by the npm package's JavaScript encoder (tools/gpt2_reference_ids.js).
TEST_F(Gpt2TokenizerTest, MatchesTheReferenceEncoder) {
  const auto path = std::string(ZTRAIN_SOURCE_DIR) + "/tests/data/gpt2_reference_ids.json";
  const auto ref = nlohmann::json::parse(test::read_file(path));
  ASSERT_GE(ref.at("cases").size(), 20u) << path;
  for (const auto& c : ref.at("cases")) {
    const std::string text = c.at("text");
    const auto expected = c.at("ids").get<std::vector<int32_t>>();
    EXPECT_EQ(gpt2().encode(text), expected) << "text: " << c.at("text").dump();
    EXPECT_EQ(gpt2().decode(expected), text) << "text: " << c.at("text").dump();
  }
}

TEST_F(Gpt2TokenizerTest, EndOfTextIsSpecialOnlyWhenAllowed) {
  const Gpt2Tokenizer& tok = gpt2();
  EXPECT_EQ(tok.encode("a<|endoftext|>b", SpecialTokens::allowed), (std::vector<int32_t>{64, 50256, 65}));
  EXPECT_EQ(tok.encode("<|endoftext|><|endoftext|>", SpecialTokens::allowed), (std::vector<int32_t>{50256, 50256}));
  EXPECT_EQ(tok.encode("<|endoftext|>", SpecialTokens::allowed), (std::vector<int32_t>{50256}));
  // As text it is the reference encoder's spelling: < | endoftext |>
  const auto plain = tok.encode("a<|endoftext|>b");
  EXPECT_EQ(plain, (std::vector<int32_t>{64, 27, 91, 437, 1659, 5239, 91, 29, 65}));
  EXPECT_EQ(tok.decode({50256}), "<|endoftext|>");
  // Text around the marker encodes exactly as it would alone.
  const auto left = tok.encode("Hello world"), right = tok.encode(" again");
  std::vector<int32_t> expected = left;
  expected.push_back(50256);
  expected.insert(expected.end(), right.begin(), right.end());
  EXPECT_EQ(tok.encode("Hello world<|endoftext|> again", SpecialTokens::allowed), expected);
}

TEST_F(Gpt2TokenizerTest, RoundTripsRandomUnicode) {
  Generator& gen = zt::test::test_generator();
  for (int k = 0; k < 400; ++k) {
    const std::string s = random_unicode(gen, 80, /*include_odd_spaces=*/true);
    for (auto special : {SpecialTokens::as_text, SpecialTokens::allowed}) {
      const auto ids = gpt2().encode(s, special);
      for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < 50257) << id;
      ASSERT_EQ(gpt2().decode(ids), s) << "case " << k;
    }
  }
}

TEST_F(Gpt2TokenizerTest, InvalidUtf8NeverCrashesAndRoundTripsByteExactly) {
  const Gpt2Tokenizer& tok = gpt2();
  const std::vector<std::string> nasty = {
      "\xff", "\xc0\x80", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xe2\x82", "abc\x80", "\x80\x80\x80 x",
      std::string("nul\0byte", 8), "caf\xc3", "\xf0\x9f\x98", " \xfe  \xff\n"};
  for (const std::string& s : nasty) {
    const auto ids = tok.encode(s);
    EXPECT_EQ(tok.decode(ids), s) << "bytes of size " << s.size();
  }
  // Valid text next to invalid bytes encodes as it would alone (byte fallback, not replacement).
  auto ids = tok.encode(std::string("Hello world") + "\xff");
  ASSERT_EQ(ids.size(), 3u);
  EXPECT_EQ(ids[0], 15496);
  EXPECT_EQ(ids[1], 995);
  EXPECT_EQ(tok.token_bytes(ids[2]), "\xff");

  Generator& gen = zt::test::test_generator();
  for (int k = 0; k < 400; ++k) {
    std::string s(gen.below(64), '\0');
    for (char& c : s) c = static_cast<char>(gen.below(256));
    if (k % 2) s = random_unicode(gen, 10, false) + s + random_unicode(gen, 10, false);
    const auto out = tok.encode(s, SpecialTokens::allowed);
    ASSERT_EQ(tok.decode(out), s) << "case " << k;
  }
}

TEST_F(Gpt2TokenizerTest, LongRunsStayFastAndExact) {
  // Megabyte-long pre-tokens: the O(n^2) trap of the naive merge loop. GPT-2 has no
  // multi-space tokens (a space run stays 220 220 ...) but merges "aaaa" into 24794.
  const Gpt2Tokenizer& tok = gpt2();
  EXPECT_EQ(tok.encode(std::string(1 << 20, ' ')), std::vector<int32_t>(1 << 20, 220));
  EXPECT_EQ(tok.encode(std::string(1 << 18, 'a')), std::vector<int32_t>(1 << 16, 24794));
  const std::string text = "x" + std::string(1 << 20, ' ') + "y " + std::string(1 << 18, 'a') + "\n";
  EXPECT_EQ(tok.decode(tok.encode(text)), text);
}

TEST_F(Gpt2TokenizerTest, ConcurrentEncodingGivesTheSameIds) {
  const Gpt2Tokenizer& tok = gpt2();
  Generator gen(7);
  std::vector<std::string> texts;
  for (int k = 0; k < 200; ++k) texts.push_back(random_unicode(gen, 60, false));
  std::vector<std::vector<int32_t>> serial;
  for (const auto& t : texts) serial.push_back(tok.encode(t));
  std::vector<std::vector<std::vector<int32_t>>> parallel(3);
  std::vector<std::thread> pool;
  for (int w = 0; w < 3; ++w)
    pool.emplace_back([&, w] {
      for (int rep = 0; rep < 3; ++rep) {
        parallel[w].clear();
        for (const auto& t : texts) parallel[w].push_back(tok.encode(t));
      }
    });
  for (auto& th : pool) th.join();
  for (int w = 0; w < 3; ++w) EXPECT_EQ(parallel[w], serial) << "thread " << w;
}

TEST_F(Gpt2TokenizerTest, DecodeRejectsIdsOutsideTheVocabulary) {
  try {
    gpt2().decode({15496, 50257});
    FAIL() << "expected zt::Error";
  } catch (const zt::Error& e) {
    EXPECT_NE(std::string(e.what()).find("50257"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("position 1"), std::string::npos) << e.what();
  }
  EXPECT_THROW(gpt2().decode({-1}), zt::Error);
  EXPECT_THROW(gpt2().token_bytes(60000), zt::Error);
}

// ---- the command-line tool (skipped when not built) ----

std::string run(const std::string& cmd, int& status) {
  std::string out;
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen((cmd + " 2>&1").c_str(), "r"), pclose);
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), pipe.get())) > 0) out.append(buf, n);
  status = pclose(pipe.release());
  return out;
}

TEST_F(Gpt2TokenizerTest, TokenizeTool) {
  const std::string bin = std::string(ZTRAIN_BIN_DIR) + "/tokenize";
  if (!std::filesystem::exists(bin)) GTEST_SKIP() << bin << " not built";
  const std::string vocab = " --vocab-dir '" + test::gpt2_vocab_dir() + "'";
  int status = 0;
  EXPECT_EQ(run(bin + vocab + " --text 'Hello world'", status), "15496 995\n");
  EXPECT_EQ(status, 0);
  EXPECT_EQ(run(bin + vocab + " --decode 15496 995", status), "Hello world\n");
  EXPECT_EQ(status, 0);
  EXPECT_EQ(run(bin + vocab + " --text 'a<|endoftext|>b'", status), "64 50256 65\n");
  const std::string err = run(bin + vocab + " --decode 70000", status);
  EXPECT_NE(status, 0);
  EXPECT_NE(err.find("70000"), std::string::npos) << err;
}

// ---- vocabulary files: a synthetic one, so these run without the download ----

TEST(Gpt2TokenizerFiles, SyntheticVocabularyMergesByRank) {
  TempDir dir;
  test::SyntheticVocab v;
  v.write(dir.path());
  const Gpt2Tokenizer tok = Gpt2Tokenizer::from_dir(dir.path());
  EXPECT_EQ(tok.vocab_size(), 256 + 7 + 1);
  EXPECT_EQ(tok.eot_id(), v.eot());
  // "hello" -> he, ll -> hell -> hello; " world" -> Ġw, or -> Ġwor, then l, d as bytes.
  EXPECT_EQ(tok.encode("hello world"),
            (std::vector<int32_t>{v.id_of("hello"), v.id_of(" wor"), 'l', 'd'}));
  EXPECT_EQ(tok.encode("hel"), (std::vector<int32_t>{v.id_of("he"), 'l'}));
  EXPECT_EQ(tok.encode("x<|endoftext|>", SpecialTokens::allowed), (std::vector<int32_t>{'x', v.eot()}));
}

using ::zt::test::error_of;

TEST(Gpt2TokenizerFiles, ErrorsNameTheFileAndProblem) {
  TempDir dir;
  std::string msg = error_of([&] { Gpt2Tokenizer::from_dir(dir.path()); });
  EXPECT_NE(msg.find("encoder.json"), std::string::npos) << msg;
  EXPECT_NE(msg.find("fetch_data.sh"), std::string::npos) << msg;

  test::SyntheticVocab v;
  v.write(dir.path());
  test::write_file(dir / "vocab.bpe", "#version: 0.2\nh e\nl l l\n");
  msg = error_of([&] { Gpt2Tokenizer::from_dir(dir.path()); });
  EXPECT_NE(msg.find("vocab.bpe:3"), std::string::npos) << msg;

  test::write_file(dir / "vocab.bpe", "#version: 0.2\nhe ll\n");  // "he" is not made by an earlier merge
  msg = error_of([&] { Gpt2Tokenizer::from_dir(dir.path()); });
  EXPECT_NE(msg.find("vocab.bpe:2"), std::string::npos) << msg;
  EXPECT_NE(msg.find("earlier merge"), std::string::npos) << msg;

  test::write_file(dir / "vocab.bpe", "#version: 0.2\nq z\n");  // "qz" is not in encoder.json
  msg = error_of([&] { Gpt2Tokenizer::from_dir(dir.path()); });
  EXPECT_NE(msg.find("\"qz\" is not in"), std::string::npos) << msg;

  test::write_file(dir / "encoder.json", "{\"a\": 0, ");
  msg = error_of([&] { Gpt2Tokenizer::from_dir(dir.path()); });
  EXPECT_NE(msg.find("not valid JSON"), std::string::npos) << msg;

  test::write_file(dir / "encoder.json", "{\"a\": 0, \"b\": 5}");
  msg = error_of([&] { Gpt2Tokenizer::from_dir(dir.path()); });
  EXPECT_NE(msg.find("outside [0, 2)"), std::string::npos) << msg;
}

}  // namespace
}  // namespace zt::data
