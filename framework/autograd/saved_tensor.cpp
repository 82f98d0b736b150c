#include "framework/autograd/saved_tensor.h"

#include "framework/autograd/node.h"

namespace zt {

SavedTensor::SavedTensor(Tensor t) : tensor_(std::move(t)) {
  if (tensor_.defined()) version_ = tensor_.storage()->version();
}

void fail_released(const Node& owner) {
  ZT_FAIL("backward of '", owner.name(),
          "': its saved tensors were already freed by an earlier backward through this graph; pass "
          "retain_graph=true to the first backward to run backward through a graph twice");
}

const Tensor& SavedTensor::get(const Node& owner) const {
  if (released_) fail_released(owner);
  if (tensor_.defined() && tensor_.storage()->version() != version_) {
    ZT_FAIL("backward of '", owner.name(), "': a tensor it saved (shape ", shape_str(tensor_.shape()), ", ",
            dtype_name(tensor_.dtype()), ") was modified in place (version ", tensor_.storage()->version(),
            ", saved at ", version_,
            "); an in-place write after the forward pass (copy_, fill_, add_, scale_, an optimizer step, or "
            "cross_entropy with inplace_grad, which writes the gradient into the logits) changed values this "
            "backward needs. Write into a clone, or pass inplace_grad=false when the logits feed another op");
  }
  return tensor_;
}

void SavedTensor::release() {
  released_ = released_ || tensor_.defined();
  tensor_ = Tensor();
}

}  // namespace zt
