"""How close does ``attnlab train --task translation`` get to published BLEU on Multi30k En->De?

Trains ``transformer-mt`` from scratch on Multi30k task 1 (train 29,000 pairs; val 1,014;
test2016 1,000; raw cased text from multi30k/dataset) through the same ``train_run`` the CLI
calls, keeps the weights with the best validation BLEU (greedy decoding each epoch), then
translates test2016 with beam search (beam 5, length penalty chosen on validation) and scores it with
sacreBLEU on detokenized text: ``bleu`` (cased, 13a: the standard sacreBLEU signature) and
``bleu_lc`` (lowercased; the closest sacreBLEU setting to the lowercased, tokenized BLEU
papers report on Multi30k).

Documented config (``configs/translation/multi30k.yaml``, read into ``CONFIG``), Transformer-tiny's shape: one byte-level BPE vocabulary of
8,000 shared by English and German, shared + tied embeddings; 4 + 4 pre-norm layers, 128 wide,
4 heads, FFN 256, ReLU, dropout 0.3; label smoothing 0.1; AdamW lr 2e-3, weight decay 0.01,
1 warm-up epoch, cosine decay, weight EMA 0.999 (validated and kept); batch 64 sentence pairs
grouped by length (``group_by_length``), fp32; 40 epochs. Test:
beam 5 with the length penalty (sum(log p) / len**lp) that scores best on the validation set
among ``LENGTH_PENALTIES`` (``--length-penalty`` fixes it instead). ``--model F=V`` and
``--train F=V`` override single fields; ``--score RUN_DIR`` decodes and scores a finished run
(kept with ``--keep-run``) without training.
Reference: Transformer-tiny (4 + 4 layers, d = 128, FFN 256, 4 heads, dropout 0.3, beam 5):
BLEU 41.02, lowercased tokenized (Wu et al., ACL 2021). Target: >= 38 sacreBLEU within 2 h
of CPU training.

    python benchmarks/translation.py --threads 2 --seed 1 --keep-run runs/mt40
    python benchmarks/translation.py --score runs/mt40          # decode and score only

``--epochs N`` trains fewer epochs (the short run recorded in the results); ``--quick``: a
tiny model for a few steps on 512 training pairs (a smoke test). Results:
benchmarks/results/translation[-quick].json; the measured runs: benchmarks/README.md (history: CHANGELOG.md).

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
    RECIPE_SECTIONS, format_table, git_revision, load_recipe, machine_info, parse_overrides, write_json,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "multi30k"
REFERENCE, TARGET = 41.02, 38.0
# The documented config, Transformer-tiny's shape (Wu et al. 2021): configs/translation/multi30k.yaml
# (model and config sections; the data path comes from --data).
CONFIG: dict[str, Any] = {key: value for key, value in load_recipe("translation", "multi30k").items()
                          if key in ("model", *RECIPE_SECTIONS)}
# Beam-search length penalties tried on the validation set; test uses the best (Vaswani et al. 2017, 6.1,
# chose their length penalty on the development set the same way).
LENGTH_PENALTIES = (0.6, 0.8, 1.0, 1.2, 1.4)
QUICK_MODEL = {"dim": 32, "encoder_depth": 1, "decoder_depth": 1, "num_heads": 2}


def _subset(folder: Path, out: Path, n: int) -> Path:
    """The first n lines of every file (quick mode), as plain text."""
    from attnlab.data.text import read_lines

    out.mkdir(parents=True, exist_ok=True)
    for path in folder.glob("*.gz"):
        lines = read_lines(path)[: n if path.name.startswith("train") else n // 8]
        (out / path.name[:-3]).write_text("\n".join(lines) + "\n")
    return out


def _training_config(args: argparse.Namespace, tmp: Path):
    """The documented CONFIG with the command line's seed, epochs, quick mode and overrides applied."""
    from attnlab.run_config import resolve_config
    from attnlab.training.distributed import pick_device
    from attnlab.training.precision import native_bf16

    data = _subset(args.data, tmp / "data", 512) if args.quick else args.data
    values = {"task": "translation", "data": str(data), "report_examples": 2, **{k: dict(v) if isinstance(v, dict) else v
                                                                                 for k, v in CONFIG.items()}}
    values["train"].update({"seed": args.seed, "progress": False, "device": args.device,
                            "checkpoint_every": args.checkpoint_every})
    if args.epochs:
        values["train"]["epochs"] = args.epochs
    if args.quick:
        values["model_config"] = dict(QUICK_MODEL)
        values["train"]["epochs"] = 1
        values["data_options"]["vocab_size"] = 600
    if not native_bf16(pick_device(args.device)):  # emulated bf16 is ~100x slower (training/precision.py)
        values["train"]["precision"] = "fp32"
    for section, pairs in (("model_config", args.model_set), ("train", args.train_set)):
        values[section].update(parse_overrides(pairs, "translation.py"))
    return resolve_config(values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--epochs", type=int, default=None, help="override the documented 40 epochs")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--length-penalty", type=float, default=None,
                        help=f"beam score sum(log p) / len**lp; default: the best of {LENGTH_PENALTIES} on validation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", dest="model_set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a model_config field of the documented config (repeatable), e.g. dropout=0.3")
    parser.add_argument("--train", dest="train_set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a TrainConfig field (repeatable), e.g. ema_decay=0.999")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (the machine is shared)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--checkpoint-every", type=int, default=0, help="optimizer steps between checkpoints (runs stopped early)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--keep-run", type=Path, default=None)
    parser.add_argument("--score", type=Path, default=None, metavar="RUN_DIR",
                        help="no training: beam-decode and score a finished run directory (e.g. one kept with --keep-run)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    from attnlab.data.text import pad_batch
    from attnlab.run import load_run, train_run
    from attnlab.run_config import task_data_for
    from attnlab.tasks.translation import corpus_bleu, translate

    with tempfile.TemporaryDirectory() as tmp:
        device_name = "cuda" if torch.cuda.is_available() and args.device != "cpu" else "cpu"
        if args.score is not None:  # a finished run: decode only
            run_dir = args.score
            config, model, _ = load_run(run_dir, device=device_name)
            metrics = json.loads((run_dir / "metrics.json").read_text())
            train_wall = metrics["wall_time_s"]
        else:
            config = _training_config(args, Path(tmp))
            run_dir = args.keep_run or Path(tmp) / "run"
            start = time.perf_counter()
            metrics = train_run(config, out=run_dir, overwrite=True)
            train_wall = time.perf_counter() - start
            _, model, _ = load_run(run_dir, device=device_name)
        # Test with beam search (the run's own test metrics use the validation-time greedy decoding).
        task = task_data_for(config)
        test = task.test
        device = next(model.parameters()).device

        def decode(split, length_penalty: float) -> list[str]:
            hyps = []
            for i in range(0, len(split), 100):
                src = pad_batch([split.src[j] for j in range(i, min(i + 100, len(split)))]).to(device)
                hyps += [task.tgt_tokenizer.decode(ids)
                         for ids in translate(model, src, beam_size=args.beam, length_penalty=length_penalty)]
            return hyps

        val_bleu = {}
        if args.length_penalty is None and task.val is not None and len(task.val):  # chosen on validation; test decoded once
            val_bleu = {lp: round(corpus_bleu(decode(task.val, lp), task.val.tgt_texts)["bleu"], 2) for lp in LENGTH_PENALTIES}
        length_penalty = args.length_penalty if args.length_penalty is not None else max(val_bleu, key=val_bleu.get, default=1.0)
        start = time.perf_counter()
        hyps = decode(test, length_penalty)
        beam = corpus_bleu(hyps, test.tgt_texts)
        decode_wall = time.perf_counter() - start
    row = {"data": "multi30k test2016 en-de", "bleu": round(beam["bleu"], 2), "bleu_lc": round(beam["bleu_lc"], 2),
           "greedy_bleu": round(metrics["test"]["bleu"], 2), "reference": REFERENCE, "target": TARGET,
           "met": beam["bleu"] >= TARGET, "epochs": metrics["epochs_run"], "train_s": round(train_wall, 1),
           "decode_s": round(decode_wall, 1), "params": metrics["parameters"], "length_penalty": length_penalty,
           "val_bleu_by_length_penalty": val_bleu}
    print(format_table([row], [("data", "data"), ("bleu", f"sacreBLEU (beam {args.beam})"), ("bleu_lc", "lowercased"),
                               ("greedy_bleu", "greedy"), ("length_penalty", "lp"), ("reference", "Wu 2021"),
                               ("target", "target"), ("met", "met"),
                               ("epochs", "epochs"), ("train_s", "train s"), ("params", "params")]))
    for h, r in list(zip(hyps, test.tgt_texts))[:3]:
        print(f"  hyp: {h}\n  ref: {r}")
    out = args.out or Path(__file__).resolve().parent / "results" / f"translation{'-quick' if args.quick else ''}.json"
    write_json(out, {"benchmark": "translation", "quick": args.quick, "config": {
        "model": config.model, "model_config": config.model_config, "train": vars(config.train),
        "data_options": config.data_options}, "beam": args.beam, "result": row, "metrics": metrics,
        "samples": [{"hyp": h, "ref": r} for h, r in list(zip(hyps, test.tgt_texts))[:10]],
        "machine": machine_info(torch.device(metrics["device"])), "git": git_revision(__file__)})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
