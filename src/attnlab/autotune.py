"""Choose between equivalent routes by timing them on this machine, once per shape class.

Several kernels have two or more routes that compute the same result (oneDNN vs MKL for a
float32 product, ...) and which one is faster depends on the CPU: MKL's sgemm takes a slow
path on AMD, oneDNN's fixed cost per call loses on small products, and Intel's matrix units
change the balance again. A default tuned on one machine is wrong on another, so instead
of a vendor check the route is chosen by measurement, the way cuDNN's benchmark mode
(``torch.backends.cudnn.benchmark``: time every algorithm for a new input shape, keep the
fastest) and oneDNN's own dispatch (pick an implementation per primitive descriptor on the
CPU it runs on) do.

``choose(key, candidates, default=...)`` runs every candidate (zero-argument callables on
representative inputs) once as a warm-up, then alternately call for call, and returns the
name with the lowest median time (the default unless another is at least 3% faster: a near
tie is noise, and the plain route is then the safer pick). Alternating keeps a load change on a shared machine from
favouring whichever ran second. The cost is bounded by ``budget_s`` (50 ms by default):
repeats stop when it is spent, after at least ``min_repeats`` rounds, so a product too large
for the budget still gets two timed calls per candidate.

The choice is kept in memory and in a JSON file per machine (CPU model, torch version,
thread count) under ``$ATTNLAB_CACHE_DIR``, else ``$XDG_CACHE_HOME/attnlab``, else
``~/.cache/attnlab``; a later process reads it and times nothing. Writes merge with what is
on disk under a ``flock`` and land with ``os.replace``, so concurrent processes never leave
a half-written file; a file that does not parse is ignored and rewritten. The file is plain
JSON (nothing is unpickled). A stored choice timed before a candidate was added to its family is
timed again, with the new one.

A choice timed while other work took CPU time our threads needed (Linux: the machine's busy
time from ``/proc/stat`` minus this process's own, more than half a core beyond the cores torch's
threads leave free) is stored marked ``others_cores``: this process keeps it, and the next process
times the candidates again instead of trusting it, until a quiet measurement replaces it: timed
beside other busy processes, a route can look several times slower than it is (docs/performance.md).

Keys are ``"<route family>|<shape class>"`` where the shape class buckets sizes to powers of
two (``shape_class``), so a batch of 1,000 and one of 1,024 share one decision.

Overrides:
  ``ATTNLAB_AUTOTUNE=0``  time nothing, read and write no file: every choice is its
                          ``default`` (the plain PyTorch route).
  ``force({"linear.fwd": "onednn"})``  a context manager (tests, benchmarks): choices whose
                          family is named take that route; unknown names raise.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Collection, Iterator, Mapping

import torch

__all__ = [
    "choose",
    "lookup",
    "force",
    "enabled",
    "shape_class",
    "cache_dir",
    "cache_file",
    "machine_key",
    "cpu_model",
    "choices",
    "clear_memory_cache",
    "ENV_VAR",
    "CACHE_ENV_VAR",
]

logger = logging.getLogger(__name__)

ENV_VAR = "ATTNLAB_AUTOTUNE"  # "0" / "off": every choice is its default route
CACHE_ENV_VAR = "ATTNLAB_CACHE_DIR"  # where the choice files go (tests point it at a tmp dir)
_FORMAT = 1  # bump when the file layout or the meaning of a key changes

_memory: dict[str, str] = {}  # full key (machine + choice key) -> chosen name
_not_stored: set[str] = set()  # full keys the file was read for and lacked
_forced: dict[str, str] = {}  # route family -> forced name
_lock = threading.Lock()
_machine: dict[str, str] = {}
_warned: list[bool] = []  # a failed cache write was reported once


def enabled() -> bool:
    """False when ``ATTNLAB_AUTOTUNE`` is 0/off/false (plain PyTorch routes everywhere)."""
    return _parse_switch(os.environ.get(ENV_VAR, "1"))  # read per call: tests and users may change it


@functools.lru_cache(maxsize=16)
def _parse_switch(value: str) -> bool:
    return value.strip().lower() not in ("0", "off", "false", "no")


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else ``platform``)."""
    if "cpu" not in _machine:
        name = ""
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith("model name"):
                        name = line.split(":", 1)[1].strip()
                        break
        except OSError:
            pass
        _machine["cpu"] = name or platform.processor() or platform.machine() or "unknown"
    return _machine["cpu"]


def machine_key() -> dict[str, str]:
    """What a stored choice is valid for: CPU model, ISA level torch dispatches to, torch, threads."""
    return {"cpu": cpu_model(), "isa": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
            "threads": str(torch.get_num_threads())}


def cache_dir() -> Path:
    """``$ATTNLAB_CACHE_DIR``, else ``$XDG_CACHE_HOME/attnlab``, else ``~/.cache/attnlab``."""
    if os.environ.get(CACHE_ENV_VAR):
        return Path(os.environ[CACHE_ENV_VAR])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "attnlab"


def cache_file() -> Path:
    """This machine's choice file (one per CPU model, ISA, torch version and thread count)."""
    m = machine_key()
    digest = hashlib.sha1(json.dumps(m, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / f"autotune-v{_FORMAT}-{digest}.json"


@functools.lru_cache(maxsize=4096)  # called per kernel call on hot paths: a cache hit is ~10x cheaper
def shape_class(*sizes: int, dtype: torch.dtype | None = None, grad: bool | None = None) -> str:
    """``"1024x256x1024|float32|grad"``: sizes rounded up to powers of two, dtype, grad mode."""
    parts = ["x".join(str(1 << max(0, int(s) - 1).bit_length()) for s in sizes)]
    if dtype is not None:
        parts.append(str(dtype).removeprefix("torch."))
    if grad is not None:
        parts.append("grad" if grad else "nograd")
    return "|".join(parts)


@contextlib.contextmanager
def force(routes: Mapping[str, str]) -> Iterator[None]:
    """Inside the block, choices of the named route families take the named route (no timing).

    ``routes`` maps a family (the part of a key before the first ``|``, e.g. ``"linear.fwd"``)
    to a candidate name. Nesting works; the previous forcing is restored on exit.
    """
    with _lock:
        saved = dict(_forced)
        _forced.update(routes)
    try:
        yield
    finally:
        with _lock:
            _forced.clear()
            _forced.update(saved)


def choices() -> dict[str, str]:
    """The choices this process has made or read so far (full key -> route), for reports."""
    with _lock:
        return dict(_memory)


def clear_memory_cache() -> None:
    """Forget the in-process choices (the file stays); the next ``choose`` reads the file again."""
    with _lock:
        _memory.clear()
        _not_stored.clear()
        _machine.clear()


def _full_key(key: str) -> str:
    return f"{key}|t{torch.get_num_threads()}"


def choose(key: str, candidates: Mapping[str, Callable[[], object]], *, default: str, budget_s: float = 0.05,
           min_repeats: int = 2, max_repeats: int = 25, margin: float = 0.03,
           sync: Callable[[], None] | None = None) -> str:
    """Name of the fastest candidate for ``key``, measured on first use and cached.

    ``key`` is ``"<family>|<shape class>"``; ``candidates`` maps names to zero-argument
    callables that do the work on inputs of that shape class; ``default`` (a candidate name)
    is returned when tuning is off, and kept unless another candidate's median is at least
    ``margin`` (3%) lower: a closer call is within timing noise. ``sync`` waits for queued
    device work (e.g. ``torch.cuda.synchronize``) before each clock read.
    """
    name = lookup(key, candidates, default=default)
    if name is not None:
        return name
    full = _full_key(key)
    before, t0 = _cpu_seconds(), time.perf_counter()
    name, times = _measure(candidates, default, budget_s, min_repeats, max_repeats, sync, margin)
    others = _others_cores(before, _cpu_seconds(), time.perf_counter() - t0)
    with _lock:
        _memory[full] = name
    logger.debug("autotune %s -> %s (median ms %s, other work %s cores)", full, name, times, others)
    entry: dict = {"choice": name, "median_ms": times}
    if others is not None:
        entry["others_cores"] = round(others, 2)
    _write_entry(full, entry)
    return name


def _cpu_seconds() -> tuple[float, float] | None:
    """(busy CPU seconds of the whole machine, CPU seconds of this process) now; None without /proc/stat."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
        hz = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, AttributeError):
        return None
    return (sum(ticks) - ticks[3] - ticks[4]) / hz, time.process_time()


def _others_cores(before: tuple[float, float] | None, after: tuple[float, float] | None, wall: float) -> float | None:
    """Cores' worth of CPU time other processes (and other VMs: steal) took between two readings."""
    if before is None or after is None or wall <= 0:
        return None
    return max(0.0, (after[0] - before[0]) - (after[1] - before[1])) / wall


def _contended(entry: dict) -> bool:
    """Whether a stored choice was timed while other work took cores torch's threads needed."""
    others = entry.get("others_cores")
    if not isinstance(others, (int, float)):
        return False
    free = (os.cpu_count() or 1) - torch.get_num_threads()
    return others > max(0, free) + 0.5


def _new_candidates(entry: dict, names: Collection[str]) -> bool:
    """Whether a stored choice was timed without some of today's candidates (a route added since)."""
    timed = entry.get("median_ms")
    return isinstance(timed, dict) and bool(set(names) - set(timed))


def lookup(key: str, names: Collection[str], *, default: str) -> str | None:
    """The route ``choose`` would take without timing anything: forced, default when tuning is
    off, remembered or stored; None when it is still to be measured.

    Lets a caller skip the machinery a measurement would need (e.g. a custom autograd
    function whose backward makes the choice) once the answer is known.
    """
    if default not in names:
        raise ValueError(f"default route {default!r} is not a candidate of {key!r} ({sorted(names)})")
    family = key.split("|", 1)[0]
    if family in _forced:
        name = _forced[family]
        if name not in names:
            raise ValueError(f"forced route {name!r} is not a candidate of {key!r} ({sorted(names)})")
        return name
    if len(names) == 1 or not enabled():
        return default
    full = _full_key(key)
    name = _memory.get(full)
    if name in names:
        return name
    if full in _not_stored:
        return None  # the file was read once for it: don't read it again on every call
    stored = _read_file().get(full)
    if isinstance(stored, dict) and stored.get("choice") in names and not _contended(stored) and not _new_candidates(stored, names):
        with _lock:
            _memory[full] = stored["choice"]
        return stored["choice"]
    with _lock:
        _not_stored.add(full)
    return None


def _measure(candidates: Mapping[str, Callable[[], object]], default: str, budget_s: float, min_repeats: int,
             max_repeats: int, sync: Callable[[], None] | None, margin: float = 0.0) -> tuple[str, dict[str, float]]:
    """Warm-up, then alternating timed rounds within ``budget_s``; the lowest median wins.

    A candidate that raises in the warm-up is dropped (it cannot run this input); if the
    default raises, its error propagates."""
    start = time.perf_counter()
    names = []
    for n, fn in candidates.items():  # warm-up: first-call costs (allocation, oneDNN primitive creation) are not the route's
        try:
            fn()
            names.append(n)
        except Exception as exc:  # noqa: BLE001  a route that cannot run this input is no candidate
            if n == default:
                raise  # the plain route fails too: the caller's error, not the tuner's
            logger.debug("autotune: candidate %s failed (%s: %s); dropped", n, type(exc).__name__, exc)
    samples: dict[str, list[float]] = {n: [] for n in names}
    rounds = 0
    while rounds < max_repeats and (rounds < min_repeats or time.perf_counter() - start < budget_s):
        # Alternate the order each round so neither candidate always runs in the other's wake.
        for n in names if rounds % 2 == 0 else reversed(names):
            if sync is not None:
                sync()
            t0 = time.perf_counter()
            candidates[n]()
            if sync is not None:
                sync()
            samples[n].append(time.perf_counter() - t0)
        rounds += 1
    medians = {n: statistics.median(s) * 1e3 for n, s in samples.items()}
    best = min(names, key=lambda n: medians[n])
    if best != default and default in medians and medians[best] > medians[default] * (1 - margin):
        best = default  # a near tie is noise: keep the plain route rather than a coin toss
    return best, {n: round(t, 4) for n, t in medians.items()}


def _read_file() -> dict:
    """The choices stored for this machine; {} when missing, unreadable, corrupt or for another machine."""
    path = cache_file()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        logger.debug("autotune: ignoring unreadable %s (%s)", path, exc)
        return {}
    if not isinstance(data, dict) or data.get("format") != _FORMAT or data.get("machine") != machine_key():
        return {}
    choices = data.get("choices")
    return choices if isinstance(choices, dict) else {}


@contextlib.contextmanager
def _file_lock(directory: Path) -> Iterator[None]:
    """Serialise read-merge-write between processes (fcntl.flock; a no-op where it is missing)."""
    try:
        import fcntl
    except ImportError:  # Windows: os.replace still keeps the file whole; a race may drop one entry
        yield
        return
    with open(directory / ".autotune.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_entry(full_key: str, entry: dict) -> None:
    """Merge one choice into the file atomically; a failure to write only costs a re-measure later."""
    path = cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(path.parent):
            choices = _read_file()
            choices[full_key] = entry
            payload = {"format": _FORMAT, "machine": machine_key(), "choices": choices}
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".autotune-", suffix=".tmp")
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump(payload, f, indent=1, sort_keys=True)
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
    except OSError as exc:  # read-only home, full disk: warn once, keep choosing in memory
        log = logger.debug if _warned else logger.warning
        _warned.append(True)
        log("autotune: could not write %s (%s); choices hold for this process only", path, exc)
