#include "trainers/data/bpe_merges.h"

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

void BpeMerges::apply(std::vector<int32_t>& ids) const {
  merge_by(ids, [this](int32_t left, int32_t right) {
    const auto it = merges_.find(key(left, right));
    return it == merges_.end() ? Merge{-1, -1} : it->second;
  });
}

}  // namespace zt::data
