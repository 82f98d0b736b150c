// CPU kernels of the cross-entropy op (interface: cross_entropy_kernels.h, math:
// docs/cross_entropy.md). Rows are spread over OpenMP threads; within a row:
//
//   sweep 1  max and sum of the logits                 reads the row from memory
//   sweep 2  e_j = exp(x_j - m), d = sum e_j           re-reads it from the core's cache
//   sweep 3  g_j = e_j c - b (+ target correction)     writes the gradient
//
// A row of 50304 f32 logits is 197 KiB and stays in the core's L2 between sweeps, so memory
// sees one read of the logits and one write of the gradient. e_j goes straight into the
// gradient row when the gradient is f32 (in place or not), so exp runs once per element;
// bf16 rows keep e_j in a per-thread f32 row instead. With num_classes the sweeps cover a
// row's real-class prefix only; the padded columns are never read and their gradient is
// filled with zeros.
//
// Accumulation is f32 for f32/bf16 logits (explicit SIMD lanes) and f64 for f64 (scalar,
// std::exp: f64 is the reference dtype, not the fast one). Per-row scalars (lse, the loss
// terms) are combined in f64. No -ffast-math anywhere: -inf and NaN must keep their meaning.
//
// The f32 lanes are GCC/Clang vector extensions: 4 floats (SSE2, the x86-64 baseline) or 8
// (AVX2 + FMA), picked at run time from the CPU; ZTRAIN_CPU_SIMD=sse2 forces the baseline.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "ops/cross_entropy_kernels.h"

#pragma GCC diagnostic ignored "-Wpsabi"  // wide vectors only cross always-inline calls

namespace zt::ops::xent {

namespace {

template <class T>
using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

#define ZT_INLINE [[gnu::always_inline]] inline

template <class A, class T>
ZT_INLINE A widen(T v) {
  if constexpr (std::is_same_v<T, bf16>) return std::bit_cast<float>(static_cast<uint32_t>(v.bits) << 16);
  else return static_cast<A>(v);
}

template <class T, class A>
ZT_INLINE T narrow(A v) {
  if constexpr (std::is_same_v<T, bf16>) return bf16(static_cast<float>(v));
  else return static_cast<T>(v);
}

// ---- f32 lanes ------------------------------------------------------------------------
template <int W>
struct Vec;
template <>
struct Vec<4> {
  typedef float f __attribute__((vector_size(16)));
  typedef int32_t i __attribute__((vector_size(16)));
  typedef uint32_t u __attribute__((vector_size(16)));
  typedef uint16_t h __attribute__((vector_size(8)));
};
template <>
struct Vec<8> {
  typedef float f __attribute__((vector_size(32)));
  typedef int32_t i __attribute__((vector_size(32)));
  typedef uint32_t u __attribute__((vector_size(32)));
  typedef uint16_t h __attribute__((vector_size(16)));
};

template <int W>
ZT_INLINE typename Vec<W>::f splat(float v) {
  return typename Vec<W>::f{} + v;
}

template <int W>
ZT_INLINE typename Vec<W>::f load(const float* p) {
  typename Vec<W>::f v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <int W>
ZT_INLINE typename Vec<W>::f load(const bf16* p) {  // bf16 -> f32: the 16 bits become the high half
  typename Vec<W>::h h;
  std::memcpy(&h, static_cast<const void*>(p), sizeof h);
  return reinterpret_cast<typename Vec<W>::f>(__builtin_convertvector(h, typename Vec<W>::u) << 16);
}
template <int W>
ZT_INLINE void store(float* p, typename Vec<W>::f v) {
  std::memcpy(p, &v, sizeof v);
}
template <int W>
ZT_INLINE void store(bf16* p, typename Vec<W>::f v) {  // f32 -> bf16: nearest even, NaN kept quiet
  using U = typename Vec<W>::u;
  const U u = reinterpret_cast<U>(v);
  const U rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const U quiet_nan = (u >> 16) | 0x40u;
  const U bits = (u & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded;
  const typename Vec<W>::h h = __builtin_convertvector(bits, typename Vec<W>::h);
  std::memcpy(static_cast<void*>(p), &h, sizeof h);
}

template <int W>
ZT_INLINE float hmax(typename Vec<W>::f v) {
  float t[W];
  std::memcpy(t, &v, sizeof v);
  float m = t[0];
  for (int l = 1; l < W; ++l) m = t[l] > m ? t[l] : m;
  return m;
}
template <int W>
ZT_INLINE float hsum(typename Vec<W>::f v) {
  float t[W];
  std::memcpy(t, &v, sizeof v);
  float s = 0;
  for (int l = 0; l < W; ++l) s += t[l];
  return s;
}

// exp(x) for x <= 0 (every argument here is x - max or x - lse): range reduction
// x = k ln2 + r with |r| <= ln2/2, then a degree-7 Taylor polynomial (relative error ~1e-7,
// f32 rounding). Below -87 (including -inf: a masked logit) the result is exactly 0; NaN
// stays NaN. One formula for a float and for a vector of floats (V, with int lanes I).
template <class V, class I>
ZT_INLINE V exp_nonpositive_f32(V x) {
  const auto underflow = x < -87.0f;
  const V xc = underflow ? V{} - 87.0f : x;
  // Adding 1.5 * 2^23 rounds x / ln2 to an integer k that lands in the low mantissa bits.
  const V shifted = xc * 1.44269504088896341f + 12582912.0f;
  const V kf = shifted - 12582912.0f;
  const I k = std::bit_cast<I>(shifted) - 0x4B400000;
  const V r = (xc - kf * 0.693145751953125f) - kf * 1.428606765330187e-06f;  // Cody-Waite ln2 split
  V p = V{} + 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const V two_k = std::bit_cast<V>((k + 127) << 23);
  return underflow ? V{} : p * two_k;
}
ZT_INLINE float exp_nonpositive(float x) { return exp_nonpositive_f32<float, int32_t>(x); }
ZT_INLINE double exp_nonpositive(double x) { return std::exp(x); }
template <int W>
ZT_INLINE typename Vec<W>::f exp_nonpositive_v(typename Vec<W>::f x) {
  return exp_nonpositive_f32<typename Vec<W>::f, typename Vec<W>::i>(x);
}

// ---- the sweeps: full vectors of W, then a scalar tail with the same formula -------------
template <class T>
constexpr bool kVector = !std::is_same_v<T, double>;

// Sweep 1: m = max_j x_j and s = sum_j x_j in one read.
template <class T, int W, class A = acc_t<T>>
ZT_INLINE void max_and_sum(const T* x, int64_t n, A& m_out, A& s_out) {
  A m = -std::numeric_limits<A>::infinity(), s = 0;
  int64_t j = 0;
  if constexpr (kVector<T>) {
    using V = typename Vec<W>::f;
    V m0 = splat<W>(m), m1 = m0, s0 = {}, s1 = {};
    for (; j + 2 * W <= n; j += 2 * W) {
      const V a = load<W>(x + j), b = load<W>(x + j + W);
      m0 = a > m0 ? a : m0;
      m1 = b > m1 ? b : m1;
      s0 += a;
      s1 += b;
    }
    m = hmax<W>(m0 > m1 ? m0 : m1);
    s = hsum<W>(s0 + s1);
  }
  for (; j < n; ++j) {
    const A v = widen<A>(x[j]);
    m = v > m ? v : m;
    s += v;
  }
  m_out = m;
  s_out = s;
}

// Asks for the same offset of the next row while this one computes, so that the next row's
// read from memory overlaps this row's arithmetic (next: null for none). One call per vector
// of W elements; lines are 64 bytes.
template <class T, int W>
ZT_INLINE void prefetch_next(const T* next, int64_t j) {
  if (next && (j * static_cast<int64_t>(sizeof(T))) % 64 < W * static_cast<int64_t>(sizeof(T)))
    __builtin_prefetch(next + j, 0, 3);
}

// Sweep 2: d = sum_j exp(x_j - m); e_j stored to e when given (e may be x itself, in place:
// each vector is loaded before it is stored).
template <class T, int W, class A = acc_t<T>>
ZT_INLINE A sum_exp(const T* x, int64_t n, A m, A* e, const T* next) {
  A d = 0;
  int64_t j = 0;
  if constexpr (kVector<T>) {
    using V = typename Vec<W>::f;
    const V vm = splat<W>(m);
    V d0 = {};
    if (e) {
      for (; j + W <= n; j += W) {
        prefetch_next<T, W>(next, j);
        const V v = exp_nonpositive_v<W>(load<W>(x + j) - vm);
        store<W>(e + j, v);
        d0 += v;
      }
    } else {
      for (; j + W <= n; j += W) {
        prefetch_next<T, W>(next, j);
        d0 += exp_nonpositive_v<W>(load<W>(x + j) - vm);
      }
    }
    d = hsum<W>(d0);
  }
  for (; j < n; ++j) {
    const A v = exp_nonpositive(widen<A>(x[j]) - m);
    if (e) e[j] = v;
    d += v;
  }
  return d;
}

// Sweep 3: g_j = e_j c - b (e and g may be one buffer).
template <class T, int W, class A = acc_t<T>>
ZT_INLINE void write_grad(const A* e, T* g, int64_t n, A c, A b) {
  int64_t j = 0;
  if constexpr (kVector<T>) {
    const auto vc = splat<W>(c), vb = splat<W>(b);
    for (; j + W <= n; j += W) store<W>(g + j, load<W>(e + j) * vc - vb);
  }
  for (; j < n; ++j) g[j] = narrow<T>(e[j] * c - b);
}

// TP gradient: g_j = exp(x_j - m) c - b in one read and one write (x may be g: in place).
// m is the global max (a logit, exact in A) and c carries 1/d: exp(x - lse) would inherit
// lse's rounding in A (5e-4 relative at |x| ~ 1e4 in f32).
template <class T, int W, class A = acc_t<T>>
ZT_INLINE void write_grad_from_logits(const T* x, T* g, int64_t n, A m, A c, A b, const T* next) {
  int64_t j = 0;
  if constexpr (kVector<T>) {
    const auto vm = splat<W>(m), vc = splat<W>(c), vb = splat<W>(b);
    for (; j + W <= n; j += W) {
      prefetch_next<T, W>(next, j);
      store<W>(g + j, exp_nonpositive_v<W>(load<W>(x + j) - vm) * vc - vb);
    }
  }
  for (; j < n; ++j) g[j] = narrow<T>(exp_nonpositive(widen<A>(x[j]) - m) * c - b);
}

// ---- per-row work ----------------------------------------------------------------------

// The per-row numbers both paths share, from the global statistics (f64).
struct RowTerms {
  double lse, ce, z_row;
};
// ce = lse - (1-e) x_y - (e/V) S is summed as (1-e)(m - x_y) + log d [+ e (m - S/V)]: the
// differences to m are exact, where lse = m + log d rounds log d away for huge logits
// (all at 3e38: lse - x_y would be 0, not log V).
ZT_INLINE RowTerms row_terms(double m, double d, double x_y, double sum_x, const Params& p) {
  RowTerms r;
  r.lse = m + std::log(d);
  const double e = p.label_smoothing;
  r.ce = (1 - e) * (m - x_y) + std::log(d);
  // Without smoothing the term is absent, not 0 * sum: a masked (-inf) logit would make it NaN.
  if (e != 0) r.ce += e * (m - sum_x / static_cast<double>(p.classes()));
  r.z_row = p.z_loss_weight * r.lse * r.lse;
  return r;
}

// Loss terms of one row over its v real-class columns, and their gradient (when g) scaled
// by `scale` (the caller zeroes the padded columns past v). scratch: a row of f32 for bf16
// gradients.
template <class T, int W>
ZT_INLINE RowTerms fused_row(const T* x, T* g, float* scratch, int64_t v, int64_t y, const Params& p,
                             double scale, const T* next) {
  using A = acc_t<T>;
  A m, s;
  max_and_sum<T, W>(x, v, m, s);
  const A x_y = widen<A>(x[y]);  // read before sweep 2 may overwrite x (in place)
  A* e = nullptr;
  if (g) {
    if constexpr (std::is_same_v<T, A>) e = g;
    else e = scratch;
  }
  const A d = sum_exp<T, W>(x, v, m, e, next);
  const RowTerms r = row_terms(m, d, x_y, s, p);
  if (g) {
    const double c = scale * (1 + 2 * p.z_loss_weight * r.lse) / d;
    const double b = scale * p.label_smoothing / static_cast<double>(p.classes());
    write_grad<T, W>(e, g, v, static_cast<A>(c), static_cast<A>(b));
    // The target column: p_y (1 + 2 z lse) - (1 - e) - e/V, the z term additive.
    const A e_y = exp_nonpositive(static_cast<A>(x_y - m));
    g[y] = narrow<T>(static_cast<A>(e_y * c - b - scale * (1 - p.label_smoothing)));
  }
  return r;
}

// {m_r, d_r, x_y or 0, s_r} of one row of this shard; y_local outside [0, v): not ours.
template <class T, int W>
ZT_INLINE void stats_row(const T* x, int64_t v, int64_t y_local, acc_t<T>* out, const T* next) {
  using A = acc_t<T>;
  A m, s;
  max_and_sum<T, W>(x, v, m, s);
  // A shard that is all -inf (masked) contributes nothing: d_r = 0, not exp(-inf - -inf) = NaN.
  const A d = m == -std::numeric_limits<A>::infinity() ? A(0) : sum_exp<T, W>(x, v, m, static_cast<A*>(nullptr), next);
  out[0] = m;
  out[1] = d;
  out[2] = y_local >= 0 && y_local < v ? widen<A>(x[y_local]) : A(0);
  out[3] = s;
}

// This shard's gradient row (its v real-class columns) from the global max m, sum d and lse.
template <class T, int W>
ZT_INLINE void finish_row(const T* x, T* g, int64_t v, int64_t y_local, double m, double d, double lse,
                          const Params& p, double scale, const T* next) {
  using A = acc_t<T>;
  const double c = scale * (1 + 2 * p.z_loss_weight * lse) / d;
  const double b = scale * p.label_smoothing / static_cast<double>(p.classes());
  const bool owns_y = y_local >= 0 && y_local < v;
  const A x_y = owns_y ? widen<A>(x[y_local]) : A(0);  // read before x may be overwritten
  write_grad_from_logits<T, W>(x, g, v, static_cast<A>(m), static_cast<A>(c), static_cast<A>(b), next);
  if (owns_y) {
    const A e_y = exp_nonpositive(static_cast<A>(x_y - static_cast<A>(m)));
    g[y_local] = narrow<T>(static_cast<A>(e_y * c - b - scale * (1 - p.label_smoothing)));
  }
}

// One compiled copy of each row function per instruction set; the wide one carries the
// target attribute so its vectors are native registers.
template <class T>
struct RowFns {
  RowTerms (*fused)(const T*, T*, float*, int64_t, int64_t, const Params&, double, const T*);
  void (*stats)(const T*, int64_t, int64_t, acc_t<T>*, const T*);
  void (*finish)(const T*, T*, int64_t, int64_t, double, double, double, const Params&, double, const T*);
};

template <class T>
RowTerms fused_row_sse2(const T* x, T* g, float* s, int64_t v, int64_t y, const Params& p, double scale,
                        const T* next) {
  return fused_row<T, 4>(x, g, s, v, y, p, scale, next);
}
template <class T>
void stats_row_sse2(const T* x, int64_t v, int64_t y, acc_t<T>* out, const T* next) {
  stats_row<T, 4>(x, v, y, out, next);
}
template <class T>
void finish_row_sse2(const T* x, T* g, int64_t v, int64_t y, double m, double d, double lse, const Params& p,
                     double scale, const T* next) {
  finish_row<T, 4>(x, g, v, y, m, d, lse, p, scale, next);
}

#if defined(__x86_64__) && defined(__GNUC__)
#define ZT_XENT_AVX2 1
template <class T>
__attribute__((target("avx2,fma"))) RowTerms fused_row_avx2(const T* x, T* g, float* s, int64_t v, int64_t y,
                                                            const Params& p, double scale, const T* next) {
  return fused_row<T, 8>(x, g, s, v, y, p, scale, next);
}
template <class T>
__attribute__((target("avx2,fma"))) void stats_row_avx2(const T* x, int64_t v, int64_t y, acc_t<T>* out,
                                                        const T* next) {
  stats_row<T, 8>(x, v, y, out, next);
}
template <class T>
__attribute__((target("avx2,fma"))) void finish_row_avx2(const T* x, T* g, int64_t v, int64_t y, double m, double d,
                                                         double lse, const Params& p, double scale, const T* next) {
  finish_row<T, 8>(x, g, v, y, m, d, lse, p, scale, next);
}
#endif

bool use_avx2() {
#ifdef ZT_XENT_AVX2
  const char* forced = std::getenv("ZTRAIN_CPU_SIMD");
  if (forced && std::strcmp(forced, "sse2") == 0) return false;
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

template <class T>
RowFns<T> row_fns() {
#ifdef ZT_XENT_AVX2
  if (use_avx2()) return {&fused_row_avx2<T>, &stats_row_avx2<T>, &finish_row_avx2<T>};
#endif
  return {&fused_row_sse2<T>, &stats_row_sse2<T>, &finish_row_sse2<T>};
}

// ---- whole tensors ---------------------------------------------------------------------

enum class RowKind { normal, ignored, bad };
RowKind classify(int64_t y, const Params& p) {
  if (y == p.ignore_index) return RowKind::ignored;
  if (y < 0 || y >= p.classes()) return RowKind::bad;
  return RowKind::normal;
}

std::vector<int64_t> host_targets(const Tensor& targets) { return targets.to_vector<int64_t>(); }

void check_common(const Tensor& logits, const Tensor& targets, const Params& p) {
  ZT_CHECK(logits.device().is_cpu() && targets.device().is_cpu(), "cross_entropy cpu kernel: tensors on ",
           logits.device().str(), " and ", targets.device().str());
  ZT_CHECK(logits.is_contiguous() && logits.dim() == 2 && logits.size(0) == p.rows &&
               logits.size(1) == p.vocab_local && targets.numel() == p.rows,
           "cross_entropy cpu kernel: logits ", shape_str(logits.shape()), " / targets ",
           shape_str(targets.shape()), " do not match rows ", p.rows, ", vocab_local ", p.vocab_local);
}

// Ignored rows: zeros; out-of-range targets: NaN loss terms, zero gradient row, flag raised.
template <class T>
void write_special_row(RowKind kind, int64_t i, int64_t v, Outputs& out, T* g) {
  using A = acc_t<T>;
  const A fill = kind == RowKind::bad ? std::numeric_limits<A>::quiet_NaN() : A(0);
  out.row_loss.data<A>()[i] = out.lse.data<A>()[i] = out.z_row.data<A>()[i] = fill;
  if (g) std::fill(g, g + v, narrow<T>(A(0)));
}

// The padded columns [from, to) of a gradient row: exactly 0.
template <class T>
void zero_padding(T* g, int64_t from, int64_t to) {
  if (g && from < to) std::fill(g + from, g + to, narrow<T>(acc_t<T>(0)));
}

template <class T>
void write_row_terms(const RowTerms& r, int64_t i, Outputs& out) {
  using A = acc_t<T>;
  out.row_loss.data<A>()[i] = static_cast<A>(r.ce + r.z_row);
  out.lse.data<A>()[i] = static_cast<A>(r.lse);
  out.z_row.data<A>()[i] = static_cast<A>(r.z_row);
}

// ---- logit soft-capping: the row is capped into per-thread rows of A, the row functions
// run on those (as A logits, in place for the gradient), and the gradient is chain-ruled
// back onto x. -------------------------------------------------------------------------

// Per-thread rows for a capped row: c_j = softcap(x_j) and w_j = dc_j/dx_j over v columns.
template <class A>
struct CapScratch {
  std::vector<A> c, w;
  explicit CapScratch(int64_t v) : c(v), w(v) {}
};

// Fills cs with the capped prefix [0, v) of row x; returns cs.c.data().
template <class T, class A = acc_t<T>>
A* cap_row(const T* x, int64_t v, double cap, CapScratch<A>& cs) {
  const A a_cap = static_cast<A>(cap);
  for (int64_t j = 0; j < v; ++j) cs.c[j] = softcap<A>(widen<A>(x[j]), a_cap, &cs.w[j]);
  return cs.c.data();
}

// g_j = (d loss / d c_j, left in cs.c by the row function) * dc_j/dx_j over v columns.
template <class T, class A = acc_t<T>>
void uncap_grad(const CapScratch<A>& cs, T* g, int64_t v) {
  for (int64_t j = 0; j < v; ++j) g[j] = narrow<T>(static_cast<A>(cs.c[j] * cs.w[j]));
}

template <class T>
void fused_typed(const Tensor& logits, const Tensor& targets, const Params& p, Outputs& out) {
  using A = acc_t<T>;
  const std::vector<int64_t> tg = host_targets(targets);
  const int64_t n = p.rows, v = p.vocab_local, valid = p.valid_local();  // row stride, real classes
  const T* x_all = logits.data<T>();
  const bool with_grad = out.grad.defined();
  T* g_all = with_grad ? out.grad.data<T>() : nullptr;
  const double scale = with_grad ? out.grad_scale.item() : 0.0;
  const RowFns<T> fns = row_fns<T>();
  int bad = 0;

  const bool capped = p.logit_softcap > 0;
  const RowFns<A> cap_fns = row_fns<A>();

#pragma omp parallel
  {
    // e_j needs a row of f32 beside a bf16 gradient; f32/f64 gradients hold e_j themselves.
    std::vector<float> scratch(with_grad && !std::is_same_v<T, A> && !capped ? v : 0);
    CapScratch<A> cs(capped ? valid : 0);
#pragma omp for schedule(static) reduction(| : bad)
    for (int64_t i = 0; i < n; ++i) {
      T* g = with_grad ? g_all + i * v : nullptr;
      const RowKind kind = classify(tg[i], p);
      if (kind != RowKind::normal) {
        write_special_row<T>(kind, i, v, out, g);
        bad |= kind == RowKind::bad;
        continue;
      }
      if (capped) {
        A* c = cap_row<T>(x_all + i * v, valid, p.logit_softcap, cs);
        write_row_terms<T>(cap_fns.fused(c, g ? c : nullptr, nullptr, valid, tg[i], p, scale, nullptr), i, out);
        if (g) uncap_grad<T>(cs, g, valid);
      } else {
        const T* next = i + 1 < n ? x_all + (i + 1) * v : nullptr;
        write_row_terms<T>(fns.fused(x_all + i * v, g, scratch.data(), valid, tg[i], p, scale, next), i, out);
      }
      zero_padding(g, valid, v);
    }
  }
  if (out.bad_target && bad) *out.bad_target = 1;
}

template <class T>
void local_stats_typed(const Tensor& logits, const Tensor& targets, const Params& p, Tensor& stats) {
  using A = acc_t<T>;
  const std::vector<int64_t> tg = host_targets(targets);
  const int64_t n = p.rows, v = p.vocab_local, valid = p.valid_local();
  ZT_CHECK(stats.dtype() == dtype_of<A>::value && stats.numel() == 4 * n && stats.is_contiguous(),
           "cross_entropy local_stats: stats must be [", n, ", 4] ", dtype_name(dtype_of<A>::value));
  const T* x_all = logits.data<T>();
  A* st = stats.data<A>();
  const RowFns<T> fns = row_fns<T>();
  const bool capped = p.logit_softcap > 0;
  const RowFns<A> cap_fns = row_fns<A>();
#pragma omp parallel
  {
    CapScratch<A> cs(capped ? valid : 0);
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      if (tg[i] == p.ignore_index) {
        std::fill(st + 4 * i, st + 4 * i + 4, A(0));
        continue;
      }
      // Over the real-class columns only: a shard of padding only gives {-inf, 0, 0, 0}.
      if (capped)
        cap_fns.stats(cap_row<T>(x_all + i * v, valid, p.logit_softcap, cs), valid, tg[i] - p.vocab_offset,
                      st + 4 * i, nullptr);
      else
        fns.stats(x_all + i * v, valid, tg[i] - p.vocab_offset, st + 4 * i, i + 1 < n ? x_all + (i + 1) * v : nullptr);
    }
  }
}

template <class T>
void finish_typed(const Tensor& logits, const Tensor& targets, const Tensor& gathered, const Params& p,
                  Outputs& out) {
  using A = acc_t<T>;
  const std::vector<int64_t> tg = host_targets(targets);
  const int64_t n = p.rows, v = p.vocab_local, valid = p.valid_local();
  ZT_CHECK(gathered.dim() == 3 && gathered.size(1) == n && gathered.size(2) == 4 && gathered.is_contiguous() &&
               gathered.dtype() == dtype_of<A>::value,
           "cross_entropy finish: gathered stats of shape ", shape_str(gathered.shape()), " ",
           dtype_name(gathered.dtype()), ", expected [P, ", n, ", 4] ", dtype_name(dtype_of<A>::value));
  const int64_t ranks = gathered.size(0);
  const A* st = gathered.data<A>();
  const T* x_all = logits.data<T>();
  const bool with_grad = out.grad.defined();
  T* g_all = with_grad ? out.grad.data<T>() : nullptr;
  const double scale = with_grad ? out.grad_scale.item() : 0.0;
  const RowFns<T> fns = row_fns<T>();
  const bool capped = p.logit_softcap > 0;
  const RowFns<A> cap_fns = row_fns<A>();
  int bad = 0;

#pragma omp parallel reduction(| : bad)
  {
    CapScratch<A> cs(capped && with_grad ? valid : 0);
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      T* g = with_grad ? g_all + i * v : nullptr;
      const RowKind kind = classify(tg[i], p);
      if (kind != RowKind::normal) {
        write_special_row<T>(kind, i, v, out, g);
        bad |= kind == RowKind::bad;
        continue;
      }
      // m = max m_r; d = sum d_r exp(m_r - m); x_y from its owner (others sent 0); S = sum s_r.
      double m = -std::numeric_limits<double>::infinity();
      for (int64_t r = 0; r < ranks; ++r) m = std::max(m, static_cast<double>(st[(r * n + i) * 4]));
      double d = 0, x_y = 0, sum_x = 0;
      for (int64_t r = 0; r < ranks; ++r) {
        const A* s = st + (r * n + i) * 4;
        if (s[1] != 0) d += s[1] * std::exp(static_cast<double>(s[0]) - m);
        x_y += s[2];
        sum_x += s[3];
      }
      const RowTerms rt = row_terms(m, d, x_y, sum_x, p);
      write_row_terms<T>(rt, i, out);
      if (g && capped) {
        A* c = cap_row<T>(x_all + i * v, valid, p.logit_softcap, cs);
        cap_fns.finish(c, c, valid, tg[i] - p.vocab_offset, m, d, rt.lse, p, scale, nullptr);
        uncap_grad<T>(cs, g, valid);
        zero_padding(g, valid, v);
      } else if (g) {
        fns.finish(x_all + i * v, g, valid, tg[i] - p.vocab_offset, m, d, rt.lse, p, scale,
                   i + 1 < n ? x_all + (i + 1) * v : nullptr);
        zero_padding(g, valid, v);
      }
    }
  }
  if (out.bad_target && bad) *out.bad_target = 1;
}

}  // namespace

void count_rows_cpu(const Tensor& targets, int64_t ignore_index, bool mean, Tensor& count, Tensor& grad_scale) {
  const std::vector<int64_t> tg = host_targets(targets);
  const int64_t c = std::count_if(tg.begin(), tg.end(), [&](int64_t y) { return y != ignore_index; });
  count.fill_(static_cast<double>(c));
  grad_scale.fill_(!mean ? 1.0 : c == 0 ? 0.0 : 1.0 / static_cast<double>(c));
}

void fused_cpu(const Tensor& logits, const Tensor& targets, const Params& p, Outputs& out) {
  check_common(logits, targets, p);
  ZT_CHECK(p.vocab_global == p.vocab_local && p.vocab_offset == 0,
           "cross_entropy fused kernel: one shard must hold the whole vocabulary");
  dispatch_types(logits, targets, "cross_entropy",
                 [&](auto tag, auto) { fused_typed<decltype(tag)>(logits, targets, p, out); });
}

void local_stats_cpu(const Tensor& logits, const Tensor& targets, const Params& p, Tensor& stats) {
  check_common(logits, targets, p);
  dispatch_types(logits, targets, "cross_entropy",
                 [&](auto tag, auto) { local_stats_typed<decltype(tag)>(logits, targets, p, stats); });
}

void finish_cpu(const Tensor& logits, const Tensor& targets, const Tensor& gathered_stats, const Params& p,
                Outputs& out) {
  check_common(logits, targets, p);
  dispatch_types(logits, targets, "cross_entropy",
                 [&](auto tag, auto) { finish_typed<decltype(tag)>(logits, targets, gathered_stats, p, out); });
}

void reduce_rows_cpu(const Tensor& row_loss, const Tensor& z_row, const Tensor& grad_scale, Tensor& loss,
                     Tensor& ce_sum, Tensor& z_sum) {
  const std::vector<double> rl = row_loss.to_vector<double>(), zr = z_row.to_vector<double>();
  double sum_loss = 0, sum_z = 0;
  for (size_t i = 0; i < rl.size(); ++i) sum_loss += rl[i], sum_z += zr[i];
  if (loss.defined()) loss.fill_(sum_loss * grad_scale.item());
  ce_sum.fill_(sum_loss - sum_z);
  z_sum.fill_(sum_z);
}

}  // namespace zt::ops::xent
