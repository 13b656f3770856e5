"""Attention blocks for (B, C, H, W) feature maps against float64 hand-written formulas."""

from __future__ import annotations

import math
import re

import pytest
import torch

from attnlab.layers.conv_attention import (
    CBAM,
    ChannelAttention,
    NonLocalBlock2d,
    SpatialAttention,
    SqueezeExcite,
)

F32 = dict(rtol=1e-4, atol=1e-5)


def _params(module):
    return {name: t.detach().double() for name, t in module.named_parameters()}


def _conv1x1(x, weight, bias):
    # (B, Cin, H, W) x (Cout, Cin, 1, 1) -> (B, Cout, H, W)
    return torch.einsum("oc,bchw->bohw", weight[:, :, 0, 0], x) + bias[None, :, None, None]


def _sigmoid(x):
    return 1.0 / (1.0 + torch.exp(-x))


def _softmax_rows(s):
    e = torch.exp(s - s.max(dim=-1, keepdim=True).values)
    return e / e.sum(dim=-1, keepdim=True)


def _non_local_reference(block, x):
    """Per-head loops: returns y (B, C, H, W) and weights (B, heads, HW, HW) in float64."""
    p = _params(block)
    x = x.double()
    B, C, H, W = x.shape
    heads, D = block.num_heads, block.inner_channels // block.num_heads
    q, k, v = (
        _conv1x1(x, p[f"{n}.weight"], p[f"{n}.bias"]).reshape(B, -1, H * W)
        for n in ("q_proj", "k_proj", "v_proj")
    )  # each (B, inner, HW)
    weights = torch.zeros(B, heads, H * W, H * W, dtype=torch.float64)
    mixed = torch.zeros(B, block.inner_channels, H * W, dtype=torch.float64)
    for b in range(B):
        for h in range(heads):
            rows = slice(h * D, (h + 1) * D)
            scores = q[b, rows].T @ k[b, rows] / math.sqrt(D)  # (HW, HW)
            weights[b, h] = _softmax_rows(scores)
            mixed[b, rows] = v[b, rows] @ weights[b, h].T  # (D, HW)
    out = _conv1x1(mixed.reshape(B, -1, H, W), p["out_proj.weight"], p["out_proj.bias"])
    return x + out, weights


@pytest.mark.parametrize("num_heads,inner", [(1, 4), (2, 4), (3, 6)])
def test_non_local_weights_and_output_match_reference(num_heads, inner):
    block = NonLocalBlock2d(5, inner_channels=inner, num_heads=num_heads, zero_init=False)
    x = torch.randn(2, 5, 3, 4)
    y, weights = block(x, return_weights=True)
    ref_y, ref_w = _non_local_reference(block, x)
    assert weights.shape == (2, num_heads, 12, 12)
    torch.testing.assert_close(weights.double(), ref_w, **F32)
    torch.testing.assert_close(y.double(), ref_y, **F32)
    # The fused SDPA path must agree with the explicit-weights path.
    torch.testing.assert_close(block(x).double(), ref_y, **F32)


def test_non_local_default_inner_channels_is_half():
    block = NonLocalBlock2d(8)
    assert block.inner_channels == 4 and block.head_dim == 4


def test_non_local_is_identity_at_init_and_still_learns():
    block = NonLocalBlock2d(6, num_heads=3)
    x = torch.randn(2, 6, 4, 4)
    y, weights = block(x, return_weights=True)
    assert torch.equal(y, x) and torch.equal(block(x), x)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, 16))
    y.square().sum().backward()
    assert block.out_proj.weight.grad.abs().sum() > 0
    # Without zero init the block is not the identity, so the check above discriminates.
    other = NonLocalBlock2d(6, num_heads=3, zero_init=False)
    assert (other(x) - x).abs().max() > 1e-3


def test_non_local_gradcheck_float64():
    block = NonLocalBlock2d(2, inner_channels=2, num_heads=2, zero_init=False).double()
    x = torch.randn(1, 2, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: block(t), (x,))
    assert torch.autograd.gradcheck(lambda t: block(t, return_weights=True)[1], (x,))


def test_squeeze_excite_matches_formula():
    se = SqueezeExcite(16, reduction=4, min_hidden=2)
    assert se.fc1.out_features == 4
    x = torch.randn(3, 16, 5, 2)
    p = _params(se)
    xd = x.double()
    s = xd.mean(dim=(2, 3))
    hidden = torch.clamp(s @ p["fc1.weight"].T + p["fc1.bias"], min=0.0)
    gate = _sigmoid(hidden @ p["fc2.weight"].T + p["fc2.bias"])
    torch.testing.assert_close(se(x).double(), xd * gate[:, :, None, None], **F32)


def test_squeeze_excite_min_hidden_floor():
    assert SqueezeExcite(16).fc1.out_features == 8  # 16 // 16 = 1, floored to 8
    assert SqueezeExcite(256).fc1.out_features == 16


def _channel_gate(p, prefix, x):
    def mlp(t):
        hidden = torch.clamp(t @ p[f"{prefix}fc1.weight"].T + p[f"{prefix}fc1.bias"], min=0.0)
        return hidden @ p[f"{prefix}fc2.weight"].T + p[f"{prefix}fc2.bias"]

    avg = x.mean(dim=(2, 3))
    mx = x.reshape(x.shape[0], x.shape[1], -1).max(dim=-1).values
    return _sigmoid(mlp(avg) + mlp(mx))[:, :, None, None]


def _spatial_map(p, prefix, x, kernel_size):
    """Cross-correlation with zero padding, written as a loop over kernel offsets."""
    B, _, H, W = x.shape
    pad = kernel_size // 2
    pooled = torch.stack([x.mean(dim=1), x.max(dim=1).values], dim=1)  # (B, 2, H, W)
    padded = torch.zeros(B, 2, H + 2 * pad, W + 2 * pad, dtype=torch.float64)
    padded[:, :, pad : pad + H, pad : pad + W] = pooled
    weight, bias = p[f"{prefix}conv.weight"], p[f"{prefix}conv.bias"]
    acc = torch.full((B, H, W), float(bias[0]), dtype=torch.float64)
    for c in range(2):
        for i in range(kernel_size):
            for j in range(kernel_size):
                acc = acc + weight[0, c, i, j] * padded[:, c, i : i + H, j : j + W]
    return _sigmoid(acc)[:, None]  # (B, 1, H, W)


def test_channel_and_spatial_attention_match_formulas():
    ca = ChannelAttention(8, reduction=4)
    sa = SpatialAttention(kernel_size=3)
    x = torch.randn(2, 8, 4, 5)
    y, gate = ca(x, return_weights=True)
    ref_gate = _channel_gate(_params(ca), "", x.double())
    torch.testing.assert_close(gate.double(), ref_gate, **F32)
    torch.testing.assert_close(y.double(), x.double() * ref_gate, **F32)
    y, spatial = sa(x, return_weights=True)
    ref_map = _spatial_map(_params(sa), "", x.double(), 3)
    torch.testing.assert_close(spatial.double(), ref_map, **F32)
    torch.testing.assert_close(sa(x).double(), x.double() * ref_map, **F32)


def test_cbam_is_channel_then_spatial():
    cbam = CBAM(8, reduction=2, kernel_size=5)
    x = torch.randn(2, 8, 6, 5)
    y, spatial = cbam(x, return_weights=True)
    assert spatial.shape == (2, 1, 6, 5)
    p = _params(cbam)
    xd = x.double()
    x1 = xd * _channel_gate(p, "channel_attention.", xd)
    ref_map = _spatial_map(p, "spatial_attention.", x1, 5)
    torch.testing.assert_close(spatial.double(), ref_map, **F32)
    torch.testing.assert_close(y.double(), x1 * ref_map, **F32)
    torch.testing.assert_close(cbam(x), y)


def test_cbam_backward_is_finite():
    cbam = CBAM(16)
    x = torch.randn(2, 16, 7, 7, requires_grad=True)
    cbam(x).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "module,expected",
    [
        (NonLocalBlock2d(8), "(B, 8, H, W)"),
        (SqueezeExcite(8), "(B, 8, H, W)"),
        (ChannelAttention(8), "(B, 8, H, W)"),
        (CBAM(8), "(B, 8, H, W)"),
    ],
)
def test_wrong_channels_or_rank_raise_with_shapes(module, expected):
    with pytest.raises(ValueError, match=re.escape(f"{expected}, got (2, 5, 4, 4)")):
        module(torch.randn(2, 5, 4, 4))
    with pytest.raises(ValueError, match=re.escape(f"{expected}, got (8, 4, 4)")):
        module(torch.randn(8, 4, 4))


def test_spatial_attention_bad_input():
    with pytest.raises(ValueError, match=re.escape("(B, C, H, W), got (3, 4)")):
        SpatialAttention()(torch.randn(3, 4))
    with pytest.raises(ValueError, match="odd"):
        SpatialAttention(kernel_size=4)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="divisible"):
        NonLocalBlock2d(8, inner_channels=6, num_heads=4)
    with pytest.raises(ValueError, match="positive"):
        SqueezeExcite(8, reduction=0)
