#include "ops/op_checks.h"

#include "ops/shape_ops_kernels.h"

namespace zt::ops {

void fail_not_implemented_on_cuda(const char* op) { ZT_FAIL(op, ": not implemented on CUDA yet"); }

void require_cpu(const char* op, std::initializer_list<const Tensor*> tensors) {
  for (const Tensor* t : tensors)
    if (t && t->defined() && t->device().is_cuda()) fail_not_implemented_on_cuda(op);
}

void check_defined(const char* op, const char* name, const Variable& v) {
  ZT_CHECK(v.defined(), op, ": ", name, " is an undefined Variable");
}

void check_floating(const char* op, const char* name, const Tensor& t) {
  ZT_CHECK(is_floating(t.dtype()), op, ": ", name, " must be floating (f32, bf16, f64), got ", dtype_name(t.dtype()));
}

void check_same_dtype(const char* op, const char* name_a, const Tensor& a, const char* name_b, const Tensor& b) {
  ZT_CHECK(a.dtype() == b.dtype(), op, ": dtype mismatch: ", name_a, " is ", dtype_name(a.dtype()), ", ", name_b,
           " is ", dtype_name(b.dtype()));
}

void check_same_device(const char* op, const char* name_a, const Tensor& a, const char* name_b, const Tensor& b) {
  ZT_CHECK(a.device() == b.device(), op, ": device mismatch: ", name_a, " is on ", a.device().str(), ", ", name_b,
           " is on ", b.device().str());
}

void check_operands(const char* op, const char* name_a, const Variable& a, const char* name_b, const Variable& b) {
  check_defined(op, name_a, a);
  check_defined(op, name_b, b);
  check_floating(op, name_a, a.tensor());
  check_floating(op, name_b, b.tensor());
  check_same_dtype(op, name_a, a.tensor(), name_b, b.tensor());
  check_same_device(op, name_a, a.tensor(), name_b, b.tensor());
}

void check_residual(const char* op, const Variable& x, const Variable& residual, const Shape& out_shape) {
  if (!residual.defined()) return;
  check_floating(op, "residual", residual.tensor());
  check_same_dtype(op, "x", x.tensor(), "residual", residual.tensor());
  check_same_device(op, "x", x.tensor(), "residual", residual.tensor());
  ZT_CHECK(residual.shape() == out_shape, op, ": residual ", shape_str(residual.shape()),
           " must have the output's shape ", shape_str(out_shape));
}

Tensor grad_as(const Tensor& grad, DType dtype) {
  Tensor g = grad.to(dtype);
  if (g.is_contiguous()) return g;
  return g.device().is_cpu() ? contiguous_cpu(g) : g.contiguous();
}

const Tensor* foldable_addend(const std::vector<Tensor>& addends, size_t i, const Tensor& like) {
  if (i >= addends.size()) return nullptr;
  const Tensor& a = addends[i];
  return a.defined() && a.dtype() == like.dtype() && a.shape() == like.shape() && a.device() == like.device() ? &a
                                                                                                              : nullptr;
}

std::string index_str(int64_t flat, const Shape& shape) {
  Shape idx(shape.size());
  for (int64_t d = static_cast<int64_t>(shape.size()) - 1; d >= 0; --d) {
    idx[d] = flat % shape[d];
    flat /= shape[d];
  }
  return shape_str(idx);
}

}  // namespace zt::ops
