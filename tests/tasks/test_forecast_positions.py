"""Forecasting's explain adapter: positions, removed value and forward, each against an independent reference."""

from __future__ import annotations

import pytest
import torch

from attnlab.explain import capture
from attnlab.explain.card import supported_methods
from attnlab.explain.linear import linear_attribution
from attnlab.explain.relevance import ATTENTION_METHODS, relevance
from attnlab.models import create_model
from attnlab.tasks.forecast_positions import forecast_positions, own_spans

captum = pytest.importorskip("captum")

TINY_PATCHTST = {"depth": 2, "dim": 8, "num_heads": 2, "ff_dim": 16, "dropout": 0.0}


def _model(name: str, *, channels: int = 3, out_channels: int = 0, seq_len: int = 48, **kw):
    torch.manual_seed(0)
    extra = TINY_PATCHTST if name == "patchtst" else {}
    return create_model(name, seq_len=seq_len, horizon=12, in_channels=channels, out_channels=out_channels,
                        **{**extra, **kw}).eval().double()


def _positions(model, windows):
    return forecast_positions(model, None, [(w, None) for w in windows], list(range(len(windows))))[0]


def _mean_forecast(model, series):
    with torch.no_grad():
        return model(series)[:, -1].mean(-1)  # (B,) the target (last output channel), mean over the horizon


@pytest.mark.parametrize("patch_len, stride, seq_len", [(16, 8, 48), (16, 8, 53), (24, 8, 48), (8, 8, 48), (8, 12, 48)])
def test_patchtst_positions_are_each_tokens_own_steps(patch_len, stride, seq_len):
    """Step t belongs to the last token starting at or before it: the shares cut 0..L-1 once each, in order."""
    model = _model("patchtst", patch_len=patch_len, stride=stride, seq_len=seq_len)
    spans = own_spans(model.token_spans(), seq_len)
    assert len(spans) == model.num_patches
    starts = [i * stride for i in range(model.num_patches)]
    owner = [max(i for i, s in enumerate(starts) if s <= t) for t in range(seq_len)]
    assert [i for i, (a, b) in enumerate(spans) for _ in range(a, b)] == owner


@pytest.mark.parametrize("name, out_channels", [("dlinear", 0), ("dlinear", 1), ("patchtst", 0), ("patchtst", 1)])
def test_intact_positions_give_the_forecast_mean_and_all_removed_a_zero_target_window(name, out_channels):
    model = _model(name, out_channels=out_channels)
    series = torch.randn(4, 3, 48, dtype=torch.float64)
    g = _positions(model, series)
    assert g.readout.kind == "regression" and g.num_prefix_tokens == 0 and g.sequence == 2
    assert g.x.shape[:2] == ((4, 48) if name == "dlinear" else (4, model.num_patches))
    with torch.no_grad():
        intact = g.forward(g.x)
        gone = g.forward(g.removed.expand_as(g.x).clone())
    assert intact.shape == (4, 1)
    torch.testing.assert_close(intact[:, 0], _mean_forecast(model, series), rtol=0, atol=1e-12)
    zeroed = series.clone()
    zeroed[:, -1] = 0.0  # the target channel at its training mean (0 scaled), the other channels as they were
    torch.testing.assert_close(gone[:, 0], _mean_forecast(model, zeroed), rtol=0, atol=1e-12)
    assert (gone - intact).abs().max() > 1e-3  # removing the target's history changes the forecast


def test_removing_a_patchtst_position_zeroes_its_own_steps_of_the_target_only():
    model = _model("patchtst")
    series = torch.randn(2, 3, 48, dtype=torch.float64)
    g = _positions(model, series)
    seen = []
    handle = model.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    try:
        for i, (a, b) in enumerate(own_spans(model.token_spans(), 48)):
            x = g.x.clone()
            x[:, i] = g.removed
            g.forward(x)
            want = series.clone()
            want[:, -1, a:b] = 0.0
            torch.testing.assert_close(seen[-1], want, rtol=0, atol=0)
    finally:
        handle.remove()


@pytest.mark.parametrize("individual, out_channels", [(False, 0), (True, 1)])
def test_dlinear_input_x_gradient_is_its_exact_attribution(individual, out_channels):
    """Input x gradient on the adapter's positions = explain.linear's contributions to the mean forecast, per step."""
    model = _model("dlinear", individual=individual, out_channels=out_channels)
    series = torch.randn(5, 3, 48, dtype=torch.float64)
    g = _positions(model, series)
    got = relevance(g.forward, g.x, "input_x_gradient", num_prefix_tokens=0)
    ig = relevance(g.forward, g.x, "integrated_gradients", num_prefix_tokens=0, steps=4, baseline=g.removed.expand_as(g.x))
    weight, bias = model.effective_weights(2)  # the target: the last input channel
    with torch.no_grad():
        forecasts = model(series)[:, -1]  # (B, H)
    for row in range(5):
        exact = linear_attribution(weight, bias, series[row, -1], forecasts[row])
        assert exact.error < 1e-12
        want = torch.from_numpy(exact.contributions.mean(0))  # (L,) float64
        torch.testing.assert_close(got[row].double(), want, rtol=1e-6, atol=1e-7)  # relevance hands back float32
        torch.testing.assert_close(ig[row].double(), want, rtol=1e-6, atol=1e-7)  # linear: IG from 0 is the same
    assert supported_methods(g.forward) == ("input_x_gradient", "integrated_gradients", "random")


def test_patchtst_integrated_gradients_add_up_to_the_change_from_the_removed_window():
    """Completeness (Sundararajan et al. 2017): the positions' IG sum to f(x) - f(removed), which the shares allow
    only because every step is one position's."""
    model = _model("patchtst")
    g = _positions(model, torch.randn(3, 3, 48, dtype=torch.float64))
    base = g.removed.expand_as(g.x)
    ig = relevance(g.forward, g.x, "integrated_gradients", num_prefix_tokens=0, steps=300, baseline=base)
    with torch.no_grad():
        change = (g.forward(g.x) - g.forward(base.clone()))[:, 0]
    torch.testing.assert_close(ig.sum(1).double(), change, rtol=2e-3, atol=2e-3)
    assert change.abs().min() > 1e-2


@pytest.mark.parametrize("method", ATTENTION_METHODS)
def test_patchtst_attention_methods_read_the_target_channels_sequence(method):
    """PatchTST runs B * C sequences; the map of row b is sequence b * C + C - 1 of a direct capture."""
    from attnlab.explain.rollout import fuse_heads, gradient_rollout, rollout

    model = _model("patchtst")
    series = torch.randn(2, 3, 48, dtype=torch.float64)
    g = _positions(model, series)
    got = relevance(g.forward, g.x, method, num_prefix_tokens=0, sequence=g.sequence)
    assert got.shape == (2, model.num_patches)
    rows = [2, 5]  # b * C + (C - 1)
    if method in ("raw", "rollout"):
        maps = capture(model, series)
        a = fuse_heads(maps.maps[-1].double(), "mean") if method == "raw" else rollout(maps).double()
    else:
        maps = capture(model, series, grad=True, layers=-1 if method == "attn_x_grad" else None)
        maps.output[:, -1].mean(-1).sum().backward()
        if method == "gradient":
            a = gradient_rollout(maps, maps.grads()).double()
        else:
            a = fuse_heads(maps.maps[0].detach().double() * maps.grads()[0].double(), "mean").clamp_min(0)
        other = a[[0, 1, 3, 4]]  # the other channels' sequences: no gradient reaches them
        assert other.abs().max() == 0 if method == "attn_x_grad" else True
    want = a[rows].mean(1)  # (B, N): mean over query patches (no class token)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
    assert want.abs().max() > 0
    with pytest.raises(ValueError, match="ran 6 sequences for 2 input rows"):
        relevance(g.forward, g.x, method, num_prefix_tokens=0)
