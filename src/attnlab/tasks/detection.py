"""Object detection task family (``--task detection``): DETR's set prediction objective.

Data: `attnlab.data.detection` (generated shapes by default, or ``--data`` a COCO file).
Model: ``detr-tiny`` (`attnlab.models.detr`). Objective (Carion et al. 2020, section 3.1):
each image's predictions are matched one-to-one to its objects by the Hungarian algorithm
(``scipy.optimize.linear_sum_assignment``) on the cost ``-w_class p(class) + w_l1 |b - b'|_1
- w_giou GIoU(b, b')``; matched queries learn their object's class and box (L1 + GIoU),
the rest learn "no object" (down-weighted by ``no_object_weight``). The same loss is added
for every decoder layer's predictions (DETR's auxiliary decoding losses).

Metrics: COCO mAP@[.5:.95] (``map``) and mAP@.5 (``map_50``) computed by pycocotools'
``COCOeval`` on boxes in the model's input pixels; each image contributes its top 100
(query, class) pairs scored by the class probability.
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.data.images import PREDICT_SUFFIXES
from attnlab.data.base import TaskData, call_with_options
from attnlab.data.detection import load_coco_task, load_shapes_task
from attnlab.errors import ConfigError
from attnlab.models.box_ops import box_cxcywh_to_xyxy, generalized_box_iou_aligned
from attnlab.models.detr import split_outputs
from attnlab.tasks.base import RunVocabulary, TaskSpec, run_targets

if TYPE_CHECKING:
    from attnlab.explain.detection import DetectionExample

log = logging.getLogger(__name__)

__all__ = ["SPECS", "detection_example", "LossWeights", "matching_cost", "hungarian_match", "DetectionObjective", "coco_map", "detections",
           "predict_detections", "DEFAULT_MODEL_CONFIG", "DEFAULT_TRAIN"]

# The benchmarked default (benchmarks/detection.py; results in benchmarks/README.md).
# DETR's own recipe (lr 1e-4, grad clip 0.1, weight decay 1e-4) with a higher lr: a small model from scratch.
DEFAULT_MODEL_CONFIG: dict[str, Any] = {}
DEFAULT_TRAIN: dict[str, Any] = {"epochs": 15, "batch_size": 32, "lr": 5e-4, "weight_decay": 1e-4, "grad_clip": 0.1,
                                 "warmup_epochs": 1.0, "keep": "last"}
MAX_DETECTIONS = 100  # per image, as COCO's maxDets


@dataclass
class LossWeights:
    """DETR's weights: class 1, L1 5, GIoU 2 (for both the matching cost and the loss), no-object 0.1."""

    class_weight: float = 1.0
    l1_weight: float = 5.0
    giou_weight: float = 2.0
    no_object_weight: float = 0.1

    def __post_init__(self) -> None:
        for name in ("class_weight", "l1_weight", "giou_weight", "no_object_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"LossWeights.{name} must be >= 0, got {getattr(self, name)}")


def _unpack(targets: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(B, T, 5) padded targets -> labels (B, T) (padding clamped to 0), boxes (B, T, 4), real (B, T) bool."""
    real = targets[..., 0] >= 0
    return targets[..., 0].long().clamp(min=0), targets[..., 1:].float(), real


@torch.no_grad()
def matching_cost(logits: Tensor, boxes: Tensor, targets: Tensor, weights: LossWeights = LossWeights()) -> Tensor:
    """DETR's matching cost for every (query, object) pair of each image.

    Shape: logits (B, Q, K + 1), boxes (B, Q, 4) cxcywh, targets (B, T, 5) -> (B, Q, T)
    (columns of padding rows are meaningless).
    """
    labels, tboxes, _ = _unpack(targets)
    prob = logits.float().softmax(-1)  # (B, Q, K + 1)
    B, Q, _ = prob.shape
    cost_class = -prob.gather(2, labels[:, None, :].expand(B, Q, labels.shape[1]))  # (B, Q, T)
    cost_l1 = torch.cdist(boxes.float(), tboxes, p=1)  # (B, Q, T)
    giou = generalized_box_iou_aligned(box_cxcywh_to_xyxy(boxes.float())[:, :, None], box_cxcywh_to_xyxy(tboxes)[:, None])
    return weights.class_weight * cost_class + weights.l1_weight * cost_l1 - weights.giou_weight * giou


_warned_queries: list[int] = []  # warn once per process


def hungarian_match(logits: Tensor, boxes: Tensor, targets: Tensor, weights: LossWeights = LossWeights()) -> list[tuple[Tensor, Tensor]]:
    """Per image, (query indices, object indices) of the minimum-cost one-to-one assignment.

    With more objects than queries, only ``Q`` objects get a query. Indices are on the CPU.
    """
    from scipy.optimize import linear_sum_assignment

    cost = matching_cost(logits, boxes, targets, weights).cpu().numpy()  # one transfer for the batch
    real = (targets[..., 0] >= 0).cpu().numpy()
    most = int(real.sum(axis=1).max(initial=0))
    if most > cost.shape[1] and not _warned_queries:
        _warned_queries.append(most)
        log.warning("an image holds %d objects but the model has %d queries: the extra objects are never "
                    "matched (raise --model.num_queries)", most, cost.shape[1])
    out = []
    for b in range(cost.shape[0]):
        cols = np.flatnonzero(real[b])
        rows, picked = linear_sum_assignment(cost[b][:, cols])
        out.append((torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols[picked], dtype=torch.long)))
    return out


def set_loss(logits: Tensor, boxes: Tensor, targets: Tensor, weights: LossWeights) -> dict[str, Tensor]:
    """One decoder layer's DETR loss, averaged as in DETR: cross-entropy over all queries
    (weighted mean), L1 and 1 - GIoU summed over matched pairs / number of objects.

    Shape: logits (B, Q, K + 1), boxes (B, Q, 4), targets (B, T, 5) -> scalars.
    """
    B, Q, K1 = logits.shape
    matches = hungarian_match(logits, boxes, targets, weights)
    dev = logits.device
    batch_idx = torch.cat([torch.full_like(q, i) for i, (q, _) in enumerate(matches)]).to(dev)
    query_idx = torch.cat([q for q, _ in matches]).to(dev)
    target_idx = torch.cat([t for _, t in matches]).to(dev)
    labels, tboxes, real = _unpack(targets)
    classes = torch.full((B, Q), K1 - 1, dtype=torch.long, device=dev)  # "no object" everywhere ...
    classes[batch_idx, query_idx] = labels[batch_idx, target_idx]  # ... but on matched queries
    class_w = torch.ones(K1, device=dev)
    class_w[-1] = weights.no_object_weight
    loss_class = F.cross_entropy(logits.float().transpose(1, 2), classes, weight=class_w)
    num = max(int(real.sum()), 1)
    src, tgt = boxes.float()[batch_idx, query_idx], tboxes[batch_idx, target_idx]  # (P, 4)
    loss_l1 = (src - tgt).abs().sum() / num
    loss_giou = (1 - generalized_box_iou_aligned(box_cxcywh_to_xyxy(src), box_cxcywh_to_xyxy(tgt))).sum() / num
    total = weights.class_weight * loss_class + weights.l1_weight * loss_l1 + weights.giou_weight * loss_giou
    return {"loss": total, "class": loss_class, "l1": loss_l1, "giou": loss_giou}


def detections(logits: Tensor, boxes: Tensor, max_detections: int = MAX_DETECTIONS) -> list[dict[str, Tensor]]:
    """Top (query, class) pairs per image by class probability ("no object" excluded).

    Shape: logits (B, Q, K + 1), boxes (B, Q, 4) -> per image {"scores" (D,), "labels" (D,),
    "boxes" (D, 4) cxcywh in [0, 1], "queries" (D,)}, D = min(max_detections, Q * K).
    """
    prob = logits.float().softmax(-1)[..., :-1]  # (B, Q, K)
    B, Q, K = prob.shape
    scores, flat = prob.reshape(B, Q * K).topk(min(max_detections, Q * K), dim=-1)  # (B, D)
    queries = torch.div(flat, K, rounding_mode="floor")
    return [{"scores": scores[b], "labels": flat[b] % K, "queries": queries[b], "boxes": boxes[b, queries[b]].float()}
            for b in range(B)]


def coco_map(ground_truth: list[tuple[Tensor, Tensor]], predicted: list[dict[str, Tensor]], num_classes: int,
             image_size: tuple[int, int]) -> dict[str, float]:
    """COCO mAP@[.5:.95] and mAP@.5 by pycocotools, boxes scaled to ``image_size`` (H, W) pixels.

    ground_truth: per image (labels (T,), boxes (T, 4) cxcywh in [0, 1]); predicted: `detections`.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    h, w = image_size
    scale = torch.tensor([w, h, w, h], dtype=torch.float64)

    def xywh(b: Tensor) -> np.ndarray:
        xyxy = box_cxcywh_to_xyxy(b.detach().cpu().double()) * scale
        return torch.cat([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], dim=1).numpy()

    gt: dict[str, Any] = {"images": [{"id": i + 1, "width": w, "height": h} for i in range(len(ground_truth))],
                          "categories": [{"id": k + 1} for k in range(num_classes)], "annotations": []}
    for i, (labels, boxes) in enumerate(ground_truth):
        for label, box in zip(labels.tolist(), xywh(boxes).tolist()):
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": i + 1, "category_id": int(label) + 1,
                                      "bbox": box, "area": box[2] * box[3], "iscrowd": 0})
    dets = [{"image_id": i + 1, "category_id": int(l) + 1, "bbox": box, "score": float(s)}
            for i, d in enumerate(predicted)
            for l, box, s in zip(d["labels"].tolist(), xywh(d["boxes"]).tolist(), d["scores"].tolist())]
    if not gt["annotations"] or not dets:
        return {"map": 0.0, "map_50": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and table
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(dets), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {"map": max(float(evaluator.stats[0]), 0.0), "map_50": max(float(evaluator.stats[1]), 0.0)}


class DetectionObjective:
    """DETR's Hungarian set loss over every decoder layer; COCO mAP on evaluation."""

    metric = "map_50"
    greater_is_better = True

    def __init__(self, num_classes: int, weights: LossWeights | None = None, *, aux_loss: bool = True):
        self.num_classes = num_classes
        self.weights = weights or LossWeights()
        self.aux_loss = aux_loss

    def _loss(self, out: Tensor, targets: Tensor) -> Tensor:
        layers = out if self.aux_loss else out[-1:]  # (L, B, Q, K + 5)
        total = out.new_zeros((), dtype=torch.float32)
        for layer in layers:
            logits, boxes = split_outputs(layer, self.num_classes)
            total = total + set_loss(logits, boxes, targets, self.weights)["loss"]
        return total

    def loss(self, model: nn.Module, batch: Any) -> tuple[Tensor, int]:
        x, targets = batch
        return self._loss(model(x, all_layers=True), targets), int(x.shape[0])

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: Iterable[Any]) -> dict[str, float]:
        ground_truth, predicted = [], []
        total, count, size = 0.0, 0, (1, 1)
        for x, targets in batches:
            out = model(x, all_layers=True)  # (L, B, Q, K + 5)
            total += float(self._loss(out, targets)) * x.shape[0]
            count += x.shape[0]
            size = tuple(x.shape[-2:])
            logits, boxes = split_outputs(out[-1], self.num_classes)
            predicted += [{k: v.cpu() for k, v in d.items()} for d in detections(logits, boxes)]
            labels, tboxes, real = _unpack(targets.cpu())
            ground_truth += [(labels[b][real[b]], tboxes[b][real[b]]) for b in range(x.shape[0])]
        metrics = coco_map(ground_truth, predicted, self.num_classes, size)
        metrics["loss"] = total / max(count, 1)
        return metrics


# --- predict / explain / report ----------------------------------------------------------------


def detection_fields(task_data) -> dict[str, Any]:
    c, h, w = task_data.input_shape
    return {"num_classes": task_data.num_classes, "image_size": (h, w), "in_channels": c}


def _objective(task_data, weights: LossWeights, evaluation: Any) -> DetectionObjective:
    return DetectionObjective(task_data.num_classes, weights)


def _load(record: dict[str, Any], item: str) -> tuple[Tensor, tuple[int, int]]:
    """An image file or .npy -> model input (C, H, W) and the original (width, height), from one
    read of the file (a file it cannot read is one line naming it)."""
    from attnlab.data.base import ImageSpec
    from attnlab.data.images import prepare_image_sized

    x, (h, w) = prepare_image_sized(item, ImageSpec.from_dict(record["spec"]))
    return x, (w, h)


def predict_detections(model: nn.Module, record: dict[str, Any], inputs: list[str], top_k: int,
                       threshold: float = 0.5) -> list[dict[str, Any]]:
    """One result per detected object: {"input", "class", "score", "label", "box"}.

    ``box`` is [x0, y0, x1, y1] in the input image's pixels (the CLI prints it after the
    class). Objects scoring >= ``threshold`` are listed (each query votes once, for its best
    class); ``top_k`` > 1 caps their number. An image without any gets one result with
    class None and a "note" saying so.
    """
    device = next(model.parameters()).device
    names = record["class_names"]
    num_classes = len(names)
    model.eval()
    results = []
    for item in inputs:
        x, (w, h) = _load(record, item)
        with torch.no_grad():
            logits, boxes = split_outputs(model(x[None].to(device)).float().cpu(), num_classes)
        prob = logits[0].softmax(-1)[:, :-1]  # (Q, K)
        score, label = prob.max(-1)
        order = [int(q) for q in score.argsort(descending=True) if score[q] >= threshold]
        if top_k > 1:
            order = order[:top_k]
        xyxy = box_cxcywh_to_xyxy(boxes[0]) * torch.tensor([w, h, w, h], dtype=torch.float32)  # (Q, 4)
        if not order:
            results.append({"input": item, "class": None, "score": float(score.max()), "label": None, "box": None,
                            "note": f"no objects (best score {float(score.max()):.2f} < {threshold})"})
        for q in order:
            box = [round(float(v), 1) for v in xyxy[q].clamp(min=0).minimum(torch.tensor([w, h, w, h], dtype=torch.float32))]
            name = names[int(label[q])]
            results.append({"input": item, "class": name, "score": float(score[q]), "label": name, "box": box, "query": q})
    return results


def explain_detection(model: nn.Module, record: dict[str, Any], item: str):
    from pathlib import Path

    from attnlab.data.base import ImageSpec
    x, _ = _load(record, item)
    return detection_example(model, x, class_names=record["class_names"], spec=ImageSpec.from_dict(record["spec"]),
                             title=Path(item).name)


def _report(model: nn.Module, task_data, count: int) -> list:
    examples = []
    for i in range(min(count, len(task_data.test))):
        x, y = task_data.test[i]
        examples.append(detection_example(model, x, class_names=task_data.class_names, spec=task_data.spec,
                                          target=y, title=f"test #{i}"))
    return examples


def detection_example(model: nn.Module, x: Tensor, *, class_names: Sequence[str], spec: Any = None,
                      target: Tensor | None = None, title: str = "", threshold: float = 0.5) -> DetectionExample:
    """One image (C, H, W) through a detector: detections (best class per query, score >=
    ``threshold``) and attention maps. ``target`` (T, 5) padded ``[label, cx, cy, w, h]``
    rows give the label text."""
    from attnlab.explain.capture import capture
    from attnlab.explain.detection import DetectionExample, describe_detections
    from attnlab.explain.examples import display_image

    device = next(model.parameters()).device
    model.eval()
    maps = capture(model, x[None].to(device), device="cpu")
    logits, boxes = split_outputs(maps.output.float().cpu()[0], len(class_names))  # (Q, K + 1), (Q, 4)
    h, w = x.shape[-2:]
    scale = torch.tensor([w, h, w, h], dtype=torch.float32)
    score, label = logits.softmax(-1)[:, :-1].max(-1)  # (Q,)
    xyxy = box_cxcywh_to_xyxy(boxes) * scale  # (Q, 4)
    dets = [{"query": int(q), "label": int(label[q]), "name": class_names[int(label[q])], "score": float(score[q]),
             "box": [float(v) for v in xyxy[q]]}
            for q in score.argsort(descending=True).tolist() if score[q] >= threshold]
    encoder = [(n, m[0].float().numpy()) for n, m in maps if ".cross_attn" not in n and not n.startswith("decoder.")]
    cross = [(n, m[0].float().numpy()) for n, m in maps if n.startswith("decoder.") and ".cross_attn" in n]
    gh, gw = getattr(model, "feature_grid", (0, 0))
    label_text = None
    if target is not None:
        real = target[target[:, 0] >= 0]
        gt = [{"name": class_names[int(r[0])], "score": 1.0, "box": (box_cxcywh_to_xyxy(r[1:]) * scale).tolist()} for r in real]
        label_text = "; ".join(f"{d['name']} [{', '.join(f'{v:.0f}' for v in d['box'])}]" for d in gt) or "no objects"
    layers = encoder + cross
    mean, std = (spec.mean, spec.std) if spec is not None else (None, None)
    image = display_image(x, mean, std)
    cells = [f"cell {r},{c}" for r in range(gh) for c in range(gw)]
    queries = [f"query {q}" for q in range(len(score))]
    # The explorer overlays a layer on the image when its keys are the feature cells; its
    # first layer fixes the row labels, so without an encoder layer the example is "tokens".
    as_image = bool(encoder) and gh > 0
    return DetectionExample(
        title=title or "image", kind="image" if as_image else "tokens", input=image if as_image else queries,
        maps=[m for _, m in layers], layer_names=[n for n, _ in layers], tokens=cells if as_image else queries,
        key_tokens=cells or None, prediction=describe_detections(dets), label=label_text, grid=(gh, gw) if as_image else None,
        detections=dets, cross_maps=[m for _, m in cross], class_names=list(class_names), image=image,
        feature_grid=(gh, gw) if gh else None,
    )


# How many shapes to generate and how: options of the shapes only, carried in a shapes run's config.
SHAPES_ONLY = ("train_size", "val_size", "test_size", "min_objects", "max_objects", "noise")


def load_detection(data: str | None, *, seed: int, **options: Any) -> TaskData:
    """Generated shapes without ``--data``; a COCO-format .json with it.

    A finished shapes run scoring a COCO file (``evaluate RUN --data x.json``; the run's
    ``class_names`` are carried) drops its shapes-only options (`SHAPES_ONLY`): they said how
    many shapes to draw, not how to read a file. The file's categories are then matched to the
    shapes' classes by name, as for a COCO run; given by hand they are still refused."""
    if data is None or str(data) == "":
        options.pop("class_names", None)  # a finished run's (RunVocabulary); the shapes' classes are fixed
        return call_with_options(load_shapes_task, "detection", options, seed=seed)
    if options.get("class_names") is not None:
        options = {k: v for k, v in options.items() if k not in SHAPES_ONLY}
    return call_with_options(load_coco_task, "detection", options, path=data, seed=seed)


SPECS = (
    TaskSpec(
        name="detection", load=load_detection, models=("detr-tiny",), input_suffixes=PREDICT_SUFFIXES,
        description="object detection: generated shapes (default) or --data a COCO-format .json",
        default_model_config=DEFAULT_MODEL_CONFIG, default_train=DEFAULT_TRAIN, objective_options=LossWeights,
        model_fields=detection_fields, objective=_objective, report_examples=_report,
        predict=predict_detections, explain_example=explain_detection,
        run_vocabulary=RunVocabulary(run_targets),  # another COCO file's categories labelled by the run's class names
    ),
)
