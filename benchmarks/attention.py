"""How fast, how hungry and how exact is ``attnlab.attention.attention`` against plain SDPA?

Cases (q, k, v all (B, H, N, D), N == M):
  dense    no mask
  causal   is_causal=True
  alibi    bias=positional.alibi_bias(H) (Press et al. 2022), a callable
  t5       bias=RelativePositionBias(H).bias_function() (Raffel et al. 2020): T5's learned,
           bucketed, bidirectional relative bias; with --backward its table gets a gradient
  window   window=W (default 256), is_causal=False
  padding  key padding, a (B, 1, 1, M) bool mask; the first ceil(B/2) sequences have
           their last 25% of keys masked
  gqa      grouped-query attention, k and v with G = H/4 heads (H=8: G=2)

Rows per case:
  auto, chunked, sdpa, math   ``attention(..., backend=...)`` (math is not run by default:
                              it costs what naive costs; add it with --rows)
  SDPA    plain ``F.scaled_dot_product_attention`` given the case densely: is_causal=True,
          a dense (1, H, N, M) float ALiBi or T5 bias (no gradient), a dense (N, M) bool window
          mask, the padding mask, enable_gqa=True. The dense mask/bias is built once outside the timed region and outside the
          memory delta: the reference's best case. Every ratio is against this row.
  naive   the seed article's style done right: scores = q @ k^T / sqrt(D) (+ bias),
          masked_fill(-inf), softmax, @ v, all in the input dtype. naive and math are skipped
          where the B*H*N*M float32 scores would exceed --max-naive-gb.

Columns:
  time     median wall time (time.perf_counter; synchronised on CUDA) of up to --repeats
           calls after one warm-up call, within --budget seconds per row (warm-up included;
           at least one timed call). A warm-up that alone exceeds the budget is kept as
           the only sample (n shows 1*).
  GFLOP/s  forward: 4*B*H*D*P, where P is the number of attended (query, key) pairs:
           N*M for dense, alibi and padding (data-dependent padding is not discounted),
           N(N+1)/2 for causal, and the in-band pairs for window. With --backward the time
           is forward+backward and the count is 3.5x the forward one (backward = 2.5x
           forward, the FlashAttention benchmarks' convention; recomputation not counted).
  vs SDPA  this row's time / the SDPA row's time in the same run (> 1 means slower).
  vs dense this row's time / the dense case's SDPA time (same dtype and N, same run): what a
           bias or mask costs over plain attention.
  target   the issue's target for the auto row (#7): dense, causal, padding and gqa
           >= 0.95x SDPA's speed (vs SDPA <= 1.053); alibi and t5 >= 0.8x dense SDPA's speed
           (vs dense <= 1.25); window at least 0.5*N/(2W+1) times faster than SDPA with the
           dense mask.
  max|err| max abs difference from the SDPA row's output (and, with --backward, the
           gradients of q, k, v), in float32: a fast-but-wrong backend shows up here.
  peak MiB extra memory one call needs, output included. CPU: peak RSS of a fresh child
           process (python benchmarks/attention.py --_measure-one <json>; see _common.py).
           CUDA: torch.cuda.max_memory_allocated over a baseline, in process.
           --memory auto (default) measures N <= --memory-max-n (2048) and never with
           --quick; on, everything; off, nothing.

auto rows reuse the timing, output and memory of the backend that auto picks (shown as
``auto>sdpa``): after a microsecond check it is the very same call. --no-reuse-auto times it.

Feasibility on a 2-core CPU: the chunked backend runs at ~15-30 GFLOP/s there, so one
N=8192 call takes 10-45 s; rows that slow run once (the budget rule above). On a quiet
2-core machine the full default run takes about 9-10 minutes, ~400 s of which is the floor
of one call per row; other processes competing for the cores stretch it a lot (23 minutes
at load average 4), and the chunked backend's many small ops suffer most. --quick: B=1,
H=2, D=32, N in (128, 256), one repeat, no memory children: a few seconds, for CI.

Results go to benchmarks/results/attention-<device>-<fp32|bf16|all>[-backward][-quick].json
unless --out is given.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

if __package__:
    from . import _common as common
    from ._attention_cases import (CASES, DEFAULT_ROWS, ROWS, max_abs_err, attended_pairs, make_case,
                                   naive_too_big, plan, row_callable)
else:  # run as a script: python benchmarks/attention.py
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _common as common
    from _attention_cases import (CASES, DEFAULT_ROWS, ROWS, max_abs_err, attended_pairs, make_case,
                                  naive_too_big, plan, row_callable)

RESULTS_DIR = Path(__file__).resolve().parent / "results"


# --- one (dtype, N, case) group --------------------------------------------------------


def run_group(case: str, cfg: dict[str, Any], dtype_name: str, device, rows, args) -> list[dict[str, Any]]:
    dtype = common.DTYPES[dtype_name]
    inputs, ours, ref, naive = make_case(case, cfg, dtype, device, args.backward)
    order, alias = plan(inputs, ours, rows, args.reuse_auto)
    flops = 4 * cfg["batch"] * cfg["heads"] * cfg["head_dim"] * attended_pairs(case, cfg["n"], cfg["n"], cfg["window"])
    flops *= 3.5 if args.backward else 1.0
    measured: dict[str, dict[str, Any]] = {}
    ref_out = None
    for row in order:
        rec: dict[str, Any] = {"dtype": dtype_name, "case": case, "n": cfg["n"], "row": row,
                               "backend": alias if row == "auto" else None, "time_s": None}
        too_big = naive_too_big(cfg) if row in ("naive", "math") else None
        if too_big is not None:
            rec["note"] = f"skipped: {too_big:.1f} GiB of fp32 scores > --max-naive-gb {cfg['max_naive_gb']}"
        else:
            try:
                timing = common.time_call(
                    row_callable(row, inputs, ours, ref, naive, args.backward), device,
                    repeats=cfg["repeats"], budget_s=args.budget,
                )
            except (RuntimeError, MemoryError) as exc:  # OOM and friends: report, carry on
                rec["note"] = f"error: {str(exc).splitlines()[0][:120]}"
            else:
                out = timing.pop("result")
                if row == "SDPA":
                    ref_out = out
                rec.update({k: timing[k] for k in ("min_s", "times_s", "cold")})
                rec["time_s"] = timing["median_s"]
                rec["max_abs_err"] = None if ref_out is None else 0.0 if row == "SDPA" else max_abs_err(out, ref_out)
                del out
        measured[row] = rec
    progress = ", ".join(f"{r} {common.fmt_time(measured[r]['time_s'])}" for r in order)
    print(f"  [{dtype_name} {case} N={cfg['n']}] {progress}", file=sys.stderr, flush=True)
    if "auto" in rows and "auto" not in measured:
        rec = dict(measured[alias], row="auto", backend=alias, reused_from=alias)
        measured["auto"] = rec
    ref_time = measured["SDPA"]["time_s"]
    records = []
    for row in ROWS:
        if row not in rows:
            continue
        rec = measured[row]
        t = rec["time_s"]
        rec["gflops"] = flops / t / 1e9 if t else None
        rec["ratio_vs_sdpa"] = t / ref_time if t and ref_time else None
        records.append(rec)
    return records


def attach_targets(records: list[dict[str, Any]], cfg: dict[str, Any]) -> None:
    """``ratio_vs_dense`` for every row and, on auto rows, the issue's target and whether it is met."""
    dense = next((r["time_s"] for r in records if r["case"] == "dense" and r["row"] == "SDPA"), None)
    window_speedup = 0.5 * cfg["n"] / (2 * cfg["window"] + 1)
    for rec in records:
        t = rec["time_s"]
        rec["ratio_vs_dense"] = t / dense if t and dense else None
        if rec["row"] != "auto" or not t:
            continue
        case = rec["case"]
        if case in ("alibi", "t5"):
            target, value, limit = ">= 0.8x dense SDPA", rec["ratio_vs_dense"], 1.25
        elif case == "window":
            target, value, limit = f">= {window_speedup:.2f}x faster than SDPA", rec["ratio_vs_sdpa"], 1 / window_speedup
        else:
            target, value, limit = ">= 0.95x SDPA", rec["ratio_vs_sdpa"], 1 / 0.95
        rec["target"] = target
        rec["target_met"] = None if value is None else bool(value <= limit)


# --- peak memory ------------------------------------------------------------------------

def measure_memory(spec: dict[str, Any]) -> dict[str, Any]:
    """Child side of --_measure-one: per case, per row, the extra memory of one call."""
    device = torch.device(spec["device"])
    cfg = spec["cfg"]
    out: dict[str, Any] = {}
    for case in spec["cases"]:
        # Tiny warm-up first so lazy one-time initialisation is not charged to the first row.
        tiny = dict(cfg, batch=1, n=64, max_naive_gb=float("inf"))
        inputs, ours, ref, naive = make_case(case, tiny, common.DTYPES[spec["dtype"]], device, spec["backward"])
        for row in spec["rows"][case]:
            row_callable(row, inputs, ours, ref, naive, spec["backward"])()
        del inputs, ours, ref, naive
        inputs, ours, ref, naive = make_case(case, cfg, common.DTYPES[spec["dtype"]], device, spec["backward"])
        out[case] = {}
        for row in spec["rows"][case]:
            fn = row_callable(row, inputs, ours, ref, naive, spec["backward"])
            for t in inputs:  # the previous row's gradients must not sit in the baseline
                t.grad = None
            if device.type == "cuda":
                out[case][row] = common.measure_cuda_peak(fn, device)
            else:
                out[case][row] = common.measure_cpu_peak(fn)
        del inputs, ours, ref, naive
    return out


def attach_memory(records, cfg, dtype_name, device, args) -> None:
    """Fill ``peak_mib`` for one (dtype, N) block: one child for all cases (rows are
    separated by resetting the RSS high-water mark), or one child per row where the
    kernel cannot reset it. On CUDA, in process."""
    todo: dict[str, list[str]] = {}
    for rec in records:
        if rec["time_s"] is not None and "reused_from" not in rec:
            todo.setdefault(rec["case"], []).append(rec["row"])
    if not todo:
        return
    spec = {"device": device.type, "dtype": dtype_name, "cfg": cfg, "backward": args.backward}
    try:
        if device.type == "cuda":
            results = measure_memory(dict(spec, cases=list(todo), rows=todo))
        elif common.reset_peak_rss():
            results = common.run_child(Path(__file__).resolve(), dict(spec, cases=list(todo), rows=todo))
        else:
            results = {}
            for case, rows in todo.items():
                for row in rows:
                    one = common.run_child(Path(__file__).resolve(), dict(spec, cases=[case], rows={case: [row]}))
                    results.setdefault(case, {}).update(one[case])
    except (RuntimeError, OSError, ValueError) as exc:
        print(f"  memory measurement failed: {exc}", file=sys.stderr)
        return
    by_row = {(r["case"], r["row"]): r for r in records}
    for case, rows in results.items():
        for row, mem in rows.items():
            by_row[(case, row)]["peak_mib"] = mem["peak_mib"]
            by_row[(case, row)]["peak_exact"] = mem["exact"]
    for rec in records:
        if "reused_from" in rec:
            src = by_row.get((rec["case"], rec["reused_from"]), {})
            rec["peak_mib"] = src.get("peak_mib")


# --- output -----------------------------------------------------------------------------

COLUMNS = [("dtype", "dtype"), ("case", "case"), ("n", "N"), ("label", "row"), ("time", "time"),
           ("samples", "n"), ("gflops_s", "GFLOP/s"), ("ratio", "vs SDPA"), ("dense", "vs dense"),
           ("err", "max|err|"), ("mem", "peak MiB"), ("target", "target")]


def table(records: list[dict[str, Any]]) -> str:
    rows: list[dict[str, Any]] = []
    last = None
    for r in records:
        if last is not None and (r["dtype"], r["case"], r["n"]) != last:
            rows.append({})
        last = (r["dtype"], r["case"], r["n"])
        skipped = r["time_s"] is None
        samples = len(r.get("times_s", [])) if not skipped else None
        rows.append({
            "dtype": r["dtype"], "case": r["case"], "n": r["n"],
            "label": f"auto>{r['backend']}" if r["row"] == "auto" and r["backend"] else r["row"],
            "time": r.get("note", "skipped")[:7] if skipped else common.fmt_time(r["time_s"]),
            "samples": None if skipped else f"{samples}{'*' if r.get('cold') else ''}",
            "gflops_s": None if r.get("gflops") is None else f"{r['gflops']:.1f}",
            "ratio": None if r.get("ratio_vs_sdpa") is None else f"{r['ratio_vs_sdpa']:.2f}x",
            "dense": None if r.get("ratio_vs_dense") is None else f"{r['ratio_vs_dense']:.2f}x",
            "target": None if r.get("target_met") is None else ("met" if r["target_met"] else "NOT met"),
            "err": None if r.get("max_abs_err") is None else f"{r['max_abs_err']:.1e}",
            "mem": None if r.get("peak_mib") is None else f"{r['peak_mib']:.{0 if r['peak_mib'] >= 100 else 1}f}",
        })
    return common.format_table(rows, COLUMNS)


def default_out(device: torch.device, dtypes: list[str], backward: bool, quick: bool) -> Path:
    name = f"attention-{device.type}-{dtypes[0] if len(dtypes) == 1 else 'all'}"
    return RESULTS_DIR / f"{name}{'-backward' if backward else ''}{'-quick' if quick else ''}.json"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog="See the module docstring for the conventions.")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--dtypes", nargs="+", choices=tuple(common.DTYPES), default=None, help="default: fp32 bf16")
    p.add_argument("--n", nargs="+", type=int, default=None, help="sequence lengths N (= M); default 512 .. 8192")
    p.add_argument("--batch", type=int, default=None, help="B, default 4")
    p.add_argument("--heads", type=int, default=None, help="H, default 8")
    p.add_argument("--head-dim", type=int, default=None, help="D, default 64")
    p.add_argument("--window", type=int, default=256, help="window of the window case")
    p.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    p.add_argument("--rows", nargs="+", choices=ROWS, default=list(DEFAULT_ROWS), help="SDPA is always run")
    p.add_argument("--repeats", type=int, default=None, help="timed calls per row (median), default 5")
    p.add_argument("--budget", type=float, default=None, help="seconds per row, warm-up included; default 2")
    p.add_argument("--backward", action="store_true", help="time forward+backward")
    p.add_argument("--max-naive-gb", type=float, default=4.0, help="skip naive/math above this many GiB of fp32 scores")
    p.add_argument("--memory", choices=("auto", "on", "off"), default=None, help="peak memory; default auto")
    p.add_argument("--memory-max-n", type=int, default=2048, help="largest N measured by --memory auto")
    p.add_argument("--reuse-auto", action=argparse.BooleanOptionalAction, default=True,
                   help="auto rows reuse the measurement of the backend auto picks")
    p.add_argument("--quick", action="store_true", help="tiny sizes for CI smoke tests")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="JSON path (default under benchmarks/results/)")
    p.add_argument("--no-json", action="store_true", help="print only")
    common.add_allocator_argument(p)
    p.add_argument("--_measure-one", dest="measure_one", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    quick = args.quick
    for name, full, small in (("batch", 4, 1), ("heads", 8, 2), ("head_dim", 64, 32), ("repeats", 5, 1),
                              ("budget", 2.0, 1.0), ("n", [512, 1024, 2048, 4096, 8192], [128, 256]),
                              ("dtypes", ["fp32", "bf16"], ["fp32", "bf16"]), ("memory", "auto", "off")):
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)
    if "SDPA" not in args.rows:
        args.rows.append("SDPA")
    return args


def _kernel_fingerprint() -> str:
    """Hash of attnlab/attention/*.py: results from different kernel versions stay apart."""
    import attnlab.attention as package

    digest = hashlib.sha256()
    for path in sorted(Path(package.__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    device = common.resolve_device(args.device)
    machine = common.machine_info(device)  # before the run: its load average is the others'
    start = time.perf_counter()
    records: list[dict[str, Any]] = []
    for dtype_name in args.dtypes:
        for n in args.n:
            cfg = {"batch": args.batch, "heads": args.heads, "head_dim": args.head_dim, "n": n,
                   "window": args.window, "seed": args.seed, "repeats": args.repeats,
                   "max_naive_gb": args.max_naive_gb}
            block = []
            for case in args.cases:
                block += run_group(case, cfg, dtype_name, device, args.rows, args)
            attach_targets(block, cfg)
            if args.memory == "on" or (args.memory == "auto" and n <= args.memory_max_n):
                attach_memory(block, cfg, dtype_name, device, args)
            records += block
    return {
        **common.run_header("attention", args, machine, __file__),
        "kernel_source_sha256": _kernel_fingerprint(),
        "conventions": {
            "time_s": "median of timed calls after one warm-up (see module docstring)",
            "gflops": "forward 4*B*H*D*attended_pairs; x3.5 for forward+backward",
            "ratio_vs_sdpa": "time / plain SDPA time, same case, same run",
            "ratio_vs_dense": "time / plain SDPA time of the dense case, same dtype and N, same run",
            "target_met": "auto rows: the issue's target (see module docstring)",
            "max_abs_err": "max |out - SDPA out| (and grads with --backward), float32",
            "peak_mib": "extra memory of one call, output included",
        },
        "elapsed_s": time.perf_counter() - start,
        "results": records,
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.measure_one is not None:
        print(json.dumps(measure_memory(json.loads(args.measure_one))))
        return 0
    common.apply_allocator(args.cpu_allocator)
    payload = run_benchmark(args)
    m = payload["machine"]
    print(f"attention benchmark: {'forward+backward' if args.backward else 'forward'}, B={args.batch} "
          f"H={args.heads} D={args.head_dim}, window={args.window}, device={m['device']} "
          f"({m['cuda_device'] if m['device'] == 'cuda' else m['cpu_model']}, {m['torch_num_threads']} threads), torch {m['torch']}")
    print(table(payload["results"]))
    print(f"n: timed samples (* = only the warm-up call, which alone took over the {args.budget:g} s budget); "
          f"vs SDPA: time / plain SDPA time; total {payload['elapsed_s']:.1f} s")
    if not args.no_json:
        path = common.write_json(args.out or default_out(common.resolve_device(args.device), args.dtypes,
                                                          args.backward, args.quick), payload)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
