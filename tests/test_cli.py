"""The attnlab command line, as a person uses it: train, evaluate, predict, explain, errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from attnlab.cli import main

TINY = ["--epochs", "2", "--model.depth", "1", "--model.dim", "32", "--model.num_heads", "2", "--train.batch_size", "64"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "digits-tiny"
    assert main(["train", "--out", str(out), *TINY]) == 0
    return out


def test_train_writes_the_run_directory(run_dir):
    for name in ("config.yaml", "data.json", "model.safetensors", "metrics.json", "metrics.jsonl", "report.html"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "checkpoint" / "state.json").is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["task"] == "digits" and metrics["model"] == "vit-tiny"
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0 and metrics["wall_time_s"] > 0
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2


def test_evaluate_reproduces_test_metrics(run_dir, capsys):
    assert main(["evaluate", str(run_dir), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert result["test"]["accuracy"] == pytest.approx(saved["test"]["accuracy"], abs=1e-9)


def test_predict_and_explain(run_dir, tmp_path, capsys):
    from sklearn.datasets import load_digits

    digits = load_digits()
    sample = tmp_path / "digit.npy"
    np.save(sample, digits.images[0])
    assert main(["predict", str(run_dir), str(sample), "--json", "--top-k", "3"]) == 0
    result = json.loads(capsys.readouterr().out)[0]
    assert result["class"] in [str(i) for i in range(10)] and len(result["top"]) == 3
    assert 0 <= result["score"] <= 1
    png, html = tmp_path / "x.png", tmp_path / "x.html"
    assert main(["explain", str(run_dir), str(sample), "-o", str(png)]) == 0
    assert main(["explain", str(run_dir), str(sample), "-o", str(html), "--rollout"]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 1000
    assert "<canvas" in html.read_text()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--task", "mnist"], "needs --data"),
        (["train", "--task", "mnist", "--data", "/nonexistent/mnist.npz"], "/nonexistent/mnist.npz"),
        (["train", "--task", "nope"], "unknown task 'nope'"),
        (["train", "--model", "nope"], "unknown model 'nope'"),
        (["train", "--model.depthh", "2"], "unknown key(s) ['depthh']"),
        (["train", "--train.lr", "-1"], "TrainConfig.lr must be a positive number"),
        (["train", "--train.epochs", "two"], "TrainConfig.epochs must be an integer"),
        (["train", "--config", "/nonexistent.yaml"], "config file not found"),
        (["train", "--resume", "/nonexistent/run"], "cannot resume"),
        (["evaluate", "/nonexistent/run"], "run directory not found"),
        (["predict", "/nonexistent/run", "/nonexistent.png"], "input not found"),
        (["bench", "nope"], "no benchmark named 'nope'"),
    ],
)
def test_errors_are_one_line_with_exit_code_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_existing_run_dir_is_not_overwritten(run_dir, capsys):
    assert main(["train", "--out", str(run_dir), *TINY]) == 2
    assert "already exists" in capsys.readouterr().err


def test_checkpoint_of_another_model_is_refused(run_dir, tmp_path, capsys):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(run_dir, other)
    config = (other / "config.yaml").read_text().replace("depth: 1", "depth: 2")
    (other / "config.yaml").write_text(config)
    assert main(["evaluate", str(other)]) == 2
    assert "does not fit this model" in capsys.readouterr().err


def test_list_and_help_as_a_subprocess():
    out = subprocess.run([sys.executable, "-m", "attnlab", "list"], capture_output=True, text=True, check=True).stdout
    assert "vit-tiny" in out and "hybrid-cnn" in out and "digits" in out
    for sub in ("train", "evaluate", "predict", "explain", "bench", "list"):
        result = subprocess.run([sys.executable, "-m", "attnlab", sub, "--help"], capture_output=True, text=True)
        assert result.returncode == 0 and "usage: attnlab" in result.stdout
