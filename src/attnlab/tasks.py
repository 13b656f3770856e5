"""Task families: how a task's data meets a model, an objective and the run directory.

Each task name (``--task``) has a ``TaskSpec``: its default model and settings, which model
config fields come from the data (classes, image size, vocabulary...), the objective the
trainer optimises, and how to build report examples and predictions. New task families
register a spec here (``register_task_spec``) and a data loader in ``attnlab.data``; the run
and the CLI need no change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from attnlab.errors import ConfigError
from attnlab.training import ClassificationObjective, Objective, TrainConfig

__all__ = ["TaskSpec", "register_task_spec", "task_spec", "list_tasks"]


@dataclass
class TaskSpec:
    name: str
    default_model: str
    description: str = ""
    default_model_config: dict[str, Any] = field(default_factory=dict)
    default_train: dict[str, Any] = field(default_factory=dict)
    default_data_options: dict[str, Any] = field(default_factory=dict)
    # task data -> model config fields the data dictates
    model_fields: Callable[[Any], dict[str, Any]] = lambda task_data: {}
    # (task data, train config) -> objective
    objective: Callable[[Any, TrainConfig], Objective] = lambda task_data, cfg: ClassificationObjective(
        task_data.num_classes, label_smoothing=cfg.label_smoothing
    )
    # (model, task data, count) -> list of explain.report.ReportExample
    report_examples: Callable[[nn.Module, Any, int], list] | None = None
    # (model, data.json record, inputs, top_k) -> list of JSON-ready predictions
    predict: Callable[[nn.Module, dict[str, Any], list[str], int], list[dict[str, Any]]] | None = None
    # (model, data.json record, one input path or string) -> explain.report.ReportExample
    explain_example: Callable[[nn.Module, dict[str, Any], str], Any] | None = None


_TASKS: dict[str, TaskSpec] = {}


def register_task_spec(spec: TaskSpec) -> TaskSpec:
    if spec.name in _TASKS:
        raise ValueError(f"task {spec.name!r} is already registered")
    _TASKS[spec.name] = spec
    return spec


def _ensure_loaded() -> None:
    # Every module named attnlab/task_*.py is a task family; importing it registers it.
    import importlib
    import pkgutil

    import attnlab

    for info in pkgutil.iter_modules(attnlab.__path__):
        if info.name.startswith("task_"):
            importlib.import_module(f"attnlab.{info.name}")


def task_spec(name: str) -> TaskSpec:
    _ensure_loaded()
    if name not in _TASKS:
        raise ConfigError(f"unknown task {name!r}; known tasks: {', '.join(sorted(_TASKS))}")
    return _TASKS[name]


def list_tasks() -> list[str]:
    _ensure_loaded()
    return sorted(_TASKS)
