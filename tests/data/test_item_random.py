"""Per-item random draws (SASRec negatives, detection flips, language-model windows, an item
augmentation): a pure function of (seed, epoch, index), whichever process fetches the item and
in whichever order, so 0 and 2 DataLoader workers, any world size and a resumed run agree."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from attnlab.data.base import TensorPairDataset
from attnlab.data.detection import load_shapes_task
from attnlab.data.language_model import RandomWindowDataset
from attnlab.data.sasrec import SasrecTrainDataset


def _sasrec():
    rng = np.random.default_rng(0)
    train = [rng.choice(np.arange(1, 61), size=int(rng.integers(4, 12)), replace=False) for _ in range(12)]
    return SasrecTrainDataset(train, 60, 8)


def _detection():
    return load_shapes_task(seed=1, train_size=12, val_size=1, test_size=1, image_size=16, hflip=True).train


def _windows():
    return RandomWindowDataset(torch.arange(200), 8, 12)


def _augmented():
    return TensorPairDataset(torch.zeros(12, 3), torch.arange(12), augment=lambda x: x + torch.rand(x.shape))


DATASETS = {"sasrec": _sasrec, "detection": _detection, "lm-windows": _windows, "item-augment": _augmented}
ORDER = [5, 0, 11, 3, 8, 1, 7, 2, 10, 4, 9, 6]  # a sampler's shuffled order


def _by_epoch(dataset, workers: int, epochs: int = 2) -> list[dict[int, list[torch.Tensor]]]:
    """{index: item} per epoch, fetched as the trainer fetches: one persistent loader, set_epoch before each epoch."""
    loader = DataLoader(dataset, batch_size=4, sampler=ORDER, num_workers=workers, persistent_workers=workers > 0)
    seen = []
    for epoch in range(epochs):
        getattr(dataset, "set_epoch", lambda epoch: None)(epoch)  # as the trainer tells a dataset that has it
        items: dict[int, list[torch.Tensor]] = {}
        batches = [batch for batch in loader]
        for b, batch in enumerate(batches):
            for row, index in enumerate(ORDER[4 * b : 4 * b + 4]):
                items[index] = [part[row] for part in batch]
        seen.append(items)
    return seen


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("name", list(DATASETS))
def test_items_are_the_same_with_0_and_2_workers_and_fresh_each_epoch(name):
    """Before: each worker drew from its own seeded global RNG, so 2 workers drew other negatives / flips /
    windows than 0 workers did, and a resumed run (fresh workers, their RNG not checkpointed) others again."""
    torch.manual_seed(0)
    alone = _by_epoch(DATASETS[name](), 0)
    torch.manual_seed(1)  # the main process's RNG plays no part
    workers = _by_epoch(DATASETS[name](), 2)
    for epoch in range(2):
        for index in ORDER:
            assert _same(alone[epoch][index], workers[epoch][index]), (epoch, index)
    assert any(not _same(alone[0][i], alone[1][i]) for i in ORDER), "an epoch should draw afresh"


@pytest.mark.parametrize("name", list(DATASETS))
def test_an_item_depends_on_its_index_and_epoch_only(name):
    """A fresh dataset told epoch 1 and fetched in another order (a resumed run, another rank) gives the items of
    epoch 1; fetching leaves torch's global RNG as it was (dropout in the training process draws from it)."""
    reference = _by_epoch(DATASETS[name](), 0)[1]
    dataset = DATASETS[name]()
    getattr(dataset, "set_epoch", lambda epoch: None)(1)
    before = torch.get_rng_state()
    for index in reversed(ORDER):
        assert _same(dataset[index], reference[index]), index
        assert _same(dataset[index], reference[index]), "a second fetch in the same epoch is the same item"
    assert torch.equal(torch.get_rng_state(), before)
