"""Length-grouped batches: examples of similar length share a batch, so little of it is padding.

The idea of Hugging Face's ``TrainingArguments(group_by_length=True)`` and fairseq's bucketed
batches: shuffle, cut into mega-batches of ``mega_batches`` batches, sort each mega-batch by
length, cut it into batches and shuffle the batches. Every epoch's order is a function of
(seed, epoch), as with ``DistributedSampler``, so a mid-epoch resume replays it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from attnlab.errors import ConfigError

__all__ = ["LengthGroupedSampler", "dataset_lengths"]


def dataset_lengths(dataset) -> list[int]:
    """``dataset.lengths``: one size per example (tokens), which length grouping sorts by."""
    lengths = getattr(dataset, "lengths", None)
    if lengths is None:
        raise ConfigError(
            f"TrainConfig.group_by_length needs a dataset with per-example lengths; {type(dataset).__name__} has no "
            f"`lengths` (the text-classification and translation datasets have them); set group_by_length false"
        )
    lengths = list(lengths)
    if len(lengths) != len(dataset):
        raise ConfigError(f"{type(dataset).__name__}.lengths has {len(lengths)} entries for {len(dataset)} examples")
    return lengths


class LengthGroupedSampler(Sampler[int]):
    """Indices for ``DataLoader(batch_size=batch_size, drop_last=True)``: every run of
    ``batch_size`` consecutive indices is one batch of similar lengths.

    With ``num_replicas`` processes each global batch of ``num_replicas * batch_size`` sorted
    examples is split between the ranks, so all ranks step through batches of similar length.
    Incomplete batches are dropped (as ``drop_last=True``).
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, *, num_replicas: int = 1, rank: int = 0, seed: int = 0,
                 mega_batches: int = 50):
        if batch_size < 1 or num_replicas < 1 or not 0 <= rank < num_replicas or mega_batches < 1:
            raise ConfigError(f"LengthGroupedSampler: bad batch_size={batch_size}, num_replicas={num_replicas}, rank={rank}, "
                              f"mega_batches={mega_batches}")
        self.lengths = torch.as_tensor(list(lengths), dtype=torch.long)
        self.batch_size, self.num_replicas, self.rank = batch_size, num_replicas, rank
        self.seed, self.mega_batches, self.epoch = seed, mega_batches, 0
        self.global_batch = batch_size * num_replicas
        self.num_batches = len(self.lengths) // self.global_batch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_batches * self.batch_size

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=g)[: self.num_batches * self.global_batch]
        mega = self.mega_batches * self.global_batch
        batches = []
        for start in range(0, len(order), mega):
            chunk = order[start:start + mega]
            # Longest first; a stable sort keeps the shuffled order among equal lengths.
            chunk = chunk[torch.sort(self.lengths[chunk], descending=True, stable=True).indices]
            batches += list(chunk.view(-1, self.global_batch))  # (global_batch,) each
        shard = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        for b in torch.randperm(len(batches), generator=g).tolist():
            yield from batches[b][shard].tolist()
