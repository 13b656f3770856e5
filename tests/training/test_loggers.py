"""metrics.jsonl after a crash: the lines of epochs the checkpoint does not hold are dropped on resume."""

from __future__ import annotations

import json

from attnlab.training.loggers import RunLogger


def test_forget_after_keeps_the_checkpointed_epochs_only(tmp_path):
    logger = RunLogger(tmp_path, tensorboard=False)
    for epoch in (1, 2, 3):
        logger.epoch({"epoch": epoch, "train_loss": 1.0 / epoch})
    logger.forget_after(2)  # the checkpoint holds 2 epochs; epoch 3 was logged, then the run died
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2] and records[1]["train_loss"] == 0.5
    logger.epoch({"epoch": 3, "train_loss": 0.25})
    assert [json.loads(line)["epoch"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    RunLogger(tmp_path, enabled=False, tensorboard=False).forget_after(0)  # not rank 0: leaves the file alone
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 3


def test_forget_after_drops_a_line_a_kill_cut_short(tmp_path):
    """A kill while an epoch's line was appended leaves half a line: resume dropped it, not a JSONDecodeError."""
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1, "train_loss": 1.0}\n{"epoch": 2, "train_lo')
    RunLogger(tmp_path, tensorboard=False).forget_after(1)
    assert (tmp_path / "metrics.jsonl").read_text() == '{"epoch": 1, "train_loss": 1.0}\n'
