// Tensor's elementwise paths on CUDA (fill_, scale_, add_, converting copy_), which run as
// kernels on the device, against the same calls on the host. Skips without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#ifdef ZTRAIN_WITH_CUDA
#include <cuda_runtime.h>

#include "framework/cuda/cuda_check.h"
#include "framework/cuda/cuda_memory.h"
#include "framework/cuda/stream.h"
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

// Every kind of copy (host to device, device to host, device to device: contiguous, into a
// view, converting, strided) gives the same values on the legacy stream and on a
// non-blocking stream set with StreamGuard. On the latter the copies must follow the
// stream: a copy on the legacy stream would not wait for the fills queued before it (a
// non-blocking stream does not synchronise with it) and would read stale values.
TEST(TensorCuda, CopiesAreOrderedOnTheCurrentStream) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA GPU";
  const Device gpu = Device::cuda(0);
  cudaStream_t stream;
  ZT_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  for (bool own_stream : {false, true}) {
    SCOPED_TRACE(own_stream ? "non-blocking stream" : "legacy stream");
    cuda::StreamGuard guard(own_stream ? stream : cudaStream_t{nullptr});
    const Tensor host = Tensor::randn({257, 129}, DType::f64, test::test_generator()).to(DType::f32);
    const Tensor d = host.to(gpu);  // host to device
    EXPECT_TRUE(test::close_rel(d.to(Device::cpu()), host, 0)) << "round trip";
    EXPECT_TRUE(test::close_rel(d.clone(), host, 0)) << "device to device";
    EXPECT_TRUE(test::close_rel(d.to(DType::bf16), host.to(DType::bf16), 0)) << "converting";
    EXPECT_TRUE(test::close_rel(d.transpose(0, 1).contiguous(), host.transpose(0, 1).contiguous(), 0)) << "strided";
    Tensor into = Tensor::zeros({257, 129}, DType::f32, gpu);
    into.slice(0, 5, 9).copy_(d.slice(0, 100, 104));
    Tensor want = Tensor::zeros({257, 129}, DType::f32);
    want.slice(0, 5, 9).copy_(host.slice(0, 100, 104));
    EXPECT_TRUE(test::close_rel(into, want, 0)) << "into a view";

    // A long queue of kernels, each followed by a device copy of its result, read back last.
    Tensor big = Tensor::empty({1 << 24}, DType::f32, gpu);
    std::vector<Tensor> copies;
    for (int i = 1; i <= 8; ++i) {
      big.fill_(i);
      big.scale_(3);
      copies.push_back(big.clone());
    }
    for (int i = 1; i <= 8; ++i) {
      const std::vector<float> v = copies[i - 1].slice(0, (1 << 24) - 4, 1 << 24).to_vector<float>();
      for (float x : v) ASSERT_EQ(x, 3.0f * i) << "copy " << i;
    }
  }
  ZT_CUDA_CHECK(cudaStreamDestroy(stream));
}

// A device to device copy issued inside a CUDA graph capture is captured (a synchronous
// cudaMemcpy there would end the capture with an error) and replays in stream order.
TEST(TensorCuda, DeviceCopyIsCapturedInACudaGraph) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA GPU";
  const Device gpu = Device::cuda(0);
  Tensor src = Tensor::zeros({4096}, DType::f32, gpu), dst = Tensor::zeros({4096}, DType::f32, gpu);
  ZT_CUDA_CHECK(cudaDeviceSynchronize());
  cudaStream_t stream;
  ZT_CUDA_CHECK(cudaStreamCreate(&stream));
  cudaGraph_t graph;
  {
    cuda::StreamGuard guard(stream);
    ZT_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    src.scale_(2);
    dst.copy_(src);
    ZT_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  }
  cudaGraphExec_t exec;
  ZT_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  src.fill_(1.5);
  ZT_CUDA_CHECK(cudaDeviceSynchronize());
  ZT_CUDA_CHECK(cudaGraphLaunch(exec, stream));
  ZT_CUDA_CHECK(cudaStreamSynchronize(stream));
  for (float v : dst.to_vector<float>()) ASSERT_EQ(v, 3.0f);
  ZT_CUDA_CHECK(cudaGraphExecDestroy(exec));
  ZT_CUDA_CHECK(cudaGraphDestroy(graph));
  ZT_CUDA_CHECK(cudaStreamDestroy(stream));
}

TEST(TensorCuda, HostCopiesAreCountedPerDirection) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA GPU";
  const cuda::HostCopyCounts before = cuda::host_copy_counts();
  const Tensor d = Tensor::zeros({8}, DType::f32).to(Device::cuda(0));
  const Tensor c = d.clone();
  (void)c.to(Device::cpu());
  const cuda::HostCopyCounts after = cuda::host_copy_counts();
  EXPECT_EQ(after.to_device - before.to_device, 1);
  EXPECT_EQ(after.to_host - before.to_host, 1);
}
#endif

}  // namespace
}  // namespace zt
