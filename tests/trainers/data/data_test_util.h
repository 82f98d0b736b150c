#pragma once
// Helpers for the data pipeline tests: temp directories, the real GPT-2 vocabulary (skipped
// when absent), and a tiny synthetic vocabulary so most tests need no download.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "trainers/data/byte_unicode.h"

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

inline std::string gpt2_vocab_dir() { return data_dir() + "/gpt2"; }

inline bool have_gpt2_vocab() {
  return std::filesystem::exists(gpt2_vocab_dir() + "/encoder.json") &&
         std::filesystem::exists(gpt2_vocab_dir() + "/vocab.bpe");
}

#define ZT_SKIP_WITHOUT_GPT2_VOCAB()                                                                   \
  do {                                                                                                 \
    if (!::zt::data::test::have_gpt2_vocab())                                                          \
      GTEST_SKIP() << "GPT-2 vocabulary not found in " << ::zt::data::test::gpt2_vocab_dir()          \
                   << " (run tools/fetch_data.sh --vocab-only to download it)";                        \
  } while (0)

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

}  // namespace zt::data::test
