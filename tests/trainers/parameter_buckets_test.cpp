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
constexpr int64_t kBucketBytes = 600;  // several buckets, parameters cut by shard borders

// `shards` ranks' copies of the same parameters (from `seed`), each with the AdamW of its shard.
struct ShardedRanks {
  std::vector<std::vector<Parameter>> params;
  std::vector<std::unique_ptr<AdamW>> opts;
  ShardedRanks(int shards, uint64_t seed, const AdamWOptions& opt, DType weights) : params(shards) {
    for (int r = 0; r < shards; ++r) {
      std::vector<Parameter>& ps = params[static_cast<size_t>(r)];
      ps = params_of(kShapes, seed);
      opts.push_back(std::make_unique<AdamW>(
          ps, opt, std::make_shared<const ParameterBuckets>(ps, kBucketBytes, shards, r), weights));
    }
  }
};

// The same random gradient for every parameter of `ref` and of every rank.
void set_same_gradients(std::vector<Parameter>& ref, ShardedRanks& ranks, Generator& g) {
  for (size_t i = 0; i < ref.size(); ++i) {
    const Tensor grad = Tensor::randn(ref[i].var.shape(), DType::f32, g);
    ref[i].var.set_grad(grad.clone());
    for (auto& rank : ranks.params) rank[i].var.set_grad(grad.clone());
  }
}

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
  std::vector<Parameter> ref = params_of(kShapes, 2);
  AdamW whole(ref, opt, std::make_shared<const ParameterBuckets>(ref, kBucketBytes, 1, 0));
  ShardedRanks sharded(kShards, 2, opt, DType::f32);
  std::vector<std::vector<Parameter>>& ranks = sharded.params;
  std::vector<std::unique_ptr<AdamW>>& opts = sharded.opts;
  Generator g(3);
  for (int t = 0; t < 3; ++t) {
    set_same_gradients(ref, sharded, g);
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

// With bf16 weights, each sharded AdamW keeps the f32 masters of its pieces and the leaves
// become bf16 views of its weight buckets. Fed the same gradients, after the all-gather of the
// bf16 buckets (by hand: each bucket's shard from the rank that owns it), every rank's leaves
// are bit for bit the bf16 compute copy of the unsharded f32 training, and its masters that
// training's values; loaded into another shard count, each rank takes its pieces.
TEST(ParameterBuckets, ShardedAdamWKeepsItsMastersAndWritesTheBf16Weights) {
  const AdamWOptions opt{0.1, 0.9, 0.95, 1e-8};
  constexpr int kShards = 3;
  std::vector<Parameter> ref = params_of(kShapes, 4);
  AdamW whole(ref, opt, std::make_shared<const ParameterBuckets>(ref, kBucketBytes, 1, 0));
  ShardedRanks sharded(kShards, 4, opt, DType::bf16);
  std::vector<std::vector<Parameter>>& ranks = sharded.params;
  std::vector<std::unique_ptr<AdamW>>& opts = sharded.opts;
  auto expect_like_ref = [&](int t) {
    for (int r = 0; r < kShards; ++r) {
      const AdamW& o = *opts[static_cast<size_t>(r)];
      for (size_t i = 0; i < ref.size(); ++i) {
        const Variable& leaf = ranks[static_cast<size_t>(r)][i].var;
        ASSERT_EQ(leaf.dtype(), DType::bf16);
        ASSERT_EQ(leaf.tensor().to_vector<float>(), ref[i].var.tensor().to(DType::bf16).to_vector<float>())
            << "step " << t << ", rank " << r << ", parameter " << i;
      }
      for (const ShardPiece& p : o.layout().pieces()) {
        const Tensor want = ref[static_cast<size_t>(p.param)].var.tensor().view({-1}).slice(0, p.param_begin,
                                                                                            p.param_begin + p.numel);
        ASSERT_EQ(o.master(p).to_vector<float>(), want.to_vector<float>()) << "step " << t << ", rank " << r;
      }
    }
  };
  for (int r = 0; r < kShards; ++r) {
    const AdamW& o = *opts[static_cast<size_t>(r)];
    EXPECT_TRUE(o.keeps_masters());
    EXPECT_EQ(o.state_bytes(), 3 * 4 * o.layout().shard_elements());
    EXPECT_EQ(o.weight_bytes(), 2 * o.layout().shard_elements() * kShards);
    EXPECT_EQ(o.weight_buckets().size(), o.layout().buckets().size());
    for (const Parameter& p : ranks[static_cast<size_t>(r)]) EXPECT_EQ(leaf_grad_dtype(*p.var.impl()), DType::f32);
  }
  EXPECT_FALSE(whole.keeps_masters());
  EXPECT_TRUE(whole.weight_buckets().empty());
  expect_like_ref(0);
  Generator g(5);
  for (int t = 1; t <= 3; ++t) {
    set_same_gradients(ref, sharded, g);
    whole.step(1e-2, 0.5);
    for (auto& o : opts) o->step(1e-2, 0.5);
    for (size_t b = 0; b < whole.layout().buckets().size(); ++b) {
      for (int r = 0; r < kShards; ++r) {
        const ParameterBuckets& l = opts[static_cast<size_t>(r)]->layout();
        const int64_t lo = l.shard_begin(static_cast<int64_t>(b)), hi = lo + l.shard_numel(static_cast<int64_t>(b));
        const Tensor from = opts[static_cast<size_t>(r)]->weight_buckets()[b].slice(0, lo, hi);
        for (auto& other : opts) {
          Tensor to = other->weight_buckets()[b].slice(0, lo, hi);
          to.copy_(from);
        }
      }
    }
    expect_like_ref(t);
  }
  // Another shard count: each rank takes its pieces of the masters, the leaves their rounding.
  std::map<std::string, Tensor> masters;
  for (const Parameter& p : ref) masters[p.name] = p.var.tensor();
  for (int r = 0; r < 2; ++r) {
    std::vector<Parameter> ps = params_of(kShapes, 6);
    AdamW two(ps, opt, std::make_shared<const ParameterBuckets>(ps, kBucketBytes, 2, r), DType::bf16);
    two.load_masters(masters);
    for (size_t i = 0; i < ps.size(); ++i)
      EXPECT_EQ(ps[i].var.tensor().to_vector<float>(), ref[i].var.tensor().to(DType::bf16).to_vector<float>());
    for (const ShardPiece& p : two.layout().pieces())
      EXPECT_EQ(two.master(p).to_vector<float>(), ref[static_cast<size_t>(p.param)].var.tensor().view({-1}).slice(
                                                      0, p.param_begin, p.param_begin + p.numel).to_vector<float>());
    masters.erase(ref.back().name);
    EXPECT_THROW(two.load_masters(masters), Error);
    masters[ref.back().name] = ref.back().var.tensor();
  }
  // Only a sharded layout keeps the masters.
  std::vector<Parameter> lone = params_of(kShapes, 7);
  EXPECT_THROW(AdamW(lone, opt, std::make_shared<const ParameterBuckets>(lone, kBucketBytes, 1, 0), DType::bf16), Error);
}

}  // namespace
}  // namespace zt
