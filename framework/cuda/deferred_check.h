#pragma once
// Input checks that a kernel makes on the device, read by the host only when it waits for
// the device anyway, so an op can validate device data (embedding ids, cross-entropy
// targets) without a host synchronisation of its own:
//
//   cuda::DeferredCheck check;                                  // a flag, 0
//   lookup_kernel<<<...>>>(..., check.device_flag());           // sets it to 1 on a bad id
//   check.commit([ids, vocab] { check_ids_cpu(ids.to(Device::cpu()), vocab); });
//
// Flags are words of pinned host memory mapped into the device: reading one is a host load,
// not a transfer. commit() records an event after the kernels; run_deferred_checks() looks
// at every committed check of the calling thread whose event has completed, and calls
// on_raised (which should throw, naming the bad input) for the first one whose flag is set.
// copy_bytes calls it after every device-to-host copy (Tensor::item, to_vector, to(cpu)), so
// the error surfaces at the first host read of any result after the bad launch, from then on.
// Until then the kernel must stay safe on bad input (e.g. write NaN rows, skip the scatter).
//
// A flag is reused once its check has run; a CUDA graph that captured a launch would keep
// writing to the flag it captured, so ops that check this way cannot be captured as they are.
#include <functional>

namespace zt::cuda {

class DeferredCheck {
 public:
  // Takes a free flag (set to 0). When all are taken by pending checks of this thread, waits
  // for the oldest to finish and runs the finished checks (which may throw).
  DeferredCheck();
  ~DeferredCheck();  // gives the flag back if commit() was never called (a launch failed)
  DeferredCheck(const DeferredCheck&) = delete;
  DeferredCheck& operator=(const DeferredCheck&) = delete;

  // The device address of the flag: kernels store a nonzero int to report bad input.
  int* device_flag() const { return device_flag_; }

  // After the kernels that may raise the flag are queued on current_stream().
  void commit(std::function<void()> on_raised);

 private:
  int slot_ = -1;
  int* device_flag_ = nullptr;
};

// Runs the calling thread's finished checks; throws the first raised check's error. Checks
// still running on the device stay pending. Cheap when nothing is pending.
void run_deferred_checks();

// Waits for all of the calling thread's pending checks, then runs them.
void wait_deferred_checks();

}  // namespace zt::cuda
