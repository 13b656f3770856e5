"""PyTorch's fused CPU flash-attention kernel, called with its log-sum-exp.

``torch.ops.aten._scaled_dot_product_flash_attention_for_cpu`` is what
``F.scaled_dot_product_attention`` runs on CPU. Calling it directly gives the per-row
log-sum-exp, and its backward can be called on tensors that are strided views, so the
banded (``banded.py``) and Toeplitz-bias (``toeplitz.py``) kernels reuse the fused tiles
without copying keys or materialising an (N, M) bias. The kernel reads ``attn_mask`` through
its strides (only the last dimension must be contiguous), so a stride-0 or overlapping view
costs no memory.

These are private ATen operators; ``available()`` checks they exist and behave, and callers
fall back to the plain-PyTorch kernels when they do not.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

__all__ = ["available", "flash_forward", "flash_backward"]


@functools.lru_cache(maxsize=1)
def available() -> bool:
    """True when this torch build has the CPU flash operators with the expected signature."""
    try:
        fwd = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
        bwd = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward
        q = torch.zeros(1, 1, 2, 8)
        mask = torch.zeros(1, 1, 2, 2)
        out, lse = fwd(q, q, q, 0.0, False, attn_mask=mask, scale=0.5)
        grads = bwd(out, q, q, q, out, lse, 0.0, False, attn_mask=mask, scale=0.5)
        return out.shape == q.shape and lse.shape == (1, 1, 2) and len(grads) == 3
    except (AttributeError, RuntimeError, TypeError):  # pragma: no cover - depends on the torch build
        return False


def flash_forward(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: float, is_causal: bool = False):
    """Fused forward. Shape: q (B, H, N, D), k/v (B, H, M, D) -> out (B, H, N, D), lse (B, H, N) float32."""
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        q, k, v, 0.0, is_causal, attn_mask=mask, scale=scale
    )


def flash_backward(grad_out: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
                   mask: Tensor | None, scale: float, is_causal: bool = False):
    """Fused backward (recomputes score tiles from ``lse``): -> (dq, dk, dv) shaped like q, k, v.

    Like q, k and v, ``grad_out`` is read through its strides (overlapping band views included);
    only a last dimension that is not contiguous is copied.
    """
    if grad_out.stride(-1) != 1:
        grad_out = grad_out.contiguous()
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
        grad_out, q, k, v, out, lse, 0.0, is_causal, attn_mask=mask, scale=scale
    )
