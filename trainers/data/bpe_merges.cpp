#include "trainers/data/bpe_merges.h"

#include <queue>
#include <string>

#include "framework/error.h"

namespace zt::data {

BpeMerges::BpeMerges(int32_t num_tokens, const std::vector<int32_t>& base_tokens)
    : available_(static_cast<size_t>(num_tokens), 0) {
  for (int32_t t : base_tokens) {
    ZT_CHECK(t >= 0 && t < num_tokens, "BpeMerges: base token ", t, " outside vocabulary of ", num_tokens);
    available_[t] = 1;
  }
  merges_.reserve(static_cast<size_t>(num_tokens) * 2);
}

std::string BpeMerges::add(int32_t left, int32_t right, int32_t merged) {
  const auto n = static_cast<int32_t>(available_.size());
  for (int32_t t : {left, right, merged})
    if (t < 0 || t >= n) return "token id " + std::to_string(t) + " outside the vocabulary";
  if (!available_[left] || !available_[right]) return "uses a token that no earlier merge made";
  if (available_[merged]) return "makes a token that already exists";
  if (merges_.count(key(left, right))) return "repeats an earlier merge";
  merges_.emplace(key(left, right), Merge{size(), merged});
  available_[merged] = 1;
  ++count_;
  return {};
}

std::string BpeMerges::add_ranked(int32_t left, int32_t right, int32_t merged, int32_t rank) {
  const auto n = static_cast<int32_t>(available_.size());
  for (int32_t t : {left, right, merged})
    if (t < 0 || t >= n) return "token id " + std::to_string(t) + " outside the vocabulary";
  if (!merges_.emplace(key(left, right), Merge{rank, merged}).second) return "repeats an earlier merge";
  ++count_;
  return {};
}

void BpeMerges::apply(std::vector<int32_t>& ids) const {
  const auto n = static_cast<int32_t>(ids.size());
  if (n < 2) return;

  // Symbols form a doubly linked list over the original positions; a merge keeps the left
  // symbol (with the merged id) and unlinks the right one.
  struct Links {
    int32_t prev, next;
  };
  struct Candidate {
    int32_t rank, left, left_id, right_id;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
  };
  std::vector<Links> links(n);
  for (int32_t i = 0; i < n; ++i) links[i] = {i - 1, i + 1 < n ? i + 1 : -1};
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;

  const auto push_pair = [&](int32_t left) {
    if (left < 0) return;
    const int32_t right = links[left].next;
    if (right < 0) return;
    const auto it = merges_.find(key(ids[left], ids[right]));
    if (it != merges_.end()) heap.push({it->second.rank, left, ids[left], ids[right]});
  };
  for (int32_t i = 0; i + 1 < n; ++i) push_pair(i);

  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    // Stale when either symbol changed since the pair was pushed (a removed symbol's id is -1).
    const int32_t right = links[c.left].next;
    if (ids[c.left] != c.left_id || right < 0 || ids[right] != c.right_id) continue;
    ids[c.left] = merges_.at(key(c.left_id, c.right_id)).merged;
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
