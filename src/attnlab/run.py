"""A run: task data + registered model + trainer + run directory. The CLI calls these.

The config and what it builds (task data, model, objective) are `attnlab.run_config`'s; its
public names stay importable from here. This module writes a run directory and reads it back.

Run directory layout (rank 0 writes, every file atomically):
    config.yaml        the resolved RunConfig (model config included): rebuilds the run
    data.json          what inference needs of the data: task, target kind, classes, input
                       spec (a regression target's scaler under info); "calibration": what the
                       objective chose on validation after training (a multi-label threshold);
                       with --init, "init": the source path and its weights' SHA-256
    init/              with --init: the checkpoint's tokenizer and configs (not its weights), so
                       the run needs SOURCE no more
    model.safetensors  final (best-on-validation) weights, no pickle
    checkpoint/        resumable state (weights, optimizer, RNG, schedule, counters)
    metrics.jsonl      one line per epoch; metrics.json the final test metrics
    tensorboard/       scalars and attention images
    report.html        the explorer for a few test examples: attention, relevance maps, report card
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from attnlab import jsonsafe
from attnlab.config import from_dict, load_yaml, to_dict
from attnlab.data.base import check_splits
from attnlab.data.shards import head, skip_counts, with_test_in_memory
from attnlab.errors import AttnlabError, CheckpointError, ConfigError, DataError
from attnlab.explain.relevance import IG_MAX_STEPS, IG_STEPS
from attnlab.models.registry import create_model
from attnlab.output_paths import missing_folders, remove_outputs, removed_after
from attnlab.run_config import (
    RunConfig,
    build_objective,
    check_resume,
    finished_task_data,
    migrate,
    model_for,
    pretrained_of_run,
    resolve_config,
    task_data_for,
    warn_replaced_options,
)
from attnlab.tasks import task_spec
from attnlab.tasks.init_run import open_init
from attnlab.tasks.positions import faithfulness, input_method_maps, report_card
from attnlab.training import DistInfo, Trainer, load_weights, pick_device
from attnlab.training.checkpoint import atomic_write_text
from attnlab.training.batch_draws import takes_generator

__all__ = ["RunConfig", "train_run", "load_run", "evaluate_run", "evaluation_trainer", "predict_run", "explain_run", "faithfulness_run",
           "resolve_config", "build_objective", "run_task_command"]

log = logging.getLogger(__name__)

# The names scripts written before the config moved to `attnlab.run_config` import from here.
_load_task, _build_model = task_data_for, model_for

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def default_run_dir(config: RunConfig, root: Path = Path("runs")) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return root / f"{config.task}-{config.model}-{stamp}"


def check_run_name(path: Path) -> None:
    if not _SAFE_NAME.match(path.name) or ".." in path.parts:
        raise ConfigError(f"run directory name {str(path)!r} is not allowed: use letters, digits, '.', '_' and '-'")


def _check_creatable(run_dir: Path) -> None:
    """Refuse a run directory that could not be made, before the data is read (else it fails only
    at the first write, e.g. under /proc where even root cannot make folders): the missing part of
    the path is made and removed again, so a refused run still leaves nothing behind."""
    missing, parent = missing_folders(run_dir)
    if not parent.is_dir():
        raise ConfigError(f"run directory {run_dir}: {parent} is a file, not a folder")
    if not missing:
        return
    with removed_after(missing):
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"run directory {run_dir}: cannot create it in {parent} ({exc.strerror})") from None


def _write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, jsonsafe.dumps(data, indent=2) + "\n")  # undefined metrics as null, not NaN


def train_run(
    config: RunConfig,
    *,
    out: Path | None = None,
    resume: Path | None = None,
    dist: DistInfo | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train, evaluate on the test split, and write the run directory. Returns metrics.json."""
    dist = dist or DistInfo()
    pick_device(config.train.device, dist.local_rank)  # an unavailable device fails before anything is written
    start = time.perf_counter()
    torch.manual_seed(config.train.seed)
    run_dir = Path(resume) if resume is not None else (out or default_run_dir(config))
    check_run_name(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"run directory {run_dir} is a file, not a directory")
    if dist.is_main:  # only rank 0 writes the run directory; other ranks probing it at once would race
        _check_creatable(run_dir)
    if resume is None and run_dir.exists() and any(run_dir.iterdir()) and not overwrite:
        raise ConfigError(f"run directory {run_dir} already exists; pass --overwrite or --resume {run_dir}")
    spec = task_spec(config.task)
    pretrained = None
    if resume is not None:  # its --init checkpoint's parts and its own vocabularies, from its data.json
        check_resume(config, run_dir)
        pretrained = pretrained_of_run(config, run_dir)
    elif config.init is not None:  # a checkpoint is checked (and its weights read) before anything is written
        pretrained = open_init(spec, config.init, model=config.model)
    warn_replaced_options(config, pretrained)
    task_data = task_data_for(config, pretrained)
    # Training needs every split: the trainer would validate on nothing, the test metrics would be
    # of nothing. Only here: evaluating another file needs its test split alone.
    check_splits(task_data, {**getattr(spec.load, "option_defaults", {}), **config.data_options})
    try:
        model = model_for(config, task_data, pretrained)
    except ConfigError as exc:  # e.g. a config.json whose sizes do not make a model
        if config.init is None or pretrained is None or str(config.init) in str(exc):
            raise
        raise ConfigError(f"--init {config.init}: {exc}") from None
    if pretrained is not None and pretrained.load_weights is not None:
        pretrained.data = task_data  # e.g. a run's head is kept only for the classes it was trained on
        pretrained.load_weights(model)
        record = pretrained.record or {}
        _check_finite(model, Path(record["source"]) / record["weights"] if {"source", "weights"} <= record.keys() else config.init)
    config.model_config = to_dict(model.config)
    objective = build_objective(config, task_data)
    callbacks = [_attention_image_logger(task_data)] if dist.is_main else []
    # The trainer checks batch size, freeze patterns and learning-rate groups: all before the
    # first file is written, so a refused run leaves nothing behind (nor changes a run --overwrite names).
    trainer = Trainer(
        model, objective, task_data.train, task_data.val, config.train, run_dir=run_dir, dist=dist,
        batch_augment=_inputs_only(task_data.batch_augment), callbacks=callbacks, collate_fn=task_data.collate_fn,
    )
    if resume is not None:  # a checkpoint that does not fit is refused before config.yaml is rewritten: else
        trainer.resume()  # the refused options would be the run's, and a plain --resume would fail from then on
    if dist.is_main:
        if resume is None:  # --overwrite: the old run's outputs go, else its epochs and curves mix with the new
            remove_outputs(run_dir, _OUTPUTS)
        run_dir.mkdir(parents=True, exist_ok=True)
        saved = to_dict(config)
        if saved.get("data") and not os.path.isabs(saved["data"]):  # evaluate/explain from another directory
            saved["data"] = os.path.abspath(saved["data"])  # still find it (a shard pattern's braces are kept)
        atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(saved, sort_keys=False))
        record = _data_record(task_data)
        if config.init is not None and pretrained is not None:
            record["init"] = pretrained.record  # source, weights file, SHA-256
            for name, text in pretrained.files.items():  # the checkpoint's tokenizer and configs
                (run_dir / "init" / name).parent.mkdir(parents=True, exist_ok=True)
                atomic_write_text(run_dir / "init" / name, text)
        _write_json(run_dir / "data.json", record)
        for name, text in task_data.files.items():  # e.g. tokenizer.json
            atomic_write_text(run_dir / name, text)
    summary = trainer.fit()
    calibration = trainer.calibrate(task_data.val) if task_data.val is not None else None
    task_data.calibration = calibration
    if calibration is not None and dist.is_main:  # e.g. a multi-label threshold: predict and evaluate read it back
        record["calibration"] = calibration
        _write_json(run_dir / "data.json", record)
    test = trainer.evaluate(task_data.test)
    metrics = {
        "task": config.task, "model": config.model, "test": test, "val_best": summary["best_val"],
        "best_epoch": summary["best_epoch"], "epochs_run": summary["epochs_run"],
        "parameters": sum(p.numel() for p in model.parameters()), "device": str(trainer.device),
        "precision": trainer.precision, "world_size": dist.world_size, "wall_time_s": time.perf_counter() - start,
    }
    if calibration is not None:
        metrics["calibration"] = calibration
    metrics.update(skip_counts(task_data))  # --data.skip_bad: what the loaders left out
    if dist.is_main:
        _write_json(run_dir / "metrics.json", metrics)
        if config.report_examples > 0 and spec.report_examples is not None:
            shown = with_test_in_memory(task_data, config.report_examples)  # a stream: its first few, in memory
            examples = spec.report_examples(model, shown, config.report_examples) if shown is not None else None
            if examples is None:
                log.info("no report.html: the streamed test split has no examples to show")
            elif examples:  # none: the model has neither attention nor an exact attribution (dlinear's) to show
                card = report_card(spec, model.eval(), config.model, shown, examples, limit=config.card_examples)
                _write_report(examples, task_data, run_dir / "report.html", card)
            else:
                log.info("no report.html: model %s has no attention layers or exact attribution to show", config.model)
    metrics["run_dir"] = str(run_dir)
    return metrics


# What a run writes (the module docstring's layout); task files such as tokenizer.json are rewritten anyway.
_OUTPUTS = ("config.yaml", "data.json", "init", "model.safetensors", "checkpoint", "checkpoint.old", "checkpoint.tmp",
            "metrics.jsonl", "metrics.json", "tensorboard", "report.html")


def _check_finite(model: torch.nn.Module, source: Any) -> None:
    """Refuse a checkpoint whose weights hold NaN or infinity: training on them gives NaN silently."""
    for name, p in model.named_parameters():
        bad = int((~torch.isfinite(p)).sum())
        if bad:
            raise DataError(f"{source}: the checkpoint's weights hold {bad} NaN or infinite value(s) "
                            f"(in what loads into {name}, shape {tuple(p.shape)})")


def _inputs_only(augment):
    """Data loaders augment inputs (B, C, H, W); the trainer hands over whole (x, y) batches, and the
    generator each rank draws from (`attnlab.training.batch_draws`) where the augmenter takes one."""
    if augment is None:
        return None
    if not takes_generator(augment):
        return lambda batch: (augment(batch[0]), *batch[1:])
    return lambda batch, generator=None: (augment(batch[0], generator=generator), *batch[1:])


def _data_record(task_data) -> dict[str, Any]:
    spec = task_data.spec.to_dict() if getattr(task_data, "spec", None) is not None else None
    return {"task": task_data.task, "target": task_data.target, "class_names": list(task_data.class_names),
            "num_classes": task_data.num_classes,
            "input_shape": list(task_data.input_shape), "spec": spec, "info": task_data.info,
            "summary": task_data.summary()}


def _attention_image_logger(task_data):
    """TensorBoard: the last layer's head-mean attention on one validation example per epoch."""

    def callback(trainer: Trainer, epoch: int, record: dict[str, Any]) -> None:
        if not trainer.logger.writes_images or task_data.val is None or len(task_data.val) == 0:
            return
        from attnlab.explain.capture import attention_modules, capture

        if not attention_modules(trainer.model):  # e.g. a CNN peer model: nothing to draw
            return
        item = head(task_data.val, 1)[0]
        if len(item) != 2:  # only (x, y) items feed the model as one input
            return
        x = item[0]
        trainer.model.eval()
        maps = capture(trainer.model, x[None].to(trainer.device))
        if not maps.maps:
            return
        last = maps.maps[-1][0].float().mean(0)  # (N, M)
        image = (last / last.max().clamp(min=1e-12)).cpu().numpy()
        trainer.logger.image("attention/last_layer_mean", image, epoch)

    return callback


def _write_report(examples: list, task_data, path: Path, card: dict | None = None) -> None:
    from attnlab.explain.report import write_report

    best = None if card is None else card["best"]  # the page shows first the map that scored best on validation
    write_report(path, examples, title=f"attnlab — {task_data.task}", meta={"task": task_data.task}, card=card, default_method=best)


def load_run(run_dir: str | Path, *, device: str = "cpu"):
    """Rebuild (config, model, data record) from a run directory; weights from safetensors only.

    ``device``: where the model goes (``auto``: CUDA when there is one); an unavailable device
    is a ConfigError naming it.
    """
    target = pick_device(device)
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory not found: {run_dir}")
    for name in ("config.yaml", "data.json", "model.safetensors"):
        if not (run_dir / name).is_file():
            raise CheckpointError(f"{run_dir} is not a finished run: {name} is missing")
    raw = load_yaml(run_dir / "config.yaml")  # one line naming the file, line and column when corrupt
    try:
        record = json.loads((run_dir / "data.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{run_dir / 'data.json'}: corrupt ({exc})") from None
    config = from_dict(RunConfig, migrate(raw))
    model = create_model(config.model, **config.model_config)
    load_weights(model, run_dir / "model.safetensors")
    model.to(target).eval()
    return config, model, record


def evaluation_trainer(run_dir: str | Path, *, data: str | None = None, device: str = "cpu"):
    """(config, trainer holding the run's model and objective, task data) for scoring a finished run."""
    config, model, record = load_run(run_dir)
    if data is not None:
        config.data = data
    task_data = finished_task_data(config, run_dir)
    objective = build_objective(config, task_data)
    if record.get("calibration") and hasattr(objective, "load_calibration"):
        objective.load_calibration(record["calibration"])  # the threshold chosen on validation at training time
    # Scoring trains nothing: a file smaller than one training batch is still scored (the
    # trainer only sizes its unused training loader with it), and data with no training part at
    # all (a folder of FSDD test recordings) sizes it with the test split instead.
    unused = task_data.train
    if hasattr(unused, "__len__") and len(unused) == 0 and task_data.test is not None:
        unused = task_data.test
    size = len(unused) if hasattr(unused, "__len__") else 0
    batch_size = min(config.train.batch_size, size) if size else config.train.batch_size
    trainer_cfg = dataclasses.replace(config.train, device=device, progress=False, batch_size=batch_size,
                                      accumulate=1)  # a few batches of another file need no accumulation
    trainer = Trainer(model, objective, unused, None, trainer_cfg, collate_fn=task_data.collate_fn)
    return config, trainer, task_data


def evaluate_run(run_dir: str | Path, *, data: str | None = None, device: str = "cpu") -> dict[str, Any]:
    config, trainer, task_data = evaluation_trainer(run_dir, data=data, device=device)
    return {"task": config.task, "model": config.model, "test": trainer.evaluate(task_data.test)}


def input_suffixes(run_dir: str | Path) -> tuple[str, ...]:
    """The files ``predict`` reads from a folder argument for this run's task (``TaskSpec.input_suffixes``);
    () when the run's config cannot be read (``predict_run`` then says why, in one line)."""
    try:
        return task_spec(load_yaml(Path(run_dir) / "config.yaml").get("task", "digits")).input_suffixes
    except (AttnlabError, AttributeError, OSError, ValueError):
        return ()


def predict_run(run_dir: str | Path, inputs: list[str], *, top_k: int = 1, device: str = "cpu") -> list[dict[str, Any]]:
    """The task's predictions for input files (or strings, for tasks that read text)."""
    config, model, record = load_run(run_dir, device=device)
    spec = task_spec(config.task)
    if spec.predict is None:
        raise ConfigError(f"task {config.task!r} has no predict command")
    return spec.predict(model, record, inputs, top_k)


def explain_run(run_dir: str | Path, input_path: str, output: str | Path, *, layer: int = -1, head: int | None = None,
                rollout: bool = False, method: str | None = None, steps: int = IG_STEPS, max_steps: int = IG_MAX_STEPS,
                device: str = "cpu") -> Path:
    """``attnlab explain``: the task turns one input into a ReportExample; explain/ draws it. ``method``
    (``explain.relevance``): the map a PNG draws, the page's first (None: ``layer`` / ``head`` attention)."""
    from attnlab.explain.render import check_output, render_explanation

    output = check_output(output)
    config, model, record = load_run(run_dir, device=device)
    spec = task_spec(config.task)
    if spec.explain_example is None:
        raise ConfigError(f"task {config.task!r} has no explain support yet")
    example = spec.explain_example(model, record, input_path)
    applies = spec.explain_positions is not None  # the relevance methods: a task with an adapter
    if method == "rollout" and not applies:  # --rollout where methods do not apply: the captured maps' rollout
        method, rollout = None, True
    if method == "raw" and (layer != -1 or head is not None):  # raw attention of the chosen layer / head
        method = None
    html = output.suffix.lower() == ".html"  # a page offers every method, where they apply
    if (method is not None and method not in (example.methods or {})) or (html and applies):  # maps to compute
        task_data = (spec.explain_record_data(record) if spec.explain_record_data is not None  # the record suffices
                     else _with_calibration(finished_task_data(config, run_dir), record))  # e.g. the training mean
        input_method_maps(spec, model, config.model, task_data, example, method, every=html, steps=steps,
                          max_steps=max_steps)
    return render_explanation(example, output, layer=layer, head=head, rollout=rollout, method=method,
                              title=f"attnlab explain — {Path(input_path).name}", meta={"run": str(run_dir)})


def _with_calibration(task_data, record: dict[str, Any]):
    """``task_data`` with the run's calibration (a multi-label threshold), as training left it on the data."""
    task_data.calibration = record.get("calibration")
    return task_data


def faithfulness_run(run_dir: str | Path, *, methods: list[str] | None = None, split: str = "validation",
                     limit: int = 100, steps: int = IG_STEPS, max_steps: int = IG_MAX_STEPS,
                     device: str = "cpu") -> dict[str, Any]:
    """``attnlab explain RUN --faithfulness``: each method's scores on a split (tasks/positions.py)."""
    config, model, record = load_run(run_dir, device=device)
    task_data = _with_calibration(finished_task_data(config, run_dir), record)
    return faithfulness(task_spec(config.task), model, config.model, task_data, split=split, methods=methods,
                        limit=limit, steps=steps, max_steps=max_steps)


def run_task_command(name: str, run_dir: str | Path, args: Any, *, device: str = "auto") -> str:
    """An extra verb a task offers (``attnlab recommend``, ``attnlab generate``) on a run of that task."""
    from attnlab.tasks import task_commands

    command, tasks = task_commands()[name]
    config, model, record = load_run(run_dir, device=device)
    if config.task not in tasks:
        raise ConfigError(f"{run_dir} is a {config.task!r} run; {name} needs a run of task {' or '.join(map(repr, tasks))}")
    return command.run(model, record, args)
