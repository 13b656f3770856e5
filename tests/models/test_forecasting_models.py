"""patchtst and dlinear against independent float64 references; RevIN; channel independence; capture."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from attnlab.explain.capture import capture
from attnlab.layers.revin import RevIN
from attnlab.models import create_model
from attnlab.models.dlinear import moving_average_decomposition
from attnlab.models.patchtst import make_patches


def _reference_trend(x: torch.Tensor, k: int) -> torch.Tensor:
    """Moving average by explicit loops over a replicate-padded series (float64). x (B, C, L)."""
    pad = (k - 1) // 2
    B, C, L = x.shape
    out = torch.zeros(B, C, L, dtype=torch.float64)
    for t in range(L):
        idx = [min(max(t + j - pad, 0), L - 1) for j in range(k)]  # replicate padding = clamped indices
        out[:, :, t] = x[:, :, idx].double().mean(-1)
    return out


@pytest.mark.parametrize("k", [25, 3, 1])
def test_decomposition_matches_a_loop_reference(k):
    x = torch.randn(2, 3, 40)
    seasonal, trend = moving_average_decomposition(x, k)
    ref = _reference_trend(x, k)
    torch.testing.assert_close(trend.double(), ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(seasonal.double(), x.double() - ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("individual", [False, True])
def test_dlinear_is_two_linear_maps_of_the_two_parts(individual):
    model = create_model("dlinear", seq_len=40, horizon=7, in_channels=3, individual=individual).double()
    x = torch.randn(4, 3, 40, dtype=torch.float64)
    trend = _reference_trend(x, 25)
    seasonal = x - trend
    expected = torch.empty(4, 3, 7, dtype=torch.float64)
    for c in range(3):
        s, t = (model.seasonal[c], model.trend[c]) if individual else (model.seasonal[0], model.trend[0])
        expected[:, c] = seasonal[:, c] @ s.weight.T + s.bias + trend[:, c] @ t.weight.T + t.bias
    torch.testing.assert_close(model(x), expected, rtol=1e-10, atol=1e-10)


def test_dlinear_out_channels_keeps_the_last():
    full = create_model("dlinear", seq_len=30, horizon=5, in_channels=3)
    ms = create_model("dlinear", seq_len=30, horizon=5, in_channels=3, out_channels=1)
    ms.load_state_dict(full.state_dict())
    x = torch.randn(2, 3, 30)
    torch.testing.assert_close(ms(x), full(x)[:, -1:])


@pytest.mark.parametrize("individual,kernel,out_channels", [(False, 25, 0), (True, 25, 0), (False, 5, 1), (True, 3, 2),
                                                            (True, 1, 0), (False, 61, 2)])
def test_dlinear_effective_weights_are_its_jacobian_and_reproduce_the_forecast(individual, kernel, out_channels):
    """W_eff (H, L), b (H,) per channel: the forward's Jacobian (autograd, an independent reference), and
    W_eff x + b == forward(x) on fresh random inputs, in float64 (kernel 61 > L: the padding dominates)."""
    torch.manual_seed(kernel + out_channels)
    C, L, H = 3, 40, 7
    model = create_model("dlinear", seq_len=L, horizon=H, in_channels=C, out_channels=out_channels, kernel_size=kernel,
                         individual=individual).double()
    with torch.no_grad():  # distinct seasonal and trend maps per channel: a mixed-up channel or part shows
        for p in model.parameters():
            p.normal_()
    x = torch.randn(C, L, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda s: model(s[None])[0], x)  # (C_out, H, C, L)
    out = model(x[None])[0].detach()  # (C_out, H)
    first = C - out.shape[0]  # output j is input channel first + j
    for j in range(out.shape[0]):
        c = first + j
        weight, bias = model.effective_weights(c)
        assert weight.shape == (H, L) and bias.shape == (H,) and weight.dtype == torch.float64
        torch.testing.assert_close(weight, jac[j, :, c], rtol=1e-10, atol=1e-10)
        others = [k for k in range(C) if k != c]
        assert jac[j][:, others].abs().max() == 0  # a channel's forecast reads only its own channel
        torch.testing.assert_close(weight @ x[c] + bias, out[j], rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(model.effective_weights(c - C)[0], weight)  # a negative index counts from the last
    shared = [model.effective_weights(c)[0] for c in range(C)]
    assert all(torch.equal(shared[0], w) for w in shared) != individual


def test_dlinear_effective_weights_refuse_a_channel_out_of_range():
    model = create_model("dlinear", seq_len=20, horizon=4, in_channels=2)
    with pytest.raises(ValueError, match=r"channel 2 is out of range: the model reads 2 input channels"):
        model.effective_weights(2)


@pytest.mark.parametrize("affine,subtract_last", [(True, False), (False, True)])
def test_revin_matches_its_formulas_and_round_trips(affine, subtract_last):
    revin = RevIN(3, affine=affine, subtract_last=subtract_last).double()
    if affine:
        with torch.no_grad():
            revin.weight.copy_(torch.tensor([0.5, 2.0, -1.5]))
            revin.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    x = torch.randn(2, 3, 50, dtype=torch.float64) * 4 + 7
    y, stats = revin.normalise(x)
    centre = x[..., -1:] if subtract_last else x.mean(-1, keepdim=True)
    var = ((x - x.mean(-1, keepdim=True)) ** 2).mean(-1, keepdim=True)  # biased, around the mean either way
    expected = (x - centre) / torch.sqrt(var + 1e-5)
    if affine:
        expected = expected * revin.weight[:, None] + revin.bias[:, None]
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(revin.denormalise(y, stats), x, rtol=1e-7, atol=1e-7)  # eps**2 in the inverse


def test_revin_gradient_runs_through_the_statistics_only_when_asked():
    """g(x) = denormalise(2 * normalise(x)) = 2x - mean(x) per channel: its Jacobian is 2I - 1/L (through the
    mean); the reference's detached statistics give 2I. The values are the same either way."""
    L = 7
    x = torch.randn(1, 1, L, dtype=torch.float64) * 3 + 1
    want = {True: 2 * torch.eye(L, dtype=torch.float64), False: 2 * torch.eye(L, dtype=torch.float64) - 1 / L}
    values = []
    for detach in (True, False):
        revin = RevIN(1, affine=False, detach_statistics=detach).double()

        def g(s, revin=revin):
            y, stats = revin.normalise(s[None, None])
            return revin.denormalise(2 * y, stats)[0, 0]

        jac = torch.autograd.functional.jacobian(g, x[0, 0])  # (L, L)
        torch.testing.assert_close(jac, want[detach], rtol=0, atol=1e-12)
        values.append(g(x[0, 0]))
    torch.testing.assert_close(values[0], values[1], rtol=0, atol=0)
    torch.testing.assert_close(values[1], 2 * x[0, 0] - x.mean(), rtol=0, atol=1e-12)


def test_patches_match_replication_pad_and_slices():
    x = torch.randn(2, 3, 40)
    patches = make_patches(x, 16, 8)  # (B, C, N, P)
    padded = torch.nn.ReplicationPad1d((0, 8))(x)
    n = (40 + 8 - 16) // 8 + 1
    assert patches.shape == (2, 3, n, 16)
    for i in range(n):
        torch.testing.assert_close(patches[:, :, i], padded[..., 8 * i:8 * i + 16])
    assert create_model("patchtst", seq_len=336).num_patches == 42  # PatchTST/42


def _reference_patchtst(model, x: torch.Tensor) -> torch.Tensor:
    """PatchTST's forward from the parameters alone, with torch.nn.functional (eval mode, float64)."""
    c = model.config
    B, C, _ = x.shape
    mean = x.mean(-1, keepdim=True)
    std = torch.sqrt(x.var(-1, keepdim=True, unbiased=False) + 1e-5)
    z = (x - mean) / std * model.revin.weight[:, None] + model.revin.bias[:, None]
    z = F.pad(z, (0, c.stride), mode="replicate").unfold(-1, c.patch_len, c.stride)  # (B, C, N, P)
    N = z.shape[2]
    h = F.linear(z.reshape(B * C, N, -1), model.patch_embed.weight, model.patch_embed.bias) + model.pos_embed
    heads, d = c.num_heads, c.dim // c.num_heads
    prev = None
    for block in model.blocks:
        attn = block.attn
        q, k, v = (F.linear(h, p.weight, p.bias).reshape(B * C, N, heads, d).transpose(1, 2)
                   for p in (attn.q_proj, attn.k_proj, attn.v_proj))
        scores = q @ k.transpose(-1, -2) / math.sqrt(d)
        if c.residual_attention:  # the authors' res_attention: the previous layer's scores added, the sum passed on
            scores = scores if prev is None else scores + prev
            prev = scores
        w = torch.softmax(scores, dim=-1)
        a = (w @ v).transpose(1, 2).reshape(B * C, N, c.dim)
        a = F.linear(a, attn.out_proj.weight, attn.out_proj.bias)

        def bn(t, norm):
            n = norm.norm
            return F.batch_norm(t.transpose(1, 2), n.running_mean, n.running_var, n.weight, n.bias, False, 0.0, n.eps).transpose(1, 2)

        h = bn(h + a, block.norm1)
        f = F.linear(F.gelu(F.linear(h, block.mlp.fc1.weight, block.mlp.fc1.bias)), block.mlp.fc2.weight, block.mlp.fc2.bias)
        h = bn(h + f, block.norm2)
    out = F.linear(h.reshape(B, C, -1), model.head.weight, model.head.bias)
    out = (out - model.revin.bias[:, None]) / (model.revin.weight[:, None] + 1e-10)
    return out * std + mean


@pytest.mark.parametrize("residual", [False, True])
def test_patchtst_matches_a_functional_reference(residual):
    model = create_model("patchtst", seq_len=40, horizon=6, in_channels=3, depth=3, dim=8, num_heads=2, ff_dim=16,
                         residual_attention=residual)
    with torch.no_grad():  # non-trivial affine RevIN and BatchNorm statistics
        model.revin.weight.uniform_(0.5, 1.5)
        model.revin.bias.uniform_(-0.3, 0.3)
        for block in model.blocks:
            for norm in (block.norm1.norm, block.norm2.norm):
                norm.running_mean.uniform_(-0.5, 0.5)
                norm.running_var.uniform_(0.5, 2.0)
                norm.weight.uniform_(0.5, 1.5)
    model = model.double().eval()
    x = torch.randn(2, 3, 40, dtype=torch.float64) * 3 + 1
    torch.testing.assert_close(model(x), _reference_patchtst(model, x), rtol=1e-9, atol=1e-9)
    plain = copy.deepcopy(model)
    plain.config.residual_attention = not residual
    assert not torch.allclose(plain(x), model(x), atol=1e-6), "residual attention changes the forecast"


def test_residual_attention_is_captured_exactly():
    """The captured maps are the softmax of the accumulated scores: what the layer used."""
    model = create_model("patchtst", seq_len=48, horizon=8, in_channels=2, depth=3, dim=8, num_heads=2, ff_dim=16,
                         residual_attention=True).double().eval()
    x = torch.randn(1, 2, 48, dtype=torch.float64)
    maps = capture(model, x)
    torch.testing.assert_close(maps.output, model(x))
    h = model.dropout(model.patch_embed(make_patches(model.revin.normalise(x)[0], 16, 8).reshape(2, -1, 16)) + model.pos_embed)
    prev = None
    for block, captured in zip(model.blocks, maps.maps):
        a = block.attn
        q, k = (a._split(p(h), 2) for p in (a.q_proj, a.k_proj))
        expected = q @ k.transpose(-1, -2) / math.sqrt(4) + (0 if prev is None else prev)  # (B * C, H, N, N)
        torch.testing.assert_close(captured.double(), torch.softmax(expected, -1), rtol=1e-6, atol=1e-6)
        h, prev = block(h, prev, residual=True)
        torch.testing.assert_close(prev, expected, rtol=1e-12, atol=1e-12)


def test_bias_and_scores_need_plain_self_attention():
    from attnlab.layers import MultiHeadAttention

    attn = MultiHeadAttention(8, 2)
    x = torch.randn(2, 5, 8)
    with pytest.raises(ValueError, match="plain self-attention"):
        attn(x, is_causal=True, return_scores=True)
    with pytest.raises(ValueError, match="not both"):
        attn(x, return_scores=True, return_weights=True)
    bias = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    attn = attn.double()
    x = x.double()
    out, scores = attn(x, bias=bias, return_scores=True)
    q, k, v = (attn._split(p(x), 2) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
    reference_scores = q @ k.transpose(-1, -2) / 2.0 + bias
    torch.testing.assert_close(scores, reference_scores, rtol=1e-12, atol=1e-12)
    reference = attn.out_proj((torch.softmax(reference_scores, -1) @ v).transpose(1, 2).reshape(2, 5, 8))
    torch.testing.assert_close(out, reference, rtol=1e-10, atol=1e-10)


def test_patchtst_channels_are_independent():
    model = create_model("patchtst", seq_len=48, horizon=8, in_channels=4, depth=1, dim=8, num_heads=2, ff_dim=16).eval()
    x = torch.randn(3, 4, 48)
    out = model(x)
    perm = torch.tensor([2, 0, 3, 1])
    torch.testing.assert_close(model(x[:, perm]), out[:, perm], rtol=1e-5, atol=1e-6)  # RevIN's affine starts equal
    y = x.clone()
    y[:, 0] = torch.randn(3, 48)  # change one channel: the others' forecasts stay put
    torch.testing.assert_close(model(y)[:, 1:], out[:, 1:], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(model(y)[:, 0], out[:, 0])


def test_patchtst_attention_is_captured_per_channel():
    model = create_model("patchtst", seq_len=48, horizon=8, in_channels=2, depth=3, dim=8, num_heads=2, ff_dim=16).eval()
    x = torch.randn(1, 2, 48)
    maps = capture(model, x)
    n = model.num_patches
    assert len(maps) == 3 and all(m.shape == (2, 2, n, n) for m in maps.maps)  # (B * C, heads, N, N)
    torch.testing.assert_close(maps.maps[0].sum(-1), torch.ones(2, 2, n))
    torch.testing.assert_close(maps.output, model(x))
    assert model.token_spans()[0] == (0, 16) and model.token_spans()[-1] == ((n - 1) * 8, 48)


def test_batch_norm_of_tokens_in_training_matches_batch_norm_over_transposed_tokens():
    """_TokenNorm's BatchNorm over (B N, C) rows: the same output, gradient and running statistics as
    BatchNorm1d over (B, C, N), the authors' layout."""
    from attnlab.models.patchtst import _TokenNorm

    torch.manual_seed(9)
    ours = _TokenNorm(8, "batch").double()
    theirs = copy.deepcopy(ours.norm)
    x = torch.randn(5, 11, 8, dtype=torch.float64, requires_grad=True)
    g = torch.randn(5, 11, 8, dtype=torch.float64)
    (gx,) = torch.autograd.grad((ours(x) * g).sum(), x)
    expected = theirs(x.transpose(1, 2)).transpose(1, 2)
    (gx_ref,) = torch.autograd.grad((expected * g).sum(), x)
    torch.testing.assert_close(ours(x.detach()), theirs(x.detach().transpose(1, 2)).transpose(1, 2), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours.norm.running_var, theirs.running_var, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours.norm.running_mean, theirs.running_mean, rtol=1e-12, atol=1e-12)


def test_patchtst_with_residual_attention_exports():
    """torch.export traces the kernel route (no data-dependent finiteness check) and matches eager."""
    model = create_model("patchtst", seq_len=48, horizon=8, in_channels=2, depth=2, dim=8, num_heads=2, ff_dim=16,
                         residual_attention=True).eval()
    x = torch.randn(3, 2, 48)
    exported = torch.export.export(model, (x,))
    y = torch.randn(3, 2, 48)
    torch.testing.assert_close(exported.module()(y), model(y), rtol=1e-5, atol=1e-6)
