"""Which backend ``attention(backend="auto")`` runs: the routes that can run a call, and on CPU
the faster of them by measurement on the machine in use.

Several backends compute the same attention (tests/attention/test_routing.py checks each
against float64), and which is fastest depends on the CPU: the fixed costs of the fused
banded / Toeplitz paths (``banded.py``, ``toeplitz.py``) against SDPA with a small dense
bias or mask, SDPA's fused bf16/fp16 backward against the explicit fp32 math at short
lengths, the block-wise kernel against SDPA with a dense window mask. The constants below
were measured on one AMD machine (the crossovers quoted beside them); another CPU, thread
count or ISA moves them. So on CPU each call's candidates (the routes that can express it
and stay within the memory limits) are timed once per shape class with ``attnlab.autotune``
(family ``attention.route``) and the faster one is kept, cached per CPU model:

- the key is the shape class (heads of the timed slice, N, M, D, window, bucketed to powers
  of two), dtype, whether a gradient will be taken, the structure (causal, mask, bias kind,
  dropout, GQA) and the candidate set;
- candidates run on a slice of the call's own inputs, detached: the first batch row and at
  most ``_TUNE_HEADS`` query heads (whole key/value groups). Every route's cost is linear in
  batch and heads, so the slice ranks them as the whole call would. Forward only for
  inference, forward + backward (into q, k, v and the bias's tensors) when a gradient will
  be taken; the caller's graph, its ``.grad`` fields and its random stream are untouched;
- only shapes near a crossover are timed: scores per (batch, head) within ``_TUNE_SPAN``
  times a default threshold, at most ``_TUNE_MAX_SCORES`` (bucketed), and at least
  ``_TUNE_MIN_ROWS`` queries (decoding steps skip the look-up). Elsewhere the constants
  decide, as they do with ``ATTNLAB_AUTOTUNE=0``.

Fixed, never measured: the memory limits. A route that would hold a dense (B, H, N, M)
tensor past ``_CPU_DENSE_LIMIT_BYTES`` (the math scores, SDPA given a callable bias or a
window as a dense tensor) is no candidate at all; a tensor mask or bias the caller passed is
already dense, so SDPA stays a candidate there. CUDA keeps the fixed rules (SDPA unless the
dense form would not fit: the Python-tiled kernel is far slower there).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor
from torch._subclasses.fake_tensor import FakeTensor

from attnlab import autotune
from attnlab.attention.banded import banded_applicable
from attnlab.attention.toeplitz import toeplitz_applicable

__all__ = ["pick_backend", "default_backend", "candidates", "dense_or_chunked", "tracing", "FAMILY", "ROUTES"]

FAMILY = "attention.route"  # autotune family: autotune.force({FAMILY: "banded"}) in tests and benchmarks
ROUTES = ("sdpa", "math", "chunked", "banded", "toeplitz")

# The defaults (ATTNLAB_AUTOTUNE=0, CUDA, and shapes outside the timed range).
# Narrow windows go block-wise above this many scores per (batch, head).
_AUTO_CHUNKED_MIN_SCORES = 1024 * 1024
# The CPU fused banded / Toeplitz paths pay a fixed cost (flips, band views, u); below this
# many scores per (batch, head) SDPA with a small dense bias or mask was as fast (the crossover
# lay between N=256 and N=512 on a Zen 4; benchmarks/attention.py).
_AUTO_FUSED_MIN_SCORES = 512 * 512
# On CPU, SDPA's fused backward in bf16/fp16 has a large fixed cost per (batch, head): for short
# sequences the explicit fp32 math was faster (break-even near N=128 on a Zen 4). Only when a
# gradient will be taken.
_CPU_HALF_MATH_MAX_SCORES = 96 * 96
# Memory limits on the dense (B, H, N, M) float32 form: fixed, never a measured choice.
_CUDA_DENSE_LIMIT_BYTES = 4 * 1024**3
_CPU_DENSE_LIMIT_BYTES = 1024**3

# The timed range. A route is a candidate within _TUNE_SPAN times its default threshold's scores
# (bucketed N * M per batch and head); nothing above _TUNE_MAX_SCORES is timed (the dense
# candidates' cost grows as N * M, and there the fused paths' lead only grows); the explicit
# fp32 math is a candidate up to _HALF_MATH_TUNE_MAX_SCORES (it holds the scores).
_TUNE_SPAN = 16
_TUNE_MAX_SCORES = 2048 * 2048
_HALF_MATH_TUNE_MAX_SCORES = 512 * 512
_TUNE_MIN_ROWS = 16  # fewer queries (decoding): the defaults, without even a look-up
_TUNE_HEADS = 4  # query heads the candidates are timed on (whole key/value groups, at least one)

_HALF = (torch.float16, torch.bfloat16)


def _bucket(x: int) -> int:
    return 1 << max(0, int(x) - 1).bit_length()


def _is_callable_bias(bias) -> bool:
    return bias is not None and not isinstance(bias, Tensor) and callable(bias)


def _qkv_grad(q: Tensor, k: Tensor, v: Tensor) -> bool:
    return torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)


def _bias_params(bias) -> list[Tensor]:
    """Tensors a gradient reaches through the bias: a tensor bias itself, or a callable's ``tensors``."""
    if isinstance(bias, Tensor):
        return [bias] if bias.requires_grad else []
    return [t for t in getattr(bias, "tensors", ()) if isinstance(t, Tensor) and t.requires_grad]


def dense_or_chunked(q: Tensor, n: int, m: int, bias, window: int | None) -> str:
    """The default among SDPA and the block-wise kernel: block-wise where a callable bias or a
    window would need a dense tensor past the memory limit, or (CPU) for a narrow window at
    long N; else SDPA. Traced (export, compile), the graph serves every batch size: one row is
    sized (a position bias is (1, H, N, M), shared by the rows), as a test on the symbolic batch
    would be a guard that a dynamic batch violates (torch.export then refuses the model)."""
    rows = q.shape[1] if tracing(q) else q.shape[0] * q.shape[1]
    dense_bytes = rows * n * m * 4
    limit = _CUDA_DENSE_LIMIT_BYTES if q.is_cuda else _CPU_DENSE_LIMIT_BYTES
    if (_is_callable_bias(bias) or window is not None) and dense_bytes > limit:
        return "chunked"
    if not q.is_cuda and window is not None and n * m >= _AUTO_CHUNKED_MIN_SCORES and (2 * window + 1) * 4 <= m:
        return "chunked"
    return "sdpa"


def default_backend(q: Tensor, k: Tensor, v: Tensor, n: int, m: int, bias, window: int | None,
                    mask: Tensor | None = None, dropout_p: float = 0.0) -> str:
    """The fixed rules (``ATTNLAB_AUTOTUNE=0``): SDPA whenever it can run plainly; on CPU, short
    half-precision training on the fp32 math, a window alone on the banded kernel and a
    relative-position bias on the Toeplitz one from ``_AUTO_FUSED_MIN_SCORES`` scores; else
    ``dense_or_chunked``."""
    if not q.is_cuda and q.dtype in _HALF and n * m <= _CPU_HALF_MATH_MAX_SCORES and _qkv_grad(q, k, v):
        return "math"
    if not q.is_cuda and n * m >= _AUTO_FUSED_MIN_SCORES:
        if window is not None and bias is None and mask is None and dropout_p == 0 and banded_applicable(q, k, v, window):
            return "banded"
        if toeplitz_applicable(q, k, v, bias, mask, window, dropout_p):
            return "toeplitz"
    return dense_or_chunked(q, n, m, bias, window)


def candidates(q: Tensor, k: Tensor, v: Tensor, n: int, m: int, bias, window: int | None,
               mask: Tensor | None = None, dropout_p: float = 0.0) -> tuple[str, ...]:
    """The routes timed for this call (sorted; always the default's), or the default alone
    outside the timed range, on CUDA, or where nothing else can run within the memory limits."""
    default = default_backend(q, k, v, n, m, bias, window, mask, dropout_p)
    return _candidates(default, q, k, v, n, m, bias, window, mask, dropout_p)


def _candidates(default: str, q: Tensor, k: Tensor, v: Tensor, n: int, m: int, bias, window: int | None,
                mask: Tensor | None, dropout_p: float) -> tuple[str, ...]:
    scores = _bucket(n) * _bucket(m)
    if q.device.type != "cpu" or n < _TUNE_MIN_ROWS or scores > _TUNE_MAX_SCORES:
        return (default,)
    fits = q.shape[0] * q.shape[1] * n * m * 4 <= _CPU_DENSE_LIMIT_BYTES
    found = {default}
    if fits or not (_is_callable_bias(bias) or window is not None):  # a caller's tensor mask/bias is dense already
        found.add("sdpa")
    if q.dtype in _HALF and fits and scores <= _HALF_MATH_TUNE_MAX_SCORES and _qkv_grad(q, k, v):
        found.add("math")
    banded = (window is not None and bias is None and mask is None and dropout_p == 0
              and banded_applicable(q, k, v, window))
    if scores * _TUNE_SPAN >= _AUTO_FUSED_MIN_SCORES:
        if banded:
            found.add("banded")
        if toeplitz_applicable(q, k, v, bias, mask, window, dropout_p):
            found.add("toeplitz")
    # The block-wise kernel skips what a window excludes too, but in Python tiles: it competes
    # with SDPA's dense mask only where the fused band cannot run (float64, a mask or bias, M < N).
    if (window is not None and not banded and (2 * window + 1) * 4 <= m
            and scores * _TUNE_SPAN >= _AUTO_CHUNKED_MIN_SCORES):
        found.add("chunked")
    return tuple(sorted(found))


def _slice_heads(t: Tensor | None, heads: int) -> Tensor | None:
    """The first batch row and ``heads`` heads of a tensor broadcastable to (B, H, N, M)."""
    if t is None:
        return None
    t = t.reshape((1,) * (4 - t.dim()) + tuple(t.shape)) if t.dim() < 4 else t
    return t[:1, :heads]


def _route_key(q: Tensor, k: Tensor, v: Tensor, heads: int, mask, bias, is_causal: bool, window, dropout_p: float,
               needs_grad: bool, names: tuple[str, ...]) -> str:
    sizes = (heads, q.shape[2], k.shape[2], q.shape[3]) + ((window + 1,) if window is not None else ())
    parts = [autotune.shape_class(*sizes, dtype=q.dtype, grad=needs_grad), "causal" if is_causal else "full"]
    if window is not None:
        parts.append("window")
    if mask is not None:
        parts.append("mask")
    if isinstance(bias, Tensor):
        parts.append("tbias")
    elif bias is not None:
        parts.append(("rel" if getattr(bias, "translation_invariant", False) else "fbias")
                     + ("-learned" if _bias_params(bias) else ""))
    if dropout_p > 0:
        parts.append("dropout")
    if q.shape[1] != k.shape[1]:
        parts.append(f"gqa{q.shape[1] // k.shape[1]}")
    if v.shape[-1] != q.shape[-1]:
        parts.append(f"dv{_bucket(v.shape[-1])}")
    return f"{FAMILY}|{'|'.join(parts)}|{'+'.join(names)}"


def tracing(q: Tensor) -> bool:
    """Whether this call is being traced (export, compile, ONNX, jit): sizes may be symbolic."""
    return (isinstance(q, FakeTensor) or torch.jit.is_tracing() or torch.compiler.is_compiling()
            or torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export())


def pick_backend(q: Tensor, k: Tensor, v: Tensor, n: int, m: int, bias, window: int | None,
                 mask: Tensor | None = None, dropout_p: float = 0.0, *, is_causal: bool = False,
                 scale: float | None = None, run: Callable[..., Tensor] | None = None) -> str:
    """The backend ``"auto"`` runs: the default alone, else the measured (or forced) choice among
    ``candidates``. ``run(backend, q, k, v, mask, bias, is_causal, window, scale, dropout_p)``
    executes a route on the timing slice (``functional._execute``); without it nothing is timed
    and an unmeasured class gets the default."""
    default = default_backend(q, k, v, n, m, bias, window, mask, dropout_p)
    if tracing(q):  # export / compile: symbolic sizes, nothing to time; the fixed rules as before
        return default
    names = _candidates(default, q, k, v, n, m, bias, window, mask, dropout_p)
    if len(names) == 1:
        return default
    g = k.shape[1]
    repeats = q.shape[1] // g
    groups = max(1, min(g, -(-min(q.shape[1], _TUNE_HEADS) // repeats)))  # whole groups, >= _TUNE_HEADS heads if there are
    heads = groups * repeats
    bias_grads = _bias_params(bias)
    needs_grad = _qkv_grad(q, k, v) or (torch.is_grad_enabled() and bool(bias_grads))
    key = _route_key(q, k, v, heads, mask, bias, is_causal, window, dropout_p, needs_grad, names)
    name = autotune.lookup(key, names, default=default)
    if name is not None or run is None:
        return name or default
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    with torch.random.fork_rng(devices=[]), torch.no_grad():  # timing draws no numbers from the caller's stream
        leaves = [t.detach()[:1, :c].clone().requires_grad_(t.requires_grad)
                  for t, c in ((q, heads), (k, groups), (v, groups))]
        mask_s = _slice_heads(mask, heads)
        if isinstance(bias, Tensor):  # a fresh leaf: the timing never reaches the caller's tensor
            bias_s = _slice_heads(bias.detach(), heads).clone().requires_grad_(bool(bias_grads))
            wrt_bias = [bias_s] if bias_grads else []
        else:  # a callable's own tensors: autograd.grad returns their gradients, .grad stays as it was
            bias_s, wrt_bias = bias, bias_grads
        wrt = [t for t in leaves if t.requires_grad] + wrt_bias
        upstream = torch.randn(1, heads, n, v.shape[-1], dtype=q.dtype, device=q.device)

        def route(backend: str) -> Callable[[], object]:
            if not needs_grad:
                return lambda: run(backend, *leaves, mask_s, bias_s, is_causal, window, scale, dropout_p)

            def forward_backward() -> None:
                with torch.enable_grad():
                    out = run(backend, *leaves, mask_s, bias_s, is_causal, window, scale, dropout_p)
                    torch.autograd.grad(out, wrt, upstream, allow_unused=True)
            return forward_backward

        return autotune.choose(key, {nm: route(nm) for nm in names}, default=default)
