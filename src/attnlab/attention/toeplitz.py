"""Relative-position biases (ALiBi, T5) on the fused CPU kernel, with no (N, M) bias in memory.

ALiBi (Press et al. 2022) and T5's bucketed relative bias (Raffel et al. 2020) depend only on
the offset j - i. Given to SDPA as a dense tensor, such a bias costs B*H*N*M values; here it
costs N + M - 1 per head.

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
  one causal fused forward on shifted slices gives (~0.6 of a forward);
- far right: every row of dS sums to zero, so it is minus the other two.

That far-left pass would be paid twice (its region is part of the forward too), so a
non-causal training forward is computed as the far-left pass plus the rest, merged by
log-sum-exp: the rest's key range shrinks down the rows (row i needs only flipped keys
j' < M - pos_i + c_left - 1), so blocks of 256 rows each run on their own key prefix, ~0.6
of a forward in all. The backward then reuses the far-left output. The two parts are merged
in blocks of rows, so the float32 copies the merge needs stay in cache instead of costing
whole-tensor passes. The cost against dense SDPA is measured by
``benchmarks/attention_targets.py`` (current figures in benchmarks/README.md).
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


def _relative_positions(n: int, m: int, device) -> Tensor:
    """rel = j - pos_i of each entry t of u: N - 1 - t, for t in [0, N + M - 1)."""
    return (n - 1) - torch.arange(n + m - 1, device=device)


def relative_values(bias_fn, heads: int, n: int, m: int, device) -> Tensor:
    """u (H, N + M - 1) with u[:, t] = bias at rel = j - pos_i = N - 1 - t (float32)."""
    rel = _relative_positions(n, m, device)
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
        # Non-causal: the backward needs the far-left region's own attention (o_far, lse_far).
        # Where it is a causal shape, the forward runs as that pass plus the rest and merges them,
        # which costs less than a whole-matrix forward here and the same pass again in the backward.
        far = None
        if not is_causal and c_left < m and c_left >= m - n:
            out, lse, far = _split_forward(q, k, v, kf, vf, ub, scale, c_left)
        else:
            out, lse = flash_cpu.flash_forward(q, kf, vf, _hankel(ub, n, m), scale)
        o_far, lse_far = far if far is not None else (q.new_empty(0), lse.new_empty(0))
        ctx.save_for_backward(q, k, v, kf, vf, ub, out, lse, o_far, lse_far)  # k, v: the inputs, no extra memory
        ctx.args = (scale, is_causal, c_left, c_right, block, far is not None)
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        q, k, v, kf, vf, ub, out, lse, o_far, lse_far = ctx.saved_tensors
        scale, is_causal, c_left, c_right, block, has_far = ctx.args
        n, m = q.shape[2], kf.shape[2]
        g = grad_out.contiguous()
        dq, dkf, dvf = flash_cpu.flash_backward(g, q, kf, vf, out, lse, _hankel(ub, n, m), scale)
        far = (o_far, lse_far) if has_far else None
        du = _bias_grad(q, k, v, kf, vf, ub, out, lse, g, scale, is_causal, c_left, c_right, block, far)
        return dq, dkf.flip(2), dvf.flip(2), du, None, None, None, None, None


def _split_forward(q, k, v, kf, vf, ub, scale: float, c_left: int, rows: int = 256):
    """The forward as two fused passes whose union is the whole matrix, merged by log-sum-exp.

    Far left (rel <= -c_left, one constant bias a per head): rows c_left - offset .. see keys
    j <= pos_i - c_left, a top-left causal pass (``_far_left_pass``). The rest (rel > -c_left):
    row i sees flipped keys j' < M - pos_i + c_left - 1, a prefix that shrinks down the rows,
    so blocks of ``rows`` queries each run on their own key prefix with the Hankel bias (far
    left set to -inf). Returns out, lse of the whole and (o_far, lse_far) for the backward.
    """
    b, h, n, d = q.shape
    m = k.shape[2]
    offset = m - n
    start, o_far, lse_far = _far_left_pass(q, k, v, kf, vf, scale, c_left)
    rel = _relative_positions(n, m, q.device)
    u_rest = ub.masked_fill(rel <= -c_left, float("-inf")).contiguous()  # (H, N + M - 1)
    out = torch.empty_like(q)
    lse = torch.empty(b, h, n, dtype=torch.float32, device=q.device)
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        width = min(m, m - (r0 + offset) + c_left - 1)  # flipped keys row r0 can see
        bias = u_rest.as_strided((1, h, r1 - r0, width), (0, u_rest.stride(0), 1, 1), u_rest.storage_offset() + r0)
        out[:, :, r0:r1], lse[:, :, r0:r1] = flash_cpu.flash_forward(q[:, :, r0:r1], kf[:, :, :width], vf[:, :, :width],
                                                                     bias, scale)
    # Merge row by row: out = lerp(out_rest, o_far, w_far), w_far = exp(lse_far + a - lse_total),
    # a the far part's constant bias; in blocks of rows, so the float32 copies stay in cache.
    lse_f = lse_far + ub[:, n - 1 + c_left].float()[None, :, None]  # (B, H, N - start)
    total = torch.logaddexp(lse[:, :, start:], lse_f)
    w_far = torch.exp(lse_f - total)[..., None]  # (B, H, N - start, 1)
    rest = out[:, :, start:]
    for r0 in range(0, n - start, rows):
        part = rest[:, :, r0 : r0 + rows]
        part.copy_(torch.lerp(part.float(), o_far[:, :, r0 : r0 + rows].float(), w_far[:, :, r0 : r0 + rows]))
    lse[:, :, start:] = total
    return out, lse, (o_far, lse_far)


def _diagonal_sums(x: Tensor) -> Tensor:
    """Sums of (H, R, C) along i + j = const. Shape: (H, R + C - 1); no gather.

    Padding each row to C + R and re-reading the flat rows with stride C + R - 1 moves
    entry (i, j) to column i + j of row i.
    """
    h, r, c = x.shape
    padded = torch.nn.functional.pad(x, (0, r)).reshape(h, r * (c + r))[:, : r * (c + r - 1)]
    return padded.reshape(h, r, c + r - 1).sum(dim=1)


def _bias_grad(q, k, v, kf, vf, ub, out, lse, g, scale, is_causal, c_left, c_right, block, far=None) -> Tensor:
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
    rel_all = _relative_positions(n, m, q.device)
    ubc = ub.to(acc).masked_fill(~((rel_all > -c_left) & (rel_all <= right_reach)), float("-inf")).contiguous()
    # 3-D (B*H, rows, D) operands: a row slice of them is one strided batch that bmm takes as
    # it is, where matmul would copy 4-D slices first.
    qs = (q * scale).reshape(b * h, n, d)  # scale folded into q once, not into every score tile
    g3, kf3, vf3 = g.reshape(b * h, n, d), kf.reshape(b * h, m, d), vf.reshape(b * h, m, d)
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
        scores = torch.bmm(qs[:, i0:i1], kf3[:, j0:j1].transpose(1, 2)).view(b, h, nq, mk).to(acc).add_(bias)
        p = scores.sub_(lse_acc[:, :, i0:i1, None]).exp_()  # (B, H, nq, mk), 0 off the band
        dp = torch.bmm(g3[:, i0:i1], vf3[:, j0:j1].transpose(1, 2)).view(b, h, nq, mk).to(acc)
        ds = dp.sub_(delta[:, :, i0:i1, None]).mul_(p)  # (B, H, nq, mk)
        near[:, :, i0:i1] = ds.sum(-1)
        du[:, i0 + j0 : i0 + j0 + nq + mk - 1] += _diagonal_sums(ds.sum(0))
    if is_causal:  # rows sum to zero and nothing lies right of the diagonal
        left = -near
    else:
        if far is None and c_left < m:  # the forward ran as one pass: run the far-left one now
            far = _far_left_pass(q, k, v, kf, vf, scale, c_left)[1:]
        left = _far_left_sums(ub, lse, g, delta, c_left, far)  # (B, H, N)
    if c_left < m:
        du[:, n - 1 + c_left] += left.sum(dim=(0, 2))
    if not is_causal and c_right <= n - 1:
        du[:, n - 1 - c_right] -= (near + left).sum(dim=(0, 2))
    return du.to(ub.dtype)


def _far_left_pass(q, k, v, kf, vf, scale: float, c_left: int):
    """(start, o_far, lse_far): rows start.. attending only to their far-left keys (rel <= -c_left),
    without the bias there. Shape: o_far (B, H, N - start, D), lse_far (B, H, N - start). Needs c_left < M."""
    n, m = q.shape[2], k.shape[2]
    start = c_left - (m - n)  # first query row with a far-left key when offset <= c_left
    if start >= 0:
        # Row i sees keys j <= i - start: top-left causal attention of rows start.. on keys ..m - c_left
        # (views of the unflipped inputs: no copy).
        o_far, lse_far = flash_cpu.flash_forward(
            q[:, :, start:], k[:, :, : m - c_left], v[:, :, : m - c_left], None, scale, is_causal=True
        )
        return start, o_far, lse_far
    # long KV cache: every row has far-left keys; the region as a Hankel -inf/0 mask
    rel = _relative_positions(n, m, q.device)
    region = torch.zeros(1, n + m - 1, device=q.device).masked_fill(rel > -c_left, float("-inf"))
    o_far, lse_far = flash_cpu.flash_forward(q, kf, vf, _hankel(region, n, m), scale)
    return 0, o_far, lse_far


def _far_left_sums(ub, lse, g, delta, c_left, far) -> Tensor:
    """Per row, the sum of dS over keys with rel <= -c_left (constant bias a there). (B, H, N).

    sum_j dS_ij = m_i (g_i . o_i - delta_i), with o_i and m_i = exp(lse_far_i + a - lse_i) the
    output and probability mass of row i restricted to the region.
    """
    b, h, n = delta.shape
    out = torch.zeros(b, h, n, dtype=delta.dtype, device=delta.device)
    if far is None:  # no far-left keys at all (c_left >= M)
        return out
    o_far, lse_far = far
    start = n - o_far.shape[2]
    const = ub[:, n - 1 + c_left].to(delta.dtype)[None, :, None]  # (1, H, 1)
    mass = torch.exp(lse_far.to(delta.dtype) + const - lse[:, :, start:].to(delta.dtype))
    out[:, :, start:] = mass * ((g[:, :, start:].to(delta.dtype) * o_far.to(delta.dtype)).sum(-1) - delta[:, :, start:])
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
