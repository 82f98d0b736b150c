#include <cmath>
#include <vector>

#include "ops/cpu_compute.h"
#include "ops/rope_kernels.h"

namespace zt::ops {

namespace {

// cos and sin of every position's angles, [T, D/2] each: angle(t, i) = t * inv_freq_i with
// inv_freq_i = theta^(-2i/D) in f64, rounded to T first (f32: the product and the functions
// in f32, as the CUDA kernels do).
template <class T>
struct RopeTable {
  std::vector<T> cos, sin;
  int64_t half = 0;
  RopeTable(const QkNormRopeShape& s) {
    if (s.rope_theta <= 0) return;
    half = s.D / 2;
    cos.resize(static_cast<size_t>(s.T * half));
    sin.resize(cos.size());
    for (int64_t i = 0; i < half; ++i) {
      const T inv = static_cast<T>(std::pow(s.rope_theta, -2.0 * double(i) / double(s.D)));
      for (int64_t t = 0; t < s.T; ++t) {
        const T a = static_cast<T>(t) * inv;
        cos[t * half + i] = std::cos(a);
        sin[t * half + i] = std::sin(a);
      }
    }
  }
};

}  // namespace

Tensor qk_norm_rope_forward_cpu(const Tensor& x_in, const Tensor& qg_in, const Tensor& kg_in, const QkNormRopeShape& s,
                                Tensor& rstd) {
  const Tensor x = cpu::to_compute(x_in);
  const bool norm = qg_in.defined();
  const Tensor qg = norm ? cpu::to_compute(qg_in) : Tensor(), kg = norm ? cpu::to_compute(kg_in) : Tensor();
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  rstd = norm ? Tensor::empty({s.tokens, s.qk_heads()}, x.dtype()) : Tensor();
  const int64_t D = s.D, W = s.heads() * D, QK = s.qk_heads();
  cpu::dispatch_compute(x.dtype(), "qk_norm_rope", [&](auto tag) {
    using T = decltype(tag);
    const RopeTable<T> rope(s);
    const T* px = x.data<T>();
    T* py = y.data<T>();
    const T* pq = norm ? qg.data<T>() : nullptr;
    const T* pk = norm ? kg.data<T>() : nullptr;
    T* pr = norm ? rstd.data<T>() : nullptr;
#pragma omp parallel if (x.numel() >= cpu::kParallelMin)
    {
      std::vector<T> n(static_cast<size_t>(D));
#pragma omp for schedule(static)
      for (int64_t row = 0; row < s.tokens * s.heads(); ++row) {
        const int64_t tok = row / s.heads(), h = row % s.heads(), t = tok % s.T;
        const T* xr = px + tok * W + h * D;
        T* yr = py + tok * W + h * D;
        if (h >= QK) {  // v heads
          std::copy(xr, xr + D, yr);
          continue;
        }
        if (norm) {
          T ss = 0;
          for (int64_t j = 0; j < D; ++j) ss += xr[j] * xr[j];
          const T r = T(1) / std::sqrt(ss / T(D) + T(s.eps));
          const T* gain = h < s.n_head ? pq : pk;
          for (int64_t j = 0; j < D; ++j) n[j] = xr[j] * r * gain[j];
          pr[tok * QK + h] = r;
        } else {
          std::copy(xr, xr + D, n.begin());
        }
        if (rope.half == 0) {
          std::copy(n.begin(), n.end(), yr);
          continue;
        }
        const T* c = rope.cos.data() + t * rope.half;
        const T* sn = rope.sin.data() + t * rope.half;
        for (int64_t i = 0; i < rope.half; ++i) {
          yr[i] = n[i] * c[i] - n[i + rope.half] * sn[i];
          yr[i + rope.half] = n[i + rope.half] * c[i] + n[i] * sn[i];
        }
      }
    }
  });
  return y.to(x_in.dtype());
}

void qk_norm_rope_backward_cpu(const Tensor& grad_in, const Tensor& x_in, const Tensor& qg_in, const Tensor& kg_in,
                               const Tensor& rstd, const QkNormRopeShape& s, Tensor* dqkv, Tensor* dq_gain,
                               Tensor* dk_gain) {
  const Tensor g = cpu::to_compute(grad_in);
  const bool norm = rstd.defined();
  const bool want_gains = norm && (dq_gain || dk_gain);
  const Tensor x = norm ? cpu::to_compute(x_in) : Tensor();
  const Tensor qg = norm && dqkv ? cpu::to_compute(qg_in) : Tensor(),
               kg = norm && dqkv ? cpu::to_compute(kg_in) : Tensor();
  const int64_t D = s.D, W = s.heads() * D, QK = s.qk_heads();
  Tensor dx = dqkv ? Tensor::empty(g.shape(), g.dtype()) : Tensor();
  Tensor dgain = Tensor::empty({2, D}, g.dtype());  // [dq_gain; dk_gain], summed over tokens together
  cpu::dispatch_compute(g.dtype(), "qk_norm_rope", [&](auto tag) {
    using T = decltype(tag);
    const RopeTable<T> rope(s);
    const T* pg = g.data<T>();
    const T* px = norm ? x.data<T>() : nullptr;
    const T* pq = qg.defined() ? qg.data<T>() : nullptr;
    const T* pk = kg.defined() ? kg.data<T>() : nullptr;
    const T* pr = norm ? rstd.data<T>() : nullptr;
    T* pd = dqkv ? dx.data<T>() : nullptr;
    // One token: its heads' dx, and (acc) its q heads' dn xhat into acc[0, D), k heads' into acc[D, 2D).
    auto token = [&](int64_t tok, T* acc) {
      const int64_t t = tok % s.T;
      std::vector<T> dn(static_cast<size_t>(D));  // per call: sum_over_rows runs tokens on several threads
      for (int64_t h = 0; h < s.heads(); ++h) {
        const T* gr = pg + tok * W + h * D;
        if (h >= QK) {
          if (pd) std::copy(gr, gr + D, pd + tok * W + h * D);
          continue;
        }
        if (rope.half > 0) {  // rotate the gradient back
          const T* c = rope.cos.data() + t * rope.half;
          const T* sn = rope.sin.data() + t * rope.half;
          for (int64_t i = 0; i < rope.half; ++i) {
            dn[i] = gr[i] * c[i] + gr[i + rope.half] * sn[i];
            dn[i + rope.half] = gr[i + rope.half] * c[i] - gr[i] * sn[i];
          }
        } else {
          std::copy(gr, gr + D, dn.begin());
        }
        if (!norm) {
          if (pd) std::copy(dn.begin(), dn.end(), pd + tok * W + h * D);
          continue;
        }
        const T* xr = px + tok * W + h * D;
        const T r = pr[tok * QK + h];
        if (want_gains) {
          T* a = acc + (h < s.n_head ? 0 : D);
          for (int64_t j = 0; j < D; ++j) a[j] += dn[j] * xr[j] * r;
        }
        if (pd) {
          const T* gain = h < s.n_head ? pq : pk;
          T sum = 0;
          for (int64_t j = 0; j < D; ++j) sum += dn[j] * gain[j] * xr[j] * r;
          const T b = sum / T(D);
          T* dr = pd + tok * W + h * D;
          for (int64_t j = 0; j < D; ++j) dr[j] = r * (dn[j] * gain[j] - xr[j] * r * b);
        }
      }
    };
    cpu::sum_over_rows<T>(s.tokens, 2 * D, dgain.data<T>(), token);
  });
  // Everything has the output's dtype (the op checks the gains against qkv).
  if (dqkv) *dqkv = dx.to(grad_in.dtype());
  if (dq_gain) *dq_gain = dgain.select(0, 0).contiguous().to(grad_in.dtype());
  if (dk_gain) *dk_gain = dgain.select(0, 1).contiguous().to(grad_in.dtype());
}

}  // namespace zt::ops
