#include "ops/embedding.h"

#include "framework/autograd/node.h"
#include "ops/embedding_kernels.h"
#include "ops/device_dispatch.h"
#include "ops/op_checks.h"

namespace zt::ops {

namespace {

struct EmbeddingNode : Node {
  SavedTensor saved_ids;
  int64_t vocab;
  DType dtype;
  EmbeddingNode(const Variable& weight, const Variable& id_var)
      : Node("embedding", {weight, id_var}), saved_ids(id_var.tensor()), vocab(weight.shape()[0]), dtype(weight.dtype()) {}
  std::vector<Tensor> backward(const Tensor& grad) override {
    const Tensor& ids = saved_ids.get(*this);
    const Tensor g = grad_as(grad, dtype);
    return {ZT_ON_DEVICE(g, embedding_backward_cpu(g, ids, vocab, dtype), embedding_backward_cuda(g, ids, vocab, dtype)),
            Tensor()};
  }
  void release_saved() override { saved_ids.release(); }
};

}  // namespace

Variable embedding(const Variable& weight, const Variable& ids) {
  check_defined("embedding", "weight", weight);
  check_defined("embedding", "ids", ids);
  check_floating("embedding", "weight", weight.tensor());
  ZT_CHECK(ids.dtype() == DType::i32 || ids.dtype() == DType::i64, "embedding: ids must be i32 or i64, got ",
           dtype_name(ids.dtype()));
  ZT_CHECK(weight.tensor().dim() == 2, "embedding: weight must be [V, C], got ", shape_str(weight.shape()));
  check_same_device("embedding", "weight", weight.tensor(), "ids", ids.tensor());
  // On CUDA the lookup kernel checks the ids itself (a deferred check, see embedding.h).
  if (ids.device().is_cpu()) check_ids_cpu(ids.tensor(), weight.shape()[0]);
  Tensor out = ZT_ON_DEVICE(weight.tensor(), embedding_forward_cpu(weight.tensor(), ids.tensor()),
                            embedding_forward_cuda(weight.tensor(), ids.tensor()));
  if (!needs_grad({weight})) return Variable(out);
  return Variable::from_op(out, std::make_shared<EmbeddingNode>(weight, ids));
}

}  // namespace zt::ops
