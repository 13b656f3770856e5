"""Shared helpers for the benchmark scripts in ``benchmarks/``.

Each script answers one question, prints a fixed-width table and writes JSON; this module
holds what they share: device resolution, timing (median of repeats after a warm-up,
within a per-row time budget), peak memory (``torch.cuda.max_memory_allocated`` on CUDA;
on CPU the peak RSS of a fresh child process), table printing, JSON writing and the
machine description stored with every result, and the published recipes
(``configs/<task>/<data>.yaml``, read by ``load_recipe``).

Peak CPU memory: a child process (``python <script> --_measure-one <json>``) builds its
inputs, resets the kernel's resident-set high-water mark (``/proc/self/clear_refs``, Linux
>= 4.0), then runs one call; the reported number is the high-water mark after the call
(``VmHWM``; ``ru_maxrss`` where /proc is missing, see ``peak_rss_bytes`` for why not always)
minus the RSS just before it, i.e. the extra memory the call needed (output included). The child
runs with a fixed ``MALLOC_MMAP_THRESHOLD_`` so that large freed tensors go straight back to
the OS; otherwise glibc keeps them in its heap and a later call would reuse them unseen.
tracemalloc does not see torch's C++ allocations, hence RSS.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

__all__ = [
    "DTYPES",
    "resolve_device",
    "synchronize",
    "time_call",
    "time_rounds",
    "time_paired",
    "add_allocator_argument",
    "apply_allocator",
    "machine_info",
    "cpu_flags",
    "route_header",
    "routes_used",
    "git_revision",
    "reset_peak_rss",
    "current_rss_bytes",
    "peak_rss_bytes",
    "measure_cpu_peak",
    "measure_cuda_peak",
    "run_child",
    "format_table",
    "write_json",
    "fmt_time",
    "CONFIGS",
    "RECIPE_SECTIONS",
    "load_recipe",
    "recipe_overrides",
]

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "fp64": torch.float64}
MIB = 1024 * 1024
# --quick's model for the benchmarks that train the CLI's default models (faithfulness, shortcut): the plumbing only
QUICK_MODEL_ARGS = ["--model.dim", "32", "--model.depth", "2", "--model.num_heads", "2"]


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is an error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but torch.cuda.is_available() is False")
    return torch.device(name)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(
    fn: Callable[[], Any], device: torch.device, *, repeats: int, budget_s: float, warmup: int = 1
) -> dict[str, Any]:
    """Median wall time of ``fn`` (``time.perf_counter``, synchronised on CUDA).

    Spends about ``budget_s`` seconds, warm-up included: after ``warmup`` untimed calls it
    times up to ``repeats`` calls, at least one, and stops when the next call (guessed
    from the last) would overrun the budget. A warm-up call that alone takes longer than
    the budget is kept as the only sample (``cold: True``): at that size each call
    allocates and faults in fresh pages anyway, so it is hardly colder than a second call,
    and not repeating it is what keeps runs at large N feasible.
    Returns ``{"median_s", "min_s", "times_s", "cold", "result"}`` (``result``: last return).
    """
    times: list[float] = []
    result = None
    cold = False
    spent = 0.0
    for _ in range(warmup):
        synchronize(device)
        t0 = time.perf_counter()
        result = fn()
        synchronize(device)
        elapsed = time.perf_counter() - t0
        spent += elapsed
        if elapsed >= budget_s:
            times.append(elapsed)
            cold = True
            break
    while not cold and len(times) < max(1, repeats):
        if times and spent + times[-1] > budget_s:
            break
        synchronize(device)
        t0 = time.perf_counter()
        result = fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
        spent += times[-1]
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "times_s": times,
        "cold": cold,
        "result": result,
    }


def time_rounds(calls: Sequence[Callable[[], Any]], device: torch.device, rounds: int,
                budget_s: float = float("inf")) -> list[list[float]]:
    """Seconds per call, round-robin, so load drifts hit every call alike: times[r][i] is call i
    in round r (one untimed warm-up each). Stops early, after at least 3 rounds, once the next
    round would overrun ``budget_s``."""
    for fn in calls:
        fn()
    times: list[list[float]] = []
    spent = 0.0
    while len(times) < rounds:
        if len(times) >= 3 and spent + sum(times[-1]) > budget_s:
            break
        row = []
        for fn in calls:
            synchronize(device)
            t0 = time.perf_counter()
            fn()
            synchronize(device)
            row.append(time.perf_counter() - t0)
        times.append(row)
        spent += sum(row)
    return times


def time_paired(ours: Callable[[], Any], peer: Callable[[], Any], device: torch.device, rounds: int) -> tuple[float, float]:
    """Median seconds of each, timed alternately (``time_rounds``)."""
    times = time_rounds([ours, peer], device, rounds)
    return statistics.median(t[0] for t in times), statistics.median(t[1] for t in times)


@contextlib.contextmanager
def environ(name: str, value: str) -> Iterator[None]:
    """``os.environ[name] = value`` inside the block, the previous value (or none) restored after."""
    saved = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved


def add_allocator_argument(parser) -> None:
    """``--cpu-allocator tuned|default``: as the attnlab CLI runs, or glibc's defaults."""
    parser.add_argument("--cpu-allocator", choices=("tuned", "default"), default="tuned",
                        help="tuned (default, as the attnlab CLI runs): glibc reuses freed large blocks "
                             "(attnlab.cpu_allocator); default: glibc's own settings")


def apply_allocator(choice: str) -> None:
    """Call before any large allocation: ``tuned`` runs ``attnlab.cpu_allocator.tune_cpu_allocator``."""
    if choice == "tuned":
        from attnlab.cpu_allocator import tune_cpu_allocator

        tune_cpu_allocator()


def _allocator_reason() -> str:
    from attnlab.cpu_allocator import allocator_state

    return allocator_state().reason


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# The ISA extensions that change which kernel route wins (AVX-512 widths, bf16 dot products, AMX tiles).
_ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8")


def cpu_flags() -> list[str]:
    """Which of ``_ISA_FLAGS`` /proc/cpuinfo lists (empty off Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    present = set(line.split(":", 1)[1].split())
                    return [flag for flag in _ISA_FLAGS if flag in present]
    except OSError:
        pass
    return []


def route_header() -> str:
    """One line for a benchmark's output: the CPU, its ISA flags, threads, and how routes are chosen."""
    from attnlab.layers.linear import route_summary

    return (f"cpu: {_cpu_model()} (torch dispatch {torch.backends.cpu.get_cpu_capability()}; "
            f"{' '.join(cpu_flags()) or 'no flags read'}), {torch.get_num_threads()} threads, torch {torch.__version__}; "
            f"fp32 linear: {route_summary()}; allocator: {_allocator_reason()}")


def routes_used() -> str:
    """The routes the autotuner chose or read in this process (``attnlab.autotune``), one per key."""
    from attnlab import autotune

    made = autotune.choices()
    return "; ".join(f"{key.rsplit('|t', 1)[0]} -> {route}" for key, route in sorted(made.items())) or "none measured"


def machine_info(device: torch.device) -> dict[str, Any]:
    """What a reader needs to compare two result files."""
    from attnlab.training.precision import native_bf16

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        # AVX2 vs AVX512 and native bf16 change CPU timings several-fold (an emulated bf16 matmul ~400x).
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_flags": cpu_flags(),
        "cpu_native_bf16": native_bf16("cpu"),
        "torch_num_threads": torch.get_num_threads(),
        "device": device.type,
        "cuda_device": None,
        # Other processes on a small machine skew CPU timings; this lets a reader tell.
        "loadavg_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        # Whether freed large buffers are reused or page-faulted anew each call (attnlab.cpu_allocator).
        "cpu_allocator": _allocator_reason(),
    }
    from attnlab.layers.linear import route_summary

    info["fp32_linear_route"] = route_summary()  # the mode; routes_used() lists the choices a run made
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(device if device.type == "cuda" else 0)
        info["cuda_version"] = torch.version.cuda
    return info


def git_revision(path: str | Path) -> str | None:
    """``git describe --always --dirty`` of the checkout holding ``path``, if any."""
    try:
        proc = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=Path(path).resolve().parent,
            capture_output=True, text=True, timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() or None if proc.returncode == 0 else None


# --- peak memory -----------------------------------------------------------------------

def reset_peak_rss() -> bool:
    """Reset the RSS high-water mark to the current RSS; False where the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def current_rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """This process's RSS high-water mark in bytes: ``VmHWM``, else ``ru_maxrss``.

    ``ru_maxrss`` is not enough in a child: at exec, Linux folds the high-water mark of the
    address space being replaced (the parent's, as vfork/fork shares or copies it) into the
    process's ``maxrss``, so a child of a big parent reports the parent's peak and no reset
    clears it. ``VmHWM`` belongs to the child's own address space.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def measure_cpu_peak(fn: Callable[[], Any]) -> dict[str, Any]:
    """Extra RSS one call of ``fn`` needs, measured inside the current (child) process."""
    gc.collect()
    exact = reset_peak_rss()
    base = current_rss_bytes() if exact else peak_rss_bytes()
    result = fn()
    peak = peak_rss_bytes()
    del result
    gc.collect()
    # Without the reset, ru_maxrss may still hold an older, higher mark: the delta is then
    # only a lower bound, and flagged as such.
    return {"peak_mib": max(0, peak - base) / MIB, "exact": exact}


def measure_cuda_peak(fn: Callable[[], Any], device: torch.device) -> dict[str, Any]:
    """Extra CUDA memory one call of ``fn`` needs (max_memory_allocated over a baseline)."""
    gc.collect()
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    result = fn()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    del result
    return {"peak_mib": max(0, peak - base) / MIB, "exact": True}


def run_child(script: str | Path, spec: dict[str, Any], *, timeout_s: float = 1800) -> dict[str, Any]:
    """Run ``python <script> --_measure-one <json spec>`` and parse the JSON of its last line."""
    env = dict(os.environ)
    # A fixed mmap threshold stops glibc from raising it dynamically and keeping freed
    # tensor buffers in its heap, which would hide later allocations from the RSS.
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "131072")
    cmd = [sys.executable, str(script), "--_measure-one", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout_s)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"memory child failed (rc={proc.returncode}): " + " | ".join(tail))
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- output ----------------------------------------------------------------------------

def run_header(benchmark: str, args: Any, machine: dict[str, Any], script: str | Path) -> dict[str, Any]:
    """The fields every benchmark JSON starts with: name, time, CLI config, machine, git, load after."""
    return {
        "benchmark": benchmark,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "measure_one"},
        "machine": machine,
        "git": git_revision(script),
        "loadavg_after": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RECIPE_SECTIONS = ("model_config", "train", "data_options", "objective", "evaluation")


def load_recipe(task: str, data_name: str) -> dict[str, Any]:
    """The published recipe ``configs/<task>/<data_name>.yaml``, as ``attnlab train --config`` reads it.

    The YAML files are the one source of truth for the settings behind benchmark results; the
    benchmarks read them instead of keeping their own copies. Their ``data`` is relative to the
    repository root; a benchmark passes its own data path (its ``--data`` / ``--root``)."""
    from attnlab.config import load_yaml

    path = CONFIGS / task / f"{data_name}.yaml"
    recipe = load_yaml(path)
    if recipe.get("task") != task:
        raise ValueError(f"{path}: task is {recipe.get('task')!r}, expected {task!r}")
    return recipe


def recipe_overrides(recipe: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The recipe's config sections ({"model_config": ..., "train": ..., "data_options": ...}), copied,
    empty ones left out: the overrides of the task defaults that ``merge_sections`` combines."""
    return {section: dict(recipe[section]) for section in RECIPE_SECTIONS if recipe.get(section)}


def merge_sections(*parts: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Merge config overrides section by section ({"train": {...}, "model_config": {...}}); later wins."""
    out: dict[str, dict[str, Any]] = {}
    for part in parts:
        for section, values in part.items():
            out[section] = {**out.get(section, {}), **values}
    return out


def train_ensemble(train_member: Callable[[int, Path], dict[str, Any]], seed: int, k: int,
                   run_dir: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A deep ensemble for one benchmark seed: ``train_member(member_seed, member_dir)`` for the K seeds
    K*seed .. K*seed + K-1 (under ``run_dir/member{i}``), then ``attnlab.ensemble.evaluate_ensemble`` of
    the K run directories (probabilities averaged). Returns (the members' results, the ensemble's scores)."""
    from attnlab.ensemble import evaluate_ensemble

    dirs = [run_dir / f"member{i}" for i in range(k)]
    members = [train_member(k * seed + i, member) for i, member in enumerate(dirs)]
    return members, evaluate_ensemble(dirs)


def cross_validate(fit_fold: Callable[[tuple], tuple[int, int]], splits: dict[int, list[tuple[Path, int]]],
                   overrides: dict, *, jobs: int, tmp: Path) -> dict[str, Any]:
    """Score one config on cross-validation folds (``splits``: repeat -> [(fold folder, held-out count)]).

    ``fit_fold((folder, held, repeat, overrides, run_dir))`` trains on a fold (training seed = the
    repeat) and returns (correct, total) on its held-out part; it must be a module-level function
    when ``jobs`` > 1 (folds then train in that many processes). The score pools every held-out
    prediction, overall and per repeat."""
    from concurrent.futures import ProcessPoolExecutor

    jobs_list = [(folder, held, r, overrides, tmp / folder.name) for r, fold_list in splits.items() for folder, held in fold_list]
    start = time.perf_counter()
    if jobs > 1:
        with ProcessPoolExecutor(jobs) as workers:
            counts = list(workers.map(fit_fold, jobs_list))
    else:
        counts = [fit_fold(job) for job in jobs_list]
    per_repeat, first = [], 0
    for fold_list in splits.values():  # jobs_list holds each repeat's folds in a row
        part = counts[first : first + len(fold_list)]
        first += len(fold_list)
        per_repeat.append(100 * sum(c for c, _ in part) / sum(n for _, n in part))
    correct, total = sum(c for c, _ in counts), sum(n for _, n in counts)
    return {"accuracy_mean": 100 * correct / total, "correct": correct, "predictions": total, "per_repeat": per_repeat,
            "wall_time_s": time.perf_counter() - start}


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} us"
    if seconds < 1.0:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """Fixed-width plain-text table. ``columns``: (key, header); text left, numbers right."""
    cells = [[("" if r.get(k) is None else str(r.get(k))) for k, _ in columns] for r in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, (_, h) in enumerate(columns)]
    numeric = [
        all(_looks_numeric(c[i]) for c in cells if c[i] not in ("", "-", "skipped")) for i in range(len(columns))
    ]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)]
        return "  ".join(parts).rstrip()

    out = [line([h for _, h in columns]), "  ".join("-" * w for w in widths)]
    out += [line(c) for c in cells]
    return "\n".join(out)


def _looks_numeric(text: str) -> bool:
    head = text.split(" ")[0].rstrip("x%")
    try:
        float(head)
        return True
    except ValueError:
        return False


def write_json(path: str | Path, payload: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=2, default=str)
        f.write("\n")
    return path


def parse_overrides(pairs: Sequence[str], script: str) -> dict[str, Any]:
    """``FIELD=VALUE`` strings (``--model`` / ``--train`` flags) -> a dict, each value read as
    YAML (numbers, booleans, lists)."""
    import yaml

    out = {}
    for pair in pairs:
        field, sep, value = pair.partition("=")
        if not sep or not field:
            raise SystemExit(f"{script}: expected FIELD=VALUE, got {pair!r}")
        out[field] = yaml.safe_load(value)
    return out
