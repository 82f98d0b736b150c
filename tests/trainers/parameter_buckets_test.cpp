// ZeRO's bookkeeping without a process group: the bucket layout covers every parameter
// element exactly once across the shards, on aligned boundaries; and AdamW on D shards, each
// rank fed the same gradients, updates exactly the elements of its pieces, by exactly the
// unsharded update, and its per-parameter state round-trips through load_state.
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <vector>

#include "trainers/adamw.h"
#include "trainers/parameter_buckets.h"

namespace zt {
namespace {

std::vector<Parameter> params_of(const std::vector<Shape>& shapes, uint64_t seed) {
  Generator g(seed);
  std::vector<Parameter> ps;
  for (size_t i = 0; i < shapes.size(); ++i) {
    const std::string name = "p" + std::to_string(i);
    ps.push_back({name, Variable(Tensor::randn(shapes[i], DType::f32, g), true, name), i % 2 == 0});
  }
  return ps;
}

const std::vector<Shape> kShapes{{7, 5}, {130}, {3}, {64, 3}, {1}, {200}};

TEST(ParameterBuckets, ShardsCoverEveryElementOnceOnAlignedBoundaries) {
  const std::vector<Parameter> ps = params_of(kShapes, 1);
  for (int64_t bucket_bytes : {int64_t{4}, int64_t{1024}, int64_t{1} << 20}) {
    for (int shards : {1, 2, 3, 4}) {
      std::map<int64_t, std::vector<int>> seen;  // param -> hits per element
      for (size_t i = 0; i < ps.size(); ++i) seen[static_cast<int64_t>(i)].assign(ps[i].var.numel(), 0);
      int64_t elements = 0;
      for (int r = 0; r < shards; ++r) {
        const ParameterBuckets layout(ps, bucket_bytes, shards, r);
        for (const auto& b : layout.buckets()) {
          EXPECT_EQ(b.numel % (64 * shards), 0);
          for (const auto& s : b.slots) EXPECT_EQ(s.offset % 64, 0);
        }
        for (size_t b = 0; b < layout.buckets().size(); ++b)
          EXPECT_EQ(layout.shard_begin(static_cast<int64_t>(b)) % 64, 0);
        int64_t in_shards = 0;
        for (const ShardPiece& p : layout.pieces()) {
          EXPECT_GE(p.shard_offset, 0);
          EXPECT_LE(p.shard_offset + p.numel, layout.shard_numel(p.bucket));
          for (int64_t e = p.param_begin; e < p.param_begin + p.numel; ++e) ++seen[p.param][static_cast<size_t>(e)];
          in_shards += p.numel;
        }
        elements += in_shards;
        if (shards == 1) EXPECT_EQ(layout.pieces().size(), ps.size());  // whole parameters
      }
      for (const auto& [param, hits] : seen)
        for (int h : hits) ASSERT_EQ(h, 1) << "param " << param << ", " << shards << " shards, " << bucket_bytes;
      int64_t total = 0;
      for (const auto& p : ps) total += p.var.numel();
      EXPECT_EQ(elements, total);
    }
  }
}

TEST(ParameterBuckets, ShardedAdamWUpdatesItsPiecesLikeTheUnsharded) {
  const AdamWOptions opt{0.1, 0.9, 0.95, 1e-8};
  constexpr int kShards = 3;
  constexpr int64_t kBucketBytes = 600;  // several buckets, parameters cut by shard borders
  std::vector<Parameter> ref = params_of(kShapes, 2);
  AdamW whole(ref, opt, std::make_shared<const ParameterBuckets>(ref, kBucketBytes, 1, 0));
  std::vector<std::vector<Parameter>> ranks;
  for (int r = 0; r < kShards; ++r) ranks.push_back(params_of(kShapes, 2));
  std::vector<std::unique_ptr<AdamW>> opts;
  for (int r = 0; r < kShards; ++r)
    opts.push_back(std::make_unique<AdamW>(
        ranks[static_cast<size_t>(r)], opt,
        std::make_shared<const ParameterBuckets>(ranks[static_cast<size_t>(r)], kBucketBytes, kShards, r)));
  Generator g(3);
  for (int t = 0; t < 3; ++t) {
    for (size_t i = 0; i < ref.size(); ++i) {
      const Tensor grad = Tensor::randn(ref[i].var.shape(), DType::f32, g);
      ref[i].var.set_grad(grad.clone());
      for (auto& rank : ranks) rank[i].var.set_grad(grad.clone());
    }
    whole.step(1e-2, 0.5);
    for (auto& o : opts) o->step(1e-2, 0.5);
    // The all-gather, by hand: each element from the rank whose shard holds it.
    for (int r = 0; r < kShards; ++r) {
      for (const ShardPiece& p : opts[static_cast<size_t>(r)]->layout().pieces()) {
        const auto from = ranks[static_cast<size_t>(r)][static_cast<size_t>(p.param)].var.tensor().view({-1}).slice(
            0, p.param_begin, p.param_begin + p.numel);
        for (auto& other : ranks)
          other[static_cast<size_t>(p.param)].var.tensor().view({-1}).slice(0, p.param_begin, p.param_begin + p.numel).copy_(from);
      }
    }
    for (const auto& rank : ranks)
      for (size_t i = 0; i < ref.size(); ++i)
        ASSERT_EQ(rank[i].var.tensor().to_vector<float>(), ref[i].var.tensor().to_vector<float>()) << t << " " << i;
  }
  // Each rank's state, put back per parameter, equals the unsharded state; loaded into a
  // sharded optimizer of another count, each rank takes its pieces of it.
  const AdamW::FullState full = whole.full_state(nullptr);
  std::map<std::string, Tensor> m, v;
  for (const auto& [name, t] : full.m) m[name] = Tensor::zeros(t.shape(), DType::f32);
  for (const auto& [name, t] : full.v) v[name] = Tensor::zeros(t.shape(), DType::f32);
  for (int r = 0; r < kShards; ++r) {
    AdamW two(ranks[static_cast<size_t>(r)], opt,
              std::make_shared<const ParameterBuckets>(ranks[static_cast<size_t>(r)], kBucketBytes, 2, r % 2));
    two.load_state(whole.steps_taken(), full.m, full.v);
    EXPECT_EQ(two.steps_taken(), 3);
    EXPECT_EQ(two.state_bytes() % (2 * 4 * 64), 0);
  }
  EXPECT_THROW(opts[0]->full_state(nullptr), Error);  // sharded: needs the data-parallel group
}

}  // namespace
}  // namespace zt
