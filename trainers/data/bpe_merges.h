#pragma once
// The BPE merge table over token ids: merge (left, right) -> (rank, merged id), and the
// merge loop that turns a chunk's byte ids into its final tokens.
//
// merge_by() is the loop alone, over any pair -> (rank, merged) lookup: it merges the lowest
// (rank, position) pair one at a time. That is exactly tiktoken's rank-based BPE (cl100k,
// o200k, Llama 3: merge the adjacent pair whose concatenation has the lowest rank, leftmost on
// ties) when the lookup answers with the concatenation's rank; the heap needs no invariant for
// that. BpeMerges itself is GPT-2's merges list (vocab.bpe), looked up by apply():
//
// GPT-2's reference loop (encoder.py) repeatedly takes the adjacent pair of lowest rank and
// merges all its occurrences left to right; that is O(n^2) on long chunks (a megabyte of
// spaces). Here a min-heap over (rank, position) with a linked list of symbols does the same
// merges in O(n log n). The two agree whenever every merge only uses tokens made by earlier
// merges and no token is made twice (then a merge at rank r only creates pairs of rank > r);
// add() enforces exactly that, so a vocab.bpe for which they could differ is rejected.
#include <cstdint>
#include <functional>
#include <queue>
#include <string>
#include <unordered_map>
#include <vector>

namespace zt::data {

class BpeMerges {
 public:
  // num_tokens: vocabulary size. base_tokens: the ids that exist before any merge (the 256
  // byte tokens); everything else must be made by a merge before it is used.
  BpeMerges(int32_t num_tokens, const std::vector<int32_t>& base_tokens);

  // Appends the next merge (its rank is the number of merges added before). Returns an empty
  // string when accepted, else why not (the caller names the file and line).
  std::string add(int32_t left, int32_t right, int32_t merged);

  int32_t size() const { return count_; }

  // Merges ids (initially one id per byte) in place.
  void apply(std::vector<int32_t>& ids) const;

  struct Merge {
    int32_t rank;    // < 0: the pair does not merge
    int32_t merged;  // the id it makes
  };
  // The merge loop over lookup(left id, right id) -> Merge, in place.
  template <class Lookup>
  static void merge_by(std::vector<int32_t>& ids, const Lookup& lookup);

 private:
  static uint64_t key(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
  }
  std::unordered_map<uint64_t, Merge> merges_;
  std::vector<uint8_t> available_;  // per token id: base token or made by an earlier merge (add())
  int32_t count_ = 0;
};

template <class Lookup>
void BpeMerges::merge_by(std::vector<int32_t>& ids, const Lookup& lookup) {
  const auto n = static_cast<int32_t>(ids.size());
  if (n < 2) return;

  // Symbols form a doubly linked list over the original positions; a merge keeps the left
  // symbol (with the merged id) and unlinks the right one.
  struct Links {
    int32_t prev, next;
  };
  struct Candidate {
    int32_t rank, left, left_id, right_id, merged;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
  };
  std::vector<Links> links(n);
  for (int32_t i = 0; i < n; ++i) links[i] = {i - 1, i + 1 < n ? i + 1 : -1};
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;

  const auto push_pair = [&](int32_t left) {
    if (left < 0) return;
    const int32_t right = links[left].next;
    if (right < 0) return;
    const Merge m = lookup(ids[left], ids[right]);
    if (m.rank >= 0) heap.push({m.rank, left, ids[left], ids[right], m.merged});
  };
  for (int32_t i = 0; i + 1 < n; ++i) push_pair(i);

  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    // Stale when either symbol changed since the pair was pushed (a removed symbol's id is -1).
    const int32_t right = links[c.left].next;
    if (ids[c.left] != c.left_id || right < 0 || ids[right] != c.right_id) continue;
    ids[c.left] = c.merged;
    ids[right] = -1;
    links[c.left].next = links[right].next;
    if (links[right].next >= 0) links[links[right].next].prev = c.left;
    push_pair(links[c.left].prev);
    push_pair(c.left);
  }

  int32_t out = 0;
  for (int32_t i = 0; i < n; ++i)
    if (ids[i] >= 0) ids[out++] = ids[i];
  ids.resize(out);
}

}  // namespace zt::data
