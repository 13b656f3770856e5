"""Time-series classification task family: ``--task timeseries --data <UCR folder or .npz>``.

Data: `attnlab.data.timeseries` (UCR ``<Name>_TRAIN.tsv`` / ``<Name>_TEST.tsv``, per-series
z-normalisation). Model: ``ts-transformer`` (`attnlab.models.timeseries`). What predict needs
of the data (series length, channels, the normalisation rule, the label names) is saved in
the run's ``data.json`` under ``info``.

Predict / explain inputs (`read_series_file`): a text file (``.tsv``/``.csv``/``.txt``)
with one series a line, values separated by tabs, commas or spaces, optionally preceded by
a label (a UCR ``_TEST.tsv`` works as is); or an ``.npy`` of shape (T,), (N, T) or (N, C, T).
A file with several series gives one prediction per series; explain shows the first.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from attnlab.data.base import path_loader
from attnlab.data.timeseries import load_timeseries_task
from attnlab.tasks.base import TaskSpec

__all__ = ["SPECS", "series_fields", "series_report_example", "predict_series", "explain_series", "DEFAULT_MODEL_CONFIG", "DEFAULT_TRAIN"]

# The benchmarked default (benchmarks/timeseries.py; results in benchmarks/README.md).
# Stem kernels 5/11/21 are the Encoder's (Serra et al. 2018); one Transformer layer; a gentler lr with
# a 10-epoch warm-up.
DEFAULT_MODEL_CONFIG: dict[str, Any] = {"stem_channels": 32, "stem_kernels": (5, 11, 21), "dim": 64, "depth": 1, "num_heads": 4,
                                        "dropout": 0.1}
DEFAULT_TRAIN: dict[str, Any] = {"epochs": 100, "batch_size": 16, "lr": 5e-4, "warmup_epochs": 10, "weight_decay": 0.05,
                                 "keep": "last"}
DEFAULT_DATA_OPTIONS: dict[str, Any] = {}


def series_fields(task_data) -> dict[str, Any]:
    c, t = task_data.input_shape
    return {"num_classes": task_data.num_classes, "seq_len": t, "in_channels": c}


def _token_names(model: nn.Module) -> list[str]:
    prefix = ["CLS"] * int(getattr(model, "num_prefix_tokens", 0))
    spans = model.token_spans() if hasattr(model, "token_spans") else []
    return prefix + [f"t{a}" if b - a == 1 else f"t{a}-{b - 1}" for a, b in spans]


def series_report_example(
    model: nn.Module, x: Tensor, *, class_names: Sequence[str], label: int | None = None, title: str = ""
) -> Any:
    """One series (C, T) through the model: a ``ReportExample`` of kind "series" (channel 0 shown)."""
    from attnlab.explain.capture import capture
    from attnlab.explain.report import ReportExample

    device = next(model.parameters()).device
    model.eval()
    maps = capture(model, x[None].to(device), device="cpu")
    probs = torch.softmax(maps.output.float(), dim=-1)[0].cpu()
    pred = int(probs.argmax())
    return ReportExample(
        title=title or "series", kind="series", input=x[0].detach().float().cpu().numpy(),
        maps=[m[0].float().numpy() for m in maps.maps], layer_names=list(maps.names), tokens=_token_names(model),
        prediction=f"{class_names[pred]} ({float(probs[pred]):.2f})",
        label=None if label is None else class_names[label],
        num_prefix_tokens=int(getattr(model, "num_prefix_tokens", 0)),
    )


def _report(model: nn.Module, task_data, count: int) -> list:
    examples = []
    for i in range(min(count, len(task_data.test))):
        x, y = task_data.test[i]
        examples.append(series_report_example(model, x, class_names=task_data.class_names, label=int(y), title=f"test #{i}"))
    return examples


def _load_inputs(record: dict[str, Any], item: str):
    from attnlab.data.timeseries import normalize_series, read_series_file

    info = record["info"]
    raw, labels, names = read_series_file(item, int(info["length"]), int(info["channels"]))
    return normalize_series(raw, info["normalize"]), labels, names  # (N, C, T)


def predict_series(model: nn.Module, record: dict[str, Any], inputs: list[str], top_k: int) -> list[dict[str, Any]]:
    """One result per series: {"input", "class", "score", "top"} (+ "label" when the file has one)."""
    device = next(model.parameters()).device
    names_k = record["class_names"]
    results = []
    model.eval()
    for item in inputs:
        x, labels, names = _load_inputs(record, item)
        with torch.no_grad():
            probs = torch.cat([torch.softmax(model(b.to(device)).float(), dim=-1).cpu() for b in x.split(256)])  # (N, K)
        scores, classes = probs.topk(min(top_k, probs.shape[1]), dim=-1)
        for name, label, s, c in zip(names, labels, scores, classes):
            result: dict[str, Any] = {
                "input": name, "class": names_k[int(c[0])], "score": float(s[0]),
                "top": [{"class": names_k[int(ci)], "score": float(si)} for si, ci in zip(s, c)],
            }
            if label is not None:
                result["label"] = label
            results.append(result)
    return results


def explain_series(model: nn.Module, record: dict[str, Any], item: str) -> Any:
    """The first series of ``item`` as a "series" ``ReportExample``."""
    from pathlib import Path

    x, labels, names = _load_inputs(record, item)
    names_k = list(record["class_names"])
    label = names_k.index(labels[0]) if labels[0] in names_k else None
    return series_report_example(model, x[0], class_names=names_k, label=label, title=Path(names[0]).name)


load_timeseries = path_loader("timeseries", load_timeseries_task,
                              "a UCR folder with <Name>_TRAIN.tsv and <Name>_TEST.tsv, or an .npz")


SPECS = (
    TaskSpec(
        name="timeseries", load=load_timeseries, models=("ts-transformer",),
        description="time-series classification: a UCR folder (<Name>_TRAIN.tsv, <Name>_TEST.tsv) or an .npz",
        default_model_config=DEFAULT_MODEL_CONFIG, default_train=DEFAULT_TRAIN, default_data_options=DEFAULT_DATA_OPTIONS,
        model_fields=series_fields, report_examples=_report, predict=predict_series, explain_example=explain_series,
    ),
)

