"""Hugging Face checkpoints -> attnlab models, from a local ``save_pretrained`` directory.

Reads ``config.json`` and ``model.safetensors`` (or its shards, `attnlab.interop.weights`) only
(never pickle, never the network) and
renames tensors into the attnlab layout. transformers itself is not needed at run time.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from attnlab.checkpoint_tensors import check_fits
from attnlab.data.wordpiece import read_json_object
from attnlab.errors import CheckpointError
from attnlab.interop.weights import find_weights, read_weights
from attnlab.models.registry import create_model

__all__ = ["load_hf_vit", "load_hf_bert", "load_hf_gpt2", "read_hf_directory", "gpt2_model_fields", "gpt2_state_dict",
           "HIDDEN_ACTIVATIONS", "hidden_activation", "read_image_normalisation", "check_bert_variant", "check_gpt2_variant",
           "check_vit_variant"]


def read_hf_directory(directory: str | Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{directory} is not a Hugging Face model directory: {config_path.name} is missing")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{config_path}: cannot read ({exc})") from None
    return config, read_weights(find_weights(directory))


# ViTImageProcessor's defaults (transformers' IMAGENET_STANDARD_MEAN / _STD), used for keys a file leaves out.
_PROCESSOR_DEFAULTS = {"do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
                       "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}


def _numbers(path: Path, key: str, value: Any, *, positive: bool) -> list[float]:
    values = value if isinstance(value, list) else [value]  # a number: every channel (HF broadcasts it)
    ok = values and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                        and (v > 0 or not positive) for v in values)
    if not ok or len(values) not in (1, 3):
        kind = "positive finite numbers" if positive else "finite numbers"
        raise CheckpointError(f"{path}: {key} must be a number or 3 {kind} (one per channel), got {value!r}")
    return [float(v) for v in values]


def read_image_normalisation(directory: str | Path) -> dict[str, Any] | None:
    """How a checkpoint's image processor turns 8-bit pixels into model inputs, from its
    ``preprocessor_config.json`` (None without one), as attnlab's ``ImageSpec`` states it: the
    per-channel ``mean`` and ``std`` of pixels already divided by 255.

    transformers computes ``(p * rescale_factor - image_mean) / image_std`` on pixels p in
    0..255 (each step only when ``do_rescale`` / ``do_normalize``, ViTImageProcessor's defaults
    for missing keys); with x = p / 255 that is ``(x - mean) / std`` for
    mean = image_mean / (255 rescale_factor), std = image_std / (255 rescale_factor), which is
    image_mean / image_std themselves for the usual 1/255. The file's own values are returned too
    (provenance for ``data.json``). A bad value is a CheckpointError naming the file and key.
    """
    path = Path(directory) / "preprocessor_config.json"
    if not path.is_file():
        return None
    config = read_json_object(path)
    read = {key: config.get(key, default) if config.get(key) is not None else default
            for key, default in _PROCESSOR_DEFAULTS.items()}
    for key in ("do_rescale", "do_normalize"):
        if not isinstance(read[key], bool):
            raise CheckpointError(f"{path}: {key} must be true or false, got {read[key]!r}")
    factor = _numbers(path, "rescale_factor", read["rescale_factor"], positive=True)
    if len(factor) != 1:
        raise CheckpointError(f"{path}: rescale_factor must be one number, got {read['rescale_factor']!r}")
    mean, std = [0.0], [1.0]
    if read["do_normalize"]:
        mean = _numbers(path, "image_mean", read["image_mean"], positive=False)
        std = _numbers(path, "image_std", read["image_std"], positive=True)
    channels = max(len(mean), len(std))  # a single number holds for every channel
    mean, std = (mean * channels if len(mean) == 1 else mean), (std * channels if len(std) == 1 else std)
    scale = 255.0 * (factor[0] if read["do_rescale"] else 1.0)  # input units per [0, 1] pixel unit
    return {"file": path.name, **read, "mean": [m / scale for m in mean], "std": [s / scale for s in std]}


def _load_renamed(model: nn.Module, tensors: dict[str, Tensor], renames: dict[str, str], directory: Path) -> None:
    own = model.state_dict()
    state = {}
    for ours, theirs in renames.items():
        if theirs not in tensors:
            raise CheckpointError(f"{directory}: tensor {theirs!r} is missing (needed for {ours})")
        check_fits(directory, theirs, tensors[theirs], own[ours])
        state[ours] = tensors[theirs]
    missing = sorted(set(own) - set(state))
    if missing:
        raise CheckpointError(f"{directory}: no source for {missing[:5]}")
    model.load_state_dict(state)


def load_hf_vit(directory: str | Path) -> nn.Module:
    """A ``ViTForImageClassification`` directory -> attnlab ``VisionTransformer`` (class token, learned
    positions; ``hidden_act`` gelu_new / gelu_pytorch_tanh -> ``activation gelu_tanh``)."""
    directory = Path(directory)
    config, tensors = read_hf_directory(directory)
    activation = _check_type(directory, config, "vit", HIDDEN_ACTIVATIONS, "hidden_act")
    if "classifier.weight" not in tensors:
        raise CheckpointError(f"{directory}: no classifier head (save a ViTForImageClassification)")
    check_vit_variant(directory, config)
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
        activation=activation,
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


# A BERT or ViT config's hidden_act, or GPT-2's activation_function -> the blocks' activation
# (transformers' ACT2FN: gelu is the exact erf GELU; gelu_new and gelu_pytorch_tanh are the tanh
# approximation). Shared by the load_hf_* functions and --init (text, images, language model).
HIDDEN_ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}


def hidden_activation(where: object, config: dict[str, Any], table: dict[str, str], key: str = "hidden_act") -> str:
    """The attnlab activation for a config's ``key`` (default gelu, as transformers'), or a
    CheckpointError naming ``where``, the value and the ones supported."""
    act = config.get(key, "gelu")
    if not isinstance(act, str) or act not in table:
        raise CheckpointError(f"{where}: {key} {act!r} is not supported ({', '.join(table)})")
    return table[act]


def _check_type(directory: Path, config: dict[str, Any], model_type: str, activations: dict[str, str], key: str) -> str:
    if config.get("model_type") != model_type:
        raise CheckpointError(f"{directory}: model_type is {config.get('model_type')!r}, expected {model_type!r}")
    return hidden_activation(directory, config, activations, key)


def check_vit_variant(where: object, config: dict[str, Any]) -> None:
    """Refuse a ViT ``config.json`` without attention biases (``qkv_bias`` false): attnlab's projections have them."""
    if not config.get("qkv_bias", True):
        raise CheckpointError(f"{where}: qkv_bias false is not supported (the attention projections have biases)")


def check_bert_variant(where: object, config: dict[str, Any]) -> None:
    """Refuse a BERT ``config.json`` whose attention the attnlab encoder does not compute.

    transformers 4 wrote ``position_embedding_type`` "relative_key" / "relative_key_query"
    (Shaw et al. 2018; Huang et al. 2020): distance embeddings inside every attention layer.
    Read as absolute positions, the model would give other outputs without a word.
    """
    kind = config.get("position_embedding_type", "absolute")
    if kind != "absolute":
        raise CheckpointError(f"{where}: position_embedding_type {kind!r} is not supported (absolute only)")


def load_hf_bert(directory: str | Path) -> nn.Module:
    """A ``BertForSequenceClassification`` (or ``BertModel``) directory -> attnlab ``TextClassifier``
    (post-norm, embedding LayerNorm, token types, learned positions, tanh pooler).

    Without a classifier (a bare ``BertModel``) the model's encoder (``TextEncoder``, returning
    the last hidden states and the padding mask) comes back instead. Padding is read from the
    ids (``pad_token_id``), so inputs with padding need it where HF's ``attention_mask`` is 0.
    """
    directory = Path(directory)
    config, tensors = read_hf_directory(directory)
    activation = _check_type(directory, config, "bert", HIDDEN_ACTIVATIONS, "hidden_act")
    check_bert_variant(directory, config)
    prefix = "bert." if any(k.startswith("bert.") for k in tensors) else ""
    has_head = "classifier.weight" in tensors
    dim, depth = config["hidden_size"], config["num_hidden_layers"]
    model = create_model(
        "text-transformer", vocab_size=config["vocab_size"], num_classes=tensors["classifier.weight"].shape[0] if has_head else 2,
        max_length=config["max_position_embeddings"], dim=dim, depth=depth, num_heads=config["num_attention_heads"],
        mlp_ratio=config["intermediate_size"] / dim, dropout=0.0, embed_dropout=0.0, pos_embed="learned", pooling="first",
        norm_first=False, activation=activation, norm_eps=config.get("layer_norm_eps", 1e-12), embed_norm=True,
        type_vocab_size=config.get("type_vocab_size", 2), pooler=True, pad_id=config.get("pad_token_id") or 0,
    )
    renames = _bert_renames(prefix, depth, pooler=True)
    if has_head:
        renames.update({"head.weight": "classifier.weight", "head.bias": "classifier.bias"})
    else:  # the head stays randomly initialised and is not returned
        tensors = {**tensors, "_head.weight": model.head.weight.detach(), "_head.bias": model.head.bias.detach()}
        renames.update({"head.weight": "_head.weight", "head.bias": "_head.bias"})
    if f"{prefix}pooler.dense.weight" not in tensors:  # saved without a pooler: keep ours (unused by the encoder)
        tensors = {**tensors, f"{prefix}pooler.dense.weight": model.pooler.weight.detach(), f"{prefix}pooler.dense.bias": model.pooler.bias.detach()}
    _load_renamed(model, tensors, renames, directory)
    return (model if has_head else model.encoder).eval()


def _bert_renames(prefix: str, depth: int, *, pooler: bool) -> dict[str, str]:
    """attnlab ``TextClassifier`` parameter -> Hugging Face BERT tensor, encoder (+ pooler)."""
    emb = f"{prefix}embeddings."
    renames = {
        "encoder.token_embed.weight": emb + "word_embeddings.weight", "encoder.pos_embed.weight": emb + "position_embeddings.weight",
        "encoder.type_embed.weight": emb + "token_type_embeddings.weight", "encoder.embed_norm.weight": emb + "LayerNorm.weight",
        "encoder.embed_norm.bias": emb + "LayerNorm.bias",
    }
    if pooler:
        renames.update({"pooler.weight": f"{prefix}pooler.dense.weight", "pooler.bias": f"{prefix}pooler.dense.bias"})
    parts = {"attn.q_proj": "attention.self.query", "attn.k_proj": "attention.self.key", "attn.v_proj": "attention.self.value",
             "attn.out_proj": "attention.output.dense", "norm1": "attention.output.LayerNorm",
             "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense", "norm2": "output.LayerNorm"}
    for i in range(depth):
        for ours, theirs in parts.items():
            for kind in ("weight", "bias"):
                renames[f"encoder.blocks.{i}.{ours}.{kind}"] = f"{prefix}encoder.layer.{i}.{theirs}.{kind}"
    return renames


def gpt2_model_fields(config: dict[str, Any], activation: str) -> dict[str, Any]:
    """The ``gpt-lm`` config fields a GPT-2 ``config.json`` dictates (dropouts not included)."""
    dim = config["n_embd"]
    return {"vocab_size": config["vocab_size"], "max_length": config["n_positions"], "dim": dim, "depth": config["n_layer"],
            "num_heads": config["n_head"], "mlp_ratio": (config.get("n_inner") or 4 * dim) / dim, "pos_embed": "learned",
            "activation": activation, "norm_eps": config.get("layer_norm_epsilon", 1e-5),
            "tie_embeddings": config.get("tie_word_embeddings", True) is not False,
            "qkv_bias": True}


def check_gpt2_variant(where: object, config: dict[str, Any]) -> None:
    """Refuse a GPT-2 ``config.json`` whose attention ``gpt-lm`` does not compute: scores not
    scaled by 1/sqrt(head dim) (``scale_attn_weights`` false), also by 1/layer index, or upcast
    and reordered (Mistral's stability options). Each changes every output."""
    if config.get("scale_attn_by_inverse_layer_idx") or config.get("reorder_and_upcast_attn"):
        raise CheckpointError(f"{where}: scale_attn_by_inverse_layer_idx / reorder_and_upcast_attn are not supported")
    if config.get("scale_attn_weights", True) is False:
        raise CheckpointError(f"{where}: scale_attn_weights false is not supported (scores are scaled by 1/sqrt(head dim))")


def gpt2_state_dict(tensors: dict[str, Tensor], config: dict[str, Any], directory: Path) -> dict[str, Tensor]:
    """GPT-2 tensors renamed into the ``gpt-lm`` layout (``token_embed``, ``blocks.I.attn.q_proj``, ...).

    GPT-2 stores its projections as ``Conv1D`` (in, out) matrices with q, k, v fused; they are
    transposed and split here. The output layer is the token table, unless the config says
    ``tie_word_embeddings: false``: then it is the saved ``lm_head.weight``, as transformers
    reads it. A missing tensor raises CheckpointError naming ``directory``.
    """
    prefix = "transformer." if any(k.startswith("transformer.") for k in tensors) else ""
    dim, depth = config["n_embd"], config["n_layer"]

    def get(name: str) -> Tensor:
        if prefix + name not in tensors:
            raise CheckpointError(f"{directory}: tensor {prefix + name!r} is missing")
        return tensors[prefix + name]

    if config.get("tie_word_embeddings", True) is False:  # GPT2LMHeadModel keeps its own head at the top level
        if "lm_head.weight" not in tensors:
            raise CheckpointError(f"{directory}: tensor 'lm_head.weight' is missing (tie_word_embeddings is false: the "
                                  "output layer is not the token table)")
        head = tensors["lm_head.weight"]
    else:
        head = get("wte.weight")
    state = {"token_embed.weight": get("wte.weight"), "lm_head.weight": head, "pos_embed.weight": get("wpe.weight"),
             "norm.weight": get("ln_f.weight"), "norm.bias": get("ln_f.bias")}
    for i in range(depth):
        h, b = f"h.{i}.", f"blocks.{i}."
        qkv_w, qkv_b = get(h + "attn.c_attn.weight").t(), get(h + "attn.c_attn.bias")  # (3C, C), (3C,)
        for j, name in enumerate(("q_proj", "k_proj", "v_proj")):
            state[f"{b}attn.{name}.weight"] = qkv_w[j * dim : (j + 1) * dim]
            state[f"{b}attn.{name}.bias"] = qkv_b[j * dim : (j + 1) * dim]
        for ours, theirs in (("attn.out_proj", "attn.c_proj"), ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")):
            state[f"{b}{ours}.weight"] = get(h + theirs + ".weight").t()  # Conv1D (in, out) -> Linear (out, in)
            state[f"{b}{ours}.bias"] = get(h + theirs + ".bias")
        for ours, theirs in (("norm1", "ln_1"), ("norm2", "ln_2")):
            state[f"{b}{ours}.weight"], state[f"{b}{ours}.bias"] = get(h + theirs + ".weight"), get(h + theirs + ".bias")
    return state


def load_hf_gpt2(directory: str | Path) -> nn.Module:
    """A ``GPT2LMHeadModel`` (or ``GPT2Model``) directory -> attnlab ``TransformerLM`` (``gpt-lm``):
    pre-norm, learned positions, ``gelu_new`` = tanh GELU, output tied to the token embedding.
    """
    directory = Path(directory)
    config, tensors = read_hf_directory(directory)
    activation = _check_type(directory, config, "gpt2", HIDDEN_ACTIVATIONS, "activation_function")
    check_gpt2_variant(directory, config)
    model = create_model("gpt-lm", **gpt2_model_fields(config, activation), dropout=0.0, attn_dropout=0.0)
    state = gpt2_state_dict(tensors, config, directory)
    _load_renamed(model, state, {k: k for k in state}, directory)
    return model.eval()
