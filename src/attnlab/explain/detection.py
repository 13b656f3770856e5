"""Explain a DETR-style detector: its boxes, and where each object query looks.

A `DetectionExample` is a regular image ``ReportExample`` (so the HTML explorer shows it: the
encoder's self-attention layers, then each decoder layer's cross-attention, whose rows are
the object queries and whose keys are the feature-map cells) that also knows the detections
and can draw them (``draw_png``): the image with the predicted boxes, and one panel per
detected query with its cross-attention (mean over heads, or one head) upsampled onto the
image and its box drawn on top (Carion et al. 2020, figure 6). The detection task family
(``attnlab.tasks.detection.detection_example``) builds it from a model's outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from attnlab.explain.report import ReportExample

__all__ = ["DetectionExample", "draw_detections", "describe_detections"]

_COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c", "#fabebe", "#008080"]


@dataclass
class DetectionExample(ReportExample):
    """A ReportExample plus detections: ``detections`` rows {"query", "label", "score", "box"
    (xyxy, image pixels)}; ``cross_maps`` one (H, Q, M) array per decoder layer."""

    detections: list[dict[str, Any]] = field(default_factory=list)
    cross_maps: list[np.ndarray] = field(default_factory=list)
    class_names: Sequence[str] = ()
    image: Any = None  # (H, W, 3) in [0, 1]; ``input`` too, unless the model has no encoder layer
    feature_grid: tuple[int, int] | None = None

    def draw_png(self, path: str | Path, *, layer: int = -1, head: int | None = None) -> Path:
        if not self.cross_maps:
            raise ValueError("DetectionExample: no cross-attention maps to draw")
        if not -len(self.cross_maps) <= layer < len(self.cross_maps):
            from attnlab.errors import AttnlabError

            raise AttnlabError(f"--layer {layer} is out of range: the decoder has {len(self.cross_maps)} layers")
        maps = self.cross_maps[layer]  # (H, Q, M)
        if head is not None and not 0 <= head < maps.shape[0]:
            from attnlab.errors import AttnlabError

            raise AttnlabError(f"--head {head} is out of range: the model has {maps.shape[0]} heads")
        per_query = maps.mean(0) if head is None else maps[head]  # (Q, M)
        what = f"decoder layer {layer % len(self.cross_maps)}" + ("" if head is None else f", head {head}")
        draw_detections(self.image, self.detections, per_query, self.feature_grid, path, class_names=self.class_names, title=what)
        return Path(path)


def draw_detections(image: Any, dets: list[dict[str, Any]], attention: Any, grid: tuple[int, int] | None,
                    path: str | Path | None = None, *, class_names: Sequence[str] = (), title: str = "") -> Any:
    """The image with its boxes, then one cross-attention overlay per detection (its query's row).

    Shape: image (H, W, 3) or (H, W) in [0, 1]; attention (Q, M) with M = grid h * w. Returns the Figure.
    """
    from matplotlib.patches import Rectangle

    from attnlab.explain.plots import _figure, _image_hwc, _save, upsample_heat

    img = _image_hwc(image)
    att = np.asarray(attention, dtype=np.float64)
    gh, gw = grid if grid is not None else (1, att.shape[-1])
    panels = 1 + len(dets)
    cols = min(panels, 5)
    rows = -(-panels // cols)
    fig = _figure(2.6 * cols, 2.8 * rows + 0.3)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).reshape(-1)
    for ax in axes:
        ax.set_axis_off()

    def box(ax, d: dict[str, Any], colour: str, text: bool) -> None:
        x0, y0, x1, y1 = d["box"]
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=colour, linewidth=1.5))
        if text:
            ax.text(x0 - 0.5, y0 - 1, f"{d['name']} {d['score']:.2f}", color="white", fontsize=6, va="bottom",
                    bbox={"facecolor": colour, "alpha": 0.8, "pad": 1, "linewidth": 0})

    axes[0].imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
    axes[0].set_title(f"{len(dets)} detection(s)", fontsize=8)
    for i, d in enumerate(dets):
        colour = _COLOURS[i % len(_COLOURS)]
        box(axes[0], d, colour, text=True)
        ax = axes[i + 1]
        heat = upsample_heat(att[d["query"]].reshape(gh, gw), img.shape[:2])
        lo, hi = float(heat.min()), float(heat.max())
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
        ax.imshow((heat - lo) / (hi - lo) if hi > lo else np.zeros_like(heat), cmap="jet", alpha=0.5, vmin=0, vmax=1)
        box(ax, d, colour, text=False)
        ax.set_title(f"query {d['query']}: {d['name']} {d['score']:.2f}", fontsize=7)
    if title:
        fig.suptitle(f"cross-attention per query ({title})", fontsize=9)
    return _save(fig, path)


def describe_detections(dets: list[dict[str, Any]]) -> str:
    if not dets:
        return "no objects"
    return "; ".join(f"{d['name']} {d['score']:.2f} [{', '.join(f'{v:.0f}' for v in d['box'])}]" for d in dets)
