#include "trainers/data/bpe_tokenizer.h"

#include <atomic>

#include "framework/error.h"

namespace zt::data {

namespace {

std::atomic<uint64_t> next_serial{1};

// Per-thread chunk -> ids cache. Bounded: cleared when it grows past kMaxEntries so a long
// run over diverse text cannot eat memory. Keyed per tokenizer instance (serial).
struct ChunkCache {
  static constexpr size_t kMaxEntries = 1 << 18;
  static constexpr size_t kMaxChunkBytes = 128;  // longer chunks are rare; not worth keeping
  uint64_t owner = 0;
  std::unordered_map<std::string, std::vector<int32_t>, BytesHash, std::equal_to<>> map;
};

ChunkCache& thread_cache(uint64_t owner) {
  thread_local ChunkCache cache;
  if (cache.owner != owner) {
    cache.map.clear();
    cache.owner = owner;
  }
  return cache;
}

constexpr std::string_view kSpecialOpen = "<|", kSpecialClose = "|>";

}  // namespace

std::vector<int32_t> Tokenizer::encode(std::string_view text, SpecialTokens special) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  encode_append(text, out, special);
  return out;
}

BpeTokenizer::BpeTokenizer(BpeVocabulary vocabulary)
    : v_(std::move(vocabulary)), pretokenizer_(v_.pattern), serial_(next_serial.fetch_add(1)) {
  const std::string& src = v_.source;
  ZT_CHECK(v_.rank_based || v_.merges, src, ": no merges list");
  const auto n = static_cast<int64_t>(v_.bytes_of.size());
  for (const auto& [text, id] : v_.special) {
    ZT_CHECK(id >= 0 && id < n, src, ": special token ", text, " has id ", id, " outside [0, ", n, ")");
    ZT_CHECK(text.size() > 4 && text.rfind(kSpecialOpen, 0) == 0 &&
                 text.find(kSpecialClose) == text.size() - kSpecialClose.size(),
             src, ": special token \"", text, "\" is not of the form <|name|>");
    ZT_CHECK(v_.bytes_of[id] == text, src, ": special token ", text, " has id ", id,
             ", which is an ordinary token or another special token");
    ZT_CHECK(special_ids_.emplace(text, id).second, src, ": special token ", text, " is listed twice");
    longest_special_ = std::max(longest_special_, text.size());
  }
  for (int b = 0; b < 256; ++b) byte_id_[b] = -1;
  if (v_.rank_based) id_of_bytes_.reserve(static_cast<size_t>(n));
  for (int64_t id = 0; id < n; ++id) {
    const std::string& bytes = v_.bytes_of[id];
    if (bytes.empty() || (special_ids_.count(bytes) && special_ids_.at(bytes) == id)) continue;
    if (bytes.size() == 1) byte_id_[static_cast<uint8_t>(bytes[0])] = static_cast<int32_t>(id);
    if (v_.rank_based) {
      const auto [it, added] = id_of_bytes_.emplace(bytes, static_cast<int32_t>(id));
      ZT_CHECK(added, src, ": token ", id, " has the same bytes as token ", it->second);
    }
  }
  for (int b = 0; b < 256; ++b) ZT_CHECK(byte_id_[b] >= 0, src, ": has no token for byte ", b);
  const auto sep = special_ids_.find(v_.document_separator);
  ZT_CHECK(sep != special_ids_.end(), src, ": has no \"", v_.document_separator, "\" token");
  separator_id_ = sep->second;
}

BpeTokenizer::~BpeTokenizer() = default;

void BpeTokenizer::encode_chunk(std::string_view chunk, std::vector<int32_t>& out) const {
  if (v_.rank_based) {
    const auto it = id_of_bytes_.find(chunk);
    if (it != id_of_bytes_.end()) {
      out.push_back(it->second);
      return;
    }
  }
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
  if (v_.rank_based) {
    thread_local std::string pair;
    BpeMerges::merge_by(ids, [&](int32_t left, int32_t right) {
      pair.assign(v_.bytes_of[left]).append(v_.bytes_of[right]);
      const auto it = id_of_bytes_.find(pair);
      return it == id_of_bytes_.end() ? BpeMerges::Merge{-1, -1} : BpeMerges::Merge{it->second, it->second};
    });
  } else {
    v_.merges->apply(ids);
  }
  out.insert(out.end(), ids.begin(), ids.end());
  if (cacheable) {
    if (cache.map.size() >= ChunkCache::kMaxEntries) cache.map.clear();
    cache.map.emplace(std::string(chunk), std::move(ids));
  }
}

void BpeTokenizer::encode_ordinary(std::string_view text, std::vector<int32_t>& out) const {
  thread_local std::vector<std::string_view> chunks;
  chunks.clear();
  pretokenizer_.split(text, chunks);
  for (std::string_view chunk : chunks) encode_chunk(chunk, out);
}

void BpeTokenizer::encode_append(std::string_view text, std::vector<int32_t>& out, SpecialTokens special) const {
  if (special == SpecialTokens::as_text) {
    encode_ordinary(text, out);
    return;
  }
  // Leftmost special token first: at each "<|", the text up to the first "|>" within the
  // longest special token's length is the only candidate (no special text holds "|>" inside).
  size_t start = 0, search = 0;
  while (true) {
    const size_t open = text.find(kSpecialOpen, search);
    if (open == std::string_view::npos) break;
    const std::string_view window = text.substr(open, longest_special_);
    const size_t close = window.find(kSpecialClose, kSpecialOpen.size());
    if (close != std::string_view::npos) {
      const auto it = special_ids_.find(window.substr(0, close + kSpecialClose.size()));
      if (it != special_ids_.end()) {
        encode_ordinary(text.substr(start, open - start), out);
        out.push_back(it->second);
        start = search = open + it->first.size();
        continue;
      }
    }
    search = open + 1;
  }
  encode_ordinary(text.substr(start), out);
}

int32_t BpeTokenizer::special_id(std::string_view text) const {
  const auto it = special_ids_.find(text);
  return it == special_ids_.end() ? -1 : it->second;
}

bool BpeTokenizer::is_token(int32_t id) const { return id >= 0 && id < vocab_size() && !v_.bytes_of[id].empty(); }

const std::string& BpeTokenizer::token_bytes(int32_t id) const {
  ZT_CHECK(is_token(id), "token id ", id, " is not a token of ", v_.name, " (ids [0, ", vocab_size(), ")",
           id >= 0 && id < vocab_size() ? ", this one unused" : "", ")");
  return v_.bytes_of[id];
}

std::string BpeTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) {
    ZT_CHECK(is_token(ids[i]), "decode: token id ", ids[i], " at position ", i, " is not a token of ", v_.name,
             " (ids [0, ", vocab_size(), ")", ids[i] >= 0 && ids[i] < vocab_size() ? ", this one unused" : "", ")");
    out += v_.bytes_of[ids[i]];
  }
  return out;
}

}  // namespace zt::data
