"""Does the documented ``--task audio`` default reach 97% test accuracy on FSDD, and how fast?

Trains ``attnlab train --task audio`` with the task's defaults (model, data options and
training settings exactly as `attnlab.tasks.audio` documents them) from scratch on the Free
Spoken Digit Dataset (3,000 8 kHz clips, 6 speakers; official split: recordings 0-4 of each
speaker and digit are the 300 test clips, the rest is train / validation), then evaluates the
final weights on the test split.

The 97% target is an internal baseline: FSDD has no published leaderboard on this split.
Test speakers also appear in training (the official split is by recording, not speaker).

Columns:
  model     registered model, its (mel x frame) token grid and parameter count
  train     epochs x batch size, peak learning rate
  threads   torch intra-op threads (``--threads``; the number matters more than the cores)
  wall      seconds for the whole run: data preparation, training, test evaluation
  test acc  accuracy on the 300 official test clips; "pass" when >= --target

``--quick``: one epoch on 20 training clips per class (the full test split), a smoke test
for CI that says nothing about accuracy. Results go to
benchmarks/results/audio-fsdd[-quick].json unless --out is given.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

if __package__:
    from . import _common as common
else:  # run as a script: python benchmarks/audio.py
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _common as common

from attnlab.config import to_dict
from attnlab.run import train_run
from attnlab.run_config import resolve_config

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"
DEFAULT_DATA = REPO.parent / "shared" / "data" / "fsdd" / "recordings"
COLUMNS = [("model", "model"), ("grid", "tokens"), ("params", "params"), ("train", "train"), ("threads", "threads"),
           ("wall", "wall"), ("accuracy", "test acc"), ("target", "target"), ("verdict", "")]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="FSDD recordings folder (default ../shared/data/fsdd/recordings)")
    p.add_argument("--quick", action="store_true", help="1 epoch on 20 clips per class: CI smoke test")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--epochs", type=int, default=None, help="override the default's epochs")
    p.add_argument("--target", type=float, default=0.97)
    p.add_argument("--run-dir", type=Path, default=None, help="keep the run directory here (default: a temp dir)")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default under benchmarks/results/)")
    p.add_argument("--no-json", action="store_true", help="print only")
    return p.parse_args(argv)


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    if not args.data.is_dir():
        raise SystemExit(f"FSDD not found at {args.data}; pass --data PATH/recordings")
    if args.threads:
        torch.set_num_threads(args.threads)
    train: dict[str, Any] = {"seed": args.seed, "progress": False, "device": "cpu"}
    data_options: dict[str, Any] = {}
    if args.quick:
        train["epochs"], data_options["max_train_per_class"] = 1, 20
    if args.epochs:
        train["epochs"] = args.epochs
    recipe = common.load_recipe("audio", "fsdd")  # configs/audio/fsdd.yaml
    config = resolve_config({"task": "audio", "data": str(args.data), "model": recipe.get("model"), "report_examples": 0,
                             **common.merge_sections(common.recipe_overrides(recipe),
                                                     {"train": train, "data_options": data_options})})
    machine = common.machine_info(torch.device("cpu"))  # before the run: its load average is the others'
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.run_dir or Path(tmp) / "audio-bench"
        start = time.perf_counter()
        metrics = train_run(config, out=run_dir, overwrite=True)
        wall = time.perf_counter() - start
    mc, tc = config.model_config, config.train
    span = [p * 2 ** len(mc["stem_channels"]) for p in mc["patch_size"]]
    row = {
        "model": config.model, "grid": f"{mc['n_mels'] // span[0]}x{mc['frames'] // span[1]}+cls",
        "params": metrics["parameters"], "train": f"{tc.epochs}x{tc.batch_size} lr {tc.lr:g}",
        "threads": torch.get_num_threads(), "wall": f"{wall:.0f} s", "accuracy": f"{100 * metrics['test']['accuracy']:.2f}%",
        "target": f"{100 * args.target:.0f}%", "verdict": "pass" if metrics["test"]["accuracy"] >= args.target else "below",
    }
    return {
        "benchmark": "audio",
        "question": "does the --task audio default reach the target test accuracy on FSDD (official split), how fast?",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "quick": args.quick,
        "data": str(args.data),
        "target_accuracy": args.target,
        "baseline_note": "internal baseline; FSDD has no published number on this split",
        "config": to_dict(config),
        "machine": machine,
        "torch_num_threads": torch.get_num_threads(),
        "git": common.git_revision(__file__),
        "loadavg_after": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "wall_time_s": wall,
        "metrics": {k: v for k, v in metrics.items() if k != "run_dir"},
        "table_row": row,
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    payload = run_benchmark(args)
    m = payload["machine"]
    print(f"audio benchmark: FSDD official split, seed {args.seed}, {m['cpu_model']}, "
          f"{payload['torch_num_threads']} threads, torch {m['torch']}{' (quick)' if args.quick else ''}")
    print(common.format_table([payload["table_row"]], COLUMNS))
    if not args.no_json:
        path = common.write_json(args.out or RESULTS_DIR / f"audio-fsdd{'-quick' if args.quick else ''}.json", payload)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
