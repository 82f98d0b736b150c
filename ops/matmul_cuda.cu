// CUDA side of ops/matmul.h: every product goes through cuBLASLt (framework/cuda/blas.h),
// bf16 and f32 accumulating in f32 (f64 in f64). The linear layer's bias rides on the
// product as cuBLASLt's bias epilogue (its bias gradient, optionally, on the dW product), and
// the MLP's GELU on the products around it (ops/mlp.h).
#include <cstdlib>

#include "framework/cuda/blas.h"
#include "ops/cuda_compute.cuh"
#include "ops/matmul_kernels.h"

namespace zt::ops {

namespace {

using namespace gpu;

// out[r, c] = bias[c], or out[r, c] += bias[c] when add (onto a residual already there).
template <class T>
__global__ void bias_rows_kernel(const T* bias, T* out, int64_t rows, int64_t cols, bool add) {
  using A = acc_t<T>;
  ZT_GRID_STRIDE(i, rows * cols) {
    const A b = load<A>(bias, i % cols);
    store(out, i, add ? load<A>(out, i) + b : b);
  }
}

cuda::GemmArgs args_for(const Tensor& a, const Tensor& b, Tensor& out, const GemmDims& d) {
  cuda::GemmArgs g;
  g.batch = d.batch;
  g.M = d.M;
  g.N = d.N;
  g.K = d.K;
  g.trans_a = d.trans_a;
  g.trans_b = d.trans_b;
  g.A = a.raw_data();
  g.lda = d.trans_a ? d.M : d.K;
  g.stride_a = d.M * d.K;
  g.B = b.raw_data();
  g.ldb = d.trans_b ? d.K : d.N;
  g.stride_b = d.K * d.N;
  g.C = out.raw_data();
  g.ldc = d.N;
  g.stride_c = d.M * d.N;
  g.ab_dtype = a.dtype();
  g.c_dtype = out.dtype();
  return g;
}

}  // namespace

void gemm_cuda(const Tensor& a_in, const Tensor& b_in, Tensor& out, const GemmDims& d, bool accumulate) {
  ZT_CHECK(out.is_contiguous(), "gemm_cuda: output must be contiguous");
  ZT_CHECK(a_in.dtype() == b_in.dtype(), "gemm_cuda: operands are ", dtype_name(a_in.dtype()), " and ",
           dtype_name(b_in.dtype()));
  OpRange range("matmul");
  if (d.batch * d.M * d.N == 0) return;
  if (d.K == 0) {  // an empty sum
    if (!accumulate) out.fill_(0.0);
    return;
  }
  const Tensor a = a_in.contiguous(), b = b_in.contiguous();
  stream_for(out);
  cuda::GemmArgs g = args_for(a, b, out, d);
  g.beta = accumulate ? 1.0 : 0.0;
  cuda::gemm(out.device().index, g);
}

bool db_epilogue_preferred() {
  static const bool on = [] {
    const char* e = std::getenv("ZT_DB_EPILOGUE");
    return e && e[0] == '1';
  }();
  return on;
}

bool linear_weight_grad_cuda(const Tensor& g_in, const Tensor& x_in, Tensor& dw, Tensor& db) {
  ZT_CHECK(dw.is_contiguous() && (!db.defined() || db.is_contiguous()),
           "linear_weight_grad_cuda: outputs must be contiguous");
  OpRange range("matmul");
  const int64_t out_features = dw.shape()[0], in_features = dw.shape()[1];
  const int64_t rows = out_features > 0 ? g_in.numel() / out_features : 0;
  const GemmDims dims{1, out_features, in_features, rows, true, false};
  const Tensor g = g_in.contiguous(), x = x_in.contiguous();
  if (db.defined() && rows > 0 && out_features * in_features > 0 && dw.dtype() != DType::f64) {
    stream_for(dw);
    cuda::GemmArgs a = args_for(g, x, dw, dims);
    a.bias_grad = db.raw_data();
    if (cuda::gemm(dw.device().index, a)) return true;
  }
  gemm_cuda(g, x, dw, dims);
  return false;
}

bool mlp_epilogues_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("ZT_MLP_EPILOGUES");
    return !(e && e[0] == '0');
  }();
  return on;
}

bool linear_gelu_forward_cuda(const Tensor& x_in, const Tensor& w_in, const Tensor& bias_in, Tensor& out, Tensor& pre) {
  ZT_CHECK(out.is_contiguous() && pre.is_contiguous(), "linear_gelu_forward_cuda: outputs must be contiguous");
  OpRange range("matmul");
  const int64_t rows = out.shape()[0], out_features = out.shape()[1];
  const GemmDims dims{1, rows, out_features, w_in.shape()[1], false, true};
  if (out.dtype() == DType::f64 || dims.K == 0 || rows * out_features == 0) return false;
  const Tensor x = x_in.contiguous(), w = w_in.contiguous();
  const Tensor bias = bias_in.defined() ? bias_in.contiguous() : Tensor();
  stream_for(out);
  cuda::GemmArgs g = args_for(x, w, out, dims);
  g.bias = bias.defined() ? bias.raw_data() : nullptr;
  g.gelu_aux = pre.raw_data();
  return cuda::gemm(out.device().index, g);
}

bool gelu_input_grad_cuda(const Tensor& g_in, const Tensor& w_in, const Tensor& pre_in, Tensor& dpre) {
  ZT_CHECK(dpre.is_contiguous(), "gelu_input_grad_cuda: dpre must be contiguous");
  OpRange range("matmul");
  const int64_t out_features = w_in.shape()[0], hidden = w_in.shape()[1];
  const int64_t rows = hidden > 0 ? dpre.numel() / hidden : 0;
  const GemmDims dims{1, rows, hidden, out_features, false, false};
  if (dpre.dtype() == DType::f64 || out_features == 0 || rows * hidden == 0) return false;
  const Tensor g = g_in.contiguous(), w = w_in.contiguous(), pre = pre_in.contiguous();
  stream_for(dpre);
  cuda::GemmArgs a = args_for(g, w, dpre, dims);
  a.dgelu_aux = pre.raw_data();
  return cuda::gemm(dpre.device().index, a);
}

bool linear_forward_cuda(const Tensor& x_in, const Tensor& w_in, const Tensor& bias_in, Tensor& out,
                         const Tensor& residual_in) {
  OpRange range("matmul");
  const int64_t rows = out.shape()[0], out_features = out.shape()[1];
  const GemmDims dims{1, rows, out_features, w_in.shape()[1], false, true};
  const Tensor x = x_in.contiguous(), w = w_in.contiguous();
  if (!bias_in.defined() && !residual_in.defined()) {
    gemm_cuda(x, w, out, dims);
    return false;
  }
  const Tensor bias = bias_in.defined() ? bias_in.contiguous() : Tensor();
  const Tensor residual = residual_in.defined() ? residual_in.contiguous() : Tensor();
  cudaStream_t s = stream_for(out);
  // The bias epilogue exists for f32/bf16 only; the residual (cuBLASLt's C) for every dtype.
  if (dims.K > 0 && rows * out_features > 0 && !(bias.defined() && out.dtype() == DType::f64)) {
    cuda::GemmArgs g = args_for(x, w, out, dims);
    g.bias = bias.defined() ? bias.raw_data() : nullptr;
    g.addend = residual.defined() ? residual.raw_data() : nullptr;
    if (cuda::gemm(out.device().index, g)) return residual.defined();
  }
  // Not on the product (f64 bias, K == 0, none offered): residual and bias rows first, the
  // product accumulated onto them.
  if (residual.defined()) out.copy_(residual);
  if (bias.defined() && rows * out_features > 0) {
    dispatch_device_float(out.dtype(), "linear", [&](auto tag) {
      using T = decltype(tag);
      bias_rows_kernel<T><<<grid_for(rows * out_features, out.device().index), kThreads, 0, s>>>(
          static_cast<const T*>(bias.raw_data()), static_cast<T*>(out.raw_data()), rows, out_features,
          residual.defined());
    });
    ZT_CUDA_CHECK_LAUNCH();
  }
  gemm_cuda(x, w, out, dims, /*accumulate=*/true);
  return false;
}

}  // namespace zt::ops
