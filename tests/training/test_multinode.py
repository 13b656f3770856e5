"""Two torchrun "nodes" on this machine (loopback, c10d rendezvous) train as one process does.

Each node is ``torchrun --nnodes 2 --nproc-per-node 1 --rdzv-backend c10d -m attnlab train``
with batch 16 a process; the single process trains with batch 32 (the same global batch, the
same order: ``DistributedSampler`` interleaves one permutation). No dropout, no augmentation and
no BatchNorm (the conv stem's statistics are per process), so the only difference is the order
of floating-point sums in the all-reduce.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

COMMON = ["--task", "digits", "--model", "vit-tiny", "--epochs", "2", "--seed", "3", "--data.augment", "false",
          "--model.dropout", "0", "--model.depth", "1", "--model.dim", "32", "--model.stem_channels", "0", "--objective.label_smoothing", "0", "--train.device", "cpu", "--train.progress", "false"]


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc), children first seen first."""
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = [int(c) for c in (task / "children").read_text().split()]
        except OSError:  # gone meanwhile
            continue
        for child in children:
            out += [child, *_descendants(child)]
    return out


def _kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and everything below it. Not `os.killpg`: torchrun starts its workers in
    sessions of their own, so killing its process group left the worker training on (and the
    other node with it) until node 0's agent waited at its exit barrier."""
    import signal

    for target in [pid, *_descendants(pid)]:
        try:
            os.kill(target, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}


def _rendezvous_store():
    """The c10d rendezvous store, held by this test for the nodes' whole life. Each agent was its
    would-be host at a port picked free and then closed, and a port taken in between (by any
    outgoing connection) left both agents waiting out the join timeout: seen once in CI, 600 s."""
    from datetime import timedelta

    from torch.distributed import TCPStore

    return TCPStore("127.0.0.1", 0, is_master=True, multi_tenant=True, timeout=timedelta(seconds=60))


def _node_command(store, rank: int, *args: str) -> list[str]:
    """``torchrun`` for node ``rank`` of two: a client of ``store`` (``is_host=false``), its
    workers' store on loopback (``--local-addr``: no host-name lookup)."""
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(rank), "--nproc-per-node", "1",
            "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{store.port}", "--rdzv-id", f"attnlab-{store.port}",
            "--rdzv-conf", "is_host=false,join_timeout=120", "--local-addr", "127.0.0.1", "-m", "attnlab", *args]


def _start_nodes(store, *args: str) -> list[subprocess.Popen]:
    return [subprocess.Popen(_node_command(store, rank, *args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env=_env(), start_new_session=True) for rank in (0, 1)]


def _finish_nodes(nodes: list[subprocess.Popen], timeout: float = 600) -> list[str]:
    """Both nodes' logs once both exit 0. A node that fails, or a run past ``timeout``, kills both
    process trees and fails with both logs (a hang used to say only "timed out")."""
    import threading

    logs = ["", ""]
    readers = [threading.Thread(target=lambda i=i: logs.__setitem__(i, nodes[i].stdout.read()), daemon=True) for i in (0, 1)]
    for reader in readers:
        reader.start()
    deadline = time.time() + timeout
    while any(node.poll() is None for node in nodes) and time.time() < deadline:
        if any(node.poll() not in (None, 0) for node in nodes):
            deadline = min(deadline, time.time() + 60)  # the other node gets a minute to notice
        time.sleep(0.1)
    hung = [node for node in nodes if node.poll() is None]
    for node in hung:
        _kill_tree(node.pid)
        node.wait()
    for reader in readers:
        reader.join(timeout=10)
    report = "\n".join(f"--- node {rank}: exit {node.returncode}{' (killed: hung)' if node in hung else ''}\n{log[-3000:]}"
                       for rank, (node, log) in enumerate(zip(nodes, logs)))
    assert not hung and all(node.returncode == 0 for node in nodes), report
    return logs


def _two_nodes(out: Path, *extra: str) -> None:
    store = _rendezvous_store()
    _finish_nodes(_start_nodes(store, "train", *COMMON, "--train.batch_size", "16", "--out", str(out), *extra))


def _one_process(out: Path, *extra: str) -> None:
    done = subprocess.run([sys.executable, "-m", "attnlab", "train", *COMMON, "--train.batch_size", "32", "--out", str(out),
                           *extra], capture_output=True, text=True, env=_env(), timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]


def _losses(run: Path) -> list[float]:
    return [json.loads(line)["train_loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_loopback_nodes_match_one_process(tmp_path):
    _two_nodes(tmp_path / "nodes")
    _one_process(tmp_path / "single")
    nodes, single = load_file(tmp_path / "nodes" / "model.safetensors"), load_file(tmp_path / "single" / "model.safetensors")
    assert nodes.keys() == single.keys()
    for key, value in single.items():
        if key.endswith("k_proj.bias"):  # softmax ignores it: its gradient is rounding noise, which Adam scales up
            continue
        torch.testing.assert_close(nodes[key], value, rtol=1e-4, atol=2e-5, msg=key)
    assert _losses(tmp_path / "nodes") == pytest.approx(_losses(tmp_path / "single"), abs=1e-4)
    metrics = [json.loads((tmp_path / run / "metrics.json").read_text()) for run in ("nodes", "single")]
    assert metrics[0]["test"]["accuracy"] == pytest.approx(metrics[1]["test"]["accuracy"], abs=1e-9)


def _resume_one_process(run: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "attnlab", "train", "--resume", str(run), "--epochs", "2",
                           "--train.batch_size", "32"], capture_output=True, text=True, env=_env(), timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]


def _resume_two_nodes(run: Path, epochs: int = 2) -> None:
    store = _rendezvous_store()
    _finish_nodes(_start_nodes(store, "train", "--resume", str(run), "--epochs", str(epochs), "--train.batch_size", "16"))


@pytest.mark.slow
def test_a_run_resumes_at_another_world_size(tmp_path):
    """Epoch 1 at one world size, epoch 2 resumed at the other (the same global batch: 2 x 16 or
    1 x 32), against epoch 1 and 2 both in one process: the same weights and loss curve."""
    import shutil

    _one_process(tmp_path / "single", "--epochs", "1")
    _two_nodes(tmp_path / "nodes", "--epochs", "1")
    for name in ("reference", "to-nodes"):
        shutil.copytree(tmp_path / "single", tmp_path / name)
    _resume_one_process(tmp_path / "reference")  # 1 -> 1
    _resume_one_process(tmp_path / "nodes")  # 2 -> 1
    _resume_two_nodes(tmp_path / "to-nodes")  # 1 -> 2
    reference = load_file(tmp_path / "reference" / "model.safetensors")
    for run in ("nodes", "to-nodes"):
        weights = load_file(tmp_path / run / "model.safetensors")
        assert weights.keys() == reference.keys()
        for key, value in reference.items():
            if key.endswith("k_proj.bias"):  # softmax ignores it: its gradient is rounding noise
                continue
            torch.testing.assert_close(weights[key], value, rtol=1e-4, atol=2e-5, msg=f"{run}: {key}")
        losses = _losses(tmp_path / run)
        assert len(losses) == 2 and losses == pytest.approx(_losses(tmp_path / "reference"), abs=1e-4), run


@pytest.mark.slow
def test_a_node_that_disappears_stops_the_run_and_leaves_the_last_checkpoint(tmp_path):
    """Node 1 is killed (SIGKILL, as a lost machine) after the first checkpoint: node 0 exits with
    torchrun's error within a timeout (never hangs), the checkpoint on disk is whole, and the run
    resumes from it when both nodes are back (a mid-epoch checkpoint resumes at its own world size)."""
    from attnlab.models import create_model
    from attnlab.training.checkpoint import load_checkpoint

    out, store = tmp_path / "lost", _rendezvous_store()
    nodes = _start_nodes(store, "train", *COMMON, "--epochs", "200", "--train.batch_size", "16", "--train.checkpoint_every", "5",
                         "--out", str(out))
    try:
        deadline = time.time() + 180
        while not (out / "checkpoint" / "state.json").exists():
            assert time.time() < deadline and all(n.poll() is None for n in nodes), "no checkpoint appeared"
            time.sleep(0.05)
        time.sleep(0.5)
        _kill_tree(nodes[1].pid)  # torchrun and its worker: the whole node is gone
        log = nodes[0].communicate(timeout=180)[0]
    finally:
        for node in nodes:
            if node.poll() is None:
                _kill_tree(node.pid)
    assert nodes[0].returncode != 0, log[-3000:]
    assert "ChildFailedError" in log or "failed" in log.lower(), log[-3000:]
    model = create_model("vit-tiny", num_classes=10, image_size=(8, 8), in_channels=1, depth=1, dim=32, stem_channels=0,
                         dropout=0.0)
    state, _ = load_checkpoint(out / "checkpoint", model=model)  # whole: loads into the model
    assert state["step"] > 0
    _resume_two_nodes(out, epochs=state["epoch"] + 2)
    assert len(_losses(out)) == state["epoch"] + 2
