"""Key/value cache for incremental decoding.

One ``KVCache`` serves one attention layer; a model keeps a list (``KVCache.for_layers``).
Keys are stored after RoPE, so cached entries never need re-rotation. Causal masks with a
cache are aligned bottom-right by ``attention`` (x-transformers #187).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["KVCache", "reserve"]

FIRST_CAPACITY = 1024  # positions a preallocated cache starts with; it doubles (up to its limit) when full


def reserve(buffer: Tensor | None, like: Tensor, used: int, needed: int, limit: int) -> Tensor:
    """A (B, G, T, D) buffer shaped as ``like`` on every other dimension, holding at least
    ``needed`` positions: ``buffer`` itself when it does, else a new one of ``max(needed,
    FIRST_CAPACITY, twice the old)`` positions (at most ``limit``) with the first ``used`` copied.

    Growing by doubling keeps the copies amortised O(1) a token, and a huge ``limit`` (a
    ``--max-new-tokens`` of millions) no longer allocates its whole cache before the first step.
    """
    if needed > limit:
        raise ValueError(f"KVCache: {needed} positions exceed max_length={limit}")
    if buffer is not None and buffer.shape[2] >= needed:
        return buffer
    old = 0 if buffer is None else buffer.shape[2]
    grown = like.new_zeros((*like.shape[:2], min(limit, max(needed, FIRST_CAPACITY, 2 * old)), like.shape[3]))
    if buffer is not None and used:
        grown[:, :, :used] = buffer[:, :, :used]
    return grown


class KVCache:
    """Grows by ``update``; with ``max_length`` set, writes into preallocated buffers (`reserve`:
    they double as they fill, up to ``max_length``).

    Shape: keys/values (B, G, M, D).
    """

    def __init__(self, max_length: int | None = None):
        self.max_length = max_length
        self._k: Tensor | None = None
        self._v: Tensor | None = None
        self.length = 0

    @classmethod
    def for_layers(cls, num_layers: int, max_length: int | None = None) -> list["KVCache"]:
        return [cls(max_length) for _ in range(num_layers)]

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append new keys/values (B, G, n_new, D); return all cached (B, G, M, D)."""
        n_new = k.shape[2]
        if self.max_length is None:
            self._k = k if self._k is None else torch.cat([self._k, k], dim=2)
            self._v = v if self._v is None else torch.cat([self._v, v], dim=2)
        else:
            end = self.length + n_new
            self._k = reserve(self._k, k, self.length, end, self.max_length)
            self._v = reserve(self._v, v, self.length, end, self.max_length)
            self._k[:, :, self.length : end] = k
            self._v[:, :, self.length : end] = v
        self.length += n_new
        return self.keys, self.values

    @property
    def keys(self) -> Tensor:
        assert self._k is not None, "empty KVCache"
        return self._k[:, :, : self.length]

    @property
    def values(self) -> Tensor:
        assert self._v is not None, "empty KVCache"
        return self._v[:, :, : self.length]

    def reorder(self, index: Tensor) -> None:
        """Select batch rows (beam search): keys/values[index]."""
        if self._k is not None:
            self._k = self._k.index_select(0, index)
            self._v = self._v.index_select(0, index)

    def __len__(self) -> int:
        return self.length
