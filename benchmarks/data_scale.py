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
  images/s         training throughput of the second epoch (workers warm) for the same three
                   loaders on the 10,000-image folder; ratio vs in-memory. Targets: lazy
                   >= 0.9x, shards >= 0.95x.

``--quick``: 300 vs 900 images of 32x32, throughput on 900, every case in this process (a smoke
test, < 30 s; its RSS figures are not per case). Results:
benchmarks/results/data_scale[-quick].json unless ``--out``. The figures depend on the
machine's load: a shared machine makes the throughput ratios noisy.
"""

from __future__ import annotations

import argparse
import gc
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


def run_case(case: dict) -> dict:
    """In this (fresh) process: load, train ``epochs`` epochs, report peak RSS and epoch times."""
    import torch

    from attnlab.models import create_model
    from attnlab.tasks import load_task
    from attnlab.training import ClassificationObjective, TrainConfig, Trainer

    torch.set_num_threads(case["threads"])
    start = time.perf_counter()
    options = {} if case["loader"] == "shards" else {"lazy": case["loader"] == "lazy",
                                                     "image_size": [case["size"], case["size"]]}
    data = load_task("images", case["data"], seed=0, val_fraction=0.0, test_fraction=0.0, **options) \
        if case["loader"] != "shards" else load_task("images", case["data"], seed=0)
    load_s = time.perf_counter() - start
    torch.manual_seed(0)
    model = create_model("vit-tiny", num_classes=data.num_classes, image_size=(case["size"], case["size"]),
                         in_channels=3, **case["model"])
    config = TrainConfig(epochs=case["epochs"], batch_size=64, progress=False, device="cpu",
                         num_workers=0 if case["loader"] == "memory" else case["workers"])
    marks = [time.perf_counter()]
    trainer = Trainer(model, ClassificationObjective(data.num_classes), data.train, None, config,
                      callbacks=[lambda t, e, r: marks.append(time.perf_counter())])
    marks[0] = time.perf_counter()
    trainer.fit()
    images = len(trainer.train_loader) * 64
    del trainer  # its persistent workers exit and are waited for: RUSAGE_CHILDREN then counts them
    gc.collect()
    return {"load_s": load_s, "epoch_s": [b - a for a, b in zip(marks, marks[1:])], "images_per_epoch": images,
            "rss_main_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_worker_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def child(case: dict) -> dict:
    """Run one case in a fresh interpreter: its peak RSS is its own."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1] / "src"),
                                                                       os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, __file__, "--_child", json.dumps(case)], capture_output=True, text=True,
                          env=env, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"case {case} failed:\n{done.stderr[-3000:]}")
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
    p.add_argument("--rounds", type=int, default=None, help="alternating throughput rounds (default 3; quick 1)")
    p.add_argument("--tag", default="", help="suffix of the result file name")
    p.add_argument("--huge", type=int, default=0,
                   help="also measure peak RSS of one epoch at this many images (the issue's 100000), every loader")
    p.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._child:
        print(json.dumps(run_case(json.loads(args._child))))
        return 0
    small, large, size = (300, 900, 32) if args.quick else (2000, 10000, 64)
    args.rounds = args.rounds or (1 if args.quick else 3)
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
        loaders = ("memory", "lazy", "shards")
        # Rounds alternate the loaders (memory, lazy, shards, memory, ...) so that a change in the
        # machine's load falls on all of them; the first round also runs the small folder for RSS.
        for round_ in range(args.rounds):
            for loader in loaders:
                for n in (sizes if round_ == 0 else (large,)):
                    data = shards[n] if loader == "shards" else folders[n]
                    case = {"loader": loader, "data": str(data), "size": size, "threads": args.threads,
                            "workers": args.workers, "epochs": 2 if n == large else 1, "model": model}
                    result = run_case(case) if args.quick else child(case)
                    rows.append({"loader": loader, "images": n, "round": round_, **result})
                    print(f"  round {round_} {loader:7s} {n:6d} images: main {result['rss_main_mib']:.0f} MiB, worker "
                          f"{result['rss_worker_mib']:.0f} MiB, epochs {[round(s, 1) for s in result['epoch_s']]} s",
                          flush=True)
    by = {(r["loader"], r["images"]): r for r in rows if r["round"] == 0}
    speed = {k: statistics.median(r["images_per_epoch"] / r["epoch_s"][-1] for r in rows
                                  if r["loader"] == k and r["images"] == large) for k in loaders}
    table = []
    for loader in loaders:
        a, b = by[(loader, small)], by[(loader, large)]
        row = {"loader": loader, "rss_small": f"{a['rss_main_mib']:.0f}", "rss_large": f"{b['rss_main_mib']:.0f}",
               "growth": f"{100 * (b['rss_main_mib'] / a['rss_main_mib'] - 1):+.0f}%",
               "worker": f"{b['rss_worker_mib']:.0f}" if loader != "memory" else "-",
               "speed": f"{speed[loader]:.0f}", "ratio": f"{speed[loader] / speed['memory']:.2f}x"}
        if args.huge:
            c = by[(loader, args.huge)]
            row.update(rss_huge=f"{c['rss_main_mib']:.0f}", growth_huge=f"{100 * (c['rss_main_mib'] / b['rss_main_mib'] - 1):+.0f}%")
        table.append(row)
    columns = [("loader", "loader"), ("rss_small", f"RSS MiB {small}"), ("rss_large", f"RSS MiB {large}"), ("growth", "growth")]
    if args.huge:
        columns += [("rss_huge", f"RSS MiB {args.huge}"), ("growth_huge", f"growth {large}->{args.huge}")]
    print(format_table(table, columns + [("worker", "worker MiB"), ("speed", f"images/s ({large})"), ("ratio", "vs memory")]))
    payload = {"benchmark": "data_scale", "quick": args.quick, "image_size": size, "sizes": list(sizes),
               "workers": args.workers, "threads": args.threads, "rounds": args.rounds, "model": model, "rows": rows,
               "images_per_s": speed, "machine": machine_info(__import__("torch").device("cpu")),
               "git": git_revision(__file__)}
    name = f"data_scale{args.tag}{'-quick' if args.quick else ''}.json"
    print(f"wrote {write_json(args.out or RESULTS / name, payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
