"""Deep ensembles: score several finished runs as one model.

The members' outputs on the test split are averaged and the average is scored with the task's
own metrics (Lakshminarayanan et al. 2017, "Simple and scalable predictive uncertainty estimation
using deep ensembles"; InceptionTime, Fawaz et al. 2020, is five such networks): class
probabilities for classification, predictions in the target's units for regression, forecasts
for forecasting, per-label probabilities for multi-label runs, whose decision threshold is chosen
again on the averaged validation probabilities (each member's own threshold was chosen for its own
scores), and next-token distributions for language models (their loss is that of the mixture).
Members are usually the same config trained with different seeds: ``attnlab evaluate RUN_A RUN_B RUN_C``.

Every member must be a run of the same task and target whose test split holds the same examples
with the same labels in the same order (equal inputs, or the same files of the same source: members
may read them with their own feature settings), and whose classes are the same; anything else is refused
with the run that differs, since averaging misaligned outputs would give a silent, wrong score.
Where the outputs index a vocabulary (language models), the members' tokenizers must be the same too.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import IterableDataset

from attnlab.errors import ConfigError

__all__ = ["ensemble_probabilities", "evaluate_ensemble"]


def _fingerprint(dataset) -> str:
    """SHA-1 of the split's examples and labels, in order: equal splits, equal digests.

    Text data sets hash their raw texts (``dataset.texts``) with the labels, since each run's
    tokenizer is trained on its own training split and the same sentence can get other ids;
    other data sets hash every item's tensors. A stream (shards: no random access) is read once
    in its listed order (``evaluation_view``), as evaluation reads it.
    """
    digest = hashlib.sha1()
    texts = getattr(dataset, "texts", None)
    if isinstance(dataset, IterableDataset):
        view = dataset.evaluation_view() if hasattr(dataset, "evaluation_view") else dataset
        items = iter(view)
    else:
        items = (dataset[i] for i in range(len(dataset)))
    for i, item in enumerate(items):
        parts = item if isinstance(item, (tuple, list)) else (item,)
        if texts is not None:
            parts = (texts[i], parts[-1])
        for part in parts:
            if isinstance(part, Tensor):
                digest.update(f"{part.dtype}{tuple(part.shape)}".encode())
                digest.update(part.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
            else:
                digest.update(repr(part).encode())
    return digest.hexdigest()


def _source_fingerprint(source: str | None, dataset) -> tuple[str, str] | None:
    """Where the split's examples come from: the data source (a path, resolved) and the SHA-1 of
    each example's position in it (``dataset.indices``: in the sorted file list, or the file's
    rows) with its label; None where the split records no positions or the run reads no path.

    Members that read the same files with other feature settings (``--data.n_mels``,
    ``--data.image_size``) hold other tensors for the same examples: each member scores its
    own inputs, so this, not the tensors, is what they must share.
    """
    indices = getattr(dataset, "indices", None)
    y = getattr(dataset, "y", None)
    if source is None or not isinstance(indices, Tensor) or not isinstance(y, Tensor) or not Path(source).exists():
        return None
    digest = hashlib.sha1()
    for part in (indices, y):
        digest.update(f"{part.dtype}{tuple(part.shape)}".encode())
        digest.update(part.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return str(Path(source).resolve()), digest.hexdigest()


def _input_settings(task_data) -> dict[str, Any]:
    """How a member turns its files into inputs (audio features, image spec), for messages."""
    audio = (getattr(task_data, "info", None) or {}).get("audio")
    spec = getattr(task_data, "spec", None)
    return dict(audio) if isinstance(audio, dict) else spec.to_dict() if hasattr(spec, "to_dict") else {}


def _vocabulary_digest(task_data) -> str:
    """SHA-1 of the task's tokenizer (its saved JSON): equal vocabularies, equal digests."""
    tokenizer = getattr(task_data, "tokenizer", None)
    text = tokenizer.to_json() if tokenizer is not None else json.dumps(task_data.info.get("tokenizer"), sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()


def _split(task_data, split: str):
    return task_data.test if split == "test" else task_data.val


def ensemble_outputs(run_dirs: list[str | Path], *, split: str = "test", data: str | None = None,
                     device: str = "cpu") -> tuple[Tensor, Tensor, list[dict[str, Any]], Any]:
    """(the members' mean outputs, targets, each member's own metrics, the first member's objective)
    over a split: class probabilities (B, K) and labels (B,) for classification, and what
    ``objectives.Averageable.outputs`` gives for other tasks."""
    from attnlab.run import evaluation_trainer

    if not run_dirs:
        raise ConfigError("an ensemble needs at least one run directory")
    total: Tensor | None = None
    targets: Tensor | None = None
    first: tuple[str, str, list[str], Path] | None = None
    fingerprint: tuple[str, str | None] | None = None
    objective = None
    members: list[dict[str, Any]] = []
    for run_dir in run_dirs:
        config, trainer, task_data = evaluation_trainer(run_dir, data=data, device=device)
        # what y means ("class", "regression" or "multilabel"), not the --data.target option: forecasting's
        # names a column, and the same column named or left to its default is the same target
        kind = str(getattr(task_data, "target", "class"))
        classes = [str(c) for c in getattr(task_data, "class_names", None) or []]
        if getattr(trainer.objective, "outputs_index_vocabulary", False):  # output i is token i of the tokenizer
            classes = [_vocabulary_digest(task_data)]
        outputs = (getattr(task_data, "info", None) or {}).get("outputs")  # a forecaster's output columns
        if first is None:
            first, objective, first_outputs = (config.task, kind, classes, Path(run_dir)), trainer.objective, outputs
        elif outputs != first_outputs and (config.task, kind, classes) == first[:3]:
            raise ConfigError(f"{run_dir}: it forecasts {outputs}, {first[3]} forecasts {first_outputs}; ensemble "
                              "members must predict the same columns")
        elif (config.task, kind, classes) != first[:3]:
            if getattr(trainer.objective, "outputs_index_vocabulary", False) and config.task == first[0]:
                raise ConfigError(f"{run_dir}: its tokenizer differs from {first[3]}'s; ensemble members must share "
                                  "one vocabulary (the same data and tokenizer options, or --init from the same checkpoint)")
            if (config.task, classes) == (first[0], first[2]):
                raise ConfigError(f"{run_dir}: its targets are {kind!r}; it cannot join an ensemble with {first[3]}, "
                                  f"whose targets are {first[1]!r}")
            raise ConfigError(f"{run_dir}: task {config.task!r} with classes {classes} cannot join an ensemble "
                              f"with {first[3]} (task {first[0]!r}, classes {first[2]})")
        dataset = _split(task_data, split)
        if dataset is None:
            raise ConfigError(f"{run_dir}: its task data has no {split} split")
        # the same examples: equal tensors, or the same files at the same positions with the same labels
        digest = (_fingerprint(dataset), _source_fingerprint(config.data, dataset))
        settings, streamed = _input_settings(task_data), isinstance(dataset, IterableDataset)
        if fingerprint is None:
            fingerprint, first_settings, first_streamed = digest, settings, streamed
        elif digest[0] != fingerprint[0] and (digest[1] is None or digest[1] != fingerprint[1]):
            differ = [k for k in sorted(set(settings) | set(first_settings)) if settings.get(k) != first_settings.get(k)]
            shown = ", ".join(f"{k} {settings.get(k)!r} ({first[3]}: {first_settings.get(k)!r})" for k in differ)
            if differ and (streamed or first_streamed):  # other inputs, and a stream has no file positions to match
                raise ConfigError(f"{run_dir}: its inputs differ from {first[3]}'s ({shown}) and a split read from shards "
                                  "cannot be matched to another's by file; ensemble runs with the same feature "
                                  "settings, or score them on the folder (--data FOLDER)")
            if digest[1] is not None and fingerprint[1] is not None and digest[1][0] != fingerprint[1][0]:
                # other sources (two copies of one folder, say): files are matched within one source only
                why = (f"with other input settings ({shown}), members are matched by file, within one source" if differ
                       else "and its examples differ (other files, or another split)")
                raise ConfigError(f"{run_dir}: it reads {digest[1][0]}, {first[3]} reads {fingerprint[1][0]}; {why}: "
                                  "score them all on one (--data SOURCE)")
            raise ConfigError(f"{run_dir}: its {split} split ({len(dataset)} examples) differs from {first[3]}'s; "
                              "ensemble members must be scored on the same examples (split seeds must match)")
        out, y = trainer.outputs(dataset)
        if targets is None:
            targets, total = y, torch.zeros_like(out, dtype=torch.float64)
        total += out.double()
        members.append({"run_dir": str(run_dir), split: trainer.objective.score(out, y)})
    assert total is not None and targets is not None
    # the members' own dtype: float32 probabilities stay float32, but float64 regression predictions
    # (float32 spacing is 1.0 at 1e7) and language-model probabilities (< 1e-45 would become 0) stay exact
    return (total / len(run_dirs)).to(out.dtype), targets, members, objective


def ensemble_probabilities(run_dirs: list[str | Path], *, data: str | None = None,
                           device: str = "cpu") -> tuple[Tensor, Tensor, list[dict[str, Any]]]:
    """(mean class probabilities (B, K), labels (B,), each member's own test metrics) over the test split."""
    probs, labels, members, _ = ensemble_outputs(run_dirs, data=data, device=device)
    return probs, labels, members


def evaluate_ensemble(run_dirs: list[str | Path], *, data: str | None = None, device: str = "cpu") -> dict[str, Any]:
    """Test metrics of the averaged outputs, and each member's own."""
    outputs, targets, members, objective = ensemble_outputs(run_dirs, data=data, device=device)
    result: dict[str, Any] = {"members": members}
    if hasattr(objective, "calibrate_outputs") and len(run_dirs) > 1:
        val, val_targets, _, _ = ensemble_outputs(run_dirs, split="val", data=data, device=device)
        result["calibration"] = objective.calibrate_outputs(val, val_targets)
    result["test"] = objective.score(outputs, targets)
    return result
