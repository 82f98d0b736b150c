// Every CUDA op against the same op on the CPU, forward and backward, on fresh random
// inputs: f32 to 1e-5 relative (cuBLASLt and the kernels accumulate in f32 in another order),
// bf16 to 1e-2 (both sides round the same f32 values once, differences come from the
// accumulation order), f64 to 1e-12. Before each GPU run the allocator's free lists are
// stocked with NaN-filled blocks of the outputs' sizes, so an output element a kernel fails
// to write shows up as NaN (close_rel rejects NaN). Skips without a GPU.
// The CUDA checks beyond that table: embedding's deferred id errors and its backward's edge
// cases (heavily repeated ids, runs across its chunk borders, shards, bad ids, the same bits
// on every run), which mlp calls
// take cuBLASLt's GELU epilogues, the caching allocator, strided copies. (The CUDA-vs-CPU
// comparison of every op, forward and backward, is the table in backend_ops_test.cpp.) Skips
// without a GPU.
#include <gtest/gtest.h>

#include <cmath>

#ifdef ZTRAIN_WITH_CUDA
#include "framework/cuda/cuda_memory.h"
#endif
#include "framework/device.h"
#include "ops/embedding.h"
#include "ops/embedding_kernels.h"
#include "ops/mlp.h"
#include "ops/reduce.h"
#include "tests/support/check.h"

namespace zt {
namespace {

const Device kGpu = Device::cuda(0);

#define REQUIRE_GPU() \
  if (!cuda_available()) GTEST_SKIP() << "no CUDA GPU"

Tensor random(const Shape& shape, double scale = 1.0) {
  return Tensor::randn(shape, DType::f64, test::test_generator(), 0.0, scale);
}

Tensor random_ids(const Shape& shape, int64_t vocab, DType dtype) {
  Tensor u = Tensor::rand(shape, DType::f64, test::test_generator(), 0.0, static_cast<double>(vocab));
  std::vector<double> v = u.to_vector<double>();
  std::vector<int64_t> ids(v.size());
  for (size_t i = 0; i < v.size(); ++i) ids[i] = std::min<int64_t>(vocab - 1, static_cast<int64_t>(v[i]));
  return Tensor::from_vector(ids, shape).to(dtype);
}

TEST(OpsCuda, EmbeddingRejectsBadIdsLikeTheCpu) {
  // The CUDA lookup does not wait for the device: the error, with the CPU's message (position
  // and value), comes from the first host read after the kernel ran, here the output's.
  REQUIRE_GPU();
  const Tensor w = random({10, 4}).to(DType::f32);
  const std::vector<std::vector<int64_t>> cases = {{1, 2, 3, 4, 10, 5}, {1, 2, -1, 4, 0, 5}, {9, 12, 11, -3, 10, 2}};
  for (DType id_type : {DType::i32, DType::i64})
    for (const auto& bad : cases) {
      const Tensor ids = Tensor::from_vector(bad, {2, 3}).to(id_type);
      auto message = [&](Device d) {
        return test::error_of([&] {
          Variable out = ops::embedding(Variable(w.to(d)), Variable(ids.to(d)));
          (void)out.tensor().to_vector<float>();
        });
      };
      const std::string cpu = message(Device::cpu()), gpu = message(kGpu);
      EXPECT_NE(cpu.find(" at position "), std::string::npos) << cpu;
      EXPECT_EQ(gpu, cpu) << dtype_name(id_type);
    }
}

TEST(OpsCuda, EmbeddingBadIdSurfacesAtTheNextHostReadAndNeverWritesOutside) {
  REQUIRE_GPU();
  const int64_t vocab = 7, C = 5;
  const Tensor w_host = random({vocab, C}).to(DType::f32);
  const std::vector<int64_t> id_values = {3, 0, 7, 6, 3, -2};  // positions 2 and 5 are bad
  const Tensor ids = Tensor::from_vector(id_values, {6});
  Variable w(w_host.to(kGpu), true);
  Variable out = ops::embedding(w, Variable(ids.to(kGpu)));  // no error yet: nothing was read
  const Tensor grad_host = random({6, C}).to(DType::f32);
  out.backward(grad_host.to(kGpu));  // the backward skips the bad ids (no host read either)
  // Any host read reports it, once: here one of an unrelated tensor.
  const Tensor unrelated = Tensor::full({2}, 3.0, DType::f32, kGpu);
  EXPECT_EQ(test::error_of([&] { (void)unrelated.to_vector<float>(); }),
            "embedding: id 7 at position [2] of ids [6] is outside [0, 7)");
  EXPECT_EQ(unrelated.to_vector<float>(), (std::vector<float>{3, 3}));
  // Bad rows are NaN, good rows the table's; the gradient has only the good ids' rows.
  const std::vector<float> o = out.tensor().to_vector<float>(), wv = w_host.to_vector<float>(),
                           g = grad_host.to_vector<float>();
  std::vector<double> expected_grad(static_cast<size_t>(vocab * C), 0.0);
  for (int64_t i = 0; i < static_cast<int64_t>(id_values.size()); ++i) {
    const int64_t id = id_values[static_cast<size_t>(i)];
    const bool bad = id < 0 || id >= vocab;
    for (int64_t c = 0; c < C; ++c) {
      const float v = o[static_cast<size_t>(i * C + c)];
      if (bad) {
        EXPECT_TRUE(std::isnan(v)) << "row " << i;
      } else {
        EXPECT_EQ(v, wv[static_cast<size_t>(id * C + c)]) << "row " << i;
        expected_grad[static_cast<size_t>(id * C + c)] += g[static_cast<size_t>(i * C + c)];
      }
    }
  }
  EXPECT_TRUE(test::close_rel(w.grad(), Tensor::from_vector(expected_grad, {vocab, C}), 1e-6));
}

TEST(OpsCuda, EmbeddingGoodIdsNeverReportAndManyLookupsNeedNoRead) {
  // More lookups than the deferred checks have flags, with no host read in between.
  REQUIRE_GPU();
  const Tensor w = random({50, 8}).to(DType::bf16).to(kGpu);
  const Tensor ids = random_ids({4, 16}, 50, DType::i32).to(kGpu);
  Variable last;
  for (int i = 0; i < 1500; ++i) last = ops::embedding(Variable(w), Variable(ids));
  EXPECT_EQ(test::error_of([&] { (void)last.tensor().to_vector<float>(); }), "(no error)");
}

// ---- the embedding backward: sorted ids, one writer per row ----

// The weight gradient of table rows [offset, offset + rows) in f64 on the host: every id in
// that range adds its gradient row; other ids (other shards', bad ones) add nothing.
Tensor reference_weight_grad(const Tensor& grad, const Tensor& ids, int64_t rows, int64_t offset) {
  const int64_t C = grad.shape().back();
  const std::vector<double> g = grad.to_vector<double>();
  const std::vector<int64_t> id = ids.to_vector<int64_t>();
  std::vector<double> dw(static_cast<size_t>(rows * C), 0.0);
  for (size_t i = 0; i < id.size(); ++i) {
    const int64_t r = id[i] - offset;
    if (r < 0 || r >= rows) continue;
    for (int64_t c = 0; c < C; ++c) dw[static_cast<size_t>(r * C + c)] += g[i * static_cast<size_t>(C) + c];
  }
  return Tensor::from_vector(dw, {rows, C});
}

// The CUDA backward (ops/embedding_kernels.h) on host tensors, its output's allocation stocked
// with NaN first (an element it fails to write shows up), the result back on the host.
Tensor cuda_weight_grad(const Tensor& grad, const Tensor& ids, int64_t rows, DType dtype, int64_t offset) {
#ifdef ZTRAIN_WITH_CUDA
  const Tensor g = grad.to(kGpu), i = ids.to(kGpu);
  test::stock_poisoned_blocks({{rows, grad.shape().back()}}, dtype, kGpu);
  return ops::embedding_backward_cuda(g, i, rows, dtype, offset).to(Device::cpu());
#else
  (void)grad, (void)ids, (void)rows, (void)dtype, (void)offset;
  ZT_FAIL("built without CUDA");
#endif
}

// n ids: `repeats` of them `hot`, at random positions, the rest uniform in [0, vocab).
Tensor hot_ids(int64_t n, int64_t repeats, int64_t hot, int64_t vocab, DType dtype) {
  std::vector<int64_t> ids = random_ids({n}, vocab, DType::i64).to_vector<int64_t>();
  for (int64_t i = 0; i < repeats; ++i) ids[static_cast<size_t>(i)] = hot;
  for (int64_t i = n - 1; i > 0; --i)  // Fisher-Yates with the test generator
    std::swap(ids[static_cast<size_t>(i)], ids[test::test_generator().below(static_cast<uint64_t>(i) + 1)]);
  return Tensor::from_vector(ids, {n}).to(dtype);
}

double grad_tolerance(DType t) { return t == DType::bf16 ? 1e-2 : t == DType::f32 ? 1e-5 : 1e-12; }

// A frequent token (" the" appears ~800 times in 16 x 1024 tokens of text; here 3000 of 4096)
// spans many of the backward's chunks of sorted ids: its row is summed from partial sums. C = 5
// takes one element per load, 768 and 2056 16-byte loads (f64 768 and bf16 2056 split the
// columns over two blocks).
TEST(OpsCuda, EmbeddingBackwardWithAHeavilyRepeatedIdMatchesTheCpu) {
  REQUIRE_GPU();
  const int64_t vocab = 1000, n = 4096;
  for (DType t : {DType::f32, DType::bf16, DType::f64})
    for (DType id_type : {DType::i32, DType::i64})
      for (int64_t C : {5, 768, 2056}) {
        if (C == 2056 && id_type == DType::i64) continue;  // the widest rows once per dtype
        const Tensor ids = hot_ids(n, 3000, 17, vocab, id_type);
        const Tensor grad = random({n, C}).to(t);
        const Tensor got = cuda_weight_grad(grad, ids, vocab, t, 0);
        EXPECT_EQ(got.dtype(), t);
        const std::string what = std::string(dtype_name(t)) + " " + dtype_name(id_type) + " C " + std::to_string(C);
        EXPECT_TRUE(test::close_rel(got, reference_weight_grad(grad, ids, vocab, 0), grad_tolerance(t))) << what;
        EXPECT_TRUE(test::close_rel(got, ops::embedding_backward_cpu(grad, ids, vocab, t, 0), grad_tolerance(t)))
            << what;
      }
}

// Runs of every length from 1 to 99 back to back, in id order and shuffled: runs start and end
// at every offset from the chunk borders of the sorted ids. Also one id everywhere, for lengths
// around the chunk size (32), and a single id.
TEST(OpsCuda, EmbeddingBackwardRunsAcrossChunkBordersMatchTheReference) {
  REQUIRE_GPU();
  std::vector<std::vector<int64_t>> patterns;
  std::vector<int64_t> runs;
  for (int64_t len = 1; len < 100; ++len) runs.insert(runs.end(), static_cast<size_t>(len), (len * 7) % 120);
  patterns.push_back(runs);
  for (size_t i = runs.size() - 1; i > 0; --i)
    std::swap(runs[i], runs[test::test_generator().below(i + 1)]);
  patterns.push_back(runs);
  for (int64_t n : {1, 31, 32, 33, 63, 64, 65, 96, 1000}) patterns.emplace_back(static_cast<size_t>(n), 119);
  for (DType t : {DType::f32, DType::f64})
    for (int64_t C : {5, 64})
      for (const auto& p : patterns) {
        const int64_t n = static_cast<int64_t>(p.size());
        const Tensor ids = Tensor::from_vector(p, {n}).to(DType::i32), grad = random({n, C}).to(t);
        EXPECT_TRUE(test::close_rel(cuda_weight_grad(grad, ids, 120, t, 0), reference_weight_grad(grad, ids, 120, 0),
                                    grad_tolerance(t)))
            << dtype_name(t) << " C " << C << " ids " << n;
      }
}

// The same inputs give the same bits: every row has one writer that adds in a fixed order
// (an atomic scatter-add does not: the order of its additions changes from run to run).
TEST(OpsCuda, EmbeddingBackwardIsBitIdenticalRunToRun) {
  REQUIRE_GPU();
  const int64_t vocab = 300, n = 8192, C = 768;
  for (DType t : {DType::f32, DType::bf16, DType::f64}) {
    const Tensor ids = hot_ids(n, 3000, 5, vocab, DType::i32), grad = random({n, C}).to(t);
    const std::vector<double> first = cuda_weight_grad(grad, ids, vocab, t, 0).to_vector<double>();
    for (int run = 0; run < 3; ++run)
      EXPECT_TRUE(cuda_weight_grad(grad, ids, vocab, t, 0).to_vector<double>() == first)
          << dtype_name(t) << " run " << run;
  }
}

// Vocab-parallel shards: each shard's backward takes only its rows' ids (offset != 0) and
// skips the others' and the bad ones (the forward reports those); ids on both sides of every
// border, a hot id on shard 1. A shard no id hits, and no ids at all, give zeros.
TEST(OpsCuda, EmbeddingBackwardOfAShardSkipsOtherShardsAndBadIds) {
  REQUIRE_GPU();
  const int64_t vocab = 1000, parts = 4, per = vocab / parts, C = 24;
  for (DType id_type : {DType::i32, DType::i64}) {
    std::vector<int64_t> v = hot_ids(3000, 900, 260, vocab, DType::i64).to_vector<int64_t>();
    const std::vector<int64_t> edges = {0, 249, 250, 499, 500, 749, 750, 999, -1, -250, 1000, 1250, 70000};
    for (size_t i = 0; i < edges.size(); ++i) v[i * 200] = edges[i];
    const Tensor ids = Tensor::from_vector(v, {3000}).to(id_type);
    for (DType t : {DType::f32, DType::bf16}) {
      const Tensor grad = random({3000, C}).to(t);
      for (int64_t r = 0; r < parts; ++r) {
        const Tensor got = cuda_weight_grad(grad, ids, per, t, r * per);
        EXPECT_TRUE(test::close_rel(got, reference_weight_grad(grad, ids, per, r * per), grad_tolerance(t)))
            << dtype_name(t) << " shard " << r;
        EXPECT_TRUE(test::close_rel(got, ops::embedding_backward_cpu(grad, ids, per, t, r * per), grad_tolerance(t)))
            << dtype_name(t) << " shard " << r;
      }
      // Rows past every id, and an empty id list.
      EXPECT_TRUE(test::close_rel(cuda_weight_grad(grad, ids, 50, t, 2000), Tensor::zeros({50, C}, DType::f64), 0));
      EXPECT_TRUE(test::close_rel(cuda_weight_grad(Tensor::zeros({0, C}, t), Tensor::zeros({0}, id_type), 7, t, 0),
                                  Tensor::zeros({7, C}, DType::f64), 0));
    }
  }
}

// A gradient of another dtype than the table's (not a case the op makes, but the kernel's
// contract): accumulated in the gradient's accumulation type, then converted, like the CPU.
TEST(OpsCuda, EmbeddingBackwardConvertsToTheRequestedDtype) {
  REQUIRE_GPU();
  const int64_t vocab = 64, n = 2000;
  const Tensor ids = hot_ids(n, 700, 3, vocab, DType::i64);
  for (auto [from, to] : {std::pair{DType::bf16, DType::f32}, std::pair{DType::f32, DType::bf16},
                          std::pair{DType::f64, DType::f32}, std::pair{DType::bf16, DType::f64}})
    for (int64_t C : {8, 13}) {
      const Tensor grad = random({n, C}).to(from);
      const Tensor got = cuda_weight_grad(grad, ids, vocab, to, 0);
      EXPECT_EQ(got.dtype(), to);
      EXPECT_TRUE(test::close_rel(got, ops::embedding_backward_cpu(grad, ids, vocab, to, 0),
                                  grad_tolerance(from == DType::bf16 ? DType::f32 : to)))
          << dtype_name(from) << " to " << dtype_name(to) << " C " << C;
    }
}

// mlp takes cuBLASLt's GELU epilogues, forward and backward, exactly when hidden is a
// multiple of 8 and the dtype f32 or bf16 (the mlp rows of backend_ops_test.cpp check the
// numbers of the same cases).
TEST(OpsCuda, MlpTakesTheGeluEpiloguesWhenHiddenIsAMultipleOf8) {
  REQUIRE_GPU();
  struct Case {
    Shape x;
    int64_t hidden, out;
    bool biases, fused;
  };
  for (DType t : {DType::f32, DType::bf16, DType::f64})
    for (const Case& c : {Case{{2, 33, 96}, 384, 96, true, true}, Case{{5, 64}, 256, 48, false, true},
                          Case{{3, 7, 32}, 100, 32, true, false}}) {
      auto param = [&](const Shape& s) { return Variable(random(s).to(t).to(kGpu), true); };
      Variable x = param(c.x), w_fc = param({c.hidden, c.x.back()}), w_proj = param({c.out, c.hidden});
      Variable b_fc = c.biases ? param({c.hidden}) : Variable(), b_proj = c.biases ? param({c.out}) : Variable();
      const ops::MlpFusionStats before = ops::mlp_fusion_stats();
      ops::sum(ops::mlp(x, w_fc, b_fc, w_proj, b_proj)).backward();
      const ops::MlpFusionStats after = ops::mlp_fusion_stats();
      const int64_t expected = c.fused && t != DType::f64 ? 1 : 0;
      EXPECT_EQ(after.forward - before.forward, expected) << dtype_name(t) << " hidden " << c.hidden;
      EXPECT_EQ(after.backward - before.backward, expected) << dtype_name(t) << " hidden " << c.hidden;
    }
}

TEST(OpsCuda, CachingAllocatorReusesBlocksInTheSteadyState) {
#ifndef ZTRAIN_WITH_CUDA
  GTEST_SKIP() << "built without CUDA";
#else
  REQUIRE_GPU();
  EXPECT_EQ(cuda::allocation_bucket(1), 512u);
  EXPECT_EQ(cuda::allocation_bucket(512), 512u);
  EXPECT_EQ(cuda::allocation_bucket(513), 1024u);
  for (size_t n : {size_t{1} << 20, (size_t{3} << 20) + 5, size_t{123456789}}) {
    const size_t b = cuda::allocation_bucket(n);
    EXPECT_GE(b, n);
    EXPECT_LE(static_cast<double>(b), 1.125 * static_cast<double>(n) + 512) << n;
  }
  auto step = [] {
    Tensor a = Tensor::empty({1000, 1000}, DType::f32, kGpu);
    Tensor b = Tensor::empty({77}, DType::bf16, kGpu);
    Tensor c = Tensor::empty({3, 5000, 7}, DType::f64, kGpu);
    a.fill_(1.0);
    return a.nbytes() + b.nbytes() + c.nbytes();
  };
  const cuda::MemoryStats before = cuda::memory_stats(0);
  const size_t bytes = step();  // may call cudaMalloc
  const cuda::MemoryStats warm = cuda::memory_stats(0);
  EXPECT_GE(warm.peak_allocated, before.allocated + bytes);
  for (int i = 0; i < 5; ++i) step();
  const cuda::MemoryStats after = cuda::memory_stats(0);
  EXPECT_EQ(after.cuda_mallocs, warm.cuda_mallocs) << "steady-state allocations called cudaMalloc";
  EXPECT_GE(after.cache_hits, warm.cache_hits + 15);
  EXPECT_EQ(after.allocated, before.allocated);
  EXPECT_GE(after.reserved, after.allocated);
  cuda::empty_cache(0);  // the cached blocks go back to CUDA; live ones stay
  const cuda::MemoryStats emptied = cuda::memory_stats(0);
  EXPECT_LT(emptied.reserved, after.reserved);
  EXPECT_GT(emptied.cuda_frees, after.cuda_frees);
  EXPECT_EQ(emptied.allocated, after.allocated);
#endif
}

TEST(OpsCuda, StridedCopiesMatchTheHost) {
  REQUIRE_GPU();
  for (DType t : {DType::f32, DType::bf16, DType::f64, DType::i64}) {
    const Tensor host = random({4, 5, 6, 7}, 10.0).to(t);
    const Tensor dev = host.to(kGpu);
    for (auto [d0, d1] : {std::pair{0, 3}, std::pair{1, 2}, std::pair{2, 3}}) {
      Tensor got = dev.transpose(d0, d1).contiguous();
      EXPECT_TRUE(test::close_rel(got, host.transpose(d0, d1).contiguous(), 0)) << dtype_name(t);
    }
    // A converting copy into a strided destination.
    Tensor dst = Tensor::zeros({7, 6, 5, 4}, DType::f64, kGpu);
    dst.transpose(0, 3).transpose(1, 2).copy_(dev);
    EXPECT_TRUE(test::close_rel(dst, host.to(DType::f64).transpose(0, 3).transpose(1, 2).contiguous(), 0));
  }
}

}  // namespace
}  // namespace zt
