"""Property-based tests (hypothesis) over attention(): any shapes, masks and options, every backend."""

from __future__ import annotations

import math
import os

import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from attnlab.attention import attention, positional
from tests.conftest import reference_attention

EXAMPLES = int(os.environ.get("ATTNLAB_FUZZ_EXAMPLES", "300"))


@st.composite
def cases(draw):
    g = draw(st.integers(1, 3))
    h = g * draw(st.integers(1, 3))
    b = draw(st.integers(1, 2))
    n = draw(st.integers(1, 9))
    m = draw(st.integers(n, n + 6)) if draw(st.booleans()) else draw(st.integers(1, 9))
    d = draw(st.sampled_from([1, 3, 4, 8]))
    is_causal = draw(st.booleans()) and m >= n
    window = draw(st.one_of(st.none(), st.integers(0, 4)))
    mask_kind = draw(st.sampled_from(["none", "random", "padding", "empty_row", "empty_col"]))
    bias_kind = draw(st.sampled_from(["none", "tensor", "alibi"]))
    dtype = draw(st.sampled_from([torch.float32, torch.bfloat16, torch.float64]))
    backend = draw(st.sampled_from(["math", "sdpa", "chunked", "auto"]))
    seed = draw(st.integers(0, 2**31 - 1))
    return dict(b=b, h=h, g=g, n=n, m=m, d=d, is_causal=is_causal, window=window, mask_kind=mask_kind,
                bias_kind=bias_kind, dtype=dtype, backend=backend, seed=seed)


def build(c):
    gen = torch.Generator().manual_seed(c["seed"])
    b, h, g, n, m, d = c["b"], c["h"], c["g"], c["n"], c["m"], c["d"]
    q = torch.randn(b, h, n, d, generator=gen).to(c["dtype"]).requires_grad_()
    k = torch.randn(b, g, m, d, generator=gen).to(c["dtype"]).requires_grad_()
    v = torch.randn(b, g, m, d, generator=gen).to(c["dtype"]).requires_grad_()
    mask = None
    if c["mask_kind"] == "random":
        mask = torch.rand(b, h, n, m, generator=gen) > 0.4
    elif c["mask_kind"] == "padding":
        mask = (torch.arange(m)[None, :] < torch.randint(0, m + 1, (b,), generator=gen)[:, None])[:, None, None, :]
    elif c["mask_kind"] == "empty_row":
        mask = torch.ones(b, h, n, m, dtype=torch.bool)
        mask[..., 0, :] = False
    elif c["mask_kind"] == "empty_col":
        mask = torch.ones(b, 1, 1, m, dtype=torch.bool)
        mask[..., -1] = False
    bias = None
    if c["bias_kind"] == "tensor":
        bias = torch.randn(1, h, n, m, generator=gen).to(c["dtype"])
    elif c["bias_kind"] == "alibi":
        bias = positional.alibi_bias(h)
    return q, k, v, dict(mask=mask, bias=bias, is_causal=c["is_causal"], window=c["window"])


TOL = {torch.float64: 1e-9, torch.float32: 1e-4, torch.bfloat16: 6e-2}


def check(c) -> None:
    q, k, v, kw = build(c)
    out = attention(q, k, v, backend=c["backend"], **kw)
    assert out.shape == (c["b"], c["h"], c["n"], c["d"]) and out.dtype == c["dtype"]
    assert torch.isfinite(out).all()
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref, _ = reference_attention(q64, k64, v64, **kw)
    tol = TOL[c["dtype"]] * max(1.0, math.sqrt(c["d"]))
    torch.testing.assert_close(out.double(), ref, atol=tol, rtol=tol)
    grads = torch.autograd.grad(out.float().sum(), (q, k, v))
    ref_grads = torch.autograd.grad(ref.sum(), (q64, k64, v64), allow_unused=True)
    for got, want, like in zip(grads, ref_grads, (q64, k64, v64)):
        want = torch.zeros_like(like) if want is None else want  # nothing attended: no gradient
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got.double(), want, atol=tol * 8, rtol=tol * 8)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_attention_matches_reference_for_any_input(c):
    check(c)
