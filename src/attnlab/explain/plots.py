"""Static attention plots (PNG): head grids, image overlays, alignments, token and series heat.

matplotlib is imported inside the functions only, and figures are built on the Agg canvas
directly (``matplotlib.figure.Figure``, never ``pyplot``), so importing attnlab stays light
and the caller's global matplotlib backend (e.g. a notebook's) is never switched.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["head_grid", "image_overlay", "alignment_plot", "token_highlight", "time_series_plot", "upsample_heat"]

_MAX_TICK_LABELS = 48  # beyond this many tokens, axis labels are unreadable anyway


def _figure(width: float, height: float, layout: str | None = "constrained"):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | Path | None, dpi: int = 120):
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png", dpi=dpi)
    return fig


def _array(x: Any, what: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    a = np.asarray(x)
    if a.dtype.kind not in "fiub":
        raise ValueError(f"{what} must be numeric, got dtype {a.dtype}")
    return a


def _image_hwc(image: Any) -> np.ndarray:
    """(C, H, W), (H, W, C) or (H, W) -> float (H, W, 3) or (H, W) in [0, 1]."""
    img = _array(image, "image")
    if img.ndim == 3 and img.shape[0] in (1, 3, 4) and img.shape[-1] not in (3, 4):
        img = np.moveaxis(img, 0, -1)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 3 and img.shape[-1] == 4:
        img = img[..., :3]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[-1] != 3):
        raise ValueError(f"image must be (C, H, W), (H, W, C) or (H, W), got shape {tuple(img.shape)}")
    img = img.astype(np.float64)
    if image is not None and np.asarray(image).dtype == np.uint8:
        return img / 255.0
    lo, hi = float(np.nanmin(img)), float(np.nanmax(img))
    if lo < 0.0 or hi > 1.0:  # e.g. a normalised tensor: stretch for display
        img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    return img


def upsample_heat(heat: Any, size: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of a (h, w) heat map to (H, W)."""
    h = torch.as_tensor(_array(heat, "heat"), dtype=torch.float32)
    if h.dim() != 2:
        raise ValueError(f"heat must be 2-D (h, w), got shape {tuple(h.shape)}")
    up = F.interpolate(h[None, None], size=tuple(size), mode="bilinear", align_corners=False)
    return up[0, 0].numpy()


def _label_axes(ax, rows: Sequence[str] | None, cols: Sequence[str] | None) -> None:
    if rows is not None and len(rows) <= _MAX_TICK_LABELS:
        ax.set_yticks(range(len(rows)), [str(t) for t in rows], fontsize=7)
    if cols is not None and len(cols) <= _MAX_TICK_LABELS:
        ax.set_xticks(range(len(cols)), [str(t) for t in cols], fontsize=7, rotation=90)


def head_grid(
    weights: Any,
    tokens: Sequence[str] | None = None,
    path: str | Path | None = None,
    *,
    key_tokens: Sequence[str] | None = None,
    title: str | None = None,
    cmap: str = "viridis",
    first_head: int = 0,
):
    """One heat map per head, in a grid. Shape: weights (H, N, M) (or (N, M) for one head).

    ``tokens`` label the N query rows (and the M key columns when M == N, unless
    ``key_tokens`` is given); ``first_head`` numbers the first map (one head picked from a layer).
    Returns the Figure; writes a PNG when ``path`` is given.
    """
    w = _array(weights, "weights")
    w = w[None] if w.ndim == 2 else w
    if w.ndim != 3:
        raise ValueError(f"head_grid: weights must be (H, N, M), got shape {tuple(w.shape)}")
    h, n, m = w.shape
    if tokens is not None and len(tokens) != n:
        raise ValueError(f"head_grid: {len(tokens)} tokens for N={n} query rows")
    cols_labels = key_tokens if key_tokens is not None else (tokens if m == n else None)
    cols = min(h, 4) if h <= 8 else math.ceil(math.sqrt(h))
    rows = math.ceil(h / cols)
    fig = _figure(3.2 * cols + 0.8, 3.2 * rows * n / max(m, 1) + 0.6)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).reshape(-1)
    image = None
    for i, ax in enumerate(axes):
        if i >= h:
            ax.set_visible(False)
            continue
        image = ax.imshow(w[i], cmap=cmap, vmin=0.0, vmax=max(float(w.max()), 1e-12), interpolation="nearest", aspect="auto")
        ax.set_title(f"head {first_head + i}", fontsize=9)
        ax.set_xticks([]), ax.set_yticks([])
        _label_axes(ax, tokens if i % cols == 0 else None, cols_labels if i >= h - cols else None)
    fig.colorbar(image, ax=list(axes[:h]), shrink=0.8, label="attention weight")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def image_overlay(image: Any, heat: Any, path: str | Path | None = None, alpha: float = 0.5, *, cmap: str = "jet", title: str | None = None):
    """The image with a (h, w) heat map (e.g. ``cls_to_patches``) upsampled and blended on top.

    Shape: image (C, H, W), (H, W, C) or (H, W); heat (h, w). Returns the Figure.
    """
    img = _image_hwc(image)
    up = upsample_heat(heat, img.shape[:2])
    lo, hi = float(up.min()), float(up.max())
    up = (up - lo) / (hi - lo) if hi > lo else np.zeros_like(up)
    aspect = img.shape[0] / img.shape[1]
    fig = _figure(8.0, 4.0 * aspect + 0.5)
    left, right = fig.subplots(1, 2)
    for ax in (left, right):
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
        ax.set_axis_off()
    right.imshow(up, cmap=cmap, alpha=alpha, vmin=0, vmax=1)
    left.set_title("input", fontsize=9)
    right.set_title(title or "attention", fontsize=9)
    return _save(fig, path)


def alignment_plot(weights: Any, source_tokens: Sequence[str], target_tokens: Sequence[str], path: str | Path | None = None, *, cmap: str = "Greys"):
    """Cross-attention alignment (Bahdanau et al. 2015 style): target rows, source columns.

    Shape: weights (N, M): N target (query) tokens, M source (key) tokens.
    """
    w = _array(weights, "weights")
    if w.ndim != 2:
        raise ValueError(f"alignment_plot: weights must be (N, M), got shape {tuple(w.shape)}")
    n, m = w.shape
    if len(target_tokens) != n or len(source_tokens) != m:
        raise ValueError(f"alignment_plot: weights {tuple(w.shape)} need {n} target and {m} source tokens, got {len(target_tokens)} and {len(source_tokens)}")
    cell = 0.32 if max(n, m) <= _MAX_TICK_LABELS else 6.0 / max(n, m)
    fig = _figure(max(3.0, m * cell + 1.8), max(2.5, n * cell + 1.5))
    ax = fig.subplots()
    image = ax.imshow(w, cmap=cmap, vmin=0.0, vmax=max(float(w.max()), 1e-12), interpolation="nearest", aspect="auto")
    ax.set_xticks([]), ax.set_yticks([])
    _label_axes(ax, target_tokens, source_tokens)
    ax.xaxis.tick_top()
    ax.xaxis.set_label_position("top")
    ax.set_xlabel("source"), ax.set_ylabel("target")
    fig.colorbar(image, ax=ax, shrink=0.8)
    return _save(fig, path)


def token_highlight(tokens: Sequence[str], scores: Any, path: str | Path | None = None, *, cmap: str = "Reds", width: float = 8.0, title: str | None = None):
    """Tokens as wrapped text, each on a background coloured by its score (scaled to [0, 1])."""
    s = _array(scores, "scores").astype(np.float64).reshape(-1)
    if len(tokens) != s.size:
        raise ValueError(f"token_highlight: {len(tokens)} tokens but {s.size} scores")
    from matplotlib import colormaps

    lo, hi = (float(s.min()), float(s.max())) if s.size else (0.0, 1.0)
    norm = (s - lo) / (hi - lo) if hi > lo else np.zeros_like(s)
    colours = colormaps[cmap](0.85 * norm)
    # Lay out on a character grid: width in em units, wrap when a token would overflow.
    line_chars = int(width * 11.5)  # 10 pt monospace: 0.6 em = 12 characters per inch
    lines, line, used = [], [], 0
    for i, tok in enumerate(tokens):
        text = str(tok).replace("\n", "\\n") or " "
        size = len(text) + 1
        if line and used + size > line_chars:
            lines.append(line)
            line, used = [], 0
        line.append((i, text, used))
        used += size
    if line:
        lines.append(line)
    line_h, title_h = 0.3, (0.4 if title else 0.0)
    height = max(0.6, line_h * len(lines) + 0.15) + title_h
    fig = _figure(width, height, layout=None)
    ax = fig.add_axes((0.01, 0.0, 0.98, 1 - title_h / height))
    ax.set_xlim(0, line_chars), ax.set_ylim(len(lines) + 0.2, -0.2)
    ax.set_axis_off()
    for row, items in enumerate(lines):
        for i, text, start in items:
            dark = norm[i] > 0.6
            ax.text(start + 0.1, row + 0.5, text, fontsize=10, family="monospace", va="center", ha="left",
                    color="white" if dark else "black",
                    bbox=dict(boxstyle="round,pad=0.15", facecolor=colours[i], edgecolor="none"))
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def time_series_plot(signal: Any, scores: Any, path: str | Path | None = None, *, cmap: str = "YlOrRd", title: str | None = None):
    """A 1-D signal with attention over time drawn as a coloured band behind it and below it.

    ``scores`` may be coarser than the signal (one per token/patch of time); it is stretched
    over the signal's length, each score covering an equal span.
    Shape: signal (T,), scores (S,).
    """
    x = _array(signal, "signal").astype(np.float64).reshape(-1)
    s = _array(scores, "scores").astype(np.float64).reshape(-1)
    if x.size == 0 or s.size == 0:
        raise ValueError("time_series_plot: signal and scores must be non-empty")
    lo, hi = float(s.min()), float(s.max())
    norm = (s - lo) / (hi - lo) if hi > lo else np.zeros_like(s)
    fig = _figure(9.0, 3.2)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(4, 1))
    ymin, ymax = float(x.min()), float(x.max())
    pad = 0.05 * (ymax - ymin or 1.0)
    extent = (0, x.size, ymin - pad, ymax + pad)
    top.imshow(norm[None], cmap=cmap, alpha=0.35, aspect="auto", extent=extent, vmin=0, vmax=1, interpolation="nearest")
    top.plot(np.arange(x.size) + 0.5, x, color="black", linewidth=0.8)
    top.set_xlim(0, x.size), top.set_ylim(extent[2], extent[3])
    top.set_ylabel("signal")
    bottom.imshow(norm[None], cmap=cmap, aspect="auto", extent=(0, x.size, 0, 1), vmin=0, vmax=1, interpolation="nearest")
    bottom.set_yticks([])
    bottom.set_xlabel("time step")
    if title:
        top.set_title(title, fontsize=10)
    return _save(fig, path)
