"""One epoch's training batches, grouped for gradient accumulation, and how an epoch ends when a
stream yields fewer batches than it promised.

A map-style loader yields exactly its length. A stream (`attnlab.data.shards.ShardStream`) says
how many batches it will yield, but with ``--data.skip_bad`` an unreadable sample is left out, a
worker's last batch is then short and dropped, and the epoch ends early. So for streams the next
batch is fetched before the current one is handed out: the current one is then known to be the
last, its accumulation group steps on what it has (its gradient, divided by the group's planned
size, is scaled up by planned / actual), and under DDP it is the micro-batch that syncs gradients.
Under DDP the ranks also agree, batch by batch, whether every rank has one more (``agree``: an
all-reduce of a flag): the epoch ends for all at the first rank that ran out, as
``DistributedSampler(drop_last=True)`` leaves a remainder out, so no rank waits in a collective
the others never enter. Map-style loaders fetch no batch ahead: a checkpoint's RNG state stays the
one before the next batch is read, which exact mid-epoch resume relies on.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterator, NamedTuple

import torch

__all__ = ["EpochBatches", "MicroBatch"]

log = logging.getLogger(__name__)

_END = object()


class MicroBatch(NamedTuple):
    index: int  # position in the epoch, from 0
    batch: Any
    group: int  # the planned size of its accumulation group: what its loss is divided by
    last: bool  # the group's last: the optimizer steps after it (under DDP, its backward syncs gradients)
    scale: float  # on a last micro-batch: planned / actual group size (a stream ran short), else 1.0


class EpochBatches:
    """The micro-batches of one epoch of ``loader``, which promises ``planned`` batches.

    ``skip``: batches already consumed (a mid-epoch resume; read and dropped with torch's RNG put
    back, since the order is a function of seed and epoch). ``lookahead``: fetch one batch ahead
    (streams). ``agree(have)``: under DDP, whether every rank has a next batch. After iterating,
    ``yielded`` counts the batches trained on (skipped ones included) and ``left_out`` those this
    rank had but left out because another rank ran out.
    """

    def __init__(self, loader: Any, *, planned: int, accumulate: int, skip: int = 0, lookahead: bool = False,
                 agree: Callable[[bool], bool] | None = None):
        self.loader, self.planned, self.accumulate, self.skip = loader, planned, accumulate, skip
        self.lookahead, self.agree = lookahead, agree
        self.yielded, self.left_out = skip, 0

    def _fetch(self, iterator: Iterator[Any], index: int) -> Any:
        if index >= self.planned:  # the plan ends the epoch: every rank knows it, no collective needed
            return _END
        batch = next(iterator, _END)
        if self.agree is not None and not self.agree(batch is not _END):
            self.left_out += batch is not _END
            return _END
        return batch

    def __iter__(self) -> Iterator[MicroBatch]:
        iterator = iter(self.loader)
        rng = torch.get_rng_state()
        for _ in range(self.skip):
            next(iterator)
        torch.set_rng_state(rng)
        index, acc = self.skip, self.accumulate
        current = self._fetch(iterator, index)
        while current is not _END:
            # Groups of `accumulate` from where this pass started (a checkpoint is at a group's end).
            first = self.skip + (index - self.skip) // acc * acc
            group = min(acc, self.planned - first)
            following = self._fetch(iterator, index + 1) if self.lookahead else None
            full = index + 1 == first + group
            last = full or following is _END
            yield MicroBatch(index, current, group, last, 1.0 if full or not last else group / (index + 1 - first))
            index += 1
            self.yielded = index
            current = following if self.lookahead else self._fetch(iterator, index)

    def log_shortfall(self, epoch: int, rank: int, skipped: int | None) -> None:
        """A warning when the epoch ended before the plan: how many batches, and why."""
        if self.yielded >= self.planned:
            return
        why = f"{skipped} unreadable sample(s) skipped so far (--data.skip_bad)" if skipped else "the stream ended early"
        if self.left_out:
            why = "another rank's stream ran short: every rank stopped there, this rank's further batches left out"
        log.warning("epoch %d, rank %d: the training stream gave %d of the %d batches planned (%s); the epoch's "
                    "last accumulation group stepped on what it had", epoch + 1, rank, self.yielded, self.planned, why)
