"""The attention benchmarks' cases: inputs, the three spellings of each case (ours, plain
SDPA's, the naive O(N^2) one's) and the timed callables. Shared by ``attention.py`` (the broad
table) and ``attention_targets.py`` (issue 7's paired target table)."""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F

from attnlab.attention import attention, positional
from attnlab.layers import RelativePositionBias

try:  # labels (and lets attention.py reuse) what "auto" dispatches to
    from attnlab.attention.functional import auto_backend
except ImportError:  # pragma: no cover - an attnlab from before auto_backend
    auto_backend = None

CASES = ("dense", "causal", "alibi", "t5", "window", "padding", "gqa")
ROWS = ("auto", "chunked", "sdpa", "math", "SDPA", "naive")
DEFAULT_ROWS = ("auto", "chunked", "sdpa", "SDPA", "naive")
OURS = ("auto", "chunked", "sdpa", "math")
GIB = 1024**3


# --- the cases -------------------------------------------------------------------------

def attended_pairs(case: str, n: int, m: int, window: int) -> int:
    """(query, key) pairs a kernel must compute (see the GFLOP/s convention above)."""
    if case == "causal":  # bottom-right aligned: query i sees keys <= i + (m - n)
        return sum(min(m, i + (m - n) + 1) for i in range(n))
    if case == "window":
        return sum(min(m - 1, i + window) - max(0, i - window) + 1 for i in range(n))
    return n * m


def _dense_alibi(h: int, n: int, m: int, dtype, device) -> torch.Tensor:
    """-slope_h * |i - j| as a dense tensor, written out here, not via the library callable."""
    slopes = positional.alibi_slopes(h).to(device)[:, None, None]  # (H, 1, 1)
    i = torch.arange(n, device=device)[:, None] + (m - n)
    j = torch.arange(m, device=device)[None, :]
    return (-slopes * (i - j).abs().float()).to(dtype).unsqueeze(0)  # (1, H, N, M)


def make_case(case: str, cfg: dict[str, Any], dtype: torch.dtype, device: torch.device, grad: bool):
    """Inputs plus the three spellings of the case: ours, plain SDPA's, the naive one's."""
    b, h, n, d, w = cfg["batch"], cfg["heads"], cfg["n"], cfg["head_dim"], cfg["window"]
    gen = torch.Generator(device=device).manual_seed(cfg["seed"])
    g = max(1, h // 4) if case == "gqa" else h
    q = torch.randn(b, h, n, d, generator=gen, device=device, dtype=dtype)
    k, v = (torch.randn(b, g, n, d, generator=gen, device=device, dtype=dtype) for _ in range(2))
    for t in (q, k, v):
        t.requires_grad_(grad)
    ours: dict[str, Any] = {}
    ref: dict[str, Any] = {}
    naive: dict[str, Any] = {"mask": None, "bias": None}
    if case == "gqa":
        ref["enable_gqa"] = True
    if case == "causal":
        ours["is_causal"] = ref["is_causal"] = True
        naive["mask"] = torch.ones(n, n, dtype=torch.bool, device=device).tril()
    elif case == "alibi":
        ours["bias"] = positional.alibi_bias(h)
        ref["attn_mask"] = naive["bias"] = _dense_alibi(h, n, n, dtype, device)
    elif case == "t5":
        torch.manual_seed(cfg["seed"])
        module = RelativePositionBias(h).to(device)
        with torch.no_grad():
            module.embedding.weight.normal_(0.0, 0.5)
        module.requires_grad_(grad)
        ours["bias"] = module.bias_function()
        with torch.no_grad():
            ref["attn_mask"] = naive["bias"] = module(n, n).to(dtype)  # (1, H, N, M)
    elif case == "window":
        ours["window"] = w
        idx = torch.arange(n, device=device)
        ref["attn_mask"] = naive["mask"] = (idx[:, None] - idx[None, :]).abs() <= w  # (N, M)
    elif case == "padding":
        mask = torch.ones(b, 1, 1, n, dtype=torch.bool, device=device)
        mask[: (b + 1) // 2, ..., n - n // 4 :] = False
        ours["mask"] = ref["attn_mask"] = naive["mask"] = mask
    elif case not in ("dense", "gqa"):
        raise ValueError(f"unknown case {case!r}")
    return (q, k, v), ours, ref, naive


def _naive(q, k, v, mask, bias):
    if k.shape[1] != q.shape[1]:
        k, v = (t.repeat_interleave(q.shape[1] // k.shape[1], dim=1) for t in (k, v))
    scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))  # (B, H, N, M)
    if bias is not None:
        scores = scores + bias
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.matmul(torch.softmax(scores, dim=-1), v)


def row_callable(row: str, inputs, ours, ref, naive, backward: bool) -> Callable[[], Any]:
    q, k, v = inputs
    if row in OURS:
        forward = lambda: attention(q, k, v, backend=row, **ours)  # noqa: E731
    elif row == "SDPA":
        forward = lambda: F.scaled_dot_product_attention(q, k, v, **ref)  # noqa: E731
    elif row == "naive":
        forward = lambda: _naive(q, k, v, naive["mask"], naive["bias"])  # noqa: E731
    else:
        raise ValueError(f"unknown row {row!r}")
    if not backward:
        return lambda: (forward(),)
    # The same upstream gradient for every row, so their q, k, v gradients are comparable.
    gen = torch.Generator(device=q.device).manual_seed(1234)
    grad_out = torch.randn(q.shape, generator=gen, device=q.device, dtype=q.dtype)

    def forward_backward():
        for t in inputs:
            t.grad = None
        out = forward()
        out.backward(grad_out)
        return (out.detach(), q.grad, k.grad, v.grad)

    return forward_backward


def picked_backend(inputs, ours: dict[str, Any]) -> str | None:
    """What ``backend="auto"`` dispatches to for this case ("sdpa", "banded", "toeplitz", ...),
    or None when that cannot be told. On CPU this is the route measured (or read from the
    autotune cache) for the case's shape class, as the timed call itself takes it."""
    if auto_backend is None:
        return None
    q, k, v = inputs
    try:
        return auto_backend(q, k, v, **ours)
    except (TypeError, ValueError):
        return None


def naive_too_big(cfg: dict[str, Any]) -> float | None:
    """Size in GiB of the float32 scores when it is over the cap, else None."""
    gib = cfg["batch"] * cfg["heads"] * cfg["n"] * cfg["n"] * 4 / GIB
    return gib if gib > cfg["max_naive_gb"] else None


def plan(inputs, ours: dict[str, Any], rows: list[str], reuse_auto: bool):
    """Run order (SDPA first: it is the reference) and auto's alias, if it has one."""
    order = ["SDPA"] + [r for r in ROWS if r in rows and r not in ("SDPA", "auto")]
    alias = picked_backend(inputs, ours) if "auto" in rows else None
    if "auto" in rows and not (reuse_auto and alias in order):
        order.append("auto")
    return order, alias


def max_abs_err(got, want) -> float:
    """Largest |got - want| over paired outputs (gradients included), in float32."""
    return max(float((g.float() - w.float()).abs().max()) for g, w in zip(got, want))
