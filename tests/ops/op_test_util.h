#pragma once
// Helpers shared by the op tests (tests/ops/*_test.cpp): fresh random inputs, error-message
// capture, and a check that an op's f32 path agrees with its f64 path, backward included.
#include <functional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "framework/autograd/variable.h"
#include "framework/device.h"
#include "tests/support/check.h"

namespace zt::test {

inline Tensor random(const Shape& shape, DType dtype, double scale = 1.0) {
  return Tensor::randn(shape, dtype, test_generator(), 0.0, scale);
}

inline ::testing::AssertionResult contains(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "\"" << text << "\" does not contain \"" << part << "\"";
}

// Runs f on the inputs converted to `dtype` (all requiring grad except those marked false in
// `differentiable`), backpropagates `out_grad` and returns {output, input grads...} in f64.
inline std::vector<Tensor> run_with_grads(const VarFn& f, const std::vector<Tensor>& inputs, DType dtype,
                                          const Tensor& out_grad, const std::vector<bool>& differentiable = {}) {
  std::vector<Variable> vars;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const bool diff = differentiable.empty() || differentiable[i];
    vars.emplace_back(is_floating(inputs[i].dtype()) ? inputs[i].to(dtype) : inputs[i], diff);
  }
  Variable out = f(vars);
  out.backward(out_grad.to(out.dtype()));
  std::vector<Tensor> result{out.tensor().to(DType::f64)};
  for (size_t i = 0; i < vars.size(); ++i)
    if (differentiable.empty() || differentiable[i]) result.push_back(vars[i].grad().to(DType::f64));
  return result;
}

// The op in f32 (or bf16) agrees with the op in f64 on output and every input gradient, for
// the same f64 inputs and a random output gradient. gradcheck proves the f64 path right;
// this carries that proof over to the f32 kernels. For CPU-only ops (dropout): an op with a
// CUDA kernel gets this check as rows of tests/ops/backend_ops_test.cpp.
inline void expect_dtype_matches_f64(const VarFn& f, const std::vector<Tensor>& inputs, DType dtype, double tol,
                                     const std::vector<bool>& differentiable = {}) {
  std::vector<Variable> probe;
  for (const Tensor& t : inputs) probe.emplace_back(t, false);
  const Tensor out_grad = random(f(probe).shape(), DType::f64);
  const std::vector<Tensor> want = run_with_grads(f, inputs, DType::f64, out_grad, differentiable);
  const std::vector<Tensor> got = run_with_grads(f, inputs, dtype, out_grad, differentiable);
  ASSERT_EQ(want.size(), got.size());
  for (size_t i = 0; i < want.size(); ++i)
    EXPECT_TRUE(close_rel(got[i], want[i], tol)) << (i == 0 ? "output" : "gradient " + std::to_string(i - 1)) << " in "
                                                 << dtype_name(dtype);
}

}  // namespace zt::test
