"""Task families: everything task-specific, one module each, listed in one table.

``TASKS`` maps every ``--task`` name to its `TaskSpec` (data loader, models, objective,
metrics, predict, explain adapter, extra CLI verbs). The table below is the only place a task
is registered: a family module builds its ``SPECS`` without side effects, and adding a family
means adding its module to ``_FAMILIES`` (docs/adding-a-task.md).
"""

from __future__ import annotations

import inspect
from typing import Any

from attnlab.data.base import TaskData, call_with_options
from attnlab.errors import ConfigError
from attnlab.tasks import audio, detection, forecasting, language_model, sasrec, text, timeseries, translation, vision
from attnlab.tasks.base import CrossEntropyOptions, InitSupport, NoOptions, Pretrained, TaskCommand, TaskSpec

__all__ = ["TASKS", "TaskSpec", "TaskCommand", "InitSupport", "Pretrained", "CrossEntropyOptions", "NoOptions", "task_spec", "list_tasks", "load_task",
           "task_commands"]

_FAMILIES = (vision, text, translation, language_model, audio, timeseries, sasrec, detection, forecasting)

TASKS: dict[str, TaskSpec] = {}
for _family in _FAMILIES:
    for _spec in _family.SPECS:
        if _spec.name in TASKS:
            raise ValueError(f"task {_spec.name!r} is declared twice")
        TASKS[_spec.name] = _spec


def task_spec(name: str) -> TaskSpec:
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name]


def list_tasks() -> list[str]:
    return sorted(TASKS)


def load_task(name: str, data: str | None, *, seed: int, **options: Any) -> TaskData:
    """Load a task's splits; ``data`` is the ``--data`` path (or None), ``options`` its
    ``--data.*`` options (an option the loader does not take is refused by name)."""
    spec = task_spec(name)
    params = inspect.signature(spec.load).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return spec.load(data, seed=seed, **options)
    return call_with_options(spec.load, name, options, data=data, seed=seed)


def task_commands() -> dict[str, tuple[TaskCommand, list[str]]]:
    """Extra CLI verbs: name -> (command, the tasks that offer it)."""
    verbs: dict[str, tuple[TaskCommand, list[str]]] = {}
    for spec in TASKS.values():
        for command in spec.commands:
            verbs.setdefault(command.name, (command, []))[1].append(spec.name)
    return verbs
