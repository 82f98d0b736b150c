#include "ops/embedding.h"

#include "framework/autograd/node.h"
#include "ops/embedding_kernels.h"
#include "ops/device_dispatch.h"
#include "ops/op_checks.h"

namespace zt::ops {

namespace {

struct EmbeddingNode : Node {
  SavedTensor saved_ids;
  int64_t vocab;  // rows of the table (shard)
  int64_t offset;
  DType dtype;
  EmbeddingNode(const Variable& weight, const Variable& id_var, int64_t first_row)
      : Node("embedding", {weight, id_var}),
        saved_ids(id_var.tensor()),
        vocab(weight.shape()[0]),
        offset(first_row),
        dtype(weight.dtype()) {}
  std::vector<Tensor> backward(const Tensor& grad) override {
    const Tensor& ids = saved_ids.get(*this);
    const Tensor g = grad_as(grad, dtype);
    return {ZT_ON_DEVICE(g, embedding_backward_cpu(g, ids, vocab, dtype, offset),
                         embedding_backward_cuda(g, ids, vocab, dtype, offset)),
            Tensor()};
  }
  void release_saved() override { saved_ids.release(); }
};

}  // namespace

Variable embedding(const Variable& weight, const Variable& ids) {
  check_defined("embedding", "weight", weight);
  return embedding_shard(weight, ids, 0, weight.tensor().dim() == 2 ? weight.shape()[0] : 1);
}

Variable embedding_shard(const Variable& weight, const Variable& ids, int64_t offset, int64_t vocab) {
  check_defined("embedding", "weight", weight);
  check_defined("embedding", "ids", ids);
  check_floating("embedding", "weight", weight.tensor());
  ZT_CHECK(ids.dtype() == DType::i32 || ids.dtype() == DType::i64, "embedding: ids must be i32 or i64, got ",
           dtype_name(ids.dtype()));
  ZT_CHECK(weight.tensor().dim() == 2, "embedding: weight must be [V, C], got ", shape_str(weight.shape()));
  check_same_device("embedding", "weight", weight.tensor(), "ids", ids.tensor());
  ZT_CHECK(offset >= 0 && vocab >= 1, "embedding: shard rows from ", offset, " of a vocabulary of ", vocab);
  // On CUDA the lookup kernel checks the ids itself (a deferred check, see embedding.h).
  if (ids.device().is_cpu()) check_ids_cpu(ids.tensor(), vocab);
  Tensor out = ZT_ON_DEVICE(weight.tensor(), embedding_forward_cpu(weight.tensor(), ids.tensor(), offset),
                            embedding_forward_cuda(weight.tensor(), ids.tensor(), offset, vocab));
  if (!needs_grad({weight})) return Variable(out);
  return Variable::from_op(out, std::make_shared<EmbeddingNode>(weight, ids, offset));
}

}  // namespace zt::ops
