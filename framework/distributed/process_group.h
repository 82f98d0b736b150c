#pragma once
// ProcessGroup: collectives among the ranks of one job (one process per rank, as torchrun
// starts them). Backends: Gloo for CPU tensors (process_group_gloo.cpp), NCCL for CUDA
// tensors (process_group_nccl.cpp), and a trivial single-rank group.
#include <memory>
#include <string>
#include <vector>

#include "framework/distributed/store.h"
#include "framework/tensor.h"

namespace zt {

enum class ReduceOp { sum, max };

// A collective issued with *_async: wait() orders the caller after it. On NCCL the caller's
// current CUDA stream waits on the collective's event (no host wait); on Gloo the host
// blocks until the group's worker thread has finished it. Rethrows the collective's error.
class Work {
 public:
  virtual ~Work() = default;
  virtual void wait() = 0;
};

class ProcessGroup {
 public:
  virtual ~ProcessGroup() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string backend() const = 0;

  // In place on a contiguous tensor; every rank passes the same shape and dtype.
  virtual void all_reduce(Tensor& t, ReduceOp op) = 0;
  // out has shape [size(), in.shape...]; row r receives rank r's `in`.
  virtual void all_gather(const Tensor& in, Tensor& out) = 0;
  virtual void broadcast(Tensor& t, int root) = 0;
  virtual void barrier() = 0;

  // all_reduce that returns at once; `t` must stay alive and untouched until wait(). The
  // default runs it synchronously. Collectives of one group run in the order issued, async
  // or not, so every rank must issue them in the same order.
  virtual std::shared_ptr<Work> all_reduce_async(Tensor t, ReduceOp op);
  // in [size() * n] -> out [n]: rank r receives the op-reduction of every rank's chunk r. The
  // default is an all_reduce of a copy and a slice; backends may do better.
  virtual void reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op);
  // In place on a contiguous 1-D `flat` of size() * n elements (ZeRO's buckets): after wait(),
  // chunk rank() (elements [rank() * n, (rank() + 1) * n)) holds the op-reduction of every
  // rank's chunk; the other chunks are unspecified. The default all-reduces the whole (right
  // for every chunk, twice the traffic); NCCL reduce-scatters.
  virtual std::shared_ptr<Work> reduce_scatter_in_place_async(Tensor flat, ReduceOp op);
  // In place on a contiguous 1-D `flat` of size() * n elements: every rank's chunk rank()
  // goes to every rank's chunk of that index.
  virtual void all_gather_in_place(Tensor& flat);
};

// Where this process sits in the job, read from the environment of whichever launcher
// started it (first match wins):
//   build/bin/launch, torchrun:  RANK, WORLD_SIZE, LOCAL_RANK
//   OpenMPI's mpirun:            OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE, OMPI_COMM_WORLD_LOCAL_RANK
//   Slurm's srun:                SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID
// Defaults 0, 1, 0 (one rank). A launcher's rank variable without its world-size variable
// (or the reverse) is an error naming both, never a silent rank 0 or world of one. The rendezvous store comes from make_store_from_env()
// (store.h): a FileStore in $ZTRAIN_STORE_DIR.
struct RankInfo {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  std::string launcher = "none";  // which variables it came from: launch, mpirun, srun or none
  std::string variables;          // as read, for messages: "RANK=1 WORLD_SIZE=2 LOCAL_RANK=1"
};
RankInfo rank_info_from_env();

// backend: "gloo" (CPU), "nccl" (CUDA), or "auto" (nccl for a CUDA device, else gloo).
// A world of one rank needs no store and no backend library. Each group sees the store under
// its own key prefix ("group0/", "group1/", ... in creation order per Store object, the same
// order on every rank), so several groups can share one store. A backend that was not built
// in is a clear error.
std::shared_ptr<ProcessGroup> make_process_group(const std::string& backend, const RankInfo& info,
                                                 std::shared_ptr<Store> store, Device device);

// A group of some ranks of a world (Megatron's tensor- and data-parallel groups). Only the
// members call it, each with the same `ranks` (world ranks, ascending) and a `name` unique in
// the job ("tp0", "dp1", ...): the store is seen under "<name>/", so two disjoint groups made
// from one store never read each other's keys, whatever order ranks create them in. The
// caller's rank in the group is its index in `ranks`.
std::shared_ptr<ProcessGroup> make_subgroup(const std::string& backend, int world_rank, const std::vector<int>& ranks,
                                            const std::string& name, std::shared_ptr<Store> store, Device device);

}  // namespace zt
