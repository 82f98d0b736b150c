#pragma once
// What the activation-checkpointing tests of both families compare, on any device: a model's
// losses and every parameter gradient after two micro-batches of training (the second adds into
// the first's gradients), with dropout drawing from one generator, under a given
// train.activation_checkpointing mode; and how many checkpoint regions the graph holds.
#include <map>
#include <string>
#include <unordered_set>
#include <vector>

#include "framework/autograd/node.h"
#include "models/model.h"
#include "tests/support/check.h"

namespace zt::test {

struct TrainedGrads {
  std::vector<Tensor> losses;           // per micro-batch, on the host
  std::map<std::string, Tensor> grads;  // by parameter name, on the host
  Generator::State dropout_after;
  int regions = 0;  // checkpoint nodes in the first micro-batch's graph
  int nodes = 0;    // all its nodes: what a region hides saves nothing
};

// Nodes named `name` in the graph of root (every node when name is empty).
inline int count_nodes(const Variable& root, const std::string& name) {
  std::unordered_set<const Node*> seen;
  std::vector<const Node*> stack{root.grad_fn().get()};
  int n = 0;
  while (!stack.empty()) {
    const Node* node = stack.back();
    stack.pop_back();
    if (!node || !seen.insert(node).second) continue;
    n += name.empty() || node->name() == name;
    for (const Edge& e : node->edges()) stack.push_back(e.node.get());
  }
  return n;
}

inline TrainedGrads train_grads(ModelConfig c, const std::string& mode, DType compute, Device device) {
  c.activation_checkpointing = mode;
  Generator init(99), dropout(7);
  const std::unique_ptr<Model> model = make_model(c, init, device);
  LossOptions o;
  o.loss.z_loss_weight = 1e-3;
  o.loss.label_smoothing = 0.1;
  TrainedGrads out;
  for (int micro = 0; micro < 2; ++micro) {
    std::vector<int32_t> ids, targets;
    for (int64_t i = 0; i < 2 * c.seq_len; ++i) {
      ids.push_back(static_cast<int32_t>((i * 7919 + 13 + micro * 5) % c.vocab_size));
      targets.push_back(static_cast<int32_t>((i * 104729 + 7 + micro) % c.vocab_size));
    }
    const Tensor id_t = Tensor::from_vector(ids, {2, c.seq_len}).to(device);
    const Tensor tg_t = Tensor::from_vector(targets, {2 * c.seq_len}).to(device);
    const ops::CrossEntropyResult r = model->loss(id_t, tg_t, o, compute, /*training=*/true, dropout);
    if (micro == 0) {
      out.regions = count_nodes(r.loss, "checkpoint");
      out.nodes = count_nodes(r.loss, "");
    }
    out.losses.push_back(r.loss.tensor().to(Device::cpu()));
    r.loss.backward();
  }
  for (const auto& p : model->parameters().all()) out.grads[p.name] = p.var.grad().to(Device::cpu());
  out.dropout_after = dropout.state();
  return out;
}

// Every loss and gradient bit for bit, and the same generator state after.
inline void expect_same_bits(const TrainedGrads& got, const TrainedGrads& want, const std::string& what) {
  ASSERT_EQ(got.losses.size(), want.losses.size()) << what;
  for (size_t i = 0; i < got.losses.size(); ++i)
    EXPECT_TRUE(same_bits(got.losses[i], want.losses[i])) << what << ": loss of micro-batch " << i;
  ASSERT_EQ(got.grads.size(), want.grads.size()) << what;
  for (const auto& [name, g] : want.grads) EXPECT_TRUE(same_bits(got.grads.at(name), g)) << what << ": gradient of " << name;
  for (int k = 0; k < 4; ++k) EXPECT_EQ(got.dropout_after.s[k], want.dropout_after.s[k]) << what << ": dropout stream";
}

// The llama family's default choices with grouped-query attention and QK-norm, on c's shape.
inline ModelConfig as_llama(ModelConfig c) {
  c.arch = "llama";
  c.n_kv_head = c.n_head / 2;
  c.norm = "rmsnorm";
  c.mlp = "swiglu";
  c.position = "rope";
  c.qk_norm = true;
  c.tie_embeddings = false;
  c.bias = false;
  return c;
}

// block and mlp against none on `device`, f32 and bf16 compute: bit for bit, one region per block.
inline void expect_modes_agree(const ModelConfig& c, const std::string& what, Device device) {
  for (DType compute : {DType::f32, DType::bf16}) {
    const std::string at = what + " " + dtype_name(compute);
    const TrainedGrads none = train_grads(c, "none", compute, device);
    EXPECT_EQ(none.regions, 0) << at;
    for (const char* mode : {"block", "mlp"}) {
      const TrainedGrads got = train_grads(c, mode, compute, device);
      EXPECT_EQ(got.regions, c.n_layer) << at << " " << mode;
      EXPECT_LT(got.nodes, none.nodes) << at << " " << mode;
      expect_same_bits(got, none, at + " " + mode);
    }
  }
}

}  // namespace zt::test
