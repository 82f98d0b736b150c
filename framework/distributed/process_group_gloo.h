#pragma once
// The Gloo backend: collectives on CPU tensors over TCP (loopback by default). Built only
// when Gloo is found (ZTRAIN_WITH_GLOO); make_process_group("gloo", ...) is the usual way in.
#include <memory>

#include "framework/distributed/process_group.h"

namespace zt {

#ifdef ZTRAIN_WITH_GLOO
// Connects info.world_size ranks through `store` (make_process_group hands each group its
// own key prefix). Each rank listens on $ZTRAIN_GLOO_HOST, default 127.0.0.1 (ranks on one
// machine).
std::shared_ptr<ProcessGroup> make_gloo_process_group(const RankInfo& info, std::shared_ptr<Store> store);
#endif

}  // namespace zt
