#include "trainers/data/gpt2_tokenizer.h"

#include <atomic>
#include <sstream>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "framework/error.h"
#include "framework/io/input_file.h"
#include "trainers/data/byte_unicode.h"

namespace zt::data {

namespace {

std::string read_file(const std::string& path, const char* what) {
  try {
    return io::read_regular_file(path, what);
  } catch (const Error& e) {
    ZT_FAIL(e.what(), " (run tools/fetch_data.sh to download the GPT-2 vocabulary into data/gpt2)");
  }
}

std::atomic<uint64_t> next_serial{1};

// Per-thread chunk -> ids cache. Bounded: cleared when it grows past kMaxEntries so a long
// run over diverse text cannot eat memory. Keyed per tokenizer instance (serial).
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

struct ChunkCache {
  static constexpr size_t kMaxEntries = 1 << 18;
  static constexpr size_t kMaxChunkBytes = 128;  // longer chunks are rare; not worth keeping
  uint64_t owner = 0;
  std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> map;
};

ChunkCache& thread_cache(uint64_t owner) {
  thread_local ChunkCache cache;
  if (cache.owner != owner) {
    cache.map.clear();
    cache.owner = owner;
  }
  return cache;
}

}  // namespace

Gpt2Tokenizer Gpt2Tokenizer::from_dir(const std::string& dir) {
  return Gpt2Tokenizer(dir + "/encoder.json", dir + "/vocab.bpe");
}

Gpt2Tokenizer::Gpt2Tokenizer(const std::string& encoder_json_path, const std::string& vocab_bpe_path) {
  // ---- encoder.json: {"spelling": id, ...} with ids 0..n-1 ----
  nlohmann::json encoder;
  try {
    encoder = nlohmann::json::parse(read_file(encoder_json_path, "encoder.json"));
  } catch (const nlohmann::json::exception& e) {
    ZT_FAIL(encoder_json_path, ": not valid JSON: ", e.what());
  }
  ZT_CHECK(encoder.is_object() && !encoder.empty(), encoder_json_path,
           ": expected a JSON object mapping token spellings to ids");
  const size_t n = encoder.size();
  bytes_of_.assign(n, std::string());
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
    if (spelling == kEndOfText) {
      eot_id_ = static_cast<int32_t>(id);
      bytes_of_[id] = spelling;
      continue;
    }
    try {
      bytes_of_[id] = spelling_to_bytes(spelling);
    } catch (const zt::Error& e) {
      ZT_FAIL(encoder_json_path, ": ", e.what());
    }
  }
  ZT_CHECK(eot_id_ >= 0, encoder_json_path, ": has no \"", kEndOfText, "\" token");

  std::vector<int32_t> base;
  for (int b = 0; b < 256; ++b) {
    const auto it = id_of_spelling.find(bytes_to_spelling(std::string(1, static_cast<char>(b))));
    ZT_CHECK(it != id_of_spelling.end(), encoder_json_path, ": has no token for byte ", b);
    byte_id_[b] = it->second;
    base.push_back(it->second);
  }
  base.push_back(eot_id_);

  // ---- vocab.bpe: "#version: 0.2" then one merge "left right" per line, best first ----
  merges_ = std::make_unique<BpeMerges>(static_cast<int32_t>(n), base);
  std::istringstream lines(read_file(vocab_bpe_path, "vocab.bpe"));
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
    const auto find = [&](const std::string& s) {
      const auto it = id_of_spelling.find(s);
      ZT_CHECK(it != id_of_spelling.end(), vocab_bpe_path, ":", line_no, ": \"", s, "\" is not in ",
               encoder_json_path);
      return it->second;
    };
    const std::string why = merges_->add(find(left), find(right), find(left + right));
    ZT_CHECK(why.empty(), vocab_bpe_path, ":", line_no, ": merge \"", line, "\" ", why);
  }
  ZT_CHECK(merges_->size() > 0, vocab_bpe_path, ": contains no merges");
  serial_ = next_serial.fetch_add(1);
}

Gpt2Tokenizer::Gpt2Tokenizer(Gpt2Tokenizer&&) noexcept = default;
Gpt2Tokenizer& Gpt2Tokenizer::operator=(Gpt2Tokenizer&&) noexcept = default;
Gpt2Tokenizer::~Gpt2Tokenizer() = default;

void Gpt2Tokenizer::encode_chunk(std::string_view chunk, std::vector<int32_t>& out) const {
  ChunkCache& cache = thread_cache(serial_);
  const bool cacheable = chunk.size() <= ChunkCache::kMaxChunkBytes;
  if (cacheable) {
    const auto it = cache.map.find(chunk);
    if (it != cache.map.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> ids(chunk.size());
  for (size_t i = 0; i < chunk.size(); ++i) ids[i] = byte_id_[static_cast<uint8_t>(chunk[i])];
  merges_->apply(ids);
  out.insert(out.end(), ids.begin(), ids.end());
  if (cacheable) {
    if (cache.map.size() >= ChunkCache::kMaxEntries) cache.map.clear();
    cache.map.emplace(std::string(chunk), std::move(ids));
  }
}

void Gpt2Tokenizer::encode_ordinary(std::string_view text, std::vector<int32_t>& out) const {
  thread_local std::vector<std::string_view> chunks;
  chunks.clear();
  pretokenizer_.split(text, chunks);
  for (std::string_view chunk : chunks) encode_chunk(chunk, out);
}

void Gpt2Tokenizer::encode_append(std::string_view text, std::vector<int32_t>& out, SpecialTokens special) const {
  if (special == SpecialTokens::as_text) {
    encode_ordinary(text, out);
    return;
  }
  const std::string_view eot(kEndOfText);
  size_t pos = 0;
  while (true) {
    const size_t hit = text.find(eot, pos);
    encode_ordinary(text.substr(pos, hit == std::string_view::npos ? std::string_view::npos : hit - pos), out);
    if (hit == std::string_view::npos) break;
    out.push_back(eot_id_);
    pos = hit + eot.size();
  }
}

std::vector<int32_t> Gpt2Tokenizer::encode(std::string_view text, SpecialTokens special) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  encode_append(text, out, special);
  return out;
}

const std::string& Gpt2Tokenizer::token_bytes(int32_t id) const {
  ZT_CHECK(id >= 0 && id < vocab_size(), "token id ", id, " is outside the vocabulary [0, ", vocab_size(), ")");
  return bytes_of_[id];
}

std::string Gpt2Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) {
    ZT_CHECK(ids[i] >= 0 && ids[i] < vocab_size(), "decode: token id ", ids[i], " at position ", i,
             " is outside the vocabulary [0, ", vocab_size(), ")");
    out += bytes_of_[ids[i]];
  }
  return out;
}

}  // namespace zt::data
