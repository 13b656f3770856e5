"""The attention kernel entry point: ``attention(q, k, v, ...)`` and its backends.

Scaled dot-product attention (Vaswani et al. 2017) with scale 1/sqrt(D) by default —
not 1/sqrt(num_heads), the slip of the seed article's sample. Backends:

- ``"math"``: the plain reference, explicit scores and a NaN-safe softmax (any dtype,
  float64 included).
- ``"sdpa"``: ``torch.nn.functional.scaled_dot_product_attention`` (fused kernels).
- ``"chunked"``: exact memory-efficient attention (``attention/chunked.py``).
- ``"auto"``: the fastest backend that can express the request, the CPU fused banded and
  Toeplitz kernels included; on CPU measured per shape class (``attention/routing.py``).

Exact weights (``return_weights=True``) are recomputed block by block from q and k, so
asking for them never forces the output itself onto the slow path.
"""

from __future__ import annotations

import math
from typing import Callable, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from attnlab.attention import routing
from attnlab.attention.banded import banded_attention
from attnlab.attention.chunked import chunked_attention, expand_groups
from attnlab.attention.masks import query_positions, safe_softmax, structure_mask
from attnlab.attention.toeplitz import toeplitz_attention

__all__ = ["attention", "attention_weights", "auto_backend", "select_index", "BACKENDS"]

BACKENDS = ("auto", "sdpa", "chunked", "math")
BiasLike = Union[Tensor, Callable[[Tensor, Tensor, Tensor], Tensor], None]

def _broadcastable(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    if len(shape) > len(target):
        return False
    for a, b in zip(reversed(shape), reversed(target)):
        if a != 1 and a != b:
            return False
    return True


def _validate(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, bias: BiasLike, window, scale, dropout_p, backend):
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise ValueError(f"attention: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            want = "(B, H, N, D)" if name == "q" else "(B, G, M, D)"
            raise ValueError(f"attention: {name} must be 4-D {want}, got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise ValueError(f"attention: {name} must be a floating-point tensor, got dtype {t.dtype}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"attention: q, k, v dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}")
    b, h, n, d = q.shape
    if k.shape[0] != b or v.shape[0] != b:
        raise ValueError(f"attention: batch sizes differ: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if k.shape[:3] != v.shape[:3]:
        raise ValueError(f"attention: k {tuple(k.shape)} and v {tuple(v.shape)} must agree in (B, G, M)")
    if k.shape[3] != d:
        raise ValueError(f"attention: head dim D differs: q {tuple(q.shape)} has D={d}, k {tuple(k.shape)} has D={k.shape[3]}")
    g, m = k.shape[1], k.shape[2]
    if g == 0 or h % g != 0:
        raise ValueError(f"attention: query heads H={h} (q {tuple(q.shape)}) must be a multiple of key/value heads G={g} (k {tuple(k.shape)})")
    full = (b, h, n, m)
    if mask is not None:
        if not isinstance(mask, Tensor):
            raise ValueError(f"attention: mask must be a bool tensor, got {type(mask).__name__}")
        if mask.dtype != torch.bool:
            raise ValueError(f"attention: mask must have dtype torch.bool (True = attend), got {mask.dtype} with shape {tuple(mask.shape)}")
        if not _broadcastable(tuple(mask.shape), full):
            raise ValueError(f"attention: mask shape {tuple(mask.shape)} does not broadcast to (B, H, N, M) = {full}")
    if isinstance(bias, Tensor):
        if not bias.is_floating_point():
            raise ValueError(f"attention: bias must be a float tensor, got dtype {bias.dtype}")
        if not _broadcastable(tuple(bias.shape), full):
            raise ValueError(f"attention: bias shape {tuple(bias.shape)} does not broadcast to (B, H, N, M) = {full}")
    elif bias is not None and not callable(bias):
        raise ValueError(f"attention: bias must be a tensor or a callable bias(h, i, j), got {type(bias).__name__}")
    if window is not None and (not isinstance(window, int) or window < 0):
        raise ValueError(f"attention: window must be a non-negative int, got {window!r}")
    if scale is not None and not (isinstance(scale, (int, float)) and math.isfinite(scale)):
        raise ValueError(f"attention: scale must be a finite number, got {scale!r}")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"attention: dropout_p must be in [0, 1), got {dropout_p}")
    if backend not in BACKENDS:
        raise ValueError(f"attention: backend must be one of {BACKENDS}, got {backend!r}")


def _bias_tensor(bias: BiasLike, h: int, n: int, m: int, device) -> Tensor | None:
    """A callable bias evaluated on the whole grid. Shape: (1, H, N, M)."""
    if bias is None or isinstance(bias, Tensor):
        return bias
    heads = torch.arange(h, device=device)[:, None, None]
    i = query_positions(n, m, device)[:, None]
    j = torch.arange(m, device=device)[None, :]
    return bias(heads, i, j).unsqueeze(0)


def _combined_mask(mask: Tensor | None, n: int, m: int, is_causal: bool, window: int | None, device) -> Tensor | None:
    structure = structure_mask(n, m, is_causal=is_causal, window=window, device=device)
    if structure is None:
        return mask
    return structure if mask is None else mask & structure


def _math(q, k, v, mask, bias, scale, dropout_p):
    compute = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
    repeats = q.shape[1] // k.shape[1]
    k, v = expand_groups(k, repeats), expand_groups(v, repeats)
    scores = torch.matmul(q.to(compute), k.to(compute).transpose(-1, -2)) * scale  # (B, H, N, M)
    if bias is not None:
        scores = scores + bias.to(compute)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = safe_softmax(scores)
    if dropout_p > 0:
        weights = F.dropout(weights, p=dropout_p)
    return torch.matmul(weights, v.to(compute)).to(q.dtype)


def _sdpa(q, k, v, mask, bias, scale, dropout_p, is_causal_plain):
    attn_mask = None
    rows_empty = None
    if mask is not None:
        # A query row with no key makes SDPA return NaN; let it attend everywhere, then zero it.
        rows_empty = ~mask.any(dim=-1, keepdim=True)  # (.., N, 1)
        # Eager: fix up only when needed. Traced (torch.compile / torch.export / ONNX): always,
        # since a branch on the data cannot be traced.
        if torch.compiler.is_compiling() or bool(rows_empty.any()):
            mask = mask | rows_empty
        else:
            rows_empty = None
    if bias is not None:
        attn_mask = bias.to(q.dtype)
        if mask is not None:
            attn_mask = attn_mask.masked_fill(~mask, float("-inf"))
    else:
        attn_mask = mask
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal_plain,
        scale=scale, enable_gqa=q.shape[1] != k.shape[1],
    )
    if rows_empty is not None:
        out = out.masked_fill(rows_empty, 0.0)  # (.., N, 1) broadcasts over Dv
    return out


def _pick_backend(q: Tensor, k: Tensor, v: Tensor, n: int, m: int, bias: BiasLike, window: int | None,
                  mask: Tensor | None = None, dropout_p: float = 0.0, is_causal: bool = False,
                  scale: float | None = None) -> str:
    """What "auto" runs for this call (``attention/routing.py``): SDPA whenever it can run
    plainly; on CPU the fused banded / Toeplitz kernels, the fp32 math for short half-precision
    training or the block-wise kernel where they measured faster here (fixed thresholds with
    ``ATTNLAB_AUTOTUNE=0``); block-wise wherever a dense bias or mask would not fit in memory."""
    return routing.pick_backend(q, k, v, n, m, bias, window, mask, dropout_p, is_causal=is_causal, scale=scale,
                                run=_execute)


def _execute(backend, q, k, v, mask, bias, is_causal, window, scale, dropout_p) -> Tensor:
    """Any backend, the fused CPU ones included; a Toeplitz call that cannot pay falls back."""
    if backend == "banded":
        return banded_attention(q, k, v, window=window, is_causal=is_causal, scale=scale)
    if backend == "toeplitz":
        out = toeplitz_attention(q, k, v, bias, scale=scale, is_causal=is_causal, dropout_p=dropout_p)
        if out is not None:
            return out
        # a learned bias that varies too far out for the fused path
        backend = routing.dense_or_chunked(q, q.shape[2], k.shape[2], bias, window)
    return _run(backend, q, k, v, mask, bias, is_causal, window, scale, dropout_p)


def _run(backend, q, k, v, mask, bias, is_causal, window, scale, dropout_p) -> Tensor:
    """The chunked, sdpa and math backends."""
    n, m = q.shape[2], k.shape[2]
    if backend == "chunked":
        tensor_bias = bias if isinstance(bias, Tensor) else None
        bias_fn = None if isinstance(bias, Tensor) else bias
        return chunked_attention(
            q, k, v, mask=mask, bias=tensor_bias, bias_fn=bias_fn, scale=scale,
            is_causal=is_causal, window=window, dropout_p=dropout_p,
        )
    dense_bias = _bias_tensor(bias, q.shape[1], n, m, q.device)
    if backend == "sdpa" and mask is None and bias is None and window is None and is_causal and n == m:
        # SDPA's own is_causal is top-left aligned: exact for N == M, and it takes the fast path.
        return _sdpa(q, k, v, None, None, scale, dropout_p, is_causal_plain=True)
    full_mask = _combined_mask(mask, n, m, is_causal, window, q.device)
    if backend == "sdpa":
        return _sdpa(q, k, v, full_mask, dense_bias, scale, dropout_p, is_causal_plain=False)
    return _math(q, k, v, full_mask, dense_bias, scale, dropout_p)


def select_index(spec, size: int, what: str) -> Tensor | None:
    """A selection along one axis as a 1-D long tensor (None = all): int, list, slice or tensor."""
    if spec is None:
        return None
    if isinstance(spec, slice):
        return torch.arange(size)[spec]
    idx = torch.as_tensor([spec] if isinstance(spec, int) else spec, dtype=torch.long).reshape(-1)
    if idx.numel() and (idx.min() < -size or idx.max() >= size):
        raise ValueError(f"{what} index out of range for size {size}: {idx.tolist()}")
    return idx % size


def attention_weights(
    q: Tensor,
    k: Tensor,
    *,
    mask: Tensor | None = None,
    bias: BiasLike = None,
    is_causal: bool = False,
    window: int | None = None,
    scale: float | None = None,
    heads: Tensor | None = None,
    query_rows: Tensor | None = None,
    block_q: int = 256,
) -> Tensor:
    """Exact softmax weights, computed per query block, for chosen heads and query rows only.

    Rows with nothing to attend to are all zeros. Differentiable (gradient-weighted
    rollout needs that). Pre-dropout, like the probabilities SDPA uses internally. Memory is
    the returned map plus one (B, H', block_q, M) score tile: asking for the class-token row
    of one layer costs O(M), not O(N * M).

    Shape: q (B, H, N, D), k (B, G, M, D) -> (B, H', N', M) with H' = len(heads), N' = len(query_rows).
    """
    b, h, n, d = q.shape
    m = k.shape[2]
    dev = q.device
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    repeats = h // k.shape[1]
    head_idx = torch.arange(h, device=dev) if heads is None else heads.to(dev)
    rows = torch.arange(n, device=dev) if query_rows is None else query_rows.to(dev)
    compute = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
    # (B, H', M, D): head h reads group h // repeats; transposed once for every block.
    k_t = k.index_select(1, head_idx // repeats).to(compute).transpose(-1, -2)
    q_sel = q.index_select(1, head_idx).to(compute) * scale  # (B, H', N, D), scale folded in
    qpos = query_positions(n, m, dev)
    kpos = torch.arange(m, device=dev)[None, :]

    def pick(t: Tensor, r: Tensor) -> Tensor:
        """Rows r and the chosen heads of a tensor broadcastable to (B, H, N, M)."""
        if t.dim() >= 3 and t.shape[-3] != 1:
            t = t.index_select(-3, head_idx)
        return t.index_select(-2, r) if t.shape[-2] != 1 else t

    out = None
    for start in range(0, rows.numel(), block_q):
        r = rows[start : start + block_q]
        scores = torch.matmul(q_sel.index_select(2, r), k_t)  # (B, H', n_blk, M)
        pos = qpos[r][:, None]  # (n_blk, 1)
        if isinstance(bias, Tensor):
            scores = scores + pick(bias, r).to(compute)
        elif bias is not None:
            scores = scores + bias(head_idx[:, None, None], pos, kpos).to(compute)
        keep = None
        if is_causal:
            keep = kpos <= pos
        if window is not None:
            near = (pos - kpos) <= window if is_causal else (pos - kpos).abs() <= window
            keep = near if keep is None else keep & near
        if mask is not None:
            tile = pick(mask, r)
            keep = tile if keep is None else keep & tile
        if keep is not None:
            scores = scores.masked_fill(~keep, float("-inf"))
            weights = safe_softmax(scores).to(q.dtype)
        else:  # nothing masked: no empty rows, so the fused softmax is safe
            weights = torch.softmax(scores, dim=-1).to(q.dtype)
        if out is None:  # one preallocated result: no list of blocks + concatenation copy
            out = weights.new_empty(*weights.shape[:2], rows.numel(), m)
        out[:, :, start : start + r.numel()] = weights
    if out is None:
        return q.new_zeros(b, head_idx.numel(), 0, m)
    return out


def auto_backend(q: Tensor, k: Tensor, v: Tensor, *, mask: Tensor | None = None, bias: BiasLike = None,
                 is_causal: bool = False, window: int | None = None, scale: float | None = None,
                 dropout_p: float = 0.0) -> str:
    """The backend ``attention(..., backend="auto")`` runs for these arguments: "sdpa", "math",
    "chunked", "banded" or "toeplitz" (a Toeplitz call whose learned bias varies too far out
    falls back to "sdpa" or "chunked"). On CPU this may time the candidates (first use of a
    shape class, ``attention/routing.py``), as the call itself would. Benchmarks print it."""
    _validate(q, k, v, mask, bias, window, scale, dropout_p, "auto")
    n, m = q.shape[2], k.shape[2]
    if is_causal and n == 1 and window is None:
        is_causal = False
    scale_f = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    return _pick_backend(q, k, v, n, m, bias, window, mask, dropout_p, is_causal, scale_f)


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    mask: Tensor | None = None,
    bias: BiasLike = None,
    is_causal: bool = False,
    window: int | None = None,
    scale: float | None = None,
    dropout_p: float = 0.0,
    backend: str = "auto",
    return_weights: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Multi-head scaled dot-product attention.

    Args:
        q, k, v: queries, keys, values. Grouped-query attention when G < H (G=1: multi-query).
        mask: bool, broadcastable to (B, H, N, M); True = may attend.
        bias: added to the scores: a float tensor broadcastable to (B, H, N, M), or a callable
            ``bias(h, i, j)`` of index tensors h (H, 1, 1), i (N, 1), j (1, M) (see
            ``positional.alibi_bias`` / ``positional.relative_bias``).
        is_causal: keep keys j <= the query's position; window: keep |pos_i - j| <= W
            (with is_causal: pos_i - W <= j <= pos_i). When M > N (a KV cache) query i sits
            at key position i + (M - N) (bottom-right alignment).
        scale: score scale, default 1/sqrt(D).
        dropout_p: dropout on the weights (pass 0.0 at evaluation time).
        backend: "auto" | "sdpa" | "chunked" | "math".
        return_weights: also return exact weights (B, H, N, M), whatever backend ran.

    Shape:
        q (B, H, N, D), k (B, G, M, D), v (B, G, M, Dv) -> out (B, H, N, Dv).
        A query row with nothing to attend to outputs zeros, never NaN.
    """
    _validate(q, k, v, mask, bias, window, scale, dropout_p, backend)
    b, h, n, d = q.shape
    m = k.shape[2]
    scale_f = 1.0 / math.sqrt(d) if scale is None else float(scale)
    if is_causal and n == 1 and window is None:
        is_causal = False  # one query, bottom-right aligned: it sees every key (KV-cache decoding)
    if backend == "auto":
        backend = _pick_backend(q, k, v, n, m, bias, window, mask, dropout_p, is_causal, scale_f)
    out = _execute(backend, q, k, v, mask, bias, is_causal, window, scale_f, dropout_p)
    if not return_weights:
        return out
    weights = attention_weights(q, k, mask=mask, bias=bias, is_causal=is_causal, window=window, scale=scale_f)
    return out, weights
