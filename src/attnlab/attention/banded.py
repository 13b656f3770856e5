"""Sliding-window attention at O(N * W) cost on the fused CPU flash kernel.

A sliding window (as in Longformer, Beltagy et al. 2020) expressed as a dense (N, M) mask
saves neither time nor memory: the fused kernel still scores every pair. This module gives
the kernel only the keys each block of queries can see.

Queries are cut into blocks of ``bq`` rows; block b needs only the keys within W of its
rows, a band of L = bq + 2W keys (bq + W when causal). The bands overlap, so they are not
copied: one padded copy of K and V is viewed through ``as_strided`` as (B*H, nb, L, D) and
the fused kernel reads each band in place. A small per-block additive mask (nb, bq, L)
keeps |i - j| <= W inside the band. Cost: N * L instead of N * M score entries, forward
and backward; memory: O(N * L) for the mask, nothing of size (N, M).

The backward calls the fused backward on band views and folds the band gradients of K and V
back onto the sequence (each key belongs to ceil(L / bq) bands). Forward and backward may cut
the rows differently: the saved output and log-sum-exp are per row, so the backward re-blocks
them. PyTorch's CPU kernel tiles queries by 32 rows below 192 rows, by 64 from 192, by 256
from 768, and its backward suffers most from small tiles; so the forward uses short bands
(64 rows: fewest wasted scores) and the backward longer ones (192 rows in bf16 / fp16, up to
128 in fp32; ``band_block_sizes``). Those sizes were chosen with
``benchmarks/attention_targets.py`` on Zen 4/5 (figures in benchmarks/README.md); another CPU
tiles differently, so with ``attnlab.autotune`` on, the block sizes are a measured choice per
shape class among these defaults and their neighbours (``_tuned_blocks``: families
``banded.fwd_block`` and, when a gradient will be taken, ``banded.bwd_block``); with
``ATTNLAB_AUTOTUNE=0`` they are the defaults. Every blocking gives the same result to
rounding (tests/attention/test_fused_cpu.py checks any pair against float64).

The backward may also cut the score matrix by keys (``_backward_by_keys``): block b of bk keys
with the bk + 2W queries that see it. The fused backward needs only the forward's per-row
log-sum-exp, so it can run on any tiling; cut by keys it writes dK and dV in place (only dQ
is folded), and its query bands are long enough (from 768 rows) for the kernel's widest
tiles. Key bands are candidates of ``banded.bwd_block`` ("k256": 256 keys a band) beside the
query bands, taken where they measure faster (figures in benchmarks/README.md).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

from attnlab import autotune
from attnlab.attention import flash_cpu
from attnlab.attention.chunked import expand_groups, reduce_groups

__all__ = ["banded_attention", "band_block_size", "band_width"]


def band_block_size(window: int) -> int:
    """Query rows per band: about the window, so ~2/3 of each band's scores are used."""
    return max(32, min(256, 1 << max(5, (window - 1).bit_length())))


def band_block_sizes(window: int, dtype: torch.dtype) -> tuple[int, int]:
    """(forward, backward) query rows per band on the fused CPU kernel; see the module docstring."""
    forward = min(64, band_block_size(window))
    if window < 64:
        return forward, band_block_size(window)
    return forward, (min(128, band_block_size(window)) if dtype == torch.float32 else 192)


def band_width(window: int, is_causal: bool, block: int) -> int:
    """Keys per band, L."""
    return block + window + (0 if is_causal else window)


@functools.lru_cache(maxsize=8)
def _band_mask(n: int, m: int, window: int, is_causal: bool, block: int, dtype: torch.dtype,
               device: str) -> Tensor:
    """Additive mask (1, nb, bq, L): 0 where band column c may be attended by row r, else -inf."""
    nb = -(-n // block)
    width = band_width(window, is_causal, block)
    offset = m - n
    start = torch.arange(nb, device=device)[:, None, None] * block  # (nb, 1, 1)
    rows = torch.arange(block, device=device)[None, :, None]  # (1, bq, 1)
    cols = torch.arange(width, device=device)[None, None, :]  # (1, 1, L)
    qpos = start + rows + offset
    kpos = start + offset - window + cols
    valid = (kpos >= 0) & (kpos < m)
    keep = valid & (qpos - kpos <= window)
    keep &= (kpos <= qpos) if is_causal else (kpos - qpos <= window)
    padding_row = (start + rows) >= n  # rows added to fill the last block: any real key will do
    keep = torch.where(padding_row, valid, keep)
    return _additive(keep, dtype)


@functools.lru_cache(maxsize=8)
def _key_band_mask(n: int, m: int, window: int, is_causal: bool, block: int, dtype: torch.dtype,
                   device: str) -> Tensor:
    """Additive mask (1, nk, L, bk) of the key-banded backward: 0 where band row r (a query) may
    attend column c (a key of block b), else -inf. Rows outside the queries are masked whole: with
    the forward's log-sum-exp given, their probabilities are exp(-inf) = 0, not NaN."""
    nk = -(-m // block)
    width = band_width(window, is_causal, block)
    start = torch.arange(nk, device=device)[:, None, None] * block  # (nk, 1, 1)
    kpos = start + torch.arange(block, device=device)[None, None, :]  # (nk, 1, bk)
    qpos = start - (0 if is_causal else window) + torch.arange(width, device=device)[None, :, None]  # (nk, L, 1)
    query = qpos - (m - n)  # row index of the query at key position qpos
    keep = (query >= 0) & (query < n) & (kpos < m) & (qpos - kpos <= window)
    keep &= (kpos <= qpos) if is_causal else (kpos - qpos <= window)
    return _additive(keep, dtype)


def _additive(keep: Tensor, dtype: torch.dtype) -> Tensor:
    """Boolean keep (nb, r, c) -> additive mask (1, nb, r, c): 0 where kept, -inf elsewhere."""
    return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill(~keep, float("-inf")).unsqueeze(0)


def _padded(x: Tensor, heads: int, length: int, lead: int) -> Tensor:
    """(B, G, M, D) -> zero-padded (B*H, length, D) holding x at rows lead : lead + M."""
    b, g, m, d = x.shape
    x = expand_groups(x, heads // g)
    return F.pad(x.reshape(b * heads, m, d), (0, 0, lead, length - lead - m))


def _rows_padded(x: Tensor, rows: int) -> Tensor:
    """(B, H, N, D) with zero rows appended up to ``rows`` (no copy when none are needed)."""
    return x if x.shape[2] == rows else F.pad(x, (0, 0, 0, rows - x.shape[2]))


def _bands(padded: Tensor, nb: int, block: int, width: int, offset: int) -> Tensor:
    """Overlapping band views (B*H, nb, L, ...) of a padded (B*H, P, ...) tensor: band b starts at row
    offset + b * block; no copy."""
    row = padded.stride(1)
    return padded.as_strided((padded.shape[0], nb, width, *padded.shape[2:]),
                             (padded.stride(0), block * row, row, *padded.stride()[2:]),
                             padded.storage_offset() + offset * row)


def _fold(band_grad: Tensor, m: int, block: int, first: int) -> Tensor:
    """Sum band gradients (B*H, nb, L, D) onto the keys: (B*H, M, D), contiguous.

    Column c of band b belongs to key ``first + b * block + c``; columns outside [0, M) are
    padding keys, masked out, so their gradient is zero and they are dropped. Writing straight
    into a fresh (B*H, M, D) tensor (instead of a padded buffer sliced afterwards) saves the
    copy autograd would make of a strided gradient, and every avoided pass counts: fresh
    large allocations are page-faulted in.
    """
    bh, nb, width, d = band_grad.shape
    out = band_grad.new_empty(bh, m, d)
    for s in range(-(-width // block)):
        seg = band_grad[:, :, s * block : min(width, (s + 1) * block)]  # (B*H, nb, ls, D)
        ls = seg.shape[2]
        start = first + s * block  # key of seg[:, 0, 0]
        lo = min(nb, max(0, -(start // block)))  # bands [lo, hi) lie wholly inside [0, M)
        hi = max(lo, min(nb, (m - ls - start) // block + 1))
        r0, r1 = start + lo * block, start + (hi - 1) * block + ls  # keys those bands cover
        if s == 0:  # piece 0 initialises: zero what it leaves uncovered
            if hi == lo:
                r0 = r1 = 0
            out[:, :r0] = 0
            out[:, r1:] = 0
        if hi > lo:
            view = out.as_strided((bh, hi - lo, ls, d), (m * d, block * d, d, 1), out.storage_offset() + r0 * d)
            if s == 0:
                view.copy_(seg[:, lo:hi])
            else:
                view += seg[:, lo:hi]
        for b in {lo - 1, hi} & set(range(nb)):  # bands cut by either end of the keys
            k0 = start + b * block
            c0, c1 = max(0, -k0), min(ls, m - k0)
            if c1 > c0:
                out[:, k0 + c0 : k0 + c1] += seg[:, b, c0:c1]
    return out


def _reblocked(x: Tensor, n: int, rows: int) -> Tensor:
    """Per-row results (B*H, nb, bq, ...) of one blocking -> (B*H, rows, ...) for another: the first
    n rows kept, zeros after (a padding row with zero upstream gradient adds nothing)."""
    flat = x.reshape(x.shape[0], -1, *x.shape[3:])[:, :n]
    return F.pad(flat, (0, 0) * (flat.dim() - 2) + (0, rows - n)) if rows != flat.shape[1] else flat


def _query_bands(x: Tensor, nk: int, block: int, width: int, lead: int) -> Tensor:
    """Per-row (B*H, N, ...) -> overlapping views (B*H, nk, L, ...) of a zero-padded copy: band b holds
    rows b * block - lead ... b * block - lead + L - 1 (rows outside [0, N) are zeros)."""
    length = (nk - 1) * block + width
    padded = F.pad(x, (0, 0) * (x.dim() - 2) + (lead, length - lead - x.shape[1]))
    return _bands(padded, nk, block, width, 0)


def _backward_by_keys(grad_out: Tensor, q: Tensor, kp: Tensor, vp: Tensor, out: Tensor, lse: Tensor,
                      m: int, window: int, is_causal: bool, scale: float, block: int):
    """The fused backward on key bands: block b of ``block`` keys with the L queries that see it.

    The backward needs no normalisation beyond the forward's per-row log-sum-exp, so any cut
    of the score matrix into tiles gives the same gradients. Cutting by keys writes dK and dV
    in place (only dQ is folded from overlapping bands) and hands the kernel L = block + 2W
    query rows per call; its CPU backward tiles queries by 256 from 768 rows, where it may run
    faster than on the short query bands of ``band_block_sizes``.
    Shapes: per-row q, grad_out, out (B*H, N, D), lse (B*H, N); kp, vp as the forward padded
    them (keys at rows W ..., zeros after) -> dq (B*H, N, D), dk, dv (B*H, M, D).
    """
    bh, n, d = q.shape
    nk = -(-m // block)
    width = band_width(window, is_causal, block)
    lead = (0 if is_causal else window) + m - n  # query rows before the first key band's first query
    mask = _key_band_mask(n, m, window, is_causal, block, q.dtype, str(q.device))
    kb, vb = (t[:, window : window + nk * block].view(bh, nk, block, d) for t in (kp, vp))
    gb, qb, ob = (_query_bands(t, nk, block, width, lead) for t in (grad_out, q, out))
    lb = _query_bands(lse, nk, block, width, lead)
    dqb, dk, dv = flash_cpu.flash_backward(gb, qb, kb, vb, ob, lb, mask, scale)
    dq = _fold(dqb, n, block, -lead)
    return dq, dk.reshape(bh, nk * block, d)[:, :m], dv.reshape(bh, nk * block, d)[:, :m]


class _BandedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, window: int, is_causal: bool, scale: float, block: int, block_bwd: int,  # type: ignore[override]
                bwd_by_keys: bool = False):
        b, h, n, d = q.shape
        m = k.shape[2]
        nb = -(-n // block)
        width = band_width(window, is_causal, block)
        offset = m - n
        if bwd_by_keys:  # the forward's bands, and whole key blocks of the backward's
            length = max(offset + nb * block + width - block, window + -(-m // block_bwd) * block_bwd)
        else:  # padded rows the last band of either blocking reaches
            rows = max(nb * block, -(-n // block_bwd) * block_bwd)
            length = offset + rows + width - block
        kp, vp = _padded(k, h, length, window), _padded(v, h, length, window)
        qb = _rows_padded(q, nb * block).reshape(b * h, nb, block, d)
        mask = _band_mask(n, m, window, is_causal, block, q.dtype, str(q.device))
        kb, vb = _bands(kp, nb, block, width, offset), _bands(vp, nb, block, width, offset)
        out, lse = flash_cpu.flash_forward(qb, kb, vb, mask, scale)
        ctx.save_for_backward(q, kp, vp, out, lse)
        ctx.args = (m, k.shape[1], window, is_causal, scale, block, block_bwd, bwd_by_keys)
        return out.reshape(b, h, nb * block, d)[:, :, :n]

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        q, kp, vp, out, lse = ctx.saved_tensors
        m, g, window, is_causal, scale, block_fwd, block, by_keys = ctx.args
        b, h, n, d = q.shape
        if by_keys:
            dq, dk, dv = _backward_by_keys(
                grad_out.reshape(b * h, n, d), q.reshape(b * h, n, d), kp, vp,
                out.reshape(b * h, -1, d)[:, :n], lse.reshape(b * h, -1)[:, :n], m, window, is_causal, scale, block)
            return (dq.view(b, h, n, d), reduce_groups(dk.view(b, h, m, d), h // g),
                    reduce_groups(dv.view(b, h, m, d), h // g), None, None, None, None, None, None)
        nb = -(-n // block)
        width = band_width(window, is_causal, block)
        offset = m - n
        if block != block_fwd:  # re-cut the forward's per-row results into this pass's bands
            out = _reblocked(out, n, nb * block).reshape(b * h, nb, block, d)
            lse = _reblocked(lse, n, nb * block).reshape(b * h, nb, block)
        mask = _band_mask(n, m, window, is_causal, block, q.dtype, str(q.device))
        qb = _rows_padded(q, nb * block).reshape(b * h, nb, block, d)
        gb = _rows_padded(grad_out.contiguous(), nb * block).reshape(b * h, nb, block, d)
        kb, vb = _bands(kp, nb, block, width, offset), _bands(vp, nb, block, width, offset)
        dq, dkb, dvb = flash_cpu.flash_backward(gb, qb, kb, vb, out, lse, mask, scale)
        dq = dq.reshape(b, h, nb * block, d)[:, :, :n]

        def unband(grad: Tensor) -> Tensor:
            full = _fold(grad, m, block, offset - window).view(b, h, m, d)  # (B, H, M, D)
            return reduce_groups(full, h // g)

        return dq, unband(dkb), unband(dvb), None, None, None, None, None, None


_TUNE_ROWS = 2048  # query rows the block-size candidates are timed on (32 bands of 64)


def _block_candidates(default: int, window: int, sizes: tuple[int, ...]) -> dict[str, int]:
    """The default block and the listed sizes that stay within the kernel's useful range for this window."""
    top = max(default, 2 * band_block_size(window), 64)
    return {str(b): b for b in sorted({default, *(s for s in sizes if 32 <= s <= top)})}


def _backward_candidates(default: int, window: int) -> dict[str, tuple[int, bool]]:
    """Backward cuts: query bands of 64-256 rows (names "64", ...), key bands of 128-512 keys ("k256", ...)."""
    cands = {name: (b, False) for name, b in _block_candidates(default, window, (64, 128, 192, 256)).items()}
    top = max(128, 2 * band_block_size(window))
    cands.update({f"k{b}": (b, True) for b in (128, 256, 512) if b <= top})
    return cands


def _tuned_blocks(q: Tensor, k: Tensor, v: Tensor, window: int, is_causal: bool, scale: float,
                  needs_grad: bool) -> tuple[int, int, bool]:
    """(forward rows, backward rows or keys, backward by keys) per band: measured here per shape
    class, else ``band_block_sizes`` with query bands.

    Candidates run on a detached slice of the inputs: one key/value group's heads of the first
    batch row and at most ``_TUNE_ROWS`` queries (with the keys they see). The kernel's cost is
    linear in heads and rows, each band alike, so the slice ranks the blockings as the whole
    call would, at a fraction of the cost (N=8192, B*H=8, window 256 on a loaded 2-core Zen 4:
    the first call took ~30 s with candidates timed on the full inputs, ~4.5 s on the slice,
    of which ~1.3 s is the call itself). The caller's graph never sees the candidates.
    """
    fwd0, bwd0 = band_block_sizes(window, q.dtype)
    b, h, n, d = q.shape
    m, g = k.shape[2], k.shape[1]
    cls = (f"{autotune.shape_class(b * h, n, m, d, window, dtype=q.dtype)}"
           f"|{'causal' if is_causal else 'both'}|g{g}")
    fwd_cands = _block_candidates(fwd0, window, (32, 64, 128))
    rows = min(n, _TUNE_ROWS)  # the first queries and, bottom-right aligned, the keys up to theirs
    qd = q.detach()[:1, : h // g, :rows]
    kd, vd = k.detach()[:1, :1, : rows + m - n], v.detach()[:1, :1, : rows + m - n]

    def forward_only(block: int):
        def run():
            with torch.no_grad():
                _BandedAttention.apply(qd, kd, vd, window, is_causal, scale, block, block)
        return run

    fwd = fwd_cands[autotune.lookup(f"banded.fwd_block|{cls}", fwd_cands, default=str(fwd0))
                    or autotune.choose(f"banded.fwd_block|{cls}", {name: forward_only(bl) for name, bl in fwd_cands.items()},
                                       default=str(fwd0))]
    if not needs_grad:
        return fwd, fwd, False  # no backward: pad K/V for the forward's bands only
    bwd_cands = _backward_candidates(bwd0, window)
    key = f"banded.bwd_block|{cls}|f{fwd}"
    name = autotune.lookup(key, bwd_cands, default=str(bwd0))
    if name is None:
        grad = torch.randn_like(qd)
        leaves = [t.clone().requires_grad_() for t in (qd, kd, vd)]

        def forward_backward(block: int, by_keys: bool):
            def run():
                with torch.enable_grad():
                    out = _BandedAttention.apply(*leaves, window, is_causal, scale, fwd, block, by_keys)
                    torch.autograd.grad(out, leaves, grad)
            return run

        name = autotune.choose(key, {nm: forward_backward(*c) for nm, c in bwd_cands.items()}, default=str(bwd0))
    return (fwd, *bwd_cands[name])


def banded_attention(q: Tensor, k: Tensor, v: Tensor, *, window: int, is_causal: bool, scale: float,
                     block: int | None = None, backward_block: int | None = None,
                     backward_by_keys: bool = False) -> Tensor:
    """Exact sliding-window attention on CPU; arguments already validated by ``attention``.

    ``block`` / ``backward_block``: query rows per band in the forward / backward (default:
    measured here, ``_tuned_blocks``; ``block`` alone sets both); with ``backward_by_keys``
    the backward cuts ``backward_block`` keys per band instead (``_backward_by_keys``).
    Needs M >= N (queries bottom-right aligned, as everywhere in attnlab) and Dv == D.
    Shape: q (B, H, N, D), k/v (B, G, M, D) -> (B, H, N, D).
    """
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    by_keys = backward_by_keys
    if block is None:
        block_fwd, tuned_bwd, tuned_keys = _tuned_blocks(q, k, v, window, is_causal, scale,
                                                         needs_grad and backward_block is None)
        block_bwd = backward_block or tuned_bwd
        by_keys = by_keys if backward_block else tuned_keys
    else:
        block_fwd, block_bwd = block, backward_block or block
    if not needs_grad:
        block_bwd, by_keys = block_fwd, False  # no backward: pad K/V for the forward's bands only
    return _BandedAttention.apply(q, k, v, window, is_causal, scale, block_fwd, block_bwd, by_keys)


def banded_applicable(q: Tensor, k: Tensor, v: Tensor, window: int | None) -> bool:
    """Whether ``banded_attention`` can run this call and skips enough to pay."""
    if window is None or q.is_cuda or q.device.type != "cpu" or not flash_cpu.available():
        return False
    n, m = q.shape[2], k.shape[2]
    if m < n or v.shape[-1] != q.shape[-1] or q.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        return False
    width = band_width(window, False, band_block_size(window))
    return 2 * width <= m
