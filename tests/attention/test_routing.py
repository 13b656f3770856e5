"""auto's CPU routes are a measured choice (attention/routing.py): every candidate gives the
float64 reference's outputs and gradients, the faster one on a synthetic cost is taken, and
ATTNLAB_AUTOTUNE=0 keeps the fixed thresholds exactly."""

from __future__ import annotations

import time

import pytest
import torch

from attnlab import autotune
from attnlab.attention import flash_cpu, functional, positional, routing
from attnlab.attention.functional import attention, auto_backend
from attnlab.layers import RelativePositionBias
from tests.conftest import reference_attention

pytestmark = [
    pytest.mark.skipif(torch.get_default_device().type != "cpu", reason="CPU routes"),
    pytest.mark.skipif(not flash_cpu.available(), reason="this torch lacks the CPU flash operators"),
]

TOL = {torch.float32: dict(atol=2e-5, rtol=1e-4), torch.float64: dict(atol=1e-10, rtol=1e-8),
       torch.bfloat16: dict(atol=4e-2, rtol=4e-2)}


def _padding(b: int, m: int) -> torch.Tensor:
    mask = torch.ones(b, 1, 1, m, dtype=torch.bool)
    mask[0, ..., m - m // 3 :] = False
    return mask


def _t5(h: int) -> tuple:
    module = RelativePositionBias(h)
    with torch.no_grad():
        module.embedding.weight.normal_(0.0, 0.5)
    return module.bias_function(), [module.embedding.weight]


# name: (dtype, B, H, G, N, M, D, kwargs builder, routes expected among the candidates)
CASES = {
    "window": (torch.float32, 2, 4, 2, 130, 130, 16, lambda h, b, m: ({"window": 8}, []), {"banded", "sdpa"}),
    "window-bf16": (torch.bfloat16, 1, 2, 2, 140, 150, 16, lambda h, b, m: ({"window": 8, "is_causal": True}, []),
                    {"banded", "sdpa"}),
    "alibi": (torch.float32, 1, 4, 4, 130, 130, 16, lambda h, b, m: ({"bias": positional.alibi_bias(h), "is_causal": True}, []),
              {"toeplitz", "sdpa"}),
    "t5": (torch.float32, 2, 2, 1, 130, 140, 16, lambda h, b, m: (lambda fn, p: ({"bias": fn}, p))(*_t5(h)),
           {"toeplitz", "sdpa"}),
    "window-mask": (torch.float32, 2, 2, 2, 200, 200, 8, lambda h, b, m: ({"window": 8, "mask": _padding(b, m)}, []),
                    {"chunked", "sdpa"}),
    "window-float64": (torch.float64, 1, 2, 1, 200, 200, 8, lambda h, b, m: ({"window": 10}, []), {"chunked", "sdpa"}),
    "short-bf16": (torch.bfloat16, 2, 4, 2, 40, 33, 16, lambda h, b, m: ({"mask": _padding(b, m)}, []), {"math", "sdpa"}),
}


def _inputs(dtype, b, h, g, n, m, d):
    q = torch.randn(b, h, n, d).to(dtype).requires_grad_()
    k, v = (torch.randn(b, g, m, d).to(dtype).requires_grad_() for _ in range(2))
    return q, k, v


@pytest.mark.parametrize("case", list(CASES))
def test_every_route_matches_the_float64_reference(case, autotune_cache):
    """Outputs and gradients (q, k, v and a learned bias) do not depend on the route."""
    dtype, b, h, g, n, m, d, build, expected = CASES[case]
    q, k, v = _inputs(dtype, b, h, g, n, m, d)
    kwargs, params = build(h, b, m)
    names = routing.candidates(q, k, v, n, m, kwargs.get("bias"), kwargs.get("window"), kwargs.get("mask"))
    assert expected <= set(names), names
    ref, _ = reference_attention(q, k, v, **kwargs)
    w = torch.randn_like(ref)
    want = torch.autograd.grad((ref * w).sum(), [q, k, v, *params])
    tol = TOL[dtype]
    for name in names:
        with autotune.force({routing.FAMILY: name}):
            assert auto_backend(q, k, v, **kwargs) == name
            out = attention(q, k, v, **kwargs)
        torch.testing.assert_close(out.double(), ref, **tol, msg=lambda s: f"{name}: {s}")
        got = torch.autograd.grad((out.double() * w).sum(), [q, k, v, *params])
        for a, b_ in zip(got, want):
            scale = b_.abs().max().clamp(min=1.0)
            torch.testing.assert_close(a.double() / scale, b_.double() / scale, **tol, msg=lambda s: f"{name}: {s}")
    out = attention(q, k, v, **kwargs)  # as measured here
    torch.testing.assert_close(out.double(), ref, **tol)


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


@pytest.mark.parametrize("case", ["window", "alibi", "short-bf16", "window-mask"])
def test_the_faster_route_is_chosen_on_a_synthetic_cost(case, autotune_cache, monkeypatch):
    """Each candidate in turn made 3x cheaper than the others is the one auto then runs."""
    dtype, b, h, g, n, m, d, build, _ = CASES[case]
    q, k, v = _inputs(dtype, b, h, g, n, m, d)
    kwargs, _ = build(h, b, m)
    names = routing.candidates(q, k, v, n, m, kwargs.get("bias"), kwargs.get("window"), kwargs.get("mask"))
    measure = autotune._measure
    ran = []
    execute = functional._execute
    monkeypatch.setattr(functional, "_execute", lambda backend, *a: ran.append(backend) or execute(backend, *a))
    for fast in names:
        seen = []

        def synthetic(cands, *args, fast=fast):
            if not set(cands) <= set(routing.ROUTES):  # the banded kernel's own block sizes: really timed
                return measure(cands, *args)
            seen.append(sorted(cands))
            for name in cands:
                cands[name]()  # each real route runs on the timing slice (it must work there) ...
            costs = {name: (lambda c=6e-4 if name == fast else 1.8e-3: _spin(c)) for name in cands}
            return measure(costs, *args)  # ... and the decision sees only the synthetic cost

        monkeypatch.setattr(autotune, "_measure", synthetic)
        autotune.clear_memory_cache()
        for f in autotune_cache.glob("autotune-*.json"):
            f.unlink()
        attention(q, k, v, **kwargs)
        assert seen == [list(names)] and ran[-1] == fast
        attention(q, k, v, **kwargs)  # the choice is kept: nothing timed again
        assert len(seen) == 1 and ran[-1] == fast and auto_backend(q, k, v, **kwargs) == fast


def test_timing_leaves_the_callers_graph_gradients_and_random_stream_alone(autotune_cache, monkeypatch):
    calls = []
    measure = autotune._measure
    monkeypatch.setattr(autotune, "_measure", lambda cands, *a: calls.append(sorted(cands)) or measure(cands, *a))
    fn, (table,) = _t5(2)
    q, k, v = _inputs(torch.float32, 1, 2, 2, 130, 130, 16)
    state = torch.get_rng_state()
    assert auto_backend(q, k, v, bias=fn) in ("sdpa", "toeplitz")
    assert calls == [["sdpa", "toeplitz"]]
    assert torch.equal(torch.get_rng_state(), state)
    assert q.grad is None and table.grad is None
    q2, k2, v2 = _inputs(torch.float32, 1, 2, 2, 200, 250, 16)  # the same class (256 x 256)
    attention(q2, k2, v2, bias=fn).sum().backward()
    with torch.no_grad():
        attention(q2, k2, v2, bias=fn)  # inference: a class of its own
    assert len(calls) == 2 and {k.split("|")[0] for k in autotune.choices()} >= {routing.FAMILY}


def test_memory_limits_stay_fixed(autotune_cache, monkeypatch):
    """Past the dense limit a callable bias or a window never gets SDPA or the math as a candidate."""
    monkeypatch.setattr(routing, "_CPU_DENSE_LIMIT_BYTES", 1024)
    q, k, v = _inputs(torch.bfloat16, 1, 2, 2, 128, 128, 16)  # training in bf16: the math would be a candidate
    assert routing.candidates(q, k, v, 128, 128, positional.alibi_bias(2), None) == ("chunked", "toeplitz")
    assert routing.candidates(q, k, v, 128, 128, None, 4) == ("banded", "chunked")
    # a tensor bias is dense already: SDPA stays, the math (more dense tensors) does not
    assert routing.candidates(q, k, v, 128, 128, torch.zeros(1, 2, 128, 128), None) == ("sdpa",)
    monkeypatch.setattr(routing, "_CPU_DENSE_LIMIT_BYTES", 1024**3)
    assert routing.candidates(q, k, v, 128, 128, torch.zeros(1, 2, 128, 128), None) == ("math", "sdpa")


def _fixed(dtype, n, m, *, grad=True, **kwargs) -> str:
    q, k, v = _inputs(dtype, 1, 2, 2, n, m, 8)
    if not grad:
        q, k, v = q.detach(), k.detach(), v.detach()
    return auto_backend(q, k, v, **kwargs)


def test_autotune_off_keeps_the_fixed_thresholds(autotune_cache, monkeypatch):
    """ATTNLAB_AUTOTUNE=0: the constants measured on one Zen 4 decide, exactly at their edges."""
    monkeypatch.setenv(autotune.ENV_VAR, "0")
    monkeypatch.setattr(autotune, "_measure", lambda *a: pytest.fail("timed with autotuning off"))
    bf16, f32 = torch.bfloat16, torch.float32
    alibi = positional.alibi_bias(2)
    pad = _padding(1, 1024)
    cases = [
        ((bf16, 96, 96), {}, "math"),  # 96 * 96 scores: the half-precision training limit
        ((bf16, 96, 97), {}, "sdpa"),
        ((bf16, 96, 96, ), {"grad": False}, "sdpa"),  # inference keeps SDPA's fused forward
        ((f32, 64, 64), {}, "sdpa"),
        ((f32, 511, 512), {"window": 32}, "sdpa"),  # below 512 * 512 scores: SDPA + a dense mask
        ((f32, 512, 512), {"window": 32}, "banded"),
        ((f32, 511, 512), {"bias": alibi}, "sdpa"),
        ((f32, 512, 512), {"bias": alibi}, "toeplitz"),
        ((f32, 1023, 1024), {"window": 8, "mask": pad}, "sdpa"),  # below 1024 * 1024: SDPA
        ((f32, 1024, 1024), {"window": 8, "mask": pad}, "chunked"),
        ((f32, 1024, 1024), {"window": 128, "mask": pad}, "sdpa"),  # (2W + 1) * 4 > M: too wide to pay
    ]
    for args, kwargs, want in cases:
        assert _fixed(*args, **kwargs) == want, (args, kwargs)
    assert not list(autotune_cache.glob("autotune-*.json"))


def test_outside_the_timed_range_the_constants_decide_without_timing(autotune_cache, monkeypatch):
    monkeypatch.setattr(autotune, "_measure", lambda *a: pytest.fail("timed outside the range"))
    assert _fixed(torch.bfloat16, 8, 64) == "math"  # fewer than 16 queries: no look-up at all
    assert _fixed(torch.float32, 1, 4096, bias=positional.alibi_bias(2), grad=False) == "sdpa"  # a decoding step
    assert _fixed(torch.float32, 4096, 4096, window=64) == "banded"  # past 2048 * 2048 scores
    assert _fixed(torch.float32, 64, 64, window=8) == "sdpa"  # far below the fused paths' crossover
