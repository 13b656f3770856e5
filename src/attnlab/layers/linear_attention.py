"""Kernelised linear attention.

Katharopoulos et al. 2020, "Transformers are RNNs: Fast Autoregressive Transformers with
Linear Attention" (ICML). Softmax similarity is replaced by a kernel
``sim(q, k) = phi(q)^T phi(k)`` with the positive feature map ``phi(x) = elu(x) + 1``, so

    out_i = phi(q_i)^T (sum_j phi(k_j) v_j^T) / (phi(q_i)^T sum_j phi(k_j))

costs O(N D E) instead of O(N M D): the key/value summary ``sum_j phi(k_j) v_j^T`` is
computed once and shared by every query. In the causal case the sums run over ``j <= i``
(prefix sums), which is what makes the model an RNN at inference time.

There are no attention probabilities to return: the N x M matrix is never formed, which is
the point. Use ``attnlab.attention`` (softmax) when weights are needed for explanation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.layers.dropout import Dropout
from attnlab.layers.linear import Linear

__all__ = ["linear_attention", "LinearAttention"]

# Causal attention is computed block by block: inside a block the (small) L x L kernel
# matrix is masked to lower-triangular, across blocks a running (D, E) state carries the
# prefix sums. Memory is O(N L + D E) rather than the O(N D E) of a plain cumsum.
_CAUSAL_CHUNK_SIZE = 64


def _feature_map(x: Tensor) -> Tensor:
    # elu(x) + 1 > 0 everywhere, so the normaliser phi(q)^T sum phi(k) is a sum of positive
    # terms and never cancels to zero while at least one key is present (paper, eq. 7).
    return F.elu(x) + 1.0


def _check_shapes(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    is_causal: bool,
    key_padding_mask: Tensor | None,
) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 4:
            raise ValueError(
                f"linear_attention expects {name} of shape (B, H, L, D), got {tuple(t.shape)}"
            )
    B, H, N, D = q.shape
    if k.shape[:2] != (B, H) or v.shape[:2] != (B, H) or k.shape[-1] != D:
        raise ValueError(
            f"linear_attention expects q (B, H, N, D), k (B, H, M, D) and v (B, H, M, E) "
            f"with matching B, H, D; got q {tuple(q.shape)}, k {tuple(k.shape)}, "
            f"v {tuple(v.shape)}"
        )
    M = k.shape[2]
    if v.shape[2] != M:
        raise ValueError(
            f"linear_attention expects k and v with the same length M, got "
            f"k {tuple(k.shape)} and v {tuple(v.shape)}"
        )
    if is_causal and N != M:
        raise ValueError(
            f"causal linear_attention needs N == M, got q {tuple(q.shape)} and k {tuple(k.shape)}"
        )
    if key_padding_mask is not None:
        if key_padding_mask.dtype != torch.bool or tuple(key_padding_mask.shape) != (B, M):
            raise ValueError(
                f"key_padding_mask must be a bool tensor of shape (B, M) = ({B}, {M}), got "
                f"{key_padding_mask.dtype} {tuple(key_padding_mask.shape)}"
            )


def _causal_linear_attention(
    phi_q: Tensor, phi_k: Tensor, v: Tensor, *, eps: float, chunk_size: int
) -> Tensor:
    """Causal linear attention by blocks of ``chunk_size`` queries.

    Shape:
        phi_q, phi_k: (B, H, N, D); v: (B, H, N, E) -> (B, H, N, E)
    """
    B, H, N, D = phi_q.shape
    E = v.shape[-1]
    kv_state = phi_q.new_zeros(B, H, D, E)  # sum_{j < start} phi(k_j) v_j^T
    k_state = phi_q.new_zeros(B, H, D)  # sum_{j < start} phi(k_j)
    outputs = []
    for start in range(0, N, chunk_size):
        stop = min(start + chunk_size, N)
        qc = phi_q[:, :, start:stop]  # (B, H, L, D)
        kc = phi_k[:, :, start:stop]  # (B, H, L, D)
        vc = v[:, :, start:stop]  # (B, H, L, E)
        L = stop - start
        tril = torch.ones(L, L, dtype=torch.bool, device=qc.device).tril()
        # Within the block the kernel matrix is tiny; masking it gives j <= i exactly.
        scores = (qc @ kc.transpose(-2, -1)).masked_fill(~tril, 0.0)  # (B, H, L, L)
        num = scores @ vc + qc @ kv_state  # (B, H, L, E)
        den = scores.sum(-1) + torch.einsum("bhld,bhd->bhl", qc, k_state)  # (B, H, L)
        outputs.append(num / (den.unsqueeze(-1) + eps))
        # Out-of-place updates: autograd needs the previous state for the earlier blocks.
        kv_state = kv_state + kc.transpose(-2, -1) @ vc  # (B, H, D, E)
        k_state = k_state + kc.sum(dim=-2)  # (B, H, D)
    return torch.cat(outputs, dim=2)  # (B, H, N, E)


def linear_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    is_causal: bool = False,
    key_padding_mask: Tensor | None = None,
    eps: float = 1e-6,
) -> Tensor:
    """Linear attention with feature map ``phi(x) = elu(x) + 1`` (Katharopoulos 2020).

    Args:
        q: queries.
        k: keys.
        v: values; its last dimension E may differ from D.
        is_causal: query i sees keys j <= i only; requires N == M.
        key_padding_mask: True marks a real key; False keys contribute nothing.
        eps: added to the normaliser; a query with no visible key outputs zeros, not NaN.

    Shape:
        q: (B, H, N, D); k: (B, H, M, D); v: (B, H, M, E);
        key_padding_mask: (B, M) bool; output: (B, H, N, E).
    """
    _check_shapes(q, k, v, is_causal, key_padding_mask)
    out_dtype = v.dtype
    # The normaliser is a sum of M*D positive terms: in fp16/bf16 it overflows or loses
    # the small contributions, so reduced-precision inputs are computed in float32.
    if q.dtype in (torch.float16, torch.bfloat16):
        q, k, v = q.float(), k.float(), v.float()

    phi_q = _feature_map(q)  # (B, H, N, D)
    phi_k = _feature_map(k)  # (B, H, M, D)
    if key_padding_mask is not None:
        keep = key_padding_mask[:, None, :, None]  # (B, 1, M, 1)
        # where(), not multiply: a padded position holding inf/NaN must not leak (0 * inf).
        phi_k = torch.where(keep, phi_k, torch.zeros_like(phi_k))
        v = torch.where(keep, v, torch.zeros_like(v))

    if is_causal:
        out = _causal_linear_attention(phi_q, phi_k, v, eps=eps, chunk_size=_CAUSAL_CHUNK_SIZE)
    else:
        kv = torch.einsum("bhmd,bhme->bhde", phi_k, v)  # (B, H, D, E)
        k_sum = phi_k.sum(dim=-2)  # (B, H, D)
        num = torch.einsum("bhnd,bhde->bhne", phi_q, kv)  # (B, H, N, E)
        den = torch.einsum("bhnd,bhd->bhn", phi_q, k_sum)  # (B, H, N)
        out = num / (den.unsqueeze(-1) + eps)
    return out.to(out_dtype)


class LinearAttention(nn.Module):
    """Multi-head linear attention layer (Katharopoulos 2020) with q/k/v/out projections.

    Self-attention by default; pass ``context`` for cross-attention. ``mask`` is a key
    padding mask (True = real token). Dropout is applied to the projected output, since
    there is no explicit attention matrix to drop entries from.

    Shape:
        x: (B, N, C); context: (B, M, C); mask: (B, M) bool; output: (B, N, C).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        qkv_bias: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if dim <= 0 or num_heads <= 0 or dim % num_heads != 0:
            raise ValueError(
                f"dim must be a positive multiple of num_heads, got dim={dim}, "
                f"num_heads={num_heads}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q_proj = Linear(dim, dim, bias=qkv_bias)
        self.k_proj = Linear(dim, dim, bias=qkv_bias)
        self.v_proj = Linear(dim, dim, bias=qkv_bias)
        self.out_proj = Linear(dim, dim)
        self.dropout = Dropout(dropout)

    def _check(self, name: str, t: Tensor) -> None:
        if t.dim() != 3 or t.shape[-1] != self.dim:
            raise ValueError(
                f"LinearAttention expects {name} of shape (B, L, {self.dim}), got {tuple(t.shape)}"
            )

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        *,
        mask: Tensor | None = None,
        is_causal: bool = False,
    ) -> Tensor:
        self._check("x", x)
        if context is None:
            context = x
        else:
            self._check("context", context)
            if context.shape[0] != x.shape[0]:
                raise ValueError(
                    f"context batch {tuple(context.shape)} does not match x {tuple(x.shape)}"
                )
        B, N, C = x.shape
        M = context.shape[1]
        H, D = self.num_heads, self.head_dim
        q = self.q_proj(x).view(B, N, H, D).transpose(1, 2)  # (B, H, N, D)
        k = self.k_proj(context).view(B, M, H, D).transpose(1, 2)  # (B, H, M, D)
        v = self.v_proj(context).view(B, M, H, D).transpose(1, 2)  # (B, H, M, D)
        out = linear_attention(q, k, v, is_causal=is_causal, key_padding_mask=mask)
        out = out.transpose(1, 2).reshape(B, N, C)  # (B, N, C)
        return self.dropout(self.out_proj(out))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}"
