import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attnlab.layers import Dropout
from attnlab.layers.dropout import DROPOUT_RNG_ENV, dropout, keep_mask


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_keep_rate_is_one_minus_p_and_kept_values_are_scaled(p):
    torch.manual_seed(0)
    x = torch.randn(1000, 1000) + 3.0  # no zeros of its own
    out = dropout(x, p)
    kept = out != 0
    n = x.numel()
    sigma = math.sqrt(n * p * (1 - p))
    assert abs(int(kept.sum()) - n * (1 - p)) < 5 * sigma
    torch.testing.assert_close(out[kept], x[kept] / (1 - p))


def test_backward_is_the_same_mask_and_scale_against_float64():
    torch.manual_seed(1)
    x = torch.randn(64, 17, 96, requires_grad=True)
    g = torch.randn_like(x)
    out = dropout(x, 0.3)
    out.backward(g)
    keep = (out != 0).double()
    expected = g.double() * keep / 0.7
    torch.testing.assert_close(x.grad.double(), expected, rtol=1e-6, atol=1e-6)


def test_gradcheck_and_double_backward_in_float64():
    x = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    seed = torch.seed()

    def f(t):
        torch.manual_seed(seed)  # the same mask on every call gradcheck makes
        return dropout(t, 0.4)

    assert torch.autograd.gradcheck(f, (x,))
    assert torch.autograd.gradgradcheck(f, (x,))


def test_bf16_keeps_its_dtype_and_the_rate():
    torch.manual_seed(2)
    x = torch.ones(200_000, dtype=torch.bfloat16)
    out = dropout(x, 0.25)
    assert out.dtype == torch.bfloat16
    kept = float((out != 0).float().mean())
    assert abs(kept - 0.75) < 0.01
    kept_values = out[out != 0].float()
    torch.testing.assert_close(kept_values, torch.full_like(kept_values, 1 / 0.75), rtol=1e-2, atol=0)


def test_eval_p0_and_p1_match_nn_dropout():
    x = torch.randn(3, 4)
    d = Dropout(0.5).eval()
    assert d(x) is x
    assert dropout(x, 0.0) is x
    out = Dropout(1.0)(x)
    assert torch.equal(out, torch.zeros_like(x))  # p = 1: zeros, never NaN (scale 1/0)
    assert not torch.isnan(out).any()


def test_same_state_dict_and_repr_as_nn_dropout():
    ours, theirs = Dropout(0.2), nn.Dropout(0.2)
    assert ours.state_dict() == theirs.state_dict() == {}
    assert isinstance(ours, nn.Dropout) and ours.p == theirs.p


def test_inplace_falls_back_to_torch():
    x = torch.randn(100, 100)
    y = x.clone()
    out = Dropout(0.5, inplace=True)(y)
    assert out.data_ptr() == y.data_ptr()
    assert torch.allclose(out[out != 0], x[out != 0] * 2)


def test_matches_f_dropout_statistics_on_a_training_step():
    """Same expected output as F.dropout (mean over many masks), to a tolerance that could fail."""
    torch.manual_seed(3)
    x = torch.randn(256)
    ours = torch.stack([dropout(x, 0.3) for _ in range(4000)]).mean(0)
    theirs = torch.stack([F.dropout(x, 0.3) for _ in range(4000)]).mean(0)
    # each mean has std |x| * sqrt(p / (1 - p) / 4000) ~ 0.0104 |x|
    assert torch.all((ours - x).abs() <= 0.06 * x.abs() + 1e-6)
    assert torch.all((theirs - x).abs() <= 0.06 * x.abs() + 1e-6)


@pytest.mark.parametrize("p", [0.3, 0.5])
def test_keep_mask_every_16_bit_lane_keeps_at_one_minus_p(p):
    """The four lanes of each 64-bit draw are each uniform: a draw over half the 64-bit range would
    leave the top lane's sign bit 0 and keep that lane at a different rate."""
    torch.manual_seed(4)
    keep = keep_mask((400_000, 4), p)  # column j: lane j of each draw
    n = keep.shape[0]
    sigma = math.sqrt(n * p * (1 - p))
    expected = round((1 - p) * 2**16) / 2**16
    assert abs(expected - (1 - p)) <= 2**-17
    for lane in range(4):
        assert abs(int(keep[:, lane].sum()) - n * expected) < 5 * sigma, lane


def test_keep_mask_float_switch_and_extreme_p_use_float_uniforms(monkeypatch):
    torch.manual_seed(5)
    expected = torch.rand(1000, 10) >= 0.3
    torch.manual_seed(5)
    monkeypatch.setenv(DROPOUT_RNG_ENV, "float")
    assert torch.equal(keep_mask((1000, 10), 0.3), expected)
    monkeypatch.delenv(DROPOUT_RNG_ENV)
    torch.manual_seed(5)
    assert not torch.equal(keep_mask((1000, 10), 0.3), expected)  # the default draws 16-bit lanes
    torch.manual_seed(6)
    tiny = keep_mask((1_000_000,), 1e-6)  # 1 - p rounds to 2**16 lanes: float uniforms keep p > 0
    torch.manual_seed(6)
    assert torch.equal(tiny, torch.rand(1_000_000) >= 1e-6)
