"""Relative-position biases (ALiBi, T5) on the fused CPU kernel, with no (N, M) bias in memory.

A bias that depends only on ``j - pos_i`` is a Toeplitz matrix. Reversing the key order
turns it into a Hankel matrix ``H[i, j'] = u[i + j']`` (j' = M - 1 - j), and a Hankel matrix
is a strided view of one vector u of length N + M - 1: strides (1, 1). SDPA's fused CPU
kernel reads its additive mask through strides, so it gets the full bias tile by tile from
that vector. Causal structure goes into u as -inf (rel > 0).

Biases without parameters (ALiBi) run through ``F.scaled_dot_product_attention`` itself,
dropout included. A learned bias (T5) needs d(loss)/d(u): the sums of the score gradient dS
along each diagonal. ``_ToeplitzAttention`` gets dq, dk, dv from the fused backward and
builds du from three parts, none holding an (N, M) tensor:

- near band (|rel| below the distance c where the bias becomes constant): tiles of
  (query block, keys within c), recomputed from the saved log-sum-exp;
- far left (rel <= -c_left, one constant bias a): sum_j dS_ij = m_i (g_i . o_i - delta_i),
  with o_i, m_i the output and probability mass of row i restricted to that region, which
  one causal fused forward on shifted slices gives (half the cost of a forward);
- far right: every row of dS sums to zero, so it is minus the other two.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from attnlab.attention import flash_cpu
from attnlab.attention.chunked import expand_groups

__all__ = ["toeplitz_attention", "toeplitz_applicable", "relative_values"]

# Learned biases use the band + far-region backward only when the bias is constant beyond
# this fraction of the keys; otherwise the caller's block-wise kernel is cheaper.
_MAX_BAND_FRACTION = 0.5


def relative_values(bias_fn, heads: int, n: int, m: int, device) -> Tensor:
    """u (H, N + M - 1) with u[:, t] = bias at rel = j - pos_i = N - 1 - t (float32)."""
    rel = (n - 1) - torch.arange(n + m - 1, device=device)
    h = torch.arange(heads, device=device)[:, None, None]
    values = bias_fn(h, torch.zeros(1, 1, dtype=torch.long, device=device), rel[None, :])  # (H, 1, T)
    return values[:, 0].float()


def _hankel(u: Tensor, n: int, m: int) -> Tensor:
    """The bias of flipped keys as a view (1, H, N, M) of u (H, N + M - 1): no copy."""
    u = u.contiguous()
    return u.as_strided((1, u.shape[0], n, m), (0, u.stride(0), 1, 1))


def _with_causal(u: Tensor, n: int) -> Tensor:
    """Set rel > 0 (t < N - 1) to -inf."""
    return torch.cat([u.new_full((u.shape[0], n - 1), float("-inf")), u[:, n - 1 :]], dim=1)


def _varying_prefix(values: Tensor) -> int:
    """Length of the part of ``values`` (H, L) before its constant tail (0 if all equal, or empty)."""
    if values.shape[1] == 0:
        return 0
    differs = torch.nonzero(~(values == values[:, -1:]).all(dim=0))
    return 0 if differs.numel() == 0 else int(differs[-1]) + 1


class _ToeplitzAttention(torch.autograd.Function):
    """Forward/backward for a learned Toeplitz bias u (H, N + M - 1)."""

    @staticmethod
    def forward(ctx, q, k, v, u, scale: float, is_causal: bool, c_left: int, c_right: int, block: int):  # type: ignore[override]
        n, m = q.shape[2], k.shape[2]
        ub = _with_causal(u, n) if is_causal else u
        kf, vf = k.flip(2), v.flip(2)
        out, lse = flash_cpu.flash_forward(q, kf, vf, _hankel(ub, n, m), scale)
        ctx.save_for_backward(q, kf, vf, ub, out, lse)
        ctx.args = (scale, is_causal, c_left, c_right, block)
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        q, kf, vf, ub, out, lse = ctx.saved_tensors
        scale, is_causal, c_left, c_right, block = ctx.args
        n, m = q.shape[2], kf.shape[2]
        g = grad_out.contiguous()
        dq, dkf, dvf = flash_cpu.flash_backward(g, q, kf, vf, out, lse, _hankel(ub, n, m), scale)
        du = _bias_grad(q, kf, vf, ub, out, lse, g, scale, is_causal, c_left, c_right, block)
        return dq, dkf.flip(2), dvf.flip(2), du, None, None, None, None, None


def _diagonal_sums(x: Tensor) -> Tensor:
    """Sums of (H, R, C) along i + j = const. Shape: (H, R + C - 1); no gather.

    Padding each row to C + R and re-reading the flat rows with stride C + R - 1 moves
    entry (i, j) to column i + j of row i.
    """
    h, r, c = x.shape
    padded = torch.nn.functional.pad(x, (0, r)).reshape(h, r * (c + r))[:, : r * (c + r - 1)]
    return padded.reshape(h, r, c + r - 1).sum(dim=1)


def _bias_grad(q, kf, vf, ub, out, lse, g, scale, is_causal, c_left, c_right, block) -> Tensor:
    """d(loss)/d(u) (H, N + M - 1), summed over the batch; see the module docstring.

    Works on the flipped keys, where the bias tile of rows i, keys j' is the Hankel view
    u[i + j'] and u's gradient collects dS along i + j' = t.
    """
    b, h, n, d = q.shape
    m = kf.shape[2]
    offset = m - n
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    delta = (g.to(acc) * out.to(acc)).sum(-1)  # (B, H, N)
    du = torch.zeros(h, n + m - 1, dtype=acc, device=q.device)
    near = torch.zeros(b, h, n, dtype=acc, device=q.device)  # row sums of dS over the band
    right_reach = 0 if is_causal else c_right - 1
    # Outside the band the bias is -inf here: exp gives the zeros a mask would (no mask pass).
    rel_all = (n - 1) - torch.arange(n + m - 1, device=q.device)
    ubc = ub.to(acc).masked_fill(~((rel_all > -c_left) & (rel_all <= right_reach)), float("-inf")).contiguous()
    qs = q * scale  # scale folded into q once, not into every score tile
    lse_acc = lse.to(acc)
    for i0 in range(0, n, block):
        i1 = min(i0 + block, n)
        # Band keys j in [pos_i0 - c_left + 1, pos_(i1-1) + right_reach]; flipped j' = m - 1 - j.
        j0 = max(0, m - 1 - (i1 - 1 + offset + right_reach))
        j1 = min(m, m - (i0 + offset - (c_left - 1)))
        if j0 >= j1:
            continue
        nq, mk = i1 - i0, j1 - j0
        bias = ubc.as_strided((h, nq, mk), (ubc.stride(0), 1, 1), ubc.storage_offset() + i0 + j0)
        scores = torch.matmul(qs[:, :, i0:i1], kf[:, :, j0:j1].transpose(-1, -2)).to(acc).add_(bias)
        p = scores.sub_(lse_acc[:, :, i0:i1, None]).exp_()  # (B, H, nq, mk), 0 off the band
        dp = torch.matmul(g[:, :, i0:i1], vf[:, :, j0:j1].transpose(-1, -2)).to(acc)
        ds = dp.sub_(delta[:, :, i0:i1, None]).mul_(p)  # (B, H, nq, mk)
        near[:, :, i0:i1] = ds.sum(-1)
        du[:, i0 + j0 : i0 + j0 + nq + mk - 1] += _diagonal_sums(ds.sum(0))
    if is_causal:  # rows sum to zero and nothing lies right of the diagonal
        left = -near
    else:
        left = _far_left_sums(q, kf, vf, ub, lse, g, delta, scale, c_left)  # (B, H, N)
    if c_left < m:
        du[:, n - 1 + c_left] += left.sum(dim=(0, 2))
    if not is_causal and c_right <= n - 1:
        du[:, n - 1 - c_right] -= (near + left).sum(dim=(0, 2))
    return du.to(ub.dtype)


def _far_left_sums(q, kf, vf, ub, lse, g, delta, scale, c_left) -> Tensor:
    """Per row, the sum of dS over keys with rel <= -c_left (constant bias there). (B, H, N)."""
    b, h, n, d = q.shape
    m = kf.shape[2]
    offset = m - n
    out = torch.zeros(b, h, n, dtype=delta.dtype, device=q.device)
    start = c_left - offset  # first query row with a far-left key when offset <= c_left
    if c_left >= m:
        return out
    const = ub[:, n - 1 + c_left].to(delta.dtype)[None, :, None]  # (1, H, 1)
    if start >= 0:
        # Row i sees keys j <= i - start: top-left causal attention of rows start.. on keys ..m - c_left.
        o_far, lse_far = flash_cpu.flash_forward(
            q[:, :, start:], kf[:, :, c_left:].flip(2), vf[:, :, c_left:].flip(2), None, scale, is_causal=True
        )
    else:  # long KV cache: every row has far-left keys; the region as a Hankel -inf/0 mask
        rel = (n - 1) - torch.arange(n + m - 1, device=q.device)
        region = torch.zeros(1, n + m - 1, device=q.device).masked_fill(rel > -c_left, float("-inf"))
        o_far, lse_far = flash_cpu.flash_forward(q, kf, vf, _hankel(region, n, m), scale)
        start = 0
    mass = torch.exp(lse_far.to(delta.dtype) + const - lse[:, :, start:].to(delta.dtype))
    sums = mass * ((g[:, :, start:].to(delta.dtype) * o_far.to(delta.dtype)).sum(-1) - delta[:, :, start:])
    out[:, :, start:] = sums
    return out


def toeplitz_applicable(q: Tensor, k: Tensor, v: Tensor, bias, mask, window, dropout_p: float) -> bool:
    """Whether ``toeplitz_attention`` can run this call."""
    if not getattr(bias, "translation_invariant", False) or mask is not None or window is not None:
        return False
    if q.device.type != "cpu" or not flash_cpu.available() or v.shape[-1] != q.shape[-1]:
        return False
    if q.dtype not in (torch.float32, torch.bfloat16, torch.float16) or k.shape[2] < q.shape[2]:
        return False
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in getattr(bias, "tensors", ()))
    return not (needs_grad and dropout_p > 0)


def toeplitz_attention(q: Tensor, k: Tensor, v: Tensor, bias, *, scale: float, is_causal: bool,
                       dropout_p: float = 0.0, block: int = 64) -> Tensor | None:
    """Attention with a translation-invariant bias callable; None when a learned bias's
    constant tail starts too far out for the band backward to pay (use the block-wise kernel).

    Shape: q (B, H, N, D), k/v (B, G, M, D) -> (B, H, N, D).
    """
    h, n, m = q.shape[1], q.shape[2], k.shape[2]
    u = relative_values(bias, h, n, m, q.device)  # (H, N + M - 1)
    if not u.requires_grad:
        ub = _with_causal(u, n) if is_causal else u
        return F.scaled_dot_product_attention(
            q, k.flip(2), v.flip(2), attn_mask=_hankel(ub, n, m), dropout_p=dropout_p, scale=scale,
            enable_gqa=k.shape[1] != h,
        )
    with torch.no_grad():
        # Far left: rel <= -c_left; far right: rel >= c_right; the bias is constant on each.
        c_left = max(1, _varying_prefix(u[:, n - 1 :]))  # u[:, n - 1:] holds rel = 0, -1, -2, ...
        c_right = _varying_prefix(u[:, : n - 1].flip(1)) + 1  # u[:, :n - 1].flip holds rel = 1, 2, ...
    reach = c_left + (0 if is_causal else c_right)
    if reach > _MAX_BAND_FRACTION * m + 1:
        return None
    repeats = h // k.shape[1]
    k, v = expand_groups(k, repeats), expand_groups(v, repeats)
    return _ToeplitzAttention.apply(q, k, v, u, scale, is_causal, c_left, c_right, block)
