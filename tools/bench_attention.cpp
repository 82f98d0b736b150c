// bench_attention: times the fused causal self-attention op (ops::causal_self_attention) on
// CUDA at GPT-2 small's shape, forward alone and forward + backward, and sets it beside its
// FLOP floor measured in the same run:
//
//   floor = causal FLOPs / bf16 tensor-core rate of a large cuBLASLt product (8192^3)
//   causal FLOPs per head: forward 2 T^2 D (S = Q K^T and O = P V, half of each computed),
//                          backward 5 T^2 D (S again, dP, dV, dK, dQ)
//
//   bench_attention                          B = 16, T = 1024, C = 768, 12 heads, bf16
//   ZT_FLASH_ATTENTION=0 bench_attention     the unfused path, for comparison

#include <algorithm>
#include <cstdio>
#include <vector>

#include "framework/error.h"
#include "tools/tool_main.h"
#include "framework/random.h"
#include "framework/tensor.h"
#ifdef ZTRAIN_WITH_CUDA
#include <cuda_runtime.h>

#include "framework/cuda/blas.h"
#include "framework/cuda/cuda_check.h"
#include "framework/cuda/stream.h"
#include "tools/cuda_timing.h"
#endif
#include "framework/autograd/grad_mode.h"
#include "framework/autograd/variable.h"
#include "ops/attention.h"

namespace {

#ifdef ZTRAIN_WITH_CUDA
using zt::bench::median_ms;

// TFLOP/s of an n^3 bf16 product through the framework's cuBLASLt path (random operands).
double gemm_ceiling_tflops(int64_t n, zt::Generator& gen) {
  const zt::Device dev = zt::Device::cuda(0);
  zt::Tensor a = zt::Tensor::randn({n, n}, zt::DType::bf16, gen, 0.0, 1.0, dev);
  zt::Tensor b = zt::Tensor::randn({n, n}, zt::DType::bf16, gen, 0.0, 1.0, dev);
  zt::Tensor c = zt::Tensor::empty({n, n}, zt::DType::bf16, dev);
  zt::cuda::GemmArgs g;
  g.M = g.N = g.K = n;
  g.A = a.raw_data();
  g.B = b.raw_data();
  g.C = c.raw_data();
  g.lda = g.ldb = g.ldc = n;
  g.ab_dtype = g.c_dtype = zt::DType::bf16;
  const double ms = median_ms([&] { zt::cuda::gemm(0, g); }, 3, 10);
  return 2.0 * static_cast<double>(n) * n * n / (ms * 1e-3) / 1e12;
}
#endif

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Time the fused causal self-attention op on CUDA beside its FLOP floor"};
  int64_t B = 16, T = 1024, C = 768, H = 12;
  int reps = 20;
  app.add_option("--batch-size", B, "sequences")->check(CLI::PositiveNumber);
  app.add_option("--seq-len", T, "tokens per sequence")->check(CLI::PositiveNumber);
  app.add_option("--d-model", C, "model width C")->check(CLI::PositiveNumber);
  app.add_option("--heads", H, "attention heads (C / heads = head size)")->check(CLI::PositiveNumber);
  app.add_option("--reps", reps, "timed runs (median reported)")->check(CLI::PositiveNumber);
  return zt::tool::run_tool("bench_attention", app, argc, argv, [&]() -> int {
#ifndef ZTRAIN_WITH_CUDA
    ZT_FAIL("this ztrain was built without CUDA");
#else
    ZT_CHECK(C % H == 0, "--heads ", H, " does not divide --d-model ", C);
    zt::Generator gen(1234);
    const double ceiling = gemm_ceiling_tflops(8192, gen);
    const zt::Device dev = zt::Device::cuda(0);
    zt::Tensor qkv = zt::Tensor::randn({B, T, 3 * C}, zt::DType::bf16, gen, 0.0, 1.0, dev);
    zt::Tensor dout = zt::Tensor::randn({B, T, C}, zt::DType::bf16, gen, 0.0, 1.0, dev);
    const double D = static_cast<double>(C / H), heads = static_cast<double>(B * H), t2 = double(T) * double(T);
    const double fwd_flops = heads * 2.0 * t2 * D, bwd_flops = heads * 5.0 * t2 * D;

    const double fwd_ms = median_ms(
        [&] {
          zt::NoGradGuard no_grad;
          zt::ops::causal_self_attention(zt::Variable(qkv), H);
        },
        3, reps);
    const double both_ms = median_ms(
        [&] {
          zt::Variable x(qkv, true);
          zt::ops::causal_self_attention(x, H).backward(dout);
        },
        3, reps);
    auto row = [&](const char* what, double ms, double flops) {
      const double floor_ms = flops / (ceiling * 1e12) * 1e3;
      std::printf("| %-18s | %8.3f | %8.3f | %5.1f%% | %6.1f |\n", what, ms, floor_ms, 100.0 * floor_ms / ms,
                  flops / (ms * 1e-3) / 1e12);
    };
    std::printf("bench_attention: B=%lld T=%lld C=%lld heads=%lld (D=%g) bf16, causal; GEMM ceiling %.0f TFLOP/s\n",
                static_cast<long long>(B), static_cast<long long>(T), static_cast<long long>(C),
                static_cast<long long>(H), D, ceiling);
    std::printf("| %-18s | %8s | %8s | %6s | %6s |\n", "pass", "ms", "floor ms", "floor%", "TFLOP/s");
    row("forward", fwd_ms, fwd_flops);
    row("forward+backward", both_ms, fwd_flops + bwd_flops);
    row("backward (diff)", both_ms - fwd_ms, bwd_flops);
    return 0;
#endif
  });
}
