// The GPT model against a slow float64 reference written with plain loops: logits (over the
// whole padded table), the loss (with z-loss and label smoothing over the real vocabulary)
// and parameter gradients (central differences of the reference loss).
#include "models/gpt.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "framework/autograd/engine.h"
#include "framework/autograd/grad_mode.h"
#include "models/sampling.h"
#include "ops/cross_entropy.h"
#include "tests/support/check.h"

namespace zt {
namespace {

using Params = std::map<std::string, std::vector<double>>;
using Mat = std::vector<std::vector<double>>;  // [rows][cols]

GptConfig tiny_config() {
  GptConfig c;
  c.n_layer = 2;
  c.n_head = 2;
  c.d_model = 8;
  c.seq_len = 6;
  c.vocab_size = 11;
  c.vocab_multiple = 8;  // padded to 16: five rows that must never matter
  return c;
}

// ---- the reference: GPT-2 forward in f64 with plain loops ----

Mat layernorm(const Mat& x, const std::vector<double>& g, const std::vector<double>& b) {
  Mat y = x;
  for (size_t r = 0; r < x.size(); ++r) {
    const double n = static_cast<double>(x[r].size());
    double mean = 0, var = 0;
    for (double v : x[r]) mean += v / n;
    for (double v : x[r]) var += (v - mean) * (v - mean) / n;
    for (size_t c = 0; c < x[r].size(); ++c) y[r][c] = (x[r][c] - mean) / std::sqrt(var + 1e-5) * g[c] + b[c];
  }
  return y;
}

// x [rows, in] times w^T (w stored [out, in], row-major flat) plus bias.
Mat linear(const Mat& x, const std::vector<double>& w, const std::vector<double>& b, int64_t out) {
  const size_t in = x[0].size();
  Mat y(x.size(), std::vector<double>(static_cast<size_t>(out)));
  for (size_t r = 0; r < x.size(); ++r)
    for (int64_t o = 0; o < out; ++o) {
      double s = b.empty() ? 0 : b[o];
      for (size_t i = 0; i < in; ++i) s += x[r][i] * w[o * in + i];
      y[r][o] = s;
    }
  return y;
}

double gelu(double x) { return 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x))); }

// Logits [B*T, padded V] of the reference model: the head multiplies by the whole tied table.
Mat reference_logits(const GptConfig& cfg, const Params& p, const std::vector<int64_t>& ids, int64_t B, int64_t T) {
  const int64_t C = cfg.d_model, H = cfg.n_head, D = C / H;
  Mat x(static_cast<size_t>(B * T), std::vector<double>(C));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = 0; c < C; ++c)
        x[b * T + t][c] = p.at("wte.weight")[ids[b * T + t] * C + c] + p.at("wpe.weight")[t * C + c];
  for (int64_t l = 0; l < cfg.n_layer; ++l) {
    const std::string pre = "h." + std::to_string(l) + ".";
    auto P = [&](const std::string& n) -> const std::vector<double>& { return p.at(pre + n); };
    Mat h = layernorm(x, P("ln_1.weight"), P("ln_1.bias"));
    Mat qkv = linear(h, P("attn.c_attn.weight"), P("attn.c_attn.bias"), 3 * C);
    Mat y(x.size(), std::vector<double>(C, 0.0));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t hd = 0; hd < H; ++hd)
        for (int64_t t = 0; t < T; ++t) {
          std::vector<double> s(static_cast<size_t>(t + 1));
          double mx = -1e300;
          for (int64_t u = 0; u <= t; ++u) {
            double dot = 0;
            for (int64_t d = 0; d < D; ++d) dot += qkv[b * T + t][hd * D + d] * qkv[b * T + u][C + hd * D + d];
            s[u] = dot / std::sqrt(static_cast<double>(D));
            mx = std::max(mx, s[u]);
          }
          double z = 0;
          for (auto& v : s) z += (v = std::exp(v - mx));
          for (int64_t u = 0; u <= t; ++u)
            for (int64_t d = 0; d < D; ++d) y[b * T + t][hd * D + d] += s[u] / z * qkv[b * T + u][2 * C + hd * D + d];
        }
    Mat a = linear(y, P("attn.c_proj.weight"), P("attn.c_proj.bias"), C);
    for (size_t r = 0; r < x.size(); ++r)
      for (int64_t c = 0; c < C; ++c) x[r][c] += a[r][c];
    Mat m = linear(layernorm(x, P("ln_2.weight"), P("ln_2.bias")), P("mlp.c_fc.weight"), P("mlp.c_fc.bias"), 4 * C);
    for (auto& row : m)
      for (auto& v : row) v = gelu(v);
    Mat o = linear(m, P("mlp.c_proj.weight"), P("mlp.c_proj.bias"), C);
    for (size_t r = 0; r < x.size(); ++r)
      for (int64_t c = 0; c < C; ++c) x[r][c] += o[r][c];
  }
  x = layernorm(x, p.at("ln_f.weight"), p.at("ln_f.bias"));
  return linear(x, p.at("wte.weight"), {}, cfg.padded_vocab());
}

// Mean over rows of lse - (1-e) x_y - e/V sum_j x_j + z lse^2 over the first V columns (the
// real vocabulary); the padded columns take no part.
double reference_loss(const Mat& logits, const std::vector<int64_t>& targets, double e, double z, int64_t V) {
  double total = 0;
  for (size_t r = 0; r < logits.size(); ++r) {
    const std::vector<double> x(logits[r].begin(), logits[r].begin() + V);
    double mx = -1e300, s = 0, sum = 0;
    for (double v : x) mx = std::max(mx, v);
    for (double v : x) s += std::exp(v - mx), sum += v;
    const double lse = mx + std::log(s);
    total += lse - (1 - e) * x[targets[r]] - e / static_cast<double>(V) * sum + z * lse * lse;
  }
  return total / static_cast<double>(logits.size());
}

Params params_of(const Gpt& m) {
  Params p;
  for (const auto& q : m.parameters().all()) p[q.name] = q.var.tensor().to_vector<double>();
  return p;
}

struct Fixture {
  GptConfig cfg = tiny_config();
  int64_t B = 2, T = 5;
  std::vector<int64_t> ids, targets;
  std::unique_ptr<Gpt> model;

  Fixture() {
    Generator init(123);
    model = std::make_unique<Gpt>(cfg, init);
    // GPT-2 init makes every block nearly the identity; larger random values test more. The
    // padded rows of wte too (zero after init): their logits are computed, but the loss
    // (num_classes) must never see them.
    Generator g(7);
    for (auto& p : model->parameters().all()) p.var.tensor().copy_(Tensor::randn(p.var.shape(), DType::f32, g, 0, 0.5));
    for (int64_t i = 0; i < B * T; ++i) {
      ids.push_back(static_cast<int64_t>(g.below(cfg.vocab_size)));
      targets.push_back(static_cast<int64_t>(g.below(cfg.vocab_size)));
    }
  }
  Tensor ids_tensor() const { return Tensor::from_vector(ids, {B, T}); }
};

TEST(Gpt, ParameterCountAndNames) {
  GptConfig small;  // defaults: GPT-2 small
  EXPECT_EQ(small.padded_vocab(), 50304);
  EXPECT_EQ(small.num_parameters(), 124475904);
  EXPECT_EQ(format_parameter_count(124475904), "124,475,904 (124.48M)");
  Fixture f;
  EXPECT_EQ(f.model->num_parameters(), f.cfg.num_parameters());
  EXPECT_EQ(f.model->parameters().all().size(), 4u + 12u * 2u);
  EXPECT_EQ(f.model->parameters().get("wte.weight").var.shape(), (Shape{16, 8}));
  EXPECT_EQ(f.model->parameters().get("h.1.mlp.c_proj.weight").var.shape(), (Shape{8, 32}));
  for (const auto& p : f.model->parameters().all()) {
    const bool is_vector = p.var.tensor().dim() == 1;
    EXPECT_EQ(p.decay, !is_vector) << p.name;  // no decay on biases and LayerNorm gains
  }
}

TEST(Gpt, Gpt2Initialisation) {
  GptConfig cfg = tiny_config();
  cfg.n_layer = 3;
  cfg.d_model = 64;
  cfg.n_head = 4;
  Generator g(1);
  Gpt m(cfg, g);
  auto stats = [&](const std::string& name) {
    const auto v = m.parameters().get(name).var.tensor().to_vector<double>();
    double s = 0, ss = 0;
    for (double x : v) s += x, ss += x * x;
    const double n = static_cast<double>(v.size());
    return std::pair{s / n, std::sqrt(ss / n - (s / n) * (s / n))};
  };
  EXPECT_NEAR(stats("h.0.attn.c_attn.weight").second, 0.02, 0.002);
  EXPECT_NEAR(stats("h.2.mlp.c_fc.weight").second, 0.02, 0.002);
  EXPECT_NEAR(stats("h.1.attn.c_proj.weight").second, 0.02 / std::sqrt(6.0), 0.001);
  EXPECT_NEAR(stats("h.1.mlp.c_proj.weight").second, 0.02 / std::sqrt(6.0), 0.001);
  EXPECT_EQ(stats("h.0.ln_1.weight"), std::pair(1.0, 0.0));
  EXPECT_EQ(stats("h.0.attn.c_attn.bias"), std::pair(0.0, 0.0));
  const auto wte = m.parameters().get("wte.weight").var.tensor();
  EXPECT_EQ(wte.slice(0, cfg.vocab_size, cfg.padded_vocab()).to_vector<double>(),
            std::vector<double>((cfg.padded_vocab() - cfg.vocab_size) * cfg.d_model, 0.0));
  // Same seed, same model.
  Generator g2(1);
  Gpt m2(cfg, g2);
  for (size_t i = 0; i < m.parameters().all().size(); ++i)
    EXPECT_EQ(m.parameters().all()[i].var.tensor().to_vector<float>(),
              m2.parameters().all()[i].var.tensor().to_vector<float>());
}

TEST(Gpt, LogitsMatchFloat64Reference) {
  Fixture f;
  Generator unused(0);
  NoGradGuard ng;
  const Mat ref = reference_logits(f.cfg, params_of(*f.model), f.ids, f.B, f.T);
  std::vector<double> flat;
  for (const auto& r : ref) flat.insert(flat.end(), r.begin(), r.end());
  const Tensor expected = Tensor::from_vector(flat, {f.B * f.T, f.cfg.padded_vocab()});
  for (DType dt : {DType::f64, DType::f32}) {
    const Variable logits = f.model->forward(f.ids_tensor(), dt, false, unused);
    ASSERT_EQ(logits.shape(), (Shape{f.B * f.T, f.cfg.padded_vocab()}));  // the padded columns too
    EXPECT_TRUE(test::close_rel(logits.tensor(), expected, dt == DType::f64 ? 1e-12 : 1e-5)) << dtype_name(dt);
  }
  const Variable bf = f.model->forward(f.ids_tensor(), DType::bf16, false, unused);
  EXPECT_EQ(bf.dtype(), DType::bf16);
  EXPECT_TRUE(test::close_rel(bf.tensor(), expected, 5e-2));
  // Fewer tokens than seq_len, and a single sequence, give the prefix's logits.
  const Tensor first = Tensor::from_vector(std::vector<int64_t>(f.ids.begin(), f.ids.begin() + 3), {1, 3});
  const Variable l3 = f.model->forward(first, DType::f64, false, unused);
  EXPECT_TRUE(test::close_rel(l3.tensor(), expected.slice(0, 0, 3), 1e-12));
}

TEST(Gpt, LossAndGradientsMatchFloat64Reference) {
  Fixture f;
  const double e = 0.1, z = 0.01;
  Generator unused(0);
  const Params p0 = params_of(*f.model);
  const int64_t V = f.cfg.vocab_size;
  const double ref_loss = reference_loss(reference_logits(f.cfg, p0, f.ids, f.B, f.T), f.targets, e, z, V);

  Variable logits = f.model->forward(f.ids_tensor(), DType::f64, true, unused);
  ops::CrossEntropyOptions o;
  o.label_smoothing = e;
  o.z_loss_weight = z;
  o.num_classes = V;
  auto r = ops::cross_entropy(logits, Tensor::from_vector(f.targets, {f.B * f.T}), o);
  EXPECT_NEAR(r.loss.tensor().item(), ref_loss, 1e-10 * std::abs(ref_loss));
  r.loss.backward();
  // Every block LayerNorm folds the residual gradient into its dx (two per block): a model
  // change that lost it would bring back a separate accumulation pass per LayerNorm.
  EXPECT_EQ(last_backward_stats().folded, 2 * f.cfg.n_layer);

  // Central differences of the reference loss at a few entries of several parameters (of
  // wte: padded rows included, where both are 0).
  Generator pick(99);
  const double h = 1e-6;
  for (const char* name : {"wte.weight", "wpe.weight", "h.0.ln_1.weight", "h.0.attn.c_attn.weight",
                           "h.0.attn.c_attn.bias", "h.1.attn.c_proj.weight", "h.1.mlp.c_fc.weight",
                           "h.1.mlp.c_proj.bias", "ln_f.bias"}) {
    const auto grad = f.model->parameters().get(name).var.grad().to_vector<double>();
    const int64_t n = static_cast<int64_t>(grad.size());
    for (int k = 0; k < 4; ++k) {
      const int64_t i = static_cast<int64_t>(pick.below(n));
      Params plus = p0, minus = p0;
      plus[name][i] += h;
      minus[name][i] -= h;
      const double fd = (reference_loss(reference_logits(f.cfg, plus, f.ids, f.B, f.T), f.targets, e, z, V) -
                         reference_loss(reference_logits(f.cfg, minus, f.ids, f.B, f.T), f.targets, e, z, V)) /
                        (2 * h);
      EXPECT_NEAR(grad[i], fd, 1e-6 + 1e-5 * std::abs(fd)) << name << "[" << i << "]";
    }
  }
  // The padded rows of the tied table get exactly zero gradient.
  const auto wte_grad = f.model->parameters().get("wte.weight").var.grad();
  const auto padded = wte_grad.slice(0, f.cfg.vocab_size, f.cfg.padded_vocab()).to_vector<double>();
  for (double v : padded) EXPECT_EQ(v, 0.0);
}

// The training path in f32 and bf16 (f32 master weights), in place and not, every reduction:
// the head's logits have padded columns, the loss with num_classes = vocab_size leaves them
// out, and the padded rows of wte (nonzero here, as a foreign checkpoint could hold) get
// exactly zero gradient while every real row gets one.
TEST(Gpt, PaddedRowsOfTheTiedTableGetExactlyZeroGradient) {
  for (DType dt : {DType::f32, DType::bf16})
    for (ops::Reduction red : {ops::Reduction::mean, ops::Reduction::sum, ops::Reduction::none}) {
      SCOPED_TRACE(detail::cat(dtype_name(dt), " reduction ", static_cast<int>(red)));
      Fixture f;
      Generator unused(0);
      f.model->parameters().zero_grad();
      Variable logits = f.model->forward(f.ids_tensor(), dt, true, unused);
      ASSERT_EQ(logits.shape(), (Shape{f.B * f.T, f.cfg.padded_vocab()}));
      const double ref_loss = reference_loss(reference_logits(f.cfg, params_of(*f.model), f.ids, f.B, f.T),
                                             f.targets, 0.1, 1e-2, f.cfg.vocab_size);
      ops::CrossEntropyOptions o;
      o.label_smoothing = 0.1;
      o.z_loss_weight = 1e-2;
      o.reduction = red;
      o.inplace_grad = red != ops::Reduction::sum;
      o.num_classes = f.cfg.vocab_size;
      auto r = ops::cross_entropy(logits, Tensor::from_vector(f.targets, {f.B * f.T}), o);
      if (red == ops::Reduction::none) {
        const std::vector<double> loss = r.loss.tensor().to_vector<double>();
        double mean = 0;
        for (double l : loss) mean += l / static_cast<double>(loss.size());
        EXPECT_NEAR(mean, ref_loss, (dt == DType::bf16 ? 3e-2 : 1e-5) * std::abs(ref_loss));
        r.loss.backward(Tensor::full({f.B * f.T}, 1.0, r.loss.dtype()));
      } else {
        const double scale = red == ops::Reduction::sum ? static_cast<double>(f.B * f.T) : 1.0;
        EXPECT_NEAR(r.loss.tensor().item() / scale, ref_loss, (dt == DType::bf16 ? 3e-2 : 1e-5) * std::abs(ref_loss));
        r.loss.backward();
      }
      const Tensor g = f.model->parameters().get("wte.weight").var.grad();
      ASSERT_EQ(g.dtype(), DType::f32);
      const std::vector<double> gv = g.to_vector<double>();
      const int64_t C = f.cfg.d_model;
      for (int64_t row = 0; row < f.cfg.padded_vocab(); ++row) {
        double norm = 0;
        bool exact_zero = true;
        for (int64_t c = 0; c < C; ++c) norm += gv[row * C + c] * gv[row * C + c], exact_zero &= gv[row * C + c] == 0.0;
        if (row >= f.cfg.vocab_size) EXPECT_TRUE(exact_zero) << "padded row " << row;
        else EXPECT_GT(norm, 0.0) << "real row " << row;  // the head reaches every real row
      }
    }
}

TEST(Gpt, DropoutOnlyWhenTraining) {
  Fixture f;
  f.cfg.dropout = 0.5;
  Generator init(123);
  Gpt m(f.cfg, init);
  NoGradGuard ng;
  Generator g1(5), g2(5), g3(6);
  const auto eval_a = m.forward(f.ids_tensor(), DType::f32, false, g1).tensor().to_vector<float>();
  const auto eval_b = m.forward(f.ids_tensor(), DType::f32, false, g3).tensor().to_vector<float>();
  EXPECT_EQ(eval_a, eval_b);
  Generator h1(5), h2(5);
  const auto train_a = m.forward(f.ids_tensor(), DType::f32, true, h1).tensor().to_vector<float>();
  const auto train_b = m.forward(f.ids_tensor(), DType::f32, true, h2).tensor().to_vector<float>();
  EXPECT_EQ(train_a, train_b);  // same generator state, same mask
  EXPECT_NE(train_a, eval_a);
}

TEST(Gpt, BadInputsAreErrors) {
  Fixture f;
  Generator g(0);
  EXPECT_THROW(f.model->forward(Tensor::zeros({2, 7}, DType::i64), DType::f32, false, g), Error);  // T > seq_len
  EXPECT_THROW(f.model->forward(Tensor::zeros({10}, DType::i64), DType::f32, false, g), Error);
  EXPECT_THROW(f.model->forward(Tensor::zeros({2, 3}, DType::f32), DType::f32, false, g), Error);
  EXPECT_THROW(f.model->forward(Tensor::full({1, 2}, 11, DType::i64), DType::f32, false, g), Error);  // id >= vocab
  EXPECT_THROW(f.model->forward(Tensor::full({1, 2}, 15, DType::i64), DType::f32, false, g), Error);  // in the padding
  GptConfig bad = tiny_config();
  bad.n_head = 3;
  EXPECT_THROW(Gpt(bad, g), Error);
}

TEST(Sampling, GreedyTopKAndTemperature) {
  Generator g(1);
  const std::vector<double> logits = {0.0, 3.0, 1.0, 3.0, -2.0};
  EXPECT_EQ(sample_token(logits, {0.0, 0}, g), 1);  // ties go to the lower id
  std::vector<int> counts(5, 0);
  for (int i = 0; i < 4000; ++i) ++counts[sample_token(logits, {1.0, 2}, g)];
  EXPECT_EQ(counts[0] + counts[2] + counts[4], 0);  // outside the top 2: never
  EXPECT_NEAR(counts[1] / 4000.0, 0.5, 0.05);
  std::fill(counts.begin(), counts.end(), 0);
  for (int i = 0; i < 20000; ++i) ++counts[sample_token(logits, {2.0, 0}, g)];
  double z = 0;
  for (double x : logits) z += std::exp(x / 2);
  for (int j = 0; j < 5; ++j) EXPECT_NEAR(counts[j] / 20000.0, std::exp(logits[j] / 2) / z, 0.015) << j;
  EXPECT_THROW(sample_token({1.0, NAN}, {1.0, 0}, g), Error);
  EXPECT_THROW(sample_token(logits, {-1.0, 0}, g), Error);
}

// The model's logits carry padded columns; sampling sees the first vocab_size only, so a
// padded column never wins, however large its value.
TEST(Sampling, RealVocabRowDropsThePaddedColumns) {
  Tensor logits = Tensor::randn({3, 16}, DType::f32, test::test_generator(), 0, 1);
  logits.slice(1, 11, 16).fill_(100.0);
  const std::vector<double> all = logits.to_vector<double>();
  const std::vector<double> row = real_vocab_row(logits, 1, 11);
  ASSERT_EQ(row.size(), 11u);
  for (size_t j = 0; j < row.size(); ++j) EXPECT_EQ(row[j], all[16 + j]) << j;
  Generator g(3);
  for (int i = 0; i < 200; ++i) EXPECT_LT(sample_token(row, {1.0, 0}, g), 11);
  EXPECT_LT(sample_token(real_vocab_row(logits.to(DType::bf16), 2, 11), {0.0, 0}, g), 11);
  EXPECT_THROW(real_vocab_row(logits, 3, 11), Error);
  EXPECT_THROW(real_vocab_row(logits, 0, 17), Error);
  EXPECT_THROW(real_vocab_row(logits, 0, 0), Error);
  EXPECT_THROW(real_vocab_row(logits.view({48}), 0, 11), Error);
}

// A model trained with loss.logit_softcap samples from the capped logits: cap tanh(x / cap),
// order kept, values bounded by the cap; cap 0 leaves them as they are.
TEST(Sampling, LogitSoftcapAsTheLossAppliesIt) {
  std::vector<double> row = {-100.0, -1.0, 0.0, 2.5, 100.0};
  const std::vector<double> raw = row;
  apply_logit_softcap(row, 0.0);
  EXPECT_EQ(row, raw);
  apply_logit_softcap(row, 30.0);
  for (size_t i = 0; i < row.size(); ++i) EXPECT_DOUBLE_EQ(row[i], 30.0 * std::tanh(raw[i] / 30.0)) << i;
  EXPECT_LT(row.back(), 30.0);
  EXPECT_GT(row.front(), -30.0);
}

}  // namespace
}  // namespace zt
