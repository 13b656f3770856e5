"""What a task family declares: its data, models, objective, metrics, predict, explain, verbs.

A `TaskSpec` is everything task-specific in one value; ``attnlab.run`` and ``attnlab.cli``
read specs and contain no per-task code. Family modules (``attnlab.tasks.vision``, ...) build
their specs without side effects; ``attnlab.tasks`` lists them in one explicit table.
See docs/adding-a-task.md.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from torch import nn

from attnlab.errors import ConfigError
from attnlab.training import ClassificationObjective, Objective
from attnlab.training.multilabel import MultiLabelObjective
from attnlab.training.regression import RegressionObjective

__all__ = ["TaskSpec", "TaskCommand", "InitSupport", "Pretrained", "RunVocabulary", "run_targets", "CrossEntropyOptions",
           "NoOptions", "classification_objective", "warn_cut"]


@dataclass
class CrossEntropyOptions:
    """Options of a cross-entropy objective (``--objective.label_smoothing 0.1``).

    Label smoothing: Szegedy et al. 2016, "Rethinking the Inception Architecture".
    """

    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"objective.label_smoothing must be in [0, 1), got {self.label_smoothing!r}")


@dataclass
class NoOptions:
    """For objectives without options: any ``--objective.*`` flag is refused by name."""


def classification_objective(task_data: Any, options: CrossEntropyOptions, evaluation: Any) -> Objective:
    """The objective ``task_data.target`` calls for (`attnlab.data.targets`): single-label
    cross-entropy over ``num_classes`` (accuracy, macro-F1); for "regression" MSE on the
    standardised target (mse, mae, r2 in its units; label smoothing does not apply: the run
    drops a task's default and refuses an explicit value); for "multilabel" sigmoid + BCE
    (micro/macro F1, mAP; label smoothing pulls the 0/1 targets toward 1/2)."""
    target = getattr(task_data, "target", "class")
    if target == "regression":
        if options.label_smoothing:
            raise ConfigError(f"--objective.label_smoothing {options.label_smoothing:g} does not apply to a regression target")
        scaler = task_data.info["target_scaler"]
        return RegressionObjective(scaler["mean"], scaler["std"])
    if target == "multilabel":
        return MultiLabelObjective(task_data.num_classes, label_smoothing=options.label_smoothing)
    return ClassificationObjective(task_data.num_classes, label_smoothing=options.label_smoothing)


@dataclass(frozen=True)
class TaskCommand:
    """An extra CLI verb a task family offers on its runs (``attnlab recommend``, ``generate``).

    ``add_arguments(parser)`` declares its flags after the ``run_dir`` positional;
    ``run(model, record, args)`` gets the loaded run's model and ``data.json`` record and
    returns the text the CLI prints.
    """

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[nn.Module, dict[str, Any], argparse.Namespace], str]


@dataclass
class Pretrained:
    """What a task made of ``--init SOURCE`` for one run (`InitSupport.open` / ``reopen``).

    ``model_fields``: model config fields the checkpoint dictates (they override the data's,
    user ``--model.*`` flags override them). ``data_options``: objects the loader gets beside
    the ``--data.*`` options (e.g. the checkpoint's tokenizer); never written to config.yaml.
    ``load_weights(model)`` copies the checkpoint into the built model (None when reopened
    from a run directory, whose weights come from its checkpoint). ``files``: text files the
    run directory keeps under ``init/`` (relative path -> text). ``record``: provenance kept
    in data.json under ``init`` (source path, weights file, SHA-256). ``replaces``: the run's
    own ``--data.*`` options that ``data_options`` supersede (they only said how the carried
    tokenizer was made), left out of the loader's options (`RunVocabulary`).
    """

    model_fields: dict[str, Any] = field(default_factory=dict)
    data_options: dict[str, Any] = field(default_factory=dict)
    load_weights: Callable[[nn.Module], None] | None = None
    files: dict[str, str] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)
    model: str | None = None  # the model SOURCE holds, when it says (an attnlab run): --model must match
    data_first: bool = False  # the data's model fields win over model_fields (a run: shapes must then match)
    replaces: tuple[str, ...] = ()
    data: Any = None  # the TaskData the model is built for, set by the run before load_weights (what a head fits)


@dataclass(frozen=True)
class RunVocabulary:
    """How a task reads data as a finished run was trained: with the run's vocabularies.

    A model's input and output ids mean what the run's tokenizer, class list or item-id map
    said at training time; rebuilding them from the data given now (``attnlab evaluate RUN
    --data OTHER``, ``--resume`` after the file changed) shifts every id silently. ``options``
    turns a run's data.json record into loader options that carry them (e.g.
    ``pretrained_tokenizer``, ``class_names``), ``{}`` for a record that keeps none (an older
    run: read as before); the loader then refuses data the run cannot read (a label it has no
    class for) with a DataError naming the file and value. ``replaces``: the ``--data.*``
    options that only said how the vocabulary was made (``tokenizer``, ``vocab_size``...),
    dropped from the run's options when the vocabulary is carried.
    """

    options: Callable[[dict[str, Any]], dict[str, Any]]
    replaces: tuple[str, ...] = ()


def warn_cut(where: str, text: str, total: int, kept: int, max_length: int, rest: str = "is ignored") -> None:
    """Say that a predict / explain input of ``total`` tokens is read as its first ``kept`` (the run's
    ``max_length``, as in training): a cut is a warning naming the file and the text, never silent."""
    shown = text if len(text) <= 40 else text[:40] + "..."
    logging.getLogger(__name__).warning("%s: %r is %d tokens; the run reads the first %d (its max_length %d), the rest %s",
                                        where, shown, total, kept, max_length, rest)


def run_targets(record: dict[str, Any]) -> dict[str, Any]:
    """What a run's data.json says its outputs mean, as loader options: ``class_names`` (the
    classes, or a multi-label run's label names, in output order) or a regression run's
    ``target_scaler`` (the model predicts targets standardised with it); ``{}`` where it keeps neither."""
    target = record.get("target") or "class"
    info = record.get("info") if isinstance(record.get("info"), dict) else {}
    if target == "regression":
        return {"target_scaler": info["target_scaler"]} if isinstance(info.get("target_scaler"), dict) else {}
    names = record.get("class_names")
    return {"class_names": [str(n) for n in names]} if isinstance(names, list) and names else {}


@dataclass(frozen=True)
class InitSupport:
    """A task family's ``--init SOURCE``: start from pretrained weights.

    ``open(source)`` checks SOURCE (raising an AttnlabError naming the file, before anything is
    written) and returns a `Pretrained`; ``reopen(record)`` rebuilds what the loader needs
    from a finished run's data.json record alone (evaluate, ``--resume``: SOURCE may be gone).
    Every task starts from an earlier attnlab run of the same model (`attnlab.tasks.init_run`);
    ``from_run(source)`` replaces that generic opener where a family adapts a run (a tokenizer
    to carry, a position table to resample); ``open`` is None for a family that starts from runs only.
    The ``default_*`` values replace the task's own defaults when ``--init`` is given (still
    overridden by flags); ``help`` says what ``--init`` changes (``attnlab train --help``).
    """

    help: str
    open: Callable[[Path], Pretrained] | None = None
    reopen: Callable[[dict[str, Any]], Pretrained] | None = None
    from_run: Callable[[Path], Pretrained] | None = None
    default_model_config: dict[str, Any] = field(default_factory=dict)
    default_train: dict[str, Any] = field(default_factory=dict)
    default_data_options: dict[str, Any] = field(default_factory=dict)
    default_objective: dict[str, Any] = field(default_factory=dict)


@dataclass
class TaskSpec:
    """One ``--task`` name: how its data meets a model, an objective and the run directory.

    ``load(data, *, seed, **data_options) -> TaskData`` reads the data; ``models`` are the
    registered model names that serve the task (the first one is the default);
    ``model_fields(task_data)`` gives the model config fields the data dictates (classes,
    vocabulary, image size). ``objective(task_data, objective_options, evaluation_options)``
    builds what the trainer optimises and how it scores a split, where the two option values
    are instances of ``objective_options`` / ``evaluation_options`` (dataclasses; the run's
    ``--objective.*`` / ``--eval.*`` flags fill them). ``report_examples``, ``predict`` and
    ``explain_example`` serve the report, ``attnlab predict`` and ``attnlab explain``;
    ``explain_positions`` the relevance methods and their faithfulness scores (the report card,
    ``attnlab explain --faithfulness``).
    ``init`` (an `InitSupport`) lets ``--init SOURCE`` start the model from a pretrained checkpoint.
    ``run_vocabulary`` (a `RunVocabulary`) reads a finished run's data with its own tokenizer,
    classes or item ids (evaluate, explain, ensembles, ``--resume``). ``input_suffixes``: what
    ``attnlab predict`` reads of a folder's files (a README beside the images is left out).
    """

    name: str
    load: Callable[..., Any]
    models: tuple[str, ...]
    description: str = ""
    default_model_config: dict[str, Any] = field(default_factory=dict)
    default_train: dict[str, Any] = field(default_factory=dict)
    default_data_options: dict[str, Any] = field(default_factory=dict)
    default_objective: dict[str, Any] = field(default_factory=dict)
    objective_options: type = CrossEntropyOptions
    evaluation_options: type | None = None
    model_fields: Callable[[Any], dict[str, Any]] = lambda task_data: {}
    objective: Callable[[Any, Any, Any], Objective] = classification_objective
    # (model, task data, count) -> list of explain.report.ReportExample
    report_examples: Callable[[nn.Module, Any, int], list] | None = None
    # (model, data.json record, inputs, top_k) -> list of JSON-ready predictions
    predict: Callable[[nn.Module, dict[str, Any], list[str], int], list[dict[str, Any]]] | None = None
    # (model, data.json record, one input path or string) -> explain.report.ReportExample
    explain_example: Callable[[nn.Module, dict[str, Any], str], Any] | None = None
    # (model, task data, (input, label) items, their indices) -> list of explain.positions.Positions:
    # what relevance methods attribute to, faithfulness measures perturb, and what "removed" means
    explain_positions: Callable[[nn.Module, Any, list, list[int]], list] | None = None
    # (data.json record) -> the task data explain_positions needs for `attnlab explain` of one input, when the
    # record holds it all (text: the tokenizer): the training file is then not read again. None: reload the data
    explain_record_data: Callable[[dict[str, Any]], Any] | None = None
    commands: tuple[TaskCommand, ...] = ()
    init: InitSupport | None = None  # --init SOURCE: fine-tune from a pretrained checkpoint
    run_vocabulary: RunVocabulary | None = None  # a finished run's data read with its own vocabularies
    # the files `predict` takes from a folder argument (lower-case suffixes, e.g. ".png"); () = every file. Files
    # named one by one are always read.
    input_suffixes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError(f"task {self.name!r} lists no models")

    @property
    def default_model(self) -> str:
        return self.models[0]

    def check_model(self, model: str) -> None:
        if model not in self.models:
            raise ConfigError(f"model {model!r} does not fit task {self.name!r}; it is served by {list(self.models)}")
