#include "framework/cuda/deferred_check.h"

#include <cuda_runtime.h>

#include <atomic>
#include <cstring>
#include <list>
#include <mutex>
#include <thread>
#include <vector>

#include "framework/cuda/cuda_check.h"
#include "framework/cuda/stream.h"
#include "framework/error.h"

namespace zt::cuda {

namespace {

constexpr int kFlags = 1024;  // pending checks at once; a training step has a few

struct Pending {
  int slot;
  std::thread::id thread;
  std::function<void()> on_raised;
};

struct Registry {
  std::mutex mu;
  volatile int* host_flags = nullptr;  // pinned host memory, mapped into the devices
  int* device_flags = nullptr;         // the same words as device addresses
  std::vector<int> free_slots;
  std::vector<cudaEvent_t> events;  // per slot, created on first use on the launching device
  std::vector<int> event_device;
  std::list<Pending> pending;  // committed, oldest first

  void init() {
    if (host_flags) return;
    void* host = nullptr;
    void* device = nullptr;
    ZT_CUDA_CHECK(cudaHostAlloc(&host, kFlags * sizeof(int), cudaHostAllocMapped | cudaHostAllocPortable));
    std::memset(host, 0, kFlags * sizeof(int));
    ZT_CUDA_CHECK(cudaHostGetDevicePointer(&device, host, 0));
    host_flags = static_cast<volatile int*>(host);
    device_flags = static_cast<int*>(device);
    for (int i = kFlags - 1; i >= 0; --i) free_slots.push_back(i);
    events.assign(kFlags, nullptr);
    event_device.assign(kFlags, -1);
  }
};

// Never destroyed: checks may still be pending when static destructors run at exit.
Registry& registry() {
  static Registry* r = new Registry;
  return *r;
}

thread_local bool t_running = false;  // on_raised reads ids back: no recursion from copy_bytes

// A thread that exits with checks pending takes them along (they are its errors, nobody
// else's): waits for their kernels, then gives their flags back.
struct ThreadChecks {
  bool committed = false;
  ~ThreadChecks() {
    if (!committed) return;
    Registry& r = registry();
    std::lock_guard<std::mutex> lock(r.mu);
    const std::thread::id me = std::this_thread::get_id();
    for (auto it = r.pending.begin(); it != r.pending.end();) {
      if (it->thread != me) {
        ++it;
        continue;
      }
      cudaEventSynchronize(r.events[static_cast<size_t>(it->slot)]);  // no error to report to anyone now
      r.host_flags[it->slot] = 0;
      r.free_slots.push_back(it->slot);
      it = r.pending.erase(it);
    }
  }
};
thread_local ThreadChecks t_checks;

void run(bool wait) {
  if (t_running) return;
  Registry& r = registry();
  std::function<void()> raised;
  {
    std::lock_guard<std::mutex> lock(r.mu);
    if (r.pending.empty()) return;
    const std::thread::id me = std::this_thread::get_id();
    for (auto it = r.pending.begin(); it != r.pending.end();) {
      if (it->thread != me) {
        ++it;
        continue;
      }
      const cudaEvent_t ev = r.events[static_cast<size_t>(it->slot)];
      const cudaError_t st = wait ? cudaEventSynchronize(ev) : cudaEventQuery(ev);
      if (st == cudaErrorNotReady) {
        ++it;
        continue;
      }
      // Finished (or the device failed, which the next checked CUDA call reports): read the
      // flag once, give the slot back.
      std::atomic_thread_fence(std::memory_order_acquire);
      const bool set = st == cudaSuccess && r.host_flags[it->slot] != 0;
      r.host_flags[it->slot] = 0;
      r.free_slots.push_back(it->slot);
      if (set && !raised) raised = std::move(it->on_raised);
      it = r.pending.erase(it);
    }
  }
  if (!raised) return;
  t_running = true;
  struct Reset {
    ~Reset() { t_running = false; }
  } reset;
  raised();
  ZT_FAIL("a device-side input check failed");  // on_raised did not throw its own message
}

}  // namespace

DeferredCheck::DeferredCheck() {
  Registry& r = registry();
  for (int attempt = 0;; ++attempt) {
    {
      std::lock_guard<std::mutex> lock(r.mu);
      r.init();
      if (!r.free_slots.empty()) {
        slot_ = r.free_slots.back();
        r.free_slots.pop_back();
        device_flag_ = r.device_flags + slot_;
        return;
      }
    }
    ZT_CHECK(attempt == 0, "more than ", kFlags, " device-side checks pending at once");
    wait_deferred_checks();
  }
}

// An uncommitted flag is not given back: its kernel may have been launched before the
// failure and could still write it. Leaking one of kFlags words on an error path is harmless.
DeferredCheck::~DeferredCheck() = default;

void DeferredCheck::commit(std::function<void()> on_raised) {
  ZT_CHECK(slot_ >= 0, "DeferredCheck committed twice");
  int device = 0;
  ZT_CUDA_CHECK(cudaGetDevice(&device));
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  cudaEvent_t& ev = r.events[static_cast<size_t>(slot_)];
  if (ev && r.event_device[static_cast<size_t>(slot_)] != device) {
    cudaEventDestroy(ev);
    ev = nullptr;
  }
  if (!ev) {
    ZT_CUDA_CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
    r.event_device[static_cast<size_t>(slot_)] = device;
  }
  ZT_CUDA_CHECK(cudaEventRecord(ev, current_stream()));
  r.pending.push_back({slot_, std::this_thread::get_id(), std::move(on_raised)});
  t_checks.committed = true;
  slot_ = -1;
}

void run_deferred_checks() { run(false); }
void wait_deferred_checks() { run(true); }

}  // namespace zt::cuda
