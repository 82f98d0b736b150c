#include "models/row_parallel_residual.h"

#include "framework/distributed/process_group.h"
#include "ops/dropout.h"
#include "ops/elementwise.h"
#include "ops/tensor_parallel.h"

namespace zt {

RowParallelResidual::RowParallelResidual(std::shared_ptr<ProcessGroup> group, double dropout)
    : group_(std::move(group)), dropout_(dropout) {}

Variable RowParallelResidual::operator()(const Product& product, const Variable& bias, const Variable& residual,
                                         bool training, Generator& gen) const {
  const bool parallel = group_ && group_->size() > 1;
  // Dropout comes between the product and the add, and with T ranks the product is partial:
  // only one rank without dropout folds the add into the product.
  if (!parallel && (dropout_ == 0 || !training)) return product(bias, residual);
  Variable out;
  if (parallel) {
    out = ops::reduce_from_tensor_parallel(product(Variable(), Variable()), group_);
    if (bias.defined()) out = ops::add(out, bias);
  } else {
    out = product(bias, Variable());
  }
  return ops::add(residual, ops::dropout(out, dropout_, gen, training));
}

}  // namespace zt
