import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attnlab import autotune
from attnlab.layers import Linear
from attnlab.layers import linear as linear_mod
from attnlab.layers.linear import ONEDNN_MIN_MACS, linear, onednn_linear_available

needs_onednn = pytest.mark.skipif(not onednn_linear_available(), reason="this torch build has no oneDNN linear")


def _routes(fwd: str, bwd: str | None = None):
    """Force the forward (and backward) product route: "onednn" or "aten" (MKL); the backward also "split"."""
    return autotune.force({"linear.fwd": fwd, "linear.bwd": bwd or fwd})


@pytest.fixture
def tuning(tmp_path, monkeypatch):
    """Autotuning on, with an empty cache in a tmp dir."""
    monkeypatch.setenv(autotune.CACHE_ENV_VAR, str(tmp_path))
    monkeypatch.delenv(autotune.ENV_VAR, raising=False)
    monkeypatch.delenv(linear_mod.ENV_VAR, raising=False)
    monkeypatch.setattr(linear_mod, "_STATE", {})
    autotune.clear_memory_cache()
    yield tmp_path
    autotune.clear_memory_cache()


def _is_routed(out) -> bool:
    """Whether ``out`` came from the routed autograd function (possibly through a view)."""
    fn = out.grad_fn
    names = {type(fn).__name__, *(type(f).__name__ for f, _ in fn.next_functions if f is not None)}
    return "_RoutedLinearBackward" in names


def _reference(x, w, b, g):
    """float64 output and gradients of x W^T + b against upstream gradient g."""
    xd, wd = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    bd = None if b is None else b.detach().double().requires_grad_()
    out = F.linear(xd, wd, bd)
    out.backward(g.double())
    return out, xd.grad, wd.grad, None if bd is None else bd.grad


@needs_onednn
@pytest.mark.parametrize("routes", [("onednn", "onednn"), ("aten", "aten"), ("aten", "onednn"), ("onednn", "aten"),
                                    ("aten", "split"), ("onednn", "split"), None],
                         ids=["onednn", "mkl", "mkl-fwd-onednn-bwd", "onednn-fwd-mkl-bwd", "mkl-fwd-split-bwd",
                              "onednn-fwd-split-bwd", "autotuned"])
@pytest.mark.parametrize("shape,out_features,bias", [((8, 33, 96), 200, True), ((300, 128), 64, False), ((2, 5, 7, 256), 768, True)])
def test_every_route_forward_and_backward_match_float64(shape, out_features, bias, routes, tuning):
    """Outputs do not depend on the route: each one is within fp32 tolerance of float64 (fresh inputs)."""
    x = torch.randn(*shape, requires_grad=True)
    w = (torch.randn(out_features, shape[-1]) / shape[-1] ** 0.5).requires_grad_()
    b = torch.randn(out_features, requires_grad=True) if bias else None
    assert linear_mod._use_onednn(x, w)
    with _routes(*routes) if routes else autotune.force({}):
        out = linear(x, w, b)
        g = torch.randn_like(out)
        out.backward(g)
    if routes:  # any oneDNN product goes through the routed function; MKL for both is plain F.linear
        assert _is_routed(out) == (routes != ("aten", "aten"))
    assert out.shape == (*shape[:-1], out_features) and out.dtype == torch.float32
    ref, gx, gw, gb = _reference(x, w, b, g)
    tol = dict(rtol=1e-5, atol=1e-5 * shape[-1] ** 0.5)
    torch.testing.assert_close(out.double(), ref, **tol)
    torch.testing.assert_close(x.grad.double(), gx, **tol)
    torch.testing.assert_close(w.grad.double(), gw, rtol=1e-5, atol=1e-4 * x[..., 0].numel() ** 0.5)
    if bias:
        torch.testing.assert_close(b.grad.double(), gb, rtol=1e-5, atol=1e-4)


@needs_onednn
def test_non_contiguous_input_frozen_weight_and_no_grad():
    torch.manual_seed(3)
    x = torch.randn(96, 40, 64).transpose(0, 1).requires_grad_()  # (40, 96, 64), strided
    w = torch.randn(128, 64)  # frozen: no grad
    with _routes("onednn"):
        out = linear(x, w)
        out.sum().backward()
    torch.testing.assert_close(out.double(), F.linear(x.double(), w.double()), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(x.grad.double(), w.double().sum(0).expand(40, 96, 64), rtol=1e-5, atol=1e-4)
    with torch.no_grad(), _routes("onednn"):
        torch.testing.assert_close(linear(x, w).double(), out.double(), rtol=0, atol=0)
        sliced = torch.randn(128, 200)[:, :64]  # a strided weight view
        torch.testing.assert_close(linear(x, sliced).double(), F.linear(x.double(), sliced.double()), rtol=1e-5, atol=1e-4)


@needs_onednn
def test_tied_weight_gradients_accumulate():
    torch.manual_seed(4)
    emb = nn.Embedding(500, 64)
    ids = torch.randint(0, 500, (4, 70))
    h = emb(ids)  # (4, 70, 64)
    with _routes("onednn"):
        logits = linear(h, emb.weight)  # tied output projection, (4, 70, 500)
        logits.square().mean().backward()
    emb64 = nn.Embedding(500, 64).double()
    emb64.weight.data.copy_(emb.weight.data)
    h64 = emb64(ids)
    F.linear(h64, emb64.weight).square().mean().backward()
    torch.testing.assert_close(emb.weight.grad.double(), emb64.weight.grad, rtol=1e-4, atol=1e-7)


def test_small_products_autocast_and_other_dtypes_keep_f_linear():
    torch.manual_seed(5)
    x, w = torch.randn(1, 64), torch.randn(64, 64)  # 4,096 multiply-adds: below the threshold
    assert 64 * 64 < ONEDNN_MIN_MACS and not linear_mod._use_onednn(x, w)
    assert torch.equal(linear(x, w), F.linear(x, w))
    big_x, big_w = torch.randn(64, 256), torch.randn(256, 256)
    assert not linear_mod._use_onednn(big_x.double(), big_w.double())
    assert not linear_mod._use_onednn(big_x.bfloat16(), big_w.bfloat16())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not linear_mod._use_onednn(big_x, big_w)
        assert linear(big_x, big_w).dtype == torch.bfloat16  # autocast still applies


def test_shape_errors_come_from_f_linear():
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        linear(torch.randn(64, 300), torch.randn(256, 256))


def test_env_switch_turns_the_path_off(tuning, monkeypatch):
    monkeypatch.setenv("ATTNLAB_ONEDNN_LINEAR", "0")
    assert not onednn_linear_available()
    assert not linear_mod._use_onednn(torch.randn(64, 256), torch.randn(256, 256))
    x, w = torch.randn(64, 256, requires_grad=True), torch.randn(256, 256, requires_grad=True)
    assert not _is_routed(linear(x, w)) and not list(tuning.iterdir())  # nothing timed, nothing stored


@needs_onednn
def test_env_switch_forces_onednn_without_timing(tuning, monkeypatch):
    monkeypatch.setenv("ATTNLAB_ONEDNN_LINEAR", "1")
    x, w = torch.randn(64, 256, requires_grad=True), torch.randn(256, 256, requires_grad=True)
    out = linear(x, w)
    out.sum().backward()
    assert _is_routed(out) and not list(tuning.iterdir())
    with torch.no_grad():
        torch.testing.assert_close(linear(x, w), linear_mod._mm(x, w), rtol=0, atol=0)


@needs_onednn
def test_autotune_off_is_plain_f_linear(tuning, monkeypatch):
    monkeypatch.setenv(autotune.ENV_VAR, "0")
    x, w = torch.randn(64, 256, requires_grad=True), torch.randn(256, 256, requires_grad=True)
    out = linear(x, w)
    assert not _is_routed(out) and type(out.grad_fn).__name__ == F.linear(x, w).grad_fn.__class__.__name__
    assert not list(tuning.iterdir())


@needs_onednn
def test_routes_are_measured_once_per_shape_class_and_stored(tuning, monkeypatch):
    calls = []
    measure = autotune._measure

    def counted(candidates, *args):
        calls.append(sorted(candidates))
        return measure(candidates, *args)

    monkeypatch.setattr(autotune, "_measure", counted)
    w = torch.randn(256, 256, requires_grad=True)
    for rows in (1000, 1024, 600):  # 1000 and 1024 share the class 1024; 600 is 1024 too
        x = torch.randn(rows, 256, requires_grad=True)
        linear(x, w).sum().backward()
    assert calls == [["aten", "onednn"], ["aten", "onednn", "split"]]  # one forward, one backward decision
    with torch.no_grad():
        linear(torch.randn(3000, 256), w)  # class 4096: a new forward decision
    assert len(calls) == 3
    choices = json.loads(autotune.cache_file().read_text())["choices"]
    families = sorted(k.split("|")[0] for k in choices)
    assert families == ["linear.bwd", "linear.fwd", "linear.fwd"]
    assert all(v["choice"] in linear_mod.BACKWARD_ROUTES for v in choices.values())


@needs_onednn
def test_split_is_a_candidate_only_when_both_gradients_are_taken(tuning, monkeypatch):
    """With one gradient, split equals one of the other routes: it is not timed, and the stored choice
    counts as complete (a later process would not time it again for a missing candidate)."""
    calls = []
    measure = autotune._measure
    monkeypatch.setattr(autotune, "_measure", lambda cands, *a: calls.append(sorted(cands)) or measure(cands, *a))
    x = torch.randn(1024, 256, requires_grad=True)
    frozen = torch.randn(256, 256)
    linear(x, frozen).sum().backward()
    linear(x.detach(), frozen.clone().requires_grad_()).sum().backward()
    linear(x, frozen.clone().requires_grad_()).sum().backward()
    assert calls[1:] == [["aten", "onednn"], ["aten", "onednn"], ["aten", "onednn", "split"]]  # after the forward's
    stored = json.loads(autotune.cache_file().read_text())["choices"]
    for key, entry in stored.items():
        if key.startswith("linear.bwd"):
            needs = ("|gx" in key, "|gw" in key)
            assert sorted(entry["median_ms"]) == sorted(linear_mod._backward_names(*needs))
            assert not autotune._new_candidates(entry, linear_mod._backward_names(*needs))


def test_module_is_an_nn_linear_with_the_same_state_dict():
    torch.manual_seed(6)
    ours, ref = Linear(256, 512), nn.Linear(256, 512)
    assert isinstance(ours, nn.Linear)
    assert list(ours.state_dict()) == list(ref.state_dict())
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(3, 20, 256, dtype=torch.float64).float()
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


@needs_onednn
def test_double_backward_matches_f_linear():
    """create_graph=True (e.g. a gradient penalty) goes through differentiable products."""
    torch.manual_seed(7)
    x0 = torch.randn(64, 128)
    w0 = torch.randn(256, 128) / 128**0.5

    def penalty(fn):
        x, w = x0.clone().requires_grad_(), w0.clone().requires_grad_()
        y = torch.tanh(fn(x, w))
        (gx,) = torch.autograd.grad(y.sum(), x, create_graph=True)
        gx.square().sum().backward()
        return x.grad, w.grad

    assert linear_mod._use_onednn(x0, w0)
    with _routes("onednn"):
        routed = penalty(linear)
    for ours, ref in zip(routed, penalty(F.linear)):
        torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)
