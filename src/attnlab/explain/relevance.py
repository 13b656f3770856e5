"""One relevance API: a score per token / patch / time step, (B, N), by any of several methods.

Why several: raw attention and rollout are not explanations by themselves (Jain & Wallace
2019; Chefer et al. 2021), so attnlab offers them beside gradient-based methods and a random
floor, and ``faithfulness`` measures which one the model agrees with.

Methods (``METHODS``):
- ``raw``: attention of one layer (default last), one head or the head mean, class-token row.
- ``rollout``: attention rollout through all layers (Abnar & Zuidema 2020).
- ``gradient``: gradient-weighted rollout, heads fused as mean(A * relu(dA)) (Chefer et al.,
  ICCV 2021, rule 5) and rolled out row-normalised (as Chefer et al., CVPR 2021, aggregate);
  how this compares with ICCV 2021's unnormalised ``R + F R`` is in ``explain/rollout.py``.
- ``attn_x_grad``: last layer's A * dA, head mean, negatives clipped.
- ``input_x_gradient`` and ``integrated_gradients`` (Sundararajan et al. 2017): Captum's, on
  the float input the model is called with (patch tokens, embeddings, pixels), summed over
  the feature dims so each position gets one score. ``integrated_gradients()`` also returns
  how far the path integral's quadrature is from complete (the attributions should sum to
  f(x) - f(baseline)), so a user can see when ``steps`` is too few.
- ``random``: a seeded uniform map, the floor every other method must beat.

The attention methods read the class-token row when ``num_prefix_tokens`` > 0 (prefix
columns dropped), otherwise the mean over query rows. Gradient methods keep the forward on
the fused kernel: ``capture(grad=True)`` forms dL/dW from V and dL/dout (see capture.py).
The model is only called, never inspected beyond its ``MultiHeadAttention`` modules, so
this works from a model and inputs alone; task adapters pass what a modality needs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from attnlab.errors import ConfigError
from attnlab.explain.capture import attention_modules, capture
from attnlab.explain.rollout import fuse_heads, gradient_rollout, rollout

__all__ = ["ATTENTION_METHODS", "IG_MAX_STEPS", "IG_STEPS", "IG_TOLERANCE", "METHODS", "adaptive_integrated_gradients",
           "integrated_gradients", "predicted_class", "relevance"]

ATTENTION_METHODS = ("raw", "rollout", "gradient", "attn_x_grad")
METHODS = ATTENTION_METHODS + ("input_x_gradient", "integrated_gradients", "random")
# Integrated Gradients' default Gauss-Legendre nodes, for the library, the report card and `attnlab explain
# --steps` alike: chosen by the completeness gap they leave on a trained model (measured in docs/explain.md).
IG_STEPS = 16
# The report card's and `attnlab explain`'s refinement (Sundararajan et al. 2017, section 3: check completeness and
# raise the steps where it is off): an example whose relative completeness gap exceeds IG_TOLERANCE is recomputed at
# twice the steps, up to IG_MAX_STEPS (measured cost on digits in docs/explain.md).
IG_TOLERANCE = 0.01
IG_MAX_STEPS = 128
# |f(x) - f(baseline)| below this counts as this in the relative completeness gap (logit units):
# a target the baseline hardly changes has no meaningful relative error, and must not divide by 0.
_GAP_FLOOR = 1e-6


def predicted_class(model: nn.Module, x: Tensor) -> Tensor:
    """argmax of the model's logits, (B,)."""
    with torch.no_grad():
        return model(x).argmax(dim=-1)


def _row(a: Tensor, prefix: int) -> Tensor:
    """(B, N, N) token-to-token relevance -> (B, N - prefix): class-token row or query mean."""
    r = a[:, 0] if prefix else a.mean(dim=1)
    return r[:, prefix:]


def _pick(r: Tensor, rows: int, sequence: int | None) -> Tensor:
    """(B * S, N) maps of S sequences per input row (row-major) -> (B, N), sequence ``sequence``
    of each row; S = 1 needs no ``sequence``."""
    if r.shape[0] == rows:
        return r
    if sequence is None or r.shape[0] % rows:
        raise ValueError(f"relevance: the model's attention ran {r.shape[0]} sequences for {rows} input rows; pass "
                         f"sequence= (which of each row's sequences the map explains)")
    return r.reshape(rows, r.shape[0] // rows, -1)[:, sequence]  # (B, N)


def _backward(model: nn.Module, x: Tensor, target: Tensor, layers=None):
    """Capture with d(target logit)/d(weights). The backward would also accumulate into every
    parameter's ``.grad`` (a training loop's, between its zero_grad and its own backward), so
    those are set aside for it and put back: the model's gradients are as they were."""
    params = [p for p in model.parameters() if p.requires_grad]
    saved = [p.grad for p in params]
    for p in params:
        p.grad = None  # else backward adds into the saved tensors in place
    try:
        maps = capture(model, x, grad=True, layers=layers)
        maps.output.gather(1, target[:, None]).sum().backward()
    finally:
        for p, g in zip(params, saved):
            p.grad = g
    return maps


def relevance(
    model: nn.Module,
    x: Tensor,
    method: str = "rollout",
    *,
    target: Tensor | None = None,
    num_prefix_tokens: int = 1,
    layer: int = -1,
    head: int | None = None,
    steps: int = IG_STEPS,
    baseline: Tensor | float = 0.0,
    seed: int = 0,
    forward: Callable[[Tensor], Tensor] | None = None,
    sequence: int | None = None,
) -> Tensor:
    """Relevance of each input position for output ``target`` (default: the argmax output: the
    predicted class, a multi-label model's most probable label, a regression model's one output).

    Args:
        x: the float input the model takes, positions on dim 1, e.g. (B, P, C) patch tokens.
        method: one of ``METHODS``.
        num_prefix_tokens: class/register tokens the model prepends (attention methods only).
        layer, head: for ``raw`` (head None: mean over heads).
        steps, baseline: Integrated Gradients' path (Captum's ``n_steps``, ``baselines``).
        forward: what Captum calls instead of ``model`` (e.g. embeddings -> logits).
        sequence: attention methods on a model that runs each input row as several sequences
            (channel-independent PatchTST: one per channel, so capture sees B * C maps): which
            of each row's sequences to read (``Positions.sequence``); None: one per row.

    Shape: -> (B, N) float32, N positions of ``x`` (attention methods: tokens after the prefix).
    Raises ConfigError (a ValueError) naming the method and the model when the model cannot support it.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown relevance method {method!r}; choose from {', '.join(METHODS)}")
    name = type(getattr(model, "model", model)).__name__
    if method in ATTENTION_METHODS and not attention_modules(model):
        raise ConfigError(f"method {method!r} needs attention maps, but {name} has no attnlab MultiHeadAttention")
    b = x.shape[0]
    if method == "random":
        g = torch.Generator().manual_seed(seed)
        n = x.shape[1]
        return torch.rand(b, n, generator=g)  # (B, N)
    if target is None:
        with torch.no_grad():
            target = (forward or model)(x).argmax(dim=-1)  # (B,)
    if method in ATTENTION_METHODS:
        return _pick(_attention_map(model, x, method, target, num_prefix_tokens, layer, head), b, sequence)
    fn = forward or model
    if method == "integrated_gradients":  # fixed steps here; the card and `attnlab explain` refine (adaptive_...)
        return integrated_gradients(fn, x, target=target, baseline=baseline, steps=steps)[0]
    from captum.attr import InputXGradient  # optional extra: attnlab[explain]

    attr = InputXGradient(fn).attribute(x.detach().clone().requires_grad_(True), target=target)
    return _per_position(attr)


def _per_position(attr: Tensor) -> Tensor:
    """Captum's attribution of x's shape -> (B, N) float32, summed over the feature dims."""
    return attr.detach().float().flatten(2).sum(-1) if attr.dim() > 2 else attr.detach().float()


def integrated_gradients(forward: Callable[[Tensor], Tensor], x: Tensor, *, target: Tensor | None = None,
                         baseline: Tensor | float = 0.0, steps: int = IG_STEPS) -> tuple[Tensor, Tensor]:
    """Integrated Gradients per position (Captum's, Gauss-Legendre with ``steps`` nodes) and its
    relative completeness gap.

    Completeness (Sundararajan et al. 2017): the exact integral's attributions sum to
    f(x) - f(baseline) for the ``target`` output. Captum's quadrature only approximates the
    integral, and on a trained transformer a few steps can miss by a large fraction of the change
    (``docs/explain.md``), while the map looks no different; the gap says how far off it is:
    |sum(attributions) - (f(x) - f(baseline))| / |f(x) - f(baseline)| per row, the denominator
    floored at 1e-6. It is 0 up to rounding for a model linear in ``x``, whatever ``steps``. The
    numerator is Captum's convergence delta (``return_convergence_delta``), and f(x) - f(baseline) is
    read back from it (sum(attributions) - delta), so no forward runs twice.

    Shape: x (B, N, ...) -> attributions (B, N) float32, gap (B,) float64.
    """
    from captum.attr import IntegratedGradients  # optional extra: attnlab[explain]

    if target is None:
        target = predicted_class(forward, x)  # (B,)
    xi = x.detach().clone().requires_grad_(True)
    attr, delta = IntegratedGradients(forward).attribute(xi, baselines=baseline, target=target, n_steps=steps,
                                                         return_convergence_delta=True)
    attr, delta = attr.detach(), delta.detach().double()  # delta = sum(attributions) - (f(x) - f(baseline)), (B,)
    change = attr.double().flatten(1).sum(1) - delta  # f(x) - f(baseline), from the same two forwards Captum ran
    return _per_position(attr), delta.abs() / change.abs().clamp_min(_GAP_FLOOR)


def adaptive_integrated_gradients(forward: Callable[[Tensor], Tensor], x: Tensor, *, target: Tensor | None = None,
                                  baseline: Tensor | float = 0.0, steps: int = IG_STEPS, max_steps: int = IG_MAX_STEPS,
                                  tolerance: float = IG_TOLERANCE) -> tuple[Tensor, Tensor, Tensor]:
    """``integrated_gradients`` at ``steps``, then, for the rows whose relative completeness gap
    exceeds ``tolerance``, again at twice the steps (capped at ``max_steps``) until every gap is
    under it or the cap is reached (Sundararajan et al. 2017 advise checking completeness and
    raising the steps). Gauss-Legendre nodes do not nest, so a refined row is recomputed whole.
    The batch is recomputed as a whole and only the rows still off take the new values: a
    ``forward`` may hold per-row state for its batch (a text group's token ids), so it is never
    called on a subset of rows. On a trained model most batches pass at the first ``steps``.
    ``max_steps`` <= ``steps`` turns the refinement off.

    Shape: x (B, N, ...) -> attributions (B, N) float32, final gap (B,) float64, steps used (B,) int64.
    """
    if steps < 1:
        raise ValueError(f"integrated gradients: steps must be >= 1, got {steps}")
    if target is None:
        target = predicted_class(forward, x)  # (B,)
    attr, gap = integrated_gradients(forward, x, target=target, baseline=baseline, steps=steps)
    used = torch.full((x.shape[0],), steps, dtype=torch.int64)
    n = steps
    while n < max_steps:
        redo = (gap > tolerance).nonzero()[:, 0]  # (R,) rows still off
        if redo.numel() == 0:
            break
        n = min(2 * n, max_steps)
        again, gap_again = integrated_gradients(forward, x, target=target, baseline=baseline, steps=n)  # (B, N), (B,)
        attr[redo], gap[redo] = again[redo], gap_again[redo]
        used[redo.cpu()] = n
    return attr, gap, used


def _attention_map(model: nn.Module, x: Tensor, method: str, target: Tensor, num_prefix_tokens: int, layer: int,
                   head: int | None) -> Tensor:
    """An attention method's map of every sequence the model's attention ran: (B * S, N)."""
    if method == "raw":
        maps = capture(model, x, layers=layer)
        return _row(fuse_heads(maps.maps[0].float(), "mean") if head is None else maps.maps[0][:, head].float(),
                    num_prefix_tokens)
    if method == "rollout":
        return _row(rollout(capture(model, x)), num_prefix_tokens).float()
    if method == "gradient":
        maps = _backward(model, x, target)
        return _row(gradient_rollout(maps, maps.grads()), num_prefix_tokens).float()
    if method == "attn_x_grad":
        maps = _backward(model, x, target, layers=-1)
        a, g = maps.maps[0].detach().float(), maps.grads()[0].detach().float()
        return _row(fuse_heads(a * g, "mean").clamp_min(0), num_prefix_tokens)
