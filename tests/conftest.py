"""Shared fixtures and the float64 reference every kernel is checked against."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

# Test this checkout's code even when another checkout is the one pip-installed (editable
# installs of several clones on one machine point at whichever was installed last).
_SRC = str(Path(__file__).resolve().parents[1] / "src")
sys.path.insert(0, _SRC)
os.environ["PYTHONPATH"] = os.pathsep.join([_SRC, *filter(None, [os.environ.get("PYTHONPATH")])])

import pytest  # noqa: E402
import torch  # noqa: E402

# ATTNLAB_TEST_DEVICE=cuda runs the kernel/layer tests with tensors created on that device
# (how the attention core is checked on a GPU; CI itself is CPU-only).
if os.environ.get("ATTNLAB_TEST_DEVICE"):
    torch.set_default_device(os.environ["ATTNLAB_TEST_DEVICE"])

DATA_DIR = Path(os.environ.get("ATTNLAB_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def reference_attention(q, k, v, *, mask=None, bias=None, is_causal=False, window=None, scale=None):
    """Plain-math attention in float64, written independently of attnlab.

    q (B, H, N, D), k/v (B, G, M, D); bias a tensor or a callable bias(h, i, j).
    Returns (out, weights) with zero rows where nothing may be attended.
    """
    q, k, v = q.double(), k.double(), v.double()
    b, h, n, d = q.shape
    g, m = k.shape[1], k.shape[2]
    k = k.repeat_interleave(h // g, dim=1)
    v = v.repeat_interleave(h // g, dim=1)
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    scores = torch.einsum("bhnd,bhmd->bhnm", q, k) * scale
    i = torch.arange(n)[:, None] + (m - n)
    j = torch.arange(m)[None, :]
    if bias is not None:
        if callable(bias) and not isinstance(bias, torch.Tensor):
            bias = bias(torch.arange(h)[:, None, None], i, j)
        scores = scores + bias.double()
    keep = torch.ones(n, m, dtype=torch.bool)
    if is_causal:
        keep &= j <= i
    if window is not None:
        keep &= (i - j).abs() <= window
    keep = keep.expand(b, h, n, m)
    if mask is not None:
        keep = keep & mask
    # Softmax over the kept keys of each row (max subtracted), rows with none kept all zero.
    # Whole tensors, not a loop over rows writing into a zero tensor: autograd copied the whole
    # (B, H, N, M) gradient once per row for those writes (10 s for one N=600 backward).
    masked = scores.masked_fill(~keep, float("-inf"))
    top = masked.amax(dim=-1, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))  # an empty row: nothing to subtract
    e = torch.exp(masked - top)  # 0 where not kept
    total = e.sum(dim=-1, keepdim=True)
    weights = torch.where(total > 0, e / total.clamp_min(torch.finfo(e.dtype).tiny), torch.zeros_like(e))
    return weights @ v, weights


@pytest.fixture
def data_dir() -> Path:
    if not DATA_DIR.exists():
        pytest.skip(f"shared data not found at {DATA_DIR} (set ATTNLAB_DATA)")
    return DATA_DIR


@pytest.fixture(autouse=True)
def _fresh_seed():
    """Fresh random inputs each run, but the seed is printed on failure so a case can be replayed."""
    seed = int.from_bytes(os.urandom(4), "little")
    torch.manual_seed(seed)
    print(f"torch seed {seed}")  # shown by pytest on failure
    yield seed


@pytest.fixture
def one_thread():
    """Run a test with one torch thread (tiny ops are faster so; several crawl on a shared machine)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# attnlab.autotune caches its route choices on disk: the tests (and the CLI subprocesses they
# start, which inherit the environment) use a fresh directory per session, so they never write
# the user's cache and never depend on a warm one.
import atexit  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

_AUTOTUNE_CACHE = tempfile.mkdtemp(prefix="attnlab-test-autotune-")
os.environ["ATTNLAB_CACHE_DIR"] = _AUTOTUNE_CACHE
atexit.register(shutil.rmtree, _AUTOTUNE_CACHE, ignore_errors=True)


@pytest.fixture
def autotune_cache(tmp_path, monkeypatch):
    """A fresh autotune cache directory and an empty in-process cache (never the user's real cache)."""
    from attnlab import autotune

    monkeypatch.setenv(autotune.CACHE_ENV_VAR, str(tmp_path))
    monkeypatch.delenv(autotune.ENV_VAR, raising=False)
    # Measurements count as quiet whatever else runs on this machine: a test of caching must not
    # see its entries re-timed because the machine was busy (tests of that rule patch this again).
    monkeypatch.setattr(autotune, "_others_cores", lambda before, after, wall: 0.0)
    autotune.clear_memory_cache()
    yield tmp_path
    autotune.clear_memory_cache()


def train_tiny_sasrec(folder: Path) -> Path:
    """A one-epoch SASRec run on 40 generated users (157 items) under ``folder``; returns the run directory."""
    from attnlab.cli import main

    lines = [f"{u} {i}" for u in range(1, 41) for i in range(1 + 3 * u % 150, 9 + 3 * u % 150)]
    (folder / "seq.txt").write_text("\n".join(lines) + "\n")
    run = folder / "sasrec"
    assert main(["train", "--task", "sasrec", "--data", str(folder / "seq.txt"), "--out", str(run), "--epochs", "1",
                 "--model.dim", "16", "--model.depth", "1", "--model.num_heads", "2", "--train.batch_size", "8",
                 "--train.progress", "false"]) == 0
    return run
