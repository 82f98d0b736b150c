#include "framework/cuda/cuda_backend.h"

#include <cuda_runtime.h>

#include "framework/cuda/cuda_memory.h"
#include "framework/cuda/deferred_check.h"
#include "framework/cuda/strided_copy.h"
#include "framework/cuda/tensor_kernels.h"

namespace zt::cuda {

namespace {

class CudaInputCheck final : public DeviceBackend::InputCheck {
 public:
  int* device_flag() override { return check_.device_flag(); }
  void commit(std::function<void()> on_raised) override { check_.commit(std::move(on_raised)); }

 private:
  DeferredCheck check_;
};

class CudaBackend final : public DeviceBackend {
 public:
  int device_count() override { return cuda::device_count(); }

  double free_memory(int device) override {
    int previous = 0;
    size_t free_b = 0, total_b = 0;
    if (cudaGetDevice(&previous) != cudaSuccess || cudaSetDevice(device) != cudaSuccess) return 0;
    const bool ok = cudaMemGetInfo(&free_b, &total_b) == cudaSuccess;
    cudaSetDevice(previous);
    return ok ? static_cast<double>(free_b) : 0;
  }

  void* allocate(size_t nbytes, int device) override { return cuda::allocate(nbytes, device); }
  void deallocate(void* ptr, int device) override { cuda::deallocate(ptr, device); }
  void copy(void* dst, bool dst_on_device, const void* src, bool src_on_device, size_t nbytes) override {
    cuda::copy(dst, dst_on_device, src, src_on_device, nbytes);
  }
  void host_waited() override { run_deferred_checks(); }
  std::unique_ptr<InputCheck> input_check() override { return std::make_unique<CudaInputCheck>(); }
  void wait_input_checks() override { wait_deferred_checks(); }

  void convert(int device, void* dst, DType dst_dtype, const void* src, DType src_dtype, int64_t n) override {
    cuda::convert(device, dst, dst_dtype, src, src_dtype, n);
  }
  void strided_copy(int device, void* dst, DType dst_dtype, const std::vector<int64_t>& dst_strides, const void* src,
                    DType src_dtype, const std::vector<int64_t>& src_strides,
                    const std::vector<int64_t>& shape) override {
    cuda::strided_copy(device, dst, dst_dtype, dst_strides, src, src_dtype, src_strides, shape);
  }
  void fill(int device, void* dst, DType dtype, int64_t n, double value) override {
    cuda::fill(device, dst, dtype, n, value);
  }
  void add_scaled(int device, void* a, DType a_dtype, const void* b, DType b_dtype, int64_t n,
                  double alpha) override {
    cuda::add_scaled(device, a, a_dtype, b, b_dtype, n, alpha);
  }
  void scale(int device, void* data, DType dtype, int64_t n, double factor) override {
    cuda::scale(device, data, dtype, n, factor);
  }
  void widen_bf16_to_f32_many(int device, const std::vector<WidenJob>& jobs) override {
    cuda::widen_bf16_to_f32_many(device, jobs);
  }
};

}  // namespace

DeviceBackend& backend() {
  // Never destroyed: storages freed during static destruction (caches of tensors) still
  // reach it.
  static CudaBackend* instance = new CudaBackend;
  return *instance;
}

}  // namespace zt::cuda
