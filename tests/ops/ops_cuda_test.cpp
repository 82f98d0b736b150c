// Every CUDA op against the same op on the CPU, forward and backward, on fresh random
// inputs: f32 to 1e-5 relative (cuBLASLt and the kernels accumulate in f32 in another order),
// bf16 to 1e-2 (both sides round the same f32 values once, differences come from the
// accumulation order), f64 to 1e-12. Before each GPU run the allocator's free lists are
// stocked with NaN-filled blocks of the outputs' sizes, so an output element a kernel fails
// to write shows up as NaN (close_rel rejects NaN). Skips without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>

#ifdef ZTRAIN_WITH_CUDA
#include "framework/cuda/cuda_memory.h"
#endif
#include "framework/device.h"
#include "ops/attention.h"
#include "ops/elementwise.h"
#include "ops/embedding.h"
#include "ops/gelu.h"
#include "ops/layernorm.h"
#include "ops/matmul.h"
#include "ops/mlp.h"
#include "ops/reduce.h"
#include "ops/shape_ops.h"
#include "ops/softmax.h"
#include "tests/support/check.h"

namespace zt {
namespace {

using test::VarFn;

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

// f(inputs) and its input gradients for a given output gradient, in f64 on the host.
std::vector<Tensor> run_on(const VarFn& f, const std::vector<Tensor>& inputs, DType dtype, Device device,
                           const Tensor& out_grad, const std::vector<bool>& differentiable) {
  std::vector<Variable> vars;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const bool diff = differentiable.empty() || differentiable[i];
    Tensor t = is_floating(inputs[i].dtype()) ? inputs[i].to(dtype) : inputs[i];
    vars.emplace_back(t.to(device), diff && is_floating(t.dtype()));
  }
  Variable out = f(vars);
  EXPECT_EQ(out.device(), device);
  std::vector<Tensor> result{out.tensor().to(Device::cpu()).to(DType::f64)};
  if (out.requires_grad()) {
    out.backward(out_grad.to(out.dtype()).to(device));
    for (size_t i = 0; i < vars.size(); ++i)
      if (vars[i].requires_grad()) {
        EXPECT_TRUE(vars[i].has_grad()) << "input " << i << " got no gradient";
        if (vars[i].has_grad()) {
          EXPECT_EQ(vars[i].grad().device(), device);
          result.push_back(vars[i].grad().to(Device::cpu()).to(DType::f64));
        }
      }
  }
  return result;
}

// The CUDA op agrees with the CPU op on the output and every input gradient.
// atol > 0 compares elementwise (|got - want| <= atol + tol |want|) instead: for results that
// are zero in exact arithmetic, where both sides hold only rounding noise.
void expect_cuda_matches_cpu(const std::string& what, const VarFn& f, const std::vector<Tensor>& inputs,
                             DType dtype, const std::vector<bool>& differentiable = {}, double atol = 0) {
  const double tol = dtype == DType::bf16 ? 1e-2 : dtype == DType::f32 ? 1e-5 : 1e-12;
  std::vector<Variable> probe;
  for (const Tensor& t : inputs) probe.emplace_back(is_floating(t.dtype()) ? t.to(dtype) : t, false);
  const Tensor out_grad = random(f(probe).shape());
  const std::vector<Tensor> want = run_on(f, inputs, dtype, Device::cpu(), out_grad, differentiable);
  std::vector<Shape> shapes;
  for (const Tensor& t : want) shapes.push_back(t.shape());
  test::stock_poisoned_blocks(shapes, dtype, kGpu);
  const std::vector<Tensor> got = run_on(f, inputs, dtype, kGpu, out_grad, differentiable);
  ASSERT_EQ(want.size(), got.size()) << what;
  for (size_t i = 0; i < want.size(); ++i)
    EXPECT_TRUE(atol > 0 ? test::close_elementwise(got[i], want[i], tol, atol) : test::close_rel(got[i], want[i], tol))
        << what << ": " << (i == 0 ? std::string("output") : "gradient " + std::to_string(i - 1)) << " in "
        << dtype_name(dtype);
}

const DType kFloatTypes[] = {DType::f32, DType::bf16, DType::f64};

TEST(OpsCuda, Matmul) {
  REQUIRE_GPU();
  for (DType t : kFloatTypes) {
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        const int64_t M = 37, K = 53, N = 29;
        expect_cuda_matches_cpu("matmul 2-D", [&](const auto& v) { return ops::matmul(v[0], v[1], ta, tb); },
                                {random(ta ? Shape{K, M} : Shape{M, K}), random(tb ? Shape{N, K} : Shape{K, N})}, t);
        expect_cuda_matches_cpu("matmul batched",
                                [&](const auto& v) { return ops::matmul(v[0], v[1], ta, tb); },
                                {random(ta ? Shape{3, K, M} : Shape{3, M, K}), random(tb ? Shape{3, N, K} : Shape{3, K, N})},
                                t);
      }
    expect_cuda_matches_cpu("matmul [...,K]x[K,N]", [](const auto& v) { return ops::matmul(v[0], v[1]); },
                            {random({2, 5, 64}), random({64, 96})}, t);
  }
}

TEST(OpsCuda, Linear) {
  REQUIRE_GPU();
  for (DType t : kFloatTypes) {
    expect_cuda_matches_cpu("linear with bias", [](const auto& v) { return ops::linear(v[0], v[1], v[2]); },
                            {random({4, 33, 96}), random({200, 96}), random({200})}, t);
    expect_cuda_matches_cpu("linear without bias", [](const auto& v) { return ops::linear(v[0], v[1]); },
                            {random({77, 48}), random({31, 48})}, t);
    // Odd sizes: unaligned rows for cuBLASLt (and its bias epilogue).
    expect_cuda_matches_cpu("linear odd", [](const auto& v) { return ops::linear(v[0], v[1], v[2]); },
                            {random({13, 7}), random({5, 7}), random({5})}, t);
  }
}

TEST(OpsCuda, Elementwise) {
  REQUIRE_GPU();
  for (DType t : kFloatTypes) {
    for (auto op : {ops::add, ops::sub, ops::mul}) {
      expect_cuda_matches_cpu("binary same shape", [&](const auto& v) { return op(v[0], v[1]); },
                              {random({17, 33}), random({17, 33})}, t);
      expect_cuda_matches_cpu("binary row broadcast", [&](const auto& v) { return op(v[0], v[1]); },
                              {random({4, 17, 33}), random({17, 33})}, t);
      expect_cuda_matches_cpu("binary bias broadcast", [&](const auto& v) { return op(v[0], v[1]); },
                              {random({300, 65}), random({65})}, t);
      // Columns in whole 16-byte packs: b's gradient takes the packed column reduction
      // (f32, bf16), over one slab and over many.
      for (const Shape& s : {Shape{37, 64}, Shape{3000, 264}})
        expect_cuda_matches_cpu("binary bias broadcast packed " + shape_str(s),
                                [&](const auto& v) { return op(v[0], v[1]); }, {random(s), random({s[1]})}, t);
    }
    expect_cuda_matches_cpu("scale", [](const auto& v) { return ops::scale(v[0], -0.37); }, {random({1000, 3})}, t);
  }
}

TEST(OpsCuda, Reduce) {
  REQUIRE_GPU();
  // Inputs with a nonzero mean: a zero-mean sum of many values lands near 0 now and then,
  // where both sides hold only their summation order's rounding (the f32 check failed once
  // that way).
  auto shifted = [](const Shape& s, double mean) {
    return Tensor::randn(s, DType::f64, test::test_generator(), mean, 1.0);
  };
  for (DType t : kFloatTypes) {
    expect_cuda_matches_cpu("sum", [](const auto& v) { return ops::sum(v[0]); }, {shifted({333, 71}, 0.5)}, t);
    expect_cuda_matches_cpu("mean", [](const auto& v) { return ops::mean(v[0]); }, {shifted({100003}, -0.25)}, t);
  }
}

TEST(OpsCuda, Embedding) {
  REQUIRE_GPU();
  for (DType t : kFloatTypes)
    for (DType id_type : {DType::i32, DType::i64}) {
      // Few rows, many ids: every row collects several gradient rows (atomic adds).
      expect_cuda_matches_cpu("embedding", [](const auto& v) { return ops::embedding(v[0], v[1]); },
                              {random({13, 40}), random_ids({6, 50}, 13, id_type)}, t, {true, false});
      expect_cuda_matches_cpu("embedding odd width", [](const auto& v) { return ops::embedding(v[0], v[1]); },
                              {random({97, 3}), random_ids({200}, 97, id_type)}, t, {true, false});
    }
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

TEST(OpsCuda, LayerNorm) {
  REQUIRE_GPU();
  for (DType t : kFloatTypes)
    // 768, 256, 1024 and 8 (bf16; 256 also f32) take the packed backward kernel.
    for (int64_t C : {768, 37, 2, 1, 256, 1024, 8}) {
      // C = 1: y = beta and dx = 0 exactly; C = 2: x_hat = +-1 and dx = 0 exactly too. Both
      // sides then hold only rounding noise (times rstd, up to ~316): compare with an atol.
      expect_cuda_matches_cpu(
          "layernorm C=" + std::to_string(C), [](const auto& v) { return ops::layernorm(v[0], v[1], v[2]); },
          {random({3, 41, C}, 2.0), random({C}), random({C})}, t, {}, C <= 2 ? 1e-3 : 0);
    }
  // More rows than the packed kernel's warps: each warp strides over several rows (and
  // prefetches the next; the last stride has none).
  for (DType t : {DType::bf16, DType::f32})
    for (int64_t C : {64, 768})
      expect_cuda_matches_cpu("layernorm many rows C=" + std::to_string(C),
                              [](const auto& v) { return ops::layernorm(v[0], v[1], v[2]); },
                              {random({5003, C}), random({C}), random({C})}, t);
}

TEST(OpsCuda, GeluAndSoftmax) {
  REQUIRE_GPU();
  for (DType t : kFloatTypes) {
    expect_cuda_matches_cpu("gelu", [](const auto& v) { return ops::gelu(v[0]); }, {random({123, 45}, 3.0)}, t);
    for (int64_t C : {1, 37, 1000, 3000})
      expect_cuda_matches_cpu("softmax C=" + std::to_string(C), [](const auto& v) { return ops::softmax(v[0]); },
                              {random({7, C}, 3.0)}, t);
  }
}

TEST(OpsCuda, CausalAttention) {
  REQUIRE_GPU();
  for (DType t : kFloatTypes) {
    // (T = 1 is left out: dq and dk are then zero in exact arithmetic, rounding noise on both sides.)
    // D = 64 and 32 in bf16 take the flash kernels; 16 and 8 the unfused path.
    for (const Shape& s : {Shape{2, 3, 67, 16}, Shape{1, 2, 130, 64}, Shape{1, 2, 2, 8}, Shape{2, 2, 65, 32}}) {
      // At T = 2 the first query's dq and dk are zero in exact arithmetic and the second's
      // are P1 P2 (dP1 - dP2) times a key difference, which the inputs can make as small as the
      // bf16 rounding of delta = rowsum(dO o O): both sides then hold mostly noise (norm-wise
      // errors of 1-4% on some inputs). bf16 compares elementwise with an absolute floor there.
      const double atol = t == DType::bf16 && s[2] <= 2 ? 3e-2 : 0;
      expect_cuda_matches_cpu("attention " + shape_str(s),
                              [](const auto& v) { return ops::causal_attention(v[0], v[1], v[2]); },
                              {random(s), random(s), random(s)}, t, {}, atol);
    }
  }
}

// The fused op under each backend choice: bf16 takes cuDNN's fused attention (D a multiple of
// 8, where cuDNN takes the shape) or our flash kernels (D = 32 or 64); f32 and other head
// sizes the split / causal_attention / merge composite. Sequence lengths around the 64-row
// blocks. (tests/ops/attention_cudnn_test.cpp checks which backend ran.)
TEST(OpsCuda, CausalSelfAttention) {
  REQUIRE_GPU();
  struct Case {
    int64_t B, T, C, H;
  };
  for (ops::AttentionBackend b : {ops::AttentionBackend::cudnn, ops::AttentionBackend::flash}) {
    ops::set_attention_backend(b);
    for (DType t : {DType::bf16, DType::f32})
      for (const Case& c : {Case{2, 3, 64, 2}, Case{1, 63, 128, 2}, Case{2, 64, 128, 4}, Case{1, 130, 256, 4},
                            Case{1, 257, 128, 2}, Case{1, 40, 96, 6}})
        expect_cuda_matches_cpu(std::string(ops::attention_backend_name(b)) + " self-attention B " +
                                    std::to_string(c.B) + " T " + std::to_string(c.T) + " C " + std::to_string(c.C) +
                                    " H " + std::to_string(c.H),
                                [&](const auto& v) { return ops::causal_self_attention(v[0], c.H); },
                                {random({c.B, c.T, 3 * c.C})}, t);
  }
  ops::set_attention_backend(ops::AttentionBackend::cudnn);
}

TEST(OpsCuda, MlpWithGeluOnTheEpilogues) {
  REQUIRE_GPU();
  struct Case {
    Shape x;
    int64_t hidden, out;
    bool biases, fused;  // fused: hidden a multiple of 8, so f32/bf16 take cuBLASLt's GELU epilogues
  };
  for (DType t : kFloatTypes)
    for (const Case& c : {Case{{2, 33, 96}, 384, 96, true, true}, Case{{5, 64}, 256, 48, false, true},
                          Case{{3, 7, 32}, 100, 32, true, false}}) {
      const int64_t in = c.x.back();
      auto f = [&](const auto& v) {
        return c.biases ? ops::mlp(v[0], v[1], v[2], v[3], v[4]) : ops::mlp(v[0], v[1], Variable(), v[3], Variable());
      };
      const ops::MlpFusionStats before = ops::mlp_fusion_stats();
      expect_cuda_matches_cpu("mlp " + shape_str(c.x) + " hidden " + std::to_string(c.hidden),
                              f,
                              {random(c.x), random({c.hidden, in}, 1 / std::sqrt(double(in))), random({c.hidden}),
                               random({c.out, c.hidden}, 1 / std::sqrt(double(c.hidden))), random({c.out})},
                              t, {true, true, c.biases, true, c.biases});
      const ops::MlpFusionStats after = ops::mlp_fusion_stats();
      const int64_t expected = c.fused && t != DType::f64 ? 1 : 0;
      EXPECT_EQ(after.forward - before.forward, expected) << dtype_name(t) << " hidden " << c.hidden;
      EXPECT_EQ(after.backward - before.backward, expected) << dtype_name(t) << " hidden " << c.hidden;
    }
}

TEST(OpsCuda, ShapeOps) {
  REQUIRE_GPU();
  for (DType t : kFloatTypes) {
    // GPT's head split and merge: reshape, transpose (a strided copy on the device), split_last.
    expect_cuda_matches_cpu(
        "heads", [](const auto& v) {
          std::vector<Variable> parts = ops::split_last(v[0], 3);
          Variable q = ops::transpose(ops::reshape(parts[0], {2, 9, 4, 8}), 1, 2);
          Variable k = ops::transpose(ops::reshape(parts[1], {2, 9, 4, 8}), 1, 2);
          Variable prod = ops::mul(q, ops::scale(k, 0.5));
          return ops::add(ops::reshape(ops::transpose(prod, 1, 2), {2, 9, 32}), parts[2]);
        },
        {random({2, 9, 96})}, t);
    expect_cuda_matches_cpu("transpose 0,2", [](const auto& v) { return ops::transpose(v[0], 0, 2); },
                            {random({5, 6, 7, 3})}, t);
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
