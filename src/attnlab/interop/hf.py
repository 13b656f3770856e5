"""Hugging Face checkpoints -> attnlab models, from a local ``save_pretrained`` directory.

Reads ``config.json`` and ``model.safetensors`` only (never pickle, never the network) and
renames tensors into the attnlab layout. transformers itself is not needed at run time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file
from torch import Tensor, nn

from attnlab.errors import CheckpointError
from attnlab.models.registry import create_model

__all__ = ["load_hf_vit", "read_hf_directory"]


def read_hf_directory(directory: str | Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    directory = Path(directory)
    config_path, weights_path = directory / "config.json", directory / "model.safetensors"
    for path in (config_path, weights_path):
        if not path.is_file():
            raise CheckpointError(f"{directory} is not a Hugging Face model directory: {path.name} is missing")
    try:
        config = json.loads(config_path.read_text())
        tensors = load_file(str(weights_path))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {directory}: {exc}") from None
    return config, tensors


def _load_renamed(model: nn.Module, tensors: dict[str, Tensor], renames: dict[str, str], directory: Path) -> None:
    own = model.state_dict()
    state = {}
    for ours, theirs in renames.items():
        if theirs not in tensors:
            raise CheckpointError(f"{directory}: tensor {theirs!r} is missing (needed for {ours})")
        if tuple(tensors[theirs].shape) != tuple(own[ours].shape):
            raise CheckpointError(f"{directory}: {theirs} has shape {tuple(tensors[theirs].shape)}, expected {tuple(own[ours].shape)}")
        state[ours] = tensors[theirs]
    missing = sorted(set(own) - set(state))
    if missing:
        raise CheckpointError(f"{directory}: no source for {missing[:5]}")
    model.load_state_dict(state)


def load_hf_vit(directory: str | Path) -> nn.Module:
    """A ``ViTForImageClassification`` directory -> attnlab ``VisionTransformer`` (class token, learned positions)."""
    directory = Path(directory)
    config, tensors = read_hf_directory(directory)
    if config.get("model_type") != "vit":
        raise CheckpointError(f"{directory}: model_type is {config.get('model_type')!r}, expected 'vit'")
    if "classifier.weight" not in tensors:
        raise CheckpointError(f"{directory}: no classifier head (save a ViTForImageClassification)")
    if config.get("hidden_act", "gelu") != "gelu":
        raise CheckpointError(f"{directory}: hidden_act {config['hidden_act']!r} is not supported (gelu only)")
    dim, heads = config["hidden_size"], config["num_attention_heads"]
    size = config["image_size"]
    model = create_model(
        "vit-tiny",
        image_size=(size, size) if isinstance(size, int) else tuple(size),
        in_channels=config.get("num_channels", 3),
        patch_size=config["patch_size"],
        num_classes=tensors["classifier.weight"].shape[0],
        dim=dim,
        depth=config["num_hidden_layers"],
        num_heads=heads,
        mlp_ratio=config["intermediate_size"] / dim,
        norm_eps=config.get("layer_norm_eps", 1e-12),
        pooling="cls",
        pos_embed="learned",
    )
    renames = {
        "cls_token": "vit.embeddings.cls_token",
        "pos_embed": "vit.embeddings.position_embeddings",
        "patch_embed.weight": "vit.embeddings.patch_embeddings.projection.weight",
        "patch_embed.bias": "vit.embeddings.patch_embeddings.projection.bias",
        "norm.weight": "vit.layernorm.weight",
        "norm.bias": "vit.layernorm.bias",
        "head.weight": "classifier.weight",
        "head.bias": "classifier.bias",
    }
    parts = {
        "norm1": "layernorm_before", "norm2": "layernorm_after",
        "attn.q_proj": "attention.attention.query", "attn.k_proj": "attention.attention.key",
        "attn.v_proj": "attention.attention.value", "attn.out_proj": "attention.output.dense",
        "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense",
    }
    for i in range(config["num_hidden_layers"]):
        for ours, theirs in parts.items():
            for kind in ("weight", "bias"):
                renames[f"blocks.{i}.{ours}.{kind}"] = f"vit.encoder.layer.{i}.{theirs}.{kind}"
    _load_renamed(model, tensors, renames, directory)
    return model.eval()
