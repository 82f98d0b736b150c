#pragma once
// Argument checks shared by the ops, so every op words the same mistake the same way, and
// the one error an op raises on a device whose kernels don't exist yet.
#include "framework/autograd/variable.h"

namespace zt::ops {

// Throws zt::Error "<op>: not implemented on CUDA yet". The CUDA backend replaces these
// calls op by op as it adds kernels.
[[noreturn]] void fail_not_implemented_on_cuda(const char* op);

// The dispatch guard every op calls before its CPU kernels: throws the error above when
// any defined tensor lives on a CUDA device.
void require_cpu(const char* op, std::initializer_list<const Tensor*> tensors);

// "<op>: <name> is an undefined Variable".
void check_defined(const char* op, const char* name, const Variable& v);
// "<op>: <name> must be floating (f32, bf16, f64), got i64".
void check_floating(const char* op, const char* name, const Tensor& t);
// "<op>: dtype mismatch: <name_a> is f32, <name_b> is f64".
void check_same_dtype(const char* op, const char* name_a, const Tensor& a, const char* name_b, const Tensor& b);
// "<op>: device mismatch: <name_a> is on cpu, <name_b> is on cuda:0".
void check_same_device(const char* op, const char* name_a, const Tensor& a, const char* name_b, const Tensor& b);
// The four checks above for two operands of a product: both defined, floating, one dtype,
// one device.
void check_operands(const char* op, const char* name_a, const Variable& a, const char* name_b, const Variable& b);
// An optional residual added to an op's output (linear, mlp): when defined, floating, x's dtype
// and device, and exactly the output's shape ("<op>: residual [2, 3] must have the output's
// shape [2, 4]").
void check_residual(const char* op, const Variable& x, const Variable& residual, const Shape& out_shape);

// The multi-index of element `flat` of a row-major tensor of `shape`, as "[1, 2]": errors
// name the position of a bad value (embedding ids).
std::string index_str(int64_t flat, const Shape& shape);

// The gradient a node receives, in the dtype of the output it belongs to and contiguous
// (a caller of backward(grad) may pass any dtype or a strided view).
Tensor grad_as(const Tensor& grad, DType dtype);

// The gradient a folding node (node.h's backward_folding) may add into its own gradient of an
// input that looks like `like`: &addends[i] when it is defined and has like's dtype, shape and
// device, else nullptr (the engine then sums the two itself).
const Tensor* foldable_addend(const std::vector<Tensor>& addends, size_t i, const Tensor& like);

}  // namespace zt::ops
