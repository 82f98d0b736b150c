// Every CUDA op against the same op on the CPU, forward and backward, on fresh random
// inputs: f32 to 1e-5 relative (cuBLASLt and the kernels accumulate in f32 in another order),
// bf16 to 1e-2 (both sides round the same f32 values once, differences come from the
// accumulation order), f64 to 1e-12. Before each GPU run the allocator's free lists are
// stocked with NaN-filled blocks of the outputs' sizes, so an output element a kernel fails
// to write shows up as NaN (close_rel rejects NaN). Skips without a GPU.
// The CUDA checks that are no CPU comparison: embedding's deferred id errors, which mlp calls
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
  out.backward(grad_host.to(kGpu));  // the scatter skips the bad ids (no host read either)
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
