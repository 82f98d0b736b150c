#include "framework/autograd/checkpoint.h"

#include <cstring>

#include "framework/autograd/engine.h"
#include "framework/autograd/grad_mode.h"
#include "framework/autograd/node.h"

namespace zt {

namespace {

bool same_state(const Generator::State& a, const Generator::State& b) {
  return std::memcmp(a.s, b.s, sizeof a.s) == 0 && a.has_spare == b.has_spare &&
         (!a.has_spare || std::memcmp(&a.spare, &b.spare, sizeof a.spare) == 0);
}

// Where a recomputed input's gradient ends: the engine sums and folds the input's gradients
// into this node's output gradient as it would for the input's real producer, then hands it here.
class RegionInput : public Node {
 public:
  RegionInput() : Node("checkpoint input", {}) {}
  std::vector<Tensor> backward(const Tensor& grad) override {
    grad_ = grad;
    return {};
  }
  Tensor take() { return std::move(grad_); }

 private:
  Tensor grad_;
};

// Puts the generators at given states for its lifetime, then back where they were (also when
// fn throws).
class GeneratorRewind {
 public:
  GeneratorRewind(const std::vector<Generator*>& gens, const std::vector<Generator::State>& to) : gens_(gens) {
    for (size_t k = 0; k < gens_.size(); ++k) {
      now_.push_back(gens_[k]->state());
      gens_[k]->set_state(to[k]);
    }
  }
  ~GeneratorRewind() {
    for (size_t k = 0; k < gens_.size(); ++k) gens_[k]->set_state(now_[k]);
  }
  GeneratorRewind(const GeneratorRewind&) = delete;
  GeneratorRewind& operator=(const GeneratorRewind&) = delete;

 private:
  const std::vector<Generator*>& gens_;
  std::vector<Generator::State> now_;
};

std::vector<Variable> with_leaves(const std::vector<Variable>& inputs, const std::vector<Variable>& leaves) {
  std::vector<Variable> all = inputs;
  all.insert(all.end(), leaves.begin(), leaves.end());
  return all;
}

// Edges: the inputs, then every leaf fn read. Leaves, inputs or read, get no gradient from here:
// the recomputation adds into them itself; their edges make the enclosing backward wait for this
// node before it reports them ready.
class CheckpointNode : public Node {
 public:
  CheckpointNode(CheckpointFn fn, const std::vector<Variable>& inputs, const std::vector<Variable>& leaves,
                 std::vector<Generator*> gens, std::vector<Generator::State> before,
                 std::vector<Generator::State> after, const Tensor& output)
      : Node("checkpoint", with_leaves(inputs, leaves)),
        fn_(std::move(fn)),
        gens_(std::move(gens)),
        before_(std::move(before)),
        after_(std::move(after)),
        out_shape_(output.shape()),
        out_dtype_(output.dtype()) {
    for (const Variable& v : inputs) {
      // A leaf input (a parameter, an input tensor) enters the recomputation as itself: its
      // gradient then goes into .grad as without the region, never through a node that could
      // fold it; the node returns none for it.
      const bool leaf = v.defined() && v.is_leaf() && v.requires_grad();
      leaf_inputs_.push_back(leaf ? v : Variable());
      inputs_.emplace_back(v.defined() && !leaf ? v.tensor() : Tensor());
      if (leaf) leaves_.push_back(v.impl().get());
    }
    for (const Variable& l : leaves) leaves_.push_back(l.impl().get());
  }

  std::vector<Tensor> backward(const Tensor& grad_output) override {
    if (released_) fail_released(*this);
    std::vector<Variable> args;
    std::vector<std::shared_ptr<RegionInput>> captured(inputs_.size());
    for (size_t i = 0; i < inputs_.size(); ++i) {
      const Tensor& t = inputs_[i].get(*this);
      if (leaf_inputs_[i].defined()) {
        args.push_back(leaf_inputs_[i]);
      } else if (!t.defined()) {
        args.emplace_back();
      } else if (needs_input_grad(i)) {
        captured[i] = std::make_shared<RegionInput>();
        args.push_back(Variable::from_op(t, captured[i]));
      } else {
        args.emplace_back(t);
      }
    }
    Variable out;
    {
      GeneratorRewind rewind(gens_, before_);
      GradModeGuard grad(true);
      out = fn_(args);
      for (size_t k = 0; k < gens_.size(); ++k)
        ZT_CHECK(same_state(gens_[k]->state(), after_[k]), "checkpoint: the recomputation drew a different number "
                 "of random values from generator ", k, " than the forward did; fn must be deterministic");
    }
    ZT_CHECK(out.defined() && out.shape() == out_shape_ && out.dtype() == out_dtype_,
             "checkpoint: the recomputation gave ", out.defined() ? shape_str(out.shape()) : std::string("nothing"),
             " where the forward gave ", shape_str(out_shape_), " ", dtype_name(out_dtype_));
    if (out.requires_grad())
      run_region_backward(out, grad_output, [this](const VariableImpl& leaf) { return declares(leaf); });
    std::vector<Tensor> grads(edges().size());
    for (size_t i = 0; i < captured.size(); ++i)
      if (captured[i]) grads[i] = captured[i]->take();
    return grads;
  }

  void release_saved() override {
    for (SavedTensor& s : inputs_) s.release();
    released_ = true;
  }

 private:
  bool declares(const VariableImpl& leaf) const {
    for (const VariableImpl* l : leaves_)
      if (l == &leaf) return true;
    return false;
  }

  CheckpointFn fn_;
  std::vector<SavedTensor> inputs_;   // the non-leaf inputs' values
  std::vector<Variable> leaf_inputs_;  // the leaf inputs
  std::vector<const VariableImpl*> leaves_;
  std::vector<Generator*> gens_;
  std::vector<Generator::State> before_, after_;  // each generator's state around the forward
  Shape out_shape_;
  DType out_dtype_;
  bool released_ = false;
};

}  // namespace

Variable checkpoint(CheckpointFn fn, const std::vector<Variable>& inputs, std::vector<Generator*> generators) {
  ZT_CHECK(fn, "checkpoint: no function");
  for (const Generator* g : generators) ZT_CHECK(g, "checkpoint: a null generator");
  if (!grad_enabled()) return fn(inputs);

  std::vector<Generator::State> before, after;
  for (const Generator* g : generators) before.push_back(g->state());
  // The inputs enter without their graph: whatever needs_grad() then sees with one was captured
  // from outside the region.
  std::vector<Variable> detached;
  for (const Variable& v : inputs) detached.push_back(v.defined() ? v.detach() : Variable());
  Variable out;
  std::vector<Variable> leaves;
  {
    NeedsGradRecorder recorder;
    NoGradGuard no_grad;
    out = fn(detached);
    ZT_CHECK(recorder.non_leaves().empty(), "checkpoint: fn reads a Variable with a graph (shape ",
             shape_str(recorder.non_leaves().front().shape()),
             ") that is not one of the region's inputs; pass it as an input so its gradient reaches that graph");
    leaves = recorder.leaves();
  }
  ZT_CHECK(out.defined(), "checkpoint: fn returned an undefined Variable");
  for (const Generator* g : generators) after.push_back(g->state());

  bool any_input = false;
  for (const Variable& v : inputs) any_input = any_input || v.requires_grad();
  if (!any_input && leaves.empty()) return Variable(out.tensor());
  ZT_CHECK(is_floating(out.dtype()), "checkpoint: the region's output is ", dtype_name(out.dtype()),
           "; only a floating output has a gradient");
  auto node = std::make_shared<CheckpointNode>(std::move(fn), inputs, leaves, std::move(generators),
                                               std::move(before), std::move(after), out.tensor());
  return Variable::from_op(out.tensor(), std::move(node));
}

}  // namespace zt
