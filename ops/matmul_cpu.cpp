#include <algorithm>

#include "ops/cpu_compute.h"
#include "ops/cpu_gemm.h"
#include "ops/matmul_kernels.h"

namespace zt::ops {

void gemm_cpu(const Tensor& a_in, const Tensor& b_in, Tensor& out, const GemmDims& d, bool accumulate) {
  ZT_CHECK(out.is_contiguous(), "gemm_cpu: output must be contiguous");
  if (out.dtype() == DType::bf16) {  // computed in f32, rounded once
    Tensor o32 = accumulate ? out.to(DType::f32) : Tensor::empty(out.shape(), DType::f32);
    gemm_cpu(a_in.to(DType::f32), b_in.to(DType::f32), o32, d, accumulate);
    out.copy_(o32);
    return;
  }
  const Tensor a = cpu::to_compute(a_in), b = cpu::to_compute(b_in);
  cpu::dispatch_compute(out.dtype(), "matmul", [&](auto tag) {
    using T = decltype(tag);
    const T* A = a.data<T>();
    const T* B = b.data<T>();
    T* C = out.data<T>();
    const int64_t lda = d.trans_a ? d.M : d.K, ldb = d.trans_b ? d.K : d.N, ldc = d.N;
    const int64_t sa = d.M * d.K, sb = d.K * d.N, sc = d.M * d.N;
    const T beta = accumulate ? T(1) : T(0);
    auto one = [&](int64_t i) {
      cpu::gemm<T>(d.trans_a, d.trans_b, d.M, d.N, d.K, T(1), A + i * sa, lda, B + i * sb, ldb, beta, C + i * sc, ldc);
    };
    // Many products: one per thread, each single-threaded (Eigen does not nest inside a
    // parallel region). Few products: one after another, each threaded by Eigen.
    const bool big = d.batch * d.M * d.N * d.K >= cpu::kParallelMin;
    if (d.batch > 1 && d.batch >= omp_get_max_threads() && big) {
#pragma omp parallel for schedule(dynamic)
      for (int64_t i = 0; i < d.batch; ++i) one(i);
    } else {
      for (int64_t i = 0; i < d.batch; ++i) one(i);
    }
  });
}

void linear_forward_cpu(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& out, const Tensor& residual) {
  if (out.dtype() == DType::bf16) {  // computed in f32, rounded once
    Tensor o32 = Tensor::empty(out.shape(), DType::f32);
    auto f32 = [](const Tensor& t) { return t.defined() ? t.to(DType::f32) : Tensor(); };
    linear_forward_cpu(x.to(DType::f32), w.to(DType::f32), f32(bias), o32, f32(residual));
    out.copy_(o32);
    return;
  }
  const int64_t rows = out.shape()[0], out_features = out.shape()[1];
  const GemmDims dims{1, rows, out_features, w.shape()[1], false, true};
  if (!bias.defined() && !residual.defined()) {
    gemm_cpu(x, w, out, dims);
    return;
  }
  // out := residual + bias rows (whichever are given), then the product accumulated onto it.
  if (residual.defined()) out.copy_(residual);
  if (bias.defined()) {
    const Tensor b = cpu::to_compute(bias);
    cpu::dispatch_compute(out.dtype(), "linear", [&](auto tag) {
      using T = decltype(tag);
      const T* bp = b.data<T>();
      T* op = out.data<T>();
      const bool add = residual.defined();
#pragma omp parallel for schedule(static) if (out.numel() >= cpu::kParallelMin)
      for (int64_t r = 0; r < rows; ++r) {
        T* row = op + r * out_features;
        if (add)
          for (int64_t j = 0; j < out_features; ++j) row[j] += bp[j];
        else
          std::copy(bp, bp + out_features, row);
      }
    });
  }
  gemm_cpu(x, w, out, dims, /*accumulate=*/true);
}

}  // namespace zt::ops
