"""A shard sample's target member: one class, a label set or a number, as WebDataset readers hold them.

Each sample of an ``attnlab shard`` tar carries its target in one member beside its input:

- ``class``: ``KEY.cls``, the class index in ASCII digits (WebDataset's convention), a position
  in the index's ``class_names``; read back relabelled by name into the run's classes.
- ``multilabel``: ``KEY.json`` ``{"labels": ["politics", "sports"]}``, the sample's label names
  (no ``.cls``: a label set is not one class). Read back as a multi-hot (K,) float32 row in the
  run's label order (the index's ``class_names`` for a new run), matched by name; a label that
  is not one of them is a DataError naming it.
- ``regression``: ``KEY.json`` ``{"value": 3.5}``, the number in the target's own units (no
  ``.cls``). Read back as a () float32; the model learns it standardised with the training
  split's scaler, which the index keeps under ``info.target_scaler`` (`attnlab.data.targets`).

The JSON keys are the ones ``attnlab predict --json`` answers with for the same targets, and a
``.json`` member is what ``webdataset`` and Hugging Face ``datasets`` decode into a dict. The
index says which target its samples hold (``"target"``; shards written before there was a
choice hold classes).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from attnlab.data.base import ClassIndexTensors
from attnlab.data.targets import TargetScaler
from attnlab.errors import ConfigError, DataError

__all__ = ["MEMBERS", "TargetDecoder", "check_target_of", "encode_target", "scaler_of", "target_of_index"]

MEMBERS = {"class": "cls", "multilabel": "json", "regression": "json"}
_WHAT = {"class": "an integer .cls", "multilabel": 'a .json {"labels": [names]}', "regression": 'a .json {"value": number}'}


def target_of_index(index: dict[str, Any]) -> str:
    """The target a shard index's samples hold (older indexes: classes)."""
    return str(index.get("target") or (index.get("info") or {}).get("target") or "class")


def check_target_of(source: Any, index: dict[str, Any], target: str) -> str:
    """``target`` (the run's ``--data.target``) when the shards hold it, else a ConfigError saying
    which to pass: a target is never guessed, and reading label sets as classes cannot work."""
    held = target_of_index(index)
    if held != target:
        raise ConfigError(f"{source} holds shards written with --data.target {held}; train and evaluate them with "
                          f"--data.target {held}, not {target}")
    return held


def encode_target(target: str, y: Tensor, names: Sequence[str]) -> dict[str, bytes]:
    """One sample's target member (module docstring). Shape: y () int64, () float32 or (K,) 0/1 float32."""
    if target == "class":
        return {"cls": str(int(y)).encode()}
    if target == "multilabel":
        return {"json": json.dumps({"labels": [str(n) for n, v in zip(names, y.tolist()) if v >= 0.5]}).encode()}
    value = np.float32(float(y))
    text = str(value)  # the shortest decimal of the float32 (3.1, not 3.0999999046325684)...
    if np.float32(float(text)) != value:  # ...unless reading it through float64 would round elsewhere
        text = repr(float(value))
    return {"json": ('{"value": ' + text + "}").encode()}


class TargetDecoder:
    """A sample's target member -> its tensor in the run's outputs (a class, not a closure:
    spawned DataLoader workers receive it by value).

    ``names``: the run's classes or labels in output order (the shards' own for a new run).
    ``positions`` (class targets): see `ClassIndexTensors`. ``member`` and ``what`` name the
    member a sample needs, for the input decoders' messages.

    Shape: -> () int64 class, (K,) float32 multi-hot, or () float32 value.
    """

    def __init__(self, target: str, names: Sequence[str], positions: list[int] | None = None):
        self.target, self.names = target, [str(n) for n in names]
        self.member, self.what = MEMBERS[target], _WHAT[target]
        self.labels = ClassIndexTensors(positions) if target == "class" else None  # what ShardStream.class_labels reads
        self._index = {n: k for k, n in enumerate(self.names)}

    def __call__(self, sample: dict[str, bytes], where: str) -> Tensor:
        member = sample.get(self.member)
        if member is None:
            raise DataError(f"{where}: a {self.target} sample needs {self.what}, has {sorted(sample)}")
        if self.labels is not None:
            return self.labels(member, where)
        field = "labels" if self.target == "multilabel" else "value"
        try:
            value = json.loads(member.decode("utf-8"))[field]
        except (UnicodeDecodeError, ValueError, TypeError, KeyError):
            raise DataError(f"{where}: .json is not {self.what[len('a .json '):]}: {member[:60]!r}") from None
        if self.target == "regression":
            return torch.tensor(self._number(value, where), dtype=torch.float32)
        return self._multi_hot(value, where)

    @staticmethod
    def _number(value: Any, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise DataError(f"{where}: regression target {value!r} is not a finite number")
        return float(value)

    def _multi_hot(self, labels: Any, where: str) -> Tensor:
        if not isinstance(labels, list) or not all(isinstance(n, str) for n in labels):
            raise DataError(f"{where}: .json labels must be a list of label names, got {labels!r}")
        if not labels:
            raise DataError(f"{where}: empty label set; a multi-label example needs at least one label")
        y = torch.zeros(len(self.names))
        for name in labels:
            k = self._index.get(name)
            if k is None:
                shown = ", ".join(map(repr, self.names[:10])) + (", ..." if len(self.names) > 10 else "")
                raise DataError(f"{where}: label {name!r} is not one of the run's {len(self.names)} labels ({shown})")
            y[k] = 1.0
        return y


def scaler_of(source: Any, index: dict[str, Any], run_scaler: dict | None) -> dict[str, float]:
    """A regression stream's target scaler: a finished run's (the one its model learnt), else the
    one the writer fitted on the training split (``info.target_scaler``, as the in-memory loader
    fits it; a pattern naming some training shards keeps the whole split's, as image shards keep
    its pixel statistics)."""
    if run_scaler is not None:
        return TargetScaler.from_dict(run_scaler).to_dict()
    written = (index.get("info") or {}).get("target_scaler")
    if not isinstance(written, dict):
        raise DataError(f"{source}: regression shards need info.target_scaler (the training split's mean and std) "
                        "in shards.json; write them with attnlab shard")
    return TargetScaler.from_dict(written).to_dict()
