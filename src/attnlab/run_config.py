"""What a run is: its `RunConfig` (task defaults under YAML under flags, validated) and what
that config builds, for training (`attnlab.run.train_run`) and for a finished run alike: the
task data, the model, the objective.

Kept apart from `attnlab.run` (which writes and reads the run directory) so that every path
that starts from a config, new run or saved one, builds its pieces in the one same way.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnlab.config import from_dict, load_yaml, to_dict
from attnlab.errors import CheckpointError, ConfigError
from attnlab.models.registry import create_model, model_entry
from attnlab.tasks import Pretrained, load_task, task_spec
from attnlab.tasks.init_run import is_run_directory, reopen_init, run_model
from attnlab.training import TrainConfig
from attnlab.training.class_weights import apply_class_weights

__all__ = ["RunConfig", "resolve_config", "migrate", "build_objective", "task_data_for", "model_for", "pretrained_of_run",
           "finished_task_data", "check_resume", "warn_replaced_options"]

log = logging.getLogger(__name__)


@dataclass
class RunConfig:
    task: str = "digits"
    data: str | None = None
    model: str | None = None
    model_config: dict = field(default_factory=dict)
    data_options: dict = field(default_factory=dict)  # task loader options, e.g. augment, image_size
    train: TrainConfig = field(default_factory=TrainConfig)
    objective: dict = field(default_factory=dict)  # the task objective's options, e.g. label_smoothing
    evaluation: dict = field(default_factory=dict)  # how the task evaluates, e.g. translation's beam_size
    report_examples: int = 4
    card_examples: int = 32  # validation examples the report card scores the relevance methods on (0: no card)
    init: str | None = None  # --init SOURCE: start from a pretrained checkpoint (the task's InitSupport)

    def __post_init__(self) -> None:
        spec = task_spec(self.task)  # raises ConfigError naming the known tasks
        for name in ("report_examples", "card_examples"):
            if getattr(self, name) < 0:  # 0 turns the report / card off; below 0 is a typo, not a setting
                raise ConfigError(f"RunConfig.{name} must be >= 0 (0: none), got {getattr(self, name)!r}")
        for section, cls, flag in (("objective", spec.objective_options, "objective"),
                                   ("evaluation", spec.evaluation_options, "eval")):
            options = _options(cls, getattr(self, section) or {}, flag)
            setattr(self, section, {} if options is None else to_dict(options))


def _options(cls: type | None, values: dict[str, Any], section: str) -> Any:
    """Validate a task's objective / evaluation options into their dataclass (None: none taken)."""
    if cls is None:
        if values:
            raise ConfigError(f"this task takes no --{section}.* options, got {sorted(values)}")
        return None
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"unknown --{section}.* option(s) {unknown}; this task takes {names}")
    return from_dict(cls, values)


# Options that moved out of train / data_options (label smoothing is the objective's; decoding is
# the translation task's evaluation): configs written before still load, with a warning.
_MOVED = {("train", "label_smoothing"): ("objective", "label_smoothing"),
          ("data_options", "eval_beam_size"): ("evaluation", "beam_size"),
          ("data_options", "eval_length_penalty"): ("evaluation", "length_penalty")}


def migrate(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with options that moved (`_MOVED`) under their new section, each move logged once."""
    values = {k: (dict(v) if isinstance(v, dict) else v) for k, v in values.items()}
    for (old_section, old_key), (section, key) in _MOVED.items():
        old = values.get(old_section) or {}
        if old_key in old:
            log.warning("config key %s.%s is now %s.%s (--%s.%s)", old_section, old_key, section, key,
                        "eval" if section == "evaluation" else section, key)
            values.setdefault(section, {})
            values[section] = {key: old.pop(old_key), **(values[section] or {})}
    return values


def resolve_config(values: dict[str, Any]) -> RunConfig:
    """Merge task defaults under user values (YAML + CLI) and validate."""
    values = migrate(values)
    task = values.get("task") or "digits"
    spec = task_spec(task)
    merged: dict[str, Any] = {"task": task}
    init = values.get("init")
    # --init RUN: the run's model, unless --model says otherwise (then open_init names both)
    merged["model"] = values.get("model") or (run_model(init) if init is not None else None) or spec.default_model
    model_entry(merged["model"])  # an unknown name: ConfigError listing the known models
    try:
        spec.check_model(merged["model"])
    except ConfigError as exc:
        if init is None or values.get("model"):
            raise
        raise ConfigError(f"--init {init}: a run of {exc}") from None  # the model came from the run
    same_model = merged["model"] == spec.default_model
    # --init: the task's fine-tuning defaults replace its from-scratch ones (flags still win);
    # a run's own model config replaces the default model config
    defaults = spec.init if init is not None and spec.init is not None else spec
    model_defaults = defaults.default_model_config if same_model and (init is None or not is_run_directory(init)) else {}
    merged["model_config"] = {**model_defaults, **(values.get("model_config") or {})}
    merged["train"] = {**defaults.default_train, **(values.get("train") or {})}
    merged["data_options"] = {**defaults.default_data_options, **(values.get("data_options") or {})}
    merged["objective"] = {**defaults.default_objective, **(values.get("objective") or {})}
    if merged["data_options"].get("target") == "regression" and "label_smoothing" not in (values.get("objective") or {}):
        merged["objective"].pop("label_smoothing", None)  # a task's smoothing default is for classes, not numbers
    merged["evaluation"] = dict(values.get("evaluation") or {})
    for key in ("data", "report_examples", "card_examples", "init"):
        if values.get(key) is not None:
            merged[key] = values[key]
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(RunConfig)})
    if unknown:
        raise ConfigError(f"unknown config key(s) {unknown}; valid: {[f.name for f in dataclasses.fields(RunConfig)]}")
    return from_dict(RunConfig, merged)


def warn_replaced_options(config: RunConfig, pretrained: Pretrained | None) -> None:
    """Training: a warning names each ``--data`` option given that the ``--init`` source's value
    replaces (an image checkpoint's preprocessor_config.json mean / std over ``--data.norm_stats``),
    so that a flag is never dropped silently (`task_data_for` uses the source's)."""
    for key, value in (pretrained.data_options if pretrained is not None else {}).items():
        if config.data_options.get(key) is not None and config.data_options[key] != value:
            log.warning("--data.%s %s is not used: the --init source's value replaces it (%s)",
                        key, config.data_options[key], value)


def task_data_for(config: RunConfig, pretrained: Pretrained | None = None):
    """The run's task data: its ``--data`` read with its data options (an ``--init`` checkpoint's
    or the finished run's carried vocabularies win; the options they replace are left out)."""
    replaced = set(pretrained.replaces) if pretrained is not None else set()
    options = {**{k: v for k, v in config.data_options.items() if k not in replaced},
               **(pretrained.data_options if pretrained is not None else {})}
    return load_task(config.task, config.data, seed=config.train.seed, **options)


def model_for(config: RunConfig, task_data, pretrained: Pretrained | None = None):
    """The registered model sized by the task data, the checkpoint and ``model_config`` (see the order below)."""
    spec = task_spec(config.task)
    spec.check_model(config.model)
    data_fields, checkpoint_fields = spec.model_fields(task_data), (pretrained.model_fields if pretrained else {})
    if pretrained is not None and pretrained.data_first:  # a run: the new data's fields win, shapes then must match
        fields = {**checkpoint_fields, **data_fields, **config.model_config}
    else:
        fields = {**data_fields, **checkpoint_fields, **config.model_config}
    return create_model(config.model, **fields)


def finished_task_data(config: RunConfig, run_dir: str | Path):
    """A finished run's task data, loaded as it was trained: with its own tokenizer, classes or
    item ids (`pretrained_of_run`), whatever data file ``config.data`` names now."""
    return task_data_for(config, pretrained_of_run(config, Path(run_dir)))


def pretrained_of_run(config: RunConfig, run_dir: Path) -> Pretrained | None:
    """What a finished or resumed run needs to read data as it was trained, from its data.json alone:
    an ``--init`` run's checkpoint parts (`reopen_init`), and for every run the vocabularies its
    task keeps there (`attnlab.tasks.base.RunVocabulary`). None: nothing to carry (a run without
    ``--init`` whose record keeps no vocabulary, or has no data.json yet)."""
    path = Path(run_dir) / "data.json"
    if config.init is None and not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot read the run's data record ({exc})") from None
    if not isinstance(record, dict):
        raise CheckpointError(f"{path}: not a run's data record (a JSON object)")
    spec = task_spec(config.task)
    pretrained = reopen_init(spec, record) if config.init is not None else None
    carried = spec.run_vocabulary.options(record) if spec.run_vocabulary is not None else {}
    if not carried:
        return pretrained  # an older run: its data is read as before
    if pretrained is None:
        pretrained = Pretrained()
    pretrained.data_options = {**pretrained.data_options, **carried}
    pretrained.replaces = tuple(dict.fromkeys((*pretrained.replaces, *spec.run_vocabulary.replaces)))
    return pretrained


def build_objective(config: RunConfig, task_data):
    """The task's objective with the run's ``objective`` and ``evaluation`` options."""
    spec = task_spec(config.task)
    objective = spec.objective(task_data, _options(spec.objective_options, config.objective, "objective"),
                               _options(spec.evaluation_options, config.evaluation, "eval"))
    apply_class_weights(objective, config.train.class_weights, task_data.train, task_data.num_classes, task_data.class_names)
    return objective


# Settings the checkpoint's optimizer state carries (each group's rate, weight decay, betas) or
# groups by (freeze, layer_decay, head_lr): on resume the saved state wins, so a new value would be ignored.
_FIXED_ON_RESUME = ("lr", "weight_decay", "adam_betas", "head_lr", "layer_decay", "freeze")


def check_resume(config: RunConfig, run_dir: Path) -> None:
    """Refuse, naming the option, a --resume that changes a setting the checkpoint fixes (`_FIXED_ON_RESUME`, and
    the seed: it drew the data splits, and the checkpoint restores the random state it left)."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return
    saved = from_dict(RunConfig, migrate(load_yaml(path))).train
    if saved.seed != config.train.seed:  # the seed draws the splits and the sample order the checkpoint continues
        raise ConfigError(f"--resume {run_dir}: --seed {config.train.seed} cannot apply, the run's splits and sample "
                          f"order come from its seed {saved.seed}; resume without it, or start a new run with --out")
    for name in _FIXED_ON_RESUME:
        old, new = getattr(saved, name), getattr(config.train, name)
        if to_dict(old) != to_dict(new):
            raise ConfigError(f"--resume {run_dir}: --train.{name} {new!r} cannot apply, the checkpoint's optimizer state "
                              f"holds the run's {name} {old!r}; resume without it, or start a new run with --out")
