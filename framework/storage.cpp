#include "framework/storage.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "framework/error.h"
#ifdef ZTRAIN_WITH_CUDA
#include "framework/cuda/cuda_memory.h"
#include "framework/cuda/deferred_check.h"
#endif

namespace zt {

namespace {
constexpr size_t kHostAlignment = 64;  // one cache line; enough for AVX-512 loads

[[noreturn, maybe_unused]] void no_cuda() {
  ZT_FAIL("this ztrain was built without CUDA (configure with nvcc present, ZTRAIN_CUDA=ON)");
}

// One counter for all storages, so a version names one storage's contents at one time.
uint64_t next_version() {
  static std::atomic<uint64_t> counter{0};
  return counter.fetch_add(1, std::memory_order_relaxed) + 1;
}
}  // namespace

void Storage::bump_version() { version_ = next_version(); }

Storage::Storage(size_t nbytes, Device device) : version_(next_version()), nbytes_(nbytes), device_(device) {
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
  cuda::copy(dst, dst_device.is_cuda(), src, src_device.is_cuda(), nbytes);
  // The host just waited for the stream: report inputs that kernels found bad (embedding ids).
  if (dst_device.is_cpu()) cuda::run_deferred_checks();
#else
  no_cuda();
#endif
}

}  // namespace zt
