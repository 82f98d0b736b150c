#pragma once
// ZT_OP_RANGE("family"): an op-profiler range (framework/cuda/op_profiler.h) for the rest of
// the enclosing scope, usable from code that also builds without CUDA (there it is nothing).
// Framework and model code marks the work it issues outside any op (dtype casts, gradient
// accumulation, copies, fills) so bench_step --profile can name it; a range opened inside
// another counts for the outer one only.
#ifdef ZTRAIN_WITH_CUDA
#include "framework/cuda/op_profiler.h"
#define ZT_OP_RANGE_CAT2(a, b) a##b
#define ZT_OP_RANGE_CAT(a, b) ZT_OP_RANGE_CAT2(a, b)
#define ZT_OP_RANGE(family) ::zt::cuda::OpRange ZT_OP_RANGE_CAT(zt_op_range_, __LINE__)(family)
#else
#define ZT_OP_RANGE(family) static_cast<void>(0)
#endif
