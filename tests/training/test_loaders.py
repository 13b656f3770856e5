"""Training with DataLoader workers: the same result as in-process loading, and a worker's
DataError surfaces as the one line the library wrote."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

from attnlab.errors import DataError
from attnlab.models import create_model
from attnlab.training import ClassificationObjective, TrainConfig, Trainer


def _data(n=64):
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (n,), generator=g)
    return TensorDataset(torch.randn(n, 1, 8, 8, generator=g) + y.float()[:, None, None, None], y)


def _model():
    torch.manual_seed(0)
    return create_model("vit-tiny", num_classes=3, dim=16, depth=1, num_heads=2)


def _config(**kw):
    return TrainConfig(**{**dict(epochs=2, batch_size=16, progress=False, device="cpu"), **kw})


def test_two_workers_train_the_same_weights_as_none():
    data = _data()
    runs = []
    for workers in (0, 2):
        trainer = Trainer(_model(), ClassificationObjective(3), data, data, _config(num_workers=workers))
        trainer.fit()
        runs.append(trainer.model.state_dict())
        assert trainer.train_loader.persistent_workers == (workers > 0)
    for name, value in runs[0].items():
        torch.testing.assert_close(runs[1][name], value, rtol=0, atol=0, msg=name)


class _BrokenAt(Dataset):
    def __init__(self, data, bad):
        self.data, self.bad = data, bad

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        if i == self.bad:
            raise DataError(f"cannot read image /data/cats/{i}.png: truncated")
        return self.data[i]


@pytest.mark.parametrize("workers", [0, 1])
def test_worker_data_error_is_one_line_naming_the_file(workers):
    broken = _BrokenAt(_data(), bad=5)
    trainer = Trainer(_model(), ClassificationObjective(3), broken, None, _config(num_workers=workers))
    with pytest.raises(DataError) as info:
        trainer.fit()
    assert str(info.value) == "cannot read image /data/cats/5.png: truncated"
