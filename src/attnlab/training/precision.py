"""Which autocast precision a run trains in, and whether the hardware does bf16 natively.

bf16 autocast pays on CUDA (Ampere and later) and on CPUs with AVX512-BF16 or AMX tiles.
Elsewhere a CPU emulates it: on an AVX2 AMD EPYC a bf16 (2048 x 2048) matrix product runs at
0.3 GFLOP/s against 114 for fp32, so a bf16 run there is hundreds of times slower. ``auto``
never picks bf16 on a CPU; an explicit ``bf16`` on a CPU without the instructions is kept
(the user asked for it) but warned about once.
"""

from __future__ import annotations

import logging

import torch

__all__ = ["native_bf16", "resolve_precision"]

log = logging.getLogger(__name__)


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes bf16 matrix products in hardware (not emulated)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)
    return False


def resolve_precision(requested: str, device: torch.device) -> str:
    """"auto" -> "bf16" on a CUDA device with bf16, else "fp32"; "fp32" / "bf16" as given."""
    if requested == "auto":
        return "bf16" if device.type == "cuda" and native_bf16(device) else "fp32"
    if requested == "bf16" and not native_bf16(device):
        log.warning(
            "precision bf16 on %s: this %s has no native bf16 (AVX512-BF16 / AMX on a CPU), so bf16 is emulated and "
            "matrix products can run ~100x slower than fp32; use --train.precision fp32 (or auto)",
            device, "CPU" if device.type == "cpu" else "device",
        )
    return requested
