"""Choose TREC / SST-2 training configs by cross-validation, never reading TEST.

``benchmarks/text_classification.py`` reports TEST accuracy; choosing configs by it would tune
on the test set, and SST-2's dev file (872 sentences) is too small to tell 1-2 point gaps apart,
the more so as the kept weights are the best of several dev evaluations, an upward-biased
score that favours long schedules. Here the pool is TRAIN (SST-2: TRAIN + DEV; TEST is never
read), split into ``k`` stratified folds per repeat ``r`` (shuffled with seed ``r``). For each
fold, the other folds are split again: 10% (stratified) becomes the fold's dev file, which
picks the kept epoch as in a real run, and the rest its train file; the held-out fold is the
fold's test file. Each config trains on every fold through the same ``train_run`` the CLI
calls (training seed ``r``) and is scored on all held-out predictions, so every pooled
sentence is predicted once per repeat, by a model that never saw it nor chose an epoch on it.

The grid (``GRID``) and the rule were written before any run: the config with the most correct
held-out predictions is adopted into the data set's recipe, ``configs/text-classification/<name>.yaml``
(``text_classification.py``'s ``OVERRIDES``), if it beats the
current config by at least 0.5 points; otherwise the current one stays.

    python benchmarks/text_cv.py --datasets sst2 --jobs 2
    python benchmarks/text_cv.py --quick      # one repeat, 2 folds, 600 sentences, tiny model: a smoke run

Results: benchmarks/results/text_cv[-quick].json unless ``--out`` is given. Stage 1 (repeat 0, the
first four configs of each data set) is in results/text_cv-stage1.json, and stage 2 (SST-2, repeat 1)
in results/text_cv-stage2-sst2.json. Their figures and what was adopted: benchmarks/README.md
(history: CHANGELOG.md).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    cross_validate, format_table, git_revision, machine_info, merge_sections, write_json,
)
from text_classification import DATA_ROOT, OVERRIDES, QUICK, REFERENCE  # noqa: E402

# data set -> config name -> overrides on top of the data set's current OVERRIDES ("current": none).
GRID: dict[str, dict[str, dict[str, dict[str, Any]]]] = {
    "sst2": {
        "current": {},
        "epochs-3-lr-5e-4": {"train": {"epochs": 3, "lr": 5e-4}},
        "epochs-4-lr-5e-4": {"train": {"epochs": 4, "lr": 5e-4}},
        "epochs-4": {"train": {"epochs": 4}},
        "epochs-6-lr-3e-4": {"train": {"epochs": 6, "lr": 3e-4}},
        # Stage 2 (on top of stage 1's choice, now in OVERRIDES: 3 epochs at lr 5e-4), repeat 1.
        "epochs-2": {"train": {"epochs": 2}},
        "lr-3e-4": {"train": {"lr": 3e-4}},
        "lr-1e-3": {"train": {"lr": 1e-3}},
        "word-dropout-0.1": {"model_config": {"word_dropout": 0.1}},
    },
    "trec": {
        "current": {},
        "epochs-8": {"train": {"epochs": 8}},
        "epochs-8-lr-5e-4": {"train": {"epochs": 8, "lr": 5e-4}},
        "epochs-30-lr-5e-4": {"train": {"epochs": 30, "lr": 5e-4}},
    },
}
MARGIN = 0.5  # points a config must gain over "current" to be adopted
QUICK_POOL = 600  # --quick: the pool's first sentences (classes mixed in both data sets' files)


def pool(name: str, root: Path) -> tuple[list[str], list[str]]:
    """(texts, labels) of the data set's TRAIN (+ DEV) files; TEST is left out."""
    from attnlab.data.text import _split_files, read_labelled

    files = _split_files(root / REFERENCE[name][0])
    texts, labels = [], []
    for split in ("train", "val"):
        if split in files:
            t, y, _ = read_labelled(files[split])
            texts += t
            labels += y
    return texts, labels


def write_folds(texts: list[str], labels: list[str], out: Path, folds: int, repeat: int) -> list[tuple[Path, int]]:
    """Folders with train / dev / test files per fold (see the module docstring). Returns (folder, held-out size)."""
    from sklearn.model_selection import StratifiedKFold, train_test_split

    lines = [f"{y}\t{t}\n" for t, y in zip(texts, labels)]
    out_folds = []
    for i, (fit, held) in enumerate(StratifiedKFold(folds, shuffle=True, random_state=repeat).split(lines, labels)):
        fit_train, fit_dev = train_test_split(fit, test_size=0.1, stratify=[labels[j] for j in fit], random_state=repeat)
        fold = out / f"r{repeat}-f{i}"
        fold.mkdir(parents=True, exist_ok=True)
        for split, rows in (("train", fit_train), ("dev", fit_dev), ("test", held)):
            (fold / f"{split}.tsv").write_text("".join(lines[j] for j in rows), encoding="utf-8")
        out_folds.append((fold, len(held)))
    return out_folds


def _fit_fold(job: tuple[Path, int, int, dict[str, dict[str, Any]], Path]) -> tuple[int, int]:
    from text_classification import run_one

    fold, held, seed, overrides, run_dir = job
    torch.set_num_threads(1)
    run = run_one(fold, seed, overrides, run_dir, "cpu", report_examples=0)
    return round(run["accuracy"] / 100 * held), held


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=DATA_ROOT)
    parser.add_argument("--datasets", nargs="+", default=list(GRID), choices=list(GRID))
    parser.add_argument("--configs", nargs="+", default=None, help="names from GRID (default: all of the data set's)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, nargs="+", default=[0])
    parser.add_argument("--jobs", type=int, default=1, help="folds trained at once, one thread each")
    parser.add_argument("--quick", action="store_true", help="one repeat, 2 folds, 600 sentences, the tiny 1-epoch model: a smoke run")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    folds, repeats = (2, args.repeats[:1]) if args.quick else (args.folds, args.repeats)
    rows, results = [], []
    with tempfile.TemporaryDirectory(prefix="attnlab-textcv-") as tmp:
        for name in args.datasets:
            grid = GRID[name]
            configs = ["current", *[c for c in (args.configs or grid) if c != "current" and c in grid]]
            texts, labels = pool(name, args.root)
            if args.quick:
                texts, labels = texts[:QUICK_POOL], labels[:QUICK_POOL]
            splits = {r: write_folds(texts, labels, Path(tmp) / name / "folds", folds, r) for r in repeats}
            scores = {}
            for config in configs:
                overrides = merge_sections(OVERRIDES[name], grid[config], QUICK if args.quick else {})
                scores[config] = cross_validate(_fit_fold, splits, overrides, jobs=args.jobs, tmp=Path(tmp) / name / config)
                print(f"{name} {config}: {scores[config]['accuracy_mean']:.2f}% in {scores[config]['wall_time_s']:.0f} s", flush=True)
            best = max(configs, key=lambda c: (scores[c]["correct"], c == "current"))
            gain = scores[best]["accuracy_mean"] - scores["current"]["accuracy_mean"]
            selected = best if gain >= MARGIN else "current"
            results.append({"dataset": name, "best": best, "selected": selected, "margin": MARGIN,
                            "configs": {c: {"overrides": grid[c], **s} for c, s in scores.items()}})
            base = scores["current"]["per_repeat"]
            for config in configs:
                s = scores[config]
                rows.append({"data": name, "config": config + (" *" if config == selected else ""),
                             "cv": f"{s['accuracy_mean']:.2f}", "correct": f"{s['correct']}/{s['predictions']}",
                             "diff": f"{statistics.mean(a - b for a, b in zip(s['per_repeat'], base)):+.2f}",
                             "time": f"{s['wall_time_s']:.0f} s"})
    print(format_table(rows, [("data", "data"), ("config", "config (* selected)"), ("cv", "CV acc %"),
                              ("correct", "correct"), ("diff", "vs current"), ("time", "time")]))
    out = args.out or Path(__file__).resolve().parent / "results" / f"text_cv{'-quick' if args.quick else ''}.json"
    payload = {"benchmark": "text_cv", "quick": args.quick, "folds": folds, "repeats": repeats, "grid": GRID,
               "git": git_revision(__file__), "machine": machine_info(torch.device("cpu")), "results": results}
    print(f"wrote {write_json(out, payload)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
