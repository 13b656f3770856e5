"""Which route should CPU float32 products take, oneDNN or MKL? Autotuned vs forced, side by side, one run.

Rows (float32; every route timed alternately call for call in one process; ms, GFLOP/s, and
speed-up = F.linear time / route time, > 1: faster than plain PyTorch):
  fwd (M, K, N)        ``attnlab.layers.linear.linear(x, W, b)`` for x (M, K), W (N, K) on
                       three routes: as autotuned here (``attnlab.autotune``: the route this
                       machine measured faster for the shape class, printed per row), forced
                       oneDNN and forced MKL (``F.linear``): decoding (M = 1, 8), a text batch
                       (M = 1,024) and a long one.
  fwd+bwd (M, K, N)    the same with the backward (gradients of x, W and b).
  train step           one AdamW step of a 4 x 256 ``text-transformer`` (BERT layout) on
                       8 x 128 tokens on the same three routes; same weights.

The header prints the CPU model, its ISA flags and how routes are chosen; the autotuner's
cache is the user's (``ATTNLAB_CACHE_DIR`` moves it; ``--fresh-cache`` measures anew in a
temporary directory). ``--quick``: small sizes, a few rounds (smoke test). Results:
benchmarks/results/linear-cpu[-quick].json unless ``--out``.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import format_table, git_revision, machine_info, route_header, routes_used, time_rounds, write_json  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
ROUTES = ("autotuned", "onednn", "mkl")


def _forced(route: str):
    """A context manager: the autotuner's choice ("autotuned") or a forced route for both passes."""
    from attnlab import autotune

    if route == "autotuned":
        return autotune.force({})
    name = "aten" if route == "mkl" else route
    return autotune.force({"linear.fwd": name, "linear.bwd": name})


def _on(route: str, fn):
    def call():
        with _forced(route):
            fn()
    return call


def _chosen(m: int, k: int, n: int, backward: bool) -> str:
    """The route the autotuner chose for this shape class (after the timings made it choose)."""
    from attnlab import autotune
    from attnlab.layers import linear as module

    def one(family, needs=""):
        names = module._backward_names("|gx" in needs, "|gw" in needs) if family == "linear.bwd" else module.ROUTES
        return autotune.lookup(module._key(family, m, k, n, needs), names, default="aten") or "-"
    if not module._use_onednn(torch.empty(m, k), torch.empty(n, k)):
        return "F.linear (below the oneDNN threshold or oneDNN off)"
    fwd = one("linear.fwd")
    return fwd if not backward else f"{fwd} / {one('linear.bwd', '|gx|gw')}"


def _timed_row(name: str, calls: dict, rounds: int, flops: float | None, chosen) -> dict:
    """``chosen()`` names the autotuned route; it is asked after the timings (which made the choice)."""
    times = time_rounds([calls[r] for r in ROUTES], torch.device("cpu"), rounds)
    med = {r: statistics.median(t[i] for t in times) for i, r in enumerate(ROUTES)}
    row = {"row": name, "autotuned_route": chosen(), "rounds": len(times)}
    for r in ROUTES:
        row[f"{r}_ms"] = med[r] * 1e3
        row[f"{r}_gflops"] = None if flops is None else flops / med[r] / 1e9
        row[f"{r}_speedup"] = med["mkl"] / med[r]
    return row


def op_rows(shapes: list[tuple[int, int, int]], rounds: int) -> list[dict]:
    from attnlab.layers.linear import linear

    rows = []
    for m, k, n in shapes:
        x = torch.randn(m, k, requires_grad=True)
        w = torch.randn(n, k, requires_grad=True)
        b = torch.randn(n, requires_grad=True)
        g = torch.randn(m, n)
        for kind in ("fwd", "fwd+bwd"):
            if kind == "fwd":
                def work():
                    with torch.no_grad():
                        linear(x, w, b)
            else:
                def work():
                    linear(x, w, b).backward(g)
            calls = {r: _on(r, work) for r in ROUTES}
            flops = 2 * m * k * n * (1 if kind == "fwd" else 3)
            rows.append(_timed_row(f"{kind} {(m, k, n)}", calls, rounds, flops,
                                   lambda: _chosen(m, k, n, kind != "fwd")))  # noqa: B023 (called at once)
    return rows


def step_row(size: dict, batch: int, length: int, rounds: int) -> dict:
    from attnlab.models.registry import create_model

    torch.manual_seed(0)
    model = create_model("text-transformer", **size).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(4, size["vocab_size"], (batch, length))
    labels = torch.randint(0, size["num_classes"], (batch,))

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(ids), labels).backward()
        opt.step()

    calls = {r: _on(r, step) for r in ROUTES}
    return _timed_row(f"train step text-transformer {size['depth']} x {size['dim']}, B={batch} N={length}", calls,
                      rounds, None, lambda: "per product (see the autotuned routes below)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave as is)")
    p.add_argument("--rounds", type=int, default=None, help="alternating timed calls per route (default 20; step 5)")
    p.add_argument("--fresh-cache", action="store_true", help="autotune into a temporary cache (measure anew)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.fresh_cache or args.quick:  # --quick is a smoke test: never touch the user's cache
        os.environ["ATTNLAB_CACHE_DIR"] = fresh = tempfile.mkdtemp(prefix="attnlab-bench-autotune-")
        atexit.register(shutil.rmtree, fresh, ignore_errors=True)
    size = {"vocab_size": 8000, "num_classes": 2, "dim": 256, "depth": 4, "num_heads": 4, "mlp_ratio": 4.0, "max_length": 512}
    if args.quick:
        shapes, rounds, step_rounds, batch, length = [(64, 128, 128)], 2, 1, 2, 16
        size.update(vocab_size=300, dim=32, depth=1, num_heads=2)
    else:
        shapes = [(1, 256, 8000), (8, 256, 1024), (1024, 256, 768), (1024, 1024, 256), (4096, 256, 1024)]
        rounds, step_rounds, batch, length = 20, 5, 8, 128
    print(route_header())
    rows = op_rows(shapes, args.rounds or rounds)
    rows.append(step_row(size, batch, length, args.rounds or step_rounds))

    def cell(value, fmt):
        return "" if value is None else format(value, fmt)

    table = [{"row": r["row"], "route": r["autotuned_route"],
              **{f"{k}_ms": cell(r[f"{k}_ms"], ".3f") for k in ROUTES},
              **{f"{k}_gflops": cell(r[f"{k}_gflops"], ".0f") for k in ROUTES},
              "speedup": f"{r['autotuned_speedup']:.2f}x", "onednn_speedup": f"{r['onednn_speedup']:.2f}x"} for r in rows]
    print(format_table(table, [("row", "row (fp32)"), ("route", "autotuned route (fwd / bwd)"),
                               ("autotuned_ms", "autotuned ms"), ("onednn_ms", "oneDNN ms"), ("mkl_ms", "MKL ms"),
                               ("autotuned_gflops", "autotuned GFLOP/s"), ("onednn_gflops", "oneDNN GFLOP/s"),
                               ("mkl_gflops", "MKL GFLOP/s"), ("speedup", "autotuned vs MKL"),
                               ("onednn_speedup", "oneDNN vs MKL")]))
    used = routes_used()
    print(f"autotuned routes: {used}")
    payload = {"benchmark": "linear", "quick": args.quick, "rows": rows, "routes_used": used,
               "machine": machine_info(torch.device("cpu")), "git": git_revision(__file__)}
    name = f"linear-cpu{'-quick' if args.quick else ''}.json"
    print(f"wrote {write_json(args.out or RESULTS / name, payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
