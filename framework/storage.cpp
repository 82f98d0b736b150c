#include "framework/storage.h"

#include <cstdlib>
#include <cstring>

#include "framework/error.h"
#ifdef ZTRAIN_WITH_CUDA
#include "framework/cuda/cuda_memory.h"
#endif

namespace zt {

namespace {
constexpr size_t kHostAlignment = 64;  // one cache line; enough for AVX-512 loads

[[noreturn, maybe_unused]] void no_cuda() {
  ZT_FAIL("this ztrain was built without CUDA (configure with nvcc present, ZTRAIN_CUDA=ON)");
}
}  // namespace

Storage::Storage(size_t nbytes, Device device) : nbytes_(nbytes), device_(device) {
  if (device.is_cpu()) {
    size_t rounded = (nbytes + kHostAlignment - 1) / kHostAlignment * kHostAlignment;
    data_ = std::aligned_alloc(kHostAlignment, rounded == 0 ? kHostAlignment : rounded);
    ZT_CHECK(data_ != nullptr, "out of host memory allocating ", nbytes, " bytes");
  } else {
#ifdef ZTRAIN_WITH_CUDA
    data_ = cuda::allocate(nbytes, device.index);
#else
    no_cuda();
#endif
  }
}

Storage::~Storage() {
  if (device_.is_cpu()) {
    std::free(data_);
  } else {
#ifdef ZTRAIN_WITH_CUDA
    cuda::deallocate(data_, device_.index);
#endif
  }
}

void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes) {
  if (nbytes == 0) return;
  if (dst_device.is_cpu() && src_device.is_cpu()) {
    std::memcpy(dst, src, nbytes);
    return;
  }
#ifdef ZTRAIN_WITH_CUDA
  cuda::copy(dst, src, nbytes);
#else
  no_cuda();
#endif
}

}  // namespace zt
