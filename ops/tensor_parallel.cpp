#include "ops/tensor_parallel.h"

#include "framework/autograd/engine.h"
#include "framework/autograd/node.h"
#include "framework/distributed/process_group.h"
#include "framework/op_range.h"

namespace zt::ops {

namespace {

bool single(const std::shared_ptr<ProcessGroup>& g) { return !g || g->size() == 1; }

// The sum of `t` over the group as a tensor of its own: in place when no one else can see
// `t` (a fresh matmul output, an engine gradient), else into a copy.
Tensor summed(Tensor t, ProcessGroup& group) {
  if (!exclusively_owned(t)) t = t.contiguous().clone();
  all_reduce_sum(t, group);
  return t;
}

class CopyToNode : public Node {
 public:
  CopyToNode(const Variable& x, std::shared_ptr<ProcessGroup> g) : Node("copy_to_tensor_parallel", {x}), g_(std::move(g)) {}
  std::vector<Tensor> backward(const Tensor& grad) override {
    ZT_OP_RANGE("tp_all_reduce");
    return {summed(grad, *g_)};
  }

 private:
  std::shared_ptr<ProcessGroup> g_;
};

class ReduceFromNode : public Node {
 public:
  explicit ReduceFromNode(const Variable& x) : Node("reduce_from_tensor_parallel", {x}) {}
  std::vector<Tensor> backward(const Tensor& grad) override { return {grad}; }
};

class GatherNode : public Node {
 public:
  GatherNode(const Variable& x, int rank) : Node("gather_from_tensor_parallel", {x}), rank_(rank), cols_(x.shape()[1]) {}
  std::vector<Tensor> backward(const Tensor& grad) override {
    return {grad.slice(1, rank_ * cols_, (rank_ + 1) * cols_).contiguous()};
  }

 private:
  int64_t rank_, cols_;
};

}  // namespace

void all_reduce_sum(Tensor& t, ProcessGroup& group) {
  ZT_CHECK(t.is_contiguous(), "tensor-parallel all-reduce: tensor of shape ", shape_str(t.shape()),
           " is not contiguous");
  if (group.size() == 1) return;
  if (t.dtype() == DType::bf16 && group.backend() == "gloo") {
    Tensor wide = t.to(DType::f32);
    group.all_reduce(wide, ReduceOp::sum);
    t.copy_(wide);
    return;
  }
  group.all_reduce(t, ReduceOp::sum);
}

Variable copy_to_tensor_parallel(const Variable& x, const std::shared_ptr<ProcessGroup>& group) {
  if (single(group) || !needs_grad({x})) return x;
  return Variable::from_op(x.tensor(), std::make_shared<CopyToNode>(x, group));
}

Variable reduce_from_tensor_parallel(const Variable& x, const std::shared_ptr<ProcessGroup>& group) {
  if (single(group)) return x;
  ZT_OP_RANGE("tp_all_reduce");
  // Never in place on x: the caller's Variable (and any node that saved it) keeps its value.
  Tensor y = x.tensor().contiguous().clone();
  all_reduce_sum(y, *group);
  if (!needs_grad({x})) return Variable(y);
  return Variable::from_op(y, std::make_shared<ReduceFromNode>(x));
}

Variable gather_from_tensor_parallel(const Variable& x, const std::shared_ptr<ProcessGroup>& group) {
  ZT_CHECK(x.tensor().dim() == 2, "gather_from_tensor_parallel: expected [rows, cols], got ", shape_str(x.shape()));
  if (single(group)) return x;
  const int P = group->size();
  const int64_t n = x.shape()[0], c = x.shape()[1];
  const bool carry_f32 = x.dtype() == DType::bf16 && group->backend() == "gloo";
  Tensor in = carry_f32 ? x.tensor().to(DType::f32) : x.tensor().contiguous();
  Tensor all = Tensor::empty({P, n, c}, in.dtype(), in.device());
  group->all_gather(in, all);
  Tensor out = Tensor::empty({n, P * c}, x.dtype(), x.device());
  for (int r = 0; r < P; ++r) out.slice(1, r * c, (r + 1) * c).copy_(all.select(0, r));
  if (!needs_grad({x})) return Variable(out);
  return Variable::from_op(out, std::make_shared<GatherNode>(x, group->rank()));
}

}  // namespace zt::ops
