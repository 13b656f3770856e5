"""A GPT-2 checkpoint (Radford et al. 2019) as the start of a language-model run.

``open_gpt2_checkpoint(directory)`` checks a Hugging Face ``save_pretrained`` directory
before anything is built or written: ``config.json`` with ``model_type`` "gpt2", a supported
activation and attention variant, weights as ``model.safetensors`` or its shards (a directory holding only
``pytorch_model.bin`` is refused: unpickling can run code). ``GPT2Checkpoint.load_into`` then
copies every tensor into a ``gpt-lm`` built with ``model_fields()`` (renamed and split as
`attnlab.interop.hf.load_hf_gpt2` does; the output layer stays tied to the token embedding).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from attnlab.checkpoint_tensors import check_fits
from attnlab.data.wordpiece import read_json_object
from attnlab.errors import CheckpointError
from attnlab.interop.hf import HIDDEN_ACTIVATIONS, check_gpt2_variant, gpt2_model_fields, gpt2_state_dict, hidden_activation
from attnlab.interop.weights import find_weights, read_weights, weights_sha256

__all__ = ["GPT2Checkpoint", "open_gpt2_checkpoint"]

_REQUIRED = ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head")


@dataclass
class GPT2Checkpoint:
    """A checked GPT-2 directory: its config, weights file and activation."""

    directory: Path
    config: dict[str, Any]
    weights: Path  # model.safetensors, or model.safetensors.index.json of shards
    activation: str

    @property
    def vocab_size(self) -> int:
        """Rows of the embedding table (often padded past the tokenizer's vocabulary)."""
        return int(self.config["vocab_size"])

    @property
    def max_positions(self) -> int:
        return int(self.config["n_positions"])

    def model_fields(self) -> dict[str, Any]:
        """The ``gpt-lm`` config fields the checkpoint dictates, its dropouts included
        (GPT-2 fine-tuning keeps them: resid_pdrop / embd_pdrop / attn_pdrop, 0.1 in GPT-2)."""
        c = self.config
        return {**gpt2_model_fields(c, self.activation), "dropout": float(c.get("resid_pdrop", 0.1)),
                "attn_dropout": float(c.get("attn_pdrop", 0.1)), "mlp_dropout": 0.0}

    def sha256(self) -> str:
        return weights_sha256(self.weights)

    def load_into(self, model: nn.Module) -> None:
        """Copy every tensor into ``model`` (a ``gpt-lm`` of ``model_fields()``); a missing
        tensor or another shape raises CheckpointError naming the weights file."""
        tensors = read_weights(self.weights)
        state = gpt2_state_dict(tensors, self.config, self.weights)
        own = model.state_dict()
        for name, tensor in state.items():
            if name not in own:
                raise CheckpointError(f"{self.directory}: the model has no parameter {name!r} (is it a gpt-lm with "
                                      "learned positions?)")
            check_fits(self.weights, name, tensor, own[name])
        unfilled = sorted(set(own) - set(state))
        if unfilled:
            raise CheckpointError(f"{self.directory}: the checkpoint has no source for {unfilled[:5]}")
        model.load_state_dict(state)


def open_gpt2_checkpoint(directory: str | Path) -> GPT2Checkpoint:
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
    if config.get("model_type") != "gpt2":
        raise CheckpointError(f"{config_path}: model_type {config.get('model_type')!r} is not supported "
                              "(--init for the language model reads GPT-2: model_type 'gpt2', DistilGPT2 included)")
    for key in _REQUIRED:
        if not isinstance(config.get(key), int) or config[key] < 1:
            raise CheckpointError(f"{config_path}: {key} is missing or not a positive integer")
    check_gpt2_variant(config_path, config)
    activation = hidden_activation(config_path, config, HIDDEN_ACTIVATIONS, "activation_function")
    return GPT2Checkpoint(directory=directory, config=config, weights=weights, activation=activation)
