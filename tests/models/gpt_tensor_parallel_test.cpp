// The tensor-parallel GPT against the whole model, in f64 on 2 and 4 Gloo ranks (threads of
// this process): every rank's logits are its vocabulary columns of the whole model's, the
// vocab-parallel loss is the whole model's loss, and every parameter's gradient is its shard
// of the whole model's gradient (whose own correctness the finite-difference checks in
// gpt_test.cpp establish). Token ids sit on both sides of every shard border. Also the split
// rules themselves (models/tensor_parallel_split.h) and the communication ops' backward.
#include <gtest/gtest.h>

#include <cmath>

#include "framework/distributed/process_group.h"
#include "models/gpt.h"
#include "models/tensor_parallel_split.h"
#include "ops/cross_entropy.h"
#include "ops/elementwise.h"
#include "ops/reduce.h"
#include "ops/tensor_parallel.h"
#include "tests/support/check.h"
#include "tests/support/multi_rank.h"

namespace zt {
namespace {

GptConfig config_for_tp() {
  GptConfig c;
  c.n_layer = 2;
  c.n_head = 4;
  c.d_model = 16;
  c.seq_len = 8;
  c.vocab_size = 29;      // padded to 32: shards of 16 (T=2) or 8 (T=4); the last holds padding
  c.vocab_multiple = 8;
  return c;
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  const auto x = a.to_vector<double>(), y = b.to_vector<double>();
  EXPECT_EQ(x.size(), y.size());
  double m = 0;
  for (size_t i = 0; i < x.size() && i < y.size(); ++i) m = std::max(m, std::fabs(x[i] - y[i]));
  return m;
}

void check_against_whole_model(int T) {
  test::run_on_shared_ranks(T, [&](const std::shared_ptr<ProcessGroup>& g) {
    const GptConfig c = config_for_tp();
    Generator init_a(11), init_b(11), drop(1);
    Gpt whole(c, init_a, Device::cpu());
    Gpt part(c, init_b, Device::cpu(), g);
    ASSERT_EQ(part.tp_size(), T);
    // Ids on every shard and on both sides of each border (8, 16, 24), the last real id 28.
    const std::vector<int64_t> id_list = {0, 7, 8, 15, 16, 23, 24, 28, 3, 12, 20, 27, 1, 9, 17, 25};
    const Tensor ids = Tensor::from_vector(id_list, {2, 8});
    std::vector<int64_t> tgt(16);
    for (size_t i = 0; i < tgt.size(); ++i) tgt[i] = id_list[(i + 5) % id_list.size()];
    const Tensor targets = Tensor::from_vector(tgt, {16});

    ops::CrossEntropyOptions xo;
    xo.label_smoothing = 0.1;
    xo.z_loss_weight = 1e-3;
    xo.num_classes = c.vocab_size;
    xo.inplace_grad = false;
    Variable lw = whole.forward(ids, DType::f64, true, drop);
    Variable lp = part.forward(ids, DType::f64, true, drop);
    const int64_t cols = c.padded_vocab() / T, r = g->rank();
    ASSERT_EQ(lp.shape(), (Shape{16, cols}));
    EXPECT_LT(max_abs_diff(lp.tensor(), lw.tensor().slice(1, r * cols, (r + 1) * cols).contiguous()), 1e-12);

    ops::CrossEntropyResult rw = ops::cross_entropy(lw, targets, xo);
    xo.group = g;
    ops::CrossEntropyResult rp = ops::cross_entropy(lp, targets, xo);
    EXPECT_NEAR(rp.loss.tensor().item(), rw.loss.tensor().item(), 1e-12);
    rw.loss.backward();
    rp.loss.backward();
    const auto& pw = whole.parameters().all();
    const auto& pp = part.parameters().all();
    ASSERT_EQ(pw.size(), pp.size());
    for (size_t i = 0; i < pw.size(); ++i) {
      ASSERT_EQ(pw[i].name, pp[i].name);
      const Tensor want = shard_of(pw[i].var.grad(), pp[i].shard, g->rank(), T);
      EXPECT_LT(max_abs_diff(pp[i].var.grad(), want), 1e-11) << pp[i].name << " on rank " << g->rank();
    }
  });
}

TEST(GptTensorParallel, TwoRanksMatchTheWholeModelF64) {
  ZT_REQUIRE_GLOO();
  check_against_whole_model(2);
}
TEST(GptTensorParallel, FourRanksMatchTheWholeModelF64) {
  ZT_REQUIRE_GLOO();
  check_against_whole_model(4);
}

TEST(GptTensorParallel, SplitsTheRightParameters) {
  ZT_REQUIRE_GLOO();
  test::run_on_shared_ranks(2, [&](const std::shared_ptr<ProcessGroup>& g) {
    Generator init(3);
    Gpt m(config_for_tp(), init, Device::cpu(), g);
    const auto& p = m.parameters();
    EXPECT_EQ(p.get("wte.weight").var.shape(), (Shape{16, 16}));
    EXPECT_EQ(p.get("wpe.weight").var.shape(), (Shape{8, 16}));
    EXPECT_EQ(p.get("h.0.attn.c_attn.weight").var.shape(), (Shape{24, 16}));
    EXPECT_EQ(p.get("h.0.attn.c_attn.weight").shard, (ShardSpec{0, 3}));
    EXPECT_EQ(p.get("h.0.attn.c_proj.weight").var.shape(), (Shape{16, 8}));
    EXPECT_EQ(p.get("h.0.attn.c_proj.bias").var.shape(), (Shape{16}));
    EXPECT_FALSE(p.get("h.0.attn.c_proj.bias").shard.sharded());
    EXPECT_EQ(p.get("h.0.mlp.c_fc.weight").var.shape(), (Shape{32, 16}));
    EXPECT_EQ(p.get("h.0.mlp.c_proj.weight").var.shape(), (Shape{16, 32}));
    EXPECT_EQ(m.num_parameters(), config_for_tp().num_parameters());  // the whole model's count
  });
}

TEST(GptTensorParallel, ConfigErrorsNameTheValues) {
  GptConfig c = config_for_tp();
  EXPECT_NE(test::error_of([&] { c.validate_tensor_parallel(3); }).find("does not divide model.n_head 4"),
            std::string::npos);
  c.vocab_multiple = 2;  // 29 padded to 30: not a multiple of 4
  EXPECT_NE(test::error_of([&] { c.validate_tensor_parallel(4); }).find("does not divide the padded vocabulary 30"),
            std::string::npos);
  c = config_for_tp();
  c.dropout = 0.1;
  EXPECT_NE(test::error_of([&] { c.validate_tensor_parallel(2); }).find("model.dropout 0.1 with tensor_parallel_size 2"),
            std::string::npos);
}

// Rank r of T holds block-piece r of each of `parts` blocks; unshard is its inverse.
TEST(TensorParallelSplit, ShardsWholeHeadsAndRoundTrips) {
  std::vector<double> v(12 * 2);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<double>(i);
  const Tensor full = Tensor::from_vector(v, {12, 2}).to(DType::f64);  // rows: q0 q1 q2 q3 | k.. | v..
  const ShardSpec qkv{0, 3};
  const Tensor s1 = shard_of(full, qkv, 1, 2);
  EXPECT_EQ(s1.to_vector<double>(), (std::vector<double>{4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23}));
  std::vector<Tensor> pieces;
  for (int r = 0; r < 2; ++r) pieces.push_back(shard_of(full, qkv, r, 2));
  EXPECT_EQ(unshard(pieces, qkv).to_vector<double>(), full.to_vector<double>());
  const ShardSpec cols{1, 1};
  EXPECT_EQ(shard_of(full, cols, 1, 2).to_vector<double>().front(), 1.0);
  EXPECT_NE(test::error_of([&] { shard_of(full, qkv, 0, 3); }).find("does not split into 3 equal shards"),
            std::string::npos);
  EXPECT_EQ(shard_of(full, ShardSpec{}, 1, 2).data<double>(), full.data<double>());  // replicated: the tensor itself
}

// copy_to: identity forward, gradients summed over the group; reduce_from: the sum forward,
// identity backward; gather: columns of every rank, and each rank's own columns back.
TEST(TensorParallelOps, ForwardAndBackwardAcrossRanks) {
  ZT_REQUIRE_GLOO();
  test::run_on_shared_ranks(3, [&](const std::shared_ptr<ProcessGroup>& g) {
    const double r = g->rank();
    Variable x(Tensor::full({2, 2}, 1.0 + r, DType::f64), true);
    Variable y = ops::copy_to_tensor_parallel(x, g);
    EXPECT_EQ(y.tensor().to_vector<double>(), x.tensor().to_vector<double>());
    ops::scale(ops::sum(y), 1.0 + r).backward();  // d/dx = (1 + r) on rank r
    EXPECT_EQ(x.grad().to_vector<double>(), std::vector<double>(4, 1.0 + 2.0 + 3.0));

    Variable a(Tensor::full({3}, r, DType::f64), true);
    Variable s = ops::reduce_from_tensor_parallel(a, g);
    EXPECT_EQ(s.tensor().to_vector<double>(), std::vector<double>(3, 0.0 + 1.0 + 2.0));
    EXPECT_EQ(a.tensor().to_vector<double>(), std::vector<double>(3, r));  // the input is untouched
    ops::scale(ops::sum(s), 2.0 + r).backward();
    EXPECT_EQ(a.grad().to_vector<double>(), std::vector<double>(3, 2.0 + r));

    Variable c(Tensor::full({2, 1}, 10 * r, DType::f64), true);
    Variable all = ops::gather_from_tensor_parallel(c, g);
    EXPECT_EQ(all.tensor().to_vector<double>(), (std::vector<double>{0, 10, 20, 0, 10, 20}));
    ops::sum(ops::mul(all, Variable(Tensor::from_vector(std::vector<double>{1, 2, 3, 4, 5, 6}, {2, 3})))).backward();
    EXPECT_EQ(c.grad().to_vector<double>(), (std::vector<double>{1 + r, 4 + r}));
  });
}

}  // namespace
}  // namespace zt
