"""Weight EMA: the average against plain float64 maths, the trainer keeps and resumes it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attnlab.errors import ConfigError
from attnlab.training import ClassificationObjective, Trainer
from attnlab.training.ema import WeightEma
from tests.training.test_trainer import _Interrupt, _config, _data, _model, _weights


def test_ema_matches_the_recurrence():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4))
    ema = WeightEma(model, decay=0.9)
    expected = {k: v.double().clone() for k, v in model.state_dict().items()}
    for step in range(30):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model.train()(torch.randn(8, 5))  # moves the BatchNorm statistics too
        ema.update(model, step)
        d = min(0.9, (1 + step) / (10 + step))
        for k, v in model.state_dict().items():
            expected[k] = d * expected[k] + (1 - d) * v.double() if v.is_floating_point() else v.double()
    for k, v in ema.shadow.items():
        torch.testing.assert_close(v.double(), expected[k], rtol=1e-5, atol=1e-6, msg=k)
    assert ema.shadow["1.num_batches_tracked"].item() == 30


def test_trainer_keeps_the_average_and_resumes_it(tmp_path):
    train, val = _data(), _data(32, seed=1)
    cfg = _config(ema_decay=0.8, keep="last")
    straight = Trainer(_model(), ClassificationObjective(3), train, val, cfg, run_dir=tmp_path / "a")
    torch.manual_seed(5)
    straight.fit()
    for key, value in straight.ema.shadow.items():  # "last" with EMA keeps the average, not the raw weights
        torch.testing.assert_close(straight.model.state_dict()[key], value, rtol=0, atol=0, msg=key)
    assert straight.evaluate(val)["accuracy"] >= 0.9

    calls = {"n": 0}

    def boom(batch):
        calls["n"] += 1
        if calls["n"] == 9:  # in epoch 2: the epoch-1 checkpoint holds the average so far
            raise _Interrupt
        return batch

    first = Trainer(_model(), ClassificationObjective(3), train, val, cfg, run_dir=tmp_path / "b", batch_augment=boom)
    torch.manual_seed(5)
    with pytest.raises(_Interrupt):
        first.fit()
    resumed = Trainer(_model(), ClassificationObjective(3), train, val, cfg, run_dir=tmp_path / "b")
    resumed.resume()
    resumed.fit()
    for key, value in _weights(straight.model).items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=0, atol=0, msg=key)


def test_ema_decay_out_of_range_is_a_config_error():
    with pytest.raises(ConfigError, match="ema_decay"):
        _config(ema_decay=1.0)
