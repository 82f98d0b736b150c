// Every op case as one row of a table (in the spirit of ggml's test-backend-ops): the op, its
// input shapes, the dtype, its options, which inputs are differentiable and its tolerances.
// Each row runs as two tests, named after the row (BackendOps/Case.<test>/gelu_f32_123x45):
//   CpuMatchesF64   on the CPU: f32 and bf16 rows against the same op in f64 on the same
//                   (rounded) inputs, output and every input gradient; f64 rows get a
//                   finite-difference gradcheck on a sample of each input's elements.
//   CudaMatchesCpu  on the GPU against the CPU, output and every input gradient, f32 to 1e-5
//                   relative (cuBLASLt and the kernels accumulate in f32 in another order),
//                   bf16 to 1e-2 (both sides round the same f32 values once), f64 to 1e-12.
//                   Before the GPU run the allocator's free lists are stocked with NaN-filled
//                   blocks of the outputs' sizes, so an element a kernel fails to write shows
//                   up as NaN (close_rel rejects NaN). Skips without a GPU.
// A new op or kernel is one more row in cases(). Checks that are no comparison (error
// messages, counters, allocator behaviour) stay in tests/ops/ops_cuda_test.cpp and the op's
// own test file.
#include <gtest/gtest.h>

#include <cmath>
#include <optional>

#include "framework/device.h"
#include "ops/attention.h"
#include "ops/cross_entropy.h"
#include "ops/elementwise.h"
#include "ops/embedding.h"
#include "ops/gelu.h"
#include "ops/layernorm.h"
#include "ops/linear_cross_entropy.h"
#include "ops/matmul.h"
#include "ops/mlp.h"
#include "ops/reduce.h"
#include "ops/rmsnorm.h"
#include "ops/rope.h"
#include "ops/shape_ops.h"
#include "ops/softmax.h"
#include "ops/swiglu.h"
#include "tests/support/check.h"

namespace zt {
namespace {

using test::VarFn;

// One input of a row: normal(mean, scale) floats, or (vocab > 0) integer ids in [0, vocab).
struct Input {
  Shape shape;
  double scale = 1.0, mean = 0.0;
  int64_t vocab = 0;
  DType id_dtype = DType::i64;
};

Input ids(Shape shape, int64_t vocab, DType dtype) { return {std::move(shape), 1.0, 0.0, vocab, dtype}; }

struct OpCase {
  std::string op;  // the op and its options: the name's stem, e.g. "matmul_tn"
  DType dtype;
  VarFn f;
  std::vector<Input> inputs;
  std::vector<bool> differentiable = {};  // empty: every floating input
  // > 0: compare elementwise, |got - want| <= atol + tol |want|, instead of norm-wise: for
  // results that are zero in exact arithmetic, where both sides hold only rounding noise.
  double atol = 0;
  // > 0: the relative tolerance of CpuMatchesF64 (default 1e-5 for f32, 2e-2 for bf16), for
  // rows whose math is ill-conditioned, where f32 rounding grows beyond a few ulps.
  double cpu_tol = 0;
  std::optional<ops::AttentionBackend> attention = std::nullopt;  // set for both runs, then restored
};

const DType kFloatTypes[] = {DType::f32, DType::bf16, DType::f64};

using Binary = Variable (*)(const Variable&, const Variable&);

std::vector<OpCase> cases() {
  std::vector<OpCase> rows;
  auto row = [&](OpCase c) { rows.push_back(std::move(c)); };

  for (DType t : kFloatTypes) {
    // matmul: every transpose combination, 2-D and batched, and [..., K] x [K, N].
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        const int64_t M = 37, K = 53, N = 29;
        const std::string op = std::string("matmul_") + (ta ? "t" : "n") + (tb ? "t" : "n");
        auto f = [ta, tb](const auto& v) { return ops::matmul(v[0], v[1], ta, tb); };
        row({op, t, f, {{ta ? Shape{K, M} : Shape{M, K}}, {tb ? Shape{N, K} : Shape{K, N}}}});
        row({op, t, f, {{ta ? Shape{3, K, M} : Shape{3, M, K}}, {tb ? Shape{3, N, K} : Shape{3, K, N}}}});
      }
    row({"matmul", t, [](const auto& v) { return ops::matmul(v[0], v[1]); }, {{{2, 5, 64}}, {{64, 96}}}});

    // linear; odd sizes: unaligned rows for cuBLASLt (and its bias epilogue).
    auto linear = [](const auto& v) { return ops::linear(v[0], v[1], v[2]); };
    row({"linear", t, linear, {{{4, 33, 96}}, {{200, 96}}, {{200}}}});
    row({"linear_nobias", t, [](const auto& v) { return ops::linear(v[0], v[1]); }, {{{77, 48}}, {{31, 48}}}});
    row({"linear", t, linear, {{{13, 7}}, {{5, 7}}, {{5}}}});
    // linear with a residual (on CUDA read by the product as cuBLASLt's C): odd widths, 3-D
    // inputs, with and without bias (matmul_cuda_test.cpp checks which shapes take the addend).
    auto linear_residual = [](const auto& v) { return ops::linear(v[0], v[1], v[2], v[3]); };
    auto linear_residual_nobias = [](const auto& v) { return ops::linear(v[0], v[1], Variable(), v[2]); };
    row({"linear_residual", t, linear_residual, {{{37, 45}}, {{29, 45}}, {{29}}, {{37, 29}}}});
    row({"linear_residual_nobias", t, linear_residual_nobias, {{{37, 45}}, {{29, 45}}, {{37, 29}}}});
    row({"linear_residual", t, linear_residual, {{{3, 5, 45}}, {{29, 45}}, {{29}}, {{3, 5, 29}}}});
    row({"linear_residual", t, linear_residual, {{{2, 33, 96}}, {{64, 96}}, {{64}}, {{2, 33, 64}}}});
    row({"linear_residual_nobias", t, linear_residual_nobias, {{{2, 33, 96}}, {{64, 96}}, {{2, 33, 64}}}});

    // add, sub, mul: same shape, row broadcast, bias broadcast; columns in whole 16-byte packs
    // take the packed column reduction for b's gradient (f32, bf16), over one slab and many.
    for (const auto& op : {std::pair<const char*, Binary>{"add", ops::add}, {"sub", ops::sub}, {"mul", ops::mul}}) {
      const char* name = op.first;  // no structured bindings: clang 14 cannot capture them
      auto f = [fn = op.second](const auto& v) { return fn(v[0], v[1]); };
      row({name, t, f, {{{17, 33}}, {{17, 33}}}});
      row({name, t, f, {{{4, 17, 33}}, {{17, 33}}}});
      row({name, t, f, {{{300, 65}}, {{65}}}});
      row({name, t, f, {{{37, 64}}, {{64}}}});
      row({name, t, f, {{{3000, 264}}, {{264}}}});
    }
    row({"scale", t, [](const auto& v) { return ops::scale(v[0], -0.37); }, {{{1000, 3}}}});

    // sum, mean: inputs with a nonzero mean (a zero-mean sum of many values lands near 0 now
    // and then, where both sides hold only their summation order's rounding).
    row({"sum", t, [](const auto& v) { return ops::sum(v[0]); }, {{{333, 71}, 1.0, 0.5}}});
    row({"mean", t, [](const auto& v) { return ops::mean(v[0]); }, {{{100003}, 1.0, -0.25}}});

    // embedding: few rows, many ids (every row collects several gradient rows); 4096 ids on 3
    // and on 50 rows: runs of one id across many of the CUDA backward's chunks of sorted ids,
    // rows of 16-byte loads (768).
    for (DType id_type : {DType::i32, DType::i64}) {
      auto f = [](const auto& v) { return ops::embedding(v[0], v[1]); };
      row({"embedding", t, f, {{{13, 40}}, ids({6, 50}, 13, id_type)}, {true, false}});
      row({"embedding", t, f, {{{97, 3}}, ids({200}, 97, id_type)}, {true, false}});
      row({"embedding", t, f, {{{3, 40}}, ids({4096}, 3, id_type)}, {true, false}});
      row({"embedding", t, f, {{{50, 768}}, ids({4, 256}, 50, id_type)}, {true, false}});
    }

    // layernorm: 768, 256, 1024 and 8 (bf16; 256 also f32) take the packed backward kernel.
    // C = 1: y = beta and dx = 0 exactly; C = 2: x_hat = +-1 and dx = 0 exactly too. Both sides
    // then hold only rounding noise (times rstd, up to ~316): compared with an atol.
    auto layernorm = [](const auto& v) { return ops::layernorm(v[0], v[1], v[2]); };
    // Against f64 the f32 dx of C = 2 is also ill-conditioned (rstd up to ~316 amplifies the
    // rounding of x - mean): 1e-3 there.
    for (int64_t C : {768, 37, 2, 1, 256, 1024, 8})
      row({"layernorm", t, layernorm, {{{3, 41, C}, 2.0}, {{C}}, {{C}}}, {}, C <= 2 ? 1e-3 : 0,
           C <= 2 && t == DType::f32 ? 1e-3 : 0});
    // A residual block's LayerNorm: x = a + b feeds the LayerNorm and the residual add, whose
    // gradient the LayerNorm's backward folds into dx (packed kernel at 768 and 256, the plain
    // one at 37).
    auto ln_residual = [](const auto& v) {
      const Variable x = ops::add(v[0], v[3]);
      return ops::add(ops::layernorm(x, v[1], v[2]), x);
    };
    for (int64_t C : {768, 37, 256})
      if (t != DType::f64 || C != 768)  // f64 has no packed kernel; its gradcheck at 768 costs seconds
        row({"layernorm_residual", t, ln_residual, {{{3, 41, C}, 2.0}, {{C}}, {{C}}, {{3, 41, C}}}});
    // More rows than the packed kernel's warps: each warp strides over several rows (and
    // prefetches the next; the last stride has none).
    if (t != DType::f64)
      for (int64_t C : {64, 768}) row({"layernorm", t, layernorm, {{{5003, C}}, {{C}}, {{C}}}});

    // rmsnorm: as layernorm's rows (768, 256, 1024 and 8 take the packed kernels in bf16; 256
    // also in f32). C = 1 is left out: dx is then ~eps / x^2, all rounding noise.
    auto rmsnorm = [](const auto& v) { return ops::rmsnorm(v[0], v[1]); };
    for (int64_t C : {768, 37, 2, 256, 1024, 8})
      row({"rmsnorm", t, rmsnorm, {{{3, 41, C}, 2.0, 0.5}, {{C}}}});
    // A pre-norm residual block: the RMSNorm's backward folds the residual add's gradient into dx.
    auto rms_residual = [](const auto& v) {
      const Variable x = ops::add(v[0], v[2]);
      return ops::add(ops::rmsnorm(x, v[1]), x);
    };
    for (int64_t C : {768, 37, 256})
      if (t != DType::f64 || C != 768)
        row({"rmsnorm_residual", t, rms_residual, {{{3, 41, C}, 2.0}, {{C}}, {{3, 41, C}}}});
    if (t != DType::f64)  // the packed backward's warps stride over several rows (768 as layernorm's: seconds on the CPU)
      row({"rmsnorm", t, rmsnorm, {{{5003, 64}}, {{64}}}});

    // swiglu: F = 45 (no 16-byte packs), 64 (packs in every dtype), 4 (packs in f32 only).
    auto swiglu = [](const auto& v) { return ops::swiglu(v[0]); };
    for (const Shape& s : {Shape{123, 90}, Shape{7, 3, 128}, Shape{5, 8}}) row({"swiglu", t, swiglu, {{s, 2.0}}});

    // qk_norm_rope: MHA and GQA layouts, QK-norm and RoPE together and alone, head dims below
    // and past a warp's 32 lanes, positions up to 99 (f32 angles), an odd head dim without RoPE.
    struct Rope {
      int64_t B, T, H, Hkv, D;
      double theta;
      bool norm;
    };
    for (const Rope& r : {Rope{2, 9, 4, 4, 8, 10000.0, true}, Rope{2, 9, 4, 2, 64, 10000.0, true},
                          Rope{1, 33, 4, 1, 128, 500000.0, true}, Rope{2, 9, 4, 2, 64, 10000.0, false},
                          Rope{2, 9, 4, 2, 64, 0.0, true}, Rope{1, 100, 2, 1, 16, 10000.0, true},
                          Rope{2, 5, 3, 1, 5, 0.0, true}}) {
      const Shape qkv{r.B, r.T, (r.H + 2 * r.Hkv) * r.D};
      const std::string op = std::string("qk_norm_rope") + (r.norm ? "_norm" : "") + (r.theta > 0 ? "_rope" : "") +
                             "_h" + std::to_string(r.H) + "_kv" + std::to_string(r.Hkv);
      if (r.norm)
        row({op, t,
             [r](const auto& v) { return ops::qk_norm_rope(v[0], r.H, r.Hkv, r.theta, v[1], v[2]); },
             {{qkv, 2.0}, {{r.D}}, {{r.D}}}});
      else
        row({op, t, [r](const auto& v) { return ops::qk_norm_rope(v[0], r.H, r.Hkv, r.theta, Variable(), Variable()); },
             {{qkv, 2.0}}});
    }

    row({"gelu", t, [](const auto& v) { return ops::gelu(v[0]); }, {{{123, 45}, 3.0}}});
    for (int64_t C : {1, 37, 1000, 3000})
      row({"softmax", t, [](const auto& v) { return ops::softmax(v[0]); }, {{{7, C}, 3.0}}});

    // causal_attention. (T = 1 is left out: dq and dk are then zero in exact arithmetic.)
    // D = 64 and 32 in bf16 take the flash kernels; 16 and 8 the unfused path. At T = 2 the
    // first query's dq and dk are zero in exact arithmetic and the second's are P1 P2 (dP1 -
    // dP2) times a key difference, which the inputs can make as small as the bf16 rounding of
    // delta = rowsum(dO o O): both sides then hold mostly noise (norm-wise errors of 1-4% on
    // some inputs). bf16 compares elementwise with an absolute floor there.
    for (const Shape& s : {Shape{2, 3, 67, 16}, Shape{1, 2, 130, 64}, Shape{1, 2, 2, 8}, Shape{2, 2, 65, 32}})
      row({"attention", t, [](const auto& v) { return ops::causal_attention(v[0], v[1], v[2]); }, {{s}, {s}, {s}},
           {}, t == DType::bf16 && s[2] <= 2 ? 3e-2 : 0});
    // causal_attention with grouped-query heads (k, v [B, Hkv, T, D]): the composite on every
    // device (our flash kernels take no grouped heads), for D = 64 in bf16 too. Hkv = H / 2 and
    // multi-query (Hkv = 1).
    for (const auto& [q, Hkv] : {std::pair{Shape{2, 4, 67, 16}, int64_t{2}}, std::pair{Shape{1, 4, 130, 64}, int64_t{1}}}) {
      if (t == DType::f64 && q[3] == 64) continue;  // its gradcheck costs seconds; the 16 one covers f64
      const Shape kv{q[0], Hkv, q[2], q[3]};
      row({"attention_gqa", t, [](const auto& v) { return ops::causal_attention(v[0], v[1], v[2]); },
           {{q}, {kv}, {kv}}});
    }

    // mlp: hidden a multiple of 8 takes cuBLASLt's GELU epilogues in f32 and bf16
    // (ops_cuda_test.cpp counts that); hidden 100 the unfused path.
    struct Mlp {
      Shape x;
      int64_t hidden, out;
      bool biases;
    };
    for (const Mlp& m : {Mlp{{2, 33, 96}, 384, 96, true}, Mlp{{5, 64}, 256, 48, false}, Mlp{{3, 7, 32}, 100, 32, true}}) {
      const int64_t in = m.x.back();
      auto f = [biases = m.biases](const auto& v) {
        return biases ? ops::mlp(v[0], v[1], v[2], v[3], v[4]) : ops::mlp(v[0], v[1], Variable(), v[3], Variable());
      };
      row({m.biases ? "mlp" : "mlp_nobias", t, f,
           {{m.x}, {{m.hidden, in}, 1 / std::sqrt(double(in))}, {{m.hidden}}, {{m.out, m.hidden}, 1 / std::sqrt(double(m.hidden))},
            {{m.out}}},
           {true, true, m.biases, true, m.biases}});
      // The same with a residual on the output product.
      Shape r_shape = m.x;
      r_shape.back() = m.out;
      auto fr = [biases = m.biases](const auto& v) {
        return biases ? ops::mlp(v[0], v[1], v[2], v[3], v[4], v[5])
                      : ops::mlp(v[0], v[1], Variable(), v[3], Variable(), v[5]);
      };
      row({m.biases ? "mlp_residual" : "mlp_residual_nobias", t, fr,
           {{m.x}, {{m.hidden, in}, 1 / std::sqrt(double(in))}, {{m.hidden}}, {{m.out, m.hidden}, 1 / std::sqrt(double(m.hidden))},
            {{m.out}}, {r_shape}},
           {true, true, m.biases, true, m.biases, true}});
    }

    // GPT's head split and merge: reshape, transpose (a strided copy on the device), split_last.
    row({"heads", t,
         [](const auto& v) {
           std::vector<Variable> parts = ops::split_last(v[0], 3);
           Variable q = ops::transpose(ops::reshape(parts[0], {2, 9, 4, 8}), 1, 2);
           Variable k = ops::transpose(ops::reshape(parts[1], {2, 9, 4, 8}), 1, 2);
           Variable prod = ops::mul(q, ops::scale(k, 0.5));
           return ops::add(ops::reshape(ops::transpose(prod, 1, 2), {2, 9, 32}), parts[2]);
         },
         {{{2, 9, 96}}}});
    row({"transpose02", t, [](const auto& v) { return ops::transpose(v[0], 0, 2); }, {{{5, 6, 7, 3}}}});

    // cross_entropy with the logit soft-cap (on CUDA the row-per-CTA kernels apply it), with
    // padding columns, smoothing and z-loss; and the fused head (linear_cross_entropy): chunks
    // of 16 rows over 70 (a last partial chunk) with every option, and the default chunk.
    auto xent_capped = [](const auto& v) {
      ops::CrossEntropyOptions o;
      o.label_smoothing = 0.1;
      o.z_loss_weight = 1e-2;
      o.logit_softcap = 5;
      o.num_classes = 990;
      o.inplace_grad = false;
      return ops::cross_entropy(v[0], v[1].tensor(), o).loss;
    };
    row({"cross_entropy_softcap", t, xent_capped, {{{64, 1000}, 3.0}, ids({64}, 990, DType::i64)}, {true, false}});
    auto fused_head = [](const auto& v) {
      ops::CrossEntropyOptions o;
      o.label_smoothing = 0.1;
      o.z_loss_weight = 1e-2;
      o.logit_softcap = 5;
      o.num_classes = v[1].shape()[0] - 10;  // the last 10 weight rows are padding
      return ops::linear_cross_entropy(v[0], v[1], v[2].tensor(), o, 16).loss;
    };
    // f64 (the gradcheck: two runs per sampled element) on a smaller head.
    if (t == DType::f64)
      row({"linear_cross_entropy", t, fused_head, {{{21, 8}}, {{40, 8}, 0.3}, ids({21}, 30, DType::i32)},
           {true, true, false}});
    else
      row({"linear_cross_entropy", t, fused_head, {{{70, 48}}, {{300, 48}, 0.3}, ids({70}, 290, DType::i32)},
           {true, true, false}});
    auto fused_head_sum = [](const auto& v) {
      ops::CrossEntropyOptions o;
      o.reduction = ops::Reduction::sum;
      o.z_loss_weight = 1e-4;
      return ops::linear_cross_entropy(v[0], v[1], v[2].tensor(), o).loss;
    };
    if (t != DType::f64)  // f64: gradchecked in linear_cross_entropy_test.cpp; here it would cost seconds
      row({"linear_cross_entropy_sum", t, fused_head_sum, {{{33, 64}}, {{512, 64}, 0.2}, ids({33}, 512, DType::i64)},
           {true, true, false}});
  }

  // causal_self_attention under each backend choice: bf16 takes cuDNN's fused attention (D a
  // multiple of 8, where cuDNN takes the shape) or our flash kernels (D = 32 or 64); f32 and
  // other head sizes the split / causal_attention / merge composite. Sequence lengths around
  // the 64-row blocks. (tests/ops/attention_cudnn_test.cpp checks which backend ran.)
  struct SelfAttention {
    int64_t B, T, C, H;
  };
  for (ops::AttentionBackend b : {ops::AttentionBackend::cudnn, ops::AttentionBackend::flash})
    for (DType t : {DType::bf16, DType::f32})
      for (const SelfAttention& c : {SelfAttention{2, 3, 64, 2}, SelfAttention{1, 63, 128, 2},
                                     SelfAttention{2, 64, 128, 4}, SelfAttention{1, 130, 256, 4},
                                     SelfAttention{1, 257, 128, 2}, SelfAttention{1, 40, 96, 6}})
        row({std::string("self_attention_") + ops::attention_backend_name(b) + "_h" + std::to_string(c.H), t,
             [H = c.H](const auto& v) { return ops::causal_self_attention(v[0], H); }, {{{c.B, c.T, 3 * c.C}}}, {}, 0, 0,
             b});

  // causal_self_attention with grouped-query heads (qkv [B, T, (H + 2 Hkv) D]) under the cudnn
  // and unfused choices: bf16 takes cuDNN's fused attention where it takes the shape (grouped
  // heads never take our flash kernels), f32 and the rest the composite. Hkv = H / 2, H / 3 and
  // multi-query; T on and off the 64/128 tiles.
  struct GroupedSelfAttention {
    int64_t B, T, H, Hkv, D;
  };
  for (ops::AttentionBackend b : {ops::AttentionBackend::cudnn, ops::AttentionBackend::unfused})
    for (DType t : {DType::bf16, DType::f32})
      for (const GroupedSelfAttention& c : {GroupedSelfAttention{1, 128, 4, 2, 64}, GroupedSelfAttention{1, 130, 4, 1, 32},
                                            GroupedSelfAttention{2, 64, 8, 2, 32}, GroupedSelfAttention{1, 67, 6, 2, 16}})
        row({std::string("self_attention_") + ops::attention_backend_name(b) + "_h" + std::to_string(c.H) + "kv" +
                 std::to_string(c.Hkv),
             t, [H = c.H, Hkv = c.Hkv](const auto& v) { return ops::causal_self_attention(v[0], H, Hkv); },
             {{{c.B, c.T, (c.H + 2 * c.Hkv) * c.D}}}, {}, 0, 0, b});

  // The op tests' "f32 (bf16) gradients match f64" cases, with their tolerances (cpu_tol).
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      const int64_t M = 19, K = 37, N = 23;
      const std::string op = std::string("matmul_") + (ta ? "t" : "n") + (tb ? "t" : "n");
      auto f = [ta, tb](const auto& v) { return ops::matmul(v[0], v[1], ta, tb); };
      for (auto [t, tol] : {std::pair{DType::f32, 1e-5}, std::pair{DType::bf16, 2e-2}})
        row({op, t, f, {{ta ? Shape{K, M} : Shape{M, K}}, {tb ? Shape{N, K} : Shape{K, N}}}, {}, 0, tol});
    }
  row({"matmul_tn", DType::f32, [](const auto& v) { return ops::matmul(v[0], v[1], true, false); },
       {{{3, 8, 5}}, {{3, 8, 7}}}, {}, 0, 1e-5});
  row({"linear", DType::f32, [](const auto& v) { return ops::linear(v[0], v[1], v[2]); },
       {{{3, 11, 40}}, {{24, 40}}, {{24}}}, {}, 0, 1e-5});
  row({"attention", DType::f32, [](const auto& v) { return ops::causal_attention(v[0], v[1], v[2]); },
       {{{2, 3, 131, 16}}, {{2, 3, 131, 16}}, {{2, 3, 131, 16}}}, {}, 0, 1e-5});
  row({"layernorm", DType::f32, [](const auto& v) { return ops::layernorm(v[0], v[1], v[2], 1e-5); },
       {{{97, 130}}, {{130}}, {{130}}}, {}, 0, 1e-5});
  row({"softmax", DType::f32, [](const auto& v) { return ops::softmax(v[0]); }, {{{65, 257}}}, {}, 0, 1e-5});
  row({"gelu", DType::f32, [](const auto& v) { return ops::gelu(v[0]); }, {{{5, 4099}, 2.0}}, {}, 0, 2e-6});
  for (const auto& op : {std::pair<const char*, Binary>{"add", ops::add}, {"sub", ops::sub}, {"mul", ops::mul}}) {
    // b's row reduction in backward included.
    const char* name = op.first;
    auto f = [fn = op.second](const auto& v) { return fn(v[0], v[1]); };
    row({name, DType::f32, f, {{{37, 129}}, {{129}}}, {}, 0, 1e-6});
    row({name, DType::f32, f, {{{37, 129}}, {{37, 129}}}, {}, 0, 1e-6});
  }
  row({"scale", DType::f32, [](const auto& v) { return ops::scale(v[0], 1.7); }, {{{33, 7}}}, {}, 0, 1e-7});
  // Inputs around 1: a sum near zero would turn f32 input rounding into a large relative error.
  row({"sum", DType::f32, [](const auto& v) { return ops::sum(v[0]); }, {{{33, 7}, 0.3, 1.0}}, {}, 0, 1e-6});
  row({"mean", DType::f32, [](const auto& v) { return ops::mean(v[0]); }, {{{33, 7}, 0.3, 1.0}}, {}, 0, 1e-6});
  return rows;
}

// "matmul_tn_f32_53x37_53x29": the stem, the dtype, then each input's shape (ids with theirs).
// Two rows with one name stop the test binary at start-up (gtest refuses duplicate names).
std::string case_name(const OpCase& c) {
  std::string name = c.op + "_" + dtype_name(c.dtype);
  for (const Input& in : c.inputs) {
    name += "_";
    if (in.shape.empty()) name += "scalar";
    for (size_t d = 0; d < in.shape.size(); ++d) name += (d ? "x" : "") + std::to_string(in.shape[d]);
    if (in.vocab > 0) name += dtype_name(in.id_dtype);
  }
  return name;
}

std::vector<Tensor> make_inputs(const OpCase& c) {
  std::vector<Tensor> inputs;
  for (const Input& in : c.inputs) {
    if (in.vocab == 0) {
      inputs.push_back(Tensor::randn(in.shape, DType::f64, test::test_generator(), in.mean, in.scale));
      continue;
    }
    std::vector<double> u =
        Tensor::rand(in.shape, DType::f64, test::test_generator(), 0.0, double(in.vocab)).to_vector<double>();
    std::vector<int64_t> v(u.size());
    for (size_t i = 0; i < u.size(); ++i) v[i] = std::min<int64_t>(in.vocab - 1, static_cast<int64_t>(u[i]));
    inputs.push_back(Tensor::from_vector(v, in.shape).to(in.id_dtype));
  }
  return inputs;
}

bool differentiable(const OpCase& c, size_t i) { return c.differentiable.empty() || c.differentiable[i]; }

// f(inputs) and its input gradients for the output gradient out_grad, in f64 on the host.
std::vector<Tensor> run_on(const OpCase& c, const std::vector<Tensor>& inputs, DType dtype, Device device,
                           const Tensor& out_grad) {
  std::vector<Variable> vars;
  for (size_t i = 0; i < inputs.size(); ++i) {
    Tensor t = is_floating(inputs[i].dtype()) ? inputs[i].to(dtype) : inputs[i];
    vars.emplace_back(t.to(device), differentiable(c, i) && is_floating(t.dtype()));
  }
  Variable out = c.f(vars);
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

// A random output gradient of f's output shape, rounded to the row's dtype (so every side
// backpropagates the same values).
Tensor random_out_grad(const OpCase& c, const std::vector<Tensor>& inputs) {
  std::vector<Variable> probe;
  for (const Tensor& t : inputs) probe.emplace_back(is_floating(t.dtype()) ? t.to(c.dtype) : t, false);
  return Tensor::randn(c.f(probe).shape(), DType::f64, test::test_generator()).to(c.dtype).to(DType::f64);
}

void expect_all_close(const OpCase& c, const std::vector<Tensor>& got, const std::vector<Tensor>& want, double tol,
                      double atol) {
  ASSERT_EQ(want.size(), got.size());
  for (size_t i = 0; i < want.size(); ++i)
    EXPECT_TRUE(atol > 0 ? test::close_elementwise(got[i], want[i], tol, atol) : test::close_rel(got[i], want[i], tol))
        << case_name(c) << ": " << (i == 0 ? std::string("output") : "gradient " + std::to_string(i - 1));
}

// Switches the attention backend for the row's lifetime when the row names one.
struct AttentionChoice {
  explicit AttentionChoice(const std::optional<ops::AttentionBackend>& b) : before(ops::attention_backend()) {
    if (b) ops::set_attention_backend(*b);
  }
  ~AttentionChoice() { ops::set_attention_backend(before); }
  ops::AttentionBackend before;
};

// gtest prints a failing row by its name (not its bytes).
void PrintTo(const OpCase& c, std::ostream* os) { *os << case_name(c); }

class Case : public ::testing::TestWithParam<OpCase> {};

// The CPU kernels in the row's dtype against the CPU kernels in f64 on the same inputs
// (rounded to the dtype first, so only the kernels' own rounding counts). Tolerances: one
// rounding to the dtype per op in the row, f32 1e-5, bf16 2e-2 (composites round between
// ops); f64 rows are checked against finite differences instead, on up to 24 elements of each
// differentiable input.
TEST_P(Case, CpuMatchesF64) {
  const OpCase& c = GetParam();
  AttentionChoice choice(c.attention);
  std::vector<Tensor> inputs = make_inputs(c);
  if (c.dtype == DType::f64) {
    std::vector<bool> diff;
    for (size_t i = 0; i < inputs.size(); ++i) diff.push_back(differentiable(c, i) && is_floating(inputs[i].dtype()));
    EXPECT_TRUE(test::gradcheck(c.f, inputs, diff, 1e-6, 1e-5, 24)) << case_name(c);
    return;
  }
  for (Tensor& t : inputs)
    if (is_floating(t.dtype())) t = t.to(c.dtype).to(DType::f64);
  const Tensor out_grad = random_out_grad(c, inputs);
  const std::vector<Tensor> want = run_on(c, inputs, DType::f64, Device::cpu(), out_grad);
  const std::vector<Tensor> got = run_on(c, inputs, c.dtype, Device::cpu(), out_grad);
  expect_all_close(c, got, want, c.cpu_tol > 0 ? c.cpu_tol : c.dtype == DType::bf16 ? 2e-2 : 1e-5, c.atol);
}

TEST_P(Case, CudaMatchesCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA GPU";
  const OpCase& c = GetParam();
  AttentionChoice choice(c.attention);
  const std::vector<Tensor> inputs = make_inputs(c);
  const Tensor out_grad = random_out_grad(c, inputs);
  const std::vector<Tensor> want = run_on(c, inputs, c.dtype, Device::cpu(), out_grad);
  std::vector<Shape> shapes;
  for (const Tensor& t : want) shapes.push_back(t.shape());
  test::stock_poisoned_blocks(shapes, c.dtype, Device::cuda(0));
  const std::vector<Tensor> got = run_on(c, inputs, c.dtype, Device::cuda(0), out_grad);
  const double tol = c.dtype == DType::bf16 ? 1e-2 : c.dtype == DType::f32 ? 1e-5 : 1e-12;
  expect_all_close(c, got, want, tol, c.atol);
}

INSTANTIATE_TEST_SUITE_P(BackendOps, Case, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<OpCase>& info) { return case_name(info.param); });

}  // namespace
}  // namespace zt
