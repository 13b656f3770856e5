"""WAV files to float samples at a chosen rate and length: the waveform half of the audio pipeline.

`read_wav` parses PCM (8/16/24/32-bit) or IEEE-float WAV with numpy (the standard library's
``wave`` rejects float WAVs); `resample` is windowed-sinc (Hann) band-limited interpolation
(Smith's resampling notes; torchaudio's ``sinc_interp_hann``); `fix_length` keeps the loudest
window or zero-pads on both sides. `attnlab.data.audio` turns the result into log-mel features.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from attnlab.errors import DataError

__all__ = ["read_wav", "resample", "fix_length"]


_PCM, _FLOAT, _EXTENSIBLE = 1, 3, 0xFFFE


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode a WAV file to float32 samples in [-1, 1] and its sample rate.

    Shape: -> (channels, samples). Anything unreadable raises a DataError naming the file.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read audio file {path}: {e.strerror or e}") from None
    if len(raw) < 12 or raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
        raise DataError(f"{path} is not a WAV file (no RIFF/WAVE header)")
    fmt, data, pos = None, None, 12
    while pos + 8 <= len(raw):
        chunk, size = raw[pos : pos + 4], int.from_bytes(raw[pos + 4 : pos + 8], "little")
        body = raw[pos + 8 : pos + 8 + size]
        if chunk == b"fmt ":
            fmt = body
        elif chunk == b"data":
            if len(body) < size:
                raise DataError(f"{path} is truncated: its data chunk declares {size} bytes, {len(body)} are present")
            data = body
        pos += 8 + size + (size & 1)  # RIFF chunks are word-aligned
    if fmt is None or len(fmt) < 16 or data is None:
        raise DataError(f"{path} is a corrupt WAV file (missing {'fmt' if fmt is None or len(fmt) < 16 else 'data'} chunk)")
    tag, channels, rate, _, block_align, bits = np.frombuffer(fmt[:16], dtype="<u2,<u2,<u4,<u4,<u2,<u2")[0].tolist()
    if tag == _EXTENSIBLE and len(fmt) >= 26:
        tag = int.from_bytes(fmt[24:26], "little")  # the sub-format GUID starts with the real tag
    width = bits // 8
    if channels < 1 or rate < 1 or bits % 8 or block_align != channels * width:
        raise DataError(f"{path} has an inconsistent WAV header ({channels} channels, {rate} Hz, {bits} bits, block {block_align})")
    frames = len(data) // block_align
    buf = data[: frames * block_align]
    if tag == _PCM and width in (1, 2, 4):
        dtype = {1: "u1", 2: "<i2", 4: "<i4"}[width]
        x = np.frombuffer(buf, dtype=dtype).astype(np.float64)
        x = (x - 128.0) / 128.0 if width == 1 else x / float(2 ** (bits - 1))  # 8-bit WAV is unsigned
    elif tag == _PCM and width == 3:
        b = np.frombuffer(buf, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        x = ((b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) << 8 >> 8).astype(np.float64) / float(2**23)  # sign-extend
    elif tag == _FLOAT and width in (4, 8):
        x = np.frombuffer(buf, dtype="<f4" if width == 4 else "<f8").astype(np.float64)
    else:
        raise DataError(f"{path}: unsupported WAV encoding (format tag {tag}, {bits} bits); use PCM or float")
    if not np.isfinite(x).all():
        raise DataError(f"{path} holds NaN or infinite samples")
    return x.reshape(frames, channels).T.astype(np.float32), int(rate)


def resample(signal: np.ndarray, orig_rate: int, new_rate: int, *, lowpass_width: int = 16, rolloff: float = 0.945) -> np.ndarray:
    """Band-limited resampling by windowed-sinc interpolation (Hann window), in float64.

    Output sample n sits at input position ``n * orig_rate / new_rate``; it is the sum of the
    input samples within ``lowpass_width`` sinc zero crossings, weighted by a low-pass sinc
    with cutoff ``rolloff * min(orig_rate, new_rate) / 2``. Work is chunked over outputs.

    Shape: (L,) -> (ceil(L * new_rate / orig_rate),) float32.
    """
    x = np.asarray(signal, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"resample expects a 1-D signal, got shape {x.shape}")
    if orig_rate == new_rate:
        return x.astype(np.float32)
    if orig_rate < 1 or new_rate < 1:
        raise ValueError(f"sample rates must be positive, got {orig_rate} and {new_rate}")
    n_in, n_out = len(x), int(math.ceil(len(x) * new_rate / orig_rate))
    cutoff = rolloff * min(orig_rate, new_rate) / 2 / orig_rate  # cycles per input sample
    half = lowpass_width / (2 * cutoff)  # kernel half-width in input samples
    taps = np.arange(-int(math.ceil(half)) + 1, int(math.ceil(half)) + 1)  # (T,)
    out = np.empty(n_out)
    for start in range(0, n_out, 4096):
        centre = np.arange(start, min(n_out, start + 4096)) * (orig_rate / new_rate)  # (n,)
        j = np.floor(centre).astype(np.int64)[:, None] + taps  # (n, T) input indices
        d = j - centre[:, None]
        kernel = 2 * cutoff * np.sinc(2 * cutoff * d) * np.where(np.abs(d) < half, 0.5 + 0.5 * np.cos(np.pi * d / half), 0.0)
        values = np.where((j >= 0) & (j < n_in), x[np.clip(j, 0, max(n_in - 1, 0))], 0.0)
        out[start : start + len(centre)] = (kernel * values).sum(axis=1)
    return out.astype(np.float32)


def fix_length(signal: np.ndarray, num_samples: int) -> np.ndarray:
    """Crop to the loudest ``num_samples`` window, or zero-pad on both sides (centred).

    Shape: (L,) -> (num_samples,).
    """
    n = len(signal)
    if n > num_samples:
        energy = np.concatenate([[0.0], np.cumsum(signal.astype(np.float64) ** 2)])
        start = int(np.argmax(energy[num_samples:] - energy[: n - num_samples + 1]))
        return signal[start : start + num_samples]
    left = (num_samples - n) // 2
    return np.pad(signal, (left, num_samples - n - left))
