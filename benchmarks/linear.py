"""Is attnlab's CPU linear (oneDNN) faster than ``torch.nn.functional.linear`` (MKL)? Side by side, one run.

Rows (float32, timed alternately call for call; speed-up = F.linear time / attnlab time,
> 1: attnlab is faster; GFLOP/s of each side):
  fwd (M, K, N)        ``attnlab.layers.linear.linear(x, W, b)`` vs ``F.linear`` for x (M, K),
                       W (N, K): decoding (M = 1, 8), a text batch (M = 1,024) and a long one.
  fwd+bwd (M, K, N)    the same with the backward (gradients of x, W and b).
  train step           one AdamW step of a 4 x 256 ``text-transformer`` (BERT layout) on
                       8 x 128 tokens, attnlab's linear vs the same model with the oneDNN
                       path switched off (every product on ``F.linear``); same weights.

``--quick``: small sizes, a few rounds (smoke test). Results:
benchmarks/results/linear-cpu[-quick].json unless ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import format_table, git_revision, machine_info, time_paired, write_json  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


@contextlib.contextmanager
def _aten_linear():
    """Inside the block attnlab's linear takes F.linear everywhere."""
    from attnlab.layers import linear as module

    saved = dict(module._STATE)
    module._STATE["ok"] = False
    try:
        yield
    finally:
        module._STATE.clear()
        module._STATE.update(saved)


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
                def ours():
                    with torch.no_grad():
                        linear(x, w, b)

                def theirs():
                    with torch.no_grad():
                        F.linear(x, w, b)
            else:
                def ours():
                    linear(x, w, b).backward(g)

                def theirs():
                    F.linear(x, w, b).backward(g)
            t_ours, t_theirs = time_paired(ours, theirs, torch.device("cpu"), rounds)
            flops = 2 * m * k * n * (1 if kind == "fwd" else 3)
            rows.append({"row": f"{kind} {(m, k, n)}", "attnlab_ms": t_ours * 1e3, "torch_ms": t_theirs * 1e3,
                         "attnlab_gflops": flops / t_ours / 1e9, "torch_gflops": flops / t_theirs / 1e9,
                         "ratio": t_theirs / t_ours})
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

    def theirs():
        with _aten_linear():
            step()

    t_ours, t_theirs = time_paired(step, theirs, torch.device("cpu"), rounds)
    return {"row": f"train step text-transformer {size['depth']} x {size['dim']}, B={batch} N={length}",
            "attnlab_ms": t_ours * 1e3, "torch_ms": t_theirs * 1e3, "attnlab_gflops": None, "torch_gflops": None,
            "ratio": t_theirs / t_ours}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave as is)")
    p.add_argument("--rounds", type=int, default=None, help="alternating timed calls per side (default 20; step 5)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    size = {"vocab_size": 8000, "num_classes": 2, "dim": 256, "depth": 4, "num_heads": 4, "mlp_ratio": 4.0, "max_length": 512}
    if args.quick:
        shapes, rounds, step_rounds, batch, length = [(64, 128, 128)], 2, 1, 2, 16
        size.update(vocab_size=300, dim=32, depth=1, num_heads=2)
    else:
        shapes = [(1, 256, 8000), (8, 256, 1024), (1024, 256, 768), (1024, 1024, 256), (4096, 256, 1024)]
        rounds, step_rounds, batch, length = 20, 5, 8, 128
    rows = op_rows(shapes, args.rounds or rounds)
    rows.append(step_row(size, batch, length, args.rounds or step_rounds))
    table = [{**r, "attnlab_ms": f"{r['attnlab_ms']:.3f}", "torch_ms": f"{r['torch_ms']:.3f}",
              "attnlab_gflops": "" if r["attnlab_gflops"] is None else f"{r['attnlab_gflops']:.0f}",
              "torch_gflops": "" if r["torch_gflops"] is None else f"{r['torch_gflops']:.0f}",
              "ratio": f"{r['ratio']:.2f}x"} for r in rows]
    print(format_table(table, [("row", "row (fp32)"), ("attnlab_ms", "attnlab ms"), ("torch_ms", "F.linear ms"),
                               ("attnlab_gflops", "attnlab GFLOP/s"), ("torch_gflops", "F.linear GFLOP/s"),
                               ("ratio", "speed-up")]))
    payload = {"benchmark": "linear", "quick": args.quick, "rows": rows, "machine": machine_info(torch.device("cpu")),
               "git": git_revision(__file__)}
    name = f"linear-cpu{'-quick' if args.quick else ''}.json"
    print(f"wrote {write_json(args.out or RESULTS / name, payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
