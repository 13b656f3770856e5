"""Reading a model's outputs as the run's target kind: classes, a number, or a label set.

The text, time-series and image families share these for ``attnlab predict``, ``explain`` and
the report, so every family answers the same way (`attnlab.data.targets` has the kinds):

- "class": softmax; the top class and its probability, the top-k.
- "regression": the one output is the standardised target; it is mapped back to the target's
  units with the training split's scaler kept in data.json (``info.target_scaler``).
- "multilabel": one sigmoid per label; the labels whose probability reaches the threshold
  chosen on validation (data.json ``calibration.threshold``; 0.5 if the run has none), with
  their scores, highest first.

A "record" is a run's data.json (or `task_record` of a loaded `TaskData`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from attnlab.data.targets import TargetScaler

__all__ = ["describe_output", "describe_truth", "read_outputs", "target_of", "task_record", "threshold_of"]


def target_of(record: dict[str, Any]) -> str:
    """The run's target kind; runs written before targets existed are "class"."""
    return record.get("target") or "class"


def threshold_of(record: dict[str, Any]) -> float:
    return float((record.get("calibration") or {}).get("threshold", 0.5))


def task_record(task_data: Any) -> dict[str, Any]:
    """The parts of a data.json record these readers use, from a loaded `TaskData`."""
    return {"target": task_data.target, "class_names": list(task_data.class_names), "info": task_data.info,
            "calibration": task_data.calibration}


def read_outputs(record: dict[str, Any], logits: Tensor, top_k: int) -> list[dict[str, Any]]:
    """JSON-ready predictions of raw model outputs, one dict per row (see the module docstring).

    Shape: logits (B, K).
    """
    names = list(record["class_names"])
    target = target_of(record)
    logits = logits.detach().float().cpu()
    if target == "regression":
        scaler = TargetScaler.from_dict(record["info"]["target_scaler"])
        return [{"value": float(v)} for v in scaler.inverse(logits[:, 0].double())]
    if target == "multilabel":
        probs, threshold = torch.sigmoid(logits), threshold_of(record)  # (B, K)
        results = []
        for row in probs:
            order = torch.argsort(row, descending=True).tolist()
            chosen = [k for k in order if float(row[k]) >= threshold]
            results.append({"labels": [names[k] for k in chosen], "scores": [float(row[k]) for k in chosen],
                            "threshold": threshold,
                            "top": [{"class": names[k], "score": float(row[k])} for k in order[:max(top_k, 1)]]})
        return results
    probs = torch.softmax(logits, dim=-1)
    scores, classes = probs.topk(min(top_k, probs.shape[1]), dim=-1)
    return [{"class": names[int(c[0])], "score": float(s[0]),
             "top": [{"class": names[int(ci)], "score": float(si)} for si, ci in zip(s, c)]} for s, c in zip(scores, classes)]


def describe_output(record: dict[str, Any], logits: Tensor) -> str:
    """One line for a report or an explanation: ``"cat (0.93)"``, ``"3.14"``, ``"a (0.91), b (0.62)"``.

    Shape: logits (K,).
    """
    result = read_outputs(record, logits[None], 1)[0]
    if "value" in result:
        return f"{result['value']:.6g}"
    if "labels" in result:
        if not result["labels"]:
            return f"no label above {result['threshold']:.2f}"
        return ", ".join(f"{n} ({s:.2f})" for n, s in zip(result["labels"], result["scores"]))
    return f"{result['class']} ({result['score']:.2f})"


def describe_truth(record: dict[str, Any], y: Tensor) -> str:
    """A data set's target as text: the class name, the number, or the comma-joined label set.

    Shape: y () int64 class, () float value, or (K,) 0/1.
    """
    target, names = target_of(record), record["class_names"]
    if target == "regression":
        return f"{float(y):.6g}"
    if target == "multilabel":
        return ",".join(n for n, v in zip(names, y.tolist()) if v >= 0.5)
    return names[int(y)]
