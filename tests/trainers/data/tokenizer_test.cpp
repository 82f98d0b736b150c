#include "trainers/data/tokenizer.h"

#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "framework/error.h"
#include "framework/random.h"
#include "tests/support/check.h"
#include "tests/trainers/data/data_test_util.h"
#include "trainers/data/bpe_tokenizer.h"
#include "trainers/data/utf8.h"

namespace zt::data {
namespace {

using test::TempDir;
using ::zt::test::error_of;

// The real vocabularies, each loaded once for the suite (0.1 to 1 s each).
const Tokenizer& real(const std::string& name) {
  static std::mutex mu;
  static std::map<std::string, std::unique_ptr<Tokenizer>> loaded;
  const std::lock_guard<std::mutex> lock(mu);
  auto& tok = loaded[name];
  if (!tok) tok = make_tokenizer(name, test::vocab_dir(name));
  return *tok;
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
    if (gen.below(40) == 0) s += "<|endoftext|>";
    append_utf8(s, cp);
  }
  return s;
}

// ---- every tokenizer: the same promises -------------------------------------------------

class EveryTokenizer : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { ZT_SKIP_WITHOUT_VOCAB(GetParam()); }
  const Tokenizer& tok() const { return real(GetParam()); }
};

INSTANTIATE_TEST_SUITE_P(Tokenizers, EveryTokenizer, ::testing::Values("gpt2", "cl100k", "o200k", "llama3"),
                         [](const auto& info) { return info.param; });

// Ids computed by the npm package's JavaScript encoder (tools/tokenizer_reference.js cases NAME).
TEST_P(EveryTokenizer, MatchesTheReferenceEncoder) {
  const auto path = std::string(ZTRAIN_SOURCE_DIR) + "/tests/data/" + GetParam() + "_reference_ids.json";
  const auto ref = nlohmann::json::parse(test::read_file(path));
  ASSERT_EQ(ref.at("special_tokens"), "allowed") << path;
  ASSERT_GE(ref.at("cases").size(), 25u) << path;
  for (const auto& c : ref.at("cases")) {
    const std::string text = c.at("text");
    const auto expected = c.at("ids").get<std::vector<int32_t>>();
    EXPECT_EQ(tok().encode(text, SpecialTokens::allowed), expected) << "text: " << c.at("text").dump();
    EXPECT_EQ(tok().decode(expected), text) << "text: " << c.at("text").dump();
  }
}

TEST_P(EveryTokenizer, RoundTripsRandomUnicode) {
  Generator& gen = zt::test::test_generator();
  for (int k = 0; k < 200; ++k) {
    const std::string s = random_unicode(gen, 80, /*include_odd_spaces=*/true);
    for (auto special : {SpecialTokens::as_text, SpecialTokens::allowed}) {
      const auto ids = tok().encode(s, special);
      for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < tok().vocab_size()) << id;
      ASSERT_EQ(tok().decode(ids), s) << "case " << k;
    }
  }
}

TEST_P(EveryTokenizer, InvalidUtf8NeverCrashesAndRoundTripsByteExactly) {
  const std::vector<std::string> nasty = {
      "\xff", "\xc0\x80", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xe2\x82", "abc\x80", "\x80\x80\x80 x",
      std::string("nul\0byte", 8), "caf\xc3", "\xf0\x9f\x98", " \xfe  \xff\n", "<|\xff|>", "<|endoftext|\xff"};
  for (const std::string& s : nasty) {
    EXPECT_EQ(tok().decode(tok().encode(s)), s) << "bytes of size " << s.size();
    EXPECT_EQ(tok().decode(tok().encode(s, SpecialTokens::allowed)), s) << "bytes of size " << s.size();
  }
  // Valid text next to invalid bytes encodes as it would alone (byte fallback, not replacement).
  std::vector<int32_t> expected = tok().encode("Hello world");
  const auto ids = tok().encode(std::string("Hello world") + "\xff");
  ASSERT_EQ(ids.size(), expected.size() + 1);
  EXPECT_EQ(std::vector<int32_t>(ids.begin(), ids.end() - 1), expected);
  EXPECT_EQ(tok().token_bytes(ids.back()), "\xff");

  Generator& gen = zt::test::test_generator();
  for (int k = 0; k < 200; ++k) {
    std::string s(gen.below(64), '\0');
    for (char& c : s) c = static_cast<char>(gen.below(256));
    if (k % 2) s = random_unicode(gen, 10, false) + s + random_unicode(gen, 10, false);
    ASSERT_EQ(tok().decode(tok().encode(s, SpecialTokens::allowed)), s) << "case " << k;
  }
}

TEST_P(EveryTokenizer, SpecialTokensAreSpecialOnlyWhenAllowed) {
  const std::string sep = tok().decode({tok().document_separator()});
  EXPECT_EQ(tok().special_id(sep), tok().document_separator());
  EXPECT_EQ(tok().special_id("<|no_such_token|>"), -1);
  const auto left = tok().encode("Hello world"), right = tok().encode(" again");
  std::vector<int32_t> expected = left;
  expected.push_back(tok().document_separator());
  expected.insert(expected.end(), right.begin(), right.end());
  EXPECT_EQ(tok().encode("Hello world" + sep + " again", SpecialTokens::allowed), expected);
  EXPECT_EQ(tok().encode(sep + sep, SpecialTokens::allowed),
            (std::vector<int32_t>{tok().document_separator(), tok().document_separator()}));
  const auto plain = tok().encode(sep);
  EXPECT_GT(plain.size(), 1u) << "as text it is ordinary tokens";
  EXPECT_EQ(tok().decode(plain), sep);
  // Almost-special text stays text.
  EXPECT_EQ(tok().encode("<" + sep, SpecialTokens::allowed).back(), tok().document_separator());
  EXPECT_EQ(tok().encode(sep.substr(0, sep.size() - 1), SpecialTokens::allowed),
            tok().encode(sep.substr(0, sep.size() - 1)));
}

TEST_P(EveryTokenizer, LongRunsStayFastAndExact) {
  // Megabyte-long pre-tokens: the O(n^2) trap of the naive merge loop.
  for (const std::string& text : {std::string(1 << 19, ' '), std::string(1 << 17, 'a'),
                                  "x" + std::string(1 << 18, ' ') + "y " + std::string(1 << 16, 'a') + "\n"})
    EXPECT_EQ(tok().decode(tok().encode(text)), text);
}

TEST_P(EveryTokenizer, ConcurrentEncodingGivesTheSameIds) {
  Generator gen(7);
  std::vector<std::string> texts;
  for (int k = 0; k < 100; ++k) texts.push_back(random_unicode(gen, 60, false));
  std::vector<std::vector<int32_t>> serial;
  for (const auto& t : texts) serial.push_back(tok().encode(t));
  std::vector<std::vector<std::vector<int32_t>>> parallel(3);
  std::vector<std::thread> pool;
  for (int w = 0; w < 3; ++w)
    pool.emplace_back([&, w] {
      for (int rep = 0; rep < 2; ++rep) {
        parallel[w].clear();
        for (const auto& t : texts) parallel[w].push_back(tok().encode(t));
      }
    });
  for (auto& th : pool) th.join();
  for (int w = 0; w < 3; ++w) EXPECT_EQ(parallel[w], serial) << "thread " << w;
}

TEST_P(EveryTokenizer, DecodeRejectsIdsThatAreNotTokens) {
  const int32_t n = tok().vocab_size();
  try {
    tok().decode({0, n});
    FAIL() << "expected zt::Error";
  } catch (const zt::Error& e) {
    EXPECT_NE(std::string(e.what()).find(std::to_string(n)), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("position 1"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(GetParam()), std::string::npos) << e.what();
  }
  EXPECT_THROW(tok().decode({-1}), zt::Error);
  EXPECT_THROW(tok().token_bytes(n + 5), zt::Error);
}

// ---- each tokenizer's own numbers (from the JavaScript encoders) -------------------------

TEST(Tokenizers, KnownIdsAndSizes) {
  struct Known {
    const char* name;
    int32_t vocab_size, separator;
    std::vector<int32_t> hello, space_hello;
  };
  const Known known[] = {
      {"gpt2", 50257, 50256, {15496, 995}, {18435, 995}},
      {"cl100k", 100277, 100257, {9906, 1917}, {22691, 1917}},
      {"o200k", 200019, 199999, {13225, 2375}, {32949, 2375}},
      {"llama3", 128256, 128000, {9906, 1917}, {22691, 1917}},
  };
  int ran = 0;
  for (const Known& k : known) {
    if (!test::have_vocab(k.name)) continue;
    ++ran;
    const Tokenizer& tok = real(k.name);
    EXPECT_EQ(tok.name(), k.name);
    EXPECT_EQ(tok.vocab_size(), k.vocab_size) << k.name;
    EXPECT_EQ(tok.document_separator(), k.separator) << k.name;
    EXPECT_EQ(tok.encode("Hello world"), k.hello) << k.name;
    EXPECT_EQ(tok.encode(" Hello world"), k.space_hello) << k.name;
    EXPECT_EQ(tok.decode(k.hello), "Hello world") << k.name;
    EXPECT_TRUE(tok.encode("").empty()) << k.name;
  }
  if (ran == 0) GTEST_SKIP() << "no vocabulary in " << test::data_dir() << " (run tools/fetch_data.sh --tokenizers all)";
}

TEST(Tokenizers, SchemeSpecifics) {
  if (test::have_vocab("gpt2")) {
    const auto& tok = dynamic_cast<const BpeTokenizer&>(real("gpt2"));
    EXPECT_EQ(tok.num_merges(), 50000);
    // GPT-2 has no multi-space tokens (a space run stays 220 220 ...) but merges "aaaa".
    EXPECT_EQ(tok.encode(std::string(1 << 16, ' ')), std::vector<int32_t>(1 << 16, 220));
    EXPECT_EQ(tok.encode(std::string(1 << 16, 'a')), std::vector<int32_t>(1 << 14, 24794));
    EXPECT_EQ(tok.encode("a<|endoftext|>b"), (std::vector<int32_t>{64, 27, 91, 437, 1659, 5239, 91, 29, 65}));
  }
  if (test::have_vocab("cl100k")) {
    const Tokenizer& tok = real("cl100k");
    EXPECT_EQ(tok.encode("<|fim_prefix|>x<|endofprompt|>", SpecialTokens::allowed),
              (std::vector<int32_t>{100258, 87, 100276}));
    EXPECT_EQ(tok.encode("1234567"), (std::vector<int32_t>{4513, 10961, 22})) << "digits in threes";
    EXPECT_THROW(tok.decode({100256}), zt::Error) << "an unused id";
  }
  if (test::have_vocab("o200k")) {
    const Tokenizer& tok = real("o200k");
    EXPECT_EQ(tok.encode("question<|endofprompt|>answer<|endoftext|>", SpecialTokens::allowed),
              (std::vector<int32_t>{14921, 200018, 17021, 199999}));
    EXPECT_THROW(tok.decode({199998}), zt::Error) << "an unused id";
  }
  if (test::have_vocab("llama3")) {
    const Tokenizer& tok = real("llama3");
    EXPECT_EQ(tok.special_id("<|end_of_text|>"), 128001);
    EXPECT_EQ(tok.special_id("<|eot_id|>"), 128009);
    EXPECT_EQ(tok.special_id("<|reserved_special_token_247|>"), 128255);
    EXPECT_EQ(tok.decode({128000, 2028, 374, 264, 1296, 11914, 13, 128001}),
              "<|begin_of_text|>This is a test sentence.<|end_of_text|>");
  }
}

// ---- the factory ------------------------------------------------------------------------

TEST(TokenizerFactory, UnknownNamesAreErrorsNamingThemAndTheKnownOnes) {
  const std::string msg = error_of([] { make_tokenizer("gpt5", "/nonexistent"); });
  EXPECT_NE(msg.find("unknown tokenizer 'gpt5'"), std::string::npos) << msg;
  for (const std::string& name : tokenizer_names()) EXPECT_NE(msg.find(name), std::string::npos) << msg;
  EXPECT_THROW(tokenizer_files("GPT2", ""), zt::Error) << "names are case-sensitive";
  EXPECT_EQ(tokenizer_names(), (std::vector<std::string>{"gpt2", "cl100k", "o200k", "llama3"}));
  EXPECT_EQ(default_vocab_dir("o200k"), "data/o200k");
  EXPECT_EQ(tokenizer_files("cl100k", "v"), (std::vector<std::string>{"v/cl100k_base.tiktoken", "v/special_tokens.json"}));
}

TEST(TokenizerFactory, MissingFilesNameTheFileAndTheFetchCommand) {
  TempDir dir;
  for (const std::string& name : tokenizer_names()) {
    const std::string msg = error_of([&] { make_tokenizer(name, dir.path()); });
    EXPECT_NE(msg.find(tokenizer_files(name, dir.path())[0]), std::string::npos) << msg;
    EXPECT_NE(msg.find("fetch_data.sh --tokenizers " + name), std::string::npos) << msg;
  }
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

TEST(TokenizeTool, EncodesAndDecodesWithEachTokenizer) {
  const std::string bin = std::string(ZTRAIN_BIN_DIR) + "/tokenize";
  if (!std::filesystem::exists(bin)) GTEST_SKIP() << bin << " not built";
  ZT_SKIP_WITHOUT_GPT2_VOCAB();
  const std::string vocab = " --vocab-dir '" + test::gpt2_vocab_dir() + "'";
  int status = 0;
  EXPECT_EQ(run(bin + vocab + " --text 'Hello world'", status), "15496 995\n");
  EXPECT_EQ(status, 0);
  EXPECT_EQ(run(bin + vocab + " --decode 15496 995", status), "Hello world\n");
  EXPECT_EQ(status, 0);
  EXPECT_EQ(run(bin + vocab + " --text 'a<|endoftext|>b'", status), "64 50256 65\n");
  std::string err = run(bin + vocab + " --decode 70000", status);
  EXPECT_NE(status, 0);
  EXPECT_NE(err.find("70000"), std::string::npos) << err;
  err = run(bin + " --tokenizer gpt5 --text x", status);
  EXPECT_NE(status, 0);
  EXPECT_NE(err.find("unknown tokenizer 'gpt5'"), std::string::npos) << err;
  if (test::have_vocab("cl100k")) {
    const std::string cl = bin + " --tokenizer cl100k --vocab-dir '" + test::vocab_dir("cl100k") + "'";
    EXPECT_EQ(run(cl + " --text 'Hello world<|endoftext|>'", status), "9906 1917 100257\n");
    EXPECT_EQ(status, 0);
    EXPECT_EQ(run(cl + " --decode 9906 1917", status), "Hello world\n");
  }
}

// ---- vocabulary files: synthetic ones, so these run without the download ----

TEST(Gpt2TokenizerFiles, SyntheticVocabularyMergesByRank) {
  TempDir dir;
  test::SyntheticVocab v;
  v.write(dir.path());
  const auto tok = make_tokenizer("gpt2", dir.path());
  EXPECT_EQ(tok->vocab_size(), 256 + 7 + 1);
  EXPECT_EQ(tok->document_separator(), v.eot());
  // "hello" -> he, ll -> hell -> hello; " world" -> Ġw, or -> Ġwor, then l, d as bytes.
  EXPECT_EQ(tok->encode("hello world"), (std::vector<int32_t>{v.id_of("hello"), v.id_of(" wor"), 'l', 'd'}));
  EXPECT_EQ(tok->encode("hel"), (std::vector<int32_t>{v.id_of("he"), 'l'}));
  EXPECT_EQ(tok->encode("x<|endoftext|>", SpecialTokens::allowed), (std::vector<int32_t>{'x', v.eot()}));
}

TEST(Gpt2TokenizerFiles, ErrorsNameTheFileAndProblem) {
  TempDir dir;
  const auto load = [&] { make_tokenizer("gpt2", dir.path()); };
  std::string msg = error_of(load);
  EXPECT_NE(msg.find("encoder.json"), std::string::npos) << msg;
  EXPECT_NE(msg.find("fetch_data.sh"), std::string::npos) << msg;

  test::SyntheticVocab v;
  v.write(dir.path());
  test::write_file(dir / "vocab.bpe", "#version: 0.2\nh e\nl l l\n");
  msg = error_of(load);
  EXPECT_NE(msg.find("vocab.bpe:3"), std::string::npos) << msg;

  test::write_file(dir / "vocab.bpe", "#version: 0.2\nhe ll\n");  // "he" is not made by an earlier merge
  msg = error_of(load);
  EXPECT_NE(msg.find("vocab.bpe:2"), std::string::npos) << msg;
  EXPECT_NE(msg.find("earlier merge"), std::string::npos) << msg;

  test::write_file(dir / "vocab.bpe", "#version: 0.2\nq z\n");  // "qz" is not in encoder.json
  msg = error_of(load);
  EXPECT_NE(msg.find("\"qz\" is not in"), std::string::npos) << msg;

  test::write_file(dir / "encoder.json", "{\"a\": 0, ");
  msg = error_of(load);
  EXPECT_NE(msg.find("not valid JSON"), std::string::npos) << msg;

  test::write_file(dir / "encoder.json", "{\"a\": 0, \"b\": 5}");
  msg = error_of(load);
  EXPECT_NE(msg.find("outside [0, 2)"), std::string::npos) << msg;
}

TEST(TiktokenFiles, SyntheticRanksMergeTheLowestRankedConcatenation) {
  TempDir dir;
  test::SyntheticRanks r;
  r.write(dir.path());
  const auto tok = make_tokenizer("cl100k", dir.path());
  EXPECT_EQ(tok->vocab_size(), 303);
  EXPECT_EQ(tok->document_separator(), 300);
  // "abce": bc (256) beats ab (257): a|bc|e, then a+bc = abc (258).
  EXPECT_EQ(tok->encode("abce"), (std::vector<int32_t>{258, 'e'}));
  // "abcd" is a token: the whole chunk maps to it without merging.
  EXPECT_EQ(tok->encode("abcd"), (std::vector<int32_t>{260}));
  // "xabcdx": bc (256) first, then a+bc = abc (258), then abc+d = abcd (260); cd (259) never.
  EXPECT_EQ(tok->encode("xabcdx"), (std::vector<int32_t>{'x', 260, 'x'}));
  // "bcd": bc (256) before cd (259); bc+d is no token.
  EXPECT_EQ(tok->encode("bcd"), (std::vector<int32_t>{256, 'd'}));
  EXPECT_EQ(tok->encode("a<|x|>b<|endoftext|>", SpecialTokens::allowed), (std::vector<int32_t>{'a', 302, 'b', 300}));
  EXPECT_THROW(tok->decode({301}), zt::Error) << "an unused id";
}

TEST(TiktokenFiles, ErrorsNameTheFileAndLine) {
  TempDir dir;
  test::SyntheticRanks r;
  r.write(dir.path());
  const auto load = [&] { make_tokenizer("cl100k", dir.path()); };
  const std::string ranks = dir / "cl100k_base.tiktoken";
  const std::string good = test::read_file(ranks);

  test::write_file(ranks, good + "not-base64! 400\n");
  std::string msg = error_of(load);
  EXPECT_NE(msg.find(ranks + ":262"), std::string::npos) << msg;
  test::write_file(ranks, good + "eHk= twelve\n");
  EXPECT_NE(error_of(load).find(ranks + ":262"), std::string::npos);
  test::write_file(ranks, good + "eHk= 256\n");
  msg = error_of(load);
  EXPECT_NE(msg.find("rank 256 is used twice"), std::string::npos) << msg;
  test::write_file(ranks, good + "YWI= 400\n");  // "ab" again
  msg = error_of(load);
  EXPECT_NE(msg.find("token 400 has the same bytes as token 257"), std::string::npos) << msg;
  test::write_file(ranks, good.substr(good.find('\n') + 1));  // byte 0 has no token
  msg = error_of(load);
  EXPECT_NE(msg.find("no token for byte 0"), std::string::npos) << msg;
  test::write_file(ranks, good);

  const std::string special = dir / "special_tokens.json";
  test::write_file(special, R"({"<|endoftext|>": 257})");
  msg = error_of(load);
  EXPECT_NE(msg.find(special), std::string::npos) << msg;
  EXPECT_NE(msg.find("257"), std::string::npos) << msg;
  test::write_file(special, R"({"<|x|>": 300})");
  msg = error_of(load);
  EXPECT_NE(msg.find("no \"<|endoftext|>\" token"), std::string::npos) << msg;
  test::write_file(special, R"({"<|endoftext|>": 300, "<|a|>b|>": 301})");
  msg = error_of(load);
  EXPECT_NE(msg.find("not of the form <|name|>"), std::string::npos) << msg;
  test::write_file(special, R"({"<|endoftext|>": -3})");
  msg = error_of(load);
  EXPECT_NE(msg.find("is not an integer in"), std::string::npos) << msg;
}

}  // namespace
}  // namespace zt::data
