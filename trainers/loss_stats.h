#pragma once
// The cross-entropy's logging outputs of one optimizer step, summed over its micro-batches
// where they are (on the GPU: one tiny kernel per micro-batch, no host read), then reduced
// over the data-parallel group and read once: ce sum, z-loss sum, lse sum, row count, lse max.
#include "framework/distributed/process_group.h"
#include "framework/tensor.h"
#include "ops/cross_entropy.h"

namespace zt {

class LossStats {
 public:
  explicit LossStats(Device device);

  // Adds one micro-batch's ce_sum, z_sum, count and its rows' lse (sum and max; NaN wins the
  // max). Every row of the trainer's micro-batches is a target (no ignored rows).
  void add(const ops::CrossEntropyResult& r);

  struct Totals {
    double ce_sum = 0, z_sum = 0, lse_sum = 0, count = 0, lse_max = 0;
    double mean(double sum) const { return count > 0 ? sum / count : 0.0; }
  };
  // Sums (and the max) over the group, then the one host read.
  Totals reduce(ProcessGroup& dp);

 private:
  void add_on_host(const ops::CrossEntropyResult& r);

  Tensor sums_;  // f64 [4]: ce, z, lse, count
  Tensor max_;   // f64 [1]: lse max (-inf while empty)
};

#ifdef ZTRAIN_WITH_CUDA
namespace loss_stats_cuda {
// sums[0..3] += {ce_sum, z_sum, sum(lse), count}; max[0] = max(max[0], max(lse)) (NaN wins).
void accumulate(const Tensor& ce_sum, const Tensor& z_sum, const Tensor& count, const Tensor& lse, Tensor& sums,
                Tensor& max);
}  // namespace loss_stats_cuda
#endif

}  // namespace zt
