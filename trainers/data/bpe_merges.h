#pragma once
// The BPE merge table over token ids: merge (left, right) -> (rank, merged id), and the
// merge loop that turns a chunk's byte ids into its final tokens. Two ways to fill it:
//
//  - add(): a merges list in rank order (GPT-2's vocab.bpe), with the invariants below.
//  - add_ranked(): tiktoken's rank-based BPE (cl100k, o200k, Llama 3), where the pair to merge
//    is the adjacent one whose concatenation has the lowest rank; the caller adds every split
//    (left, right) of every token with that token's rank. apply() then picks the lowest
//    (rank, position) pair one at a time, which is exactly tiktoken's loop (it rescans for the
//    minimum, leftmost on ties); the heap needs no invariant for that.
//
// GPT-2's reference loop (encoder.py) repeatedly takes the adjacent pair of lowest rank and
// merges all its occurrences left to right; that is O(n^2) on long chunks (a megabyte of
// spaces). Here a min-heap over (rank, position) with a linked list of symbols does the same
// merges in O(n log n). The two agree whenever every merge only uses tokens made by earlier
// merges and no token is made twice (then a merge at rank r only creates pairs of rank > r);
// add() enforces exactly that, so a vocab.bpe for which they could differ is rejected.
#include <cstdint>
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

  // Rank-based: left + right make merged at this rank; several pairs may make one token.
  // Returns an empty string when accepted, else why not.
  std::string add_ranked(int32_t left, int32_t right, int32_t merged, int32_t rank);

  int32_t size() const { return count_; }

  // Merges ids (initially one id per byte) in place.
  void apply(std::vector<int32_t>& ids) const;

 private:
  struct Merge {
    int32_t rank;
    int32_t merged;
  };
  static uint64_t key(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
  }
  std::unordered_map<uint64_t, Merge> merges_;
  std::vector<uint8_t> available_;  // per token id: base token or made by an earlier merge (add())
  int32_t count_ = 0;
};

}  // namespace zt::data
