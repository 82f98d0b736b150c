#pragma once
// Test helpers shared by every suite: comparison against a float64 reference, poisoning,
// and the finite-difference gradient check.
#include <functional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "framework/autograd/variable.h"
#include "framework/tensor.h"

namespace zt::test {

// ||actual - expected|| / max(||expected||, tiny) <= rel_tol, both converted to f64 on the host;
// shapes must match and no element of `actual` may be NaN (a poisoned, unwritten element
// shows up as NaN).
::testing::AssertionResult close_rel(const Tensor& actual, const Tensor& expected, double rel_tol);
// Elementwise |a - e| <= atol + rtol |e|; reports the worst element.
::testing::AssertionResult close_elementwise(const Tensor& actual, const Tensor& expected, double rtol, double atol);

// The message of the zt::Error that f() throws, or "(no error)": error tests compare text.
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// The same dtype, shape and bytes (after moving both to the host, contiguous): results that must
// be bit-identical, not merely close (activation checkpointing against none). Reports the first
// differing element.
::testing::AssertionResult same_bits(const Tensor& actual, const Tensor& expected);

// Fills a tensor with NaN (floating) or a sentinel (integers) so unwritten outputs are caught.
void poison(Tensor& t);

// Leaves NaN-filled blocks of each shape (in dtype and in f32, two of each) on the device
// allocator's free lists, so the next allocations of these sizes on `device` get poisoned
// memory: an output element a kernel fails to write then shows up as NaN.
void stock_poisoned_blocks(const std::vector<Shape>& shapes, DType dtype, Device device);

// Random inputs of shape on device: normal(0, scale), fresh per call (seeded from the clock-free
// counter below so failures are reproducible by seed, printed on failure).
Generator& test_generator();

using VarFn = std::function<Variable(const std::vector<Variable>&)>;

// Finite-difference check in f64: for random weights w, compares d<w, f(x)>/dx from backward
// against central differences. inputs must be f64; those in `differentiable` get gradients.
// max_elements > 0 checks only that many elements of each input, evenly spaced from the first
// to the last (two forward passes each), so large inputs stay cheap.
::testing::AssertionResult gradcheck(const VarFn& f, const std::vector<Tensor>& inputs,
                                     const std::vector<bool>& differentiable = {}, double eps = 1e-6,
                                     double tol = 1e-5, int64_t max_elements = 0);

}  // namespace zt::test
