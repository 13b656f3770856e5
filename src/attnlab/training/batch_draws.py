"""Batch augmentation draws as a pure function of (seed, epoch, batch, rank).

The trainer augments each training batch on the device (`attnlab.data.vision.RandomShift`,
`attnlab.data.audio.SpecAugment`, `attnlab.data.timeseries.SeriesAugment`, or a user's
callable). Drawn from torch's global RNG, which torchrun seeds alike on every rank, every rank
shifted or masked its own (different) batch with the same pattern at each step: the global batch
held ``world_size`` copies of one pattern, not independent draws. Drawn instead from a generator
seeded by (seed, epoch, batch index in the epoch, rank) — mixed as item draws are
(`attnlab.data.item_random.mix_seed`) — each rank draws its own pattern, the same one whether
the run was resumed (mid-epoch or not) or not, with any number of DataLoader workers, and the
global RNG (dropout) is left alone. timm seeds each rank apart for the same reason.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import torch

from attnlab.data.item_random import mix_seed

__all__ = ["augment_batch", "batch_seed", "takes_generator"]


def batch_seed(seed: int, epoch: int, index: int, rank: int) -> int:
    """The seed of batch ``index`` (counted from 0 in ``epoch``) on ``rank``."""
    return mix_seed(seed, epoch, index, rank)


def takes_generator(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` accepts a ``generator=`` keyword (the built-in augmenters do)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature
        return False
    return any(p.name == "generator" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def augment_batch(augment: Callable[..., Any], batch: Any, *, seed: int, epoch: int, index: int, rank: int,
                  device: torch.device) -> Any:
    """``augment(batch, generator=g)``, g on ``device`` seeded by `batch_seed`. A callable without
    a ``generator`` parameter runs with torch's global RNG (CPU, and ``device``'s on a GPU) seeded
    the same way, and put back afterwards, as `attnlab.data.item_random.ItemDraws.global_rng` does."""
    value = batch_seed(seed, epoch, index, rank)
    if takes_generator(augment):
        return augment(batch, generator=torch.Generator(device=device).manual_seed(value))
    gpu = device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if gpu else []):
        torch.default_generator.manual_seed(value)
        if gpu:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(value)
        return augment(batch)
