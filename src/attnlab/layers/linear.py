"""Linear layer whose CPU float32 matrix products take the faster of oneDNN and MKL, by measurement.

``F.linear`` on a CPU sends float32 to MKL's sgemm. On AMD CPUs MKL takes a slower code path,
while oneDNN (``torch.ops.mkldnn._linear_pointwise``, the kernel Inductor uses on CPU) runs
the same products, forward and both backward products, at about twice the speed with the
same float32 accuracy (as close to float64 as MKL). On Intel CPUs MKL is the faster one (issue
27: 4096^2 at 325 vs 231 GFLOP/s). Which route wins is a property of the machine, so it is
not a vendor check: ``attnlab.autotune`` times both on first use of each shape class (rows,
in and out features rounded up to powers of two) and keeps the faster, separately for the
forward product (family ``linear.fwd``) and the backward's two products (``linear.bwd``),
cached per CPU model on disk. ``benchmarks/linear.py`` prints the three routes side by side.
The backward has a third candidate, ``split``: grad_x on oneDNN and grad_W on MKL. grad_W's
product reads the gradient transposed; MKL takes that as a flag, while oneDNN's linear copies
it first, which can cost more than oneDNN saves on that product.

``linear(x, weight, bias)`` is ``F.linear`` with that routing where it may apply: CPU,
float32 input and weight, no autocast, not tracing / scripting / compiling / exporting,
oneDNN present and at least ``ONEDNN_MIN_MACS`` multiply-adds (below that oneDNN's fixed cost
per call lost to MKL on the AMD CPUs measured, and Intel favours MKL anyway; decoding calls
these per token, so they skip even the look-up). When a gradient is needed and either choice
is oneDNN or still unmeasured, the product runs in a custom ``autograd.Function`` whose
backward makes the backward choice; with ``create_graph=True`` (double backward) its products
are plain differentiable matmuls. Once both choices are MKL, the call is plain ``F.linear``.

Overrides: ``ATTNLAB_ONEDNN_LINEAR=0`` keeps ``F.linear`` everywhere, ``=1`` forces oneDNN
wherever it may apply (no timing); ``ATTNLAB_AUTOTUNE=0`` also means ``F.linear`` (the plain
PyTorch route); ``attnlab.autotune.force({"linear.fwd": ..., "linear.bwd": ...})`` with
``"onednn"`` or ``"aten"`` (and for ``linear.bwd`` also ``"split"``) forces a route inside a
block (tests, benchmarks).

Shape: x (..., K), weight (N, K), bias (N,) -> (..., N).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch._subclasses.fake_tensor import FakeTensor

from attnlab import autotune

__all__ = ["Linear", "linear", "onednn_linear_available", "route_summary", "ONEDNN_MIN_MACS", "ROUTES", "BACKWARD_ROUTES",
           "ENV_VAR"]

# rows * in * out: below it oneDNN's fixed cost per call lost to MKL on Zen 4/5 (benchmarks/linear.py), and on
# Intel MKL was the faster route at every size issue 27 measured; small products skip the look-up (decoding).
ONEDNN_MIN_MACS = 1 << 20
ENV_VAR = "ATTNLAB_ONEDNN_LINEAR"  # "0": F.linear everywhere; "1": oneDNN wherever it may apply; else measured
ROUTES = ("onednn", "aten")  # candidate names in the autotune family linear.fwd; aten = F.linear (MKL)
BACKWARD_ROUTES = (*ROUTES, "split")  # linear.bwd; split = grad_x on oneDNN, grad_W on MKL
_STATE: dict[str, object] = {}


def _mm(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """oneDNN x (M, K) @ weight (N, K)^T + bias -> (M, N); strided views are accepted."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def _aten_mm(x: Tensor, weight: Tensor) -> Tensor:
    """The same product on aten's mm (MKL on CPU) -> (M, N)."""
    return x.mm(weight.t())


def onednn_linear_available() -> bool:
    """Whether this torch build runs oneDNN's linear and it matches ``F.linear`` (probed once),
    and ``ATTNLAB_ONEDNN_LINEAR`` is not 0."""
    if "ok" not in _STATE:
        ok = os.environ.get(ENV_VAR, "auto") != "0" and torch.backends.mkldnn.is_available()
        if ok:
            try:
                gen = torch.Generator().manual_seed(0)
                x, w = torch.randn(4, 8, generator=gen), torch.randn(3, 8, generator=gen)
                b = torch.randn(3, generator=gen)
                with torch.no_grad():
                    ok = bool(torch.allclose(_mm(x, w, b), F.linear(x, w, b), rtol=1e-4, atol=1e-5))
            except (RuntimeError, AttributeError, NotImplementedError):
                ok = False
        _STATE["ok"] = ok
        _STATE["forced"] = "onednn" if ok and os.environ.get(ENV_VAR) == "1" else None
    return bool(_STATE["ok"])


def route_summary() -> str:
    """How float32 CPU products are routed in this process, in words (benchmark headers)."""
    if not onednn_linear_available():
        why = f"{ENV_VAR}=0" if os.environ.get(ENV_VAR) == "0" else "no oneDNN linear in this torch build"
        return f"F.linear everywhere ({why})"
    if _STATE.get("forced"):
        return f"oneDNN forced ({ENV_VAR}=1)"
    if not autotune.enabled():
        return f"F.linear everywhere ({autotune.ENV_VAR}=0)"
    return f"oneDNN or MKL by measurement per shape class (cache {autotune.cache_file()})"


def _use_onednn(x: Tensor, weight: Tensor) -> bool:
    """Whether the oneDNN route may apply to this call (then the route is a choice, not a given)."""
    # Cheapest tests first: decoding calls this per token with products far below the threshold.
    if x.dtype != torch.float32 or weight.dtype != torch.float32 or weight.dim() != 2:
        return False
    if x.device.type != "cpu" or weight.device.type != "cpu":
        return False
    if isinstance(x, FakeTensor) or isinstance(weight, FakeTensor):
        return False  # torch.export / compile / ONNX tracing (symbolic shapes): keep the op they know
    if x.dim() == 0 or x.shape[-1] != weight.shape[1]:
        return False  # let F.linear raise its own shape error
    if x.numel() * weight.shape[0] < ONEDNN_MIN_MACS:  # rows * in * out
        return False
    if torch.is_autocast_enabled("cpu") or torch.jit.is_scripting() or torch.jit.is_tracing():
        return False
    if torch.compiler.is_compiling() or torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export():
        return False
    return onednn_linear_available()


def _key(family: str, m: int, k: int, n: int, needs: str = "") -> str:
    # float32 only reaches here; the backward's key says which gradients it computes (a frozen
    # weight halves its work and may move the crossover).
    return f"{family}|{autotune.shape_class(m, k, n)}{needs}"


def _forward_route(x2: Tensor, weight: Tensor, bias: Tensor | None) -> str:
    if _STATE.get("forced"):
        return _STATE["forced"]  # type: ignore[return-value]
    m, k = x2.shape
    key = _key("linear.fwd", m, k, weight.shape[0])
    known = autotune.lookup(key, ROUTES, default="aten")  # the per-call path: no closures, no grad-mode switch
    if known is not None:
        return known
    with torch.no_grad():  # timing must not build graphs
        return autotune.choose(key, {"aten": lambda: F.linear(x2, weight, bias), "onednn": lambda: _mm(x2, weight, bias)},
                               default="aten")


def _backward_names(need_x: bool, need_w: bool) -> tuple[str, ...]:
    """The backward's candidates: ``split`` differs from the other two only when both gradients are taken."""
    return BACKWARD_ROUTES if need_x and need_w else ROUTES


def _backward_route(grad: Tensor, x2: Tensor, weight: Tensor, need_x: bool, need_w: bool) -> str:
    if _STATE.get("forced"):
        return _STATE["forced"]  # type: ignore[return-value]
    m, k = x2.shape
    key = _key("linear.bwd", m, k, weight.shape[0], ("|gx" if need_x else "") + ("|gw" if need_w else ""))

    def run(mm_x, mm_w):
        def products():
            if need_x:
                mm_x(grad, weight.t())
            if need_w:
                mm_w(grad.t(), x2.t())
        return products

    cands = {"aten": run(_aten_mm, _aten_mm), "onednn": run(_mm, _mm)}
    if _backward_names(need_x, need_w) == BACKWARD_ROUTES:
        cands["split"] = run(_mm, _aten_mm)
    return autotune.choose(key, cands, default="aten")


class _RoutedLinear(torch.autograd.Function):
    """y = x W^T + b on the forward route; grad_x = g W and grad_W = g^T x on the backward route."""

    @staticmethod
    def forward(ctx, x2: Tensor, weight: Tensor, bias: Tensor | None, route: str) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x2, weight)
        ctx.has_bias = bias is not None
        return _mm(x2, weight, bias) if route == "onednn" else F.linear(x2, weight, bias)  # (M, N)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        x2, weight = ctx.saved_tensors
        grad = grad.contiguous()
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if torch.is_grad_enabled():
            mm_x = mm_w = lambda a, b: a.matmul(b.t())  # noqa: E731  create_graph=True (double backward): differentiable
        else:
            route = _backward_route(grad, x2, weight, need_x, need_w)
            mm_x = _aten_mm if route == "aten" else _mm
            mm_w = _mm if route == "onednn" else _aten_mm
        gx = mm_x(grad, weight.t()) if need_x else None  # (M, N) @ (N, K) -> (M, K)
        gw = mm_w(grad.t(), x2.t()) if need_w else None  # (N, M) @ (M, K) -> (N, K)
        gb = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb, None


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear(x, weight, bias)``, on whichever of oneDNN and MKL measured faster here (module docstring)."""
    if not _use_onednn(x, weight):
        return F.linear(x, weight, bias)
    x2 = x.reshape(-1, x.shape[-1])  # (M, K)
    route = _forward_route(x2, weight, bias)
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                              or (bias is not None and bias.requires_grad))
    if needs_grad:
        backward = _STATE.get("forced") or autotune.lookup(
            _key("linear.bwd", x2.shape[0], x2.shape[1], weight.shape[0],
                 ("|gx" if x.requires_grad else "") + ("|gw" if weight.requires_grad else "")),
            _backward_names(x.requires_grad, weight.requires_grad), default="aten")
        if route == "aten" and backward == "aten":
            return F.linear(x, weight, bias)  # both measured MKL: autograd's own backward, no Python hop
        out = _RoutedLinear.apply(x2, weight, bias, route)
    elif route == "onednn":
        out = _mm(x2, weight, bias)
    else:
        return F.linear(x, weight, bias)
    return out.view(*x.shape[:-1], weight.shape[0])


class Linear(nn.Linear):
    """``nn.Linear`` (same arguments, same state dict) on the faster CPU path."""

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)
