"""Does a ViT pretrained on MNIST help on scikit-learn's 8x8 digits (``attnlab train --init RUN``)?

Issue 23's target: fine-tuning reaches a higher digits test accuracy at 1/4 of the epochs of
training from scratch, or we say that it does not help. Everything goes through attnlab's own
``resolve_config`` + ``train_run``, as ``attnlab train`` does:

1. pretrain: ``vit-small`` on MNIST (``--task mnist``, 28x28, 4x4 patches: a 7x7 grid), for
   ``--pretrain-epochs`` epochs (or reuse a finished run: ``--mnist-run DIR``);
2. fine-tune: ``--task digits --init <that run>`` (8x8 images, the same 4x4 patches: a 2x2
   grid, so the position table is resampled; a new 10-class head), with the task's ``--init``
   defaults (``attnlab.tasks.vision.FINETUNE_TRAIN``: ``--epochs`` epochs, lr 5e-4, 10% warm-up);
3. scratch: the same ``vit-small`` architecture on digits from a random start, with the digits
   task's own training defaults (lr 2e-3, weight decay 0.1, label smoothing 0.1), once at the
   same epochs and once at 4x the epochs;
4. ``--default-recipe``: also the digits task's own default model (``vit-tiny`` with a conv
   stem, 2x2 patches, 60 epochs), the best from-scratch recipe the library ships.

Each row runs once per ``--seeds`` seed (the seed picks the digits split and the initialisation);
the table gives the mean and standard deviation of test accuracy and the wall time per run.
Pretraining time is reported on its own line: fine-tuning is only cheaper once it is paid.

    python benchmarks/finetune_vision.py --pretrain-epochs 2 --seeds 0 1 2 --default-recipe
    python benchmarks/finetune_vision.py --mnist-run runs/mnist-vit-small --seeds 0 1 2
    python benchmarks/finetune_vision.py --quick      # smoke test: a tiny model pretrained on digits

Results: benchmarks/README.md ("Fine-tuning a ViT (MNIST -> digits)") and
benchmarks/results/finetune_vision-<cpu>[-quick].json.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import format_table, git_revision, machine_info, write_json  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist" / "mnist.npz"
log = logging.getLogger("finetune_vision")


def _cpu_tag() -> str:
    name = machine_info(torch.device("cpu")).get("cpu_model", "").lower()
    for tag in ("epyc", "xeon", "ryzen", "apple", "core"):
        if tag in name:
            return tag
    return "cpu"


def _train(values: dict[str, Any], out: Path) -> dict[str, Any]:
    from attnlab.run import train_run
    from attnlab.run_config import resolve_config

    config = resolve_config(values)
    start = time.perf_counter()
    metrics = train_run(config, out=out, overwrite=True)
    return {"accuracy": metrics["test"]["accuracy"], "epochs": metrics["epochs_run"], "wall_s": time.perf_counter() - start,
            "lr": config.train.lr, "model_config": dict(config.model_config)}


def _pretrain(args: argparse.Namespace, work: Path) -> tuple[Path, dict[str, Any]]:
    """The source run: ``--mnist-run`` as given, else vit-small trained on MNIST (digits with --quick)."""
    if args.mnist_run is not None:
        import json

        metrics = json.loads((args.mnist_run / "metrics.json").read_text())
        return args.mnist_run, {"run": str(args.mnist_run), "task": metrics["task"], "model": metrics["model"],
                                "epochs": metrics["epochs_run"], "accuracy": metrics["test"]["accuracy"],
                                "wall_s": metrics.get("wall_time_s"), "reused": True}
    out = work / "pretrain"
    if args.quick:  # the plumbing only: a tiny vit-small on digits (no shared data needed)
        values = {"task": "digits", "model": "vit-small", "train": {"epochs": 1, "progress": False, "seed": 0},
                  "model_config": {"dim": 32, "depth": 1}, "report_examples": 0}
    else:
        if not args.mnist.is_file():
            raise SystemExit(f"MNIST not found: {args.mnist} (see ../shared/data/README.md) or pass --mnist-run")
        values = {"task": "mnist", "data": str(args.mnist), "model": "vit-small", "report_examples": 0,
                  "train": {"epochs": args.pretrain_epochs, "progress": False, "seed": 0}}
    result = _train(values, out)
    log.info("pretrained %s: test accuracy %.4f in %.0f s", values["task"], result["accuracy"], result["wall_s"])
    return out, {"run": str(out), "task": values["task"], "model": "vit-small", "epochs": result["epochs"],
                 "accuracy": result["accuracy"], "wall_s": result["wall_s"], "reused": False,
                 "model_config": result["model_config"]}


def _rows(args: argparse.Namespace, source: Path, work: Path) -> list[dict[str, Any]]:
    epochs = args.epochs
    small = {"dim": 32, "depth": 1} if args.quick else {}  # scratch rows: the source's architecture
    plans = [
        ("fine-tuned (--init MNIST run)", {"init": str(source), "model": "vit-small"}, epochs),
        ("scratch, same epochs", {"model": "vit-small", "model_config": dict(small)}, epochs),
        ("scratch, 4x epochs", {"model": "vit-small", "model_config": dict(small)}, 4 * epochs),
    ]
    if args.default_recipe:
        plans.append(("scratch, digits default (vit-tiny + stem)", {"model": "vit-tiny"}, None))
    rows = []
    for name, values, plan_epochs in plans:
        runs = []
        for seed in args.seeds:
            train = {"progress": False, "seed": seed, **({"epochs": plan_epochs} if plan_epochs else {})}
            out = work / f"{name.split()[0].strip(',')}-{plan_epochs or 'default'}-seed{seed}"
            result = _train({"task": "digits", "report_examples": 0, **values, "train": train}, out)
            log.info("%s, seed %d: %.4f in %.0f s", name, seed, result["accuracy"], result["wall_s"])
            runs.append({"seed": seed, **result})
        accs = [r["accuracy"] for r in runs]
        rows.append({
            "row": name, "epochs": runs[0]["epochs"], "lr": runs[0]["lr"],
            "test_acc_mean": round(100 * statistics.fmean(accs), 2),
            "test_acc_std": round(100 * statistics.stdev(accs), 2) if len(accs) > 1 else None,
            "test_acc_runs": [round(100 * a, 2) for a in accs],
            "wall_s_per_run": round(statistics.fmean(r["wall_s"] for r in runs), 1), "runs": runs,
        })
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mnist", type=Path, default=MNIST, help="mnist.npz (x_train, y_train, x_test, y_test)")
    parser.add_argument("--mnist-run", type=Path, help="reuse a finished vit-small MNIST run instead of pretraining")
    parser.add_argument("--pretrain-epochs", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=15, help="fine-tuning epochs (scratch: the same and 4x)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--default-recipe", action="store_true", help="add the digits task's default (vit-tiny) row")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--work", type=Path, help="keep the run directories here (default: a temporary folder)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("attnlab").setLevel(logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.epochs, args.seeds, args.default_recipe = 1, [0], False
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        source, pretrain = _pretrain(args, work)
        rows = _rows(args, source, work)
    columns = [("row", "digits (sklearn 8x8), vit-small"), ("epochs", "epochs"), ("lr", "lr"),
               ("test_acc_mean", "test acc %"), ("test_acc_std", "std"), ("wall_s_per_run", "s/run")]
    print(f"pretrained: {pretrain['model']} on {pretrain['task']}, {pretrain['epochs']} epochs, test accuracy "
          f"{100 * pretrain['accuracy']:.2f}%" + (f", {pretrain['wall_s']:.0f} s" if pretrain.get("wall_s") else ""))
    print(format_table(rows, columns))
    print(f"seeds {args.seeds}; per-seed accuracies: " + "; ".join(f"{r['row']}: {r['test_acc_runs']}" for r in rows))
    out = args.out or RESULTS / f"finetune_vision-{_cpu_tag()}{'-quick' if args.quick else ''}.json"
    write_json(out, {"benchmark": "finetune_vision", "command": " ".join(sys.argv), "quick": args.quick,
                     "seeds": args.seeds, "pretrain": pretrain, "rows": rows, "threads": torch.get_num_threads(),
                     "machine": machine_info(torch.device("cpu")), "git": git_revision(__file__)})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
