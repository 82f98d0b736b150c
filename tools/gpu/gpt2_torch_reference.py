#!/usr/bin/env python3
"""The PyTorch reference for ztrain's training step: GPT-2 124M (nanoGPT's model: pre-LN
blocks, fused qkv, SDPA causal attention, tanh GELU, tied LM head on the padded vocabulary
50304), bf16 autocast, fused AdamW, global-norm clipping 1.0, and the same loss ztrain trains:
cross-entropy over the real vocabulary (50257) plus z_loss_weight * lse^2 per token.

Times optimizer steps on random tokens and prints tokens/s (median step), for eager and
torch.compile (the model and the loss compiled together), at each batch size:

    python3 tools/gpu/gpt2_torch_reference.py --batch-sizes 16,32 --steps 30 --warmup 8 --warmup-s 3

--arch llama times the twin of ztrain's llama model instead (models/llama.h; the shape flags
default to configs/llama_small.yaml): pre-norm blocks, RMSNorm (eps 1e-6), one fused qkv
product for 12 query and 4 key/value heads (grouped-query attention), QK-norm (RMSNorm over
each head's dim, one [D] gain for q and one for k, shared by the heads) then RoPE (theta
500000, rotate-half pairs (i, i + D/2)), SDPA causal attention, SwiGLU (d_ff 2048, one
gate|up product), no biases, an untied head over the Llama 3 vocabulary (128256, a multiple
of 128 already). Everything else is the GPT-2 path's: bf16 autocast over fp32 weights, the
model and the same loss compiled together, fused AdamW, clipping 1.0, the same timing. Its
result line adds MFU against --peak-tflops with bench_step's convention (6 N + 6 L d T FLOPs
a token, N every parameter, both vocabulary tables included):

    python3 tools/gpu/gpt2_torch_reference.py --arch llama --batch-sizes 16 --steps 20 --warmup 6 --warmup-s 3 --modes compile

Runs on the GPU host's python3 (PyTorch 2.11); not part of the build or the tests
(--device cpu: a slow smoke run of the same code, fp32 GPT-2 / bf16-autocast llama)."""
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


# ---- The llama twin (--arch llama): ztrain's models/llama.h in idiomatic PyTorch. ----

# enable_gqa (torch >= 2.5) lets SDPA's fused kernels read the 4 key/value heads directly
# (flash and cuDNN attention take fewer kv heads than query heads); older torch, or
# --gqa repeat, repeats each kv head for its query heads first (repeat_interleave: query head
# h reads kv head h // (n_head / n_kv_head), as in ztrain and as enable_gqa itself).
SDPA_HAS_GQA = tuple(int(v) for v in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 5)

LLAMA_DEFAULTS = dict(  # configs/llama_small.yaml's model section
    n_layer=12, n_head=12, n_kv_head=4, d_model=768, d_ff=2048, vocab_size=128256, vocab_multiple=128,
    norm_eps=1e-6, rope_theta=500000.0)


def rms_norm(x, weight, eps):
    if hasattr(F, "rms_norm"):  # torch >= 2.4 (a fused kernel eager; Inductor fuses it into its neighbours)
        return F.rms_norm(x, (x.shape[-1],), weight, eps)
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return rms_norm(x, self.weight, self.eps)


def apply_rope(x, cos, sin):
    """Rotate-half RoPE on [B, T, heads, D]: pair (i, i + D/2) turned by pos * theta^(-2i/D)."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class LlamaBlock(nn.Module):
    def __init__(self, C, H, Hkv, Fw, eps, gqa):
        super().__init__()
        self.H, self.Hkv, self.D, self.gqa = H, Hkv, C // H, gqa
        D = self.D
        self.attn_norm = RMSNorm(C, eps)
        self.wqkv = nn.Linear(C, (H + 2 * Hkv) * D, bias=False)  # [wq; wk; wv]: one product
        self.q_norm = RMSNorm(D, eps)  # QK-norm: one [D] gain each for q and k, shared by the heads
        self.k_norm = RMSNorm(D, eps)
        self.wo = nn.Linear(H * D, C, bias=False)
        self.mlp_norm = RMSNorm(C, eps)
        self.w_gate_up = nn.Linear(C, 2 * Fw, bias=False)  # [gate; up]: one product
        self.w_down = nn.Linear(Fw, C, bias=False)

    def forward(self, x, cos, sin):
        B, T, C = x.shape
        H, Hkv, D = self.H, self.Hkv, self.D
        q, k, v = self.wqkv(self.attn_norm(x)).split([H * D, Hkv * D, Hkv * D], dim=2)
        # QK-norm (in f32, as the norms of the GPT-2 path run under autocast), then RoPE, then
        # back to v's bf16 for SDPA. Under torch.compile the three are one fused kernel.
        q = apply_rope(self.q_norm(q.view(B, T, H, D).float()), cos, sin).to(v.dtype)
        k = apply_rope(self.k_norm(k.view(B, T, Hkv, D).float()), cos, sin).to(v.dtype)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.view(B, T, Hkv, D).transpose(1, 2)
        if Hkv == H:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        elif self.gqa == "sdpa":
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        else:
            k, v = (t.repeat_interleave(H // Hkv, dim=1) for t in (k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.wo(y.transpose(1, 2).contiguous().view(B, T, H * D))
        gate, up = self.w_gate_up(self.mlp_norm(x)).chunk(2, dim=-1)
        return x + self.w_down(F.silu(gate) * up)


class Llama(nn.Module):
    def __init__(self, L, H, Hkv, C, Fw, T, V, Vp, eps, theta, gqa):
        super().__init__()
        self.tok_embeddings = nn.Embedding(Vp, C)
        self.layers = nn.ModuleList(LlamaBlock(C, H, Hkv, Fw, eps, gqa) for _ in range(L))
        self.norm_f = RMSNorm(C, eps)
        self.lm_head = nn.Linear(C, Vp, bias=False)  # untied
        D = C // H
        inv_freq = theta ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)  # [D/2]: theta^(-2i/D)
        angles = torch.outer(torch.arange(T, dtype=torch.float64), inv_freq)
        angles = torch.cat((angles, angles), dim=-1).unsqueeze(1)  # [T, 1, D]: broadcast over heads
        self.register_buffer("rope_cos", angles.cos().float(), persistent=False)
        self.register_buffer("rope_sin", angles.sin().float(), persistent=False)
        # ztrain's initialisation: matrices and embeddings N(0, 0.02), the residual projections
        # N(0, 0.02 / sqrt(2 L)), norm gains 1, the padded vocabulary rows 0.
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * L) if name.endswith("wo.weight") or name.endswith("w_down.weight") else 0.02
                nn.init.normal_(p, 0.0, std)
        with torch.no_grad():
            self.tok_embeddings.weight[V:].zero_()
            self.lm_head.weight[V:].zero_()

    def forward(self, idx):
        B, T = idx.shape
        x = self.tok_embeddings(idx)
        cos, sin = self.rope_cos[:T], self.rope_sin[:T]
        for b in self.layers:
            x = b(x, cos, sin)
        return self.lm_head(self.norm_f(x))


class LlamaWithLoss(nn.Module):
    """The llama twin and the same loss in one module, compiled together as GPTWithLoss."""

    def __init__(self, vocab, z_loss_weight, **shape):
        super().__init__()
        self.llama = Llama(**shape)
        self.vocab = vocab
        self.z_loss_weight = z_loss_weight

    def forward(self, idx, targets):
        with torch.autocast(idx.device.type, dtype=torch.bfloat16):  # "cuda" on the GPU, as GPTWithLoss
            logits = self.llama(idx)
        return loss_fn(logits, targets, self.vocab, self.z_loss_weight)


def llama_num_parameters(L, H, Hkv, C, Fw, Vp):
    """ModelConfig::num_parameters() for the llama twin (no biases, untied, QK-norm)."""
    D = C // H
    per_block = 2 * C + (H + 2 * Hkv) * D * C + C * H * D + 2 * D + 3 * Fw * C
    return 2 * Vp * C + L * per_block + C


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
    ap.add_argument("--arch", choices=("gpt2", "llama"), default="gpt2",
                    help="gpt2: GPT-2 124M (fixed shape); llama: the twin of ztrain's llama model (the flags below)")
    ap.add_argument("--device", default="cuda", help="cuda, or cpu for a slow smoke run")
    llama = ap.add_argument_group("--arch llama only (defaults: configs/llama_small.yaml)")
    for key, value in LLAMA_DEFAULTS.items():
        llama.add_argument("--" + key.replace("_", "-"), type=type(value), default=None, help=f"default {value}")
    llama.add_argument("--gqa", choices=("sdpa", "repeat"), default=None,
                       help="grouped-query attention through SDPA's enable_gqa (default; torch >= 2.5) or by "
                            "repeating the kv heads first")
    llama.add_argument("--peak-tflops", type=float, default=None,
                       help="device peak for MFU, default 989 (bf16 dense, H100/H200, as bench_step)")
    args = ap.parse_args()
    is_llama = args.arch == "llama"
    llama_flags = list(LLAMA_DEFAULTS) + ["gqa", "peak_tflops"]
    if not is_llama and any(getattr(args, k) is not None for k in llama_flags):
        ap.error("the llama shape flags, --gqa and --peak-tflops need --arch llama")
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = True
    dev = args.device
    on_cuda = torch.device(dev).type == "cuda"
    if is_llama:
        cfg = {k: v if getattr(args, k) is None else getattr(args, k) for k, v in LLAMA_DEFAULTS.items()}
        gqa = args.gqa or "sdpa"
        if gqa == "sdpa" and not SDPA_HAS_GQA:
            gqa = "repeat"  # no enable_gqa before torch 2.5
        peak_tflops = 989.0 if args.peak_tflops is None else args.peak_tflops
        L, H, Hkv, C, Fw = cfg["n_layer"], cfg["n_head"], cfg["n_kv_head"], cfg["d_model"], cfg["d_ff"]
        if C % H or H % Hkv or (C // H) % 2:
            ap.error(f"--n-head {H} must split --d-model {C} into heads of an even size, and --n-kv-head {Hkv} "
                     f"must divide --n-head")
        vocab = cfg["vocab_size"]
        Vp = -(-vocab // cfg["vocab_multiple"]) * cfg["vocab_multiple"]
        shape = dict(L=L, H=H, Hkv=Hkv, C=C, Fw=Fw, T=args.seq_len, V=vocab, Vp=Vp, eps=cfg["norm_eps"],
                     theta=cfg["rope_theta"], gqa=gqa)
        n_params = llama_num_parameters(L, H, Hkv, C, Fw, Vp)
        flops_per_token = 6.0 * n_params + 6.0 * L * C * args.seq_len  # ModelConfig::flops_per_token()

        def make_model():
            return LlamaWithLoss(vocab, args.z_loss, **shape)
    else:
        vocab = 50257

        def make_model():
            return GPTWithLoss(vocab, args.z_loss)
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name() if on_cuda else dev}")
    if is_llama:
        print(f"llama: {L} layers, d_model {C}, {H} q / {Hkv} kv heads of {C // H} (GQA: "
              f"{'SDPA enable_gqa' if gqa == 'sdpa' else 'kv heads repeated'}), SwiGLU d_ff {Fw}, RMSNorm eps "
              f"{cfg['norm_eps']:g}, QK-norm, RoPE theta {cfg['rope_theta']:g}, untied head, vocab {vocab} "
              f"(padded {Vp}), z-loss {args.z_loss:g}; {n_params} parameters, {flops_per_token:.4g} FLOP/token "
              f"(6N + 6LdT), MFU against {peak_tflops:.0f} TFLOP/s", flush=True)
    for mode in args.modes.split(","):
        for B in (int(b) for b in args.batch_sizes.split(",")):
            model = make_model().to(dev)
            if is_llama:
                assert sum(p.numel() for p in model.parameters()) == n_params
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

            def sync():
                if on_cuda:
                    torch.cuda.synchronize()

            out_of_memory = False
            try:
                for _ in range(args.warmup):  # compiles in the first
                    step()
                start = time.perf_counter()
                while time.perf_counter() - start < args.warmup_s:
                    step()
                sync()
                times = []
                for _ in range(args.steps):
                    t0 = time.perf_counter()
                    loss = step()
                    sync()
                    times.append(time.perf_counter() - t0)
            except torch.cuda.OutOfMemoryError:
                if not is_llama:
                    raise
                out_of_memory = True  # the llama's logits are large: report it and go on to the next size
            if out_of_memory:
                print(f"torch {mode} B={B} T={args.seq_len}: out of device memory", flush=True)
            else:
                med = statistics.median(times)
                line = (f"torch {mode} B={B} T={args.seq_len}: median {med * 1e3:.2f} ms, "
                        f"{B * args.seq_len / med:.0f} tokens/s, loss {loss:.4f}")
                if is_llama:
                    mfu = flops_per_token * B * args.seq_len / med / (peak_tflops * 1e12)
                    line += f", MFU {100 * mfu:.1f}%"
                print(line, flush=True)
            del model, opt, fwd
            if on_cuda:
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
