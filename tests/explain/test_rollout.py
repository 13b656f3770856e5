"""Rollout against hand-computed numbers and an independent float64 loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from attnlab.explain import attention_entropy, capture, cls_to_patches, fuse_heads, gradient_rollout, rollout
from tests.explain._tiny import TinyViT

# Two layers, two heads, three tokens; every row of every head sums to 1.
L1 = [[[1, 0, 0], [0, 1, 0], [0.5, 0, 0.5]],
      [[0, 1, 0], [0, 1, 0], [0, 0.5, 0.5]]]
L2 = [[[0, 0, 1], [1, 0, 0], [0, 1, 0]],
      [[0, 0, 1], [0, 0, 1], [0, 1, 0]]]


def _hand_maps() -> torch.Tensor:
    return torch.tensor([[L1], [L2]], dtype=torch.float64)  # (L=2, B=1, H=2, N=3, N=3)


def test_rollout_mean_by_hand():
    # Layer 1: mean over heads W1 = [[.5,.5,0],[0,1,0],[.25,.25,.5]];
    #   A1 = (W1 + I)/2 = [[.75,.25,0],[0,1,0],[.125,.125,.75]] (rows already sum to 1).
    # Layer 2: W2 = [[0,0,1],[.5,0,.5],[0,1,0]]; A2 = (W2 + I)/2 = [[.5,0,.5],[.25,.5,.25],[0,.5,.5]].
    # Rollout = A2 @ A1:
    #   row 0 = .5*[.75,.25,0] + .5*[.125,.125,.75]                 = [.4375, .1875, .375]
    #   row 1 = .25*[.75,.25,0] + .5*[0,1,0] + .25*[.125,.125,.75]   = [.21875, .59375, .1875]
    #   row 2 = .5*[0,1,0] + .5*[.125,.125,.75]                       = [.0625, .5625, .375]
    expected = torch.tensor([[[0.4375, 0.1875, 0.375], [0.21875, 0.59375, 0.1875], [0.0625, 0.5625, 0.375]]], dtype=torch.float64)
    got = rollout(_hand_maps(), head_fusion="mean")
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-15)
    # A list of per-layer maps gives the same.
    torch.testing.assert_close(rollout(list(_hand_maps())), expected, rtol=0, atol=1e-15)


def test_rollout_max_by_hand():
    # Layer 1: max over heads = [[1,1,0],[0,1,0],[.5,.5,.5]]; (W+I)/2 = [[1,.5,0],[0,1,0],[.25,.25,.75]]
    #   rows re-normalised (sums 1.5, 1, 1.25): A1 = [[2/3,1/3,0],[0,1,0],[.2,.2,.6]].
    # Layer 2: max = [[0,0,1],[1,0,1],[0,1,0]]; (W+I)/2 = [[.5,0,.5],[.5,.5,.5],[0,.5,.5]]
    #   row 1 sums to 1.5: A2 = [[.5,0,.5],[1/3,1/3,1/3],[0,.5,.5]].
    # A2 @ A1: row 0 = .5*[2/3,1/3,0] + .5*[.2,.2,.6] = [13/30, 8/30, 9/30]
    #          row 1 = ([2/3,1/3,0] + [0,1,0] + [.2,.2,.6]) / 3 = [13/45, 23/45, 9/45]
    #          row 2 = .5*[0,1,0] + .5*[.2,.2,.6] = [.1, .6, .3]
    expected = torch.tensor([[[13 / 30, 8 / 30, 9 / 30], [13 / 45, 23 / 45, 9 / 45], [0.1, 0.6, 0.3]]], dtype=torch.float64)
    torch.testing.assert_close(rollout(_hand_maps(), head_fusion="max"), expected, rtol=0, atol=1e-15)


def test_rollout_min_by_hand():
    # Layer 1: min = [[0,0,0],[0,1,0],[0,0,.5]]; (W+I)/2 = [[.5,0,0],[0,1,0],[0,0,.75]] -> normalised: I.
    # Layer 2: min = [[0,0,1],[0,0,0],[0,1,0]]; (W+I)/2 = [[.5,0,.5],[0,.5,0],[0,.5,.5]]
    #   -> normalised [[.5,0,.5],[0,1,0],[0,.5,.5]]; rollout = that @ I.
    expected = torch.tensor([[[0.5, 0, 0.5], [0, 1, 0], [0, 0.5, 0.5]]], dtype=torch.float64)
    torch.testing.assert_close(rollout(_hand_maps(), head_fusion="min"), expected, rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="head_fusion"):
        rollout(_hand_maps(), head_fusion="median")


def test_discard_ratio_by_hand():
    # One layer, one head: W = [[.6,.3,.1],[.2,.5,.3],[.05,.15,.8]].
    # discard_ratio .34 -> int(9 * .34) = 3 lowest of the unprotected entries ((0,0) is protected):
    #   .05 at (2,0), .1 at (0,2), .15 at (2,1) become 0 -> [[.6,.3,0],[.2,.5,.3],[0,0,.8]].
    # (W+I)/2 = [[.8,.15,0],[.1,.75,.15],[0,0,.9]]; row sums .95, 1, .9
    #   -> [[16/19, 3/19, 0], [.1, .75, .15], [0, 0, 1]].
    w = torch.tensor([[[[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.05, 0.15, 0.8]]]], dtype=torch.float64)
    expected = torch.tensor([[[16 / 19, 3 / 19, 0], [0.1, 0.75, 0.15], [0, 0, 1]]], dtype=torch.float64)
    torch.testing.assert_close(rollout([w], discard_ratio=0.34), expected, rtol=0, atol=1e-15)
    # Every example of a batch is discarded on its own (vit-explain only touched the first).
    twice = rollout([w.expand(2, -1, -1, -1)], discard_ratio=0.34)
    torch.testing.assert_close(twice, expected.expand(2, -1, -1), rtol=0, atol=1e-15)
    # The class-token entry (0, 0) survives even when it is the smallest.
    low = torch.tensor([[[[0.01, 0.49, 0.5], [0.2, 0.5, 0.3], [0.3, 0.3, 0.4]]]], dtype=torch.float64)
    # int(9 * .12) = 1: the lowest unprotected entry is .2 at (1, 0).
    # (W'+I)/2 = [[.505,.245,.25],[0,.75,.15],[.15,.15,.7]]; row 1 sums to .9 -> [0, 5/6, 1/6].
    expected_low = torch.tensor([[[0.505, 0.245, 0.25], [0, 5 / 6, 1 / 6], [0.15, 0.15, 0.7]]], dtype=torch.float64)
    torch.testing.assert_close(rollout([low], discard_ratio=0.12), expected_low, rtol=0, atol=1e-15)
    # Without a class token nothing is protected: (0, 0) goes first.
    no_cls = rollout([low], discard_ratio=0.12, num_prefix_tokens=0)
    assert no_cls[0, 0, 0] == pytest.approx(0.5 / 0.995)
    with pytest.raises(ValueError, match="discard_ratio"):
        rollout([w], discard_ratio=1.0)


def _reference_rollout(maps: np.ndarray, fusion: str, ratio: float, prefix: int) -> np.ndarray:
    """Independent float64 loop: (L, B, H, N, N) -> (B, N, N)."""
    L, B, H, N, _ = maps.shape
    out = np.zeros((B, N, N))
    for b in range(B):
        result = np.eye(N)
        for layer in range(L):
            fused = {"mean": np.mean, "max": np.max, "min": np.min}[fusion](maps[layer, b], axis=0).copy()
            k = int(N * N * ratio)
            order = [idx for idx in np.argsort(fused, axis=None, kind="stable") if not (idx // N < prefix and idx % N < prefix)]
            for idx in order[:k]:
                fused[idx // N, idx % N] = 0.0
            a = (fused + np.eye(N)) / 2
            a = a / a.sum(axis=1, keepdims=True)
            result = a @ result
        out[b] = result
    return out


@pytest.mark.parametrize("fusion", ["mean", "max", "min"])
@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.9])
def test_rollout_matches_float64_loop(fusion, ratio):
    maps = torch.softmax(torch.randn(3, 2, 4, 6, 6, dtype=torch.float64) * 2, dim=-1)
    got = rollout(maps, head_fusion=fusion, discard_ratio=ratio)
    torch.testing.assert_close(got.numpy(), _reference_rollout(maps.numpy(), fusion, ratio, 1), rtol=0, atol=1e-12)
    torch.testing.assert_close(got.sum(-1), torch.ones(2, 6, dtype=torch.float64), rtol=0, atol=1e-12)


def test_fuse_heads_and_bad_shapes():
    w = torch.rand(2, 3, 4, 5)
    torch.testing.assert_close(fuse_heads(w, "mean"), w.mean(1))
    assert torch.equal(fuse_heads(w, "max"), w.max(1).values)
    assert torch.equal(fuse_heads(w, "min"), w.min(1).values)
    with pytest.raises(ValueError, match="square"):
        rollout([torch.rand(1, 2, 3, 4)])


def test_gradient_rollout():
    maps = torch.softmax(torch.randn(2, 1, 2, 4, 4, dtype=torch.float64), dim=-1)
    # With all-ones gradients, relu(grad) = 1 and gradient rollout is plain rollout.
    torch.testing.assert_close(gradient_rollout(maps, torch.ones_like(maps)), rollout(maps), rtol=0, atol=1e-15)
    # Negative gradients are clipped: nothing flows through attention, only the residual.
    torch.testing.assert_close(gradient_rollout(maps, -torch.ones_like(maps))[0], torch.eye(4, dtype=torch.float64), rtol=0, atol=0)
    # A hand case: one layer, heads fused as mean(A * relu(G)).
    a = torch.tensor([[[[0.5, 0.5], [0.25, 0.75]], [[1.0, 0.0], [0.5, 0.5]]]], dtype=torch.float64)  # (B=1, H=2, 2, 2)
    g = torch.tensor([[[[2.0, -1.0], [4.0, 0.0]], [[1.0, 3.0], [-2.0, 2.0]]]], dtype=torch.float64)
    # A*relu(G): head 0 [[1,0],[1,0]], head 1 [[1,0],[0,1]] -> mean [[1,0],[.5,.5]];
    # (F+I)/2 = [[1,0],[.25,.75]]; rows sum to 1 and 1.
    torch.testing.assert_close(gradient_rollout([a], [g])[0], torch.tensor([[1.0, 0.0], [0.25, 0.75]], dtype=torch.float64))


def test_gradient_rollout_on_a_model():
    model = TinyViT(depth=2).eval()
    maps = capture(model, torch.randn(3, 6, 16), grad=True)
    maps.output[:, 0].sum().backward()
    rel = gradient_rollout(maps, maps.grads(), discard_ratio=0.2)
    assert rel.shape == (3, 7, 7)
    assert torch.all(rel >= 0)
    torch.testing.assert_close(rel.sum(-1), torch.ones(3, 7))
    heat = cls_to_patches(rel, 1, model.patch_grid)
    assert heat.shape == (3, 2, 3) and float(heat.max()) == pytest.approx(1.0) and float(heat.min()) >= 0


def test_cls_to_patches():
    r = torch.zeros(1, 5, 5)
    r[0, 0] = torch.tensor([0.5, 0.1, 0.2, 0.3, 0.4])
    r[0, 1:] = 0.25
    heat = cls_to_patches(r, 1, (2, 2))
    torch.testing.assert_close(heat, torch.tensor([[[0.25, 0.5], [0.75, 1.0]]]))
    # Mean pooling: the mean over all rows. Rows: [.1,.2,.3,.4] as row 0 and .25 elsewhere.
    r0 = torch.full((4, 4), 0.25)
    r0[0] = torch.tensor([0.1, 0.2, 0.3, 0.4])
    # column means: [.2125, .2375, .2625, .2875] -> / .2875
    expected = torch.tensor([[0.2125, 0.2375], [0.2625, 0.2875]]) / 0.2875
    torch.testing.assert_close(cls_to_patches(r0, 0, (2, 2)), expected)
    with pytest.raises(ValueError, match="grid"):
        cls_to_patches(r, 1, (3, 3))


def test_attention_entropy():
    uniform = torch.full((2, 3, 5, 8), 1 / 8)
    assert float(attention_entropy(uniform)) == pytest.approx(math.log(8))
    one_hot = torch.eye(4)[None]
    assert float(attention_entropy(one_hot)) == 0.0
    w = torch.softmax(torch.randn(3, 6, 7, dtype=torch.float64), dim=-1)
    ref = np.mean([-sum(p * math.log(p) for p in row) for row in w.reshape(-1, 7).tolist()])
    assert float(attention_entropy(w)) == pytest.approx(ref, abs=1e-12)
    assert attention_entropy(w, reduction="none").shape == (3, 6)
    masked = torch.tensor([[0.5, 0.5], [0.0, 0.0]])  # a fully masked row is left out of the mean
    assert float(attention_entropy(masked)) == pytest.approx(math.log(2))


@pytest.mark.parametrize("fusion,ratio", [("mean", 0.0), ("mean", 0.4), ("max", 0.2)])
def test_gradient_rollout_matches_float64_loop_with_signed_gradients(fusion, ratio):
    """fusion_h(A_h * relu(dA_h)) per layer, then the rollout loop above; gradients of both signs."""
    maps = torch.softmax(torch.randn(3, 2, 4, 6, 6, dtype=torch.float64) * 2, dim=-1)
    grads = torch.randn(3, 2, 4, 6, 6, dtype=torch.float64)
    weighted = maps.numpy() * np.maximum(grads.numpy(), 0)
    want = _reference_rollout(weighted, fusion, ratio, 1)
    got = gradient_rollout(maps, grads, head_fusion=fusion, discard_ratio=ratio)
    torch.testing.assert_close(got.numpy(), want, rtol=0, atol=1e-12)
    # Chefer et al. (ICCV 2021) rule 6, R <- R + F R, agrees to first order in F: with small gradients
    # the class-token rows differ by O(F^2): F ~ 1e-5 here, entries ~4e-5, differences ~5e-9.
    small = grads * 1e-4
    chefer = torch.eye(6, dtype=torch.float64).expand(2, 6, 6)
    for a, g in zip(maps, small):
        chefer = chefer + (a * g).clamp_min(0).mean(1) @ chefer
    ours = gradient_rollout(maps, small)
    torch.testing.assert_close(ours[:, 0, 1:], chefer[:, 0, 1:], rtol=0, atol=2e-7)
