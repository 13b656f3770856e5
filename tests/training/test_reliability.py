"""Reliability and safety: kill -9 then resume, NaN steps, memory over a long run, untrusted files."""

from __future__ import annotations

import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from attnlab.errors import CheckpointError, ConfigError
from attnlab.models import create_model
from attnlab.run import check_run_name
from attnlab.training import ClassificationObjective, TrainConfig, Trainer, TrainingError, load_weights
from attnlab.training.checkpoint import load_checkpoint

TINY = ["--model.depth", "1", "--model.dim", "32", "--model.num_heads", "2", "--train.batch_size", "64",
        "--train.checkpoint_every", "3", "--epochs", "4"]


def _attnlab(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "attnlab", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, **kw)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.mark.slow
def test_kill_9_then_resume_ends_with_the_same_weights(tmp_path):
    straight = _attnlab("train", "--out", str(tmp_path / "straight"), *TINY)
    assert straight.wait(timeout=300) == 0, straight.stderr.read()
    victim_dir = tmp_path / "victim"
    victim = _attnlab("train", "--out", str(victim_dir), *TINY)
    deadline = time.time() + 120
    while not (victim_dir / "checkpoint" / "state.json").exists():
        assert time.time() < deadline and victim.poll() is None, "no checkpoint appeared"
        time.sleep(0.05)
    time.sleep(random.Random(os.getpid()).uniform(0.0, 1.5))  # a random moment after the first checkpoint
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    # Whatever the moment, a whole checkpoint is on disk (never half-written).
    model = create_model("vit-tiny", stem_channels=32, dropout=0.2, depth=1, dim=32, num_heads=2)
    state, _ = load_checkpoint(victim_dir / "checkpoint", model=model)
    assert state["step"] > 0
    resumed = _attnlab("train", "--resume", str(victim_dir))
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    a, b = _weights(tmp_path / "straight" / "model.safetensors"), _weights(victim_dir / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0, msg=key)


class _NaNObjective(ClassificationObjective):
    """Cross-entropy that turns NaN after a few steps (a diverging run)."""

    def __init__(self, bad_after: int):
        super().__init__(3)
        self.calls, self.bad_after = 0, bad_after

    def loss(self, model, batch):
        self.calls += 1
        loss, n = super().loss(model, batch)
        return (loss * float("nan") if self.calls > self.bad_after else loss), n


def _tiny_data(n=64):
    x = torch.randn(n, 1, 8, 8)
    return TensorDataset(x, torch.randint(0, 3, (n,)))


def test_nan_loss_is_skipped_then_training_stops_keeping_the_last_good_checkpoint(tmp_path, caplog):
    torch.manual_seed(0)
    model = create_model("vit-tiny", num_classes=3, dim=16, depth=1, num_heads=2)
    cfg = TrainConfig(epochs=5, batch_size=16, progress=False, device="cpu", max_bad_steps=3)
    trainer = Trainer(model, _NaNObjective(bad_after=4), _tiny_data(), None, cfg, run_dir=tmp_path)
    with pytest.raises(TrainingError, match="NaN/Inf in 4 steps"):
        trainer.fit()
    assert "non-finite loss" in caplog.text
    assert all(torch.isfinite(p).all() for p in model.parameters())  # no NaN reached the weights
    state, _ = load_checkpoint(tmp_path / "checkpoint", model=create_model("vit-tiny", num_classes=3, dim=16, depth=1, num_heads=2))
    assert state["epoch"] == 1 and state["step"] == 4


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")  # 2000 steps of tiny ops: two threads' barriers took 225 s against 24 s at load 7
def test_memory_does_not_grow_over_2000_steps(tmp_path):
    def rss_mib() -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        pytest.skip("no /proc/self/status")

    torch.manual_seed(0)
    model = create_model("vit-tiny", num_classes=3, dim=16, depth=1, num_heads=2)
    samples = []
    cfg = TrainConfig(epochs=20, batch_size=4, progress=False, device="cpu", warmup_epochs=0)
    trainer = Trainer(model, ClassificationObjective(3), _tiny_data(400), _tiny_data(8), cfg, run_dir=tmp_path,
                      callbacks=[lambda t, epoch, record: samples.append(rss_mib())])
    trainer.fit()
    assert trainer.state.step == 2000
    growth = max(samples[5:]) - samples[4]  # after warm-up (allocator pools, lazy imports)
    assert growth < 30, f"RSS grew by {growth:.1f} MiB between epochs 5 and 20: {samples}"


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {_Payload.marker}",))


def test_malicious_pickle_checkpoint_is_refused_and_never_runs(tmp_path):
    from attnlab.cli import main

    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--epochs", "1", "--model.depth", "1", "--model.dim", "32",
                 "--model.num_heads", "2", "--train.batch_size", "128"]) == 0
    _Payload.marker = tmp_path / "pwned"
    (run / "model.safetensors").write_bytes(pickle.dumps({"weights": _Payload()}))
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_weights(create_model("vit-tiny"), run / "model.safetensors")
    assert main(["evaluate", str(run)]) == 2
    torch_file = tmp_path / "evil.pt"
    torch_file.write_bytes(pickle.dumps(_Payload()))
    with pytest.raises(Exception):  # what a caller who reaches for torch.load should use
        torch.load(torch_file, weights_only=True)
    assert not _Payload.marker.exists()


@pytest.mark.parametrize("name", ["../escape", "runs/../../etc", "runs/bad name", "runs/;rm -rf"])
def test_run_directory_names_refuse_traversal_and_odd_characters(name):
    with pytest.raises(ConfigError, match="is not allowed"):
        check_run_name(Path(name))


def test_an_epoch_whose_every_step_was_skipped_logs_no_loss_not_zero(tmp_path):
    """An epoch of NaN losses only (all skipped) logged train_loss 0.0, a perfect loss; now null in metrics.jsonl."""
    import json

    torch.manual_seed(0)
    model = create_model("vit-tiny", num_classes=3, dim=16, depth=1, num_heads=2)
    cfg = TrainConfig(epochs=2, batch_size=16, progress=False, device="cpu", max_bad_steps=100)
    Trainer(model, _NaNObjective(bad_after=4), _tiny_data(), None, cfg, run_dir=tmp_path).fit()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["train_loss"] is not None and records[0]["train_loss"] > 0.5  # 4 good steps of 4
    assert records[1]["train_loss"] is None and records[1]["step"] == 4
