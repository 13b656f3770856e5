"""The banded kernel's block sizes are a measured choice (attnlab.autotune) that never changes results."""

from __future__ import annotations

import json

import pytest
import torch

from attnlab import autotune
from attnlab.attention import banded, flash_cpu
from attnlab.attention.banded import band_block_sizes, banded_attention

pytestmark = [
    pytest.mark.skipif(torch.get_default_device().type != "cpu", reason="CPU-only kernels"),
    pytest.mark.skipif(not flash_cpu.available(), reason="this torch lacks the CPU flash operators"),
]


def _order(name: str) -> tuple[bool, int]:
    """Query-band names ("64") before key-band names ("k128"), each by size."""
    return name.startswith("k"), int(name.lstrip("k"))


def _run(q, k, v, g):
    out = banded_attention(q, k, v, window=48, is_causal=False, scale=0.25)
    return (out, *torch.autograd.grad(out, (q, k, v), g))


def test_block_sizes_are_measured_once_and_stored(autotune_cache, monkeypatch):
    calls = []
    measure = autotune._measure
    monkeypatch.setattr(autotune, "_measure", lambda cands, *a: calls.append(sorted(cands, key=_order)) or measure(cands, *a))
    q, k, v = (torch.randn(1, 2, 300, 16, requires_grad=True) for _ in range(3))
    g = torch.randn(1, 2, 300, 16)
    _run(q, k, v, g)
    fwd0, bwd0 = band_block_sizes(48, torch.float32)
    # window 48: 64-row bands by default; candidates up to twice that (the backward never below 64),
    # and for the backward 128-key bands
    assert calls == [["32", "64", "128"], ["64", "128", "k128"]] and (fwd0, bwd0) == (64, 64)
    _run(q, k, v, g)
    with torch.no_grad():
        banded_attention(q, k, v, window=48, is_causal=False, scale=0.25)
    assert len(calls) == 2  # the same shape class: nothing measured again, with or without grad
    choices = json.loads(autotune.cache_file().read_text())["choices"]
    assert sorted(key.split("|")[0] for key in choices) == ["banded.bwd_block", "banded.fwd_block"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_block_choice_gives_the_same_result(autotune_cache, dtype):
    """Outputs and gradients agree across the measured candidates (forced in turn) and with tuning off."""
    q, k, v = (torch.randn(2, 2, 257, 16).to(dtype).requires_grad_() for _ in range(3))
    g = torch.randn(2, 2, 257, 16).to(dtype)
    with autotune.force({"banded.fwd_block": "64", "banded.bwd_block": "64"}):
        want = [t.double() for t in _run(q, k, v, g)]
    tol = dict(atol=2e-5, rtol=1e-4) if dtype == torch.float32 else dict(atol=4e-2, rtol=4e-2)
    for fwd, bwd in (("32", "128"), ("128", "64"), ("32", "64"), ("64", "k128"), ("32", "k128")):
        with autotune.force({"banded.fwd_block": fwd, "banded.bwd_block": bwd}):
            for got, ref in zip(_run(q, k, v, g), want):
                torch.testing.assert_close(got.double(), ref, **tol)
    for got, ref in zip(_run(q, k, v, g), want):  # as measured here
        torch.testing.assert_close(got.double(), ref, **tol)


def test_autotune_off_keeps_the_default_blocks(autotune_cache, monkeypatch):
    monkeypatch.setenv(autotune.ENV_VAR, "0")
    seen = []
    apply = banded._BandedAttention.apply
    monkeypatch.setattr(banded._BandedAttention, "apply", lambda *a: seen.append(a[-3:]) or apply(*a))
    q, k, v = (torch.randn(1, 1, 300, 16, requires_grad=True) for _ in range(3))
    banded_attention(q, k, v, window=256, is_causal=True, scale=0.25)
    assert seen == [(*band_block_sizes(256, torch.float32), False)] and not list(autotune_cache.iterdir())
