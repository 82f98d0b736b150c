#!/usr/bin/env python3
"""The PyTorch reference for ztrain's training step: GPT-2 124M (nanoGPT's model: pre-LN
blocks, fused qkv, SDPA causal attention, tanh GELU, tied LM head on the padded vocabulary
50304), bf16 autocast, fused AdamW, global-norm clipping 1.0, and the same loss ztrain trains:
cross-entropy over the real vocabulary (50257) plus z_loss_weight * lse^2 per token.

Times optimizer steps on random tokens and prints tokens/s (median step), for eager and
torch.compile (the model and the loss compiled together), at each batch size:

    python3 tools/gpu/gpt2_torch_reference.py --batch-sizes 16,32 --steps 30 --warmup 8 --warmup-s 3

Runs on the GPU host's python3 (PyTorch 2.11); not part of the build or the tests."""
import argparse
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, C, H):
        super().__init__()
        self.H = H
        self.ln_1 = nn.LayerNorm(C)
        self.c_attn = nn.Linear(C, 3 * C)
        self.c_proj = nn.Linear(C, C)
        self.ln_2 = nn.LayerNorm(C)
        self.c_fc = nn.Linear(C, 4 * C)
        self.mlp_proj = nn.Linear(4 * C, C)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.H, C // self.H).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, L=12, H=12, C=768, T=1024, V=50304):
        super().__init__()
        self.wte = nn.Embedding(V, C)
        self.wpe = nn.Embedding(T, C)
        self.h = nn.ModuleList(Block(C, H) for _ in range(L))
        self.ln_f = nn.LayerNorm(C)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * L) if name.endswith("c_proj.weight") or name.endswith("mlp_proj.weight") else 0.02
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx):
        B, T = idx.shape
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        for b in self.h:
            x = b(x)
        return self.ln_f(x) @ self.wte.weight.t()  # tied head, padded vocabulary


def loss_fn(logits, targets, vocab, z_loss_weight):
    logits = logits[..., :vocab].float().view(-1, vocab)
    lse = torch.logsumexp(logits, dim=-1)
    ce = lse - logits.gather(1, targets.view(-1, 1)).squeeze(1)
    return (ce + z_loss_weight * lse * lse).mean()


class GPTWithLoss(nn.Module):
    """Model and loss in one module, so torch.compile fuses the loss too (compiling the model
    alone would leave the [tokens, V] f32 loss to eager kernels and flatter ztrain)."""

    def __init__(self, vocab, z_loss_weight):
        super().__init__()
        self.gpt = GPT()
        self.vocab = vocab
        self.z_loss_weight = z_loss_weight

    def forward(self, idx, targets):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = self.gpt(idx)
        return loss_fn(logits, targets, self.vocab, self.z_loss_weight)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-sizes", default="16,32")
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=8, help="untimed steps first (at least)")
    ap.add_argument("--warmup-s", type=float, default=3.0,
                    help="untimed steps for at least this many seconds (after compiling): the card settles at "
                         "its power-capped clock, as in bench_step")
    ap.add_argument("--z-loss", type=float, default=1e-4)
    ap.add_argument("--modes", default="compile,eager")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = True
    dev = "cuda"
    vocab = 50257
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
    for mode in args.modes.split(","):
        for B in (int(b) for b in args.batch_sizes.split(",")):
            model = GPTWithLoss(vocab, args.z_loss).to(dev)
            opt = torch.optim.AdamW(model.parameters(), lr=6e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
            fwd = torch.compile(model) if mode == "compile" else model

            def step():
                x = torch.randint(0, vocab, (B, args.seq_len), device=dev)
                y = torch.randint(0, vocab, (B, args.seq_len), device=dev)
                loss = fwd(x, y)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                opt.zero_grad(set_to_none=True)
                return loss.item()  # one host read a step, as a trainer logging its loss

            for _ in range(args.warmup):  # compiles in the first
                step()
            start = time.perf_counter()
            while time.perf_counter() - start < args.warmup_s:
                step()
            torch.cuda.synchronize()
            times = []
            for _ in range(args.steps):
                t0 = time.perf_counter()
                loss = step()
                torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
            med = statistics.median(times)
            print(f"torch {mode} B={B} T={args.seq_len}: median {med * 1e3:.2f} ms, "
                  f"{B * args.seq_len / med:.0f} tokens/s, loss {loss:.4f}", flush=True)
            del model, opt, fwd
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
