#!/usr/bin/env python3
"""Independent float64 NumPy reference for the ztrain "llama family" model.

Computes the training loss and the gradient of every parameter with a small
reverse-mode autodiff (a tape of elementary NumPy ops, each with a hand-written
backward), built directly from the published equations (RMSNorm, LayerNorm,
RoPE, grouped-query causal attention, SwiGLU / tanh-GELU MLP, cross entropy
with label smoothing and z-loss).  Everything is float64.

Usage:
    python3 llama_reference.py IN_DIR OUT_DIR
        IN_DIR : config.json, ids.npy (int64 [B, T]), targets.npy (int64 [B*T]),
                 and "<parameter name>.npy" for every parameter (full shapes).
        OUT_DIR: loss.npy (f64, shape ()) and "<parameter name>.npy" holding the
                 gradient of the loss w.r.t. that parameter (same shape, f64).
    python3 llama_reference.py --self-test [SEED]
        Checks every parameter gradient against central finite differences on
        tiny random configurations; exits non-zero on failure.

Only numpy is required.
"""

import json
import math
import os
import sys
import tempfile

import numpy as np


# --------------------------------------------------------------------------
# Reverse-mode autodiff
# --------------------------------------------------------------------------

class Node:
    """A value on the tape.  `backward(g)` returns one gradient per parent."""

    __slots__ = ("value", "parents", "backward", "grad", "requires_grad")

    def __init__(self, value, parents=(), backward=None, requires_grad=None):
        self.value = np.asarray(value, dtype=np.float64)
        self.parents = tuple(parents)
        self.backward = backward
        self.grad = None
        if requires_grad is None:
            requires_grad = any(p.requires_grad for p in self.parents)
        self.requires_grad = requires_grad

    @property
    def shape(self):
        return self.value.shape

    # operator sugar
    def __add__(self, o): return add(self, o)
    def __radd__(self, o): return add(o, self)
    def __sub__(self, o): return sub(self, o)
    def __rsub__(self, o): return sub(o, self)
    def __mul__(self, o): return mul(self, o)
    def __rmul__(self, o): return mul(o, self)
    def __truediv__(self, o): return div(self, o)
    def __rtruediv__(self, o): return div(o, self)
    def __neg__(self): return mul(self, -1.0)
    def __matmul__(self, o): return matmul(self, o)
    def __getitem__(self, idx): return index(self, idx)


def param(value):
    return Node(np.array(value, dtype=np.float64, copy=True), requires_grad=True)


def const(value):
    return Node(value, requires_grad=False)


def as_node(x):
    return x if isinstance(x, Node) else const(x)


def unbroadcast(g, shape):
    """Sum g down to `shape` (inverse of NumPy broadcasting)."""
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for ax, n in enumerate(shape):
        if n == 1 and g.shape[ax] != 1:
            g = g.sum(axis=ax, keepdims=True)
    return g.reshape(shape)


def backprop(out):
    """Accumulate d(out)/d(node) into node.grad for every node (out scalar)."""
    order, seen = [], set()
    stack = [(out, False)]
    while stack:  # iterative topological sort
        node, done = stack.pop()
        if done:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        for p in node.parents:
            if id(p) not in seen and p.requires_grad:
                stack.append((p, False))
    for node in order:
        node.grad = None
    out.grad = np.ones_like(out.value)
    for node in reversed(order):
        if node.grad is None or node.backward is None:
            continue
        grads = node.backward(node.grad)
        for p, g in zip(node.parents, grads):
            if g is None or not p.requires_grad:
                continue
            g = np.asarray(g, dtype=np.float64)
            assert g.shape == p.value.shape, (g.shape, p.value.shape)
            p.grad = g.copy() if p.grad is None else p.grad + g


# ---- elementwise binary (broadcasting) -----------------------------------

def add(a, b):
    a, b = as_node(a), as_node(b)
    return Node(a.value + b.value, (a, b),
                lambda g: (unbroadcast(g, a.shape), unbroadcast(g, b.shape)))


def sub(a, b):
    a, b = as_node(a), as_node(b)
    return Node(a.value - b.value, (a, b),
                lambda g: (unbroadcast(g, a.shape), unbroadcast(-g, b.shape)))


def mul(a, b):
    a, b = as_node(a), as_node(b)
    return Node(a.value * b.value, (a, b),
                lambda g: (unbroadcast(g * b.value, a.shape),
                           unbroadcast(g * a.value, b.shape)))


def div(a, b):
    a, b = as_node(a), as_node(b)
    return Node(a.value / b.value, (a, b),
                lambda g: (unbroadcast(g / b.value, a.shape),
                           unbroadcast(-g * a.value / (b.value * b.value), b.shape)))


# ---- elementwise unary ----------------------------------------------------

def exp(a):
    y = np.exp(a.value)
    return Node(y, (a,), lambda g: (g * y,))


def log(a):
    return Node(np.log(a.value), (a,), lambda g: (g / a.value,))


def sqrt(a):
    y = np.sqrt(a.value)
    return Node(y, (a,), lambda g: (g * 0.5 / y,))


def rsqrt(a):
    y = 1.0 / np.sqrt(a.value)
    return Node(y, (a,), lambda g: (g * (-0.5) * y * y * y,))


def tanh(a):
    y = np.tanh(a.value)
    return Node(y, (a,), lambda g: (g * (1.0 - y * y),))


def sigmoid(a):
    x = a.value
    # numerically stable logistic
    y = np.where(x >= 0, 1.0 / (1.0 + np.exp(-np.abs(x))),
                 np.exp(-np.abs(x)) / (1.0 + np.exp(-np.abs(x))))
    return Node(y, (a,), lambda g: (g * y * (1.0 - y),))


def square(a):
    return mul(a, a)


def pow_const(a, p):
    y = a.value ** p
    return Node(y, (a,), lambda g: (g * p * a.value ** (p - 1),))


# ---- reductions -----------------------------------------------------------

def rsum(a, axis=None, keepdims=False):
    y = a.value.sum(axis=axis, keepdims=keepdims)

    def bw(g):
        if axis is not None and not keepdims:
            g = np.expand_dims(g, axis)
        return (np.broadcast_to(g, a.shape),)
    return Node(y, (a,), bw)


def rmean(a, axis, keepdims=False):
    n = a.shape[axis]
    return mul(rsum(a, axis=axis, keepdims=keepdims), 1.0 / n)


def rmax(a, axis, keepdims=False):
    """max over axis; gradient split equally among tied maxima."""
    y = a.value.max(axis=axis, keepdims=True)

    def bw(g):
        gk = g if keepdims else np.expand_dims(g, axis)
        hit = (a.value == y).astype(np.float64)
        hit = hit / hit.sum(axis=axis, keepdims=True)
        return (gk * hit,)
    return Node(y if keepdims else np.squeeze(y, axis), (a,), bw)


# ---- linear algebra -------------------------------------------------------

def _swap(x):
    return np.swapaxes(x, -1, -2)


def matmul(a, b):
    """Batched matmul with NumPy broadcasting of leading dims (ndim >= 2)."""
    a, b = as_node(a), as_node(b)
    assert a.value.ndim >= 2 and b.value.ndim >= 2
    return Node(np.matmul(a.value, b.value), (a, b),
                lambda g: (unbroadcast(np.matmul(g, _swap(b.value)), a.shape),
                           unbroadcast(np.matmul(_swap(a.value), g), b.shape)))


# ---- shape ops ------------------------------------------------------------

def reshape(a, shape):
    return Node(a.value.reshape(shape), (a,), lambda g: (g.reshape(a.shape),))


def transpose(a, axes):
    inv = np.argsort(axes)
    return Node(np.transpose(a.value, axes), (a,),
                lambda g: (np.transpose(g, inv),))


def index(a, idx):
    """a[idx] for basic or advanced indexing; backward scatters with add.at
    (correct for repeated indices, e.g. embedding lookups)."""
    y = a.value[idx]

    def bw(g):
        ga = np.zeros(a.shape)
        np.add.at(ga, idx, g)
        return (ga,)
    return Node(np.array(y, copy=True), (a,), bw)


def concat(nodes, axis):
    nodes = [as_node(n) for n in nodes]
    sizes = [n.shape[axis] for n in nodes]
    bounds = np.cumsum([0] + sizes)

    def bw(g):
        out = []
        for i in range(len(nodes)):
            sl = [slice(None)] * g.ndim
            sl[axis] = slice(bounds[i], bounds[i + 1])
            out.append(g[tuple(sl)])
        return tuple(out)
    return Node(np.concatenate([n.value for n in nodes], axis=axis), nodes, bw)


def where(mask, a, fill):
    """mask ? a : fill (fill is a constant)."""
    a = as_node(a)
    return Node(np.where(mask, a.value, fill), (a,),
                lambda g: (unbroadcast(np.where(mask, g, 0.0), a.shape),))


# --------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------

def rmsnorm(x, w, eps):
    ms = rmean(square(x), axis=-1, keepdims=True)
    return x * rsqrt(ms + eps) * w


def layernorm(x, w, b, eps):
    mu = rmean(x, axis=-1, keepdims=True)
    xc = x - mu
    var = rmean(square(xc), axis=-1, keepdims=True)
    y = xc * rsqrt(var + eps) * w
    if b is not None:
        y = y + b
    return y


def linear(x, w, b=None):
    y = matmul(x, transpose(w, (1, 0)))
    if b is not None:
        y = y + b
    return y


def softmax_lastdim(s):
    m = rmax(s, axis=-1, keepdims=True)
    e = exp(s - m)
    return e / rsum(e, axis=-1, keepdims=True)


def gelu_tanh(u):
    c = math.sqrt(2.0 / math.pi)
    inner = (u + 0.044715 * pow_const(u, 3)) * c
    return 0.5 * u * (1.0 + tanh(inner))


def silu(a):
    return a * sigmoid(a)


def rope(x, theta):
    """x: [B, heads, T, D]; rotate pairs (i, i + D/2) by angle t*theta^(-2i/D)."""
    T, D = x.shape[2], x.shape[3]
    half = D // 2
    i = np.arange(half, dtype=np.float64)
    inv_freq = theta ** (-2.0 * i / D)
    ang = np.arange(T, dtype=np.float64)[:, None] * inv_freq[None, :]   # [T, D/2]
    cos, sin = np.cos(ang), np.sin(ang)
    x1 = x[..., :half]
    x2 = x[..., half:]
    return concat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def parameter_shapes(cfg):
    """Ordered dict name -> shape of every parameter that exists for cfg."""
    C, F, H, Hkv = cfg["d_model"], cfg["d_ff"], cfg["n_head"], cfg["n_kv_head"]
    D = C // H
    Vp = cfg["padded_vocab"]
    bias = bool(cfg["bias"])
    ln = cfg["norm"] == "layernorm"
    shapes = {"tok_embeddings.weight": (Vp, C)}
    if cfg["position"] == "learned":
        shapes["pos_embeddings.weight"] = (cfg["seq_len"], C)

    def norm(name):
        shapes[name + ".weight"] = (C,)
        if ln and bias:
            shapes[name + ".bias"] = (C,)

    def lin(name, out, inp):
        shapes[name + ".weight"] = (out, inp)
        if bias:
            shapes[name + ".bias"] = (out,)

    for L in range(cfg["n_layer"]):
        p = "layers.%d." % L
        norm(p + "attn_norm")
        lin(p + "attn.wq", H * D, C)
        lin(p + "attn.wkv", 2 * Hkv * D, C)
        if cfg["qk_norm"]:
            shapes[p + "attn.q_norm.weight"] = (D,)
            shapes[p + "attn.k_norm.weight"] = (D,)
        lin(p + "attn.wo", C, H * D)
        norm(p + "mlp_norm")
        if cfg["mlp"] == "swiglu":
            lin(p + "mlp.w_gate_up", 2 * F, C)
        else:
            lin(p + "mlp.w_fc", F, C)
        lin(p + "mlp.w_down", C, F)
    norm("norm_f")
    if not cfg["tie_embeddings"]:
        shapes["lm_head.weight"] = (Vp, C)
    return shapes


def validate_config(cfg):
    req = ["n_layer", "n_head", "n_kv_head", "d_model", "d_ff", "vocab_size",
           "padded_vocab", "seq_len", "norm", "mlp", "position", "rope_theta",
           "qk_norm", "tie_embeddings", "bias", "norm_eps", "z_loss_weight",
           "label_smoothing", "ignore_index"]
    missing = [k for k in req if k not in cfg]
    if missing:
        raise ValueError("config.json missing keys: %s" % ", ".join(missing))
    if cfg["norm"] not in ("rmsnorm", "layernorm"):
        raise ValueError("bad norm %r" % cfg["norm"])
    if cfg["mlp"] not in ("swiglu", "gelu"):
        raise ValueError("bad mlp %r" % cfg["mlp"])
    if cfg["position"] not in ("rope", "learned"):
        raise ValueError("bad position %r" % cfg["position"])
    H, Hkv, C = cfg["n_head"], cfg["n_kv_head"], cfg["d_model"]
    if Hkv < 1 or H % Hkv != 0:
        raise ValueError("n_kv_head must be >= 1 and divide n_head")
    if C % H != 0:
        raise ValueError("d_model must be divisible by n_head")
    if cfg["position"] == "rope" and (C // H) % 2 != 0:
        raise ValueError("rope needs an even head dim")
    if cfg["padded_vocab"] < cfg["vocab_size"]:
        raise ValueError("padded_vocab < vocab_size")


def forward_loss(cfg, P, ids, targets):
    """Build the graph; P maps parameter name -> Node. Returns the loss Node."""
    C, H, Hkv = cfg["d_model"], cfg["n_head"], cfg["n_kv_head"]
    D = C // H
    V = cfg["vocab_size"]
    eps = float(cfg["norm_eps"])
    bias = bool(cfg["bias"])
    ids = np.asarray(ids, dtype=np.int64)
    B, T = ids.shape
    if T > cfg["seq_len"]:
        raise ValueError("ids has T=%d > seq_len=%d" % (T, cfg["seq_len"]))

    def b_(name):
        return P[name + ".bias"] if bias else None

    def norm(x, name):
        if cfg["norm"] == "rmsnorm":
            return rmsnorm(x, P[name + ".weight"], eps)
        return layernorm(x, P[name + ".weight"], b_(name), eps)

    x = index(P["tok_embeddings.weight"], ids)                     # [B,T,C]
    if cfg["position"] == "learned":
        x = x + index(P["pos_embeddings.weight"], np.arange(T))    # [T,C] bcast

    causal = np.tril(np.ones((T, T), dtype=bool))                  # s <= t kept
    group = H // Hkv
    kv_of_head = np.arange(H) // group
    scale = 1.0 / math.sqrt(D)

    for L in range(cfg["n_layer"]):
        p = "layers.%d." % L
        a = norm(x, p + "attn_norm")
        q = linear(a, P[p + "attn.wq.weight"], b_(p + "attn.wq"))     # [B,T,H*D]
        kv = linear(a, P[p + "attn.wkv.weight"], b_(p + "attn.wkv"))  # [B,T,2HkvD]
        k = kv[..., : Hkv * D]
        v = kv[..., Hkv * D:]
        q = transpose(reshape(q, (B, T, H, D)), (0, 2, 1, 3))         # [B,H,T,D]
        k = transpose(reshape(k, (B, T, Hkv, D)), (0, 2, 1, 3))       # [B,Hkv,T,D]
        v = transpose(reshape(v, (B, T, Hkv, D)), (0, 2, 1, 3))
        if cfg["qk_norm"]:
            q = rmsnorm(q, P[p + "attn.q_norm.weight"], eps)
            k = rmsnorm(k, P[p + "attn.k_norm.weight"], eps)
        if cfg["position"] == "rope":
            q = rope(q, float(cfg["rope_theta"]))
            k = rope(k, float(cfg["rope_theta"]))
        k = index(k, (slice(None), kv_of_head))                       # [B,H,T,D]
        v = index(v, (slice(None), kv_of_head))
        s = matmul(q, transpose(k, (0, 1, 3, 2))) * scale             # [B,H,T,T]
        s = where(causal, s, -np.inf)
        att = softmax_lastdim(s)
        o = matmul(att, v)                                            # [B,H,T,D]
        o = reshape(transpose(o, (0, 2, 1, 3)), (B, T, H * D))
        h = x + linear(o, P[p + "attn.wo.weight"], b_(p + "attn.wo"))
        m = norm(h, p + "mlp_norm")
        if cfg["mlp"] == "swiglu":
            F = cfg["d_ff"]
            gu = linear(m, P[p + "mlp.w_gate_up.weight"], b_(p + "mlp.w_gate_up"))
            act = silu(gu[..., :F]) * gu[..., F:]
        else:
            act = gelu_tanh(linear(m, P[p + "mlp.w_fc.weight"], b_(p + "mlp.w_fc")))
        x = h + linear(act, P[p + "mlp.w_down.weight"], b_(p + "mlp.w_down"))

    f = norm(x, "norm_f")
    W = P["tok_embeddings.weight"] if cfg["tie_embeddings"] else P["lm_head.weight"]
    logits = linear(f, W)                                             # [B,T,Vp]
    logits = reshape(logits, (B * T, logits.shape[-1]))[:, :V]        # [N,V]

    targets = np.asarray(targets, dtype=np.int64).reshape(-1)
    if targets.shape[0] != B * T:
        raise ValueError("targets has %d entries, expected B*T=%d"
                         % (targets.shape[0], B * T))
    keep = np.nonzero(targets != cfg["ignore_index"])[0]
    n = keep.shape[0]
    if n == 0:
        # constant 0, still connected so every gradient comes out as zeros
        return rsum(logits) * 0.0
    y = targets[keep]
    if y.min() < 0 or y.max() >= V:
        raise ValueError("non-ignored target outside [0, vocab_size)")
    xr = index(logits, keep)                                          # [n,V]
    mx = rmax(xr, axis=-1, keepdims=True)
    lse = log(rsum(exp(xr - mx), axis=-1, keepdims=True)) + mx        # [n,1]
    lse = reshape(lse, (n,))
    xy = index(xr, (np.arange(n), y))                                 # [n]
    e = float(cfg["label_smoothing"])
    z = float(cfg["z_loss_weight"])
    ce = lse - (1.0 - e) * xy - (e / V) * rsum(xr, axis=-1)
    row = ce + z * square(lse)
    return rsum(row) * (1.0 / n)


def loss_and_grads(cfg, params, ids, targets):
    P = {k: param(v) for k, v in params.items()}
    loss = forward_loss(cfg, P, ids, targets)
    backprop(loss)
    grads = {}
    for k, node in P.items():
        grads[k] = node.grad if node.grad is not None else np.zeros(node.shape)
    return float(loss.value), grads


def loss_only(cfg, params, ids, targets):
    P = {k: const(v) for k, v in params.items()}
    return float(forward_loss(cfg, P, ids, targets).value)


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------

def die(msg):
    sys.stderr.write("llama_reference.py: error: %s\n" % msg)
    sys.exit(2)


def run_dirs(in_dir, out_dir):
    cfg_path = os.path.join(in_dir, "config.json")
    if not os.path.isfile(cfg_path):
        die("missing file %s" % cfg_path)
    with open(cfg_path) as fh:
        cfg = json.load(fh)
    try:
        validate_config(cfg)
    except ValueError as ex:
        die(str(ex))
    shapes = parameter_shapes(cfg)

    def load(name):
        path = os.path.join(in_dir, name)
        if not os.path.isfile(path):
            die("missing file %s" % path)
        return np.load(path)

    ids = load("ids.npy")
    targets = load("targets.npy")
    if ids.ndim != 2:
        die("ids.npy must be [B, T], got shape %s" % (ids.shape,))
    if not np.issubdtype(ids.dtype, np.integer) or not np.issubdtype(targets.dtype, np.integer):
        die("ids.npy / targets.npy must be integer arrays")
    if ids.size and (ids.min() < 0 or ids.max() >= cfg["padded_vocab"]):
        die("ids outside [0, padded_vocab)")

    params = {}
    for name, shp in shapes.items():
        arr = load(name + ".npy")
        if tuple(arr.shape) != tuple(shp):
            die("%s.npy has shape %s, expected %s" % (name, arr.shape, shp))
        params[name] = arr.astype(np.float64)

    known = set(n + ".npy" for n in shapes) | {"ids.npy", "targets.npy"}
    extra = sorted(f for f in os.listdir(in_dir)
                   if f.endswith(".npy") and f not in known)
    if extra:
        die("parameter files not used by this config: %s" % ", ".join(extra))

    try:
        loss, grads = loss_and_grads(cfg, params, ids, targets)
    except ValueError as ex:
        die(str(ex))
    os.makedirs(out_dir, exist_ok=True)
    np.save(os.path.join(out_dir, "loss.npy"), np.array(loss, dtype=np.float64))
    for name, g in grads.items():
        np.save(os.path.join(out_dir, name + ".npy"), np.asarray(g, dtype=np.float64))
    print("loss %.17g  (%d parameter gradients written to %s)"
          % (loss, len(grads), out_dir))


# --------------------------------------------------------------------------
# Self test: central finite differences
# --------------------------------------------------------------------------

def random_instance(cfg, B, T, rng, n_ignore):
    shapes = parameter_shapes(cfg)
    params = {}
    for name, shp in shapes.items():
        w = rng.normal(0.0, 0.3, size=shp)
        if name.endswith("norm.weight") or name.endswith("norm_f.weight") \
                or name.endswith("_norm.weight"):
            w = 1.0 + w  # gains near 1, still random
        params[name] = w
    ids = rng.integers(0, cfg["vocab_size"], size=(B, T)).astype(np.int64)
    targets = rng.integers(0, cfg["vocab_size"], size=(B * T,)).astype(np.int64)
    ign = rng.choice(B * T, size=n_ignore, replace=False)
    targets[ign] = cfg["ignore_index"]
    return params, ids, targets


def fd_check(cfg, params, ids, targets, rng, n_sample=12):
    """Compare analytic gradients with finite differences on sampled entries.

    Two estimates per entry:
      central : (L(w+h) - L(w-h)) / 2h with h = 1e-6.  Its round-off noise is
                ~eps*|L|/h ~ 1e-9 absolute, so its relative error uses the
                denominator max(|an|, |fd|, 1e-2) (i.e. entries below 1e-2
                are checked to ~1e-8 absolute).
      richard : 5-point (4th order) stencil with h = 1e-3; truncation and
                round-off are both ~1e-12 absolute, so its relative error uses
                max(|an|, |fd|, 1e-5) (entries below 1e-5: ~1e-11 absolute).
    Returns {name: (max central rel err, max richard rel err, n entries)}."""
    _, grads = loss_and_grads(cfg, params, ids, targets)
    res = {}
    for name, w in params.items():
        g = grads[name]
        flat_n = w.size
        # sample: largest-|g| entries plus random ones (incl. possibly zero ones)
        order = np.argsort(-np.abs(g).ravel())
        pick = list(order[: n_sample // 2])
        pick += list(rng.choice(flat_n, size=min(n_sample, flat_n), replace=False))
        pick = sorted(set(int(i) for i in pick))
        worst_c = worst_r = 0.0
        for fi in pick:
            idx = np.unravel_index(fi, w.shape)
            orig = w[idx]

            def L_at(delta):
                w[idx] = orig + delta
                try:
                    return loss_only(cfg, params, ids, targets)
                finally:
                    w[idx] = orig

            an = g[idx]
            h = 1e-6
            fd_c = (L_at(h) - L_at(-h)) / (2.0 * h)
            h = 1e-3
            fd_r = (-L_at(2 * h) + 8 * L_at(h) - 8 * L_at(-h) + L_at(-2 * h)) / (12.0 * h)
            worst_c = max(worst_c, abs(an - fd_c) / max(abs(an), abs(fd_c), 1e-2))
            worst_r = max(worst_r, abs(an - fd_r) / max(abs(an), abs(fd_r), 1e-5))
        res[name] = (worst_c, worst_r, len(pick))
    return res


def naive_loss(cfg, W, ids, targets):
    """Plain loop-based forward (no autodiff), used only to cross-check."""
    C, H, Hkv, F = cfg["d_model"], cfg["n_head"], cfg["n_kv_head"], cfg["d_ff"]
    D, V, eps = C // H, cfg["vocab_size"], cfg["norm_eps"]
    B, T = ids.shape
    bias = cfg["bias"]

    def nrm(v, name):
        if cfg["norm"] == "rmsnorm":
            return v / np.sqrt(np.mean(v * v) + eps) * W[name + ".weight"]
        mu = v.mean()
        out = (v - mu) / np.sqrt(np.mean((v - mu) ** 2) + eps) * W[name + ".weight"]
        return out + W[name + ".bias"] if bias else out

    def lin(v, name):
        out = W[name + ".weight"].dot(v)
        return out + W[name + ".bias"] if bias else out

    def rot(v, t):
        out = v.copy()
        for i in range(D // 2):
            a = t * cfg["rope_theta"] ** (-2.0 * i / D)
            out[i] = v[i] * math.cos(a) - v[i + D // 2] * math.sin(a)
            out[i + D // 2] = v[i + D // 2] * math.cos(a) + v[i] * math.sin(a)
        return out

    total, count = 0.0, 0
    for b in range(B):
        xs = []
        for t in range(T):
            v = W["tok_embeddings.weight"][ids[b, t]].copy()
            if cfg["position"] == "learned":
                v = v + W["pos_embeddings.weight"][t]
            xs.append(v)
        for L in range(cfg["n_layer"]):
            p = "layers.%d." % L
            Q, K, Vv = [], [], []
            for t in range(T):
                a = nrm(xs[t], p + "attn_norm")
                q = lin(a, p + "attn.wq")
                kv = lin(a, p + "attn.wkv")
                qh = [q[h * D:(h + 1) * D] for h in range(H)]
                kh = [kv[g * D:(g + 1) * D] for g in range(Hkv)]
                vh = [kv[Hkv * D + g * D: Hkv * D + (g + 1) * D] for g in range(Hkv)]
                if cfg["qk_norm"]:
                    qh = [u / np.sqrt(np.mean(u * u) + eps) * W[p + "attn.q_norm.weight"] for u in qh]
                    kh = [u / np.sqrt(np.mean(u * u) + eps) * W[p + "attn.k_norm.weight"] for u in kh]
                if cfg["position"] == "rope":
                    qh = [rot(u, t) for u in qh]
                    kh = [rot(u, t) for u in kh]
                Q.append(qh); K.append(kh); Vv.append(vh)
            new = []
            for t in range(T):
                heads = []
                for h in range(H):
                    g = h // (H // Hkv)
                    sc = np.array([Q[t][h].dot(K[s][g]) / math.sqrt(D) for s in range(t + 1)])
                    pr = np.exp(sc - sc.max()); pr /= pr.sum()
                    heads.append(sum(pr[s] * Vv[s][g] for s in range(t + 1)))
                hh = xs[t] + lin(np.concatenate(heads), p + "attn.wo")
                m = nrm(hh, p + "mlp_norm")
                if cfg["mlp"] == "swiglu":
                    gu = lin(m, p + "mlp.w_gate_up")
                    gt, up = gu[:F], gu[F:]
                    act = gt / (1.0 + np.exp(-gt)) * up
                else:
                    u = lin(m, p + "mlp.w_fc")
                    act = 0.5 * u * (1 + np.tanh(math.sqrt(2 / math.pi) * (u + 0.044715 * u ** 3)))
                new.append(hh + lin(act, p + "mlp.w_down"))
            xs = new
        for t in range(T):
            y = targets[b * T + t]
            if y == cfg["ignore_index"]:
                continue
            f = nrm(xs[t], "norm_f")
            Wl = W["tok_embeddings.weight"] if cfg["tie_embeddings"] else W["lm_head.weight"]
            lg = Wl[:V].dot(f)
            lse = lg.max() + math.log(np.exp(lg - lg.max()).sum())
            e, z = cfg["label_smoothing"], cfg["z_loss_weight"]
            total += lse - (1 - e) * lg[y] - e / V * lg.sum() + z * lse * lse
            count += 1
    return total / count if count else 0.0


def self_test(seed=1234):
    base = dict(vocab_size=11, padded_vocab=16, seq_len=8, rope_theta=10000.0,
                norm_eps=1e-5, z_loss_weight=1e-3, label_smoothing=0.1,
                ignore_index=-100)
    configs = {
        "llama(rmsnorm,swiglu,rope,qk_norm,GQA 4/2,untied,no-bias)": dict(
            base, n_layer=2, n_head=4, n_kv_head=2, d_model=16, d_ff=12,
            norm="rmsnorm", mlp="swiglu", position="rope", qk_norm=True,
            tie_embeddings=False, bias=False),
        "gpt(layernorm,gelu,learned,tied,bias,MHA)": dict(
            base, n_layer=2, n_head=4, n_kv_head=4, d_model=16, d_ff=20,
            norm="layernorm", mlp="gelu", position="learned", qk_norm=False,
            tie_embeddings=True, bias=True),
        "mixed(rmsnorm,gelu,rope,MQA 4/1,tied,bias)": dict(
            base, n_layer=1, n_head=4, n_kv_head=1, d_model=16, d_ff=8,
            norm="rmsnorm", mlp="gelu", position="rope", qk_norm=False,
            tie_embeddings=True, bias=True),
        "mixed(layernorm no-bias,swiglu,learned,qk_norm,untied)": dict(
            base, n_layer=1, n_head=2, n_kv_head=2, d_model=8, d_ff=8,
            norm="layernorm", mlp="swiglu", position="learned", qk_norm=True,
            tie_embeddings=False, bias=False),
    }
    rng = np.random.default_rng(seed)
    tol = 1e-6
    ok = True
    overall = 0.0
    for label, cfg in configs.items():
        validate_config(cfg)
        B, T = 2, 6
        params, ids, targets = random_instance(cfg, B, T, rng, n_ignore=3)
        loss, _ = loss_and_grads(cfg, params, ids, targets)
        print("config %s: loss = %.12f" % (label, loss))
        res = fd_check(cfg, params, ids, targets, rng)
        for name, (ec, er, npk) in res.items():
            bad = ec > tol or er > tol
            print("  %-32s n=%2d  central(h=1e-6) %.2e  5-point(h=1e-3) %.2e%s"
                  % (name, npk, ec, er, "   <-- FAIL" if bad else ""))
            ok = ok and not bad
            overall = max(overall, ec, er)

    # independent sanity checks of the loss formula and edge cases
    cfg = configs["gpt(layernorm,gelu,learned,tied,bias,MHA)"]
    params, ids, targets = random_instance(cfg, 2, 6, rng, n_ignore=0)
    # (a) all targets ignored -> loss 0, zero grads
    l0, g0 = loss_and_grads(cfg, params, ids, np.full(12, -100, dtype=np.int64))
    c_a = l0 == 0.0 and all(np.all(g == 0) for g in g0.values())
    print("check all-ignored -> loss 0 & zero grads: %s" % ("ok" if c_a else "FAIL"))
    ok = ok and c_a
    # (b) padded vocab rows/cols: changing lm rows >= V (tied, unused by ids)
    #     must not change the loss, and their grads must be 0
    l1, g1 = loss_and_grads(cfg, params, ids, targets)
    p2 = dict(params)
    p2["tok_embeddings.weight"] = params["tok_embeddings.weight"].copy()
    p2["tok_embeddings.weight"][cfg["vocab_size"]:] += 5.0
    l2 = loss_only(cfg, p2, ids, targets)
    c_b = l1 == l2 and np.all(g1["tok_embeddings.weight"][cfg["vocab_size"]:] == 0)
    print("check padded vocab excluded: %s" % ("ok" if c_b else "FAIL"))
    ok = ok and c_b
    # (c) loss agrees with a second, loop-based plain-NumPy forward pass
    for label in configs:
        c = configs[label]
        pr, ii, tt = random_instance(c, 2, 5, rng, n_ignore=2)
        la = loss_only(c, pr, ii, tt)
        lb = naive_loss(c, pr, ii, tt)
        c_c = abs(la - lb) <= 1e-12 * max(1.0, abs(lb))
        print("check naive loop forward [%s]: |diff| = %.2e %s"
              % (label.split("(")[0], abs(la - lb), "ok" if c_c else "FAIL"))
        ok = ok and c_c
    # (d) CLI round trip through files
    with tempfile.TemporaryDirectory() as td:
        ind, outd = os.path.join(td, "in"), os.path.join(td, "out")
        os.makedirs(ind)
        with open(os.path.join(ind, "config.json"), "w") as fh:
            json.dump(cfg, fh)
        np.save(os.path.join(ind, "ids.npy"), ids)
        np.save(os.path.join(ind, "targets.npy"), targets)
        for k, v in params.items():
            np.save(os.path.join(ind, k + ".npy"), v)
        run_dirs(ind, outd)
        lf = np.load(os.path.join(outd, "loss.npy"))
        c_d = lf.shape == () and lf.dtype == np.float64 and float(lf) == l1
        for k in params:
            gk = np.load(os.path.join(outd, k + ".npy"))
            c_d = c_d and gk.shape == params[k].shape and np.array_equal(gk, g1[k])
    print("check CLI round trip: %s" % ("ok" if c_d else "FAIL"))
    ok = ok and c_d

    print("SELF-TEST %s: overall max rel err %.3e (tol %.0e)"
          % ("PASSED" if ok else "FAILED", overall, tol))
    return 0 if ok else 1


def main(argv):
    if len(argv) in (2, 3) and argv[1] == "--self-test":
        return self_test(int(argv[2]) if len(argv) == 3 else 1234)
    if len(argv) != 3:
        sys.stderr.write(__doc__)
        return 2
    run_dirs(argv[1], argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
