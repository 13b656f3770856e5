"""Does ``attnlab train --task timeseries`` reach published accuracy on four UCR data sets?

For each data set (ECG200, GunPoint, ItalyPowerDemand, TwoLeadECG from the UCR archive,
Dau et al. 2019) and each seed, this trains the task's documented default config
(``attnlab.tasks.timeseries``: model ``ts-transformer`` and its ``DEFAULT_MODEL_CONFIG``,
``DEFAULT_TRAIN``, ``DEFAULT_DATA_OPTIONS``) under the data set's recipe
``configs/timeseries/<name>.yaml`` (read into ``OVERRIDES``) through the same ``train_run`` the CLI calls,
on the full TRAIN split, and scores the last epoch's weights on TEST.

Columns:
  data set    name, train / test sizes, series length
  accuracy    test accuracy in %, mean ± population std over the seeds, then each seed
  target      the Fawaz et al. 2019 "Encoder" accuracy ("Deep learning for time series
              classification: a review", Table/archive results) the task is asked to reach
  1-NN ED     1-nearest-neighbour Euclidean accuracy, 1 - the archive's published error
  met         whether the mean reaches the target
  time        wall time per run (mean over seeds; data loading, training, test)

Per-data-set recipes come only from cross-validation on TRAIN (``benchmarks/timeseries_cv.py``):
ECG200 and ItalyPowerDemand train the Transformer on the Encoder's stem (Fawaz et al. 2019), with its
flatten head and its training recipe; GunPoint and TwoLeadECG train the default. ``--no-overrides``
trains every data set with the default.

``--peer`` also trains the reference Encoder (``benchmarks/_encoder_reference.py``, Fawaz et al.'s
code in PyTorch, their recipe) on the same seeds, side by side.

Deep ensembles (``--ensemble K``): each seed s scores the averaged probabilities of K runs seeded
K*s .. K*s+K-1 (``attnlab.ensemble``).

    python benchmarks/timeseries.py --peer                    # 4 data sets, 5 seeds, with the Encoder
    python benchmarks/timeseries.py --datasets ECG200 --seeds 0 1 2 --ensemble 5

Per-seed tables, the configs screened and the earlier runs: benchmarks/README.md (history: CHANGELOG.md).

Runs go to a temporary folder (``--keep-runs DIR`` keeps them). Torch uses one thread by
default (``--threads``): the runs are small, and the benchmark machine is shared.
``--quick``: one seed, two epochs, a tiny model, seconds per data set: a smoke test of the
plumbing, not of accuracy. Results: benchmarks/results/timeseries[-quick].json unless
``--out`` is given.
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
from _common import (  # noqa: E402
    format_table, git_revision, load_recipe, machine_info, merge_sections, parse_overrides, recipe_overrides,
    train_ensemble, write_json,
)

# name -> (target accuracy %, 1-NN Euclidean error)
REFERENCE: dict[str, tuple[float, float]] = {
    "ECG200": (92.3, 0.12),
    "GunPoint": (93.6, 0.0867),
    "ItalyPowerDemand": (96.5, 0.0447),
    "TwoLeadECG": (86.3, 0.253),
}
# Per-data-set overrides of the task defaults ({"train": {...}, "model_config": {...}, ...}): the recipes
# configs/timeseries/<name>.yaml, each chosen by cross-validation on TRAIN alone (benchmarks/timeseries_cv.py,
# stages 1-5). Data sets whose recipe is the task default have no entry.
OVERRIDES: dict[str, dict[str, dict[str, Any]]] = {
    name: sections for name in REFERENCE if (sections := recipe_overrides(load_recipe("timeseries", name)))
}
# The Encoder's stem (Fawaz et al. 2019), flatten head and recipe (Adam 1e-5, batch 12) under one Transformer
# layer: ECG200's recipe (ItalyPowerDemand's is the same). ENCODER_RECIPE is Fawaz et al.'s training in
# TrainConfig terms (constant lr, no weight decay, no clipping); the reference Encoder
# (benchmarks/_encoder_reference.py) trains with it too.
ENCODER_STEM: dict[str, dict[str, Any]] = OVERRIDES["ECG200"]
ENCODER_RECIPE: dict[str, Any] = ENCODER_STEM["train"]
QUICK = {"train": {"epochs": 2}, "model_config": {"dim": 16, "depth": 1, "num_heads": 2, "stem_channels": 8}}
DEFAULT_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ucr"


def run_one(path: Path, seed: int, overrides: dict[str, dict[str, Any]], run_dir: Path,
            model: str | None = None) -> dict[str, Any]:
    from attnlab.config import to_dict
    from attnlab.run import train_run
    from attnlab.run_config import resolve_config

    values = {"task": "timeseries", "data": str(path), "report_examples": 0, "model": model,
              "model_config": overrides.get("model_config", {}), "data_options": overrides.get("data_options", {}),
              "train": {**overrides.get("train", {}), "seed": seed, "progress": False, "device": "cpu"}}
    config = resolve_config(values)
    start = time.perf_counter()
    metrics = train_run(config, out=run_dir, overwrite=True)
    return {"seed": seed, "accuracy": metrics["test"]["accuracy"], "macro_f1": metrics["test"]["macro_f1"],
            "wall_time_s": time.perf_counter() - start, "parameters": metrics["parameters"],
            "epochs_run": metrics["epochs_run"], "config": to_dict(config)}


def run_seed(path: Path, seed: int, overrides: dict[str, dict[str, Any]], run_dir: Path, ensemble: int) -> dict[str, Any]:
    """One seed's run, or with ``ensemble`` K > 1 a deep ensemble of K runs seeded K*seed .. K*seed + K-1."""
    if ensemble == 1:
        return run_one(path, seed, overrides, run_dir)
    members, scored = train_ensemble(lambda s, d: run_one(path, s, overrides, d), seed, ensemble, run_dir)
    return {"seed": seed, "accuracy": scored["test"]["accuracy"], "macro_f1": scored["test"]["macro_f1"],
            "wall_time_s": sum(m["wall_time_s"] for m in members), "parameters": members[0]["parameters"] * ensemble,
            "epochs_run": members[0]["epochs_run"], "config": members[0]["config"],
            "member_accuracies": [m["accuracy"] for m in members]}


def _sizes(path: Path) -> tuple[int, int, int]:
    from attnlab.data.timeseries import load_timeseries_task

    data = load_timeseries_task(path)
    return len(data.train), len(data.test), data.input_shape[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="folder holding one UCR folder per data set")
    parser.add_argument("--datasets", nargs="+", default=list(REFERENCE), choices=list(REFERENCE))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--quick", action="store_true", help="one seed, two epochs, a tiny model: a smoke run")
    parser.add_argument("--keep-runs", type=Path, default=None, help="keep the run directories here")
    parser.add_argument("--model", dest="model_set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a model_config field of the default config (repeatable), e.g. dropout=0.3")
    parser.add_argument("--train", dest="train_set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a TrainConfig field (repeatable), e.g. ema_decay=0.999")
    parser.add_argument("--data-option", dest="data_set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a data loader option (repeatable), e.g. jitter=0.03")
    parser.add_argument("--no-overrides", action="store_true",
                        help="train every data set with the task default (plus flags), ignoring OVERRIDES")
    parser.add_argument("--peer", action="store_true",
                        help="also train the reference Encoder (benchmarks/_encoder_reference.py) on the same seeds")
    parser.add_argument("--ensemble", type=int, default=1, metavar="K",
                        help="score each seed as a deep ensemble of K runs (seeds K*seed .. K*seed+K-1, probabilities averaged)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    seeds = args.seeds[:1] if args.quick else args.seeds
    if args.ensemble < 1:
        raise SystemExit(f"--ensemble must be at least 1, got {args.ensemble}")
    missing = [d for d in args.datasets if not (args.root / d).is_dir()]
    if missing:
        raise SystemExit(f"UCR folders not found under {args.root}: {missing} (pass --root)")

    from attnlab.tasks.timeseries import DEFAULT_DATA_OPTIONS, DEFAULT_MODEL_CONFIG, DEFAULT_TRAIN

    rows, results = [], []
    with tempfile.TemporaryDirectory(prefix="attnlab-ts-") as tmp:
        runs_root = args.keep_runs or Path(tmp)
        for name in args.datasets:
            path = args.root / name
            flags = {"model_config": parse_overrides(args.model_set, "timeseries.py"),
                     "train": parse_overrides(args.train_set, "timeseries.py"),
                     "data_options": parse_overrides(args.data_set, "timeseries.py")}
            base = {} if args.no_overrides else OVERRIDES.get(name, {})
            quick = QUICK if args.quick else {}
            if args.quick and base.get("model_config", {}).get("stem_widths"):  # a tiny Encoder stem, not a conv one
                quick = merge_sections(QUICK, {"model_config": {"stem_channels": 0, "stem_widths": [8, 8, 8]}})
            overrides = merge_sections(base, quick, flags)
            n_train, n_test, length = _sizes(path)
            runs = []
            for seed in seeds:
                run = run_seed(path, seed, overrides, runs_root / f"{name}-seed{seed}", args.ensemble)
                logging.getLogger("benchmarks.timeseries").warning("%s seed %d: %.2f%% in %.0f s", name, seed,
                                                                   100 * run["accuracy"], run["wall_time_s"])
                runs.append(run)
            peer = []
            if args.peer:  # the reference Encoder, same seeds, its own recipe
                from _encoder_reference import NAME, TRAIN

                peer_train = merge_sections({"train": TRAIN}, {"train": QUICK["train"]} if args.quick else {})
                for seed in seeds:
                    peer.append(run_one(path, seed, peer_train, runs_root / f"{name}-encoder-seed{seed}", model=NAME))
            accs = [100 * r["accuracy"] for r in runs]
            mean, std = statistics.mean(accs), statistics.pstdev(accs)
            target, nn_error = REFERENCE[name]
            result = {
                "dataset": name, "train_size": n_train, "test_size": n_test, "length": length,
                "accuracy_mean": mean, "accuracy_std": std, "accuracies": accs, "target": target,
                "nn_euclidean_accuracy": 100 * (1 - nn_error), "target_met": mean >= target,
                "wall_time_mean_s": statistics.mean(r["wall_time_s"] for r in runs),
                "parameters": runs[0]["parameters"], "overrides": overrides, "runs": runs,
            }
            if peer:
                peer_accs = [100 * r["accuracy"] for r in peer]
                result["encoder_reference"] = {"accuracy_mean": statistics.mean(peer_accs), "accuracies": peer_accs,
                                               "wall_time_mean_s": statistics.mean(r["wall_time_s"] for r in peer),
                                               "parameters": peer[0]["parameters"], "train": peer[0]["config"]["train"]}
            results.append(result)
            rows.append({
                "dataset": f"{name} ({n_train}/{n_test}, T={length})",
                "acc": f"{mean:.2f} ± {std:.2f}", "seeds": " ".join(f"{a:.0f}" if a == int(a) else f"{a:.1f}" for a in accs),
                "target": f"{target:.1f}", "nn": f"{100 * (1 - nn_error):.1f}", "met": "yes" if mean >= target else "NO",
                "time": f"{result['wall_time_mean_s']:.0f} s",
                "peer": f"{result['encoder_reference']['accuracy_mean']:.2f}" if peer else "-",
            })
    print(format_table(rows, [("dataset", "data set (train/test, length)"), ("acc", "accuracy %"), ("seeds", "per seed"),
                              ("target", "target (Encoder)"), ("nn", "1-NN ED"), ("met", "met"), ("time", "time/run"),
                              ("peer", "Encoder here")]))
    out = args.out or Path(__file__).resolve().parent / "results" / f"timeseries{'-quick' if args.quick else ''}.json"
    payload = {
        "benchmark": "timeseries", "quick": args.quick, "seeds": seeds, "ensemble": args.ensemble, "git": git_revision(__file__),
        "machine": machine_info(torch.device("cpu")),
        "defaults": {"model": "ts-transformer", "model_config": DEFAULT_MODEL_CONFIG, "train": DEFAULT_TRAIN,
                     "data_options": DEFAULT_DATA_OPTIONS},
        "quick_overrides": QUICK if args.quick else None, "results": results,
    }
    print(f"wrote {write_json(out, payload)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
