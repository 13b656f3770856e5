"""Checkpoint tensors: reading a safetensors file, and whether each tensor can take a model
tensor's place, checked before ``load_state_dict``.

A file that is missing, truncated or not safetensors at all (``safetensors`` raises its own
``SafetensorError``, not an OSError) is one line naming the file.

``load_state_dict`` copies with ``copy_``, which casts: an int64 or bool tensor in a slot of
float weights loads silently as whole numbers. Another shape, or another kind of number
(integer or boolean for floating point, or the reverse), is refused with one line naming the
tensor and both sides. Floating-point dtypes convert: fp16 and bf16 checkpoints load into
fp32 models, as in Hugging Face ``from_pretrained``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from attnlab.errors import CheckpointError

__all__ = ["read_tensors", "check_fits"]


def read_tensors(path: str | Path) -> dict[str, Tensor]:
    """Every tensor of a safetensors file (never a pickle); a problem raises CheckpointError naming ``path``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file, corrupt or truncated ({exc})") from None


def _kind(dtype: torch.dtype) -> str:
    if dtype == torch.bool:
        return "boolean"
    if dtype.is_complex:
        return "complex"
    return "floating-point" if dtype.is_floating_point else "integer"


def check_fits(where: object, name: str, theirs: Tensor, ours: Tensor) -> None:
    """Raise CheckpointError (``where: tensor NAME is ... in the checkpoint but ... in this model``)
    when ``theirs`` has another shape than ``ours`` or another kind of number."""
    if tuple(theirs.shape) != tuple(ours.shape):
        raise CheckpointError(f"{where}: tensor {name!r} is {tuple(theirs.shape)} in the checkpoint but "
                              f"{tuple(ours.shape)} in this model")
    if _kind(theirs.dtype) != _kind(ours.dtype):
        raise CheckpointError(f"{where}: tensor {name!r} is {str(theirs.dtype).removeprefix('torch.')} "
                              f"({_kind(theirs.dtype)}) in the checkpoint but {str(ours.dtype).removeprefix('torch.')} "
                              f"({_kind(ours.dtype)}) in this model")
