// CUDA kernels behind ops/rope.h: one warp per (token, head), QK-norm statistics and RoPE
// angles in f32 (f64 for f64); the gains' gradients by the deterministic column reduction.
#include "ops/norm_cuda.cuh"  // rsqrt_of, kWarpsPerBlock: a (token, head) row is normalised as a norm row is
#include "ops/rope_kernels.h"

namespace zt::ops {

namespace {

using namespace gpu;

// The kernels' view of QkNormRopeShape.
struct RopeDims {
  int64_t tokens, T, n_head, qk_heads, heads, D, half;  // half = D / 2 with RoPE on, else 0
  double theta;
};

// cos and sin of position t's angle for pair i: t * inv_freq, inv_freq = theta^(-2i/D) in f64;
// for f32 compute rounded to f32 first and the product and sincosf in f32 (as the CPU kernels).
template <class A>
__device__ __forceinline__ void rope_sincos(const RopeDims& d, int64_t t, int64_t i, A& s, A& c) {
  const double inv = pow(d.theta, -2.0 * double(i) / double(d.D));
  if constexpr (std::is_same_v<A, double>) {
    sincos(double(t) * inv, &s, &c);
  } else {
    sincosf(__fmul_rn(float(t), float(inv)), &s, &c);
  }
}

// y of one (token, head) row per warp: v heads copied; q and k heads RMS-normalised with
// their gain (gains non-null) and rotated (half > 0).
template <class T>
__global__ void qk_norm_rope_forward_kernel(const T* x, const T* q_gain, const T* k_gain, T* y, acc_t<T>* rstd,
                                            RopeDims d, acc_t<T> eps) {
  using A = acc_t<T>;
  const int64_t row = blockIdx.x * int64_t{kWarpsPerBlock} + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (row >= d.tokens * d.heads) return;
  const int64_t tok = row / d.heads, h = row - tok * d.heads, t = tok % d.T;
  const T* xr = x + row * d.D;  // rows are [tokens, heads] of D each: row * D is the head's offset
  T* yr = y + row * d.D;
  if (h >= d.qk_heads) {
    for (int64_t j = lane; j < d.D; j += 32) yr[j] = xr[j];
    return;
  }
  A r = 1;
  const T* gain = h < d.n_head ? q_gain : k_gain;
  if (gain) {
    A ss = 0;
    for (int64_t j = lane; j < d.D; j += 32) {
      const A v = load<A>(xr, j);
      ss += v * v;
    }
    r = rsqrt_of(warp_sum(ss) / A(d.D) + eps);
    if (lane == 0) rstd[tok * d.qk_heads + h] = r;
  }
  auto normed = [&](int64_t j) { return gain ? load<A>(xr, j) * r * load<A>(gain, j) : load<A>(xr, j); };
  if (d.half == 0) {
    for (int64_t j = lane; j < d.D; j += 32) store(yr, j, normed(j));
    return;
  }
  for (int64_t i = lane; i < d.half; i += 32) {
    A s, c;
    rope_sincos(d, t, i, s, c);
    const A a = normed(i), b = normed(i + d.half);
    store(yr, i, a * c - b * s);
    store(yr, i + d.half, b * c + a * s);
  }
}

// The output gradient of element j (< D) of a q/k head, rotated back: dn_j.
template <class A, class T>
__device__ __forceinline__ A unrotated(const RopeDims& d, const T* gr, int64_t t, int64_t j) {
  if (d.half == 0) return load<A>(gr, j);
  const int64_t i = j < d.half ? j : j - d.half;
  A s, c;
  rope_sincos(d, t, i, s, c);
  return j < d.half ? load<A>(gr, i) * c + load<A>(gr, i + d.half) * s
                    : load<A>(gr, i + d.half) * c - load<A>(gr, i) * s;
}

// dqkv, one (token, head) row per warp: v heads pass the gradient through; q and k heads
// rotate it back (dn) and, with QK-norm, dx = rstd (dn gain - xhat mean(dn gain xhat)).
template <class T>
__global__ void qk_norm_rope_backward_kernel(const T* g, const T* x, const T* q_gain, const T* k_gain,
                                             const acc_t<T>* rstd, T* dx, RopeDims d) {
  using A = acc_t<T>;
  const int64_t row = blockIdx.x * int64_t{kWarpsPerBlock} + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (row >= d.tokens * d.heads) return;
  const int64_t tok = row / d.heads, h = row - tok * d.heads, t = tok % d.T;
  const T* gr = g + row * d.D;
  T* dr = dx + row * d.D;
  if (h >= d.qk_heads) {
    for (int64_t j = lane; j < d.D; j += 32) dr[j] = gr[j];
    return;
  }
  const T* gain = h < d.n_head ? q_gain : k_gain;
  if (!gain) {
    for (int64_t j = lane; j < d.D; j += 32) store(dr, j, unrotated<A>(d, gr, t, j));
    return;
  }
  const T* xr = x + row * d.D;
  const A r = rstd[tok * d.qk_heads + h];
  A sum = 0;
  for (int64_t j = lane; j < d.D; j += 32)
    sum += unrotated<A>(d, gr, t, j) * load<A>(gain, j) * load<A>(xr, j) * r;
  const A b = warp_sum(sum) / A(d.D);
  for (int64_t j = lane; j < d.D; j += 32) {
    const A xhat = load<A>(xr, j) * r;
    store(dr, j, r * (unrotated<A>(d, gr, t, j) * load<A>(gain, j) - xhat * b));
  }
}

// Element (token, j) of the [tokens, 2D] matrix whose column sums are [dq_gain | dk_gain]:
// the sum over the token's q heads (j < D) or k heads (j >= D) of dn_j xhat_j.
template <class T, class A>
struct GainGrad {
  const T *g, *x;
  const A* rstd;
  RopeDims d;
  __device__ A operator()(int64_t tok, int64_t col) const {
    const bool k = col >= d.D;
    const int64_t j = k ? col - d.D : col, t = tok % d.T;
    const int64_t h0 = k ? d.n_head : 0, h1 = k ? d.qk_heads : d.n_head;
    A s = 0, c = 1;
    int64_t partner = j, sign = 0;  // dn_j = g_j c + sign g_partner s
    if (d.half > 0) {
      const int64_t i = j < d.half ? j : j - d.half;
      rope_sincos(d, t, i, s, c);
      partner = j < d.half ? j + d.half : j - d.half;
      sign = j < d.half ? 1 : -1;
    }
    A acc = 0;
    for (int64_t h = h0; h < h1; ++h) {
      const int64_t off = (tok * d.heads + h) * d.D;
      const A dn = load<A>(g, off + j) * c + A(sign) * load<A>(g, off + partner) * s;
      acc += dn * load<A>(x, off + j) * rstd[tok * d.qk_heads + h];
    }
    return acc;
  }
};

RopeDims dims_of(const QkNormRopeShape& s) {
  return {s.tokens, s.T, s.n_head, s.qk_heads(), s.heads(), s.D, s.rope_theta > 0 ? s.D / 2 : 0, s.rope_theta};
}

}  // namespace

Tensor qk_norm_rope_forward_cuda(const Tensor& x_in, const Tensor& qg_in, const Tensor& kg_in, const QkNormRopeShape& s,
                                 Tensor& rstd) {
  const Tensor x = x_in.contiguous();
  const bool norm = qg_in.defined();
  const Tensor qg = norm ? qg_in.contiguous() : Tensor(), kg = norm ? kg_in.contiguous() : Tensor();
  OpRange range("qk_norm_rope");
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  rstd = norm ? Tensor::empty({s.tokens, s.qk_heads()}, acc_dtype(x.dtype()), x.device()) : Tensor();
  const int64_t rows = s.tokens * s.heads();
  if (rows == 0) return y;
  cudaStream_t st = stream_for(x);
  const RopeDims d = dims_of(s);
  dispatch_device_float(x.dtype(), "qk_norm_rope", [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    qk_norm_rope_forward_kernel<T>
        <<<static_cast<unsigned>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock), kWarpsPerBlock * 32, 0, st>>>(
            static_cast<const T*>(x.raw_data()), norm ? static_cast<const T*>(qg.raw_data()) : nullptr,
            norm ? static_cast<const T*>(kg.raw_data()) : nullptr, static_cast<T*>(y.raw_data()),
            norm ? static_cast<A*>(rstd.raw_data()) : nullptr, d, static_cast<A>(s.eps));
  });
  ZT_CUDA_CHECK_LAUNCH();
  return y;
}

void qk_norm_rope_backward_cuda(const Tensor& grad_in, const Tensor& x_in, const Tensor& qg_in, const Tensor& kg_in,
                                const Tensor& rstd, const QkNormRopeShape& s, Tensor* dqkv, Tensor* dq_gain,
                                Tensor* dk_gain) {
  const Tensor g = grad_in.contiguous();
  const bool norm = rstd.defined();
  const Tensor x = norm ? x_in.contiguous() : Tensor();
  const Tensor qg = norm && dqkv ? qg_in.contiguous() : Tensor(), kg = norm && dqkv ? kg_in.contiguous() : Tensor();
  OpRange range("qk_norm_rope");
  const int dev = g.device().index;
  const int64_t rows = s.tokens * s.heads();
  cudaStream_t st = stream_for(g);
  const RopeDims d = dims_of(s);
  dispatch_device_float(g.dtype(), "qk_norm_rope", [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    const T* pg = static_cast<const T*>(g.raw_data());
    const T* px = norm ? static_cast<const T*>(x.raw_data()) : nullptr;
    const A* pr = norm ? static_cast<const A*>(rstd.raw_data()) : nullptr;
    if (dqkv) {
      *dqkv = Tensor::empty(g.shape(), g.dtype(), g.device());
      if (rows > 0) {
        qk_norm_rope_backward_kernel<T>
            <<<static_cast<unsigned>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock), kWarpsPerBlock * 32, 0, st>>>(
                pg, px, norm ? static_cast<const T*>(qg.raw_data()) : nullptr,
                norm ? static_cast<const T*>(kg.raw_data()) : nullptr, pr, static_cast<T*>(dqkv->raw_data()), d);
        ZT_CUDA_CHECK_LAUNCH();
      }
    }
    if (norm && (dq_gain || dk_gain)) {
      // [dq_gain | dk_gain] side by side: one column reduction over the tokens sums both.
      Tensor gains = Tensor::empty({2, s.D}, g.dtype(), g.device());
      column_sum<T, A>(dev, s.tokens, 2 * s.D, static_cast<T*>(gains.raw_data()), 1, GainGrad<T, A>{pg, px, pr, d});
      if (dq_gain) *dq_gain = gains.select(0, 0);
      if (dk_gain) *dk_gain = gains.select(0, 1);
    }
  });
}

}  // namespace zt::ops
