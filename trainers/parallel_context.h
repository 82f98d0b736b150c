#pragma once
// Where this rank sits in a training job and the process groups it talks over (Megatron-LM's
// parallel_state): a world of N ranks is T-way tensor parallel (parallel.tensor_parallel_size)
// x D = N/T-way data parallel. World rank r is rank r % T of tensor-parallel group r / T
// (ranks [g T, (g+1) T): neighbours, the chattiest group on the fastest links) and rank r / T
// of data-parallel group r % T.
//
// The layout comes from the launcher's variables (framework/distributed/process_group.h:
// build/bin/launch, mpirun, srun); the rendezvous from $ZTRAIN_STORE_DIR or parallel.store_dir
// (under Slurm or OpenMPI a subfolder named after the job, so jobs never share keys). One
// rank needs neither: every group is then a group of one and nothing is communicated.
#include <memory>
#include <string>

#include "framework/device.h"
#include "framework/distributed/process_group.h"
#include "trainers/config.h"

namespace zt {

struct ParallelLayout {
  int world_size = 1, rank = 0, local_rank = 0;
  int tp_size = 1, tp_rank = 0;  // tensor parallel
  int dp_size = 1, dp_rank = 0;  // data parallel
  std::string launcher = "none";

  // zt::Error naming the values when T does not divide the world.
  static ParallelLayout of(const RankInfo& info, int64_t tensor_parallel_size);
  bool is_logger() const { return rank == 0; }  // the rank that prints and writes run files
  std::string describe() const;                 // "4 ranks (launch): tensor parallel 2 x data parallel 2"
};

struct ParallelContext {
  ParallelLayout layout;
  Device device;
  std::shared_ptr<ProcessGroup> world, tp, dp;  // groups of one on a single rank
};

// The device a rank trains on: train.device, where "cuda"/"auto" on a machine running several
// ranks means cuda:LOCAL_RANK (one GPU per rank; an error naming the counts when there are
// fewer GPUs than local ranks).
Device rank_device(const std::string& device_name, const ParallelLayout& layout, int local_world_size);

// One rank on `device`: groups of one (benchmarks, tools).
ParallelContext single_rank_context(Device device);

// Builds the layout, the device and the groups; on several ranks checks that every rank
// runs the same resolved config (an error naming the rank that differs). `config_yaml` is
// the resolved config's text.
ParallelContext make_parallel_context(const Config& config, const std::string& config_yaml);

}  // namespace zt
