"""Checkpoint state.json is strict JSON: a NaN metric in the history is written as null."""

from __future__ import annotations

import json

import torch
from torch import nn

from attnlab.training.checkpoint import load_checkpoint, save_checkpoint


def _refuse(word: str):
    raise ValueError(f"non-strict JSON constant {word}")


def test_state_json_writes_nan_and_infinity_as_null(tmp_path):
    model = nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    state = {"epoch": 2, "best_metric": float("nan"),
             "history": [{"epoch": 1, "val_loss": float("inf")}, {"epoch": 2, "val_loss": 0.5}]}
    save_checkpoint(tmp_path / "checkpoint", model=model, optimizer=optimizer, state=state)
    meta = json.loads((tmp_path / "checkpoint" / "state.json").read_text(), parse_constant=_refuse)
    assert meta["state"]["best_metric"] is None and meta["state"]["history"][0]["val_loss"] is None
    assert meta["state"]["history"][1]["val_loss"] == 0.5
    loaded, _ = load_checkpoint(tmp_path / "checkpoint", model=nn.Linear(3, 2))
    assert loaded["epoch"] == 2 and loaded["best_metric"] is None
