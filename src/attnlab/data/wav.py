"""Audio files to float samples at a chosen rate and length: the waveform half of the audio pipeline.

`read_wav` decodes with ``soundfile`` (libsndfile: WAV in any PCM or float encoding, FLAC,
OGG/Vorbis, MP3 and the rest libsndfile reads); `resample` is ``scipy.signal.resample_poly``
(polyphase FIR with a Kaiser-windowed low-pass, the method librosa's "polyphase" mode uses);
`fix_length` keeps the loudest window or zero-pads on both sides. `attnlab.data.audio` turns the
result into log-mel features.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import BinaryIO

import numpy as np

from attnlab.errors import DataError

__all__ = ["read_wav", "resample", "fix_length"]


def read_wav(source: str | Path | BinaryIO, *, name: str | None = None) -> tuple[np.ndarray, int]:
    """Decode an audio file (WAV, FLAC, OGG, ...) to float32 samples in [-1, 1] and its rate.

    ``source`` is a path or an open binary file (a shard member's bytes in a ``BytesIO``);
    ``name`` is what errors call it (default: the path). Shape: -> (channels, samples).
    Anything unreadable raises a DataError naming the file. A WAV whose data chunk is cut
    short yields the frames present (as libsndfile, sox and ffmpeg do).
    """
    import soundfile

    if isinstance(source, (str, Path)):
        path = Path(source)
        name = name or str(path)
        if not path.is_file():
            raise DataError(f"cannot read audio file {name}: no such file")
        source = str(path)
    name = name or "<audio bytes>"
    try:
        data, rate = soundfile.read(source, dtype="float64", always_2d=True)  # (L, channels)
    except soundfile.LibsndfileError as e:
        raise DataError(f"{name} is not a readable audio file: {e.error_string}") from None
    except (RuntimeError, ValueError, TypeError, OSError) as e:
        raise DataError(f"{name} is not a readable audio file: {e}") from None
    if not np.isfinite(data).all():
        raise DataError(f"{name} holds NaN or infinite samples")
    return np.ascontiguousarray(data.T, dtype=np.float32), int(rate)


def resample(signal: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Band-limited resampling by ``scipy.signal.resample_poly`` (the rates' ratio reduced by
    their gcd), in float64.

    Shape: (L,) -> (ceil(L * new_rate / orig_rate),) float32.
    """
    from scipy.signal import resample_poly

    x = np.asarray(signal, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"resample expects a 1-D signal, got shape {x.shape}")
    if orig_rate < 1 or new_rate < 1:
        raise ValueError(f"sample rates must be positive, got {orig_rate} and {new_rate}")
    if orig_rate == new_rate:
        return x.astype(np.float32)
    g = math.gcd(int(orig_rate), int(new_rate))
    return resample_poly(x, int(new_rate) // g, int(orig_rate) // g).astype(np.float32)


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
