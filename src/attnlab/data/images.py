"""One image, file or array -> a normalised model input (C, H, W): the pixel pipeline that
training (`attnlab.data.vision`, `attnlab.data.detection`) and `prepare_image` share, so
prediction sees exactly what training saw.

Image files go through Pillow (plain 8-bit PNGs through libspng when installed, with the same
pixels: `attnlab.data.png`): decode (EXIF rotation applied), convert to RGB, resize bilinearly, reduce to luma for one-channel specs, divide by 255, then the `ImageSpec`'s
per-channel normalisation. Arrays are scaled by ``spec.pixel_max`` instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from attnlab.data.base import ImageSpec
from attnlab.errors import DataError

__all__ = ["PREDICT_SUFFIXES", "scale_pixels", "channel_stats", "fit_channel_stats", "luma", "open_image", "exif_turns", "is_color", "image_to_rgb", "load_rgb", "rgb_to_input", "prepare_image", "prepare_image_sized"]

_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})


# --- shared pixel pipeline (training and prepare_image both go through these) ---------------


def scale_pixels(arr: np.ndarray, pixel_max: float) -> Tensor:
    """Raw pixels -> float32 tensor in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)) / float(pixel_max)


def channel_stats(x: Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and (population) std of x (N, C, H, W), in float64."""
    flat = x.transpose(0, 1).reshape(x.shape[1], -1).double()  # (C, N*H*W)
    mean = flat.mean(dim=1).tolist()
    std = [s if s > 1e-12 else 1.0 for s in flat.std(dim=1, correction=0).tolist()]  # constant images
    return mean, std


def fit_channel_stats(stats: Any, channels: int) -> tuple[list[float], list[float]]:
    """A pretrained checkpoint's normalisation (``{"mean": [...], "std": [...]}``, pixels in [0, 1],
    one value per checkpoint channel; `attnlab.interop.hf.read_image_normalisation`) for data of
    ``channels`` channels, used instead of the training split's statistics.

    The same count: as they are. One value: every channel. Grey data under an RGB checkpoint:
    the channels' mean of each. The checkpoint's first convolution is summed over its channels
    (`attnlab.tasks.vision.adapt_input_conv`), so a grey image is seen as R = G = B: exactly so
    when the channels share their values (HF ViT's 0.5 / 0.5), approximately otherwise (ImageNet's
    0.485 / 0.456 / 0.406 -> 0.449). Anything else is a DataError naming the values.
    """
    where = f" ({stats['file']})" if isinstance(stats, dict) and stats.get("file") else ""
    try:
        mean, std = [float(v) for v in stats["mean"]], [float(v) for v in stats["std"]]
    except (KeyError, TypeError, ValueError):
        raise DataError(f"norm_stats{where} must be {{mean: [...], std: [...]}}, got {stats!r}") from None
    if not mean or len(mean) != len(std) or not all(np.isfinite(mean)) or not all(s > 0 and np.isfinite(s) for s in std):
        raise DataError(f"norm_stats{where}: need as many finite means as positive stds, got mean={mean} std={std}")
    if len(mean) == channels:
        return mean, std
    if len(mean) == 1:
        return mean * channels, std * channels
    if channels == 1:
        return [sum(mean) / len(mean)], [sum(std) / len(std)]
    raise DataError(f"norm_stats{where} has {len(mean)} channels' values (mean={mean}); the images have {channels}")


def luma(rgb: np.ndarray) -> np.ndarray:
    """uint8 (..., 3) -> uint8 (..., 1) with ITU-R 601-2 luma in PIL's integer form (its "L")."""
    r, g, b = (rgb[..., i].astype(np.uint32) for i in range(3))
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)[..., None]


# What predict reads from a folder of inputs: Pillow's common formats and NumPy arrays (prepare_image).
PREDICT_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".npy")


def open_image(path: Any, name: str | None = None):
    """Open and fully decode one image file (or binary file object, called ``name`` in messages);
    anything Pillow cannot read becomes a DataError."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            # Camera JPEGs store rotation in EXIF. In place: the copy the default makes costs about
            # as much as decoding a small PNG (benchmarks/data_scale.py).
            ImageOps.exif_transpose(im, in_place=True)
            return im
    except UnidentifiedImageError:  # Pillow's message names the object it was handed (a BytesIO), not the file
        raise DataError(f"cannot read image {name or path}: not an image PIL can read (no known image format)") from None
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, zlib errors, ...
        raise DataError(f"cannot read image {name or path}: {e}") from None


def exif_turns(path: Any) -> bool:
    """Whether an image file's EXIF orientation turns it by 90 or 270 degrees (tags 5-8): `open_image`
    then gives it width and height swapped. False for a file Pillow cannot read (callers use it for hints)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.getexif().get(0x0112, 1) in (5, 6, 7, 8)
    except Exception:
        return False


def is_color(im) -> bool:
    if im.mode in ("P", "PA"):  # a palette may hold only greys
        rgb = np.asarray(im.convert("RGB"))
        return bool((rgb[..., 0] != rgb[..., 1]).any() or (rgb[..., 1] != rgb[..., 2]).any())
    return im.mode not in _GRAY_MODES


def image_to_rgb(im, size: tuple[int, int], path: Any) -> np.ndarray:
    """PIL image -> uint8 (H, W, 3) at ``size`` = (H, W). Convert first, then resize bilinearly."""
    from PIL import Image

    try:
        if im.mode.startswith("I;16"):  # Pillow would clip 16-bit greys to 255: keep the top byte
            im = Image.fromarray((np.asarray(im).astype(np.uint16) >> 8).astype(np.uint8))
        rgb = im if im.mode == "RGB" else im.convert("RGB")  # drops alpha; an RGB image needs no copy
        if rgb.size != (size[1], size[0]):
            rgb = rgb.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    except Exception as e:
        raise DataError(f"cannot convert image {path} to RGB: {e}") from None
    return np.asarray(rgb, dtype=np.uint8)


def load_rgb(source: str | Path | bytes, size: tuple[int, int], name: str | None = None) -> tuple[np.ndarray, bool]:
    """An image file (path, or its bytes called ``name`` in messages) -> (uint8 (H, W, 3) at
    ``size`` = (H, W), whether it is stored in colour): `open_image` + `image_to_rgb` +
    `is_color`, with plain 8-bit PNGs decoded by libspng (`attnlab.data.png`, same pixels, a
    quarter of the CPU time). What the lazy and in-memory image loaders both read files with."""
    import io

    from PIL import Image

    from attnlab.data.png import decode_png

    where = name or str(source)
    if isinstance(source, bytes):
        data = source
    else:
        try:
            with open(source, "rb") as f:
                data = f.read()
        except OSError as e:
            raise DataError(f"cannot read image {where}: {e.strerror or e}") from None
    try:
        fast = decode_png(data)
    except ValueError as e:
        raise DataError(f"cannot read image {where}: {e}") from None
    if fast is None:
        im = open_image(io.BytesIO(data), name=where)
        return image_to_rgb(im, size, where), is_color(im)
    rgb, color = fast
    if rgb.shape[:2] != tuple(size):
        rgb = np.asarray(Image.fromarray(rgb).resize((size[1], size[0]), Image.Resampling.BILINEAR))
    return rgb, color


def rgb_to_input(rgb: np.ndarray, spec: ImageSpec) -> Tensor:
    """uint8 (..., H, W, 3) -> normalised float32 (..., C, H, W)."""
    pixels = rgb if spec.channels == 3 else luma(rgb)
    return spec.normalise(scale_pixels(np.moveaxis(pixels, -1, -3), 255.0))


# --- one new input, exactly as training saw it ---------------------------------------------


def prepare_image(source: Any, spec: ImageSpec) -> Tensor:
    """Turn one image into a model input the way training did. Shape: -> (C, H, W) float32.

    ``source``: an image file (png/jpg/jpeg/bmp, or anything Pillow reads), a ``.npy`` file, a
    PIL image, or a numpy array / tensor.

    - Image files and PIL images take the training path of the "images" task: convert to RGB,
      resize bilinearly to (H, W), reduce to luma when the spec has one channel, divide by 255.
    - Arrays may be (H, W), (C, H, W), (H, W, C) or flat (C*H*W,) / (H*W,), so sklearn's
      digits as (8, 8) or (64,) both work. Values are divided by ``spec.pixel_max`` (16 for
      digits, 255 for 8-bit images), except floating-point arrays already inside [0, 1] when
      pixel_max > 1, which count as scaled. Values outside [0, pixel_max] are an error (a 0..255
      image given to a digits model, say). Other sizes are resized bilinearly; 1 <-> 3 channels
      are converted by replication / luma.

    Then the spec's per-channel mean/std normalisation is applied.
    """
    return prepare_image_sized(source, spec)[0]


def prepare_image_sized(source: Any, spec: ImageSpec) -> tuple[Tensor, tuple[int, int]]:
    """`prepare_image`, and the (H, W) of the image as given (an array's axes read as for the
    input; a flat array: the spec's), from one read of a file: what maps boxes back to the
    input's pixels (detection's predict), without loading the file again for its size."""
    from PIL import Image

    name = "array"
    if isinstance(source, (str, Path)):
        name, source = str(source), _read_input(Path(source))
    if isinstance(source, Image.Image):
        size = (source.height, source.width)
        return rgb_to_input(image_to_rgb(source, (spec.height, spec.width), name if name != "array" else "<PIL image>"),
                            spec), size
    if isinstance(source, Tensor):
        source = source.detach().cpu().numpy()
    if isinstance(source, np.ndarray):
        return _prepare_array(source, spec, name)
    raise DataError(f"cannot prepare a {type(source).__name__} as an image; pass a path, PIL image or array")


def _read_input(path: Path) -> Any:
    """One input file, read once: a ``.npy`` as its array, anything else as a decoded PIL image."""
    if not path.exists():
        raise DataError(f"input file not found: {path}")
    if not path.is_file():
        raise DataError(f"{path} is a folder; expected an image or .npy file")
    if path.suffix.lower() == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except Exception as e:
            raise DataError(f"cannot read {path} as a .npy array: {e}") from None
    return open_image(path)


def _as_chw(a: np.ndarray, spec: ImageSpec, name: str) -> np.ndarray:
    C, H, W = spec.shape
    if a.ndim == 1:
        if a.size == C * H * W:
            return a.reshape(C, H, W)
        if a.size == H * W:
            return a.reshape(1, H, W)
        sizes = sorted({C * H * W, H * W})
        raise DataError(f"{name}: flat array of {a.size} values; expected {' or '.join(map(str, sizes))}")
    if a.ndim == 2:
        return a[None]
    if a.ndim == 3:
        if a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
            chw = a
        elif a.shape[-1] in (1, 3, 4):
            chw = np.moveaxis(a, -1, 0)
        elif a.shape[0] in (1, 3, 4):
            chw = a
        else:
            raise DataError(f"{name}: cannot tell the channel axis of shape {a.shape}; use (C, H, W) or (H, W, C)")
        return chw[:3]  # drop alpha
    raise DataError(f"{name}: expected a single image of 1-3 dimensions, got shape {a.shape}")


def _prepare_array(array: np.ndarray, spec: ImageSpec, name: str) -> tuple[Tensor, tuple[int, int]]:
    """An image array -> (model input (C, H, W), the array's own (H', W') as its axes are read)."""
    from PIL import Image

    a = np.asarray(array)
    if a.dtype == bool:
        a = a.astype(np.uint8)
    if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
        raise DataError(f"{name}: expected a numeric array, got dtype {a.dtype}")
    if a.size == 0 or not np.isfinite(a).all():
        raise DataError(f"{name}: array is empty or holds NaN/inf")
    a = _as_chw(a, spec, name)
    size = (a.shape[1], a.shape[2])  # (H', W') as given
    lo, hi = float(a.min()), float(a.max())
    prescaled = np.issubdtype(a.dtype, np.floating) and spec.pixel_max > 1 and lo >= 0 and hi <= 1
    pixel_max = 1.0 if prescaled else spec.pixel_max
    if lo < 0 or hi > pixel_max:
        raise DataError(f"{name}: values lie in [{lo:g}, {hi:g}], outside [0, {pixel_max:g}] for this model")
    x = scale_pixels(a, pixel_max)  # (C', H', W') in [0, 1]
    if x.shape[0] != spec.channels:
        if spec.channels == 3:
            x = x.expand(3, -1, -1) if x.shape[0] == 1 else x
        else:
            x = (x * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(0, keepdim=True)
    if x.shape[1:] != (spec.height, spec.width):
        planes = [
            np.asarray(Image.fromarray(p.numpy()).resize((spec.width, spec.height), Image.Resampling.BILINEAR))
            for p in x.contiguous()
        ]
        x = torch.from_numpy(np.stack(planes))
    return spec.normalise(x.contiguous()), size
