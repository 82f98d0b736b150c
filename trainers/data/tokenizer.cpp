#include "trainers/data/tokenizer.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <sstream>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "framework/error.h"
#include "framework/io/input_file.h"
#include "trainers/data/bpe_tokenizer.h"
#include "trainers/data/byte_unicode.h"

namespace zt::data {

namespace {

// One row per tokenizer: everything that is code rather than data.
struct Scheme {
  const char* name;
  const char* pattern;
  const char* ranks_file;  // tiktoken-format ranks; nullptr: GPT-2's encoder.json + vocab.bpe
  const char* separator;   // special token written before each document
};

constexpr Scheme kSchemes[] = {
    {"gpt2", kGpt2Pattern, nullptr, "<|endoftext|>"},
    {"cl100k", kCl100kPattern, "cl100k_base.tiktoken", "<|endoftext|>"},
    {"o200k", kO200kPattern, "o200k_base.tiktoken", "<|endoftext|>"},
    {"llama3", kCl100kPattern, "llama3.tiktoken", "<|begin_of_text|>"},
};

constexpr const char* kSpecialTokensFile = "special_tokens.json";

const Scheme& scheme(const std::string& name) {
  for (const Scheme& s : kSchemes)
    if (name == s.name) return s;
  std::string known;
  for (const Scheme& s : kSchemes) known += std::string(known.empty() ? "" : ", ") + s.name;
  ZT_FAIL("unknown tokenizer '", name, "' (known: ", known, ")");
}

std::string read_vocab_file(const std::string& path, const std::string& name) {
  try {
    return io::read_regular_file(path, "tokenizer file");
  } catch (const Error& e) {
    ZT_FAIL(e.what(), " (run tools/fetch_data.sh --tokenizers ", name, " to download the ", name,
            " vocabulary into data/", name, ")");
  }
}

nlohmann::json parse_json(const std::string& path, const std::string& name) {
  try {
    return nlohmann::json::parse(read_vocab_file(path, name));
  } catch (const nlohmann::json::exception& e) {
    ZT_FAIL(path, ": not valid JSON: ", e.what());
  }
}

// GPT-2's files: encoder.json ({"spelling": id} with ids 0..n-1, spellings in byte_unicode.h's
// alphabet) and vocab.bpe ("#version: 0.2", then one merge "left right" per line, best first).
BpeVocabulary read_gpt2_files(const Scheme& s, const std::string& dir) {
  const std::string encoder_json_path = dir + "/encoder.json", vocab_bpe_path = dir + "/vocab.bpe";
  const nlohmann::json encoder = parse_json(encoder_json_path, s.name);
  ZT_CHECK(encoder.is_object() && !encoder.empty(), encoder_json_path,
           ": expected a JSON object mapping token spellings to ids");
  const size_t n = encoder.size();
  BpeVocabulary v;
  v.bytes_of.assign(n, std::string());
  std::vector<uint8_t> seen(n, 0);
  std::unordered_map<std::string, int32_t> id_of_spelling;
  id_of_spelling.reserve(n * 2);
  for (const auto& [spelling, value] : encoder.items()) {
    ZT_CHECK(value.is_number_integer(), encoder_json_path, ": id of \"", spelling, "\" is not an integer");
    const int64_t id = value.get<int64_t>();
    ZT_CHECK(id >= 0 && id < static_cast<int64_t>(n), encoder_json_path, ": id ", id, " of \"", spelling,
             "\" is outside [0, ", n, ") (ids must be 0..n-1)");
    ZT_CHECK(!seen[id], encoder_json_path, ": id ", id, " is used twice");
    seen[id] = 1;
    id_of_spelling.emplace(spelling, static_cast<int32_t>(id));
    if (spelling == s.separator) {
      v.bytes_of[id] = spelling;
      v.special.emplace_back(spelling, static_cast<int32_t>(id));
      continue;
    }
    try {
      v.bytes_of[id] = spelling_to_bytes(spelling);
    } catch (const zt::Error& e) {
      ZT_FAIL(encoder_json_path, ": ", e.what());
    }
  }
  ZT_CHECK(!v.special.empty(), encoder_json_path, ": has no \"", s.separator, "\" token");

  std::vector<int32_t> base;
  for (int b = 0; b < 256; ++b) {
    const auto it = id_of_spelling.find(bytes_to_spelling(std::string(1, static_cast<char>(b))));
    ZT_CHECK(it != id_of_spelling.end(), encoder_json_path, ": has no token for byte ", b);
    base.push_back(it->second);
  }
  base.push_back(v.special.front().second);

  v.merges = std::make_unique<BpeMerges>(static_cast<int32_t>(n), base);
  std::istringstream lines(read_vocab_file(vocab_bpe_path, s.name));
  std::string line;
  int64_t line_no = 0;
  while (std::getline(lines, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (line_no == 1 && line.rfind("#version", 0) == 0)) continue;
    const size_t space = line.find(' ');
    ZT_CHECK(space != std::string::npos && space > 0 && space + 1 < line.size() &&
                 line.find(' ', space + 1) == std::string::npos,
             vocab_bpe_path, ":", line_no, ": expected two symbols separated by one space, got \"", line, "\"");
    const std::string left = line.substr(0, space), right = line.substr(space + 1);
    const auto find = [&](const std::string& sym) {
      const auto it = id_of_spelling.find(sym);
      ZT_CHECK(it != id_of_spelling.end(), vocab_bpe_path, ":", line_no, ": \"", sym, "\" is not in ",
               encoder_json_path);
      return it->second;
    };
    const std::string why = v.merges->add(find(left), find(right), find(left + right));
    ZT_CHECK(why.empty(), vocab_bpe_path, ":", line_no, ": merge \"", line, "\" ", why);
  }
  ZT_CHECK(v.merges->size() > 0, vocab_bpe_path, ": contains no merges");
  v.source = encoder_json_path + " + " + vocab_bpe_path;
  return v;
}

// Standard base64 (with padding), as tiktoken files use; false when malformed.
bool decode_base64(std::string_view in, std::string& out) {
  static const auto table = [] {
    std::array<int8_t, 256> t{};
    t.fill(-1);
    const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int i = 0; i < 64; ++i) t[static_cast<uint8_t>(alphabet[i])] = static_cast<int8_t>(i);
    return t;
  }();
  out.clear();
  if (in.empty() || in.size() % 4 != 0) return false;
  size_t pad = 0;
  while (pad < 2 && in[in.size() - 1 - pad] == '=') ++pad;
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < in.size() - pad; ++i) {
    const int8_t d = table[static_cast<uint8_t>(in[i])];
    if (d < 0) return false;
    acc = (acc << 6) | static_cast<uint32_t>(d);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xFF));
    }
  }
  return !out.empty();
}

// tiktoken's files: NAME.tiktoken ("<base64 bytes> <rank>" per line; the rank is the id) and
// special_tokens.json ({"<|endoftext|>": 100257, ...}). The ranks are the merge order.
BpeVocabulary read_tiktoken_files(const Scheme& s, const std::string& dir) {
  const std::string ranks_path = dir + "/" + s.ranks_file, special_path = dir + "/" + kSpecialTokensFile;
  BpeVocabulary v;
  {
    const std::string text = read_vocab_file(ranks_path, s.name);
    std::string_view rest(text), line;
    int64_t line_no = 0;
    std::string bytes;
    while (!rest.empty()) {
      const size_t nl = rest.find('\n');
      line = rest.substr(0, nl);
      rest = nl == std::string_view::npos ? std::string_view() : rest.substr(nl + 1);
      ++line_no;
      if (line.empty()) continue;
      const size_t space = line.find(' ');
      int32_t rank = -1;
      const char* end = line.data() + line.size();
      bool parsed = false;
      if (space != std::string_view::npos) {
        const auto [stop, ec] = std::from_chars(line.data() + space + 1, end, rank);
        parsed = ec == std::errc{} && stop == end;
      }
      ZT_CHECK(parsed && rank >= 0 && rank < (1 << 30) && decode_base64(line.substr(0, space), bytes), ranks_path, ":",
               line_no, ": expected \"<base64 bytes> <rank>\", got \"", line.substr(0, 80), "\"");
      if (static_cast<size_t>(rank) >= v.bytes_of.size()) v.bytes_of.resize(static_cast<size_t>(rank) + 1);
      ZT_CHECK(v.bytes_of[rank].empty(), ranks_path, ":", line_no, ": rank ", rank, " is used twice");
      v.bytes_of[rank] = bytes;
    }
  }
  const nlohmann::json special = parse_json(special_path, s.name);
  ZT_CHECK(special.is_object() && !special.empty(), special_path,
           ": expected a JSON object mapping special token texts to ids");
  for (const auto& [text, value] : special.items()) {
    ZT_CHECK(value.is_number_integer() && value.get<int64_t>() >= 0 && value.get<int64_t>() < (1 << 30),
             special_path, ": id of \"", text, "\" is not an integer in [0, 2^30)");
    const auto id = value.get<int32_t>();
    if (static_cast<size_t>(id) >= v.bytes_of.size()) v.bytes_of.resize(static_cast<size_t>(id) + 1);
    ZT_CHECK(v.bytes_of[id].empty(), special_path, ": id ", id, " of \"", text,
             "\" already belongs to an ordinary token or another special token");
    v.bytes_of[id] = text;
    v.special.emplace_back(text, id);
  }
  v.rank_based = true;
  v.source = ranks_path + " + " + special_path;
  return v;
}

}  // namespace

const std::vector<std::string>& tokenizer_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    for (const Scheme& s : kSchemes) out.emplace_back(s.name);
    return out;
  }();
  return names;
}

std::string default_vocab_dir(const std::string& name) { return "data/" + std::string(scheme(name).name); }

std::vector<std::string> tokenizer_files(const std::string& name, const std::string& vocab_dir) {
  const Scheme& s = scheme(name);
  const std::string dir = vocab_dir.empty() ? default_vocab_dir(name) : vocab_dir;
  if (!s.ranks_file) return {dir + "/encoder.json", dir + "/vocab.bpe"};
  return {dir + "/" + s.ranks_file, dir + "/" + kSpecialTokensFile};
}

std::unique_ptr<Tokenizer> make_tokenizer(const std::string& name, const std::string& vocab_dir) {
  const Scheme& s = scheme(name);
  const std::string dir = vocab_dir.empty() ? default_vocab_dir(name) : vocab_dir;
  BpeVocabulary v = s.ranks_file ? read_tiktoken_files(s, dir) : read_gpt2_files(s, dir);
  v.name = s.name;
  v.pattern = s.pattern;
  v.document_separator = s.separator;
  return std::make_unique<BpeTokenizer>(std::move(v));
}

}  // namespace zt::data
