"""What the task families share to hand explain/ their ``Positions`` (``TaskSpec.explain_positions``).

A family's adapter ``(model, task_data, items, index) -> list[Positions]`` cuts (input,
label) items (``split_items``: the first ``limit`` of a split; or one input file's) into the
positions its model's tokens cover and says what "removed" means for its modality (see ``attnlab.explain.positions``). The mean a removed
position takes is always the TRAINING split's (never validation or test: the measure must not
see the data it scores), from at most ``TRAIN_MEAN_ITEMS`` items.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from attnlab.data.shards import head
from attnlab.errors import ConfigError
from attnlab.explain.readout import Readout
from attnlab.explain.relevance import IG_MAX_STEPS, IG_STEPS

__all__ = [
    "SPLITS",
    "TRAIN_MEAN_ITEMS",
    "faithfulness",
    "input_method_maps",
    "labels_of",
    "patch_positions",
    "readout_of",
    "span_names",
    "positions_for",
    "report_card",
    "split_items",
    "train_mean",
]

SPLITS = ("validation", "test")
TRAIN_MEAN_ITEMS = 2048
CHUNK = 128  # examples scored in one batch


def readout_of(task_data: Any) -> Readout:
    """What the faithfulness measures read of this run's outputs (``explain.readout``): its target
    kind, and a multi-label run's decision threshold (chosen on validation: ``task_data.calibration``,
    the run's data.json ``calibration``; 0.5 before one is chosen)."""
    kind = getattr(task_data, "target", "class") or "class"
    threshold = float((getattr(task_data, "calibration", None) or {}).get("threshold", 0.5))
    return Readout(kind, threshold) if kind == "multilabel" else Readout(kind)


def split_items(task_data: Any, split: str, limit: int) -> tuple[list[Any], list[int]]:
    """The first ``limit`` items of ``split`` ("validation" or "test") and their indices."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    data = task_data.val if split == "validation" else task_data.test
    if data is None or len(data) == 0:
        raise ConfigError(f"task {task_data.task!r} has no {split} examples to score")
    if limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {limit}")
    items = head(data, limit)  # a stream (shards) is read up to limit, in listed order
    return items, list(range(len(items)))


def train_mean(task_data: Any, dims: tuple[int, ...]) -> Tensor:
    """Mean of the training inputs over the item axis and ``dims`` of each input (keepdim); of a
    stream, its first items in listed order (shuffled when the shards were written)."""
    xs = torch.stack([item[0] for item in head(task_data.train, TRAIN_MEAN_ITEMS)]).float()  # (T, ...)
    return xs.mean(dim=(0, *(d + 1 for d in dims)), keepdim=True)[0]


def span_names(spans: list[tuple[int, int]]) -> list[str]:
    """Token labels of time-step spans [a, b): "t5" for one step, "t0-7" for several."""
    return [f"t{a}" if b - a == 1 else f"t{a}-{b - 1}" for a, b in spans]


def labels_of(items: list[Any]) -> Tensor:
    """(B,) true classes; -1 where an item has none (an input file without a label, a regression
    value or a multi-label set)."""
    def label(value: Any) -> int:
        a = np.asarray(value.cpu() if torch.is_tensor(value) else value)
        return int(a) if value is not None and a.ndim == 0 and a.dtype.kind in "iub" else -1

    return torch.as_tensor([label(it[1]) for it in items])


def patch_positions(model: nn.Module, task_data: Any, items: list[Any], idx: list[int], *, mean_dims: tuple[int, ...],
                    removed_means: str) -> list:
    """Image-like inputs (C, H, W) cut into the model's patch grid (``model.patch_grid``);
    removed = the training mean over ``mean_dims`` of each input, patch-wise."""
    from attnlab.explain.positions import Patches, Positions

    grid = getattr(model, "patch_grid", None)
    if grid is None:
        raise ConfigError(f"model {type(model).__name__} has no patch grid to attribute to")
    device = next(model.parameters()).device
    images = torch.stack([it[0] for it in items]).float().to(device)  # (B, C, H, W)
    _, _, h, w = images.shape
    wrap = Patches(model, images.shape[1:], (h // grid[0], w // grid[1]))
    mean = train_mean(task_data, mean_dims).to(device).expand_as(images[0])  # (C, H, W)
    return [Positions(wrap.cut(images), wrap, wrap.cut(mean[None])[0], int(getattr(model, "num_prefix_tokens", 0)),
                      labels=labels_of(items), index=torch.as_tensor(idx),
                      removed_means=removed_means, readout=readout_of(task_data))]


def positions_for(spec: Any, model: nn.Module, model_name: str, task_data: Any, items: list[Any], idx: list[int]) -> list:
    """The task's ``Positions`` of ``items``; a task without an adapter is a ConfigError naming it."""
    if spec.explain_positions is None:
        raise ConfigError(f"task {spec.name!r} has no explain adapter: relevance methods and faithfulness cannot run on "
                          f"model {model_name}")
    return spec.explain_positions(model, task_data, items, idx)


def input_method_maps(spec: Any, model: nn.Module, model_name: str, task_data: Any, example: Any, method: str | None, *,
                      every: bool, steps: int = IG_STEPS, max_steps: int = IG_MAX_STEPS) -> None:
    """``attnlab explain RUN INPUT``: ``method``'s map (checked against the model) on the one
    input's ReportExample (``example.item``), or every supported method's when ``every``
    (``steps``: Integrated Gradients' path steps, doubled up to ``max_steps`` where its completeness is off)."""
    from attnlab.explain.card import (
        attach_method_maps,
        check_methods,
        supported_methods,
    )

    groups = positions_for(spec, model, model_name, task_data, [example.item], [0])
    methods = check_methods(None if method is None else [method], groups[0].forward, model_name)
    attach_method_maps([example], groups, supported_methods(groups[0].forward) if every else methods, steps=steps,
                       max_steps=max_steps)


def faithfulness(spec: Any, model: nn.Module, model_name: str, task_data: Any, *, split: str = "validation",
                 methods: list[str] | None = None, limit: int = 100, steps: int = IG_STEPS,
                 max_steps: int = IG_MAX_STEPS) -> dict:
    """``attnlab explain RUN --faithfulness``: score ``methods`` (None: every one the model
    supports) on the first ``limit`` examples of ``split`` (``explain.card.score_methods``)."""
    import time

    from attnlab.explain.card import check_methods, score_methods

    start = time.perf_counter()
    items, idx = split_items(task_data, split, limit)
    # at most CHUNK rows a batch: Integrated Gradients runs steps x rows through the model at once
    groups = [g for s in range(0, len(items), CHUNK)
              for g in positions_for(spec, model, model_name, task_data, items[s:s + CHUNK], idx[s:s + CHUNK])]
    chosen = check_methods(methods, groups[0].forward, model_name)
    scores = score_methods(groups, chosen, steps=steps, max_steps=max_steps)
    return {"model": model_name, "split": split, **scores, "seconds": time.perf_counter() - start}


def report_card(spec: Any, model: nn.Module, model_name: str, task_data: Any, examples: list, *, limit: int,
                steps: int = IG_STEPS, skip: tuple[str, ...] = ()) -> dict | None:
    """What ``attnlab train`` puts in report.html: every supported method's map on the report's
    test ``examples`` (the input each carries as ``item`` when every one does, e.g. forecasting's
    spread-out test windows; else row i = test item i) and their scores on the first ``limit`` VALIDATION
    examples (the default map is the best there, so the choice never sees the test split).
    None when the task has no adapter."""
    import time

    from attnlab.explain.card import attach_method_maps, supported_methods

    start = time.perf_counter()
    if spec.explain_positions is None or limit <= 0:
        return None
    if task_data.val is None or len(task_data.val) == 0:
        return None  # no validation split (a stream's first `limit` examples are read as a list)
    # One thread: the card's batches are small (32 examples x ~17 positions for the main job), where
    # intra-op threading costs more than it gives and, on a shared 2-core machine, oversubscription
    # made the card 20-40 s instead of 3-5 s (measured; docs/explain.md).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if all(getattr(ex, "item", None) is not None for ex in examples):  # the inputs the examples show
            items, idx = [ex.item for ex in examples], list(range(len(examples)))
        else:  # the examples are the first test items
            items, idx = split_items(task_data, "test", len(examples))
        groups = positions_for(spec, model, model_name, task_data, items, idx)
        methods = [m for m in supported_methods(groups[0].forward) if m not in skip]
        attach_method_maps(examples, groups, methods, steps=steps)
        scores = faithfulness(spec, model, model_name, task_data, split="validation", methods=methods, limit=limit,
                              steps=steps)
    finally:
        torch.set_num_threads(threads)
    scores["seconds"] = time.perf_counter() - start  # the maps on the test examples included: what the card adds
    if skip:
        scores["skipped"] = list(skip)
    logging.getLogger(__name__).info("report card: %d validation examples, %.1f s; default map %s", scores["examples"],
                                     scores["seconds"], scores["best"])
    return scores
