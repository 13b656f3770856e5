"""Whether a checkpoint tensor can take a model tensor's place, checked before ``load_state_dict``.

``load_state_dict`` copies with ``copy_``, which casts: an int64 or bool tensor in a slot of
float weights loads silently as whole numbers. Another shape, or another kind of number
(integer or boolean for floating point, or the reverse), is refused with one line naming the
tensor and both sides. Floating-point dtypes convert: fp16 and bf16 checkpoints load into
fp32 models, as in Hugging Face ``from_pretrained``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from attnlab.errors import CheckpointError

__all__ = ["check_fits"]


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
