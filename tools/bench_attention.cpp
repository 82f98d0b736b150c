// bench_attention: times causal self-attention (ops::causal_self_attention) on CUDA at GPT-2
// small's shape, forward alone and forward + backward, once per backend (cuDNN's fused
// attention, our flash kernels; the unfused composite on request), the same call each time,
// and sets each beside its FLOP floor measured in the same run:
//
//   floor = causal FLOPs / bf16 tensor-core rate of a large cuBLASLt product (8192^3)
//   causal FLOPs per head: forward 2 T^2 D (S = Q K^T and O = P V, half of each computed),
//                          backward 5 T^2 D (S again, dP, dV, dK, dQ)
//
//   bench_attention                              B = 16, T = 1024, C = 768, 12 heads, bf16
//   bench_attention --backends unfused --reps 5  the unfused path, for comparison
//   bench_attention --kv-heads 4                 grouped-query heads (12 query heads share 4
//                                                key/value heads; flash passes them down)
//
// A backend that cannot take the shape is reported as such (with the one that would run it);
// plans and tuning happen in the untimed warm-up runs. PyTorch's SDPA on the same shape:
// tools/gpu/bench_sdpa_torch.py.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "framework/autograd/grad_mode.h"
#include "framework/autograd/variable.h"
#include "framework/error.h"
#include "framework/random.h"
#include "framework/tensor.h"
#include "ops/attention.h"
#include "tools/bench_util.h"
#include "tools/tool_main.h"
#ifdef ZTRAIN_WITH_CUDA
#include "framework/cuda/blas.h"

// The benchmark itself: CUDA builds only (main says so in others).
namespace {

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
}  // namespace
#endif

int main(int argc, char** argv) {
  CLI::App app{"Time causal self-attention on CUDA, per backend, beside its FLOP floor"};
  int64_t B = 16, T = 1024, C = 768, H = 12, Hkv = 0;
  int reps = 20;
  std::string backends = "cudnn,flash";
  app.add_option("--batch-size", B, "sequences")->check(CLI::PositiveNumber);
  app.add_option("--seq-len", T, "tokens per sequence")->check(CLI::PositiveNumber);
  app.add_option("--d-model", C, "model width C")->check(CLI::PositiveNumber);
  app.add_option("--heads", H, "attention heads (C / heads = head size)")->check(CLI::PositiveNumber);
  app.add_option("--kv-heads", Hkv, "key/value heads, dividing --heads (grouped-query attention; default: --heads)")
      ->check(CLI::PositiveNumber);
  app.add_option("--reps", reps, "timed runs (median reported)")->check(CLI::PositiveNumber);
  app.add_option("--backends", backends, "comma-separated, in order: cudnn, flash, unfused");
  return zt::tool::run_tool("bench_attention", app, argc, argv, [&]() -> int {
    zt::bench::require_gpu();
#ifdef ZTRAIN_WITH_CUDA
    using zt::ops::AttentionBackend;
    ZT_CHECK(C % H == 0, "--heads ", H, " does not divide --d-model ", C);
    if (Hkv == 0) Hkv = H;
    ZT_CHECK(H % Hkv == 0, "--kv-heads ", Hkv, " does not divide --heads ", H);
    std::vector<AttentionBackend> chosen;
    for (const std::string& name : zt::tool::split_list(backends)) {
      const size_t before = chosen.size();
      for (AttentionBackend b : {AttentionBackend::cudnn, AttentionBackend::flash, AttentionBackend::unfused})
        if (name == zt::ops::attention_backend_name(b)) chosen.push_back(b);
      ZT_CHECK(chosen.size() > before, "--backends: unknown backend '", name, "' (expected cudnn, flash or unfused)");
    }
    ZT_CHECK(!chosen.empty(), "--backends: name at least one of cudnn, flash, unfused");
    zt::Generator gen(1234);
    const double ceiling = gemm_ceiling_tflops(8192, gen);
    const zt::Device dev = zt::Device::cuda(0);
    // q | k | v: H query heads, then Hkv key heads, then Hkv value heads of D = C / H each.
    zt::Tensor qkv = zt::Tensor::randn({B, T, C + 2 * Hkv * (C / H)}, zt::DType::bf16, gen, 0.0, 1.0, dev);
    zt::Tensor dout = zt::Tensor::randn({B, T, C}, zt::DType::bf16, gen, 0.0, 1.0, dev);
    const double D = static_cast<double>(C / H), heads = static_cast<double>(B * H), t2 = double(T) * double(T);
    const double fwd_flops = heads * 2.0 * t2 * D, bwd_flops = heads * 5.0 * t2 * D;
    auto forward = [&] {
      zt::NoGradGuard no_grad;
      zt::ops::causal_self_attention(zt::Variable(qkv), H, Hkv);
    };
    auto forward_backward = [&] {
      zt::Variable x(qkv, true);
      zt::ops::causal_self_attention(x, H, Hkv).backward(dout);
    };
    auto row = [&](const char* backend, const char* what, double ms, double flops) {
      const double floor_ms = flops / (ceiling * 1e12) * 1e3;
      std::printf("| %-8s | %-16s | %8.3f | %8.3f | %5.1f%% | %6.1f |\n", backend, what, ms, floor_ms,
                  100.0 * floor_ms / ms, flops / (ms * 1e-3) / 1e12);
    };
    std::printf("bench_attention: B=%lld T=%lld C=%lld heads=%lld kv-heads=%lld (D=%g) bf16, causal; GEMM ceiling %.0f "
                "TFLOP/s\n",
                static_cast<long long>(B), static_cast<long long>(T), static_cast<long long>(C),
                static_cast<long long>(H), static_cast<long long>(Hkv), D, ceiling);
    std::printf("| %-8s | %-16s | %8s | %8s | %6s | %6s |\n", "backend", "pass", "ms", "floor ms", "floor%",
                "TFLOP/s");
    for (AttentionBackend b : chosen) {
      zt::ops::set_attention_backend(b);
      const char* name = zt::ops::attention_backend_name(b);
      // One call first: builds cuDNN's plans for the shape and shows which backend takes it.
      const AttentionBackend all[] = {AttentionBackend::cudnn, AttentionBackend::flash, AttentionBackend::unfused};
      int64_t before[3];
      for (int i = 0; i < 3; ++i) before[i] = zt::ops::attention_calls(all[i]).forward;
      forward_backward();
      ZT_CUDA_CHECK(cudaDeviceSynchronize());
      if (zt::ops::attention_calls(b).forward == before[static_cast<int>(b)]) {
        const char* ran = "?";
        for (int i = 0; i < 3; ++i)
          if (zt::ops::attention_calls(all[i]).forward != before[i]) ran = zt::ops::attention_backend_name(all[i]);
        std::printf("| %-8s | not available for this shape: it runs on %s (ZT_CUDNN_DEBUG=1 says why)\n", name, ran);
        continue;
      }
      const double fwd_ms = median_ms(forward, 3, reps);
      const double both_ms = median_ms(forward_backward, 3, reps);
      row(name, "forward", fwd_ms, fwd_flops);
      row(name, "forward+backward", both_ms, fwd_flops + bwd_flops);
      row(name, "backward (diff)", both_ms - fwd_ms, bwd_flops);
    }
#endif
    return 0;
  });
}
