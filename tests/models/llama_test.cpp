// The llama family against an independent float64 reference: tests/models/llama_reference.py,
// written from the papers' equations in NumPy with its own small reverse-mode autodiff (no
// ztrain code). Both get the same weights, ids and targets through npy files; the loss (z-loss,
// label smoothing, ignored rows, padded vocabulary) and every parameter's gradient must agree
// to 1e-10 in f64, for the full llama set of choices and for the other combinations.
#include "models/llama.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "framework/io/npy.h"
#include "tests/support/multi_rank.h"

namespace zt {
namespace {

namespace fs = std::filesystem;

struct Family {
  const char* name;
  ModelConfig config;
};

ModelConfig base() {
  ModelConfig c;
  c.arch = "llama";
  c.n_layer = 2;
  c.n_head = 4;
  c.d_model = 16;
  c.seq_len = 8;
  c.vocab_size = 19;
  c.vocab_multiple = 8;  // padded to 24: five columns that must never matter
  c.d_ff = 24;
  c.norm = "rmsnorm";
  c.mlp = "swiglu";
  c.position = "rope";
  c.rope_theta = 10000;
  c.qk_norm = true;
  c.n_kv_head = 2;
  c.tie_embeddings = false;
  c.bias = false;
  c.norm_eps = 1e-6;
  return c;
}

std::vector<Family> families() {
  std::vector<Family> f;
  f.push_back({"llama_gqa_qknorm_untied", base()});
  ModelConfig gpt_like = base();  // every choice at GPT-2's value, through the llama code
  gpt_like.norm = "layernorm";
  gpt_like.mlp = "gelu";
  gpt_like.position = "learned";
  gpt_like.qk_norm = false;
  gpt_like.n_kv_head = 0;
  gpt_like.tie_embeddings = true;
  gpt_like.bias = true;
  f.push_back({"layernorm_gelu_learned_tied_bias", gpt_like});
  ModelConfig mixed = base();  // each choice alone: MQA, RoPE without QK-norm, biases, tied
  mixed.mlp = "gelu";
  mixed.qk_norm = false;
  mixed.n_kv_head = 1;
  mixed.tie_embeddings = true;
  mixed.bias = true;
  f.push_back({"rmsnorm_gelu_rope_mqa_bias", mixed});
  ModelConfig qk_only = base();  // QK-norm without RoPE, LayerNorm without bias
  qk_only.position = "learned";
  qk_only.norm = "layernorm";
  qk_only.n_kv_head = 4;
  f.push_back({"qknorm_learned_layernorm_nobias", qk_only});
  return f;
}

class LlamaReference : public ::testing::TestWithParam<Family> {};

TEST_P(LlamaReference, LossAndEveryGradientMatchTheNumpyReference) {
  if (std::system("/usr/bin/python3 -c 'import numpy' > /dev/null 2>&1") != 0)
    FAIL() << "/usr/bin/python3 with numpy is needed (tools/install_deps.sh installs python3-numpy)";
  const ModelConfig cfg = GetParam().config;
  Generator init(7);
  Llama model(cfg, init);
  // Every parameter in f64 and random (gains and biases too, so none is trivially 1 or 0).
  Generator draw(11);
  for (auto& p : model.parameters().all()) p.var.tensor() = Tensor::randn(p.var.shape(), DType::f64, draw, 0.0, 0.3);

  const int64_t B = 2, T = cfg.seq_len;
  std::vector<int64_t> ids, targets;
  for (int64_t i = 0; i < B * T; ++i) {
    ids.push_back((i * 7 + 3) % cfg.vocab_size);
    targets.push_back(i % 5 == 4 ? -100 : (i * 11 + 1) % cfg.vocab_size);
  }
  LossOptions o;
  o.loss.z_loss_weight = 1e-3;
  o.loss.label_smoothing = 0.1;
  o.loss.inplace_grad = false;
  Generator no_dropout(0);
  const ops::CrossEntropyResult r = model.loss(Tensor::from_vector(ids, {B, T}), Tensor::from_vector(targets, {B * T}),
                                               o, DType::f64, /*training=*/true, no_dropout);
  r.loss.backward();

  test::TempDir dir;
  const fs::path in = fs::path(dir.path()) / "in", out = fs::path(dir.path()) / "out";
  fs::create_directories(in);
  fs::create_directories(out);
  nlohmann::json j = {{"n_layer", cfg.n_layer},      {"n_head", cfg.n_head},
                      {"n_kv_head", cfg.kv_heads()}, {"d_model", cfg.d_model},
                      {"d_ff", cfg.ffn_width()},     {"vocab_size", cfg.vocab_size},
                      {"padded_vocab", cfg.padded_vocab()}, {"seq_len", cfg.seq_len},
                      {"norm", cfg.norm},            {"mlp", cfg.mlp},
                      {"position", cfg.position},    {"rope_theta", cfg.rope_theta},
                      {"qk_norm", cfg.qk_norm},      {"tie_embeddings", cfg.tie_embeddings},
                      {"bias", cfg.bias},            {"norm_eps", cfg.norm_eps},
                      {"z_loss_weight", o.loss.z_loss_weight}, {"label_smoothing", o.loss.label_smoothing},
                      {"ignore_index", o.loss.ignore_index}};
  std::ofstream(in / "config.json") << j.dump(2);
  io::write_npy((in / "ids.npy").string(), Tensor::from_vector(ids, {B, T}));
  io::write_npy((in / "targets.npy").string(), Tensor::from_vector(targets, {B * T}));
  for (const auto& p : model.parameters().all()) io::write_npy((in / (p.name + ".npy")).string(), p.var.tensor());

  const fs::path script = fs::path(ZTRAIN_SOURCE_DIR) / "tests" / "models" / "llama_reference.py";
  const std::string log = (fs::path(dir.path()) / "log.txt").string();
  const int rc = std::system(("/usr/bin/python3 " + script.string() + " " + in.string() + " " + out.string() + " > " +
                              log + " 2>&1")
                                 .c_str());
  std::ifstream lf(log);
  const std::string log_text((std::istreambuf_iterator<char>(lf)), std::istreambuf_iterator<char>());
  ASSERT_EQ(rc, 0) << log_text;

  const double ref_loss = io::read_npy((out / "loss.npy").string()).item();
  EXPECT_NEAR(r.loss.tensor().item(), ref_loss, 1e-10 * std::abs(ref_loss));
  for (const auto& p : model.parameters().all()) {
    SCOPED_TRACE(p.name);
    ASSERT_TRUE(p.var.has_grad());
    const Tensor want = io::read_npy((out / (p.name + ".npy")).string());
    ASSERT_EQ(want.shape(), p.var.shape());
    const std::vector<double> g = p.var.grad().to(DType::f64).to_vector<double>(), w = want.to_vector<double>();
    double scale = 0;
    for (double v : w) scale = std::max(scale, std::abs(v));
    for (size_t i = 0; i < g.size(); ++i) ASSERT_NEAR(g[i], w[i], 1e-10 * std::max(scale, 1e-3)) << "element " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Families, LlamaReference, ::testing::ValuesIn(families()),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(Llama, ParameterCountAndNames) {
  ModelConfig c = base();
  Generator init(1);
  Llama m(c, init);
  EXPECT_EQ(m.parameters().numel(), c.num_parameters());
  for (const char* name : {"tok_embeddings.weight", "layers.0.attn_norm.weight", "layers.0.attn.wq.weight",
                           "layers.0.attn.wkv.weight", "layers.0.attn.q_norm.weight", "layers.0.attn.k_norm.weight",
                           "layers.0.attn.wo.weight", "layers.1.mlp_norm.weight", "layers.1.mlp.w_gate_up.weight",
                           "layers.1.mlp.w_down.weight", "norm_f.weight", "lm_head.weight"})
    EXPECT_NO_THROW(m.parameters().get(name)) << name;
  EXPECT_EQ(m.parameters().get("layers.0.attn.wkv.weight").var.shape(), (Shape{2 * 2 * 4, 16}));
  EXPECT_EQ(m.parameters().get("layers.0.mlp.w_gate_up.weight").var.shape(), (Shape{48, 16}));
  // A llama-sized config: Llama-3 vocabulary, 12 layers of 768, SwiGLU 2048, untied.
  ModelConfig small = base();
  small.n_layer = 12;
  small.n_head = 12;
  small.n_kv_head = 0;
  small.d_model = 768;
  small.d_ff = 0;
  small.seq_len = 1024;
  small.vocab_size = 128256;
  small.vocab_multiple = 128;
  EXPECT_EQ(small.ffn_width(), 2048);
  const int64_t C = 768, F = 2048, V = 128256;
  EXPECT_EQ(small.num_parameters(), 2 * V * C + 12 * (2 * C + 3 * C * C + C * C + 2 * 64 + 3 * F * C) + C);
}

TEST(Llama, ConfigErrorsNameTheirValues) {
  ModelConfig c = base();
  c.n_kv_head = 3;
  try {
    c.validate();
    FAIL() << "n_kv_head 3 of 4 heads accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.n_kv_head 3 does not divide model.n_head 4"), std::string::npos)
        << e.what();
  }
  c = base();
  c.arch = "gpt2";
  try {
    c.validate();
    FAIL() << "gpt2 with rmsnorm accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.norm: rmsnorm needs model.arch: llama"), std::string::npos)
        << e.what();
  }
  c = base();
  try {
    c.validate_tensor_parallel(4);
    FAIL() << "4 ranks over 2 kv heads accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("does not divide the 2 key/value heads"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace zt
