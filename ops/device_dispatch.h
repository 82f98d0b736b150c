#pragma once
// Picks an op's CPU or CUDA kernel by where a tensor lives (internal to ops/):
//   Tensor y = ZT_ON_DEVICE(x, gelu_forward_cpu(x), gelu_forward_cuda(x));
// Both expressions must have one type. Without CUDA no tensor can live on a GPU, and the
// CUDA expression is never compiled (its functions are not declared then).
#ifdef ZTRAIN_WITH_CUDA
#define ZT_ON_DEVICE(t, cpu_expr, cuda_expr) ((t).device().is_cuda() ? (cuda_expr) : (cpu_expr))
#else
#define ZT_ON_DEVICE(t, cpu_expr, cuda_expr) (cpu_expr)
#endif
