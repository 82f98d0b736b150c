#pragma once
// The one way ops (and the trainer code above them) pick a CPU or a CUDA kernel: by where a
// tensor lives.
//   Tensor y = ZT_ON_DEVICE(x, gelu_forward_cpu(x), gelu_forward_cuda(x));
//   ZT_ON_DEVICE(out, gemm_cpu(a, b, out, d), gemm_cuda(a, b, out, d));  // void kernels
//   if (ZT_ON_DEVICE(x, false, linear_gelu_forward_cuda(...)))          // CUDA-only paths
// Both expressions must have one type (void included). The *_cuda functions are declared in
// the *_kernels.h headers only in CUDA builds: without CUDA no tensor can live on a GPU, and
// the CUDA expression is never compiled. So op sources need no #ifdef ZTRAIN_WITH_CUDA.
#ifdef ZTRAIN_WITH_CUDA
#define ZT_ON_DEVICE(t, cpu_expr, cuda_expr) ((t).device().is_cuda() ? (cuda_expr) : (cpu_expr))
#else  // t is still named, so a tensor used only for the choice is not an unused variable
#define ZT_ON_DEVICE(t, cpu_expr, cuda_expr) (static_cast<void>(t), (cpu_expr))
#endif
