#include <Eigen/Core>
#include <cmath>
#include <vector>

#include "ops/attention_kernels.h"
#include "ops/cpu_compute.h"
#include "ops/cpu_gemm.h"

namespace zt::ops {

namespace {

constexpr int64_t kBlock = 64;  // query rows per block

template <class T>
using RowView = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;

using Dims = AttentionDims;

// Scratch rows are reduced with Eigen, whose vectorised sums split the work by the pointer's
// alignment: malloc's varying alignment would make identical inputs give different last bits
// (and break bit-exact resume). Aligning the buffer makes every row's split fixed.
template <class T>
using Scratch = std::vector<T, Eigen::aligned_allocator<T>>;

template <class T>
void forward(const T* q, const T* k, const T* v, T* out, T* lse, const Dims& d) {
  const T scale = T(1) / std::sqrt(T(d.D));
  const int64_t n = d.T, D = d.D;
  // Many heads: one per thread (Eigen's GEMMs then run single-threaded); one head: its
  // GEMMs are threaded by Eigen instead. Tiny problems stay on one thread.
#pragma omp parallel if (d.heads > 1 && d.heads * d.T * d.T * d.D >= cpu::kParallelMin)
  {
    Scratch<T> scores(static_cast<size_t>(std::min(kBlock, n) * n));
#pragma omp for schedule(dynamic)
    for (int64_t h = 0; h < d.heads; ++h) {
      const T* Q = q + h * n * D;
      const T* K = k + h / d.group * n * D;
      const T* V = v + h / d.group * n * D;
      T* O = out + h * n * D;
      T* L = lse + h * n;
      for (int64_t r0 = 0; r0 < n; r0 += kBlock) {
        const int64_t rows = std::min(kBlock, n - r0), keys = r0 + rows;
        T* S = scores.data();  // [rows, keys]
        cpu::gemm<T>(false, true, rows, keys, D, scale, Q + r0 * D, D, K, D, T(0), S, keys);
        for (int64_t i = 0; i < rows; ++i) {
          const int64_t visible = r0 + i + 1;  // keys 0..t
          RowView<T> s(S + i * keys, visible);
          const T m = s.maxCoeff();
          s = (s - m).exp();
          const T sum = s.sum();
          s *= T(1) / sum;
          std::fill(S + i * keys + visible, S + (i + 1) * keys, T(0));
          L[r0 + i] = m + std::log(sum);
        }
        cpu::gemm<T>(false, false, rows, D, keys, T(1), S, keys, V, D, T(0), O + r0 * D, D);
      }
    }
  }
}

template <class T>
void backward(const T* g, const T* q, const T* k, const T* v, const T* out, const T* lse, T* dq, T* dk, T* dv,
              const Dims& d) {
  const T scale = T(1) / std::sqrt(T(d.D));
  const int64_t n = d.T, D = d.D;
  // One thread per key/value head: it sums the dK and dV of its group's query heads.
#pragma omp parallel if (d.kv_heads > 1 && d.heads * d.T * d.T * d.D >= cpu::kParallelMin)
  {
    const size_t block = static_cast<size_t>(std::min(kBlock, n) * n);
    Scratch<T> p_buf(block), dp_buf(block);
#pragma omp for schedule(dynamic)
    for (int64_t kvh = 0; kvh < d.kv_heads; ++kvh) {
      const T *K = k + kvh * n * D, *V = v + kvh * n * D;
      T *dK = dk + kvh * n * D, *dV = dv + kvh * n * D;
      std::fill(dK, dK + n * D, T(0));
      std::fill(dV, dV + n * D, T(0));
      for (int64_t h = kvh * d.group; h < (kvh + 1) * d.group; ++h) {
        const int64_t off = h * n * D;
        const T *Q = q + off, *O = out + off, *G = g + off;
        const T* L = lse + h * n;
        T* dQ = dq + off;
        for (int64_t r0 = 0; r0 < n; r0 += kBlock) {
          const int64_t rows = std::min(kBlock, n - r0), keys = r0 + rows;
          T* P = p_buf.data();
          T* dS = dp_buf.data();
          // P = exp(scale Q K^T - lse), zero above the diagonal.
          cpu::gemm<T>(false, true, rows, keys, D, scale, Q + r0 * D, D, K, D, T(0), P, keys);
          for (int64_t i = 0; i < rows; ++i) {
            const int64_t visible = r0 + i + 1;
            RowView<T> p(P + i * keys, visible);
            p = (p - L[r0 + i]).exp();
            std::fill(P + i * keys + visible, P + (i + 1) * keys, T(0));
          }
          // dV[0:keys] += P^T dO_blk
          cpu::gemm<T>(true, false, keys, D, rows, T(1), P, keys, G + r0 * D, D, T(1), dV, D);
          // dP = dO_blk V[0:keys]^T, then dS = P (dP - rowsum(dO o O)) scale in place.
          cpu::gemm<T>(false, true, rows, keys, D, T(1), G + r0 * D, D, V, D, T(0), dS, keys);
          for (int64_t i = 0; i < rows; ++i) {
            const T* gr = G + (r0 + i) * D;
            const T* orow = O + (r0 + i) * D;
            T delta = 0;
            for (int64_t j = 0; j < D; ++j) delta += gr[j] * orow[j];
            T* ds = dS + i * keys;
            const T* p = P + i * keys;
            for (int64_t j = 0; j < keys; ++j) ds[j] = p[j] * (ds[j] - delta) * scale;
          }
          // dQ_blk = dS K[0:keys];  dK[0:keys] += dS^T Q_blk
          cpu::gemm<T>(false, false, rows, D, keys, T(1), dS, keys, K, D, T(0), dQ + r0 * D, D);
          cpu::gemm<T>(true, false, keys, D, rows, T(1), dS, keys, Q + r0 * D, D, T(1), dK, D);
        }
      }
    }
  }
}

}  // namespace

Tensor attention_forward_cpu(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in, Tensor& lse) {
  const Tensor q = cpu::to_compute(q_in), k = cpu::to_compute(k_in), v = cpu::to_compute(v_in);
  const Dims d(q, k);
  Tensor out = Tensor::empty(q.shape(), q.dtype());
  lse = Tensor::empty({q.shape()[0], q.shape()[1], d.T}, q.dtype());
  cpu::dispatch_compute(q.dtype(), "causal_attention", [&](auto tag) {
    using T = decltype(tag);
    forward<T>(q.data<T>(), k.data<T>(), v.data<T>(), out.data<T>(), lse.data<T>(), d);
  });
  return out.to(q_in.dtype());
}

void attention_backward_cpu(const Tensor& grad, const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
                            const Tensor& out_in, const Tensor& lse, Tensor* dq, Tensor* dk, Tensor* dv) {
  const Tensor g = cpu::to_compute(grad), q = cpu::to_compute(q_in), k = cpu::to_compute(k_in),
               v = cpu::to_compute(v_in), out = cpu::to_compute(out_in);
  const Dims d(q, k);
  Tensor dq_c = Tensor::empty(q.shape(), q.dtype()), dk_c = Tensor::empty(k.shape(), q.dtype()),
         dv_c = Tensor::empty(k.shape(), q.dtype());
  cpu::dispatch_compute(q.dtype(), "causal_attention", [&](auto tag) {
    using T = decltype(tag);
    backward<T>(g.data<T>(), q.data<T>(), k.data<T>(), v.data<T>(), out.data<T>(), lse.data<T>(), dq_c.data<T>(),
                dk_c.data<T>(), dv_c.data<T>(), d);
  });
  if (dq) *dq = dq_c.to(q_in.dtype());
  if (dk) *dk = dk_c.to(q_in.dtype());
  if (dv) *dv = dv_c.to(q_in.dtype());
}

}  // namespace zt::ops
