"""Key/value cache for incremental decoding.

One ``KVCache`` serves one attention layer; a model keeps a list (``KVCache.for_layers``).
Keys are stored after RoPE, so cached entries never need re-rotation. Causal masks with a
cache are aligned bottom-right by ``attention`` (x-transformers #187).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["KVCache"]


class KVCache:
    """Grows by ``update``; with ``max_length`` set, writes into preallocated buffers.

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
        if self._k is None:
            if self.max_length is None:
                self._k, self._v = k, v
            else:
                if n_new > self.max_length:
                    raise ValueError(f"KVCache: {n_new} new positions exceed max_length={self.max_length}")
                shape_k = (*k.shape[:2], self.max_length, k.shape[3])
                shape_v = (*v.shape[:2], self.max_length, v.shape[3])
                self._k = k.new_zeros(shape_k)
                self._v = v.new_zeros(shape_v)
                self._k[:, :, :n_new] = k
                self._v[:, :, :n_new] = v
        elif self.max_length is None:
            self._k = torch.cat([self._k, k], dim=2)
            self._v = torch.cat([self._v, v], dim=2)
        else:
            if self.length + n_new > self.max_length:
                raise ValueError(f"KVCache: {self.length + n_new} positions exceed max_length={self.max_length}")
            self._k[:, :, self.length : self.length + n_new] = k
            self._v[:, :, self.length : self.length + n_new] = v
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
