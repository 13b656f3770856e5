"""Regression, multi-label and class-weighted runs through the command line: train a few
steps, evaluate, predict, explain, each on tiny data generated here."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from attnlab.cli import main

SERIES = ["--model.dim", "16", "--model.depth", "1", "--model.num_heads", "2", "--model.stem_channels", "0",
          "--train.batch_size", "8", "--train.progress", "false", "--epochs", "2"]
TEXT = ["--model.dim", "16", "--model.depth", "1", "--model.num_heads", "2", "--model.conv_channels", "8",
        "--train.batch_size", "8", "--train.progress", "false", "--epochs", "2"]


def _series_folder(root, rng, *, n=24, length=12):
    """UCR-style folder whose label is a number: 100 + 10 x the series' level."""
    root.mkdir()
    for split in ("TRAIN", "TEST"):
        level = rng.normal(size=n)
        rows = [f"{100 + 10 * m:.4f}\t" + "\t".join(f"{v:.4f}" for v in m + rng.normal(0, 0.1, length)) for m in level]
        (root / f"{root.name}_{split}.tsv").write_text("\n".join(rows) + "\n")
    return root


def test_timeseries_regression_end_to_end(tmp_path, capsys):
    rng = np.random.default_rng(0)
    root = _series_folder(tmp_path / "Level", rng)
    out = tmp_path / "run"
    argv = ["train", "--task", "timeseries", "--data", str(root), "--data.target", "regression", "--data.normalize", "none",
            "--out", str(out), *SERIES]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["test"]) == {"mse", "mae", "r2"}
    record = json.loads((out / "data.json").read_text())
    assert record["target"] == "regression" and record["num_classes"] == 1
    scaler = record["info"]["target_scaler"]
    train_targets = [float(line.split("\t")[0]) for line in (root / "Level_TRAIN.tsv").read_text().splitlines()]
    assert scaler["mean"] == pytest.approx(np.mean(train_targets)) and scaler["std"] == pytest.approx(np.std(train_targets))
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)["test"]
    assert again["mse"] == pytest.approx(metrics["test"]["mse"], rel=1e-6)
    assert main(["predict", str(out), str(root / "Level_TEST.tsv"), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert len(results) == 24 and all(isinstance(r["value"], float) for r in results)
    # in the target's units: predictions near the training targets' scale, not standardised ones
    assert abs(np.mean([r["value"] for r in results]) - scaler["mean"]) < 5 * scaler["std"]
    assert "label" in results[0]
    assert main(["predict", str(out), str(root / "Level_TEST.tsv")]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert float(line.rsplit(": ", 1)[1]) == pytest.approx(results[0]["value"], rel=1e-5)
    html = tmp_path / "x.html"
    assert main(["explain", str(out), str(root / "Level_TEST.tsv"), "-o", str(html)]) == 0
    assert f"{results[0]['value']:.6g}" in html.read_text()
