#pragma once
// ProcessGroup: collectives among the ranks of one job (one process per rank, as torchrun
// starts them). Backends: Gloo for CPU tensors (process_group_gloo.cpp), NCCL for CUDA
// tensors (process_group_nccl.cpp), and a trivial single-rank group.
#include <memory>
#include <string>

#include "framework/distributed/store.h"
#include "framework/tensor.h"

namespace zt {

enum class ReduceOp { sum, max };

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
};

// Where this process sits in the job: RANK, WORLD_SIZE, LOCAL_RANK from the environment
// (defaults 0, 1, 0), as build/bin/launch and torchrun set them. The rendezvous store comes
// from make_store_from_env() (store.h): a FileStore in $ZTRAIN_STORE_DIR.
struct RankInfo {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
};
RankInfo rank_info_from_env();

// backend: "gloo" (CPU), "nccl" (CUDA), or "auto" (nccl for a CUDA device, else gloo).
// A world of one rank needs no store and no backend library. Each group sees the store under
// its own key prefix ("group0/", "group1/", ... in creation order per Store object, the same
// order on every rank), so several groups can share one store. A backend that was not built
// in is a clear error.
std::shared_ptr<ProcessGroup> make_process_group(const std::string& backend, const RankInfo& info,
                                                 std::shared_ptr<Store> store, Device device);

}  // namespace zt
