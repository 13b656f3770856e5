"""Does ``attnlab train --task language-model`` match nanoGPT on tinyshakespeare (char level)?

Trains the task's documented default (``configs/language-model/tinyshakespeare.yaml``), which is nanoGPT's CPU config (except the peak lr, 2e-3)
(``python train.py config/train_shakespeare_char.py --device=cpu --block_size=64
--batch_size=12 --n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000 --lr_decay_iters=2000
--dropout=0.0``): model ``gpt-lm`` (4 layers, 4 heads, 128 wide, context 64, tied
embeddings, no dropout), character tokenizer, 2,000 AdamW steps of batch 12 (lr 2e-3, 100
warm-up steps, cosine to 2e-4, weight decay 0.1, clip 1.0), through the same ``train_run``
the CLI calls. Reports the cross-entropy (nats per character) on the last 10% of the text,
every token scored once over consecutive 64-character windows, and the wall time. The
reference is nanoGPT's README: "validation loss ... about 1.88" for this config.

Differences from nanoGPT: peak lr 2e-3; AdamW betas (0.9, 0.999) instead of (0.9, 0.99); biases in the
linear layers; the validation loss is exact over the split rather than an estimate from
random batches.

    python benchmarks/language_model.py --threads 1      # --lr 1e-3: nanoGPT's own peak lr

``--quick``: 20 steps of a tiny model (a smoke test). Results:
benchmarks/results/language_model[-quick].json; measured runs: benchmarks/README.md (history: CHANGELOG.md).

"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    format_table, git_revision, load_recipe, machine_info, merge_sections, recipe_overrides, write_json,
)

REFERENCE = 1.88  # nanoGPT README, CPU config above
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tinyshakespeare" / "input.txt"
QUICK = {"model_config": {"dim": 32, "depth": 1, "num_heads": 2}, "data_options": {"samples_per_epoch": 20 * 12}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave as is)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--lr", type=float, default=None, help="override the peak learning rate (nanoGPT: 1e-3)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--keep-run", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    from attnlab.run import train_run
    from attnlab.run_config import resolve_config

    recipe = load_recipe("language-model", "tinyshakespeare")  # configs/language-model/tinyshakespeare.yaml
    values = {"task": "language-model", "data": str(args.data), "model": recipe.get("model"), "report_examples": 1,
              **merge_sections(recipe_overrides(recipe), {"train": {"seed": args.seed, "progress": False,
                                                                    "device": args.device}})}
    if args.lr:
        values["train"]["lr"] = args.lr
    if args.quick:
        values.update({k: {**values.get(k, {}), **v} for k, v in QUICK.items()})
    config = resolve_config(values)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.keep_run or Path(tmp) / "lm"
        start = time.perf_counter()
        metrics = train_run(config, out=run_dir, overwrite=True)
        wall = time.perf_counter() - start
        from attnlab.run import load_run
        from attnlab.tasks.language_model import generate_text

        _, model, record = load_run(run_dir)
        sample = generate_text(model, record, "ROMEO:", max_new_tokens=200, temperature=0.8, seed=0)
    windows = config.data_options.get("samples_per_epoch") or record["info"]["train_tokens"] // record["info"]["block_size"]
    steps = windows // config.train.batch_size * config.train.epochs
    row = {"data": "tinyshakespeare", "val_loss": round(metrics["test"]["loss"], 4), "reference": REFERENCE,
           "met": metrics["test"]["loss"] <= REFERENCE, "steps": steps, "params": metrics["parameters"],
           "wall_s": round(wall, 1)}
    print(format_table([row], [("data", "data"), ("val_loss", "val loss"), ("reference", "nanoGPT"), ("met", "<= ref"),
                               ("steps", "steps"), ("params", "params"), ("wall_s", "wall s")]))
    print("\nsample (temperature 0.8):\nROMEO:" + sample)
    out = args.out or Path(__file__).resolve().parent / "results" / f"language_model{'-quick' if args.quick else ''}.json"
    write_json(out, {"benchmark": "language_model", "quick": args.quick, "config": {
        "model": config.model, "model_config": config.model_config, "train": vars(config.train),
        "data_options": config.data_options}, "result": row, "metrics": metrics, "sample": "ROMEO:" + sample,
        "machine": machine_info(torch.device(metrics["device"])), "git": git_revision(__file__)})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
