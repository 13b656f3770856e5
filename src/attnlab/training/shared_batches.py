"""Training batches from DataLoader workers through shared memory allocated once, not per batch.

PyTorch's DataLoader collates each batch in a worker into a freshly created shared-memory
block, which the worker faults in page by page while writing and the training process faults
in again while reading, then both unmap: for small images that costs more than decoding them
(``benchmarks/data_scale.py``, benchmarks/README.md: one worker took 1.69 s for an epoch that
one process decodes in 0.72 s). `SharedBatches` allocates, before the workers start, a ring of
``prefetch_factor x num_workers + 2`` batch slots per worker; a worker stacks its k-th batch into slot
``k mod ring`` and sends only (worker, slot, count, labels), and the training process copies
the slot out (into memory its allocator reuses) as soon as the batch arrives, or, for the
trainer, borrows it in place (`SharedBatchLoader`'s ``borrow``: until the batch after the next
arrives, which the ring's spare slot allows).

Why a slot is never overwritten before it is copied: the DataLoader dispatches
``prefetch_factor x num_workers`` tasks up front and one more each time it returns a batch, so
at most ``prefetch_factor x num_workers + 1`` batches are written but not yet copied (the copy
happens before the training process asks for the next batch), even if they all fall to one
worker (the others' part of a stream finished); the ring has one slot more. A persistent
worker's abandoned tasks (an iterator dropped mid-epoch) are drained by the DataLoader before
the next epoch starts. Items whose shape or dtype differ from the slots', or a collate outside a
worker, fall back to PyTorch's `default_collate`; ``ATTNLAB_SHARED_BATCHES=0`` switches the
whole path off.

Used for training sets whose items are ``(x, y)`` with x of one fixed shape (image and audio
folders and shards: their ``item_shape``) when ``num_workers`` > 0, the task has no collate
function of its own, and the device is not CUDA (there the DataLoader pins batches instead).
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import get_worker_info
from torch.utils.data._utils.collate import default_collate

__all__ = ["SharedBatches", "SharedBatchLoader", "ENV_VAR", "shared_batches_for"]

ENV_VAR = "ATTNLAB_SHARED_BATCHES"


class _Slot(NamedTuple):
    """What a worker sends instead of the batch: where it wrote x, how many rows, and y by value."""

    worker: int
    slot: int
    count: int
    y: np.ndarray


class SharedBatches:
    """The slots (workers, ring, batch, *item_shape) and the collate function that fills them.

    Shape: slots (W, R, B, *item_shape); a batch comes back as x (n, *item_shape), y (n,) (class
    indices) or (n, K) (multi-hot rows).
    """

    def __init__(self, item_shape: tuple[int, ...], batch_size: int, num_workers: int, *, prefetch_factor: int = 2,
                 dtype: torch.dtype = torch.float32):
        self.item_shape, self.dtype = tuple(item_shape), dtype
        self.ring = prefetch_factor * num_workers + 2
        self.slots = torch.empty((num_workers, self.ring, batch_size, *self.item_shape), dtype=dtype).share_memory_()
        self._written = 0  # batches this process (one worker) has written: its next slot

    def collate(self, items: list[Any]) -> Any:
        """In a worker: stack ``[(x, y), ...]`` into this worker's next slot (a `_Slot` comes back)."""
        info = get_worker_info()
        fits = info is not None and all(
            isinstance(it, (tuple, list)) and len(it) == 2 and isinstance(it[0], Tensor)
            and tuple(it[0].shape) == self.item_shape and it[0].dtype == self.dtype for it in items)
        if not fits or len(items) > self.slots.shape[2]:
            return default_collate(items)
        slot = self._written % self.ring
        self._written += 1
        torch.stack([x for x, _ in items], out=self.slots[info.id, slot, :len(items)])
        if all(isinstance(label, Tensor) and label.dim() > 0 for _, label in items):  # multi-hot rows (K,) float32
            y = torch.stack([label for _, label in items]).numpy()
        else:  # class indices, which int() of a multi-hot row would refuse (or, for one label, silently cast)
            y = np.asarray([int(label) for _, label in items], dtype=np.int64)
        return _Slot(info.id, slot, len(items), y)

    def unwrap(self, batch: Any, borrow: bool = False) -> Any:
        """In the training process: a `_Slot` -> (x, y) copied out of shared memory (``borrow``:
        x is the slot itself, no copy); anything else as it is."""
        if isinstance(batch, _Slot):
            x = self.slots[batch.worker, batch.slot, :batch.count]
            return (x if borrow else x.clone()), torch.from_numpy(batch.y)
        return batch


class SharedBatchLoader:
    """A DataLoader whose collate is `SharedBatches.collate`, yielding ordinary (x, y) batches.

    ``borrow``: x is the shared slot itself, not a copy (3 MB a batch of 64 RGB 64x64 images,
    0.25 ms of an 8 ms step in ``benchmarks/data_scale.py``). A borrowed batch stays intact until
    the batch after the next one arrives (the ring's spare slot: a worker can get one task
    ahead of the copy-on-arrival bound), so it suits a loop that is done with a batch when it
    asks for the next, as the trainer's is; not one that keeps batches.
    """

    def __init__(self, loader: Any, shared: SharedBatches, *, borrow: bool = False):
        self.loader, self.shared, self.borrow = loader, shared, borrow

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            yield self.shared.unwrap(batch, self.borrow)


def shared_batches_for(dataset: Any, batch_size: int, num_workers: int, collate_fn: Any) -> SharedBatches | None:
    """The slots for ``dataset`` when it qualifies (workers, no task collate, a fixed
    ``item_shape``, not switched off), else None."""
    shape = getattr(dataset, "item_shape", None)
    if num_workers <= 0 or collate_fn is not None or shape is None or os.environ.get(ENV_VAR, "1") == "0":
        return None
    return SharedBatches(tuple(shape), batch_size, num_workers)
