#include "trainers/data/bpe_merges.h"

#include <gtest/gtest.h>

#include <map>
#include <vector>

#include "framework/random.h"
#include "tests/support/check.h"

namespace zt::data {
namespace {

// GPT-2's reference loop (encoder.py), on ids: take the adjacent pair of lowest rank, merge
// all its occurrences left to right, repeat.
std::vector<int32_t> reference_bpe(std::vector<int32_t> word, const std::map<std::pair<int32_t, int32_t>, std::pair<int32_t, int32_t>>& merges) {
  while (word.size() > 1) {
    int32_t best = INT32_MAX;
    std::pair<int32_t, int32_t> pair;
    for (size_t i = 0; i + 1 < word.size(); ++i) {
      const auto it = merges.find({word[i], word[i + 1]});
      if (it != merges.end() && it->second.first < best) {
        best = it->second.first;
        pair = it->first;
      }
    }
    if (best == INT32_MAX) break;
    const int32_t merged = merges.at(pair).second;
    std::vector<int32_t> next;
    for (size_t i = 0; i < word.size();) {
      if (i + 1 < word.size() && word[i] == pair.first && word[i + 1] == pair.second) {
        next.push_back(merged);
        i += 2;
      } else {
        next.push_back(word[i++]);
      }
    }
    word = std::move(next);
  }
  return word;
}

// Random merge tables in BPE-training order over a small alphabet (so long runs and
// overlapping pairs like "a a a" are common), compared with the reference loop.
TEST(BpeMerges, HeapMergeAgreesWithTheReferenceLoop) {
  Generator& gen = zt::test::test_generator();
  for (int table = 0; table < 30; ++table) {
    const int32_t alphabet = 2 + static_cast<int32_t>(gen.below(4));
    const int32_t num_merges = 5 + static_cast<int32_t>(gen.below(60));
    std::vector<int32_t> base;
    for (int32_t t = 0; t < alphabet; ++t) base.push_back(t);
    BpeMerges bpe(alphabet + num_merges, base);
    std::map<std::pair<int32_t, int32_t>, std::pair<int32_t, int32_t>> ref;
    int32_t next_id = alphabet;
    for (int attempts = 0; next_id < alphabet + num_merges && attempts < 10000; ++attempts) {
      const auto left = static_cast<int32_t>(gen.below(next_id)), right = static_cast<int32_t>(gen.below(next_id));
      if (ref.count({left, right})) continue;
      ASSERT_EQ(bpe.add(left, right, next_id), "");
      ref[{left, right}] = {static_cast<int32_t>(ref.size()), next_id};
      ++next_id;
    }
    for (int w = 0; w < 200; ++w) {
      std::vector<int32_t> word(gen.below(w < 190 ? 24 : 400));
      for (int32_t& t : word) t = static_cast<int32_t>(gen.below(alphabet));
      std::vector<int32_t> ours = word;
      bpe.apply(ours);
      ASSERT_EQ(ours, reference_bpe(word, ref)) << "table " << table << " word " << w;
    }
  }
}

TEST(BpeMerges, RejectsTablesWhereTheFastLoopCouldDiffer) {
  BpeMerges bpe(10, {0, 1, 2});
  EXPECT_EQ(bpe.add(0, 1, 3), "");
  EXPECT_NE(bpe.add(3, 4, 5), "") << "uses token 4 before a merge made it";
  EXPECT_NE(bpe.add(1, 2, 3), "") << "makes token 3 a second time";
  EXPECT_NE(bpe.add(0, 1, 6), "") << "repeats merge (0, 1)";
  EXPECT_NE(bpe.add(0, 1, 60), "") << "id outside the vocabulary";
  EXPECT_EQ(bpe.size(), 1);
}

}  // namespace
}  // namespace zt::data
