"""Attention maps of Hugging Face models, through ``output_attentions=True``.

Sliced to the chosen layers, heads and query rows like `attnlab.explain.capture.capture`, but
only after HF has materialised every layer's full (B, H, N, N) map (HF #9387). transformers
itself is never imported here: the model is only called.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import Tensor, nn

from attnlab.explain.capture import AttentionMaps, IndexSpec, LayerSpec, _layer_indices, _Tap

__all__ = ["capture_hf"]


def _hf_attentions(out: Any) -> list[tuple[str, Tensor]]:
    get = out.get if isinstance(out, dict) else (lambda key: getattr(out, key, None))
    groups = [(key, get(key)) for key in ("attentions", "encoder_attentions", "decoder_attentions", "cross_attentions")]
    groups = [(key, value) for key, value in groups if value is not None]
    # Fused kernels give None per layer (transformers 4.x) or nothing at all (5.x, with a warning).
    if not any(len(value) for _, value in groups) or any(v is None for _, value in groups for v in value):
        raise ValueError(
            "capture_hf: the model returned no attention weights for output_attentions=True; fused kernels "
            "cannot return them (HF #31990): load the model with attn_implementation=\"eager\""
        )
    prefix = {"attentions": "", "encoder_attentions": "encoder.", "decoder_attentions": "decoder.", "cross_attentions": "cross."}
    return [(f"{prefix[key]}layer.{i}", w) for key, value in groups for i, w in enumerate(value)]


def capture_hf(
    model: nn.Module,
    inputs: dict[str, Any],
    *,
    layers: LayerSpec = None,
    heads: IndexSpec = None,
    query_rows: IndexSpec = None,
    grad: bool = False,
) -> AttentionMaps:
    """Attention maps of a Hugging Face model through ``output_attentions=True``.

    Names are ``layer.{i}`` (``encoder.layer.{i}``, ``decoder.layer.{i}``,
    ``cross.layer.{i}`` for encoder-decoders). Unlike ``capture``, HF materialises every
    layer's full map before we can slice (HF #9387), so long inputs cost B*H*N*N per layer.
    transformers itself is never imported here: the model is only called.
    """
    with contextlib.nullcontext() if grad else torch.no_grad():
        out = model(**inputs, output_attentions=True)
    found = _hf_attentions(out)
    names = [n for n, _ in found]
    keep = _layer_indices(names, layers, "capture_hf", "layer")
    tap = _Tap([], heads, query_rows, grad, None)
    for i in keep:
        tap._store(names[i], found[i][1])
    return tap.take(out)
