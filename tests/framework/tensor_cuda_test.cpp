// Tensor's elementwise paths on CUDA (fill_, scale_, add_, converting copy_), which run as
// kernels on the device, against the same calls on the host. Skips without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "framework/device.h"
#include "framework/tensor.h"
#include "tests/support/check.h"

namespace zt {
namespace {

TEST(TensorCuda, ElementwiseKernelsMatchTheHost) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA GPU";
  const Device gpu = Device::cuda(0);
  const DType all[] = {DType::f32, DType::bf16, DType::f64, DType::i32, DType::i64};
  for (DType a : all) {
    const Tensor host = Tensor::randn({1000, 37}, DType::f64, test::test_generator(), 0, 50).to(a);
    // fill_ (zero takes the memset path, other values the kernel)
    for (double v : {0.0, -2.5, 3.0}) {
      Tensor d = host.to(gpu);
      d.fill_(v);
      Tensor h = host.clone();
      h.fill_(v);
      EXPECT_TRUE(test::close_rel(d, h, 0)) << dtype_name(a) << " fill " << v;
    }
    if (is_floating(a)) {
      Tensor d = host.to(gpu);
      d.scale_(-0.37);
      Tensor h = host.clone();
      h.scale_(-0.37);
      EXPECT_TRUE(test::close_rel(d, h, a == DType::bf16 ? 4e-3 : 1e-7)) << dtype_name(a) << " scale";
    }
    for (DType b : all) {
      const Tensor other = Tensor::randn({1000, 37}, DType::f64, test::test_generator(), 0, 50).to(b);
      if (is_floating(a)) {
        Tensor d = host.to(gpu);
        d.add_(other.to(gpu), 0.5);
        Tensor h = host.clone();
        h.add_(other, 0.5);
        EXPECT_TRUE(test::close_rel(d, h, a == DType::bf16 ? 4e-3 : 1e-7)) << dtype_name(a) << " += " << dtype_name(b);
      }
      Tensor d = Tensor::empty(host.shape(), b, gpu);
      test::poison(d);
      d.copy_(host.to(gpu));
      EXPECT_TRUE(test::close_rel(d, host.to(b), 0)) << dtype_name(a) << " -> " << dtype_name(b);
    }
  }
  // NaN survives a bf16 fill (poisoning relies on it).
  Tensor n = Tensor::empty({17}, DType::bf16, gpu);
  n.fill_(std::numeric_limits<double>::quiet_NaN());
  for (double v : n.to_vector<double>()) EXPECT_TRUE(std::isnan(v));
}

}  // namespace
}  // namespace zt
