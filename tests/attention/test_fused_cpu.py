"""The CPU fused paths: banded sliding window and Toeplitz (ALiBi / T5) bias, vs the float64 reference."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from attnlab import autotune
from attnlab.attention import attention, flash_cpu, functional, positional
from attnlab.attention.banded import _fold, band_block_sizes, banded_attention
from attnlab.attention.toeplitz import toeplitz_attention
from attnlab.layers import RelativePositionBias
from tests.conftest import reference_attention

pytestmark = [
    pytest.mark.skipif(torch.get_default_device().type != "cpu", reason="CPU-only kernels"),
    pytest.mark.skipif(not flash_cpu.available(), reason="this torch lacks the CPU flash operators"),
]

TOL = {torch.float32: dict(atol=2e-5, rtol=1e-4), torch.bfloat16: dict(atol=4e-2, rtol=4e-2)}


def _inputs(b, h, g, n, m, d, dtype):
    q = torch.randn(b, h, n, d).to(dtype).requires_grad_()
    k = torch.randn(b, g, m, d).to(dtype).requires_grad_()
    v = torch.randn(b, g, m, d).to(dtype).requires_grad_()
    return q, k, v


def _check(out, ref, tensors, params, dtype):
    """Output and gradients (q, k, v, params) against the float64 reference's."""
    tol = TOL[dtype]
    torch.testing.assert_close(out.double(), ref, **tol)
    w = torch.randn_like(ref)
    got = torch.autograd.grad((out.double() * w).sum(), tensors + params)
    want = torch.autograd.grad((ref * w).sum(), tensors + params)
    for a, b in zip(got, want):
        a, b = a.double(), b.double()
        scale = b.abs().max().clamp(min=1.0)
        torch.testing.assert_close(a / scale, b / scale, **tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    "n, m, window, is_causal, h, g, block",
    [(97, 97, 7, False, 4, 4, None), (64, 150, 9, True, 4, 2, None), (257, 257, 40, False, 2, 1, 32),
     (300, 300, 64, True, 2, 2, None), (40, 40, 100, False, 2, 2, None), (33, 33, 0, False, 2, 2, 32),
     # block == window, edges, KV cache offsets, GQA
     (300, 300, 64, False, 4, 2, None), (130, 200, 32, False, 2, 1, None), (70, 70, 32, True, 2, 2, None),
     (50, 50, 64, False, 2, 2, None), (45, 300, 32, False, 2, 2, None), (45, 300, 32, True, 2, 1, None)],
)
def test_banded_matches_reference(n, m, window, is_causal, h, g, block, dtype):
    q, k, v = _inputs(2, h, g, n, m, 16, dtype)
    out = banded_attention(q, k, v, window=window, is_causal=is_causal, scale=0.25, block=block)
    ref, _ = reference_attention(q, k, v, window=window, is_causal=is_causal, scale=0.25)
    _check(out, ref, (q, k, v), (), dtype)


@pytest.mark.parametrize("by_keys", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    "n, m, window, is_causal, block, backward_block",
    # the backward cuts the rows (or the keys) into other bands than the forward: more, fewer, not dividing N
    [(257, 257, 40, False, 32, 48), (300, 300, 64, True, 64, 192), (130, 200, 64, False, 192, 64),
     (45, 300, 32, True, 32, 96), (300, 300, 0, False, 64, 128), (20, 20, 100, False, 32, 512)],
)
def test_banded_backward_reblocks_rows(n, m, window, is_causal, block, backward_block, dtype, by_keys):
    q, k, v = _inputs(2, 2, 2, n, m, 16, dtype)
    out = banded_attention(q, k, v, window=window, is_causal=is_causal, scale=0.25, block=block,
                           backward_block=backward_block, backward_by_keys=by_keys)
    ref, _ = reference_attention(q, k, v, window=window, is_causal=is_causal, scale=0.25)
    _check(out, ref, (q, k, v), (), dtype)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 300), extra=st.integers(0, 80), window=st.integers(0, 90), is_causal=st.booleans(),
       block=st.sampled_from([32, 48, 64, 96, 192]), backward_block=st.sampled_from([32, 64, 80, 192]),
       groups=st.sampled_from([(2, 2), (4, 2), (2, 1)]), dtype=st.sampled_from([torch.float32, torch.bfloat16]),
       by_keys=st.booleans())
def test_banded_random_shapes_and_blockings(n, extra, window, is_causal, block, backward_block, groups, dtype,
                                            by_keys):
    """Any N, KV cache, window and pair of blockings (padding rows in either pass; query or key bands
    in the backward) against the reference."""
    h, g = groups
    q, k, v = _inputs(1, h, g, n, n + extra, 8, dtype)
    out = banded_attention(q, k, v, window=window, is_causal=is_causal, scale=0.3, block=block,
                           backward_block=backward_block, backward_by_keys=by_keys)
    ref, _ = reference_attention(q, k, v, window=window, is_causal=is_causal, scale=0.3)
    _check(out, ref, (q, k, v), (), dtype)


def test_band_block_sizes_follow_the_kernel_tiles():
    assert band_block_sizes(256, torch.bfloat16) == (64, 192)
    assert band_block_sizes(256, torch.float32) == (64, 128)
    assert band_block_sizes(16, torch.bfloat16) == (32, 32)  # small windows keep bands narrow


def _bias(kind: str, h: int, is_causal: bool, max_distance: int):
    if kind == "alibi":
        return positional.alibi_bias(h), None
    module = RelativePositionBias(h, max_distance=max_distance, bidirectional=not is_causal)
    with torch.no_grad():
        module.embedding.weight.normal_()
    module64 = RelativePositionBias(h, max_distance=max_distance, bidirectional=not is_causal).double()
    module64.embedding.weight.data.copy_(module.embedding.weight.data)
    return module.bias_function(), module64


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kind", ["alibi", "t5"])
@pytest.mark.parametrize(
    "n, m, is_causal, h, g, max_distance",
    # (70, 300): a KV cache longer than the bias's varying band (every row has far-left keys)
    # (150, 160) and (600, 620): queries behind a short cache, forward split into far-left + row blocks
    [(100, 100, False, 4, 4, 16), (100, 100, True, 4, 2, 40), (70, 300, False, 4, 4, 16),
     (70, 300, True, 2, 1, 40), (260, 260, False, 2, 2, 24), (150, 160, False, 2, 2, 24), (600, 620, False, 2, 1, 32)],
)
def test_toeplitz_matches_reference(kind, n, m, is_causal, h, g, max_distance, dtype):
    fn, module64 = _bias(kind, h, is_causal, max_distance)
    q, k, v = _inputs(2, h, g, n, m, 16, dtype)
    out = toeplitz_attention(q, k, v, fn, scale=0.25, is_causal=is_causal, block=64)
    assert out is not None
    params = tuple(fn.tensors)
    ref_fn = fn if module64 is None else module64.bias_function()
    ref, _ = reference_attention(q, k, v, bias=ref_fn, is_causal=is_causal, scale=0.25)
    if module64 is None:
        _check(out, ref, (q, k, v), (), dtype)
        return
    # q, k, v and the learned table's gradients: compare against the float64 module's.
    w = torch.randn_like(ref)
    got = torch.autograd.grad((out.double() * w).sum(), (q, k, v) + params)
    want = torch.autograd.grad((ref * w).sum(), (q, k, v) + tuple(module64.bias_function().tensors))
    assert want[-1].abs().sum() > 0
    for a, b in zip(got, want):
        scale = b.abs().max().clamp(min=1.0) if a is not got[-1] else b.abs().max()
        torch.testing.assert_close(a.double() / scale, b.double() / scale, **TOL[dtype])
    torch.testing.assert_close(out.double(), ref, **TOL[dtype])


def test_toeplitz_declines_a_bias_varying_over_most_keys():
    fn, _ = _bias("t5", 2, False, 128)  # varies out to |rel| ~ 91 of only 120 keys
    q, k, v = _inputs(1, 2, 2, 120, 120, 8, torch.float32)
    assert toeplitz_attention(q, k, v, fn, scale=0.3, is_causal=False) is None
    out = attention(q, k, v, bias=fn)  # auto falls back and stays exact
    ref, _ = reference_attention(q, k, v, bias=fn)
    torch.testing.assert_close(out.double(), ref, atol=2e-5, rtol=1e-4)


def test_auto_uses_fused_paths_without_dense_tensors(monkeypatch):
    """auto: window -> banded, ALiBi / T5 -> Toeplitz, and never builds an (N, M) bias or mask.

    With the fixed thresholds (ATTNLAB_AUTOTUNE=0): measuring would time SDPA with a dense mask
    on a slice of the inputs once (test_routing.py covers that)."""
    monkeypatch.setenv(autotune.ENV_VAR, "0")

    def forbidden(*args, **kwargs):
        raise AssertionError("dense (N, M) tensor built")

    monkeypatch.setattr(functional, "_bias_tensor", forbidden)
    monkeypatch.setattr(functional, "_combined_mask", forbidden)
    n = 2048
    q, k, v = _inputs(1, 2, 2, n, n, 16, torch.float32)
    assert functional._pick_backend(q, k, v, n, n, None, 64) == "banded"
    assert functional._pick_backend(q, k, v, n, n, positional.alibi_bias(2), None) == "toeplitz"
    for kwargs in ({"window": 64}, {"bias": positional.alibi_bias(2), "is_causal": True},
                   {"bias": RelativePositionBias(2).bias_function()}):
        out = attention(q, k, v, **kwargs)
        out.sum().backward()
        assert torch.isfinite(out).all() and torch.isfinite(q.grad).all()
    # A padding mask or attention dropout is not expressible there: auto goes elsewhere.
    mask = torch.ones(1, 1, 1, n, dtype=torch.bool)
    assert functional._pick_backend(q, k, v, n, n, positional.alibi_bias(2), None, mask) != "toeplitz"
    assert functional._pick_backend(q, k, v, n, n, None, 64, None, 0.1) != "banded"


def test_alibi_with_dropout_trains_through_sdpa():
    q, k, v = _inputs(1, 2, 2, 64, 64, 8, torch.float32)
    out = toeplitz_attention(q, k, v, positional.alibi_bias(2), scale=0.3, is_causal=True, dropout_p=0.5)
    ref, _ = reference_attention(q, k, v, bias=positional.alibi_bias(2), is_causal=True, scale=0.3)
    assert not torch.allclose(out.double(), ref, atol=1e-3)  # dropout was applied
    out.sum().backward()
    assert torch.isfinite(q.grad).all()


@pytest.mark.parametrize("positional, window", [("alibi", None), ("relative", None), (None, 48)])
def test_attention_module_takes_the_fused_paths_exactly(positional, window, monkeypatch):
    """Through MultiHeadAttention (non-contiguous q/k/v views, N*M above auto's fixed threshold)."""
    from attnlab.layers import MultiHeadAttention

    monkeypatch.setenv(autotune.ENV_VAR, "0")  # the fixed thresholds: the fused paths, not a measured choice

    torch.manual_seed(0)
    layer = MultiHeadAttention(32, 4, positional=positional)
    x = torch.randn(2, 520, 32, requires_grad=True)
    out = layer(x, window=window, is_causal=positional == "alibi")
    ref_layer = MultiHeadAttention(32, 4, positional=positional, backend="math").double()
    ref_layer.load_state_dict(layer.state_dict())
    x64 = x.detach().double().requires_grad_()
    ref = ref_layer(x64, window=window, is_causal=positional == "alibi")
    torch.testing.assert_close(out.double(), ref, atol=2e-5, rtol=1e-4)
    w = torch.randn_like(ref)
    (out.double() * w).sum().backward()
    (ref * w).sum().backward()
    torch.testing.assert_close(x.grad.double(), x64.grad, atol=2e-5, rtol=1e-4)
    for (name, p), p64 in zip(layer.named_parameters(), ref_layer.parameters()):
        torch.testing.assert_close(p.grad.double(), p64.grad, atol=5e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_auto_trains_short_half_precision_sequences_in_fp32_math(dtype, monkeypatch):
    """Short bf16/fp16 training attention on CPU runs the fp32 math backend (SDPA's fused
    backward was several times slower there; the fixed threshold, ATTNLAB_AUTOTUNE=0); forward
    and gradients match the float64 reference."""
    monkeypatch.setenv(autotune.ENV_VAR, "0")
    q, k, v = _inputs(3, 4, 2, 17, 16, 32, dtype)
    mask = torch.rand(3, 1, 17, 16, generator=torch.Generator().manual_seed(1)) > 0.3
    mask[0, :, 2] = False  # one row with nothing to attend to
    assert functional._pick_backend(q, k, v, 17, 16, None, None, mask) == "math"
    with torch.no_grad():  # inference keeps SDPA's fused forward
        assert functional._pick_backend(q, k, v, 17, 16, None, None, mask) == "sdpa"
    assert functional._pick_backend(q.detach().float(), k.float(), v.float(), 17, 16, None, None, mask) == "sdpa"
    n = 128
    big = _inputs(1, 2, 2, n, n, 8, dtype)
    assert functional._pick_backend(*big, n, n, None, None) == "sdpa"

    out = attention(q, k, v, mask=mask)
    grad = torch.randn_like(out, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    (out.double() * grad).sum().backward()
    leaves = [t.detach().double().requires_grad_() for t in (q, k, v)]
    ref, _ = reference_attention(*leaves, mask=mask)
    (ref * grad).sum().backward()
    tol = {"atol": 2e-2, "rtol": 2e-2}
    torch.testing.assert_close(out.double(), ref, **tol)
    assert out[0, :, 2].abs().max() == 0
    for t, leaf in zip((q, k, v), leaves):
        torch.testing.assert_close(t.grad.double(), leaf.grad, **tol)


@pytest.mark.parametrize(
    "nb, width, block, m, first",
    [(4, 48, 16, 64, -16), (4, 48, 16, 40, -16), (3, 40, 16, 100, 20), (5, 24, 8, 30, -20), (2, 16, 16, 5, -40),
     (6, 80, 32, 150, -9)],
)
def test_fold_sums_band_columns_onto_their_keys(nb, width, block, m, first):
    """_fold against a plain loop: column c of band b adds to key first + b*block + c when it exists."""
    bands = torch.randn(3, nb, width, 2, dtype=torch.float64)
    want = torch.zeros(3, m, 2, dtype=torch.float64)
    for b in range(nb):
        for c in range(width):
            key = first + b * block + c
            if 0 <= key < m:
                want[:, key] += bands[:, b, c]
    got = _fold(bands, m, block, first)
    assert got.is_contiguous()
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # the kernel hands back band gradients as a strided view: same result
    strided = bands.transpose(1, 2).contiguous().transpose(1, 2)
    torch.testing.assert_close(_fold(strided, m, block, first), want, rtol=1e-12, atol=1e-12)
