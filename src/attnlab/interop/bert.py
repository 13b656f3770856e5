"""A BERT-family checkpoint (Devlin et al. 2019; MiniLM, Wang et al. 2020) as the start of a fine-tuning run.

``open_bert_checkpoint(directory)`` checks a Hugging Face ``save_pretrained`` directory
before anything is built or written: ``config.json`` with ``model_type`` "bert", absolute
positions and a supported activation, weights as ``model.safetensors`` or its shards (a directory holding
only ``pytorch_model.bin`` is refused: unpickling can run code). It reads how the checkpoint
pools: a sentence-transformers ``1_Pooling/config.json`` (mean / CLS / max over tokens), else
BERT's tanh pooler over ``[CLS]`` when the weights have one. ``BertCheckpoint.load_into`` then
copies the encoder (and pooler) into a ``text-transformer`` whose head is new, sized by the
data's classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from attnlab.checkpoint_tensors import check_fits
from attnlab.data.wordpiece import read_json_object
from attnlab.errors import CheckpointError
from attnlab.interop.hf import HIDDEN_ACTIVATIONS, _bert_renames, check_bert_variant, hidden_activation
from attnlab.interop.weights import file_sha256, find_weights, read_weights, weight_names, weights_sha256

__all__ = ["BertCheckpoint", "open_bert_checkpoint", "file_sha256"]

# sentence-transformers' Pooling flags -> TextClassifierConfig.pooling
_ST_POOLING = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "first", "pooling_mode_max_tokens": "max"}
# Parameters a fine-tuning model may have that the checkpoint does not: the new head, Kim n-gram filters
_NEW_PARAMETERS = ("head.", "ngram_convs.")


@dataclass
class BertCheckpoint:
    """A checked BERT-family directory: its config, weights file, activation and pooling."""

    directory: Path
    config: dict[str, Any]
    weights: Path  # model.safetensors, or model.safetensors.index.json of shards
    activation: str
    pooling: str  # "first" | "mean" | "max"
    pooler: bool  # BERT's dense + tanh on the pooled [CLS] vector
    pooling_file: Path | None  # 1_Pooling/config.json when the pooling came from it

    @property
    def vocab_size(self) -> int:
        return int(self.config["vocab_size"])

    @property
    def max_positions(self) -> int:
        return int(self.config["max_position_embeddings"])

    def model_fields(self) -> dict[str, Any]:
        """The ``text-transformer`` config fields the checkpoint dictates, its dropouts included."""
        c = self.config
        dim = c["hidden_size"]
        hidden_dropout = float(c.get("hidden_dropout_prob", 0.1))
        classifier_dropout = c.get("classifier_dropout")
        return {
            "vocab_size": self.vocab_size, "max_length": self.max_positions, "dim": dim, "depth": c["num_hidden_layers"],
            "num_heads": c["num_attention_heads"], "mlp_ratio": c["intermediate_size"] / dim, "dropout": hidden_dropout,
            "attn_dropout": float(c.get("attention_probs_dropout_prob", 0.1)), "mlp_dropout": 0.0, "embed_dropout": hidden_dropout,
            "head_dropout": hidden_dropout if classifier_dropout is None else float(classifier_dropout),
            "pos_embed": "learned", "pooling": self.pooling, "pooler": self.pooler, "norm_first": False,
            "activation": self.activation, "norm_eps": float(c.get("layer_norm_eps", 1e-12)), "embed_norm": True,
            "type_vocab_size": int(c.get("type_vocab_size", 2)), "conv_kernel": 0, "conv_widths": (), "word_dropout": 0.0,
        }

    def sha256(self) -> str:
        return weights_sha256(self.weights)

    def load_into(self, model: nn.Module) -> None:
        """Copy the encoder (and the pooler, when the model has one) into ``model``; its head stays new."""
        tensors = read_weights(self.weights)
        prefix = "bert." if any(k.startswith("bert.") for k in tensors) else ""
        depth = int(self.config["num_hidden_layers"])
        renames = _bert_renames(prefix, depth, pooler=getattr(model, "pooler", None) is not None)
        state = model.state_dict()
        for ours, theirs in renames.items():
            if ours not in state:
                raise CheckpointError(f"{self.directory}: the model has no parameter {ours!r} for {theirs}")
            if theirs not in tensors:
                raise CheckpointError(f"{self.weights}: tensor {theirs!r} is missing (needed for {ours})")
            check_fits(self.weights, theirs, tensors[theirs], state[ours])
            state[ours] = tensors[theirs]
        unfilled = sorted(k for k in state if k not in renames and not k.startswith(_NEW_PARAMETERS))
        if unfilled:
            raise CheckpointError(f"{self.directory}: the checkpoint has no source for {unfilled[:5]}")
        model.load_state_dict(state)


def _pooling(directory: Path, tensors_have_pooler: bool, width: int) -> tuple[str, bool, Path | None]:
    path = directory / "1_Pooling" / "config.json"
    if path.is_file():
        flags = read_json_object(path)
        declared = flags.get("word_embedding_dimension", width)
        if declared != width:  # pooling written for another model: the folder is a mix of two
            raise CheckpointError(f"{path}: word_embedding_dimension {declared!r} does not match the model's "
                                  f"hidden_size {width} (config.json)")
        chosen = [mode for key, mode in _ST_POOLING.items() if flags.get(key)]
        other = sorted(k for k, v in flags.items() if k.startswith("pooling_mode_") and v and k not in _ST_POOLING)
        if other or len(chosen) != 1:
            raise CheckpointError(f"{path}: pooling {other or chosen or 'none'} is not supported "
                                  f"(one of {', '.join(sorted(_ST_POOLING))})")
        return chosen[0], False, path
    return "first", tensors_have_pooler, None


def open_bert_checkpoint(directory: str | Path) -> BertCheckpoint:
    """Check ``directory`` and describe it; no weights are loaded yet. Raises CheckpointError naming the file."""
    directory = Path(directory)
    if not directory.exists():
        raise CheckpointError(f"{directory}: checkpoint not found")
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: not a checkpoint directory (a Hugging Face save_pretrained folder)")
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{config_path}: missing; {directory} is not a Hugging Face checkpoint")
    weights = find_weights(directory)
    config = read_json_object(config_path)
    if config.get("model_type") != "bert":
        raise CheckpointError(f"{config_path}: model_type {config.get('model_type')!r} is not supported "
                              "(--init for text reads the BERT family: model_type 'bert', MiniLM included)")
    check_bert_variant(config_path, config)
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "max_position_embeddings"):
        if not isinstance(config.get(key), int) or config[key] < 1:
            raise CheckpointError(f"{config_path}: {key} is missing or not a positive integer")
    activation = hidden_activation(config_path, config, HIDDEN_ACTIVATIONS)
    has_pooler = any(k.endswith("pooler.dense.weight") for k in weight_names(weights))
    pooling, pooler, pooling_file = _pooling(directory, has_pooler, config["hidden_size"])
    return BertCheckpoint(directory=directory, config=config, weights=weights, activation=activation, pooling=pooling,
                          pooler=pooler, pooling_file=pooling_file)
