"""Does memory stay flat as an image folder grows, and what does reading lazily cost in speed?

Rows, on generated folders of 64x64 RGB PNGs in 10 class folders (random pixels):
  peak RSS         one epoch of training (vit-tiny at 32 wide, depth 1, patch 16, batch 64: a
                   deliberately small model, so the loader's cost shows; --dim/--depth/--patch) in a
                   fresh child process per case, from loading the folder to the end of the
                   epoch: ``ru_maxrss`` of the child's main process, and of its largest
                   DataLoader worker. Cases: the in-memory loader (``--data.lazy false``,
                   decodes every image up front), the lazy folder (``lazy true``, 2 workers)
                   and shards written by ``attnlab shard`` (2 workers), at 2,000 and 10,000
                   images (``--huge 100000``: also at 100,000, one epoch, every loader). Target:
                   lazy / shards grow < 10% from 2,000 to 10,000 and from 10,000 to 100,000.
  images/s         training throughput of the three loaders on the 10,000-image folder, in
                   one fresh process that holds a trainer for each (persistent workers) and
                   trains them in turn, ``--rounds`` rounds (the first loader rotating) of
                   6 untimed steps (what the workers prefetched meanwhile) and 30 timed steps
                   each, epochs running on across rounds. Short alternating turns, because
                   this kind of VM changes speed by up to 1.8x from one second to the next
                   (the same Python loop: 55-100 ms); both loaders of a ratio then see the
                   same machine. Ratio vs in-memory per round: the median and the middle
                   half. Targets: lazy >= 0.9x, shards >= 0.95x.

``--quick``: 300 vs 900 images of 32x32, throughput on 900, every case in this process (a smoke
test, < 30 s; its RSS figures are not per case). Results:
benchmarks/results/data_scale[-quick].json unless ``--out``. The figures depend on the
machine's load: a shared machine makes the throughput ratios noisy.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import format_table, git_revision, machine_info, write_json  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CLASSES = 10
MODEL = {"dim": 32, "depth": 1, "num_heads": 2, "patch_size": 16}
LOADERS = ("memory", "lazy", "shards")


def make_folder(root: Path, count: int, size: int, seed: int = 0) -> Path:
    """``count`` random RGB PNGs of size x size in ``CLASSES`` class folders (skipped if present)."""
    from PIL import Image

    if (root / ".complete").exists():
        return root
    rng = np.random.default_rng(seed)
    for i in range(count):
        folder = root / f"c{i % CLASSES}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i:06d}.png")
    (root / ".complete").write_text("")
    return root


def make_trainer(case: dict, loader: str, epochs: int):
    """(trainer, load seconds) for ``loader`` ("memory", "lazy", "shards") on ``case``'s data."""
    import torch

    from attnlab.models import create_model
    from attnlab.tasks import load_task
    from attnlab.training import ClassificationObjective, TrainConfig, Trainer

    start = time.perf_counter()
    if loader == "shards":
        data = load_task("images", case["shards"], seed=0)
    else:
        data = load_task("images", case["folder"], seed=0, val_fraction=0.0, test_fraction=0.0, lazy=loader == "lazy",
                         image_size=[case["size"], case["size"]])
    load_s = time.perf_counter() - start
    torch.manual_seed(0)
    model = create_model("vit-tiny", num_classes=data.num_classes, image_size=(case["size"], case["size"]),
                         in_channels=3, **case["model"])
    config = TrainConfig(epochs=epochs, batch_size=64, progress=False, device="cpu",
                         num_workers=0 if loader == "memory" else case["workers"])
    return Trainer(model, ClassificationObjective(data.num_classes), data.train, None, config), load_s


def run_case(case: dict) -> dict:
    """In this (fresh) process: load ``case["loader"]``, train one epoch, report peak RSS."""
    import torch

    torch.set_num_threads(case["threads"])
    trainer, load_s = make_trainer(case, case["loader"], 1)
    start = time.perf_counter()
    trainer.fit()
    epoch_s = time.perf_counter() - start
    images = len(trainer.train_loader) * 64
    del trainer  # its persistent workers exit and are waited for: RUSAGE_CHILDREN then counts them
    gc.collect()
    return {"load_s": load_s, "epoch_s": epoch_s, "images_per_epoch": images,
            "rss_main_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_worker_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def _batches(trainer):
    """The trainer's training batches, epoch after epoch (the sampler or stream told each epoch)."""
    for epoch in itertools.count():
        trainer.sampler.set_epoch(epoch)
        yield from trainer.train_loader


def _step(trainer, batch) -> None:
    """One training step as `Trainer` takes it (loss, backward, optimizer and schedule)."""
    loss, _ = trainer.objective.loss(trainer.train_model, batch)
    loss.backward()
    trainer._optimizer_step()  # noqa: SLF001


def run_throughput(case: dict) -> dict:
    """In this (fresh) process: a trainer per loader, all alive at once; ``rounds`` rounds in
    which each loader in turn (the first rotating) trains ``warm`` untimed batches, then
    ``timed`` timed ones. images/s per loader and round."""
    import torch

    torch.set_num_threads(case["threads"])
    trainers = {loader: make_trainer(case, loader, 1)[0] for loader in LOADERS}
    streams = {loader: _batches(trainer) for loader, trainer in trainers.items()}
    speed: dict[str, list[float]] = {loader: [] for loader in LOADERS}
    for round_ in range(case["rounds"] + 1):
        for loader in LOADERS[round_ % 3:] + LOADERS[:round_ % 3]:
            trainer, batches = trainers[loader], streams[loader]
            trainer.train_model.train()
            for _ in range(case["warm"]):  # the batches its workers made while the others trained
                _step(trainer, next(batches))
            start, images = time.perf_counter(), 0
            for _ in range(case["timed"]):
                batch = next(batches)
                _step(trainer, batch)
                images += len(batch[1])
            if round_ > 0:  # round 0 starts the workers and warms the allocator and the model
                speed[loader].append(images / (time.perf_counter() - start))
    for trainer in trainers.values():
        trainer.logger.close()
    return {"images_per_s": speed}


def _quartiles(values: list[float]) -> tuple[float, float]:
    """The first and third quartiles (the middle half of the rounds lies between)."""
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


def child(case: dict) -> dict:
    """Run one case in a fresh interpreter: its peak RSS is its own."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1] / "src"),
                                                                       os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, __file__, "--_child", json.dumps(case)], stdout=subprocess.PIPE, text=True,
                          env=env, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"case {case} failed (its error is above)")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--root", type=Path, default=None, help="where the generated folders go (default: a temp folder)")
    p.add_argument("--threads", type=int, default=1, help="torch threads in the training process")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--dim", type=int, default=MODEL["dim"], help="model width (larger: compute-bound, less data-bound)")
    p.add_argument("--depth", type=int, default=MODEL["depth"])
    p.add_argument("--patch", type=int, default=MODEL["patch_size"])
    p.add_argument("--rounds", type=int, default=None, help="throughput rounds (default 100; quick 2)")
    p.add_argument("--tag", default="", help="suffix of the result file name")
    p.add_argument("--huge", type=int, default=0,
                   help="also measure peak RSS of one epoch at this many images (the issue's 100000), every loader")
    p.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._child:
        case = json.loads(args._child)
        print(json.dumps(run_throughput(case) if case.get("rounds") else run_case(case)))
        return 0
    small, large, size = (300, 900, 32) if args.quick else (2000, 10000, 64)
    args.rounds = args.rounds or (2 if args.quick else 100)
    model = {**MODEL, "dim": args.dim, "depth": args.depth, "patch_size": args.patch}
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root or Path(tmp)
        sizes = (small, large, args.huge) if args.huge else (small, large)
        folders = {n: make_folder(root / f"png{size}-{n}", n, size) for n in sizes}
        shards = {}
        for n, folder in folders.items():
            out = root / f"shards{size}-{n}"
            if not (out / "shards.json").exists():
                from attnlab.data.shard_writer import write_shards

                write_shards(folder, out, shard_size=500, options={"image_size": (size, size), "val_fraction": 0.0,
                                                                    "test_fraction": 0.0})
            shards[n] = out
        rows = []
        base = {"size": size, "threads": args.threads, "workers": args.workers, "model": model}
        for loader in LOADERS:  # peak RSS: a fresh process per case
            for n in sizes:
                case = {**base, "loader": loader, "folder": str(folders[n]), "shards": str(shards[n])}
                result = run_case(case) if args.quick else child(case)
                rows.append({"loader": loader, "images": n, **result})
                print(f"  {loader:7s} {n:6d} images: main {result['rss_main_mib']:.0f} MiB, worker "
                      f"{result['rss_worker_mib']:.0f} MiB, epoch {result['epoch_s']:.1f} s", flush=True)
        case = {**base, "folder": str(folders[large]), "shards": str(shards[large]), "rounds": args.rounds,
                "warm": 2 if args.quick else 6, "timed": 4 if args.quick else 30}
        per_round = (run_throughput(case) if args.quick else child(case))["images_per_s"]
    by = {(r["loader"], r["images"]): r for r in rows}
    speed = {k: statistics.median(v) for k, v in per_round.items()}
    ratios = {k: [a / b for a, b in zip(per_round[k], per_round["memory"])] for k in LOADERS}
    table = []
    for loader in LOADERS:
        a, b = by[(loader, small)], by[(loader, large)]
        row = {"loader": loader, "rss_small": f"{a['rss_main_mib']:.0f}", "rss_large": f"{b['rss_main_mib']:.0f}",
               "growth": f"{100 * (b['rss_main_mib'] / a['rss_main_mib'] - 1):+.0f}%",
               "worker": f"{b['rss_worker_mib']:.0f}" if loader != "memory" else "-",
               "speed": f"{speed[loader]:.0f}", "ratio": f"{statistics.median(ratios[loader]):.2f}x",
               "range": "-".join(f"{q:.2f}" for q in _quartiles(ratios[loader]))}
        if args.huge:
            c = by[(loader, args.huge)]
            row.update(rss_huge=f"{c['rss_main_mib']:.0f}", growth_huge=f"{100 * (c['rss_main_mib'] / b['rss_main_mib'] - 1):+.0f}%")
        table.append(row)
    columns = [("loader", "loader"), ("rss_small", f"RSS MiB {small}"), ("rss_large", f"RSS MiB {large}"), ("growth", "growth")]
    if args.huge:
        columns += [("rss_huge", f"RSS MiB {args.huge}"), ("growth_huge", f"growth {large}->{args.huge}")]
    print(format_table(table, columns + [("worker", "worker MiB"), ("speed", f"images/s ({large})"), ("ratio", "vs memory"),
                                    ("range", "middle half of rounds")]))
    payload = {"benchmark": "data_scale", "quick": args.quick, "image_size": size, "sizes": list(sizes),
               "workers": args.workers, "threads": args.threads, "rounds": args.rounds, "model": model, "rows": rows,
               "images_per_s": speed, "images_per_s_rounds": per_round, "ratio_rounds": ratios, "machine": machine_info(__import__("torch").device("cpu")),
               "git": git_revision(__file__)}
    name = f"data_scale{args.tag}{'-quick' if args.quick else ''}.json"
    print(f"wrote {write_json(args.out or RESULTS / name, payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
