#pragma once
// Helpers for the data pipeline tests: temp directories, the real vocabularies (tests skip
// when absent), and a tiny synthetic vocabulary so most tests need no download.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "trainers/data/byte_unicode.h"
#include "trainers/data/tokenizer.h"

namespace zt::data::test {

// A fresh empty directory, removed when the object dies.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "ztrain-data-test-XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline void write_file(const std::string& path, const std::string& bytes) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// data/ of the source tree (or $ZTRAIN_DATA_DIR, as tools/fetch_data.sh uses).
inline std::string data_dir() {
  const char* env = std::getenv("ZTRAIN_DATA_DIR");
  return env && *env ? std::string(env) : std::string(ZTRAIN_SOURCE_DIR) + "/data";
}

// data/NAME: where tools/fetch_data.sh --tokenizers NAME puts a tokenizer's files.
inline std::string vocab_dir(const std::string& name) { return data_dir() + "/" + name; }
inline std::string gpt2_vocab_dir() { return vocab_dir("gpt2"); }

inline bool have_vocab(const std::string& name) {
  for (const std::string& f : tokenizer_files(name, vocab_dir(name)))
    if (!std::filesystem::exists(f)) return false;
  return true;
}
inline bool have_gpt2_vocab() { return have_vocab("gpt2"); }

#define ZT_SKIP_WITHOUT_VOCAB(name)                                                                    \
  do {                                                                                                 \
    if (!::zt::data::test::have_vocab(name))                                                           \
      GTEST_SKIP() << "the " << (name) << " vocabulary is not in " << ::zt::data::test::vocab_dir(name) \
                   << " (run tools/fetch_data.sh --vocab-only --tokenizers " << (name)                 \
                   << " to download it)";                                                              \
  } while (0)

#define ZT_SKIP_WITHOUT_GPT2_VOCAB() ZT_SKIP_WITHOUT_VOCAB(std::string("gpt2"))

// A miniature vocabulary in GPT-2's file format: the 256 byte tokens (id = byte value), then
// the merges below (ids 256..), then <|endoftext|> last.
//   h e -> he, l l -> ll, he ll -> hell, hell o -> hello, Ġ w -> Ġw, o r -> or, Ġw or -> Ġwor
struct SyntheticVocab {
  std::vector<std::pair<std::string, std::string>> merges = {
      {"h", "e"}, {"l", "l"}, {"he", "ll"}, {"hell", "o"}, {"Ġ", "w"}, {"o", "r"}, {"Ġw", "or"}};
  int32_t id_of(const std::string& bytes) const {
    if (bytes.size() == 1) return static_cast<uint8_t>(bytes[0]);
    for (size_t k = 0; k < merges.size(); ++k)
      if (spelling_to_bytes(merges[k].first + merges[k].second) == bytes) return 256 + static_cast<int32_t>(k);
    return -1;
  }
  int32_t eot() const { return 256 + static_cast<int32_t>(merges.size()); }

  // Writes dir/encoder.json and dir/vocab.bpe.
  void write(const std::string& dir) const {
    nlohmann::json enc = nlohmann::json::object();
    for (int b = 0; b < 256; ++b) enc[bytes_to_spelling(std::string(1, static_cast<char>(b)))] = b;
    std::string bpe = "#version: 0.2\n";
    for (size_t k = 0; k < merges.size(); ++k) {
      enc[merges[k].first + merges[k].second] = 256 + k;
      bpe += merges[k].first + " " + merges[k].second + "\n";
    }
    enc["<|endoftext|>"] = eot();
    write_file(dir + "/encoder.json", enc.dump());
    write_file(dir + "/vocab.bpe", bpe);
  }
};

// A miniature tiktoken vocabulary: the 256 bytes at ranks 0..255, then the tokens below at
// 256.., then the special tokens. write(dir, file) names the ranks file as a scheme expects it
// (tokenizer_files), e.g. "cl100k_base.tiktoken" to load it as cl100k (that scheme's regex).
struct SyntheticRanks {
  std::vector<std::string> tokens = {"bc", "ab", "abc", "cd", "abcd"};
  std::string special = R"({"<|endoftext|>": 300, "<|x|>": 302})";
  static std::string base64(const std::string& bytes) {
    static const char* a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    for (size_t i = 0; i < bytes.size(); i += 3) {
      uint32_t v = static_cast<uint8_t>(bytes[i]) << 16;
      if (i + 1 < bytes.size()) v |= static_cast<uint8_t>(bytes[i + 1]) << 8;
      if (i + 2 < bytes.size()) v |= static_cast<uint8_t>(bytes[i + 2]);
      out += a[(v >> 18) & 63];
      out += a[(v >> 12) & 63];
      out += i + 1 < bytes.size() ? a[(v >> 6) & 63] : '=';
      out += i + 2 < bytes.size() ? a[v & 63] : '=';
    }
    return out;
  }
  void write(const std::string& dir, const std::string& ranks_file = "cl100k_base.tiktoken") const {
    std::string ranks;
    for (int b = 0; b < 256; ++b) ranks += base64(std::string(1, static_cast<char>(b))) + " " + std::to_string(b) + "\n";
    for (size_t k = 0; k < tokens.size(); ++k) ranks += base64(tokens[k]) + " " + std::to_string(256 + k) + "\n";
    write_file(dir + "/" + ranks_file, ranks);
    write_file(dir + "/special_tokens.json", special);
  }
};

}  // namespace zt::data::test
