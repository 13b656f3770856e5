"""Mask helpers: causal / sliding-window structure, padding masks, and the safe softmax.

Positions follow the KV-cache convention (bottom-right alignment, x-transformers #187):
when M > N, query i sits at key position ``i + (M - N)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "query_positions",
    "structure_mask",
    "padding_mask",
    "block_is_empty",
    "safe_softmax",
]


def query_positions(n: int, m: int, device: torch.device | None = None) -> Tensor:
    """Absolute key-axis position of each query, bottom-right aligned. Shape: (N,)."""
    return torch.arange(n, device=device) + (m - n)


def structure_mask(
    n: int,
    m: int,
    *,
    is_causal: bool = False,
    window: int | None = None,
    device: torch.device | None = None,
    key_start: int = 0,
    key_end: int | None = None,
    query_start: int = 0,
    query_end: int | None = None,
) -> Tensor | None:
    """Boolean (N, M) mask (True = attend) for causal and/or window structure, or None.

    ``key_start:key_end`` and ``query_start:query_end`` select a tile, so block-wise
    kernels build only the tile they need (Shape: (query_end - query_start, key_end - key_start)).
    """
    if not is_causal and window is None:
        return None
    key_end = m if key_end is None else key_end
    query_end = n if query_end is None else query_end
    i = query_positions(n, m, device)[query_start:query_end, None]  # (n_tile, 1)
    j = torch.arange(key_start, key_end, device=device)[None, :]  # (1, m_tile)
    keep = torch.ones(i.shape[0], j.shape[1], dtype=torch.bool, device=device)
    if is_causal:
        keep &= j <= i
    if window is not None:
        keep &= (i - j) <= window
        if not is_causal:
            keep &= (j - i) <= window
    return keep


def block_is_empty(
    n: int,
    m: int,
    *,
    is_causal: bool,
    window: int | None,
    query_start: int,
    query_end: int,
    key_start: int,
    key_end: int,
) -> bool:
    """True when the causal/window structure excludes every pair in a (query, key) tile.

    Lets block-wise kernels skip tiles without building them: this is what makes a
    sliding window cost O(N * W) instead of O(N * M).
    """
    offset = m - n
    q_lo, q_hi = query_start + offset, query_end - 1 + offset  # first/last query position
    k_lo, k_hi = key_start, key_end - 1
    if is_causal and k_lo > q_hi:
        return True
    if window is not None:
        if q_lo - k_hi > window:  # every key is too far behind every query
            return True
        if not is_causal and k_lo - q_hi > window:  # every key too far ahead
            return True
    return False


def padding_mask(lengths: Tensor, max_length: int | None = None) -> Tensor:
    """Key-padding mask from sequence lengths. Shape: lengths (B,) -> (B, M), True = real token."""
    max_length = int(lengths.max()) if max_length is None else max_length
    return torch.arange(max_length, device=lengths.device)[None, :] < lengths[:, None]


def safe_softmax(scores: Tensor, dim: int = -1) -> Tensor:
    """Softmax where a row of all ``-inf`` gives zeros instead of NaN (PyTorch #103749)."""
    row_max = scores.amax(dim=dim, keepdim=True)
    # A fully masked row has max -inf; shifting by 0 instead keeps exp() at exactly 0.
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    e = torch.exp(scores - row_max.detach())
    denom = e.sum(dim=dim, keepdim=True)
    return e / torch.where(denom > 0, denom, torch.ones_like(denom))
