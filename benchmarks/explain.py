"""What does explaining attention cost: capture memory and time, report size, browser render?

(a) capture at long N. A stack of --depth pre-norm TransformerBlocks (C = H*D, mlp_ratio 4)
    on random (B, N, C) tokens, in eval mode under no_grad. Rows:
      forward        the plain forward (backend "auto": fused SDPA), no hooks
      capture-1      ``capture(model, x, layers=-1)``: the last layer's exact (B, H, N, N) map
      capture-1-cls  the same layer, ``query_rows=0``: the class-token row only (B, H, 1, N)
      capture-all    ``capture(model, x)``: every layer's full map, what Hugging Face's
                     ``output_attentions=True`` keeps (HF #9387), through our fused path
      hf-eager       HF's eager path emulated: every module on the "math" backend (dense
                     scores and softmax materialised) and every layer's full map kept
    peak MiB: extra resident memory of one call, its output (the maps) included, measured
    in a fresh child process (``python benchmarks/explain.py --_measure-one <json>``): the
    child builds the model and input, runs the same row once at N=64 (lazy initialisation),
    resets the RSS high-water mark (/proc/self/clear_refs), runs the row once and reads
    VmHWM from /proc/self/status (see _common.py). ``hwm MiB`` is the child's whole VmHWM.
    On CUDA: torch.cuda.max_memory_allocated over a baseline, in process.
    maps MiB: the bytes the returned maps hold. time: median of --repeats calls after one
    warm-up within --budget seconds per row; vs fwd = row time / forward time.
(b) HTML report (``write_report``) size and write time: an image example with N = 16 tokens
    (a digit through a 2-layer, 4-head vit-tiny with mean pooling) and a token example with
    N = 1024 (2 TransformerBlocks, 4 heads, random words), 8-bit and 4-bit levels.
(c) browser render, when the ``playwright`` package and Chromium (/usr/bin/chromium, or
    ATTNLAB_CHROMIUM) exist: each report opened from file:// in a fresh page of headless
    Chromium (never a downloaded browser), time to first draw (in-page ms since navigation
    start until #readout is filled, which ``draw()`` does after painting both canvases;
    median over --render-repeats pages) and a 1280x900 viewport and a full-page screenshot
    (PNG bytes and pixel size).

--quick: N=512, depth 2, one repeat, no memory children: seconds, a smoke run for CI.
Results go to benchmarks/results/explain-<device>[-quick].json unless --out is given.
Other processes on a small machine inflate times: the machine block records the load.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

if __package__:
    from . import _common as common
else:  # run as a script: python benchmarks/explain.py
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _common as common

from attnlab.explain import ReportExample, capture, write_report
from attnlab.layers import TransformerBlock

MIB = 1024 * 1024
CAPTURE_ROWS = ("forward", "capture-1", "capture-1-cls", "capture-all", "hf-eager")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1280, "height": 900}


# --- (a) capture -------------------------------------------------------------------------

class Stack(nn.Module):
    """TransformerBlocks over given tokens. Shape: (B, N, C) -> (B, N, C)."""

    def __init__(self, dim: int, heads: int, depth: int):
        super().__init__()
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


def build_stack(cfg: dict[str, Any], device: torch.device, n: int | None = None) -> tuple[Stack, torch.Tensor]:
    torch.manual_seed(cfg["seed"])
    model = Stack(cfg["heads"] * cfg["head_dim"], cfg["heads"], cfg["depth"]).to(device).eval()
    x = torch.randn(cfg["batch"], n or cfg["n"], cfg["heads"] * cfg["head_dim"], device=device)  # (B, N, C)
    return model, x


def _set_backend(model: nn.Module, backend: str) -> None:
    for block in model.blocks:
        block.attn.backend = backend


def row_callable(row: str, model: Stack, x: torch.Tensor) -> Callable[[], Any]:
    """One call of a row; returns what the row keeps (the output, or the maps with it)."""
    _set_backend(model, "math" if row == "hf-eager" else "auto")
    if row == "forward":
        def run():
            with torch.no_grad():
                return model(x)
    elif row == "capture-1":
        def run():
            return capture(model, x, layers=-1)
    elif row == "capture-1-cls":
        def run():
            return capture(model, x, layers=-1, query_rows=0)
    elif row in ("capture-all", "hf-eager"):
        def run():
            return capture(model, x)
    else:
        raise ValueError(f"unknown row {row!r}")
    return run


def _maps_bytes(result: Any) -> int:
    return sum(m.numel() * m.element_size() for m in getattr(result, "maps", []))


def measure_memory(spec: dict[str, Any]) -> dict[str, Any]:
    """Child side of --_measure-one: the extra memory of one call of one row."""
    device = torch.device(spec["device"])
    cfg, row = spec["cfg"], spec["row"]
    model, tiny = build_stack(cfg, device, n=64)
    row_callable(row, model, tiny)()  # lazy one-time initialisation (thread pools, kernels) not charged
    del tiny
    model, x = build_stack(cfg, device)
    fn = row_callable(row, model, x)
    if device.type == "cuda":
        out = common.measure_cuda_peak(fn, device)
        out["hwm_mib"] = torch.cuda.max_memory_allocated(device) / MIB
    else:
        out = common.measure_cpu_peak(fn)
        out["hwm_mib"] = common.peak_rss_bytes() / MIB
    return out


def bench_capture(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    cfg = {"batch": args.batch, "heads": args.heads, "head_dim": args.head_dim, "depth": args.depth, "n": args.n,
           "seed": args.seed}
    model, x = build_stack(cfg, device)
    rows = []
    for row in args.rows:
        fn = row_callable(row, model, x)
        maps_bytes = _maps_bytes(fn()) if row != "forward" else 0  # also the untimed warm-up
        timing = common.time_call(lambda: (fn(), None)[1], device, repeats=args.repeats, budget_s=args.budget,
                                  warmup=0)
        rec = {"row": row, "n": args.n, "time_s": timing["median_s"], "times_s": timing["times_s"],
               "maps_mib": maps_bytes / MIB, "peak_mib": None, "hwm_mib": None}
        if args.memory:
            if device.type == "cuda":
                mem = measure_memory({"device": str(device), "cfg": cfg, "row": row})
            else:
                mem = common.run_child(__file__, {"device": "cpu", "cfg": cfg, "row": row})
            rec.update(peak_mib=mem["peak_mib"], hwm_mib=mem["hwm_mib"], peak_exact=mem["exact"])
        rows.append(rec)
        print(f"  {row}: {common.fmt_time(rec['time_s'])}"
              + (f", peak {rec['peak_mib']:.0f} MiB" if rec["peak_mib"] is not None else ""), flush=True)
    _set_backend(model, "auto")
    forward = next((r["time_s"] for r in rows if r["row"] == "forward"), None)
    for r in rows:
        r["ratio_vs_forward"] = r["time_s"] / forward if forward else None
    return rows


# --- (b) reports -------------------------------------------------------------------------

def image_example() -> ReportExample:
    """A digit through an untrained 2-layer, 4-head vit-tiny with mean pooling: N = 16."""
    from sklearn.datasets import load_digits

    from attnlab.explain.examples import image_example as make
    from attnlab.models import create_model

    torch.manual_seed(0)
    model = create_model("vit-tiny", depth=2, num_heads=4, pooling="mean").eval()
    digit = torch.tensor(load_digits().images[0] / 16.0, dtype=torch.float32)[None]  # (1, 8, 8)
    return make(model, digit, class_names=[str(c) for c in range(10)], label=0, title="digit 0")


def token_example(n: int = 1024, vocab: int = 64) -> ReportExample:
    """Random words through a 2-layer, 4-head TokenModel (q/k sharpened x4, like a trained model)."""
    from attnlab.explain.examples import random_words_example

    return random_words_example(n, vocab, title=f"random words (N={n})")


def bench_reports(args: argparse.Namespace, folder: Path) -> list[dict[str, Any]]:
    examples = {"image-n16": (16, image_example()), "tokens-n1024": (1024, token_example(1024))}
    rows = []
    for name, (n, ex) in examples.items():
        for bits in (8, 4):
            path = folder / f"{name}-{bits}bit.html"
            timing = common.time_call(lambda: write_report(path, [ex], title=f"explain benchmark: {name}", bits=bits),
                                      torch.device("cpu"), repeats=args.repeats, budget_s=args.budget)
            weights = sum(a.size for a in ex._arrays)
            rows.append({"report": name, "n": n, "bits": bits, "layers": len(ex._arrays), "weights": weights,
                         "bytes": path.stat().st_size, "write_s": timing["median_s"], "path": str(path)})
    return rows


# --- (c) browser -------------------------------------------------------------------------

def chromium_path() -> str | None:
    for candidate in (os.environ.get("ATTNLAB_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def bench_browser(args: argparse.Namespace, reports: list[dict[str, Any]], folder: Path) -> dict[str, Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return {"skipped": "the playwright package is not installed (pip install -e '.[test]')"}
    exe = chromium_path()
    if exe is None:
        return {"skipped": "Chromium not found (apt-get install chromium, or set ATTNLAB_CHROMIUM)"}
    from PIL import Image

    rows = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS, headless=True)
        version = browser.version
        try:
            for rep in reports:
                if rep["bits"] != 8:
                    continue
                draws, walls, errors = [], [], []
                for i in range(max(1, args.render_repeats)):
                    page = browser.new_page(viewport=VIEWPORT)
                    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                    page.on("pageerror", lambda e: errors.append(str(e)))
                    t0 = time.perf_counter()
                    page.goto(Path(rep["path"]).resolve().as_uri(), wait_until="load")
                    handle = page.wait_for_function(
                        "() => document.getElementById('readout').textContent.length > 0 && performance.now()",
                        polling="raf", timeout=60_000)
                    walls.append(time.perf_counter() - t0)
                    draws.append(float(handle.json_value()) / 1000)
                    if i == 0:
                        shots = {}
                        for kind, full in (("viewport", False), ("full_page", True)):
                            png = page.screenshot(full_page=full)
                            shot_path = folder / f"{rep['report']}-{kind}.png"
                            shot_path.write_bytes(png)
                            w, h = Image.open(io.BytesIO(png)).size
                            shots[kind] = {"bytes": len(png), "width": w, "height": h}
                    page.close()
                rows.append({"report": rep["report"], "n": rep["n"], "html_bytes": rep["bytes"],
                             "first_draw_s": statistics.median(draws), "first_draw_all_s": draws,
                             "goto_to_draw_s": statistics.median(walls), "screenshots": shots, "errors": errors})
        finally:
            browser.close()
    return {"chromium": exe, "version": version, "rows": rows}


# --- main --------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog="See the module docstring for the conventions.")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--n", type=int, default=None, help="tokens N of the capture rows; default 4096")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--depth", type=int, default=None, help="TransformerBlocks; default 4")
    p.add_argument("--rows", nargs="+", choices=CAPTURE_ROWS, default=list(CAPTURE_ROWS))
    p.add_argument("--repeats", type=int, default=None, help="timed calls per row (median); default 3")
    p.add_argument("--budget", type=float, default=None, help="seconds per row; default 30")
    p.add_argument("--render-repeats", type=int, default=None, help="fresh pages per report; default 3")
    p.add_argument("--memory", action=argparse.BooleanOptionalAction, default=None,
                   help="peak memory children; default on, off with --quick")
    p.add_argument("--no-browser", action="store_true")
    p.add_argument("--quick", action="store_true", help="N=512, depth 2, one repeat: seconds, for CI")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", type=Path, default=None, help="keep the reports and screenshots in this folder")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default under benchmarks/results/)")
    p.add_argument("--no-json", action="store_true", help="print only")
    p.add_argument("--_measure-one", dest="measure_one", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name, full, small in (("n", 4096, 512), ("depth", 4, 2), ("repeats", 3, 1), ("budget", 30.0, 2.0),
                              ("render_repeats", 3, 1), ("memory", True, False)):
        if getattr(args, name) is None:
            setattr(args, name, small if args.quick else full)
    return args


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    device = common.resolve_device(args.device)
    machine = common.machine_info(device)
    start = time.perf_counter()
    print(f"(a) capture, B={args.batch} H={args.heads} D={args.head_dim} depth={args.depth} N={args.n}", flush=True)
    capture_rows = bench_capture(args, device)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        print("(b) reports", flush=True)
        reports = bench_reports(args, folder)
        print("(c) browser", flush=True)
        browser = {"skipped": "--no-browser"} if args.no_browser else bench_browser(args, reports, folder)
    for rep in reports:
        rep.pop("path")
    return {
        **common.run_header("explain", args, machine, __file__),
        "conventions": {
            "time_s": "median wall time of timed calls after one warm-up",
            "ratio_vs_forward": "row time / plain forward time, same run",
            "peak_mib": "extra memory of one call, the returned maps included (CPU: VmHWM of a fresh child)",
            "hwm_mib": "the child's whole VmHWM (interpreter, torch, model, input included)",
            "maps_mib": "bytes of the returned maps",
            "first_draw_s": "in-page time from navigation start to the first complete draw",
        },
        "elapsed_s": time.perf_counter() - start,
        "capture": capture_rows,
        "reports": reports,
        "browser": browser,
    }


def _mib(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def print_tables(payload: dict[str, Any]) -> None:
    m = payload["machine"]
    print(f"\nexplain benchmark: device={m['device']} ({m['cuda_device'] if m['device'] == 'cuda' else m['cpu_model']}, "
          f"{m['torch_num_threads']} threads, load {m['loadavg_1_5_15'][0]:.1f} before), torch {m['torch']}")
    cfg = payload["config"]
    print(f"\n(a) capture: B={cfg['batch']} H={cfg['heads']} D={cfg['head_dim']} depth={cfg['depth']} N={cfg['n']}")
    rows = [{"row": r["row"], "time": common.fmt_time(r["time_s"]),
             "ratio": "-" if r["ratio_vs_forward"] is None else f"{r['ratio_vs_forward']:.2f}x",
             "maps": _mib(r["maps_mib"]), "peak": _mib(r["peak_mib"]), "hwm": _mib(r["hwm_mib"])} for r in payload["capture"]]
    print(common.format_table(rows, [("row", "row"), ("time", "time"), ("ratio", "vs fwd"), ("maps", "maps MiB"),
                                     ("peak", "peak MiB"), ("hwm", "hwm MiB")]))
    print("\n(b) HTML report")
    rows = [{"report": r["report"], "bits": r["bits"], "weights": r["weights"], "kb": f"{r['bytes'] / 1024:.0f}",
             "write": common.fmt_time(r["write_s"])} for r in payload["reports"]]
    print(common.format_table(rows, [("report", "report"), ("bits", "bits"), ("weights", "weights"),
                                     ("kb", "size KiB"), ("write", "write")]))
    browser = payload["browser"]
    print("\n(c) browser")
    if "skipped" in browser:
        print(f"skipped: {browser['skipped']}")
        return
    rows = []
    for r in browser["rows"]:
        vp, fp = r["screenshots"]["viewport"], r["screenshots"]["full_page"]
        rows.append({"report": r["report"], "draw": common.fmt_time(r["first_draw_s"]),
                     "goto": common.fmt_time(r["goto_to_draw_s"]),
                     "vp": f"{vp['bytes'] / 1024:.0f} KiB {vp['width']}x{vp['height']}",
                     "fp": f"{fp['bytes'] / 1024:.0f} KiB {fp['width']}x{fp['height']}",
                     "errors": len(r["errors"])})
    print(f"Chromium {browser['version']} ({browser['chromium']})")
    print(common.format_table(rows, [("report", "report"), ("draw", "first draw"), ("goto", "goto->draw"),
                                     ("vp", "viewport PNG"), ("fp", "full-page PNG"), ("errors", "errors")]))


def default_out(device: torch.device, quick: bool) -> Path:
    return Path(__file__).resolve().parent / "results" / f"explain-{device.type}{'-quick' if quick else ''}.json"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.measure_one is not None:
        print(json.dumps(measure_memory(json.loads(args.measure_one))))
        return 0
    payload = run_benchmark(args)
    print_tables(payload)
    print(f"total {payload['elapsed_s']:.1f} s")
    if not args.no_json:
        path = common.write_json(args.out or default_out(common.resolve_device(args.device), args.quick), payload)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
