#include "framework/storage.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "framework/device_backend.h"
#include "framework/error.h"

namespace zt {

namespace {
constexpr size_t kHostAlignment = 64;  // one cache line; enough for AVX-512 loads

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
    data_ = device_backend(device).allocate(nbytes, device.index);
  }
}

Storage::~Storage() {
  if (device_.is_cpu()) {
    std::free(data_);
  } else {
    device_backend(device_).deallocate(data_, device_.index);
  }
}

void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes) {
  if (nbytes == 0) return;
  if (dst_device.is_cpu() && src_device.is_cpu()) {
    std::memcpy(dst, src, nbytes);
    return;
  }
  DeviceBackend& backend = device_backend(dst_device.is_cpu() ? src_device : dst_device);
  backend.copy(dst, !dst_device.is_cpu(), src, !src_device.is_cpu(), nbytes);
  // The host just waited for the stream: report inputs that kernels found bad (embedding ids).
  if (dst_device.is_cpu()) backend.host_waited();
}

}  // namespace zt
