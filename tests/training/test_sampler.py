"""Length-grouped batches: a permutation, batches of neighbouring lengths, ranks disjoint, wired into the trainer."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from attnlab.errors import ConfigError
from attnlab.training import ClassificationObjective, TrainConfig, Trainer
from attnlab.training.sampler import LengthGroupedSampler


def _lengths(n=203, seed=0):
    return torch.randint(1, 60, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def _batches(sampler, batch_size):
    order = list(sampler)
    assert len(order) == len(sampler)
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def test_each_epoch_is_a_partial_permutation_of_whole_batches():
    lengths = _lengths()
    sampler = LengthGroupedSampler(lengths, 16, seed=3, mega_batches=4)
    order = list(sampler)
    assert len(order) == (len(lengths) // 16) * 16
    assert len(set(order)) == len(order) and all(0 <= i < len(lengths) for i in order)


def test_one_mega_batch_gives_consecutive_runs_of_the_sorted_lengths():
    lengths = _lengths()
    sampler = LengthGroupedSampler(lengths, 16, seed=1, mega_batches=1000)  # one mega-batch: a global sort
    batches = _batches(sampler, 16)
    used = sorted((lengths[i] for b in batches for i in b), reverse=True)
    runs = sorted([sorted((lengths[i] for i in b), reverse=True) for b in batches], reverse=True)
    assert runs == [used[i:i + 16] for i in range(0, len(used), 16)]
    # and far less padding than random batches of the same examples
    padded = sum(16 * max(lengths[i] for i in b) for b in batches)
    g = torch.Generator().manual_seed(0)
    shuffled = torch.tensor([i for b in batches for i in b])[torch.randperm(len(used), generator=g)].view(-1, 16)
    padded_random = sum(16 * max(lengths[i] for i in b.tolist()) for b in shuffled)
    assert padded < 0.8 * padded_random


def test_order_is_a_function_of_seed_and_epoch():
    lengths = _lengths()
    a, b = LengthGroupedSampler(lengths, 8, seed=5), LengthGroupedSampler(lengths, 8, seed=5)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)
    a.set_epoch(1)
    assert list(a) == list(b)


def test_ranks_split_each_global_batch():
    lengths = _lengths(200)
    single = _batches(LengthGroupedSampler(lengths, 10, seed=2, num_replicas=1), 10)
    r0 = _batches(LengthGroupedSampler(lengths, 5, seed=2, num_replicas=2, rank=0), 5)
    r1 = _batches(LengthGroupedSampler(lengths, 5, seed=2, num_replicas=2, rank=1), 5)
    assert len(r0) == len(r1) == len(single)
    for whole, a, b in zip(single, r0, r1):
        assert a + b == whole and not set(a) & set(b)


def test_bad_arguments_are_named():
    with pytest.raises(ConfigError, match="rank"):
        LengthGroupedSampler([1, 2, 3], 2, num_replicas=2, rank=2)


class _Lengthy(TensorDataset):
    @property
    def lengths(self):
        return [int(n) for n in self.tensors[2]]


def _token_data(n=64):
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.randn(n, 1, 8, 8, generator=g) + (y.float() - 1.0)[:, None, None, None] * 1.5
    return x, y, torch.randint(1, 30, (n,), generator=g)


def test_trainer_groups_by_length_and_refuses_datasets_without_lengths():
    from attnlab.models import create_model

    x, y, n = _token_data()
    model = create_model("vit-tiny", num_classes=3, dim=32, depth=1, num_heads=2)
    cfg = TrainConfig(epochs=1, batch_size=8, progress=False, device="cpu", group_by_length=True)
    seen = []
    trainer = Trainer(model, ClassificationObjective(3), _Lengthy(x, y, n), None, cfg,
                      collate_fn=lambda items: (seen.append([int(i[2]) for i in items]) or
                                                (torch.stack([i[0] for i in items]), torch.stack([i[1] for i in items]))))
    assert isinstance(trainer.sampler, LengthGroupedSampler)
    trainer.fit()
    assert len(seen) == 8 and all(b == sorted(b, reverse=True) for b in seen)
    with pytest.raises(ConfigError, match="lengths"):
        Trainer(model, ClassificationObjective(3), TensorDataset(x, y), None, cfg)
