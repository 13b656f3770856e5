"""Batches through reused shared-memory slots (`attnlab.training.shared_batches`) equal PyTorch's
own collated batches, epoch after epoch, and a slot is never overwritten before it is copied."""

from __future__ import annotations

import time

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from attnlab.training.shared_batches import SharedBatchLoader, SharedBatches, shared_batches_for


class _Items(Dataset):
    """x = a (2, 3, 4) tensor that encodes its index (so a wrong or overwritten slot shows), y = index % 7."""

    item_shape = (2, 3, 4)

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        g = torch.Generator().manual_seed(i)
        return torch.randn(2, 3, 4, generator=g) + i, torch.tensor(i % 7)


class _UnevenStream(IterableDataset):
    """Worker 0 yields 3 items, worker 1 many: near the end every task falls to worker 1."""

    item_shape = (2, 3, 4)

    def __iter__(self):
        info = get_worker_info()
        worker = info.id if info is not None else 0
        count = 3 if worker == 0 else 60
        base = _Items(1000)
        for k in range(count):
            yield base[worker * 500 + k]


def _reference(dataset, batch_size, **kw):
    return [(x.clone(), y.clone()) for x, y in DataLoader(dataset, batch_size=batch_size, num_workers=0, **kw)]


@pytest.mark.parametrize("workers", [1, 2])
def test_batches_equal_the_default_collate_over_epochs(workers):
    data = _Items(53)
    shared = SharedBatches(data.item_shape, 8, workers)
    loader = SharedBatchLoader(DataLoader(data, batch_size=8, num_workers=workers, collate_fn=shared.collate,
                                          persistent_workers=True), shared)
    expected = _reference(data, 8)
    for _ in range(3):  # persistent workers keep writing round the ring
        got = list(loader)
        assert len(got) == len(expected)
        for (x, y), (ex, ey) in zip(got, expected):
            assert torch.equal(x, ex) and torch.equal(y, ey) and y.dtype == torch.int64
            assert x.data_ptr() not in range(shared.slots.data_ptr(), shared.slots.data_ptr() + shared.slots.nbytes)


@pytest.mark.parametrize("ring", [None, 1])
def test_a_slow_consumer_never_sees_an_overwritten_slot(ring):
    """The consumer sleeps while workers race ahead, and one worker ends early so the other gets
    every outstanding task: the worst case for the ring. With a ring of one slot the same run
    loses items (the check can fail)."""
    stream = _UnevenStream()
    shared = SharedBatches(stream.item_shape, 2, 2, prefetch_factor=2)
    if ring is not None:
        shared.ring = ring
    loader = SharedBatchLoader(DataLoader(stream, batch_size=2, num_workers=2, collate_fn=shared.collate), shared)
    got = []
    for x, y in loader:
        got.append((x, y))
        time.sleep(0.01)
    items = {(float(x[k].flatten()[0]), int(y[k])) for x, y in got for k in range(len(y))}
    reference = set()
    base = _Items(1000)
    for i in list(range(0, 3)) + list(range(500, 560)):
        x, y = base[i]
        reference.add((float(x.flatten()[0]), int(y)))
    assert sum(len(y) for _, y in got) == 63
    assert (items == reference) is (ring is None)


class _MultiHot(_Items):
    """The same x, y a multi-hot row (3,) float32 (a label CSV's target), one label only for some items."""

    def __getitem__(self, i: int):
        x, _ = super().__getitem__(i)
        return x, torch.tensor([1.0, float(i % 2), float(i % 3 == 0)])


def test_multi_hot_rows_travel_by_value():
    data = _MultiHot(21)
    shared = SharedBatches(data.item_shape, 4, 1)
    got = list(SharedBatchLoader(DataLoader(data, batch_size=4, num_workers=1, collate_fn=shared.collate), shared))
    expected = _reference(data, 4)
    assert len(got) == len(expected) == 6
    for (x, y), (ex, ey) in zip(got, expected):
        assert torch.equal(x, ex) and torch.equal(y, ey) and y.dtype == torch.float32 and y.shape[1:] == (3,)


def test_other_items_fall_back_to_the_default_collate():
    shared = SharedBatches((2, 3, 4), 8, 1)
    items = [(torch.zeros(2, 3, 5), torch.tensor(1))] * 3  # another shape
    x, y = shared.collate(items)  # also: not in a worker
    assert x.shape == (3, 2, 3, 5) and torch.equal(y, torch.ones(3, dtype=torch.long))
    assert shared.unwrap((x, y)) == (x, y)


def test_used_only_where_it_applies(monkeypatch):
    data = _Items(10)
    assert isinstance(shared_batches_for(data, 4, 2, None), SharedBatches)
    assert shared_batches_for(data, 4, 0, None) is None  # no workers
    assert shared_batches_for(data, 4, 2, lambda items: items) is None  # the task's own collate
    assert shared_batches_for(torch.utils.data.TensorDataset(torch.zeros(3)), 4, 2, None) is None  # no fixed item shape
    monkeypatch.setenv("ATTNLAB_SHARED_BATCHES", "0")
    assert shared_batches_for(data, 4, 2, None) is None


@pytest.mark.parametrize("spare", [True, False])
def test_a_borrowed_batch_holds_until_the_one_after_next_arrives(spare):
    """Borrowed batches are the slots themselves: each must still hold its items after the next
    batch has arrived and the consumer has worked on it (slept), while workers race ahead and
    one worker gets every task (as above). Without the ring's spare slot it does not: the
    overwrite is a race the workers usually win, so that case gets up to 5 epochs to show it,
    and the ring with its spare slot must hold through all 5."""
    intact = True
    for _ in range(5):
        stream = _UnevenStream()
        shared = SharedBatches(stream.item_shape, 2, 2, prefetch_factor=2)
        if not spare:
            shared.ring -= 1
        loader = SharedBatchLoader(DataLoader(stream, batch_size=2, num_workers=2, collate_fn=shared.collate), shared,
                                   borrow=True)
        previous, count = None, 0
        for x, y in loader:
            assert shared.slots.data_ptr() <= x.data_ptr() < shared.slots.data_ptr() + shared.slots.nbytes
            time.sleep(0.01)
            if previous is not None:
                intact = intact and torch.equal(previous[0], previous[1])
            previous = (x, x.clone())
            count += len(y)
        assert count == 63
        if not intact:
            break
    assert intact is spare
