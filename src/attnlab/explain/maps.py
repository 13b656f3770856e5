"""``AttentionMaps``: the attention weights ``capture`` / ``recording`` return, by layer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor

__all__ = ["AttentionMaps"]


@dataclass
class AttentionMaps:
    """Attention weights of the chosen layers, in forward-call order.

    ``maps[i]`` has shape (B, H', N', M): H' chosen heads, N' chosen query rows, all M keys.
    A module called several times in one forward (weight sharing) appears once per call,
    named ``"path#k"`` for calls after the first.
    """

    names: list[str] = field(default_factory=list)
    maps: list[Tensor] = field(default_factory=list)
    output: Any = None
    _grad_sources: list[Any] = field(default_factory=list, repr=False)

    def __len__(self) -> int:
        return len(self.maps)

    def __iter__(self) -> Iterator[tuple[str, Tensor]]:
        return iter(zip(self.names, self.maps))

    def index(self, key: int | str) -> int:
        if isinstance(key, str):
            if key not in self.names:
                raise KeyError(f"AttentionMaps: no layer named {key!r}; have {self.names}")
            return self.names.index(key)
        if not -len(self.maps) <= key < len(self.maps):
            raise IndexError(f"AttentionMaps: layer index {key} out of range for {len(self.maps)} layers")
        return key % len(self.maps)

    def layer(self, key: int | str) -> Tensor:
        """One layer's weights by position or name. Shape: (B, H', N', M)."""
        return self.maps[self.index(key)]

    def stack(self) -> Tensor:
        """All layers as one tensor. Shape: (L, B, H', N', M); the shapes must agree."""
        if not self.maps:
            raise ValueError("AttentionMaps.stack: no maps were captured")
        shapes = {tuple(m.shape) for m in self.maps}
        if len(shapes) > 1:
            detail = ", ".join(f"{n}: {tuple(m.shape)}" for n, m in self)
            raise ValueError(f"AttentionMaps.stack: layer shapes differ ({detail}); select layers of one shape")
        return torch.stack(self.maps)

    def to_numpy(self) -> list[np.ndarray]:
        """The maps as float numpy arrays (detached, on the CPU)."""
        out = []
        for m in self.maps:
            m = m.detach().cpu()
            out.append((m.float() if m.dtype in (torch.float16, torch.bfloat16) else m).numpy())
        return out

    def grads(self) -> list[Tensor]:
        """d(target)/d(weights) for each map, after ``backward()`` on a ``capture(..., grad=True)``
        output. Shape: like the maps, (B, H', N', M)."""
        sources = self._grad_sources or [None] * len(self.maps)
        grads = [src.grad() if src is not None else None for src in sources]
        if any(g is None for g in grads):
            raise RuntimeError(
                "AttentionMaps.grads: no gradient on the maps; capture with grad=True and call backward() "
                "on (a function of) the output first"
            )
        return grads
