"""The per-epoch step schedule (``--train.schedule step``) against the forecasting code's ``adjust_learning_rate``."""

from __future__ import annotations

import pytest
import torch

from attnlab.errors import ConfigError
from attnlab.training import TrainConfig, Trainer
from attnlab.training.schedule import epoch_step_factor


def _informer_lradj(epoch_1based: int, lr: float, kind: str) -> float:
    """The rate the Informer / DLinear / PatchTST code trains epoch ``e`` with: it calls
    ``adjust_learning_rate(optimizer, e - 1)`` at the end of epoch e - 1 (no call before epoch 1)."""
    e = epoch_1based - 1
    if e < 1:
        return lr
    if kind == "type1":
        return lr * 0.5 ** ((e - 1) // 1)
    return lr if e < 3 else lr * 0.9 ** ((e - 3) // 1)  # type3


@pytest.mark.parametrize("kind,hold,gamma", [("type1", 2, 0.5), ("type3", 4, 0.9)])
def test_step_factor_reproduces_lradj(kind, hold, gamma):
    steps = 5
    for epoch in range(1, 15):
        for s in range(steps):
            factor = epoch_step_factor((epoch - 1) * steps + s, steps, hold, gamma)
            assert factor * 1e-3 == pytest.approx(_informer_lradj(epoch, 1e-3, kind), rel=1e-12)


def test_trainer_uses_the_step_schedule():
    data = torch.utils.data.TensorDataset(torch.randn(40, 3), torch.randn(40, 3))

    class Mse:
        metric, greater_is_better = "mse", False

        def loss(self, model, batch):
            x, y = batch
            return ((model(x) - y) ** 2).mean(), len(x)

        def evaluate(self, model, batches):
            return {"mse": 0.0}

    config = TrainConfig(epochs=4, batch_size=10, lr=0.01, schedule="step", lr_hold_epochs=1, lr_gamma=0.5, progress=False, device="cpu",
                         warmup_epochs=0)
    trainer = Trainer(torch.nn.Linear(3, 3), Mse(), data, None, config)
    trainer.fit()
    assert [r["lr"] for r in trainer.state.history] == pytest.approx([0.005, 0.0025, 0.00125, 0.000625])
    with pytest.raises(ConfigError, match="schedule must be one of"):
        TrainConfig(schedule="linear")
