"""Linear layer whose CPU float32 matrix products go through oneDNN instead of MKL's sgemm.

``F.linear`` on a CPU sends float32 to MKL. On AMD CPUs MKL takes a slower code path, while
oneDNN (``torch.ops.mkldnn._linear_pointwise``, the kernel Inductor uses on CPU) runs the
same products, forward and both backward products, at about twice the speed with the same
float32 accuracy (as close to float64 as MKL). ``benchmarks/linear.py`` times the two side by
side (current figures in benchmarks/README.md).

``linear(x, weight, bias)`` is ``F.linear`` with that routing: CPU, float32 input and
weight, no autocast, not tracing / scripting / compiling / exporting, oneDNN present and
at least ``ONEDNN_MIN_MACS`` multiply-adds (below that oneDNN's fixed cost per call loses
to MKL). The backward is a custom ``autograd.Function`` whose two products also
run on oneDNN; with ``create_graph=True`` (double backward) they are plain differentiable
matmuls.
Everything else, and ``ATTNLAB_ONEDNN_LINEAR=0`` in the environment, keeps ``F.linear``.

Shape: x (..., K), weight (N, K), bias (N,) -> (..., N).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch._subclasses.fake_tensor import FakeTensor

__all__ = ["Linear", "linear", "onednn_linear_available", "ONEDNN_MIN_MACS"]

ONEDNN_MIN_MACS = 1 << 20  # rows * in * out; the crossover with MKL for decoding-sized rows (benchmarks/linear.py)
_STATE: dict[str, bool] = {}


def _mm(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """oneDNN x (M, K) @ weight (N, K)^T + bias -> (M, N); strided views are accepted."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def onednn_linear_available() -> bool:
    """Whether this torch build runs oneDNN's linear and it matches ``F.linear`` (probed once)."""
    if "ok" not in _STATE:
        ok = os.environ.get("ATTNLAB_ONEDNN_LINEAR", "1") != "0" and torch.backends.mkldnn.is_available()
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
    return _STATE["ok"]


def _use_onednn(x: Tensor, weight: Tensor) -> bool:
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


class _OneDNNLinear(torch.autograd.Function):
    """y = x W^T + b on oneDNN; grad_x = g W and grad_W = g^T x also on oneDNN."""

    @staticmethod
    def forward(ctx, x2: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x2, weight)
        ctx.has_bias = bias is not None
        return _mm(x2, weight, bias)  # (M, N)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        x2, weight = ctx.saved_tensors
        grad = grad.contiguous()
        # create_graph=True (double backward): differentiable aten products instead.
        mm = (lambda a, b: a.matmul(b.t())) if torch.is_grad_enabled() else _mm
        gx = mm(grad, weight.t()) if ctx.needs_input_grad[0] else None  # (M, N) @ (N, K) -> (M, K)
        gw = mm(grad.t(), x2.t()) if ctx.needs_input_grad[1] else None  # (N, M) @ (M, K) -> (N, K)
        gb = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear(x, weight, bias)``, on oneDNN where that is faster (see the module docstring)."""
    if not _use_onednn(x, weight):
        return F.linear(x, weight, bias)
    x2 = x.reshape(-1, x.shape[-1])  # (M, K)
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)):
        out = _OneDNNLinear.apply(x2, weight, bias)
    else:
        out = _mm(x2, weight, bias)
    return out.view(*x.shape[:-1], weight.shape[0])


class Linear(nn.Linear):
    """``nn.Linear`` (same arguments, same state dict) on the faster CPU path."""

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)
