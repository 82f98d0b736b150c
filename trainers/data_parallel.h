#pragma once
// Data parallelism's gradient averaging (PyTorch DDP's buckets, Megatron's grad buffer):
// every parameter's .grad is a view into one of a few flat f32 buckets, and each bucket's
// all-reduce over the data-parallel group starts as soon as backward has produced the last
// gradient in it, so communication overlaps the rest of backward.
//
//   zero_grad()        zeroes the buckets (the views stay each parameter's .grad)
//   micro-batches      backward accumulates into the buckets in place; only the last one
//                      runs under sync_hook(), which launches buckets as they fill
//   finish()           launches what is left and waits; then every rank holds the SUM over
//                      the group (the trainer scales the loss by 1 / the global token count,
//                      so the sum is the gradient of the global mean)
//
// Buckets are launched strictly in index order on every rank (a bucket that fills early
// waits for the ones before it), so all ranks issue the same collectives in the same order.
// Parameters go into buckets in reverse registration order: backward produces the last
// layers' gradients first. On CUDA the all-reduces run on the NCCL stream, fenced by events
// (no host wait); on CPU on the Gloo group's worker thread.
#include <cstdint>
#include <memory>
#include <vector>

#include "framework/autograd/engine.h"
#include "framework/distributed/process_group.h"
#include "models/parameter_registry.h"

namespace zt {

class DataParallelGradients {
 public:
  // bucket_bytes: the f32 bytes per bucket (a parameter larger than that gets its own).
  DataParallelGradients(std::vector<Parameter>& params, std::shared_ptr<ProcessGroup> group, int64_t bucket_bytes);

  void zero_grad();
  // The hook to install (LeafGradReadyHookGuard) around the step's last backward.
  LeafGradReadyHook sync_hook();
  void finish();

  int64_t num_buckets() const { return static_cast<int64_t>(buckets_.size()); }

 private:
  struct Bucket {
    Tensor flat;
    int64_t params = 0;  // how many parameters live in it
    int64_t ready = 0;   // of them, final in this backward
    std::shared_ptr<Work> work;
  };
  void launch_ready();

  std::shared_ptr<ProcessGroup> group_;
  std::vector<Bucket> buckets_;
  std::vector<std::pair<const VariableImpl*, int64_t>> bucket_of_;  // leaf -> bucket index
  int64_t next_launch_ = 0;
};

}  // namespace zt
