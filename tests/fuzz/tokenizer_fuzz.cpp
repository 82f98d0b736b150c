// libFuzzer target: byte-level BPE encode/decode on arbitrary bytes. The property checked is
// the tokenizer's promise, decode(encode(s)) == s for any bytes, with and without special
// tokens. The tokenizer is $ZTRAIN_TOKENIZER (default gpt2) with its real vocabulary
// ($ZTRAIN_VOCAB_DIR, default data/NAME of the source tree); gpt2 without its files falls back
// to the tiny vocabulary next to this file.
#include <cstdlib>
#include <filesystem>
#include <cstring>

#include "tests/fuzz/fuzz_input.h"
#include "trainers/data/tokenizer.h"

namespace {

const zt::data::Tokenizer& tokenizer() {
  static const std::unique_ptr<zt::data::Tokenizer> tok = [] {
    const char* name_env = std::getenv("ZTRAIN_TOKENIZER");
    const std::string name = name_env && *name_env ? name_env : "gpt2";
    const char* env = std::getenv("ZTRAIN_VOCAB_DIR");
    std::string dir = env ? env : ZTRAIN_SOURCE_DIR "/data/" + name;
    if (name == "gpt2" && !std::filesystem::exists(dir + "/encoder.json")) dir = ZTRAIN_SOURCE_DIR "/tests/fuzz/tiny_vocab";
    return zt::data::make_tokenizer(name, dir);
  }();
  return *tok;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const auto& tok = tokenizer();
  for (auto special : {zt::data::SpecialTokens::as_text, zt::data::SpecialTokens::allowed})
    if (tok.decode(tok.encode(text, special)) != text) __builtin_trap();
  // Ids read from anywhere: in range they decode, out of range they are a zt::Error.
  std::vector<int32_t> ids;
  for (size_t i = 0; i + 4 <= size && ids.size() < 64; i += 4) {
    int32_t id;
    std::memcpy(&id, data + i, 4);
    ids.push_back(id);
  }
  zt::fuzz::expect_clean_refusal([&] { (void)tok.decode(ids); });
  return 0;
}
