// The instability signals of a log step (trainers/signals.h) against direct f64 computations
// written here: the logits' moments from the model's own forward logits (real vocabulary
// only), layer 0's largest attention score from the parameters (embedding, norm, qkv product,
// QK-norm and RoPE redone in f64), the per-group gradient norms from the gradients, the update
// ratios from the weights before and after the step. GPT-2 and the llama family (QK-norm,
// RoPE, grouped-query heads, untied head), the head unfused and fused, two micro-batches.
#include "trainers/signals.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <tuple>

#include "framework/autograd/engine.h"
#include "framework/random.h"
#include "ops/moments.h"
#include "trainers/adamw.h"
#include "trainers/config.h"
#include "trainers/grad_clip.h"
#include "trainers/loss_options.h"
#include "trainers/training_step.h"

namespace zt {
namespace {

using Fields = std::map<std::string, double>;

std::vector<double> f64(const Tensor& t) { return t.to_vector<double>(); }

// ---- the moments op -------------------------------------------------------------------------

struct Direct {
  double sum = 0, squares = 0, count = 0, max = -INFINITY, absmax = 0;
};

Direct direct_moments(const std::vector<double>& x, int64_t width, int64_t cols, int64_t period) {
  Direct d;
  for (int64_t r = 0; r < static_cast<int64_t>(x.size()) / width; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      if (period > 0 && c > r % period) continue;
      const double v = x[static_cast<size_t>(r * width + c)];
      d.sum += v, d.squares += v * v, d.count += 1;
      d.max = std::max(d.max, v), d.absmax = std::max(d.absmax, std::fabs(v));
    }
  return d;
}

TEST(Moments, MatchDirectSumsOnStridedColumnsAndCausalBlocks) {
  Generator g(3);
  const Tensor wide = Tensor::randn({12, 15}, DType::f32, g, 0.5, 2.0);
  const Tensor x = wide.slice(1, 2, 14);  // [12, 12], rows strided by 15
  for (DType dt : {DType::f32, DType::bf16})
    for (int64_t period : {0, 4}) {
      const Tensor in = dt == DType::f32 ? x : x.to(DType::bf16);
      const std::vector<double> values = f64(in.contiguous());
      ops::Moments acc(Device::cpu());
      ops::accumulate_moments(in, 9, period, acc);
      ops::accumulate_moments(in, 9, period, acc);  // accumulates: twice the sums, same maxima
      const Direct d = direct_moments(values, 12, 9, period);
      const auto s = f64(acc.sums), m = f64(acc.maxes);
      EXPECT_NEAR(s[0], 2 * d.sum, 1e-9 * d.squares) << period;
      EXPECT_NEAR(s[1], 2 * d.squares, 1e-9 * d.squares) << period;
      EXPECT_EQ(s[2], 2 * d.count) << period;
      EXPECT_EQ(s[3], 0.0);
      EXPECT_EQ(m[0], d.max) << period;
      EXPECT_EQ(m[1], d.absmax) << period;
    }
}

// Large enough to be split into blocks across threads: many rows, and one long row.
TEST(Moments, MatchDirectSumsWhenSplitIntoBlocks) {
  Generator g(4);
  for (auto [rows, width, cols, period] : {std::tuple<int64_t, int64_t, int64_t, int64_t>{300, 530, 450, 100},
                                          std::tuple<int64_t, int64_t, int64_t, int64_t>{1, 100003, 100001, 0}}) {
    const Tensor x = Tensor::randn({rows, width + 3}, DType::f32, g, -0.2, 1.5).slice(1, 3, width + 3);
    ops::Moments acc(Device::cpu());
    ops::accumulate_moments(x, cols, period, acc);
    const Direct d = direct_moments(f64(x.contiguous()), width, cols, period);
    const auto s = f64(acc.sums), m = f64(acc.maxes);
    EXPECT_NEAR(s[0], d.sum, 1e-10 * d.squares) << rows;
    EXPECT_NEAR(s[1], d.squares, 1e-12 * d.squares) << rows;
    EXPECT_EQ(s[2], d.count) << rows;
    EXPECT_EQ(m[0], d.max) << rows;
    EXPECT_EQ(m[1], d.absmax) << rows;
  }
}

TEST(Moments, ANaNElementMakesTheMaximaNaN) {
  Tensor x = Tensor::zeros({3, 4}, DType::f32);
  x.data<float>()[5] = NAN;
  ops::Moments acc(Device::cpu());
  ops::accumulate_moments(x, 4, 0, acc);
  EXPECT_EQ(f64(acc.sums)[3], 1.0);
  EXPECT_TRUE(std::isnan(f64(acc.maxes)[0]));
  EXPECT_TRUE(std::isnan(f64(acc.maxes)[1]));
}

// ---- the model's signals --------------------------------------------------------------------

Config tiny(const std::string& model_yaml, bool fused) {
  return parse_config(
      "model: " + model_yaml +
          "\n"
          "loss: {z_loss_weight: 1.0e-3, fused_head: " +
          (fused ? "on" : "off") +
          "}\n"
          "optim: {lr: 3.0e-2, min_lr: 3.0e-3, weight_decay: 0.1, grad_clip: 1.0}\n"
          "train: {batch_size: 2, grad_accum: 2, max_steps: 4, seed: 11, device: cpu, dtype: f32}\n"
          "data: {train: unused.bin, val: unused.bin}\n",
      "signals_test.yaml");
}

const char* kGpt = "{n_layer: 2, n_head: 2, d_model: 16, seq_len: 8, vocab_size: 45, vocab_multiple: 16}";
// 4 query heads on 2 key/value heads, QK-norm, RoPE, untied head; vocabulary padded 45 -> 48.
const char* kLlama =
    "{arch: llama, n_layer: 2, n_head: 4, n_kv_head: 2, qk_norm: true, d_model: 16, seq_len: 8, vocab_size: 45, "
    "vocab_multiple: 16, rope_theta: 100.0, norm_eps: 1.0e-6}";

std::vector<double> weights(const Model& m, const std::string& name) {
  return f64(m.parameters().get(name).var.tensor());
}

// Layer 0's qkv input rows in f64: the token (and position) embedding, then the block's norm.
std::vector<double> layer0_normed(const Model& model, const std::vector<int64_t>& ids, int64_t t_len) {
  const ModelConfig& c = model.config();
  const int64_t C = c.d_model;
  const bool gpt = c.is_gpt2();
  const auto tok = weights(model, gpt ? "wte.weight" : "tok_embeddings.weight");
  const auto pos = gpt ? weights(model, "wpe.weight") : std::vector<double>();
  const auto gain = weights(model, gpt ? "h.0.ln_1.weight" : "layers.0.attn_norm.weight");
  const auto bias = gpt ? weights(model, "h.0.ln_1.bias") : std::vector<double>(static_cast<size_t>(C), 0.0);
  std::vector<double> out;
  for (size_t i = 0; i < ids.size(); ++i) {
    std::vector<double> x(static_cast<size_t>(C));
    for (int64_t j = 0; j < C; ++j)
      x[j] = tok[ids[i] * C + j] + (gpt ? pos[(static_cast<int64_t>(i) % t_len) * C + j] : 0.0);
    double mean = 0, sq = 0;
    for (double v : x) mean += v / C;
    for (double v : x) sq += (gpt ? (v - mean) * (v - mean) : v * v) / C;
    for (int64_t j = 0; j < C; ++j)
      out.push_back((gpt ? x[j] - mean : x[j]) / std::sqrt(sq + c.norm_eps) * gain[j] + bias[j]);
  }
  return out;
}

// rows [n, in] times w^T ([out, in]) plus bias.
std::vector<double> product(const std::vector<double>& rows, const std::vector<double>& w, int64_t in,
                            const std::vector<double>& bias = {}) {
  const int64_t n = static_cast<int64_t>(rows.size()) / in, out = static_cast<int64_t>(w.size()) / in;
  std::vector<double> y(static_cast<size_t>(n * out));
  for (int64_t r = 0; r < n; ++r)
    for (int64_t o = 0; o < out; ++o) {
      double s = bias.empty() ? 0.0 : bias[o];
      for (int64_t k = 0; k < in; ++k) s += rows[r * in + k] * w[o * in + k];
      y[r * out + o] = s;
    }
  return y;
}

// Layer 0's largest causal score q.k / sqrt(D) over the sequences of `ids` ([B * T] flat).
double layer0_score_max(const Model& model, const std::vector<int64_t>& ids, int64_t t_len) {
  const ModelConfig& c = model.config();
  const int64_t C = c.d_model, H = c.n_head, Hkv = c.kv_heads(), D = C / H;
  const std::vector<double> h = layer0_normed(model, ids, t_len);
  std::vector<double> q, k;  // [N, H D], [N, Hkv D]
  if (c.is_gpt2()) {
    const auto qkv = product(h, weights(model, "h.0.attn.c_attn.weight"), C, weights(model, "h.0.attn.c_attn.bias"));
    for (size_t r = 0; r < ids.size(); ++r) {
      q.insert(q.end(), qkv.begin() + r * 3 * C, qkv.begin() + r * 3 * C + C);
      k.insert(k.end(), qkv.begin() + r * 3 * C + C, qkv.begin() + r * 3 * C + 2 * C);
    }
  } else {
    q = product(h, weights(model, "layers.0.attn.wq.weight"), C);
    const auto kv = product(h, weights(model, "layers.0.attn.wkv.weight"), C);
    for (size_t r = 0; r < ids.size(); ++r)
      k.insert(k.end(), kv.begin() + r * 2 * Hkv * D, kv.begin() + r * 2 * Hkv * D + Hkv * D);
    // QK-norm (RMSNorm per head with its gain), then rotate-half RoPE at the token's position.
    const auto qg = weights(model, "layers.0.attn.q_norm.weight"), kg = weights(model, "layers.0.attn.k_norm.weight");
    auto norm_rope = [&](std::vector<double>& x, int64_t heads, const std::vector<double>& gain) {
      for (size_t r = 0; r < ids.size(); ++r)
        for (int64_t hd = 0; hd < heads; ++hd) {
          double* v = x.data() + (r * heads + hd) * D;
          double sq = 0;
          for (int64_t j = 0; j < D; ++j) sq += v[j] * v[j] / D;
          for (int64_t j = 0; j < D; ++j) v[j] = v[j] / std::sqrt(sq + c.norm_eps) * gain[j];
          const double t = static_cast<double>(static_cast<int64_t>(r) % t_len);
          for (int64_t i = 0; i < D / 2; ++i) {
            const double a = t * std::pow(c.rope_theta, -2.0 * i / D), x0 = v[i], x1 = v[i + D / 2];
            v[i] = x0 * std::cos(a) - x1 * std::sin(a);
            v[i + D / 2] = x1 * std::cos(a) + x0 * std::sin(a);
          }
        }
    };
    norm_rope(q, H, qg);
    norm_rope(k, Hkv, kg);
  }
  double best = -INFINITY;
  const int64_t B = static_cast<int64_t>(ids.size()) / t_len;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t hd = 0; hd < H; ++hd)
      for (int64_t t = 0; t < t_len; ++t)
        for (int64_t u = 0; u <= t; ++u) {
          const int64_t kh = hd / (H / Hkv);
          double s = 0;
          for (int64_t j = 0; j < D; ++j)
            s += q[((b * t_len + t) * H + hd) * D + j] * k[((b * t_len + u) * Hkv + kh) * D + j];
          best = std::max(best, s / std::sqrt(static_cast<double>(D)));
        }
  return best;
}

struct Case {
  const char* name;
  const char* model;
  bool fused;
};

class Signals : public ::testing::TestWithParam<Case> {};

TEST_P(Signals, MatchDirectComputationsOnOneStep) {
  const Config cfg = tiny(GetParam().model, GetParam().fused);
  Generator init(cfg.train.seed);
  auto model = make_model(cfg.model, init);
  AdamW adam(model->parameters().all(),
             AdamWOptions{cfg.optim.weight_decay, cfg.optim.beta1, cfg.optim.beta2, cfg.optim.eps});
  const ParallelContext par = single_rank_context(Device::cpu());
  TrainingStep step(cfg, *model, adam, par, DType::f32, GetParam().fused);

  // Two micro-batches of [2, 8] tokens.
  const int64_t B = 2, T = 8, V = cfg.model.vocab_size;
  std::vector<data::Batch> batches;
  std::vector<int64_t> all_ids;
  for (int a = 0; a < 2; ++a) {
    std::vector<int64_t> in, tg;
    for (int64_t i = 0; i < B * T; ++i) {
      in.push_back((i * 7 + a * 13 + 3) % V);
      tg.push_back((i * 5 + a * 3 + 1) % V);
    }
    all_ids.insert(all_ids.end(), in.begin(), in.end());
    batches.push_back({Tensor::from_vector(in, {B, T}), Tensor::from_vector(tg, {B, T})});
  }

  // References before the step: the logits of the model's forward (whole padded rows) and
  // layer 0's scores, and the weights.
  Direct logits;
  Generator no_dropout(1);
  const int64_t Vp = cfg.model.padded_vocab();
  for (const auto& b : batches) {
    const Direct d = direct_moments(f64(model->forward(b.inputs, DType::f32, false, no_dropout).tensor()), Vp, V, 0);
    logits.sum += d.sum, logits.squares += d.squares, logits.count += d.count;
    logits.absmax = std::max(logits.absmax, d.absmax);
  }
  const double score = layer0_score_max(*model, all_ids, T);
  std::vector<std::vector<double>> before;
  for (const auto& p : model->parameters().all()) before.push_back(f64(p.var.tensor()));

  size_t next = 0;
  const StepMetrics m = step.run([&] { return batches[next++]; }, 1e-2, 1e-3, false, nullptr, /*signals=*/true);
  ASSERT_EQ(next, 2u);
  Fields f(m.signals.begin(), m.signals.end());

  const double mean = logits.sum / logits.count;
  const double sd = std::sqrt(logits.squares / logits.count - mean * mean);
  EXPECT_EQ(logits.count, 2.0 * B * T * V);
  EXPECT_NEAR(f.at("logits_absmax"), logits.absmax, 1e-5 * logits.absmax);
  EXPECT_NEAR(f.at("logits_mean"), mean, 1e-5 * sd);
  EXPECT_NEAR(f.at("logits_std"), sd, 1e-5 * sd);
  EXPECT_NEAR(f.at("attn_score_max/layer_0"), score, 1e-5 * std::fabs(score) + 1e-7);
  EXPECT_TRUE(std::isfinite(f.at("attn_score_max/layer_1")));
  EXPECT_EQ(f.at("attn_score_max"), std::max(f.at("attn_score_max/layer_0"), f.at("attn_score_max/layer_1")));

  // Per group: the update ratio from the weights before and after, and the gradient norms
  // adding up (in squares) to the clipping norm.
  std::map<std::string, std::pair<double, double>> update;  // group -> (||delta||^2, ||new||^2)
  const auto& params = model->parameters().all();
  for (size_t i = 0; i < params.size(); ++i) {
    const auto now = f64(params[i].var.tensor());
    auto& u = update[group_name(params[i].group)];
    for (size_t j = 0; j < now.size(); ++j)
      u.first += (now[j] - before[i][j]) * (now[j] - before[i][j]), u.second += now[j] * now[j];
  }
  double squares = 0;
  for (const auto& [group, u] : update) {
    EXPECT_NEAR(f.at("update_ratio/" + group), std::sqrt(u.first / u.second), 1e-6 * std::sqrt(u.first / u.second))
        << group;
    squares += f.at("grad_norm/" + group) * f.at("grad_norm/" + group);
  }
  EXPECT_NEAR(std::sqrt(squares), m.grad_norm, 1e-9 * m.grad_norm);
  const bool llama = std::string(GetParam().model).find("llama") != std::string::npos;
  EXPECT_EQ(update.count("head"), llama ? 1u : 0u);  // GPT-2's head is the tied embedding
  EXPECT_EQ(f.count("grad_norm/head"), llama ? 1u : 0u);
}

TEST_P(Signals, OtherStepsCarryNone) {
  const Config cfg = tiny(GetParam().model, GetParam().fused);
  Generator init(cfg.train.seed);
  auto model = make_model(cfg.model, init);
  AdamW adam(model->parameters().all(), AdamWOptions{});
  const ParallelContext par = single_rank_context(Device::cpu());
  TrainingStep step(cfg, *model, adam, par, DType::f32, GetParam().fused);
  const Tensor ids = Tensor::from_vector(std::vector<int64_t>(16, 3), {2, 8});
  const StepMetrics m = step.run([&] { return data::Batch{ids, ids}; }, 1e-2, 0.0, false);
  EXPECT_TRUE(m.signals.empty());
  EXPECT_FALSE(m.to_json().contains("logits_absmax"));
}

// The probe alone: any chunking of the key/value heads gives the same maxima (bit for bit: each
// score is the same dot product).
TEST_P(Signals, ScoreChunksDoNotChangeTheMaxima) {
  const Config cfg = tiny(GetParam().model, false);
  Generator init(cfg.train.seed), gen(1);
  auto model = make_model(cfg.model, init);
  const Tensor ids = Tensor::from_vector(std::vector<int64_t>{5, 9, 1, 44, 3, 3, 17, 30, 2, 8, 40, 11, 0, 6, 7, 21},
                                         {2, 8});
  AttentionScoreMax whole(cfg.model.n_layer, Device::cpu()), single(cfg.model.n_layer, Device::cpu(), 1);
  for (AttentionScoreMax* probe : {&whole, &single}) {
    model->attach_score_probe(probe);
    model->head_inputs(ids, DType::f32, false, gen);
  }
  model->attach_score_probe(nullptr);
  const auto a = f64(whole.maxima()), b = f64(single.maxima());
  EXPECT_EQ(a, b);
  EXPECT_TRUE(std::isfinite(a[0]) && std::isfinite(a[1]));
}

INSTANTIATE_TEST_SUITE_P(Families, Signals,
                         ::testing::Values(Case{"gpt2", kGpt, false}, Case{"gpt2_fused", kGpt, true},
                                           Case{"llama_gqa_qknorm", kLlama, false},
                                           Case{"llama_gqa_qknorm_fused", kLlama, true}),
                         [](const auto& info) { return std::string(info.param.name); });

// Each parameter's group, as the families register them.
TEST(ParameterGroups, FamiliesNameEachParametersGroup) {
  Generator g(1);
  auto gpt = make_model(tiny(kGpt, false).model, g);
  EXPECT_EQ(gpt->parameters().get("wte.weight").group, ParamGroup::embedding);
  EXPECT_EQ(gpt->parameters().get("wpe.weight").group, ParamGroup::embedding);
  EXPECT_EQ(gpt->parameters().get("h.1.attn.c_proj.bias").group, ParamGroup::attention);
  EXPECT_EQ(gpt->parameters().get("h.0.mlp.c_fc.weight").group, ParamGroup::mlp);
  EXPECT_EQ(gpt->parameters().get("h.0.ln_2.bias").group, ParamGroup::norm);
  auto llama = make_model(tiny(kLlama, false).model, g);
  EXPECT_EQ(llama->parameters().get("lm_head.weight").group, ParamGroup::head);
  EXPECT_EQ(llama->parameters().get("layers.1.attn.wkv.weight").group, ParamGroup::attention);
  EXPECT_EQ(llama->parameters().get("layers.0.attn.q_norm.weight").group, ParamGroup::norm);
  EXPECT_EQ(llama->parameters().get("layers.0.mlp.w_down.weight").group, ParamGroup::mlp);
  EXPECT_EQ(llama->parameters().get("norm_f.weight").group, ParamGroup::norm);
}

// group_grad_norms against the gradients summed by hand in f64.
TEST(ParameterGroups, GradNormsMatchTheGradients) {
  const Config cfg = tiny(kLlama, false);
  Generator g(2);
  auto model = make_model(cfg.model, g);
  const Tensor ids = Tensor::from_vector(std::vector<int64_t>{1, 4, 9, 16, 25, 36, 2, 7}, {1, 8});
  LossOptions o;
  model->loss(ids, ids, o, DType::f32, false, g).loss.backward();
  std::map<ParamGroup, double> direct;
  for (const auto& p : model->parameters().all())
    for (double v : f64(p.var.grad())) direct[p.group] += v * v;
  const auto& params = model->parameters().all();
  const ParameterBuckets layout(params, int64_t{1} << 20, 1, 0);
  const auto norms = group_grad_norms(params, layout, gradient_from_params(params), nullptr, nullptr);
  ASSERT_EQ(norms.size(), direct.size());
  for (const auto& [group, norm] : norms)
    EXPECT_NEAR(norm, std::sqrt(direct.at(group)), 1e-9 * norm) << group_name(group);
}

}  // namespace
}  // namespace zt
