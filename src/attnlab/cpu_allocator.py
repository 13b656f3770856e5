"""Reuse freed large CPU buffers instead of page-faulting fresh ones (glibc ``mallopt``).

glibc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh
``mmap`` and unmaps it on ``free``. A training step that allocates the same large tensors
every time (activations, attention gradients: the banded window kernel's key/value band
gradients are 3x the keys' size) therefore page-faults hundreds of MiB in anew each step,
and the kernel zeroes every 4 KiB page on the way. ``benchmarks/attention_targets.py`` and
``benchmarks/models.py`` take ``--cpu-allocator default|tuned`` to measure the difference
(benchmarks/README.md).

PyTorch's CPU performance guide gives the usual remedy: preload jemalloc or tcmalloc.
``tune_cpu_allocator`` does the same job for glibc, at run time and with no dependency:
``M_MMAP_MAX = 0`` (large blocks come from the heap too) and a high ``M_TRIM_THRESHOLD``
(freed blocks stay in the heap for the next step). The cost is that the process keeps its
peak heap until it exits instead of handing freed blocks back, as jemalloc and tcmalloc also
mostly do.

The ``attnlab`` command line calls it at start-up; library users may call it themselves.
It does nothing (and says why) off Linux/glibc, when jemalloc or tcmalloc is preloaded, or
when ``ATTNLAB_CPU_ALLOCATOR=default`` is set.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
from dataclasses import dataclass

__all__ = ["AllocatorState", "tune_cpu_allocator", "allocator_state", "ENV_VAR"]

logger = logging.getLogger(__name__)

ENV_VAR = "ATTNLAB_CPU_ALLOCATOR"  # "default" turns the tuning off
_M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
_M_MMAP_MAX = -4
_TRIM_THRESHOLD = 2**31 - 1  # mallopt takes a C int: keep up to 2 GiB of free heap top


@dataclass(frozen=True)
class AllocatorState:
    tuned: bool
    reason: str  # what was done, or why not


_state: AllocatorState | None = None


def _libc():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
        return libc
    except (OSError, AttributeError):
        return None


def tune_cpu_allocator() -> AllocatorState:
    """Make glibc keep and reuse freed large blocks (idempotent). Returns what was done."""
    global _state
    if _state is not None and _state.tuned:
        return _state
    preload = os.environ.get("LD_PRELOAD", "")
    if os.environ.get(ENV_VAR, "").strip().lower() in ("default", "0", "off", "false"):
        _state = AllocatorState(False, f"{ENV_VAR}={os.environ[ENV_VAR]}: glibc defaults kept")
    elif "jemalloc" in preload or "tcmalloc" in preload:
        _state = AllocatorState(False, f"LD_PRELOAD has its own allocator ({preload})")
    elif (libc := _libc()) is None:
        _state = AllocatorState(False, "not Linux with glibc: nothing to tune")
    elif libc.mallopt(_M_MMAP_MAX, 0) != 1 or libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) != 1:
        _state = AllocatorState(False, "glibc mallopt refused the settings")
    else:
        _state = AllocatorState(True, "glibc: M_MMAP_MAX=0, M_TRIM_THRESHOLD=2 GiB (freed large blocks are reused)")
    logger.debug("cpu allocator: %s", _state.reason)
    return _state


def allocator_state() -> AllocatorState:
    """What ``tune_cpu_allocator`` did in this process (not tuned if it was never called)."""
    return _state or AllocatorState(False, "tune_cpu_allocator() not called: glibc defaults")
