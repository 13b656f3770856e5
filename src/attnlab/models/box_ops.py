"""Bounding-box operations for detection (as in DETR, Carion et al. 2020).

Boxes are either ``cxcywh`` (centre x, centre y, width, height) or ``xyxy`` (left, top,
right, bottom), in any consistent unit (DETR's models predict ``cxcywh`` normalised to
[0, 1]). Pairwise functions return an (N, M) matrix; ``*_aligned`` variants compare row i
with row i. Generalised IoU (Rezatofighi et al. 2019, "Generalized Intersection over Union")
is IoU minus the share of the smallest enclosing box that the union leaves empty: it lies in
[-1, 1] and still has a gradient when two boxes do not overlap.

Shape: boxes (..., 4); pairwise a (N, 4), b (M, 4) -> (N, M).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "box_cxcywh_to_xyxy",
    "box_xyxy_to_cxcywh",
    "box_area",
    "box_iou",
    "generalized_box_iou",
    "box_iou_aligned",
    "generalized_box_iou_aligned",
    "inverse_sigmoid",
]

# Guards 0/0 for degenerate (zero-area) boxes; far below any real box area in [0, 1] units.
_EPS = 1e-7


def box_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """Shape: (..., 4) -> (..., 4)."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


def box_xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """Shape: (..., 4) -> (..., 4)."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)


def box_area(boxes: Tensor) -> Tensor:
    """Area of xyxy boxes (negative extents count as zero). Shape: (..., 4) -> (...)."""
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def _inter_union(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Intersection and union of broadcastable xyxy boxes. Shape: (..., 4) x (..., 4) -> (...)."""
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter, box_area(a) + box_area(b) - inter


def _giou(a: Tensor, b: Tensor) -> Tensor:
    inter, union = _inter_union(a, b)
    iou = inter / union.clamp(min=_EPS)
    lt = torch.minimum(a[..., :2], b[..., :2])
    rb = torch.maximum(a[..., 2:], b[..., 2:])
    wh = (rb - lt).clamp(min=0)
    hull = wh[..., 0] * wh[..., 1]
    return iou - (hull - union) / hull.clamp(min=_EPS)


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise IoU of xyxy boxes. Shape: a (N, 4), b (M, 4) -> (N, M)."""
    inter, union = _inter_union(a[:, None, :], b[None, :, :])
    return inter / union.clamp(min=_EPS)


def generalized_box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise generalised IoU of xyxy boxes, in [-1, 1]. Shape: a (N, 4), b (M, 4) -> (N, M)."""
    return _giou(a[:, None, :], b[None, :, :])


def box_iou_aligned(a: Tensor, b: Tensor) -> Tensor:
    """IoU of box i of ``a`` with box i of ``b``. Shape: (..., 4) x (..., 4) -> (...)."""
    inter, union = _inter_union(a, b)
    return inter / union.clamp(min=_EPS)


def generalized_box_iou_aligned(a: Tensor, b: Tensor) -> Tensor:
    """Generalised IoU of box i of ``a`` with box i of ``b``. Shape: (..., 4) x (..., 4) -> (...)."""
    return _giou(a, b)


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    """logit(x), clamped so that boxes at the image border stay finite (Deformable DETR)."""
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))
