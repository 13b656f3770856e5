"""The block-wise kernel: tiling edge cases, skipped tiles, bias gradients."""

from __future__ import annotations

import math
import time

import pytest
import torch

from attnlab.attention import attention, positional
from attnlab.attention.chunked import chunked_attention
from attnlab.attention.masks import block_is_empty, structure_mask
from attnlab.layers import RelativePositionBias
from tests.conftest import reference_attention


@pytest.mark.parametrize("block", [(1, 2), (3, 5), (7, 64), (64, 2)])
@pytest.mark.parametrize("is_causal, window", [(False, None), (True, None), (False, 3), (True, 4)])
def test_any_tiling_is_exact(block, is_causal, window):
    q = torch.randn(1, 2, 11, 8, dtype=torch.float64, requires_grad=True)
    k = torch.randn(1, 1, 13, 8, dtype=torch.float64, requires_grad=True)
    v = torch.randn(1, 1, 13, 5, dtype=torch.float64, requires_grad=True)
    out = chunked_attention(
        q, k, v, mask=None, bias=None, bias_fn=None, scale=1 / math.sqrt(8), is_causal=is_causal,
        window=window, block_q=block[0], block_k=block[1],
    )
    ref, _ = reference_attention(q, k, v, is_causal=is_causal, window=window)
    torch.testing.assert_close(out, ref)
    w = torch.randn_like(ref)
    for got, want in zip(torch.autograd.grad((out * w).sum(), (q, k, v)), torch.autograd.grad((ref * w).sum(), (q, k, v))):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("is_causal, window", [(False, None), (True, 2)])
def test_chunked_gradcheck(is_causal, window):
    q = torch.randn(1, 2, 6, 4, dtype=torch.float64, requires_grad=True)
    k = torch.randn(1, 1, 7, 4, dtype=torch.float64, requires_grad=True)
    v = torch.randn(1, 1, 7, 3, dtype=torch.float64, requires_grad=True)
    block = (2, 3)
    assert torch.autograd.gradcheck(
        lambda a, b_, c: chunked_attention(
            a, b_, c, mask=None, bias=None, bias_fn=None, scale=0.3, is_causal=is_causal, window=window,
            block_q=block[0], block_k=block[1],
        ),
        (q, k, v),
    )


def test_block_skipping_agrees_with_dense_structure():
    n, m = 37, 45
    for is_causal in (False, True):
        for window in (None, 0, 2, 9):
            full = structure_mask(n, m, is_causal=is_causal, window=window)
            for i0 in range(0, n, 6):
                for j0 in range(0, m, 7):
                    i1, j1 = min(i0 + 6, n), min(j0 + 7, m)
                    empty = block_is_empty(n, m, is_causal=is_causal, window=window, query_start=i0, query_end=i1, key_start=j0, key_end=j1)
                    if full is None:
                        assert not empty
                    else:
                        assert empty == (not bool(full[i0:i1, j0:j1].any()))


def test_window_skips_most_tiles(monkeypatch):
    from attnlab.attention import chunked as chunked_mod

    calls = {"tiles": 0}
    original = chunked_mod._TileScores.__call__

    def counting(self, *args):
        calls["tiles"] += 1
        return original(self, *args)

    monkeypatch.setattr(chunked_mod._TileScores, "__call__", counting)
    q = torch.randn(1, 1, 1024, 8)
    chunked_attention(q, q, q, mask=None, bias=None, bias_fn=None, scale=1.0, is_causal=False, window=32, block_q=64, block_k=64)
    # 16 query blocks; each touches at most 3 key blocks out of 16.
    assert calls["tiles"] <= 16 * 3
    assert calls["tiles"] >= 16


def test_tensor_bias_and_relative_bias_gradients_match_reference():
    h, n = 3, 17
    q = torch.randn(2, h, n, 8, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, h, n, 8, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, h, n, 8, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(1, h, n, 1, dtype=torch.float64, requires_grad=True)  # broadcast over keys
    bias2 = torch.randn(1, h, 1, n, dtype=torch.float64, requires_grad=True)
    module = RelativePositionBias(h, num_buckets=8, max_distance=8).double()
    weights = torch.randn(2, h, n, 8, dtype=torch.float64)
    for b in (bias, bias2):
        out = attention(q, k, v, bias=b, backend="chunked")
        ref, _ = reference_attention(q, k, v, bias=b)
        (g_out,) = torch.autograd.grad((out * weights).sum(), b)
        (g_ref,) = torch.autograd.grad((ref * weights).sum(), b)
        torch.testing.assert_close(g_out, g_ref)
    fn = module.bias_function()
    out = attention(q, k, v, bias=fn, backend="chunked")
    (g_out,) = torch.autograd.grad((out * weights).sum(), module.embedding.weight)
    ref = attention(q, k, v, bias=module(n, n), backend="math")
    (g_ref,) = torch.autograd.grad((ref * weights).sum(), module.embedding.weight)
    torch.testing.assert_close(g_out, g_ref)
    assert g_out.abs().sum() > 0


def test_alibi_no_dense_bias_needed_for_long_sequences(monkeypatch):
    # Without the fused CPU path (a torch build lacking its flash operators), "auto" sends a
    # callable bias whose dense form is too big to the chunked kernel.
    from attnlab.attention import functional, routing

    monkeypatch.setattr(routing, "toeplitz_applicable", lambda *a: False)
    monkeypatch.setattr(routing, "_CPU_DENSE_LIMIT_BYTES", 1024)
    monkeypatch.setattr(routing, "_CUDA_DENSE_LIMIT_BYTES", 1024)
    calls = []
    monkeypatch.setattr(functional, "chunked_attention", lambda *a, **k: calls.append(1) or chunked_attention(*a, **k))
    q = torch.randn(1, 2, 1024, 16)
    out = attention(q, q, q, bias=positional.alibi_bias(2), is_causal=True)
    assert calls == [1]
    ref = attention(q, q, q, bias=positional.alibi_bias(2), is_causal=True, backend="sdpa")
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)


# --- the tile size is a measured choice (attnlab.autotune family chunked.block) ----------------

def _t5_inputs(n: int):
    module = RelativePositionBias(2)
    with torch.no_grad():
        module.embedding.weight.normal_(0.0, 0.5)
    q = torch.randn(1, 2, n, 8, requires_grad=True)
    k, v = (torch.randn(1, 1, n + 5, 8, requires_grad=True) for _ in range(2))
    mask = torch.rand(1, 1, n, n + 5) > 0.2
    return q, k, v, mask, module


def test_every_measured_tiling_matches_float64(autotune_cache):
    """Outputs and gradients (q, k, v, a learned bias table) agree with float64 whichever tile is forced."""
    from attnlab import autotune
    from attnlab.attention import chunked

    n = 300
    q, k, v, mask, module = _t5_inputs(n)
    names = chunked._block_candidates(n, n + 5, None)
    assert list(names) == ["512", "256"]  # the default first, then half (double = one tile, as the default)
    fn = module.bias_function()
    ref, _ = reference_attention(q, k, v, mask=mask, bias=fn, is_causal=True)
    w = torch.randn_like(ref)
    inputs = (q, k, v, module.embedding.weight)
    want = torch.autograd.grad((ref * w).sum(), inputs)
    for name in [*names, None]:  # each candidate forced, then as measured here
        with autotune.force({"chunked.block": name} if name else {}):
            out = attention(q, k, v, mask=mask, bias=fn, is_causal=True, backend="chunked")
        torch.testing.assert_close(out.double(), ref, atol=2e-5, rtol=1e-4)
        for got, exp in zip(torch.autograd.grad((out.double() * w).sum(), inputs), want):
            torch.testing.assert_close(got.double(), exp.double(), atol=5e-5, rtol=1e-4)


def test_the_faster_tiling_is_chosen_on_a_synthetic_cost(autotune_cache, monkeypatch):
    from attnlab import autotune
    from attnlab.attention import chunked

    blocks = []
    apply = chunked._ChunkedAttention.apply
    monkeypatch.setattr(chunked._ChunkedAttention, "apply", lambda *a: blocks.append(a[5].block_q) or apply(*a))
    measure = autotune._measure
    q, k, v, mask, _ = _t5_inputs(200)
    assert list(chunked._block_candidates(200, 205, 40)) == ["64", "128"]  # a window of 40: 64-row tiles, or 128
    for fast, size in (("128", 128), ("64", 64)):
        def synthetic(cands, *args, fast=fast):
            costs = {name: (lambda c=6e-4 if name == fast else 1.8e-3: _spin(c)) for name in cands}
            return measure(costs, *args)

        monkeypatch.setattr(autotune, "_measure", synthetic)
        autotune.clear_memory_cache()
        for f in autotune_cache.glob("autotune-*.json"):
            f.unlink()
        chunked_attention(q, k, v, mask=mask, bias=None, bias_fn=None, scale=0.3, is_causal=False, window=40)
        assert blocks[-1] == size


def test_autotune_off_keeps_the_default_tiles(autotune_cache, monkeypatch):
    from attnlab import autotune
    from attnlab.attention import chunked
    from attnlab.attention.chunked import default_block_sizes

    monkeypatch.setenv(autotune.ENV_VAR, "0")
    monkeypatch.setattr(autotune, "_measure", lambda *a: pytest.fail("timed with autotuning off"))
    specs = []
    apply = chunked._ChunkedAttention.apply
    monkeypatch.setattr(chunked._ChunkedAttention, "apply", lambda *a: specs.append(a[5]) or apply(*a))
    q, k, v, mask, module = _t5_inputs(300)
    for window in (None, 40):
        chunked_attention(q, k, v, mask=mask, bias=None, bias_fn=module.bias_function(), scale=0.3,
                          is_causal=True, window=window)
        assert (specs[-1].block_q, specs[-1].block_k) == default_block_sizes(300, 305, window)
    assert not list(autotune_cache.glob("autotune-*.json"))


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
