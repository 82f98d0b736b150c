// Tensor's elementwise paths on CUDA (fill_, scale_, add_, converting copy_), which run as
// kernels on the device, against the same calls on the host. Skips without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#ifdef ZTRAIN_WITH_CUDA
#include "framework/cuda/tensor_kernels.h"
#endif
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

#ifdef ZTRAIN_WITH_CUDA
// The multi-tensor bf16 -> f32 widening behind the engine's leaf-gradient conversion: sizes
// around the 8-element groups and 2048-element chunks, a misaligned source view, overwrite
// (into NaN-poisoned outputs) and accumulate, and more tensors than one launch's table holds.
// Widening is exact, so the results must equal the host conversion bit for bit.
TEST(TensorCuda, WidenManyMatchesTheHostConversion) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA GPU";
  const Device gpu = Device::cuda(0);
  const int64_t sizes[] = {1, 7, 8, 9, 2047, 2048, 2049, 100003};
  std::vector<Tensor> src, dst, want;
  std::vector<cuda::WidenJob> jobs;
  for (int i = 0; i < 150; ++i) {
    const int64_t n = sizes[i % 8];
    const bool accumulate = i % 3 == 0, misaligned = i % 5 == 0;
    const Tensor s = Tensor::randn({n}, DType::f64, test::test_generator(), 0, 3).to(DType::bf16);
    Tensor d = accumulate ? Tensor::randn({n}, DType::f64, test::test_generator(), 0, 1).to(DType::f32)
                          : Tensor::full({n}, std::numeric_limits<double>::quiet_NaN(), DType::f32);
    Tensor w = s.to(DType::f32);
    if (accumulate) w.add_(d);
    if (misaligned) {  // a view at element 1 of a device buffer: 2 bytes past 16-byte alignment
      Tensor padded = Tensor::empty({n + 1}, DType::bf16, gpu);
      padded.slice(0, 1, n + 1).copy_(s.to(gpu));
      src.push_back(padded.slice(0, 1, n + 1));
    } else {
      src.push_back(s.to(gpu));
    }
    dst.push_back(d.to(gpu));
    want.push_back(w);
    jobs.push_back({static_cast<float*>(dst.back().raw_data()), src.back().raw_data(), n, accumulate});
  }
  cuda::widen_bf16_to_f32_many(0, jobs);
  for (size_t i = 0; i < dst.size(); ++i)
    EXPECT_TRUE(test::close_rel(dst[i].to(Device::cpu()), want[i], 0)) << "tensor " << i;
}
#endif

}  // namespace
}  // namespace zt
