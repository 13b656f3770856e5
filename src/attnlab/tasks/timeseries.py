"""Time-series classification task family: ``--task timeseries --data <UCR folder or .npz>``.

Data: `attnlab.data.timeseries` (UCR ``<Name>_TRAIN.tsv`` / ``<Name>_TEST.tsv``, per-series
z-normalisation). ``--data.target regression`` reads each label as a number to predict
(MSE; mse / mae / r2 in the target's units; predict prints values in those units). Model: ``ts-transformer`` (`attnlab.models.timeseries`). What predict needs
of the data (series length, channels, the normalisation rule, the label names) is saved in
the run's ``data.json`` under ``info``.

Predict / explain inputs (`read_series_file`): a text file (``.tsv``/``.csv``/``.txt``)
with one series a line, values separated by tabs, commas or spaces, optionally preceded by
a label (a UCR ``_TEST.tsv`` works as is); or an ``.npy`` of shape (T,), (N, T) or (N, C, T).
A file with several series gives one prediction per series; explain shows the first.

A finished run's data (``attnlab evaluate RUN --data OTHER``, ``--resume``) is read with the
run's classes, series shape and target scaler (`series_run_vocabulary`): other labels, another
length or channel count are refused by name instead of being mapped silently onto its classes.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from attnlab.data.base import path_loader
from attnlab.data.timeseries import load_timeseries_task
from attnlab.tasks.base import RunVocabulary, TaskSpec, run_targets
from attnlab.tasks.positions import span_names
from attnlab.tasks.targets import (
    describe_output,
    describe_truth,
    read_outputs,
    target_of,
    task_record,
)

__all__ = ["SPECS", "series_positions", "series_fields", "series_report_example", "predict_series", "explain_series", "DEFAULT_MODEL_CONFIG", "DEFAULT_TRAIN",
           "series_run_vocabulary"]

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
    return prefix + span_names(spans)


def series_report_example(
    model: nn.Module, x: Tensor, *, class_names: Sequence[str], label: int | Tensor | str | None = None, title: str = "",
    record: dict[str, Any] | None = None,
) -> Any:
    """One series (C, T) through the model: a ``ReportExample`` of kind "series" (channel 0 shown).

    ``record`` (a run's data.json): how to read the output (`attnlab.tasks.targets`: a class, or
    a regression value in the target's units); without one the output is a class. ``label``: a
    class index or target tensor (read as the record says), or text shown as it is.
    """
    from attnlab.explain.capture import capture
    from attnlab.explain.report import ReportExample

    device = next(model.parameters()).device
    model.eval()
    maps = capture(model, x[None].to(device), device="cpu")
    record = record or {"class_names": list(class_names)}
    truth = label if label is None or isinstance(label, str) else describe_truth(record, torch.as_tensor(label))
    return ReportExample(
        title=title or "series", kind="series", input=x[0].detach().float().cpu().numpy(),
        maps=[m[0].float().numpy() for m in maps.maps], layer_names=list(maps.names), tokens=_token_names(model),
        prediction=describe_output(record, maps.output[0]), label=truth,
        num_prefix_tokens=int(getattr(model, "num_prefix_tokens", 0)),
    )


def _report(model: nn.Module, task_data, count: int) -> list:
    examples = []
    record = task_record(task_data)
    for i in range(min(count, len(task_data.test))):
        x, y = task_data.test[i]
        examples.append(series_report_example(model, x, class_names=task_data.class_names, label=y, title=f"test #{i}",
                                              record=record))
    return examples


def _load_inputs(record: dict[str, Any], item: str):
    from attnlab.data.timeseries import normalize_series, read_series_file

    info = record["info"]
    raw, labels, names = read_series_file(item, int(info["length"]), int(info["channels"]))
    return normalize_series(raw, info["normalize"]), labels, names  # (N, C, T)


def predict_series(model: nn.Module, record: dict[str, Any], inputs: list[str], top_k: int) -> list[dict[str, Any]]:
    """One result per series: {"input", "class", "score", "top"}, or {"input", "value"} for a
    regression run (in the target's units); + "label" when the file has one."""
    device = next(model.parameters()).device
    results = []
    model.eval()
    for item in inputs:
        x, labels, names = _load_inputs(record, item)
        with torch.no_grad():
            logits = torch.cat([model(b.to(device)).float().cpu() for b in x.split(256)])  # (N, K)
        for name, label, result in zip(names, labels, read_outputs(record, logits, top_k)):
            result = {"input": name, **result}
            if label is not None:
                result["label"] = label
            results.append(result)
    return results


def explain_series(model: nn.Module, record: dict[str, Any], item: str) -> Any:
    """The first series of ``item`` as a "series" ``ReportExample``."""
    from pathlib import Path

    x, labels, names = _load_inputs(record, item)
    names_k = list(record["class_names"])
    if target_of(record) == "class":
        label = names_k.index(labels[0]) if labels[0] in names_k else None
    else:
        label = labels[0]  # a regression target as the file spells it
    example = series_report_example(model, x[0], class_names=names_k, label=label, title=Path(names[0]).name, record=record)
    example.item = (x[0], None)  # what the relevance methods attribute (series_positions)
    return example


def series_positions(model: nn.Module, task_data, items: list, index: list[int]) -> list:
    """(series, label) ``items`` cut into the spans of time steps the model's
    tokens cover (``token_spans``); removed = the training mean per channel (over every
    training series and time step), every step of a removed span (the "series mean" of the
    issue; a z-normalised data set's is ~0)."""
    from attnlab.explain.positions import Positions, Spans
    from attnlab.tasks.positions import labels_of, readout_of, train_mean

    device = next(model.parameters()).device
    series = torch.stack([it[0] for it in items]).float().to(device)  # (B, C, T)
    _, c, t = series.shape
    span = model.patch_size * model.config.stem_steps  # steps per token: patch_size x the stem's pooling
    wrap = Spans(model, c, t, span, model.num_patches)
    mean = train_mean(task_data, (1,)).to(device)  # (C, 1)
    removed = mean.repeat_interleave(span, dim=1).reshape(-1)  # (C*s,), channel-major like Spans.cut
    return [Positions(wrap.cut(series), wrap, removed, int(model.num_prefix_tokens),
                      labels=labels_of(items), index=torch.as_tensor(index),
                      removed_means="training mean per channel, every step of a span", readout=readout_of(task_data))]


def series_run_vocabulary(record: dict[str, Any]) -> dict[str, Any]:
    """A finished run's classes (or target scaler) and series shape (C, T) as loader options."""
    info = record.get("info") if isinstance(record.get("info"), dict) else {}
    options = run_targets(record)
    if isinstance(info.get("length"), int) and isinstance(info.get("channels"), int):
        options["series_shape"] = (info["channels"], info["length"])
    return options


load_timeseries = path_loader("timeseries", load_timeseries_task,
                              "a UCR folder with <Name>_TRAIN.tsv and <Name>_TEST.tsv, or an .npz")


SPECS = (
    TaskSpec(
        name="timeseries", load=load_timeseries, models=("ts-transformer",), input_suffixes=(".tsv", ".csv", ".txt", ".npy"),
        description="time-series classification (or regression: --data.target regression): a UCR folder "
                    "(<Name>_TRAIN.tsv, <Name>_TEST.tsv) or an .npz",
        default_model_config=DEFAULT_MODEL_CONFIG, default_train=DEFAULT_TRAIN, default_data_options=DEFAULT_DATA_OPTIONS,
        model_fields=series_fields, report_examples=_report, predict=predict_series, explain_example=explain_series,
        explain_positions=series_positions, run_vocabulary=RunVocabulary(series_run_vocabulary),
    ),
)

