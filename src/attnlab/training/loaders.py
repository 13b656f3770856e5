"""DataLoaders for the trainer: map-style data sets (a length, a sampler) and streams.

A map-style training set goes through a `DistributedSampler` (or `LengthGroupedSampler`),
whose order is a function of (seed, epoch). A stream (an ``IterableDataset`` such as
`attnlab.data.shards.ShardStream`) has no sampler: it is told its rank and world size and
each epoch's number, splits itself by rank and by DataLoader worker, and says how many full
batches it will yield (``num_batches``), which every rank must agree on under DDP.

``num_workers`` > 0 decodes in that many worker processes, kept alive across epochs
(``persistent_workers``); on CUDA batches are pinned so the copy to the GPU can overlap.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset

from attnlab.errors import AttnlabError, ConfigError
from attnlab.training.distributed import DistInfo
from attnlab.training.shared_batches import SharedBatchLoader, shared_batches_for
from attnlab.training.sampler import LengthGroupedSampler, dataset_lengths

__all__ = ["train_loader", "eval_loader", "is_stream", "reraise_worker_error"]

log = logging.getLogger(__name__)


def is_stream(dataset: Any) -> bool:
    return isinstance(dataset, IterableDataset)


def _worker_options(num_workers: int, device: torch.device) -> dict[str, Any]:
    return {"num_workers": num_workers, "persistent_workers": num_workers > 0, "pin_memory": device.type == "cuda"}


class _StreamLoader:
    """A DataLoader over a stream with the length the stream promises (DataLoader's own
    ``len`` divides the total by the batch size, ignoring each worker's dropped tail)."""

    def __init__(self, loader: DataLoader, num_batches: int):
        self.loader, self.num_batches = loader, num_batches

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self):
        return iter(self.loader)


class _NoSampler:
    """The stream itself takes the epoch (its shuffle seed) where a sampler would."""

    def __init__(self, stream: Any):
        self.stream = stream

    def set_epoch(self, epoch: int) -> None:
        self.stream.set_epoch(epoch)


def train_loader(dataset: Dataset, config: Any, dist: DistInfo, collate_fn: Callable | None, device: torch.device):
    """(loader, sampler) for training: full batches only; ``sampler.set_epoch`` before each epoch.
    Fixed-shape items from workers travel through reused shared memory (`shared_batches`),
    borrowed: a batch is the trainer's until it asks for the one after the next."""
    options = _worker_options(config.num_workers, device)
    # On CUDA batches are pinned by the DataLoader instead (a copied-out slot would not be).
    shared = None if device.type == "cuda" else shared_batches_for(dataset, config.batch_size, config.num_workers, collate_fn)
    if shared is not None:
        collate_fn = shared.collate
    if is_stream(dataset):
        if config.group_by_length:  # a task default (text): a stream cannot sort what it has not read yet
            log.info("group_by_length does not apply to a sharded stream: batches follow the shuffled stream")
        if config.checkpoint_every:
            raise ConfigError("a sharded stream resumes at epoch boundaries only; set --train.checkpoint_every 0")
        dataset.set_distributed(dist.rank, dist.world_size, config.batch_size)
        # Its own generator: the workers' base seed is drawn when an iterator starts (once a run with persistent
        # workers, again after a resume), and drawn from the global RNG it would shift the dropout masks after it.
        loader = DataLoader(dataset, batch_size=config.batch_size, drop_last=True, collate_fn=collate_fn,
                            generator=torch.Generator().manual_seed(config.seed), **options)
        batches = SharedBatchLoader(loader, shared, borrow=True) if shared is not None else loader
        return _StreamLoader(batches, dataset.num_batches(config.batch_size)), _NoSampler(dataset)
    if config.group_by_length:
        sampler = LengthGroupedSampler(dataset_lengths(dataset), config.batch_size, num_replicas=dist.world_size,
                                       rank=dist.rank, seed=config.seed)
    else:
        sampler = DistributedSampler(dataset, num_replicas=dist.world_size, rank=dist.rank, shuffle=True,
                                     seed=config.seed, drop_last=True)
    generator = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(dataset, batch_size=config.batch_size, sampler=sampler, drop_last=True, collate_fn=collate_fn,
                        generator=generator, **options)
    return (SharedBatchLoader(loader, shared, borrow=True) if shared is not None else loader), sampler


def eval_loader(dataset: Dataset, batch_size: int, num_workers: int, collate_fn: Callable | None, device: torch.device):
    """Every example of ``dataset`` exactly once, in order for map-style data (no padding, no
    dropped tail). A stream is read whole by this process (rank 0 of 1): each rank evaluates the
    full split, as with map-style data."""
    if is_stream(dataset):
        dataset = dataset.evaluation_view()
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_fn, **_worker_options(num_workers, device))


def reraise_worker_error(exc: Exception) -> None:
    """A DataLoader worker's `AttnlabError` comes back with the worker's traceback in its
    message; raise it again as the one line the library wrote (the CLI prints one line)."""
    if isinstance(exc, AttnlabError):
        text = str(exc)
        if "Original Traceback" in text:
            last = text.strip().splitlines()[-1]
            prefix = f"{type(exc).__module__}.{type(exc).__name__}: "
            raise type(exc)(last.removeprefix(prefix)) from None
    raise exc
