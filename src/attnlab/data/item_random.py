"""Random draws inside a dataset's ``__getitem__`` as a pure function of (seed, epoch, index).

An item that draws from torch's global RNG (SASRec's negatives, detection's flips, random
language-model windows) gets other numbers in a DataLoader worker than in the main process
(each worker seeds its own RNG), others with 2 workers than with 4, and others after a resume:
the workers' RNG states are in no checkpoint, and a mid-epoch resume starts fresh workers at a
different place in the stream of draws. Drawn from a generator seeded by (seed, epoch, index),
an item is the same whoever fetches it and whenever: with any number of workers, at any world
size (the index is the dataset's, not the rank's), uninterrupted or resumed mid-epoch; and the
training process's RNG (dropout) is left alone.

The trainer tells such a dataset the epoch through ``set_epoch`` before each epoch, as Hugging
Face's Trainer does. The epoch sits in shared memory (as `attnlab.data.shards.ShardStream`'s
does) so that persistent workers, each holding its own copy of the dataset, read the new one;
they fetch an epoch's items only after the DataLoader's iterator for it has started.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import operator
from collections.abc import Iterator

import torch

__all__ = ["ItemDraws", "item_seed", "mix_seed"]

_MASK = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    """SplitMix64's finaliser (Steele et al. 2014): every output bit depends on every input bit."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def mix_seed(*words: int) -> int:
    """A 64-bit seed mixed from ``words``: neighbouring tuples give unrelated seeds, and the order
    matters ((1, 2, 3) and (1, 3, 2) differ). A few microseconds in pure Python. torch's CPU
    generator keeps its low 32 bits, as it does for DataLoader workers' seeds: over millions of
    items a few share a stream of draws, which biases nothing."""
    h = 0
    for word in words:
        h = _splitmix64(h ^ (int(word) & _MASK))
    return h


def item_seed(seed: int, epoch: int, index: int) -> int:
    """Item ``index``'s seed in ``epoch`` of a run seeded ``seed`` (`mix_seed` of the three)."""
    return mix_seed(seed, epoch, index)


class ItemDraws:
    """The per-item generators of one dataset: ``generator(index)`` for the current epoch.

    ``seed``: the run's seed (the task loaders pass ``--seed``). ``size``: the dataset's length,
    so that a negative index names the same item as its positive twin.
    """

    def __init__(self, seed: int = 0, size: int | None = None):
        self.seed, self.size = int(seed), size
        # Shared with forked or spawned workers; no lock (nor its semaphore): only the training
        # process writes it, between epochs, when no worker is fetching.
        self._epoch = multiprocessing.get_context().RawValue("q", 0)

    @property
    def epoch(self) -> int:
        return int(self._epoch.value)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.value = int(epoch)

    def seed_of(self, index: int) -> int:
        """Item ``index``'s seed in this epoch."""
        index = operator.index(index)
        if index < 0 and self.size is not None:
            index += self.size
        return item_seed(self.seed, self.epoch, index)

    def generator(self, index: int) -> torch.Generator:
        """A CPU generator for item ``index`` of this epoch; pass it to ``torch.rand*`` (``generator=``)."""
        return torch.Generator().manual_seed(self.seed_of(index))

    @contextlib.contextmanager
    def global_rng(self, index: int) -> Iterator[None]:
        """Inside, torch's global CPU RNG is seeded for item ``index``; outside it is as it was.
        For item code that can only draw from the global RNG (a user's augmentation callable)."""
        state = torch.get_rng_state()
        torch.default_generator.manual_seed(self.seed_of(index))  # CPU only: CUDA's RNG is the training's
        try:
            yield
        finally:
            torch.set_rng_state(state)
