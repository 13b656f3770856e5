"""Padding-free encoder layers: a Transformer block's row-wise work runs on the real tokens only.

A padded text batch is often half padding (batches of 32 SST-2 or TREC sentences padded to their
longest: 47-52% of the (B, N) positions). Every product, norm, dropout and residual of a block
works row by row; only the attention kernel mixes positions. So an encoder gathers its real
tokens into (T, C) once, runs the blocks on them, and scatters q, k and v back to (B, N, .) just
for the attention kernel, whose key-padding mask is unchanged: the unpadded BERT of Zeng et al.
2022 ("Boosting Distributed Training Performance of the Unpadded BERT Model"), as in MosaicBERT
(Portes et al. 2023) and ModernBERT (Warner et al. 2024). The real tokens' outputs are the
padded computation's (the same sums, up to the products' blocking); padding positions come
back as zeros instead of values no one reads.

``ATTNLAB_UNPAD=0`` keeps every batch padded. Batches with less padding than ``MIN_PADDING`` stay
padded too: the gathers and scatters cost about what the saved rows do up to ~10% padding
(benchmarks/packing.py), and 20% leaves a margin for small models, whose fixed costs weigh more.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Iterable

from torch import Tensor, nn

from attnlab.attention.routing import tracing

__all__ = ["Packing", "packing_for", "run_blocks", "UNPAD_ENV", "MIN_PADDING"]

UNPAD_ENV = "ATTNLAB_UNPAD"  # "0": never unpad
MIN_PADDING = 0.2  # unpad when at least this fraction of the (B, N) positions is padding


@dataclass(frozen=True)
class Packing:
    """Where the real tokens of a (B, N) batch sit: ``index`` (T,) into the flattened B * N."""

    index: Tensor
    batch: int
    length: int

    @classmethod
    def of(cls, mask: Tensor) -> "Packing":
        """From a key-padding mask (B, N), True = real token."""
        return cls(mask.reshape(-1).nonzero().squeeze(1), mask.shape[0], mask.shape[1])

    def pack(self, x: Tensor) -> Tensor:
        """(B, N, ...) -> (T, ...): the real tokens' rows, in batch-major order."""
        return x.reshape(self.batch * self.length, *x.shape[2:]).index_select(0, self.index)

    def unpack(self, x: Tensor) -> Tensor:
        """(T, ...) -> (B, N, ...), zeros at padding."""
        rows = x.new_zeros(self.batch * self.length, *x.shape[1:]).index_copy(0, self.index, x)
        return rows.view(self.batch, self.length, *x.shape[1:])


def _watched(modules: Iterable[nn.Module]) -> bool:
    """Whether a hook or explain/'s weight hook watches a layer: those read (B, N, C) shapes."""
    for module in modules:
        for m in module.modules():
            if m._forward_hooks or m._forward_pre_hooks or getattr(m, "weight_hook", None) is not None:
                return True
    return False


def packing_for(mask: Tensor | None, x: Tensor, modules: Iterable[nn.Module]) -> Packing | None:
    """The packing for this batch, or None where it cannot be used or would not pay: switched off
    (``ATTNLAB_UNPAD=0``), traced (export and compile need static shapes), less than
    ``MIN_PADDING`` padding, or hooks on the layers ``modules`` (explain/ captures keep the padded
    shapes they read). mask (B, N) True = real token; x (B, N, C) the blocks' input."""
    if mask is None or mask.dim() != 2 or os.environ.get(UNPAD_ENV, "1") == "0" or tracing(x):
        return None
    real = int(mask.sum())
    if real > (1.0 - MIN_PADDING) * mask.numel() or real == 0 or _watched(modules):
        return None
    return Packing.of(mask)


def run_blocks(blocks: nn.ModuleList, x: Tensor, mask: Tensor, norm: Callable[[Tensor], Tensor]) -> Tensor:
    """An encoder's self-attention ``blocks`` then its final ``norm``, unpadded where it pays.

    Shape: x (B, N, C), mask (B, N) True = real token -> (B, N, C), zeros at padding when unpadded."""
    packing = packing_for(mask, x, blocks)
    if packing is not None:
        x = packing.pack(x)  # (T, C)
    for block in blocks:
        x = block(x, mask=mask, packing=packing)
    x = norm(x)
    return x if packing is None else packing.unpack(x)
