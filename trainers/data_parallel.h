#pragma once
// Data parallelism's gradient reduction (PyTorch DDP's buckets, Megatron's grad buffer) and,
// under ZeRO, the gathering of the updated weights. Parameters sit in flat f32 buckets
// (trainers/parameter_buckets.h); each bucket's collective over the data-parallel group starts
// as soon as backward has produced the last gradient in it, so communication overlaps the
// rest of backward. Per parallel.zero_stage:
//
//   0  every .grad is a view into its bucket; the last micro-batch's backward all-reduces
//      the buckets: every rank holds the whole summed gradient and updates every weight.
//   1  the same buckets, reduce-scattered instead: each rank holds the sum for its shard of
//      each bucket (the rest of the bucket is its own, unreduced), updates that shard's
//      weights (AdamW keeps m and v for the shard only, and with bf16 compute the f32 master
//      weights too, the model's leaves holding bf16 weights: trainers/adamw.h), and
//      all_gather_weights() brings every rank the others' updated shards (the bf16 weight
//      buckets in place, or the f32 weights).
//   2  no whole gradient buffers: every micro-batch's backward hands each bucket, once its
//      gradients are final, to a transient buffer that is reduce-scattered and added into
//      this rank's shard accumulator (shard-sized), and the parameters' gradients are
//      dropped. The gradient memory per rank is the shards plus the buckets in flight.
//
// The communication per step of stages 0 and 1 is the same (a reduce-scatter and an
// all-gather move what one all-reduce does); stage 2 reduce-scatters once per micro-batch.
//
//   zero_grad()        zeroes the buckets / shard accumulators
//   micro-batches      run their backward under sync_hook() when syncs(last) says so, then
//                      finish_micro_batch(last), which launches what is left and waits;
//                      the trainer scales the loss by 1 / the global token count, so the
//                      sum over the group is the gradient of the global mean
//   gradient           the reduced gradient of a piece of this rank's shard, for AdamW and
//                      the gradient norm
//
// Buckets are launched strictly in index order on every rank (a bucket that fills early
// waits for the ones before it), so all ranks issue the same collectives in the same order.
// On CUDA the collectives run on the NCCL stream, fenced by events (no host wait); on CPU on
// the Gloo group's worker thread.
#include <cstdint>
#include <memory>
#include <vector>

#include "framework/autograd/engine.h"
#include "framework/distributed/process_group.h"
#include "models/parameter_registry.h"
#include "trainers/adamw.h"
#include "trainers/parameter_buckets.h"

namespace zt {

class DataParallelGradients {
 public:
  // `layout` has group->size() shards when zero_stage >= 1, one otherwise.
  DataParallelGradients(std::vector<Parameter>& params, std::shared_ptr<ProcessGroup> group,
                        std::shared_ptr<const ParameterBuckets> layout, int zero_stage);

  void zero_grad();
  // Whether the backward of this micro-batch (`last`: the step's last) reduces buckets.
  bool syncs(bool last) const { return last || zero_stage_ == 2; }
  // The hook to install (LeafGradReadyHookGuard) around such a backward.
  LeafGradReadyHook sync_hook();
  // After each micro-batch's backward: when it synced, every bucket reduced and waited for.
  void finish_micro_batch(bool last);

  PieceGradient gradient() const;
  // Stages 1 and 2, after AdamW updated this rank's pieces: every rank receives every shard
  // of the weights. `resident`: AdamW's bf16 weight buckets when it keeps the masters
  // (AdamW::weight_buckets), gathered in place, half the bytes of f32; none: the f32
  // parameters, bucket by bucket through one bucket-sized buffer.
  void all_gather_weights(const std::vector<Tensor>& resident = {});

  int zero_stage() const { return zero_stage_; }
  int64_t num_buckets() const { return static_cast<int64_t>(buckets_.size()); }
  // Bytes of gradient storage held between micro-batches (buckets, or shard accumulators).
  int64_t gradient_bytes() const;

 private:
  struct Bucket {
    Tensor flat;       // stages 0, 1: the bucket, every member's .grad a view into it
    Tensor in_flight;  // stage 2: the bucket being reduce-scattered
    Tensor shard;      // stage 2: this rank's reduced shard, summed over micro-batches
    int64_t ready = 0;  // members final in this backward
    std::shared_ptr<Work> work;
  };
  void launch(int64_t b);
  void launch_ready();
  void wait_all();

  std::vector<Parameter>& params_;
  std::shared_ptr<ProcessGroup> group_;
  std::shared_ptr<const ParameterBuckets> layout_;
  int zero_stage_ = 0;
  std::vector<Bucket> buckets_;
  std::vector<std::pair<const VariableImpl*, int64_t>> bucket_of_;  // leaf -> bucket index
  int64_t next_launch_ = 0;
};

}  // namespace zt
