#pragma once
// The output of a residual branch under tensor parallelism (Megatron's RowParallelLinear with
// the residual add after it), one home for both families' attention and MLP outputs:
//
//   residual + dropout(all_reduce(x W_shard^T) + b)     T ranks: each product is partial, the
//                                                        bias is added once to their sum
//   residual + dropout(x W^T + b)                        one rank with dropout
//   x W^T + b + residual in one product                  one rank without dropout: the bias and
//                                                        the residual ride on the product
//                                                        (cuBLASLt's epilogue and C input: no
//                                                        separate kernels, one rounding)
//
// The branch says how its output product is made (a linear, or the second product of an MLP);
// this layer says where the all-reduce, the bias and the residual go.
#include <functional>
#include <memory>

#include "framework/autograd/variable.h"
#include "framework/random.h"

namespace zt {

class ProcessGroup;

class RowParallelResidual {
 public:
  // `group`: the tensor-parallel group (null or one rank: no communication); `dropout`: the
  // branch's dropout probability in training.
  RowParallelResidual(std::shared_ptr<ProcessGroup> group, double dropout);

  // The branch's output product with `bias` on its epilogue and `residual` as its C input,
  // each undefined when not wanted.
  using Product = std::function<Variable(const Variable& bias, const Variable& residual)>;
  // residual + the branch's output, as above; `bias` in the compute dtype or undefined.
  Variable operator()(const Product& product, const Variable& bias, const Variable& residual, bool training,
                      Generator& gen) const;

 private:
  std::shared_ptr<ProcessGroup> group_;
  double dropout_;
};

}  // namespace zt
