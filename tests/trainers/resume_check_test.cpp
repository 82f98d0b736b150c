// Which config changes a resume refuses: the model's shape, named key by key; everything
// else may change (the parallel layout too: checkpoints are re-sharded on load).
#include "trainers/resume_check.h"

#include <gtest/gtest.h>

namespace zt {
namespace {

Config config(const std::vector<std::string>& sets = {}) {
  std::vector<std::string> all = {"data.train=t.bin", "data.val=v.bin"};
  all.insert(all.end(), sets.begin(), sets.end());
  return parse_config("model: {n_layer: 2, n_head: 2, d_model: 32, seq_len: 16, vocab_size: 64}\n", "t.yaml", all);
}

TEST(ResumeCheck, SameModelAndLayoutIsCompatible) {
  const Config c = config();
  EXPECT_TRUE(resume_incompatibilities(config_to_yaml(c), c).empty());
  // Training knobs may change.
  const Config tuned = config({"optim.lr=1e-3", "train.max_steps=5000", "loss.z_loss_weight=1e-3",
                               "model.dropout=0.1", "train.batch_size=3", "train.dtype=bf16"});
  EXPECT_TRUE(resume_incompatibilities(config_to_yaml(c), tuned).empty());
}

TEST(ResumeCheck, NamesEveryShapeKeyThatDiffers) {
  const Config old = config();
  const Config now = config({"model.n_layer=3", "model.d_model=64", "model.vocab_size=100", "optim.lr=1e-3"});
  const auto d = resume_incompatibilities(config_to_yaml(old), now);
  ASSERT_EQ(d.size(), 3u);
  EXPECT_EQ(d[0], "model.n_layer: 2 -> 3");
  EXPECT_EQ(d[1], "model.d_model: 32 -> 64");
  EXPECT_EQ(d[2], "model.vocab_size: 64 -> 100");
  const auto h = resume_incompatibilities(config_to_yaml(config({"model.n_head=4", "model.seq_len=8",
                                                                 "model.vocab_multiple=64"})), old);
  ASSERT_EQ(h.size(), 3u);
  EXPECT_EQ(h[0], "model.n_head: 4 -> 2");
}

TEST(ResumeCheck, ParallelLayoutMayChangeAndMissingKeys) {
  EXPECT_FALSE(is_layout_key("parallel", "tensor_parallel_size"));
  EXPECT_TRUE(resume_incompatibilities(config_to_yaml(config()), config({"parallel.tensor_parallel_size=2"})).empty());
  EXPECT_FALSE(is_layout_key("optim", "lr"));
  // A stored config without the parallel section (an older ztrain) counts as the defaults.
  const Config c = config();
  EXPECT_TRUE(resume_incompatibilities("model: {n_layer: 2, n_head: 2, d_model: 32, seq_len: 16, vocab_size: 64}\n", c)
                  .empty());
  const auto d = resume_incompatibilities("model: {n_layer: 2}\n", c);  // the rest: GPT-2 small's defaults
  ASSERT_EQ(d.size(), 4u);
  EXPECT_EQ(d[0], "model.n_head: 12 -> 2");
  const auto bad = resume_incompatibilities("model: [unclosed", c);
  ASSERT_EQ(bad.size(), 1u);
  EXPECT_NE(bad[0].find("not valid YAML"), std::string::npos) << bad[0];
}

}  // namespace
}  // namespace zt
