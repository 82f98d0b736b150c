// The choice of device backend (framework/device_backend.h): the host has none, CUDA has one
// exactly in CUDA builds, and a build without it says so when a tensor is put on a GPU.
#include <gtest/gtest.h>

#include <string>

#include "framework/device.h"
#include "framework/device_backend.h"
#include "framework/tensor.h"
#include "tests/support/check.h"

namespace zt {
namespace {

TEST(DeviceBackend, TheHostHasNone) {
  EXPECT_EQ(find_device_backend(DeviceType::CPU), nullptr);
  EXPECT_NE(test::error_of([] { device_backend(Device::cpu()); }).find("device cpu has no backend"),
            std::string::npos);
}

TEST(DeviceBackend, CudaHasOneExactlyInCudaBuilds) {
  DeviceBackend* cuda = find_device_backend(DeviceType::CUDA);
#ifdef ZTRAIN_WITH_CUDA
  ASSERT_NE(cuda, nullptr);
  EXPECT_EQ(&device_backend(Device::cuda(0)), cuda);
  EXPECT_EQ(cuda->device_count(), cuda_device_count());
#else
  EXPECT_EQ(cuda, nullptr);
  EXPECT_EQ(cuda_device_count(), 0);
  const std::string expected = "this ztrain was built without CUDA (configure with nvcc present, ZTRAIN_CUDA=ON)";
  EXPECT_EQ(test::error_of([] { device_backend(Device::cuda(0)); }), expected);
  EXPECT_EQ(test::error_of([] { Tensor::empty({2, 3}, DType::f32, Device::cuda(0)); }), expected);
  EXPECT_EQ(test::error_of([] { Tensor::zeros({2}, DType::f32).to(Device::cuda(0)); }), expected);
#endif
}

TEST(DeviceBackend, FreeMemoryOfAGpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA GPU";
  DeviceBackend& cuda = device_backend(Device::cuda(0));
  EXPECT_GT(cuda.free_memory(0), 0);
}

TEST(DeviceBackend, WidensManyBf16TensorsOnAGpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA GPU";
  const Device gpu = Device::cuda(0);
  const Tensor a = Tensor::randn({1000, 3}, DType::f32, test::test_generator()).to(DType::bf16).to(gpu);
  const Tensor b = Tensor::randn({17}, DType::f32, test::test_generator()).to(DType::bf16).to(gpu);
  Tensor wa = Tensor::empty(a.shape(), DType::f32, gpu);
  Tensor wb = Tensor::full(b.shape(), 1.5, DType::f32, gpu);
  device_backend(gpu).widen_bf16_to_f32_many(
      0, {{wa.data<float>(), a.raw_data(), a.numel(), false}, {wb.data<float>(), b.raw_data(), b.numel(), true}});
  EXPECT_TRUE(test::close_rel(wa, a.to(DType::f32), 0));
  Tensor expected_b = b.to(DType::f32);
  expected_b.add_(Tensor::full(b.shape(), 1.5, DType::f32, gpu));
  EXPECT_TRUE(test::close_rel(wb, expected_b, 1e-6));
}

}  // namespace
}  // namespace zt
