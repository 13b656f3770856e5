"""Attention rollout (Abnar & Zuidema 2020) and its gradient-weighted variant (Chefer et al. 2021).

Rollout treats each layer's head-fused attention plus the residual connection,
``A = (W + I) / 2`` with rows re-normalised, as a token-mixing matrix and multiplies the
layers through: ``R = A_L @ ... @ A_1``. Row i of R says how much each input token flows
into output token i. Head fusion and ``discard_ratio`` follow jacobgil's widely used
vit-explain, with two of its bugs fixed: the row re-normalisation there divides by a
broadcast row vector (``a / a.sum(dim=-1)``, i.e. by column index), and discarding is
applied to the first batch element only. Here both are per row and per example. One
convention differs on purpose: vit-explain ranks all N*N entries, takes the lowest
``int(N*N*ratio)`` and then spares index 0, so it zeroes one fewer when the class-token entry
ranks among them; here protected entries are never ranked, and exactly ``int(N*N*ratio)``
unprotected ones are zeroed.

Gradient rollout fuses heads as ``mean_h(A_h * relu(dA_h))`` (Chefer et al., ICCV 2021,
"Generic Attention-model Explainability", rule 5; equal to ``mean_h((A_h * dA_h)^+)`` since
A >= 0), then rolls out like above: ``(F + I)`` row-normalised and multiplied through, the
aggregation of Chefer et al., CVPR 2021 (their ``compute_rollout_attention``). ICCV 2021's own
rule 6 adds without normalising, ``R <- R + F R`` from ``R = I``. The two agree to first order in
F; how closely on a trained model is measured in docs/explain.md.
"""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import torch
from torch import Tensor

__all__ = ["rollout", "gradient_rollout", "fuse_heads", "cls_to_patches", "attention_entropy", "HEAD_FUSIONS"]

HEAD_FUSIONS = ("mean", "max", "min")
MapsLike = Union[Tensor, np.ndarray, Sequence[Tensor], Sequence[np.ndarray]]


def _as_layers(maps: MapsLike, what: str) -> list[Tensor]:
    """A (L, B, H, N, N) tensor, a list of (B, H, N, N), or AttentionMaps -> list of tensors."""
    if hasattr(maps, "maps") and hasattr(maps, "names"):  # AttentionMaps, without importing capture
        maps = maps.maps
    if isinstance(maps, (Tensor, np.ndarray)):
        t = torch.as_tensor(maps)
        if t.dim() != 5:
            raise ValueError(f"{what}: a stacked map tensor must be (L, B, H, N, N), got shape {tuple(t.shape)}")
        layers = list(t.unbind(0))
    else:
        layers = [torch.as_tensor(m) for m in maps]
    if not layers:
        raise ValueError(f"{what}: no attention maps given")
    first = tuple(layers[0].shape)
    for i, m in enumerate(layers):
        if m.dim() != 4 or m.shape[-1] != m.shape[-2]:
            raise ValueError(f"{what}: layer {i} must be square self-attention (B, H, N, N), got shape {tuple(m.shape)}")
        if tuple(m.shape)[:1] + tuple(m.shape)[2:] != first[:1] + first[2:]:
            raise ValueError(f"{what}: layer {i} has shape {tuple(m.shape)}, layer 0 has {first}; B and N must agree")
    return layers


def _compute_dtype(t: Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def fuse_heads(weights: Tensor, head_fusion: str = "mean") -> Tensor:
    """Fuse the head axis. Shape: (B, H, N, M) -> (B, N, M)."""
    if head_fusion == "mean":
        return weights.mean(dim=1)
    if head_fusion == "max":
        return weights.amax(dim=1)
    if head_fusion == "min":
        return weights.amin(dim=1)
    raise ValueError(f"head_fusion must be one of {HEAD_FUSIONS}, got {head_fusion!r}")


def _discard(fused: Tensor, ratio: float, num_prefix_tokens: int) -> Tensor:
    """Zero the lowest ``ratio`` of each example's N*N fused weights, never prefix<->prefix entries.

    vit-explain protects flat index 0 (class token -> class token); with several prefix
    tokens (class + register/distillation tokens) the whole prefix block is protected.
    """
    if ratio <= 0:
        return fused
    b, n, _ = fused.shape
    count = int(n * n * ratio)
    if count == 0:
        return fused
    flat = fused.reshape(b, n * n).clone()
    ranked = flat.clone()
    if num_prefix_tokens > 0:
        protect = torch.zeros(n, n, dtype=torch.bool, device=fused.device)
        protect[:num_prefix_tokens, :num_prefix_tokens] = True
        ranked[:, protect.reshape(-1)] = float("inf")
        count = min(count, n * n - int(protect.sum()))
    lowest = ranked.topk(count, dim=-1, largest=False).indices  # (B, count)
    flat.scatter_(1, lowest, 0.0)
    return flat.reshape(b, n, n)


def _roll(fused_layers: list[Tensor], discard_ratio: float, num_prefix_tokens: int) -> Tensor:
    b, n, _ = fused_layers[0].shape
    eye = torch.eye(n, dtype=fused_layers[0].dtype, device=fused_layers[0].device)
    result = eye.expand(b, n, n)
    for fused in fused_layers:
        fused = _discard(fused, discard_ratio, num_prefix_tokens)
        a = (fused + eye) / 2  # the residual stream carries half, attention the other half
        a = a / a.sum(dim=-1, keepdim=True)  # never zero: the identity keeps every row positive
        result = a @ result
    return result


def _check_ratio(discard_ratio: float) -> None:
    if not 0.0 <= discard_ratio < 1.0:
        raise ValueError(f"discard_ratio must be in [0, 1), got {discard_ratio}")


def rollout(
    maps: MapsLike,
    head_fusion: str = "mean",
    discard_ratio: float = 0.0,
    *,
    num_prefix_tokens: int = 1,
) -> Tensor:
    """Attention rollout through all given layers (first layer first).

    Args:
        maps: (L, B, H, N, N) tensor, list of (B, H, N, N) (heads may differ per layer),
            or ``AttentionMaps``.
        head_fusion: "mean" | "max" | "min".
        discard_ratio: fraction of each layer's fused N*N weights to zero (the lowest),
            except prefix-token <-> prefix-token entries (``num_prefix_tokens``).

    Shape: -> (B, N, N), rows sum to 1. Computed in float32 (float64 if given).
    """
    _check_ratio(discard_ratio)
    layers = _as_layers(maps, "rollout")
    with torch.no_grad():
        fused = [fuse_heads(m.to(_compute_dtype(m)), head_fusion) for m in layers]
        return _roll(fused, discard_ratio, num_prefix_tokens)


def gradient_rollout(
    maps: MapsLike,
    grads: MapsLike,
    head_fusion: str = "mean",
    discard_ratio: float = 0.0,
    *,
    num_prefix_tokens: int = 1,
) -> Tensor:
    """Gradient-weighted rollout: heads fused as ``fusion_h(A_h * relu(dA_h))``.

    ``grads`` are d(target)/d(weights), e.g. ``AttentionMaps.grads()`` after
    ``capture(..., grad=True)`` and ``output[:, cls].sum().backward()``.

    Shape: maps and grads (L, B, H, N, N) or lists of (B, H, N, N) -> (B, N, N), rows sum to 1.
    """
    _check_ratio(discard_ratio)
    layers = _as_layers(maps, "gradient_rollout")
    grad_layers = _as_layers(grads, "gradient_rollout")
    if len(layers) != len(grad_layers):
        raise ValueError(f"gradient_rollout: {len(layers)} map layers but {len(grad_layers)} gradient layers")
    with torch.no_grad():
        fused = []
        for i, (a, g) in enumerate(zip(layers, grad_layers)):
            if a.shape != g.shape:
                raise ValueError(f"gradient_rollout: layer {i} map {tuple(a.shape)} and gradient {tuple(g.shape)} differ")
            dtype = _compute_dtype(a)
            fused.append(fuse_heads(a.detach().to(dtype) * g.detach().to(dtype).clamp_min(0), head_fusion))
        return _roll(fused, discard_ratio, num_prefix_tokens)


def cls_to_patches(rollout: Tensor, num_prefix_tokens: int, grid: tuple[int, int]) -> Tensor:
    """Relevance of each image patch, as a (B, h, w) map scaled to [0, 1] (divided by its max).

    With a class token (``num_prefix_tokens >= 1``) this is row 0 of the rollout (what flows
    into the class token); with mean pooling (0) it is the mean over all patch rows, since the
    prediction reads the average token. Prefix-token columns are dropped.

    Shape: rollout (B, N, N) or (N, N), N = num_prefix_tokens + h*w -> (B, h, w) or (h, w).
    """
    r = torch.as_tensor(rollout)
    single = r.dim() == 2
    r = r[None] if single else r
    h, w = grid
    n = r.shape[-1]
    if n != num_prefix_tokens + h * w:
        raise ValueError(f"cls_to_patches: N={n} tokens, but num_prefix_tokens={num_prefix_tokens} + grid {h}x{w} = {num_prefix_tokens + h * w}")
    if num_prefix_tokens >= 1:
        rel = r[:, 0, num_prefix_tokens:]
    else:
        rel = r.mean(dim=1)
    rel = rel.reshape(r.shape[0], h, w).to(_compute_dtype(rel))
    peak = rel.flatten(1).amax(dim=1).clamp_min(torch.finfo(rel.dtype).tiny)
    rel = rel / peak[:, None, None]
    return rel[0] if single else rel


def attention_entropy(weights: Tensor | np.ndarray, reduction: str = "mean") -> Tensor:
    """Shannon entropy (nats) of each attention row; 0 * log 0 counts as 0.

    ``reduction="mean"`` averages over rows that attend somewhere (all-zero, fully masked
    rows are left out); ``"none"`` returns one value per row. Uniform attention over M keys
    gives log(M), one-hot attention gives 0.

    Shape: (..., N, M) -> () or (..., N).
    """
    w = torch.as_tensor(weights)
    w = w.to(_compute_dtype(w))
    per_row = -(torch.special.xlogy(w, w)).sum(dim=-1)
    if reduction == "none":
        return per_row
    if reduction != "mean":
        raise ValueError(f"attention_entropy: reduction must be 'mean' or 'none', got {reduction!r}")
    live = w.sum(dim=-1) > 0
    if not bool(live.any()):
        return per_row.new_zeros(())
    return per_row[live].mean()
