"""The weights of a Hugging Face ``save_pretrained`` directory: one ``model.safetensors``, or the
shards a ``model.safetensors.index.json`` lists (what ``save_pretrained`` writes past
``max_shard_size``).

Only safetensors are read: a directory whose weights are ``pytorch_model.bin`` (or its
shards) is refused, since unpickling can run code. Every problem is one line naming the file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from torch import Tensor

from attnlab.checkpoint_tensors import read_tensors
from attnlab.errors import CheckpointError

__all__ = ["find_weights", "read_weights", "weight_names", "weights_sha256", "file_sha256"]

SINGLE, INDEX = "model.safetensors", "model.safetensors.index.json"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def find_weights(directory: Path) -> Path:
    """``model.safetensors``, else ``model.safetensors.index.json``; CheckpointError otherwise."""
    for name in (SINGLE, INDEX):
        if (directory / name).is_file():
            return directory / name
    pickles = sorted(directory.glob("pytorch_model*.bin"))
    if pickles:
        raise CheckpointError(f"{pickles[0]}: pickled weights are refused (unpickling can run code); save the model "
                              "with safe_serialization=True (model.safetensors)")
    raise CheckpointError(f"{directory / SINGLE}: missing; {directory} holds no weights")


def _shards(index: Path) -> dict[str, Path]:
    """Tensor name -> its shard file, from an index; the shards must be files beside the index."""
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map")
    except (OSError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{index}: not a safetensors index ({exc})") from None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index}: no 'weight_map' (tensor name -> shard file)")
    shards: dict[str, Path] = {}
    for name, shard in weight_map.items():
        if not isinstance(shard, str) or Path(shard).name != shard or not shard.endswith(".safetensors"):
            raise CheckpointError(f"{index}: tensor {name!r} is mapped to {shard!r}, not a .safetensors file beside it")
        if not (index.parent / shard).is_file():
            raise CheckpointError(f"{index.parent / shard}: missing (a shard {index.name} lists)")
        shards[name] = index.parent / shard
    return shards


def read_weights(path: Path) -> dict[str, Tensor]:
    """Every tensor of a weights file `find_weights` returned (all shards of an index)."""
    if path.name != INDEX:
        return read_tensors(path)
    shards = _shards(path)
    tensors: dict[str, Tensor] = {}
    for shard in sorted(set(shards.values())):
        tensors.update(read_tensors(shard))
    missing = sorted(set(shards) - set(tensors))
    if missing:
        raise CheckpointError(f"{shards[missing[0]]}: tensor {missing[0]!r} is missing (listed in {path.name})")
    return tensors


def weight_names(path: Path) -> set[str]:
    """The tensor names of a weights file, without reading the tensors."""
    if path.name == INDEX:
        return set(_shards(path))
    try:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            return set(f.keys())
    except Exception as exc:  # safetensors raises its own error type
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None


def weights_sha256(path: Path) -> str:
    """The file's SHA-256; for an index, the SHA-256 of its shards' names and digests, so any
    changed shard changes it."""
    if path.name != INDEX:
        return file_sha256(path)
    lines = [f"{shard.name} {file_sha256(shard)}\n" for shard in sorted(set(_shards(path).values()))]
    return hashlib.sha256("".join(lines).encode()).hexdigest()
