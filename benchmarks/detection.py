"""Does ``attnlab train --task detection`` reach mAP@.5 >= 0.9 on the generated shapes in 30 CPU minutes?

Trains the task's documented default (``configs/detection/shapes.yaml``; ``attnlab.tasks.detection``: model ``detr-tiny``,
``DEFAULT_TRAIN``; data ``attnlab.data.detection.load_shapes_task`` defaults: 6,000 train /
300 val / 500 test images of 64x64, 1-6 objects) through the same ``train_run`` the CLI
calls, once per seed, and scores the final weights on the test split with pycocotools'
COCOeval (mAP@[.5:.95] and mAP@.5, boxes in input pixels, top 100 (query, class) pairs per
image).

Columns:
  seed / epochs   the run
  map_50 / map    test mAP@.5 and mAP@[.5:.95]
  val curve       validation mAP@.5 after each epoch (to see when 0.9 is crossed)
  time            wall time of the whole run (data generation, training, per-epoch
                  validation, test, report); the load average is stored in the JSON, since
                  the benchmark machine is shared and CPU timings move with other jobs

``--quick``: a tiny model and data set, one epoch: a smoke test of the plumbing, not of
accuracy. ``--epochs`` / ``--train-size`` override the defaults. Results go to
benchmarks/results/detection[-quick].json unless ``--out`` is given; measured runs:
benchmarks/README.md (history: CHANGELOG.md).

    python benchmarks/detection.py --threads 1 --seeds 0 1

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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    format_table, git_revision, load_recipe, machine_info, merge_sections, recipe_overrides, write_json,
)

QUICK = {"train": {"epochs": 1, "batch_size": 8},
         "model_config": {"backbone_channels": [8, 16, 16], "dim": 32, "num_heads": 2, "encoder_depth": 1, "decoder_depth": 2},
         "data_options": {"train_size": 32, "val_size": 8, "test_size": 16}}
TARGET_MAP_50 = 0.9


def run_one(seed: int, overrides: dict[str, dict[str, Any]], run_dir: Path, device: str) -> dict[str, Any]:
    from attnlab.config import to_dict
    from attnlab.run import train_run
    from attnlab.run_config import resolve_config

    values = {"task": "detection", "report_examples": 2,
              "model_config": overrides.get("model_config", {}), "data_options": overrides.get("data_options", {}),
              "train": {**overrides.get("train", {}), "seed": seed, "progress": False, "device": device}}
    config = resolve_config(values)
    start = time.perf_counter()
    metrics = train_run(config, out=run_dir, overwrite=True)
    wall = time.perf_counter() - start
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    curve = [h.get("val_map_50") for h in history]
    first = next((i + 1 for i, v in enumerate(curve) if v is not None and v >= TARGET_MAP_50), None)
    return {"seed": seed, "map": metrics["test"]["map"], "map_50": metrics["test"]["map_50"], "wall_time_s": wall,
            "train_time_s": metrics["wall_time_s"], "epochs_run": metrics["epochs_run"], "val_map_50_curve": curve,
            "first_epoch_val_map_50_ge_target": first, "parameters": metrics["parameters"], "device": metrics["device"],
            "precision": metrics["precision"], "config": to_dict(config)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--train-size", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    parser.add_argument("--quick", action="store_true", help="tiny model and data, one epoch: a smoke run")
    parser.add_argument("--keep-runs", type=Path, default=None, help="keep the run directories here")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = load_recipe("detection", "shapes")  # configs/detection/shapes.yaml
    overrides = merge_sections(recipe_overrides(recipe), QUICK if args.quick else {})
    if args.epochs is not None:
        overrides.setdefault("train", {})["epochs"] = args.epochs
    if args.train_size is not None:
        overrides.setdefault("data_options", {})["train_size"] = args.train_size

    from attnlab.tasks.detection import DEFAULT_MODEL_CONFIG, DEFAULT_TRAIN

    runs, rows = [], []
    with tempfile.TemporaryDirectory(prefix="attnlab-det-") as tmp:
        root = args.keep_runs or Path(tmp)
        for seed in args.seeds:
            run = run_one(seed, overrides, root / f"detection-seed{seed}", args.device)
            logging.getLogger("benchmarks.detection").warning("seed %d: map_50 %.3f map %.3f in %.0f s", seed,
                                                              run["map_50"], run["map"], run["wall_time_s"])
            runs.append(run)
            rows.append({"seed": seed, "epochs": run["epochs_run"], "map_50": f"{run['map_50']:.3f}", "map": f"{run['map']:.3f}",
                         "met": "yes" if run["map_50"] >= TARGET_MAP_50 else "NO",
                         "curve": " ".join(f"{v:.2f}" for v in run["val_map_50_curve"] if v is not None),
                         "time": f"{run['wall_time_s']:.0f} s"})
    print(format_table(rows, [("seed", "seed"), ("epochs", "epochs"), ("map_50", "mAP@.5"), ("map", "mAP@[.5:.95]"),
                              ("met", f">= {TARGET_MAP_50}"), ("curve", "val mAP@.5 per epoch"), ("time", "wall time")]))
    out = args.out or Path(__file__).resolve().parent / "results" / f"detection{'-quick' if args.quick else ''}.json"
    payload = {"benchmark": "detection", "quick": args.quick, "metric_library": "pycocotools COCOeval (bbox)",
               "git": git_revision(__file__), "machine": machine_info(torch.device(runs[0]["device"].split(":")[0])),
               "defaults": {"model": "detr-tiny", "model_config": DEFAULT_MODEL_CONFIG, "train": DEFAULT_TRAIN},
               "overrides": overrides, "target_map_50": TARGET_MAP_50, "runs": runs}
    print(f"wrote {write_json(out, payload)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
