#!/usr/bin/env python3
"""PyTorch's scaled_dot_product_attention on the shape bench_attention times, for comparison.

Times torch.nn.functional.scaled_dot_product_attention (causal, bf16) with each of PyTorch's
fused backends (flash, cuDNN, memory-efficient; chosen with torch.nn.attention.sdpa_kernel),
forward alone and forward + backward, median of CUDA-event timings after warm-up, and prints
ms per pass like build/bin/bench_attention. q, k and v are head views of one [B, T, 3C]
projection, as in GPT-2 (and as our op reads them), so layout conversions a backend needs are
part of its time.

    python tools/gpu/bench_sdpa_torch.py                 # B=16 T=1024 C=768 heads=12 (D=64)
    python tools/gpu/bench_sdpa_torch.py --heads 6       # D=128

Needs PyTorch >= 2.3 with CUDA (the GPU host's venv).
"""
import argparse
import statistics

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def median_ms(fn, warmup, reps):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--d-model", type=int, default=768)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--reps", type=int, default=20)
    args = p.parse_args()
    B, T, C, H = args.batch_size, args.seq_len, args.d_model, args.heads
    if C % H:
        raise SystemExit(f"--heads {H} does not divide --d-model {C}")
    D = C // H
    torch.manual_seed(1234)
    dev = torch.device("cuda")
    qkv = torch.randn(B, T, 3 * C, device=dev, dtype=torch.bfloat16)
    dout = torch.randn(B, H, T, D, device=dev, dtype=torch.bfloat16)

    def heads(x):  # [B, T, 3C] -> q, k, v as [B, H, T, D] views, as GPT-2 splits them
        q, k, v = x.split(C, dim=2)
        return [t.view(B, T, H, D).transpose(1, 2) for t in (q, k, v)]

    def forward():
        with torch.no_grad():
            F.scaled_dot_product_attention(*heads(qkv), is_causal=True)

    def forward_backward():
        x = qkv.detach().requires_grad_(True)
        F.scaled_dot_product_attention(*heads(x), is_causal=True).backward(dout)

    print(f"torch {torch.__version__} SDPA: B={B} T={T} C={C} heads={H} (D={D}) bf16, causal, "
          f"{torch.cuda.get_device_name()}, cuDNN {torch.backends.cudnn.version()}")
    print(f"| {'backend':<18} | {'pass':<16} | {'ms':>8} |")
    backends = [("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION),
                ("efficient", SDPBackend.EFFICIENT_ATTENTION)]
    for name, backend in backends:
        try:
            with sdpa_kernel(backend):
                fwd = median_ms(forward, 3, args.reps)
                both = median_ms(forward_backward, 3, args.reps)
        except RuntimeError as e:  # the backend refuses the shape or this build lacks it
            print(f"| {name:<18} | not available: {str(e).splitlines()[0][:70]}")
            continue
        print(f"| {name:<18} | {'forward':<16} | {fwd:8.3f} |")
        print(f"| {name:<18} | {'forward+backward':<16} | {both:8.3f} |")
        print(f"| {name:<18} | {'backward (diff)':<16} | {both - fwd:8.3f} |")


if __name__ == "__main__":
    main()
