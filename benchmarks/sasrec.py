"""Does our SASRec reach the paper's numbers on Amazon Games?

Kang & McAuley 2018 ("Self-Attentive Sequential Recommendation", ICDM), Table III, Amazon
Games (31,013 users, 23,715 items, 287,107 actions): HR@10 0.7410, NDCG@10 0.5360, under
leave-one-out with 100 sampled negatives. This trains ``attnlab train --task sasrec`` with
its documented defaults (``configs/sasrec/games.yaml``; the paper's setting: max length 50, d 50, 2 blocks, 1 head, dropout
0.5, Adam lr 1e-3, batch 128; best epoch on validation NDCG@10; except that the lr follows a
cosine from 1e-3 down to 1e-5 over 300 epochs where the paper holds it constant for ~200) from
scratch, then prints and writes (JSON) test HR@10 / NDCG@10 against the paper, the wall
time and the epochs.

    python benchmarks/sasrec.py                      # the full run (~40-60 min on one CPU core)
    python benchmarks/sasrec.py --quick              # a seconds-long smoke run on a slice
    python benchmarks/sasrec.py --resume RUN_DIR     # go on with an interrupted run
    python benchmarks/sasrec.py --partial RUN_DIR    # test the best-so-far weights of an
                                                     # unfinished run (from its checkpoint)

Measured runs (3 seeds of each schedule tried): benchmarks/README.md (history: CHANGELOG.md). Results go to benchmarks/results/sasrec[-quick|-partial].json. Set OMP_NUM_THREADS (and
``--threads``) on shared machines; the JSON records the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

if __package__:
    from . import _common as common
else:  # run as a script: python benchmarks/sasrec.py
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _common as common

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "sasrec" / "games.txt"
PAPER = {"hr@10": 0.7410, "ndcg@10": 0.5360}  # Table III, Amazon Games, SASRec


def _history(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _quick_data(source: Path, folder: Path, lines: int = 20000) -> Path:
    """The first ``lines`` lines of the data file (whole users only, since users are contiguous)."""
    out = folder / "games-slice.txt"
    with open(source) as f, open(out, "w") as g:
        for i, line in enumerate(f):
            if i >= lines:
                break
            g.write(line)
    return out


def _test_partial(run_dir: Path) -> dict[str, Any]:
    """Test metrics of the best-on-validation weights an unfinished run has checkpointed."""
    import yaml

    from attnlab.config import from_dict
    from attnlab.run_config import RunConfig, build_objective, model_for, task_data_for
    from attnlab.training import TrainConfig, Trainer
    from attnlab.training.checkpoint import load_checkpoint

    config = from_dict(RunConfig, yaml.safe_load((run_dir / "config.yaml").read_text()))
    task_data = task_data_for(config)
    model = model_for(config, task_data)
    state, extra = load_checkpoint(run_dir / "checkpoint", model=model)
    best = {k[len("best."):]: v for k, v in extra.items() if k.startswith("best.")}
    if best:
        model.load_state_dict(best)
    objective = build_objective(config, task_data)
    cfg = TrainConfig(**{**vars(config.train), "device": "cpu", "progress": False})
    trainer = Trainer(model, objective, task_data.train, None, cfg, collate_fn=task_data.collate_fn)
    return {"test": trainer.evaluate(task_data.test), "best_epoch": state["best_epoch"], "epochs_run": state["epoch"],
            "val_best": state["best_metric"]}


def _row(name: str, ours: float | None, paper: float) -> dict[str, Any]:
    return {"metric": name, "ours": None if ours is None else f"{ours:.4f}", "paper": f"{paper:.4f}",
            "delta": None if ours is None else f"{ours - paper:+.4f}",
            "reached": None if ours is None else ("yes" if ours >= paper else "no")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="'user item' file (default: shared games.txt)")
    p.add_argument("--quick", action="store_true", help="seconds-long smoke run on a slice of the data")
    p.add_argument("--epochs", type=int, default=None, help="override the task default (300)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--run-dir", type=Path, default=None, help="run directory (default: a fresh one under runs/)")
    p.add_argument("--resume", type=Path, default=None, help="continue this run directory")
    p.add_argument("--partial", type=Path, default=None, help="test the best checkpointed weights of this unfinished run")
    p.add_argument("--model", dest="model_set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a model_config field of the default config (repeatable), e.g. dim=64")
    p.add_argument("--train", dest="train_set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a TrainConfig field (repeatable), e.g. min_lr_factor=0.01")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default under benchmarks/results/)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)

    from attnlab.run import train_run
    from attnlab.run_config import resolve_config

    start = time.perf_counter()
    tmp = tempfile.TemporaryDirectory()
    if args.partial is not None:
        run_dir = args.partial
        result = _test_partial(run_dir)
        status = "partial"
    else:
        data = _quick_data(args.data, Path(tmp.name)) if args.quick else args.data
        train: dict[str, Any] = {**common.parse_overrides(args.train_set, "sasrec.py"), "seed": args.seed, "progress": False}
        if args.quick:
            train.update(epochs=2)
        if args.epochs is not None:
            train["epochs"] = args.epochs
        recipe = common.load_recipe("sasrec", "games")  # configs/sasrec/games.yaml
        values = {"task": "sasrec", "data": str(data), "model": recipe.get("model"),
                  "report_examples": 1 if args.quick else 4,
                  **common.merge_sections(common.recipe_overrides(recipe), {
                      "train": train, "model_config": common.parse_overrides(args.model_set, "sasrec.py")})}
        if args.resume is not None:
            import yaml

            values = yaml.safe_load((args.resume / "config.yaml").read_text())
        config = resolve_config(values)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = args.resume or args.run_dir or (Path(tmp.name) / "run" if args.quick else Path("runs") / f"sasrec-games-{stamp}")
        result = train_run(config, out=run_dir, resume=args.resume, overwrite=args.run_dir is not None)
        status = "quick" if args.quick else "complete"
    history = _history(Path(run_dir))
    wall = time.perf_counter() - start
    test = result["test"]
    rows = [_row("HR@10", test.get("hr@10"), PAPER["hr@10"]), _row("NDCG@10", test.get("ndcg@10"), PAPER["ndcg@10"])]
    print(common.format_table(rows, [("metric", "metric"), ("ours", "ours (test)"), ("paper", "paper"),
                                     ("delta", "delta"), ("reached", "reached")]))
    train_time = result.get("wall_time_s", wall)
    print(f"\nstatus {status}: {result['epochs_run']} epochs run, best epoch {result['best_epoch']} "
          f"(val ndcg@10 {result['val_best']:.4f}), wall time {common.fmt_time(train_time)}"
          + (f" ({train_time / max(result['epochs_run'], 1):.1f} s/epoch)" if status != "partial" else ""))
    payload = {
        "question": "SASRec on Amazon Games vs Kang & McAuley 2018, Table III",
        "status": status,
        "paper": PAPER,
        "test": test,
        "val_best_ndcg@10": result["val_best"],
        "best_epoch": result["best_epoch"],
        "epochs_run": result["epochs_run"],
        "wall_time_s": None if status == "partial" else train_time,
        "run_dir": str(run_dir) if not args.quick else None,
        "data": str(args.data),
        "history": history,
        "machine": common.machine_info(torch.device("cpu")),
        "git": common.git_revision(__file__),
    }
    name = {"quick": "sasrec-quick.json", "partial": "sasrec-partial.json"}.get(status, "sasrec.json")
    path = common.write_json(args.out or RESULTS_DIR / name, payload)
    print(f"wrote {path}")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
