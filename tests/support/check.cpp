#include "tests/support/check.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

namespace zt::test {

namespace {
std::vector<double> host(const Tensor& t) { return t.to_vector<double>(); }
}  // namespace

::testing::AssertionResult close_rel(const Tensor& actual, const Tensor& expected, double rel_tol) {
  if (actual.shape() != expected.shape())
    return ::testing::AssertionFailure() << "shape " << shape_str(actual.shape()) << " vs expected "
                                         << shape_str(expected.shape());
  std::vector<double> a = host(actual), e = host(expected);
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) && !std::isnan(e[i]))
      return ::testing::AssertionFailure() << "element " << i << " is NaN (unwritten?), expected " << e[i];
    if (std::isinf(e[i]) || std::isinf(a[i])) {
      if (a[i] != e[i]) return ::testing::AssertionFailure() << "element " << i << ": " << a[i] << " vs " << e[i];
      continue;
    }
    if (std::isnan(e[i])) continue;
    num += (a[i] - e[i]) * (a[i] - e[i]);
    den += e[i] * e[i];
  }
  const double rel = std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
  if (rel <= rel_tol || (den == 0 && num < 1e-30)) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "relative error " << rel << " > " << rel_tol << " (shape "
                                       << shape_str(actual.shape()) << ")";
}

::testing::AssertionResult close_elementwise(const Tensor& actual, const Tensor& expected, double rtol, double atol) {
  if (actual.shape() != expected.shape())
    return ::testing::AssertionFailure() << "shape " << shape_str(actual.shape()) << " vs expected "
                                         << shape_str(expected.shape());
  std::vector<double> a = host(actual), e = host(expected);
  for (size_t i = 0; i < a.size(); ++i) {
    const bool ok = (a[i] == e[i]) || std::abs(a[i] - e[i]) <= atol + rtol * std::abs(e[i]);
    if (!ok) return ::testing::AssertionFailure() << "element " << i << ": " << a[i] << " vs expected " << e[i];
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult same_bits(const Tensor& actual, const Tensor& expected) {
  if (actual.dtype() != expected.dtype() || actual.shape() != expected.shape())
    return ::testing::AssertionFailure() << dtype_name(actual.dtype()) << " " << shape_str(actual.shape())
                                         << " vs expected " << dtype_name(expected.dtype()) << " "
                                         << shape_str(expected.shape());
  const Tensor a = actual.to(Device::cpu()).contiguous(), e = expected.to(Device::cpu()).contiguous();
  const size_t width = dtype_size(a.dtype());
  const auto* pa = static_cast<const unsigned char*>(a.raw_data());
  const auto* pe = static_cast<const unsigned char*>(e.raw_data());
  for (size_t i = 0; i < a.nbytes(); i += width)
    if (std::memcmp(pa + i, pe + i, width) != 0)
      return ::testing::AssertionFailure() << "element " << i / width << " differs: " << host(a)[i / width]
                                           << " vs expected " << host(e)[i / width];
  return ::testing::AssertionSuccess();
}

void poison(Tensor& t) {
  if (is_floating(t.dtype())) t.fill_(std::numeric_limits<double>::quiet_NaN());
  else t.fill_(-123456789);
}

void stock_poisoned_blocks(const std::vector<Shape>& shapes, DType dtype, Device device) {
  std::vector<Tensor> blocks;
  for (const Shape& s : shapes)
    for (DType t : {dtype, DType::f32})
      for (int copy = 0; copy < 2; ++copy) {
        Tensor b = Tensor::empty(s, t, device);
        poison(b);
        blocks.push_back(b);
      }
}  // freed here: the next allocations of these buckets get poisoned memory

Generator& test_generator() {
  // Seeded from gtest's random seed so --gtest_random_seed reproduces a failure; fresh
  // values every call within a run.
  static Generator gen(0x5eed0000u + static_cast<uint64_t>(::testing::UnitTest::GetInstance()->random_seed()));
  return gen;
}

::testing::AssertionResult gradcheck(const VarFn& f, const std::vector<Tensor>& inputs,
                                     const std::vector<bool>& differentiable, double eps, double tol,
                                     int64_t max_elements) {
  auto diff = [&](size_t i) { return differentiable.empty() || differentiable[i]; };
  std::vector<Variable> vars;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (inputs[i].dtype() != DType::f64 && diff(i))
      return ::testing::AssertionFailure() << "gradcheck input " << i << " must be f64";
    vars.emplace_back(inputs[i].clone(), diff(i));
  }
  Variable out = f(vars);
  Tensor w = Tensor::randn(out.shape(), DType::f64, test_generator());
  out.backward(w);
  auto objective = [&](const std::vector<Variable>& vs) {
    Tensor o = f(vs).tensor().to(Device::cpu()).contiguous();
    std::vector<double> ov = o.to_vector<double>(), wv = w.to_vector<double>();
    double s = 0;
    for (size_t k = 0; k < ov.size(); ++k) s += ov[k] * wv[k];
    return s;
  };
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!diff(i)) continue;
    if (!vars[i].has_grad()) return ::testing::AssertionFailure() << "input " << i << " got no gradient";
    std::vector<double> analytic = vars[i].grad().to_vector<double>();
    const int64_t n = inputs[i].numel(), checked = max_elements > 0 ? std::min(n, max_elements) : n;
    for (int64_t c = 0; c < checked; ++c) {
      const int64_t k = checked > 1 ? c * (n - 1) / (checked - 1) : 0;
      std::vector<Variable> plus, minus;
      for (size_t j = 0; j < inputs.size(); ++j) {
        Tensor tp = inputs[j].clone(), tm = inputs[j].clone();
        if (j == i) {
          tp.data<double>()[k] += eps;
          tm.data<double>()[k] -= eps;
        }
        plus.emplace_back(tp, false);
        minus.emplace_back(tm, false);
      }
      const double numeric = (objective(plus) - objective(minus)) / (2 * eps);
      const double err = std::abs(numeric - analytic[k]);
      if (err > tol * std::max(1.0, std::abs(numeric)))
        return ::testing::AssertionFailure() << "input " << i << " element " << k << ": analytic " << analytic[k]
                                             << " vs numeric " << numeric;
    }
  }
  return ::testing::AssertionSuccess();
}

}  // namespace zt::test
