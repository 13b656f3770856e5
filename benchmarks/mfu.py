"""How much of this CPU's matrix-product peak does an encoder training step use (MFU), fp32 and bf16?

Issue 27 item 3. Two measurements, one process:

1. Peak: ``torch.mm`` of square (S, S) matrices, S in ``--sizes`` (1024 / 2048 / 4096), fp32
   and bf16, the best of ``--repeats`` calls at each size (2 * S^3 FLOPs a call); the peak of a
   dtype is its best size, measured before and again after the steps and the higher kept (on a
   shared machine a busy moment can only lower a measurement; the higher peak makes MFU the
   conservative figure). bf16 products run on oneDNN's AVX512-BF16 / AMX kernels where the
   CPU has them (``cpu_native_bf16`` in the JSON), emulated (far slower) elsewhere.
2. The training step of a 4-layer x 256-wide BERT encoder (4 heads, FFN 1024, B=8, N=512 and
   N=128, dropout 0): forward, mean-square loss on the last hidden states, backward, gradient
   clipping at 1.0 and the trainer's AdamW (fused, its weight-decay groups), as
   ``attnlab.training.Trainer`` runs it. Rows, timed alternately call for call
   (``_common.time_rounds``), each on its own copy of the same weights:
     attnlab fp32 / bf16      ``text-transformer`` loaded from the HF weights (``attnlab.interop``);
                              bf16 is the trainer's own autocast (``--train.precision bf16``:
                              ``torch.autocast("cpu", torch.bfloat16)`` around the forward).
                              "before" rows are the default (three q/k/v projections), "after"
                              rows the fused QKV product tried for this issue
                              (``ATTNLAB_FUSED_QKV=1``, ``attnlab.layers.attention``; off by
                              default: within noise).
     HF fp32 / bf16           ``transformers.BertModel`` (attn_implementation="sdpa"), the same
                              step and the same autocast.
     products alone           the step's matrix products and nothing else (``products_alone``),
                              and "clip + fused AdamW alone" (``optimizer_alone``): the floor of
                              any step that computes the same products. HF's step time over the
                              floor's (per round, median) is the most any such step can beat HF by:
                              the "ceiling" columns (issue 27's encoder row, >= 1.2x).

FLOPs per step (matrix products only, the convention of MFU; Kaplan et al. 2020 and the PaLM
paper's appendix B, Chowdhery et al. 2022):

    6 * P * B * N  +  12 * L * B * N^2 * C

P = the non-embedding parameters (the L blocks: projections, feed-forward, layer norms; the
token / position / type tables, their layer norm and HF's unused pooler excluded), B * N tokens;
6 = 2 (multiply-add) * 3 (forward, and the backward's two products). The second term is
attention's two (N, N) products per layer, Q K^T and P V, 2 * 2 * B * N^2 * C forward
(C = H * D, the model width) and twice that backward. Achieved GFLOP/s = FLOPs / median step
time (and of the fastest step: "best", the figure least touched by other processes on a shared
machine); MFU = achieved / the peak of the step's dtype (fp32 rows against the fp32 peak, bf16
rows against the bf16 peak). Target (issue 27): attnlab bf16 >= 40% of the bf16 peak.

``--profile K``: K steps of the attnlab bf16 step (at the largest N) under ``torch.profiler``;
the top operators by self time go into the JSON and are printed. ``--quick``: tiny sizes, a
seconds-long smoke run. Results: benchmarks/results/mfu[-quick].json unless ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (add_allocator_argument, apply_allocator, format_table, git_revision, machine_info,  # noqa: E402
                     route_header, time_rounds, write_json)

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_BF16_MFU = 0.40


def matmul_peak(dtype: torch.dtype, sizes: list[int], repeats: int) -> dict:
    """Best ``torch.mm`` GFLOP/s of square products, per size and overall."""
    per_size = {}
    gen = torch.Generator().manual_seed(0)
    for s in sizes:
        a = torch.randn(s, s, generator=gen).to(dtype)
        b = torch.randn(s, s, generator=gen).to(dtype)
        out = torch.empty(s, s, dtype=dtype)
        torch.mm(a, b, out=out)  # warm-up: oneDNN builds its kernel, pages are touched
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.mm(a, b, out=out)
            best = min(best, time.perf_counter() - t0)
        per_size[s] = 2 * s**3 / best / 1e9
    return {"gflops": max(per_size.values()), "per_size_gflops": per_size}


def step_flops(params: int, layers: int, batch: int, n: int, width: int) -> float:
    """6 P B N + 12 L B N^2 C (module docstring)."""
    return 6.0 * params * batch * n + 12.0 * layers * batch * n * n * width


def _set_fused_qkv(model: torch.nn.Module, on: bool) -> None:
    from attnlab.layers.attention import MultiHeadAttention

    for m in model.modules():
        if isinstance(m, MultiHeadAttention):
            m.fuse_qkv = on


def make_step(model: torch.nn.Module, forward: Callable[[], torch.Tensor], precision: str,
              fused_qkv: bool | None = None) -> Callable[[], None]:
    """One training step as the trainer takes it: autocast forward, backward, clip 1.0, fused AdamW."""
    from attnlab.training.param_groups import parameter_groups
    from attnlab.training.precision import resolve_precision

    precision = resolve_precision(precision, torch.device("cpu"))
    opt = torch.optim.AdamW(parameter_groups(model, lr=1e-4, weight_decay=0.01), lr=1e-4, fused=True)

    def step() -> None:
        if fused_qkv is not None:
            _set_fused_qkv(model, fused_qkv)
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = forward()
        out.float().square().mean().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    return step


def _faster(*calls: Callable[[], object], repeats: int = 3) -> Callable[[], object]:
    """The call whose best of ``repeats`` (after one warm-up) is shortest."""
    def best(fn: Callable[[], object]) -> float:
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    return min(calls, key=best) if len(calls) > 1 else calls[0]


def products_alone(size: dict[str, int], batch: int, n: int, dtype: torch.dtype) -> Callable[[], None]:
    """One training step's matrix products and nothing else: the floor of any step that computes them.

    Per layer: the six projections (q, k, v, out, fc1, fc2) forward, and their grad_x and grad_W
    backward products, each with the operand layout a training step has (grad_W reads the
    gradient transposed); attention's Q K^T and P V forward, and dP, dV, dQ, dK backward, as
    batched (B*H, N, D) products. These are exactly the FLOPs of ``step_flops``. float32
    products take the faster of MKL (``torch.mm``) and oneDNN (``attnlab.layers.linear._mm``),
    chosen per product by timing; bf16 products are ``torch.mm`` (oneDNN's bf16 kernel). Every
    layer reuses the same operands, so they are warm in cache: the floor is optimistic, which
    makes a ceiling derived from it (a step can run no faster than its products) conservative.
    """
    from attnlab.layers.linear import _mm

    gen = torch.Generator().manual_seed(0)
    c, layers, heads = size["dim"], size["depth"], size["heads"]
    m, bh, d = batch * n, batch * heads, size["dim"] // heads

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(dtype)

    calls: list[Callable[[], object]] = []
    for k, o in [(c, c)] * 4 + [(c, 4 * c), (4 * c, c)]:  # q, k, v, out, fc1, fc2: x (M, K) @ W (O, K)^T
        x, w, gy = rand(m, k), rand(o, k), rand(m, o)
        pairs = [(lambda x=x, w=w: torch.mm(x, w.t()), lambda x=x, w=w: _mm(x, w)),  # forward
                 (lambda gy=gy, w=w: torch.mm(gy, w), lambda gy=gy, w=w: _mm(gy, w.t())),  # grad_x (M, K)
                 (lambda gy=gy, x=x: torch.mm(gy.t(), x), lambda gy=gy, x=x: _mm(gy.t(), x.t()))]  # grad_W (O, K)
        calls += [_faster(*(pair if dtype == torch.float32 else pair[:1])) for pair in pairs]
    q, kt, v, p, do = rand(bh, n, d), rand(bh, d, n), rand(bh, n, d), rand(bh, n, n), rand(bh, n, d)
    calls += [lambda: torch.bmm(q, kt), lambda: torch.bmm(p, v),  # S = Q K^T, O = P V
              lambda: torch.bmm(do, v.transpose(1, 2)), lambda: torch.bmm(p.transpose(1, 2), do),  # dP, dV
              lambda: torch.bmm(p, kt.transpose(1, 2)), lambda: torch.bmm(p.transpose(1, 2), q)]  # dQ, dK

    def step() -> None:
        for _ in range(layers):
            for fn in calls:
                fn()

    return step


def optimizer_alone(model: torch.nn.Module) -> Callable[[], None]:
    """The step's gradient clipping and fused AdamW on a copy of ``model`` with fixed gradients."""
    from attnlab.training.param_groups import parameter_groups

    model = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(0)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=gen) * 1e-3
    opt = torch.optim.AdamW(parameter_groups(model, lr=1e-4, weight_decay=0.01), lr=1e-4, fused=True)

    def step() -> None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    return step


def _models(size: dict[str, int], tmp: Path):
    from models import _bert  # the same pair benchmarks/models.py times

    ours, peer = _bert(size, tmp, torch.device("cpu"))
    return ours.train(), peer.train()


def encoder_rows(size: dict[str, int], seqs: list[int], batch: int, rounds: int, peaks: dict[str, float],
                 tmp: Path, compare: bool) -> list[dict]:
    ours, peer = _models(size, tmp)
    params = sum(p.numel() for name, p in ours.named_parameters() if name.startswith("blocks."))
    rows = []
    for n in seqs:
        ids = torch.randint(5, size["vocab"], (batch, n))
        flops = step_flops(params, size["depth"], batch, n, size["dim"])
        specs = []  # (label, model, precision, fused_qkv, which)
        for precision in ("fp32", "bf16"):
            specs.append((f"attnlab {precision}" + (" before" if compare else ""), "ours", precision, False))
            if compare:
                specs.append((f"attnlab {precision} after", "ours", precision, True))
            specs.append((f"HF BertModel {precision}", "peer", precision, None))
            specs.append((f"products alone {precision}", "products", precision, None))
        specs.append(("clip + fused AdamW alone", "optimizer", "fp32", None))
        calls = []
        for label, which, precision, fused in specs:
            if which == "products":
                calls.append(products_alone(size, batch, n, torch.float32 if precision == "fp32" else torch.bfloat16))
                continue
            if which == "optimizer":
                calls.append(optimizer_alone(ours))
                continue
            model = copy.deepcopy(ours if which == "ours" else peer)
            if which == "ours":
                forward = lambda model=model: model(ids)[0]  # noqa: E731
            else:
                forward = lambda model=model: model(input_ids=ids).last_hidden_state  # noqa: E731
            calls.append(make_step(model, forward, precision, fused))
        times = time_rounds(calls, torch.device("cpu"), rounds)
        col = {(which, precision, fused): i for i, (_, which, precision, fused) in enumerate(specs)}
        for i, (label, which, precision, fused) in enumerate(specs):
            seconds = statistics.median(t[i] for t in times)
            best = min(t[i] for t in times)
            work = 0.0 if which == "optimizer" else flops
            row = {"row": f"{label} N={n}", "model": which, "precision": precision, "fused_qkv": fused,
                   "n": n, "batch": batch, "step_s": seconds, "steps_per_s": 1 / seconds,
                   "gflop_per_step": work / 1e9, "gflops": work / seconds / 1e9, "mfu": work / seconds / 1e9 / peaks[precision],
                   "best_step_s": best, "best_gflops": work / best / 1e9, "times_s": [t[i] for t in times]}
            if which in ("ours", "peer"):  # per-round ratios, paired: HF's step over this row's and over the floors
                hf, prod, opt = (col[("peer", precision, None)], col[("products", precision, None)],
                                 col[("optimizer", "fp32", None)])
                row["speedup_vs_hf"] = statistics.median(t[hf] / t[i] for t in times)
                if which == "peer":
                    row["ceiling_vs_products"] = statistics.median(t[hf] / t[prod] for t in times)
                    row["ceiling_vs_products_and_optimizer"] = statistics.median(t[hf] / (t[prod] + t[opt]) for t in times)
            rows.append(row)
    return rows


def profile_rows(size: dict[str, int], n: int, batch: int, steps: int, tmp: Path, top: int = 15) -> list[dict]:
    """Top operators by self CPU time over ``steps`` attnlab bf16 steps (after two warm-up steps)."""
    from torch.profiler import ProfilerActivity, profile

    ours, _ = _models(size, tmp)
    ids = torch.randint(5, size["vocab"], (batch, n))
    step = make_step(ours, lambda: ours(ids)[0], "bf16")
    step(), step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    return [{"op": e.key, "calls_per_step": e.count / steps, "self_ms_per_step": e.self_cpu_time_total / 1e3 / steps,
             "share": e.self_cpu_time_total / total} for e in events[:top]]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--sizes", type=int, nargs="+", default=None, help="square torch.mm sizes for the peak")
    p.add_argument("--repeats", type=int, default=None, help="timed torch.mm calls per size (best kept)")
    p.add_argument("--seqs", type=int, nargs="+", default=None, help="sequence lengths N (default 512 128)")
    p.add_argument("--rounds", type=int, default=None, help="alternating timed steps per row (default 5)")
    p.add_argument("--no-compare", action="store_true", help="skip the 'after' rows (fused QKV on)")
    p.add_argument("--profile", type=int, default=0, metavar="K", help="profile K attnlab bf16 steps at the largest N")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a seconds-long smoke run")
    p.add_argument("--out", type=Path, default=None)
    add_allocator_argument(p)
    args = p.parse_args(argv)
    apply_allocator(args.cpu_allocator)
    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if args.quick:
        size = {"vocab": 500, "dim": 32, "depth": 1, "heads": 2}
        sizes, repeats, seqs, batch, rounds = [128, 256], 2, [16], 2, 1
    else:
        size = {"vocab": 8000, "dim": 256, "depth": 4, "heads": 4}
        sizes, repeats, seqs, batch, rounds = [1024, 2048, 4096], 5, [512, 128], 8, 5
    sizes, repeats = args.sizes or sizes, args.repeats or repeats
    seqs, rounds = args.seqs or seqs, args.rounds or rounds
    machine = machine_info(torch.device("cpu"))
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    first = {k: matmul_peak(dt, sizes, repeats) for k, dt in dtypes.items()}
    with tempfile.TemporaryDirectory() as tmp:
        rows = encoder_rows(size, seqs, batch, rounds, {k: 1.0 for k in dtypes}, Path(tmp), compare=not args.no_compare)
        second = {k: matmul_peak(dt, sizes, repeats) for k, dt in dtypes.items()}
        profile = profile_rows(size, max(seqs), batch, args.profile, Path(tmp)) if args.profile else None
    peaks = {k: {"gflops": max(first[k]["gflops"], second[k]["gflops"]),
                 "per_size_gflops": {s: max(first[k]["per_size_gflops"][s], second[k]["per_size_gflops"][s]) for s in sizes},
                 "before_gflops": first[k]["gflops"], "after_gflops": second[k]["gflops"]} for k in dtypes}
    for r in rows:
        r["mfu"] = r["gflops"] / peaks[r["precision"]]["gflops"]
        r["best_mfu"] = r["best_gflops"] / peaks[r["precision"]]["gflops"]
    print(route_header())
    print(f"load average (1/5/15 min) at start: {machine['loadavg_1_5_15']}, at the end: {list(os.getloadavg())}")
    print("torch.mm peak: " + "; ".join(
        f"{k} {v['gflops']:.0f} GFLOP/s (" + ", ".join(f"{s}: {g:.0f}" for s, g in v["per_size_gflops"].items())
        + f"; before {v['before_gflops']:.0f}, after {v['after_gflops']:.0f})"
        for k, v in peaks.items()))
    table = [{"row": r["row"], "ms": f"{r['step_s'] * 1e3:.0f}", "sps": f"{r['steps_per_s']:.2f}",
              **({"gflop": f"{r['gflop_per_step']:.1f}", "gflops": f"{r['gflops']:.0f}", "mfu": f"{100 * r['mfu']:.1f}%",
                  "best": f"{100 * r['best_mfu']:.1f}%"} if r["gflop_per_step"] else {}),
              "vs_hf": f"{r['speedup_vs_hf']:.2f}x" if "speedup_vs_hf" in r else "",
              "ceiling": (f"{r['ceiling_vs_products']:.2f}x / {r['ceiling_vs_products_and_optimizer']:.2f}x"
                          if "ceiling_vs_products" in r else ""),
              "met": ("yes" if r["mfu"] >= TARGET_BF16_MFU else "NO")
              if r["model"] == "ours" and r["precision"] == "bf16" and r["fused_qkv"] is not False else ""}
             for r in rows]
    print(format_table(table, [("row", "step"), ("ms", "ms/step"), ("sps", "steps/s"), ("gflop", "GFLOP/step"),
                               ("gflops", "GFLOP/s"), ("mfu", "MFU"), ("best", "MFU best step"),
                               ("vs_hf", "speed vs HF"), ("ceiling", "HF step / products (/ + AdamW)"),
                               ("met", f">= {TARGET_BF16_MFU:.0%} bf16")]))
    print("ceiling: no step that runs these products (and the same clip + AdamW) can beat HF's by more than "
          "HF's step time over theirs (median of paired rounds)")
    if profile:
        print(f"profile of the attnlab bf16 step, N={max(seqs)} (self time per step):")
        print(format_table([{**e, "ms": f"{e['self_ms_per_step']:.1f}", "share": f"{100 * e['share']:.1f}%",
                             "calls": f"{e['calls_per_step']:.0f}"} for e in profile],
                           [("op", "op"), ("calls", "calls"), ("ms", "ms"), ("share", "share")]))
    payload = {"benchmark": "mfu", "quick": args.quick, "sizes": size, "batch": batch, "seqs": seqs, "rounds": rounds,
               "flops_formula": "6 * P_non_embedding * B * N + 12 * L * B * N^2 * C", "peaks": peaks, "rows": rows,
               "target_bf16_mfu": TARGET_BF16_MFU, "profile": profile, "machine": machine,
               "loadavg_end": machine_info(torch.device("cpu"))["loadavg_1_5_15"], "git": git_revision(__file__)}
    name = "mfu-quick.json" if args.quick else "mfu.json"
    print(f"wrote {write_json(args.out or RESULTS / name, payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
