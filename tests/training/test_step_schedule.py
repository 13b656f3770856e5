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


def test_step_warmup_reproduces_the_patchtst_codes_first_epoch():
    """PatchTST's exp_main builds a OneCycleLR (which sets the rate to max_lr / 25 at once) and, with
    lradj type3, never steps it: epoch 1 trains at lr / 25, then adjust_learning_rate takes over.
    That loop, run with torch's own OneCycleLR, against warmup_epochs 1 at factor 0.04."""
    lr, steps = 1e-4, 3
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    torch.optim.lr_scheduler.OneCycleLR(optimizer=optimizer, steps_per_epoch=steps, pct_start=0.3, epochs=100, max_lr=lr)
    for epoch in range(12):  # their loop: train the epoch at the group's rate, then adjust(epoch + 1)
        theirs = optimizer.param_groups[0]["lr"]
        for s in range(steps):
            ours = lr * epoch_step_factor(epoch * steps + s, steps, 4, 0.9, warmup_epochs=1, warmup_factor=0.04)
            assert ours == pytest.approx(theirs, rel=1e-12), epoch
        e = epoch + 1
        optimizer.param_groups[0]["lr"] = lr if e < 3 else lr * 0.9 ** ((e - 3) // 1)
    assert epoch_step_factor(0, steps, 4, 0.9) == 1.0  # no warm-up unless asked
    with pytest.raises(ConfigError, match="step_warmup_factor"):
        TrainConfig(step_warmup_factor=0.0)
