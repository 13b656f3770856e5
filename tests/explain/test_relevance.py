"""relevance(): each method against an independent computation on a tiny ViT."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attnlab.explain import capture, rollout
from attnlab.explain.relevance import METHODS, relevance
from tests.explain._tiny import TinyViT, ig_float64, manual_weights

captum = pytest.importorskip("captum")


def _setup():
    torch.manual_seed(0)
    return TinyViT(depth=2).eval().double(), torch.randn(3, 6, 16, dtype=torch.float64)


def test_every_method_gives_b_by_n():
    model, x = _setup()
    for m in METHODS:
        r = relevance(model, x, m)
        assert r.shape == (3, 6), m
        assert torch.isfinite(r).all(), m


def test_raw_is_the_last_layers_class_row_by_hand():
    model, x = _setup()
    h = model.tokens(x)
    h1 = model.blocks[0](h)
    w = manual_weights(model.blocks[1], h1)  # (B, H, N, N), float64 softmax written out
    torch.testing.assert_close(relevance(model, x, "raw").double(), w.mean(1)[:, 0, 1:], rtol=0, atol=1e-6)
    torch.testing.assert_close(relevance(model, x, "raw", head=2).double(), w[:, 2, 0, 1:], rtol=0, atol=1e-6)


def test_rollout_row():
    model, x = _setup()
    expected = rollout(capture(model, x))[:, 0, 1:]
    torch.testing.assert_close(relevance(model, x, "rollout").double(), expected, rtol=0, atol=1e-6)


def test_attn_x_grad_matches_unfused_autograd():
    # Reference: recompute the last layer's weights by hand with autograd on, take dlogit/dW.
    model, x = _setup()
    target = model(x).argmax(-1)
    blk = model.blocks[1]
    store = {}
    orig = blk.attn.forward

    def fwd(h, *a, **k):  # unfused attention: out = W @ V, W kept for autograd
        attn = blk.attn
        b, n, _ = h.shape
        q = attn.q_proj(h).view(b, n, attn.num_heads, attn.head_dim).transpose(1, 2)
        kk = attn.k_proj(h).view(b, n, attn.num_heads, attn.head_dim).transpose(1, 2)
        v = attn.v_proj(h).view(b, n, attn.num_heads, attn.head_dim).transpose(1, 2)
        w = torch.softmax(q @ kk.transpose(-1, -2) / attn.head_dim ** 0.5, -1)
        w.retain_grad()
        store["w"] = w
        return attn.out_proj((w @ v).transpose(1, 2).reshape(b, n, -1))

    blk.attn.forward = fwd
    try:
        model(x).gather(1, target[:, None]).sum().backward()
    finally:
        blk.attn.forward = orig
    w, g = store["w"].detach(), store["w"].grad
    expected = (w * g).mean(1).clamp_min(0)[:, 0, 1:]
    torch.testing.assert_close(relevance(model, x, "attn_x_grad").double(), expected, rtol=1e-4, atol=1e-8)


def test_input_x_gradient_and_ig_completeness():
    model, x = _setup()
    target = model(x).argmax(-1)
    xi = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(xi).gather(1, target[:, None]).sum(), xi)
    torch.testing.assert_close(relevance(model, x, "input_x_gradient").double(), (grad * x).sum(-1), rtol=1e-5, atol=1e-6)
    # IG completeness (Sundararajan et al. 2017): attributions sum to f(x) - f(baseline).
    ig = relevance(model, x, "integrated_gradients", steps=200).double()
    f = model(x).gather(1, target[:, None])[:, 0]
    f0 = model(torch.zeros_like(x)).gather(1, target[:, None])[:, 0]
    torch.testing.assert_close(ig.sum(-1), (f - f0).detach(), rtol=0, atol=5e-3)


def test_random_is_seeded_and_bad_input():
    model, x = _setup()
    assert torch.equal(relevance(model, x, "random", seed=3), relevance(model, x, "random", seed=3))
    assert not torch.equal(relevance(model, x, "random", seed=3), relevance(model, x, "random", seed=4))
    plain = nn.Sequential(nn.Flatten(), nn.Linear(96, 3)).double()
    with pytest.raises(ValueError, match="'rollout'.*Sequential"):
        relevance(plain, x, "rollout")
    with pytest.raises(ValueError, match="unknown relevance method"):
        relevance(model, x, "saliency")
    assert relevance(plain, x, "input_x_gradient").shape == (3, 6)


def test_gradient_methods_leave_the_models_parameter_grads_alone():
    """relevance() is an explanation, not a training step: a loop that calls it between
    zero_grad() and its own backward() must not step on the map's gradients too."""
    model, x = _setup()
    for method in ("gradient", "attn_x_grad"):
        model.zero_grad(set_to_none=True)
        relevance(model, x, method)
        assert all(p.grad is None for p in model.parameters()), method
    model.zero_grad(set_to_none=True)
    model(x).sum().backward()
    before = {name: p.grad.clone() for name, p in model.named_parameters()}
    first = relevance(model, x, "gradient")
    assert all(torch.equal(p.grad, before[name]) for name, p in model.named_parameters())
    torch.testing.assert_close(relevance(model, x, "gradient"), first, rtol=0, atol=0)  # grads were there: same map



class _PerChannel(nn.Module):
    """(B, N, S * C) positions (token n of each of S sequences) -> S sequences per row through one TinyViT (no
    class token) -> the logits of sequence S - 1: channel independence as PatchTST's, so the attention sees B * S."""

    def __init__(self, sequences: int):
        super().__init__()
        self.sequences = sequences
        self.inner = TinyViT(depth=2, num_prefix_tokens=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        seqs = x.reshape(b, n, self.sequences, -1).transpose(1, 2).reshape(b * self.sequences, n, -1)  # (B*S, N, C)
        return self.inner(seqs).reshape(b, self.sequences, -1)[:, -1]  # (B, K)


def test_a_model_of_several_sequences_per_row_reads_the_one_named():
    torch.manual_seed(0)
    model, x = _PerChannel(3).eval().double(), torch.randn(2, 6, 3 * 16, dtype=torch.float64)
    seqs = x.reshape(2, 6, 3, 16).transpose(1, 2).reshape(6, 6, 16)  # row-major: b * S + s
    for method in ("raw", "rollout"):
        maps = capture(model.inner, seqs)
        a = maps.maps[-1].mean(1) if method == "raw" else rollout(maps)  # (B * S, N, N)
        for seq in (2, 0):
            want = a[[seq, 3 + seq]].mean(1)  # the query mean (no class token) of sequence seq of rows 0 and 1
            got = relevance(model, x, method, num_prefix_tokens=0, sequence=seq)
            torch.testing.assert_close(got.double(), want.double(), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="ran 6 sequences for 2 input rows; pass sequence="):
        relevance(model, x, "rollout", num_prefix_tokens=0)


def test_integrated_gradients_gap_is_zero_for_a_linear_model_at_any_steps():
    """f linear in x: the integrand is constant, so every quadrature is exact and the gap is 0."""
    from attnlab.explain.relevance import integrated_gradients

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(96, 3)).double()
    x, base = torch.randn(4, 6, 16, dtype=torch.float64), torch.randn(6, 16, dtype=torch.float64)
    target = model(x).argmax(-1)
    want = (model[1].weight[target].reshape(4, 6, 16) * (x - base)).sum(-1).detach()  # w_t . (x - b) per position
    for steps in (1, 3, 8):
        attr, gap = integrated_gradients(model, x, baseline=base.expand_as(x), steps=steps)
        assert gap.shape == (4,) and gap.dtype == torch.float64
        assert gap.max() < 1e-6, (steps, gap)  # float32 attributions: rounding only
        torch.testing.assert_close(attr.double(), want, rtol=1e-5, atol=1e-6)


def test_integrated_gradients_gap_matches_a_float64_reference_integral():
    """A nonlinear f: the reported gap is the k-node rule's distance from the true integral,
    which a 96-node float64 rule gives (and which adds up to f(x) - f(baseline))."""
    from attnlab.explain.relevance import integrated_gradients

    model, x = _setup()
    base = torch.randn_like(x)  # not 0: LayerNorm of near-0 tokens kinks the integrand near t = 0
    target = model(x).argmax(-1)
    exact = ig_float64(model, x, base, target, 96).sum(-1).detach()  # (B, N)
    torch.testing.assert_close(exact, ig_float64(model, x, base, target, 64).sum(-1).detach(), rtol=0, atol=1e-10)
    change = (model(x) - model(base)).gather(1, target[:, None])[:, 0].detach()
    torch.testing.assert_close(exact.sum(-1), change, rtol=0, atol=1e-10)  # the reference is complete
    for steps in (2, 4, 16):
        attr, gap = integrated_gradients(model, x, baseline=base, steps=steps)
        ref = ig_float64(model, x, base, target, steps).sum(-1).detach()  # the same rule, by hand
        torch.testing.assert_close(attr.double(), ref, rtol=1e-5, atol=1e-6)
        want = (ref.sum(-1) - exact.sum(-1)).abs() / exact.sum(-1).abs()
        torch.testing.assert_close(gap, want, rtol=1e-4, atol=1e-7)
        if steps == 2:
            assert want.max() > 1e-3, want  # the check is not vacuous: 2 nodes are visibly off here


class _Sharp(nn.Module):
    """f(x) = sigmoid(k (sum(w * x) - c)): along the path from 0 the integrand is a bump of width
    ~1 / (k s) in t, which few Gauss-Legendre nodes miss. IG has a closed form: attribution of
    position i = sum_d x_id w_id (sigmoid(k (s - c)) - sigmoid(-k c)) / s, s = sum(w * x)."""

    def __init__(self, w: torch.Tensor, k: float, c: float):
        super().__init__()
        self.w, self.k, self.c = w, k, c

    def forward(self, x):  # (B, N, D) -> (B, 2)
        f = torch.sigmoid(self.k * ((x * self.w).sum((1, 2)) - self.c))
        return torch.stack([f, torch.zeros_like(f)], -1)

    def exact(self, x):  # (B, N) float64, baseline 0
        s = (x * self.w).sum((1, 2))
        scale = (torch.sigmoid(self.k * (s - self.c)) - torch.sigmoid(torch.tensor(-self.k * self.c))) / s
        return (x * self.w).sum(-1) * scale[:, None]


def test_adaptive_integrated_gradients_refines_only_the_rows_off_and_meets_the_float64_integral():
    from attnlab.explain.relevance import IG_STEPS, IG_TOLERANCE, adaptive_integrated_gradients
    from attnlab.explain.relevance import integrated_gradients as ig

    g = torch.Generator().manual_seed(0)
    w = torch.rand(5, 3, generator=g, dtype=torch.float64) + 0.5
    x = torch.rand(4, 5, 3, generator=g, dtype=torch.float64)
    x[0] *= 0.3  # s far below c: a smooth row, complete at 16 steps
    model, target = _Sharp(w, 10.0, 5.0), torch.zeros(4, dtype=torch.long)
    exact = model.exact(x)
    change = model(x)[:, 0] - model(torch.zeros_like(x))[:, 0]
    torch.testing.assert_close(exact.sum(-1), change, rtol=1e-12, atol=0)  # the reference is complete

    fixed, gap16 = ig(model, x, target=target, steps=IG_STEPS)
    assert gap16[0] < IG_TOLERANCE < gap16[1:].min(), gap16  # 16 nodes miss the sharp rows by > 1%
    rel16 = ((fixed.double() - exact).abs() / exact.abs()).max()
    assert rel16 > 0.05, rel16  # and the map, not just its sum, is off

    attr, gap, used = adaptive_integrated_gradients(model, x, target=target, max_steps=64)
    assert used.dtype == torch.int64 and used.tolist() == [IG_STEPS] + [64] * 3  # 16 -> 32 -> 64
    assert gap.max() < IG_TOLERANCE, gap
    torch.testing.assert_close(attr.double(), exact, rtol=IG_TOLERANCE, atol=1e-12)  # the closed-form integral
    # Each row is Captum's IG at the steps it reports, and the gap that run's: only the rows off were recomputed.
    at64, gap64 = ig(model, x[1:], target=target[1:], steps=64)
    torch.testing.assert_close(attr[1:], at64, rtol=0, atol=0)
    torch.testing.assert_close(gap[1:], gap64, rtol=0, atol=0)
    torch.testing.assert_close(attr[:1], fixed[:1], rtol=0, atol=0)
    # max_steps = steps turns the refinement off; a cap that is no power-of-2 multiple is still reached.
    off = adaptive_integrated_gradients(model, x, target=target, max_steps=IG_STEPS)
    assert off[2].tolist() == [IG_STEPS] * 4 and torch.equal(off[1], gap16)
    assert adaptive_integrated_gradients(model, x, target=target, max_steps=48)[2].tolist() == [16, 48, 48, 48]


class _PerRowSharp(_Sharp):
    """_Sharp with a per-row offset held for the batch it was built for, repeated as Captum
    repeats the batch per step (as a text group's forward holds its token ids): it cannot take
    a subset of its rows."""

    def __init__(self, w: torch.Tensor, k: float, c: torch.Tensor):
        super().__init__(w, k, 0.0)
        self.offsets = c  # (B,)

    def forward(self, x):  # (B * steps, N, D) -> (B * steps, 2)
        c = self.offsets.repeat(x.shape[0] // self.offsets.shape[0])  # fails on any other row count
        f = torch.sigmoid(self.k * ((x * self.w).sum((1, 2)) - c))
        return torch.stack([f, torch.zeros_like(f)], -1)


def test_adaptive_integrated_gradients_never_calls_the_forward_on_a_subset_of_its_rows():
    from attnlab.explain.relevance import IG_STEPS, IG_TOLERANCE, adaptive_integrated_gradients
    from attnlab.explain.relevance import integrated_gradients as ig

    g = torch.Generator().manual_seed(1)
    w = torch.rand(5, 3, generator=g, dtype=torch.float64) + 0.5
    x = torch.rand(3, 5, 3, generator=g, dtype=torch.float64)
    x[0] *= 0.3  # smooth at 16 steps; rows 1 and 2 are sharp
    model, target = _PerRowSharp(w, 10.0, torch.tensor([5.0, 5.0, 5.0], dtype=torch.float64)), torch.zeros(3, dtype=torch.long)
    fixed, gap16 = ig(model, x, target=target, steps=IG_STEPS)
    assert gap16[0] < IG_TOLERANCE < gap16[1:].min(), gap16  # only some rows need refining
    attr, gap, used = adaptive_integrated_gradients(model, x, target=target)
    assert used[0] == IG_STEPS and (used[1:] > IG_STEPS).all() and gap.max() < IG_TOLERANCE, (used, gap)
    torch.testing.assert_close(attr.double(), _Sharp(w, 10.0, 5.0).exact(x), rtol=IG_TOLERANCE, atol=1e-12)
    torch.testing.assert_close(attr[:1], fixed[:1], rtol=0, atol=0)  # the row that passed keeps its first values
