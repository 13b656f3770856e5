"""Two torchrun processes train from shards whose sizes do not divide between the ranks: each
rank reads its own range in whole batches, both take the same number of steps (no all-reduce
left waiting), and the run finishes and writes its metrics; also when an unreadable image
(``--data.skip_bad``) leaves one rank a batch short."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from PIL import Image

from attnlab.data.shard_writer import write_shards


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write(tmp_path):
    rng = np.random.default_rng(0)
    for c, count in (("a", 23), ("b", 18)):
        (tmp_path / "f" / c).mkdir(parents=True)
        for k in range(count):
            Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(tmp_path / "f" / c / f"{k}.png")
    return write_shards(tmp_path / "f", tmp_path / "s", shard_size=7, options={"image_size": (8, 8)})


@pytest.mark.slow
def test_two_ranks_train_from_uneven_shards(tmp_path):
    index = _write(tmp_path)
    assert [e["count"] for e in index["splits"]["train"]] == [7, 7, 7, 7, 5]  # 33: 16 a rank, 1 left out
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(_port()),
           "-m", "attnlab", "train", "--task", "images", "--data", str(tmp_path / "s"), "--epochs", "2",
           "--model.depth", "1", "--model.dim", "16", "--model.num_heads", "2", "--train.batch_size", "5",
           "--train.num_workers", "1", "--train.device", "cpu", "--train.progress", "false", "--out", str(tmp_path / "run")]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    epochs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in epochs] == [3, 6]  # 16 samples a rank -> 3 whole batches of 5 each epoch
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["skipped_samples"] == {"train": 0, "val": 0, "test": 0}


@pytest.mark.slow
def test_a_rank_left_a_batch_short_by_an_unreadable_image_neither_hangs_nor_drops_a_step(tmp_path):
    """33 samples: 16 a rank, 4 batches of 4 (groups of 3 and 1 with accumulate 3). The first image of shard 1 is
    zeroed (never the dropped 33rd sample, whatever the shard order): the rank reading it has 15, 3 batches.
    Before, the other rank waited forever in the gradient all-reduce of its 4th batch. Now both stop after 3
    batches, the full group steps, and metrics.json counts the skipped sample each epoch."""
    _write(tmp_path)
    shard = tmp_path / "s" / "train-000001.tar"
    with tarfile.open(shard) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".png"))  # the shard's first sample
    with open(shard, "r+b") as f:
        f.seek(member.offset_data)
        f.write(bytes(member.size))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(_port()),
           "-m", "attnlab", "train", "--task", "images", "--data", str(tmp_path / "s"), "--data.skip_bad", "true",
           "--epochs", "2", "--model.depth", "1", "--model.dim", "16", "--model.num_heads", "2",
           "--train.batch_size", "4", "--train.accumulate", "3", "--train.num_workers", "1", "--train.device", "cpu",
           "--train.progress", "false", "--out", str(tmp_path / "run")]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        out, err = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)  # torchrun stops its ranks (they run in sessions of their own)
        process.communicate(timeout=60)
        pytest.fail("the ranks hung")
    assert process.returncode == 0, out[-2000:] + err[-3000:]
    epochs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in epochs] == [1, 2]  # 3 batches: one full group of 3 an epoch
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["skipped_samples"]["train"] >= 1
    assert "of the 4 batches planned" in err
