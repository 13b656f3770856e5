"""Linear attention (Katharopoulos 2020) against an O(N^2) float64 reference."""

from __future__ import annotations

import re

import pytest
import torch

from attnlab.layers import linear_attention as la_mod
from attnlab.layers.linear_attention import LinearAttention, linear_attention

F32 = dict(rtol=1e-4, atol=1e-5)
F64 = dict(rtol=1e-10, atol=1e-12)


def _phi(x: torch.Tensor) -> torch.Tensor:
    # elu(x) + 1 written out: x + 1 for x > 0, exp(x) otherwise.
    return torch.where(x > 0, x + 1.0, torch.exp(torch.clamp(x, max=0.0)))


def _reference(q, k, v, *, is_causal=False, key_padding_mask=None, eps=1e-6):
    """Quadratic form: weights phi(q) phi(k)^T, masked, normalised by their row sum."""
    q, k, v = q.double(), k.double(), v.double()
    weights = torch.einsum("bhnd,bhmd->bhnm", _phi(q), _phi(k))  # (B, H, N, M)
    if key_padding_mask is not None:
        weights = weights * key_padding_mask[:, None, None, :].double()
        v = torch.where(key_padding_mask[:, None, :, None], v, torch.zeros_like(v))
    if is_causal:
        n, m = weights.shape[-2:]
        weights = weights * torch.ones(n, m, dtype=torch.float64).tril()
    num = torch.einsum("bhnm,bhme->bhne", weights, v)
    return num / (weights.sum(-1, keepdim=True) + eps)


def _qkv(B=2, H=3, N=5, M=7, D=4, E=6, dtype=torch.float32, grad=False):
    q = torch.randn(B, H, N, D, dtype=dtype, requires_grad=grad)
    k = torch.randn(B, H, M, D, dtype=dtype, requires_grad=grad)
    v = torch.randn(B, H, M, E, dtype=dtype, requires_grad=grad)
    return q, k, v


def test_non_causal_matches_quadratic_reference():
    q, k, v = _qkv(N=5, M=7, D=4, E=6)
    out = linear_attention(q, k, v)
    assert out.shape == (2, 3, 5, 6) and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), _reference(q, k, v), **F32)


def test_non_causal_float64_is_tight():
    q, k, v = _qkv(dtype=torch.float64)
    torch.testing.assert_close(linear_attention(q, k, v), _reference(q, k, v), **F64)


def test_output_is_not_softmax_attention():
    # Guards against a reference that would pass for any normalised attention.
    q, k, v = _qkv(dtype=torch.float64)
    softmax_out = torch.softmax(q @ k.transpose(-2, -1) / 2.0, dim=-1) @ v
    assert (linear_attention(q, k, v) - softmax_out).abs().max() > 1e-3


@pytest.mark.parametrize("N", [1, 5, 70])  # 70 crosses the default 64-query block
def test_causal_matches_quadratic_reference(N):
    q, k, v = _qkv(B=1, H=2, N=N, M=N, D=4, E=3)
    out = linear_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(out.double(), _reference(q, k, v, is_causal=True), **F32)


@pytest.mark.parametrize("chunk", [1, 3, 4, 100])
def test_causal_block_size_does_not_change_result(monkeypatch, chunk):
    monkeypatch.setattr(la_mod, "_CAUSAL_CHUNK_SIZE", chunk)
    q, k, v = _qkv(N=10, M=10, dtype=torch.float64)
    out = linear_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(out, _reference(q, k, v, is_causal=True), **F64)


def test_causal_first_query_sees_only_first_key():
    q, k, v = _qkv(N=6, M=6, dtype=torch.float64)
    out = linear_attention(q, k, v, is_causal=True)
    # With one key the normalised weight is 1 (up to eps), so out_0 = v_0.
    torch.testing.assert_close(out[:, :, 0], v[:, :, 0], rtol=1e-5, atol=1e-6)


def test_padding_mask_equals_dropping_the_keys():
    q, k, v = _qkv(B=2, N=4, M=6, dtype=torch.float64)
    lengths = [6, 3]
    mask = torch.arange(6)[None, :] < torch.tensor(lengths)[:, None]  # (B, M)
    out = linear_attention(q, k, v, key_padding_mask=mask)
    for b, length in enumerate(lengths):
        expected = _reference(q[b : b + 1], k[b : b + 1, :, :length], v[b : b + 1, :, :length])
        torch.testing.assert_close(out[b : b + 1], expected, **F64)
    torch.testing.assert_close(out, _reference(q, k, v, key_padding_mask=mask), **F64)


def test_padded_positions_cannot_leak_even_if_non_finite():
    q, k, v = _qkv(B=2, N=5, M=5)
    mask = torch.tensor([[True, True, True, False, False], [True, False, True, True, False]])
    clean = linear_attention(q, k, v, key_padding_mask=mask)
    k2, v2 = k.clone(), v.clone()
    k2[~mask[:, None, :, None].expand_as(k2)] = 1e4
    v2[~mask[:, None, :, None].expand_as(v2)] = float("inf")
    for causal in (False, True):
        dirty = linear_attention(q, k2, v2, key_padding_mask=mask, is_causal=causal)
        ref = _reference(q, k, v, key_padding_mask=mask, is_causal=causal)
        assert torch.isfinite(dirty).all()
        torch.testing.assert_close(dirty.double(), ref, **F32)
    torch.testing.assert_close(clean.double(), _reference(q, k, v, key_padding_mask=mask), **F32)


def test_query_with_no_keys_outputs_zeros():
    q, k, v = _qkv(B=2, N=4, M=4)
    mask = torch.tensor([[False] * 4, [False, True, True, True]])
    out = linear_attention(q, k, v, key_padding_mask=mask)
    assert torch.isfinite(out).all()
    assert torch.equal(out[0], torch.zeros_like(out[0]))
    causal = linear_attention(q, k, v, key_padding_mask=mask, is_causal=True)
    assert torch.isfinite(causal).all()
    # Batch 1, query 0 can only see key 0, which is padding.
    assert torch.equal(causal[1, :, 0], torch.zeros_like(causal[1, :, 0]))
    assert causal[1, :, 1].abs().sum() > 0


def test_reduced_precision_input_keeps_dtype():
    q, k, v = _qkv()
    out = linear_attention(q.bfloat16(), k.bfloat16(), v.bfloat16())
    assert out.dtype == torch.bfloat16
    ref = _reference(q.bfloat16(), k.bfloat16(), v.bfloat16())
    torch.testing.assert_close(out.double(), ref, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("causal", [False, True])
def test_gradcheck_float64(monkeypatch, causal):
    monkeypatch.setattr(la_mod, "_CAUSAL_CHUNK_SIZE", 2)  # exercise the carried state
    N = 4 if causal else 3
    q, k, v = _qkv(B=1, H=1, N=N, M=4, D=2, E=2, dtype=torch.float64, grad=True)
    mask = torch.tensor([[True, True, False, True]])
    assert torch.autograd.gradcheck(
        lambda a, b, c: linear_attention(a, b, c, is_causal=causal, key_padding_mask=mask),
        (q, k, v),
    )


@pytest.mark.parametrize("causal", [False, True])
def test_gradients_match_reference(causal):
    q, k, v = _qkv(B=2, H=2, N=6, M=6, D=3, E=4, dtype=torch.float64, grad=True)
    mask = torch.tensor([[True] * 6, [True, True, True, True, False, False]])
    cotangent = torch.randn(2, 2, 6, 4, dtype=torch.float64)
    out = linear_attention(q, k, v, is_causal=causal, key_padding_mask=mask)
    grads = torch.autograd.grad(out, (q, k, v), cotangent)
    ref = _reference(q, k, v, is_causal=causal, key_padding_mask=mask)
    ref_grads = torch.autograd.grad(ref, (q, k, v), cotangent)
    for g, rg in zip(grads, ref_grads):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, rg, rtol=1e-8, atol=1e-10)


def _module_reference(layer, x, context=None, mask=None, is_causal=False):
    """Projections written out with the layer's own parameters, in float64."""
    p = {name: t.detach().double() for name, t in layer.named_parameters()}
    x = x.double()
    context = x if context is None else context.double()
    B, N, C = x.shape
    M = context.shape[1]
    H, D = layer.num_heads, C // layer.num_heads

    def proj(name, t, L):
        y = t @ p[f"{name}.weight"].T + p[f"{name}.bias"]
        return y.reshape(B, L, H, D).permute(0, 2, 1, 3)

    q, k, v = proj("q_proj", x, N), proj("k_proj", context, M), proj("v_proj", context, M)
    out = _reference(q, k, v, is_causal=is_causal, key_padding_mask=mask)
    out = out.permute(0, 2, 1, 3).reshape(B, N, C)
    return out @ p["out_proj.weight"].T + p["out_proj.bias"]


def test_module_self_attention_matches_reference():
    layer = LinearAttention(8, 2).eval()
    x = torch.randn(2, 5, 8)
    torch.testing.assert_close(layer(x).double(), _module_reference(layer, x), **F32)


def test_module_cross_attention_with_mask_matches_reference():
    layer = LinearAttention(12, 3).eval()
    x, ctx = torch.randn(2, 4, 12), torch.randn(2, 7, 12)
    mask = torch.arange(7)[None, :] < torch.tensor([[7], [2]])
    out = layer(x, ctx, mask=mask)
    assert out.shape == (2, 4, 12)
    torch.testing.assert_close(out.double(), _module_reference(layer, x, ctx, mask), **F32)


def test_module_causal_matches_reference_and_ignores_future():
    layer = LinearAttention(8, 4).eval()
    x = torch.randn(1, 6, 8)
    out = layer(x, is_causal=True)
    torch.testing.assert_close(
        out.double(), _module_reference(layer, x, is_causal=True), **F32
    )
    x2 = x.clone()
    x2[:, 4:] = torch.randn(1, 2, 8)
    torch.testing.assert_close(layer(x2, is_causal=True)[:, :4], out[:, :4])


def test_module_without_qkv_bias_and_backward():
    layer = LinearAttention(8, 2, qkv_bias=False, dropout=0.1)
    assert layer.q_proj.bias is None and layer.out_proj.bias is not None
    x = torch.randn(2, 3, 8, requires_grad=True)
    layer(x).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_bad_shapes_raise_with_shapes_in_message():
    q, k, v = _qkv(N=5, M=7)
    with pytest.raises(ValueError, match=re.escape("(2, 3, 5)")):
        linear_attention(q[..., 0], k, v)
    with pytest.raises(ValueError, match=re.escape("k (2, 3, 7, 3)")):
        linear_attention(q, k[..., :3], v)
    with pytest.raises(ValueError, match=re.escape("v (2, 3, 6, 6)")):
        linear_attention(q, k, v[:, :, :6])
    with pytest.raises(ValueError, match="N == M"):
        linear_attention(q, k, v, is_causal=True)
    with pytest.raises(ValueError, match=re.escape("(2, 7)")):
        linear_attention(q, k, v, key_padding_mask=torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        linear_attention(q, k, v, key_padding_mask=torch.ones(2, 7))


def test_module_bad_input_raises():
    with pytest.raises(ValueError, match="num_heads"):
        LinearAttention(10, 3)
    layer = LinearAttention(8, 2)
    with pytest.raises(ValueError, match=re.escape("expects x of shape (B, L, 8), got (2, 5, 6)")):
        layer(torch.randn(2, 5, 6))
    with pytest.raises(ValueError, match=re.escape("got (5, 8)")):
        layer(torch.randn(5, 8))
    with pytest.raises(ValueError, match=re.escape("(3, 4, 8)")):
        layer(torch.randn(2, 5, 8), torch.randn(3, 4, 8))
