"""Fast decoding of plain 8-bit PNGs with libspng (through ``pyspng``), equal to Pillow's pixels.

Decoding is most of what a lazy image loader costs per item, and Pillow spends most of it
outside zlib (opening, probing plugins, copying). libspng decodes a 64x64 RGB PNG in about a
quarter of Pillow's CPU time (``benchmarks/data_scale.py``), which is what lets DataLoader
workers keep up with training from files instead of memory. The same trick is how NVIDIA's
StyleGAN2-ADA data loader reads its PNG folders.

Only the PNGs where both decoders provably give the same uint8 RGB take the fast path: bit
depth 8, colour type grey or RGB (grey replicated, exactly as Pillow's ``convert("RGB")``),
and no eXIf chunk (an orientation Pillow would apply). Everything else (alpha, palettes,
16-bit, 1/2/4-bit, other formats) returns None and goes through Pillow. Neither decoder applies
gamma or transparency here. Every chunk's CRC is checked first: libspng, as pyspng calls it,
decodes a file with a flipped IDAT byte without complaint where Pillow refuses it, and a
corrupt file must be an error, never silently wrong pixels.

``ATTNLAB_PNG_DECODER=pillow`` switches the fast path off; without ``pyspng`` it is off.
"""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np

__all__ = ["decode_png", "fast_png_available"]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOUR_TYPES = {0: False, 2: True}  # grey, RGB -> in colour? (libspng will not drop an alpha channel for us)


def fast_png_available() -> bool:
    """Whether `decode_png` can decode: pyspng importable and not switched off by the environment."""
    if os.environ.get("ATTNLAB_PNG_DECODER", "").lower() == "pillow":
        return False
    try:
        import pyspng  # noqa: F401
    except ImportError:
        return False
    return True


def decode_png(data: bytes) -> tuple[np.ndarray, bool] | None:
    """(uint8 RGB (H, W, 3), whether the PNG is stored in colour), or None when this PNG (or
    file) is not one the fast path takes; then the caller decodes it with Pillow.

    Raises ``ValueError`` (from libspng) on a corrupt or truncated PNG.
    """
    if len(data) < 33 or data[:8] != _SIGNATURE or data[12:16] != b"IHDR" or not fast_png_available():
        return None
    depth, colour_type = struct.unpack(">BB", data[24:26])
    if depth != 8 or colour_type not in _COLOUR_TYPES or b"eXIf" in _checked_chunks(data):
        return None
    import pyspng

    try:
        pixels = pyspng.load(data, "RGB" if _COLOUR_TYPES[colour_type] else "L")  # (H, W, 3) or (H, W) uint8
    except RuntimeError as e:  # libspng reports corrupt data as RuntimeError
        raise ValueError(str(e)) from None
    rgb = pixels if pixels.ndim == 3 else np.repeat(pixels[..., None], 3, axis=2)
    return rgb, _COLOUR_TYPES[colour_type]


def _checked_chunks(data: bytes) -> set[bytes]:
    """The chunk types of a PNG, after checking every chunk's CRC; ValueError naming the first
    bad or truncated chunk."""
    view, pos, types = memoryview(data), 8, set()
    while True:
        if pos + 12 > len(data):
            raise ValueError("truncated PNG: no IEND chunk")
        length, kind = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        if end > len(data):
            raise ValueError(f"truncated PNG: chunk {kind.decode('latin-1')} runs past the end of the file")
        if zlib.crc32(view[pos + 4:end - 4]) != struct.unpack_from(">I", data, end - 4)[0]:
            raise ValueError(f"CRC error in PNG chunk {kind.decode('latin-1')}")
        types.add(kind)
        if kind == b"IEND":
            return types
        pos = end
