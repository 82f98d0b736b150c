#pragma once
// The NCCL backend: collectives on CUDA tensors (process_group_nccl.cpp, built only with
// CUDA and NCCL). The ranks exchange the NCCL unique id through `store`.
#include <memory>

#include "framework/distributed/process_group.h"

namespace zt {

#ifdef ZTRAIN_WITH_NCCL
std::shared_ptr<ProcessGroup> make_nccl_process_group(const RankInfo& info, std::shared_ptr<Store> store,
                                                      Device device);
#endif

}  // namespace zt
