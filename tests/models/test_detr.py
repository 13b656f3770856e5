"""DETR pieces: box ops against plain float64 math, Hungarian matching, the set loss, the model."""

from __future__ import annotations

import itertools

import pytest
import torch

from attnlab.errors import ConfigError
from attnlab.models import create_model
from attnlab.models.box_ops import (
    box_area,
    box_cxcywh_to_xyxy,
    box_iou,
    box_iou_aligned,
    box_xyxy_to_cxcywh,
    generalized_box_iou,
    generalized_box_iou_aligned,
    inverse_sigmoid,
)
from attnlab.tasks.detection import DetectionObjective, LossWeights, hungarian_match, matching_cost


def _random_xyxy(n: int, gen: torch.Generator) -> torch.Tensor:
    lo = torch.rand(n, 2, generator=gen, dtype=torch.float64)
    size = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 0.5 + 1e-3
    return torch.cat([lo, lo + size], dim=1)


def _ref_iou_giou(a, b):
    """Plain Python math on one pair of xyxy boxes."""
    ax0, ay0, ax1, ay1 = a
    bx0, by0, bx1, by1 = b
    iw = max(0.0, min(ax1, bx1) - max(ax0, bx0))
    ih = max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    hull = (max(ax1, bx1) - min(ax0, bx0)) * (max(ay1, by1) - min(ay0, by0))
    iou = inter / union
    return iou, iou - (hull - union) / hull


def test_box_conversions_round_trip_and_match_plain_math():
    gen = torch.Generator().manual_seed(0)
    xyxy = _random_xyxy(50, gen)
    cxcywh = box_xyxy_to_cxcywh(xyxy)
    for row, (x0, y0, x1, y1) in zip(cxcywh.tolist(), xyxy.tolist()):
        assert row == pytest.approx([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], abs=1e-12)
    torch.testing.assert_close(box_cxcywh_to_xyxy(cxcywh), xyxy)
    torch.testing.assert_close(box_area(xyxy), (xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1]))


def test_iou_and_giou_match_a_float64_reference():
    gen = torch.Generator().manual_seed(1)
    a, b = _random_xyxy(17, gen), _random_xyxy(11, gen)
    b[:3] = a[:3]  # identical boxes: IoU = GIoU = 1
    iou, giou = box_iou(a, b), generalized_box_iou(a, b)
    ref = torch.tensor([[_ref_iou_giou(x, y) for y in b.tolist()] for x in a.tolist()], dtype=torch.float64)
    torch.testing.assert_close(iou, ref[..., 0])
    torch.testing.assert_close(giou, ref[..., 1])
    assert torch.allclose(torch.diagonal(iou[:3, :3]), torch.ones(3, dtype=torch.float64))
    assert (giou >= -1).all() and (giou <= iou + 1e-12).all()
    torch.testing.assert_close(box_iou_aligned(a[:11], b), torch.diagonal(ref[:11, :, 0]))
    torch.testing.assert_close(generalized_box_iou_aligned(a[:11], b), torch.diagonal(ref[:11, :, 1]))


def test_giou_of_disjoint_boxes_has_a_gradient():
    a = torch.tensor([[0.0, 0.0, 0.1, 0.1]], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([[0.5, 0.5, 0.6, 0.6]], dtype=torch.float64)
    g = generalized_box_iou_aligned(a, b)
    assert box_iou_aligned(a, b).item() == 0.0 and g.item() < 0
    g.sum().backward()
    assert a.grad.abs().sum() > 0
    assert torch.isfinite(inverse_sigmoid(torch.tensor([0.0, 1.0]))).all()


def _targets(rows):
    """[[label, cx, cy, w, h], ...] per image, padded with label -1."""
    t = max(len(r) for r in rows)
    out = torch.zeros(len(rows), t, 5)
    out[:, :, 0] = -1
    for i, r in enumerate(rows):
        if r:
            out[i, : len(r)] = torch.tensor(r, dtype=torch.float32)
    return out


def test_hungarian_match_hand_built_case():
    # 3 queries, 2 objects. Query 2 sits on object 0 and says class 1; query 0 sits on object 1
    # and says class 0; query 1 is far away. Greedy-by-query would give object 0 to query 0.
    boxes = torch.tensor([[[0.7, 0.7, 0.2, 0.2], [0.1, 0.9, 0.05, 0.05], [0.3, 0.3, 0.2, 0.2]]])
    logits = torch.full((1, 3, 3), -5.0)
    logits[0, 0, 0] = logits[0, 2, 1] = 5.0
    logits[0, 1, 2] = 5.0  # "no object"
    targets = _targets([[[1, 0.3, 0.3, 0.2, 0.2], [0, 0.7, 0.7, 0.2, 0.2]]])
    (rows, cols), = hungarian_match(logits, boxes, targets)
    assert dict(zip(cols.tolist(), rows.tolist())) == {0: 2, 1: 0}


@pytest.mark.parametrize("seed", range(4))
def test_hungarian_match_equals_brute_force(seed):
    gen = torch.Generator().manual_seed(seed)
    B, Q, K = 3, 5, 2
    logits = torch.randn(B, Q, K + 1, generator=gen)
    boxes = torch.rand(B, Q, 4, generator=gen) * 0.5 + 0.25
    rows = [[[int(torch.randint(K, (1,), generator=gen)), *(torch.rand(4, generator=gen) * 0.5 + 0.2).tolist()]
             for _ in range(n)] for n in (1, 3, 4)]
    targets = _targets(rows)
    weights = LossWeights()
    cost = matching_cost(logits, boxes, targets, weights).double()
    for b, (q, t) in enumerate(hungarian_match(logits, boxes, targets, weights)):
        n = len(rows[b])
        assert sorted(t.tolist()) == list(range(n)) and len(set(q.tolist())) == n
        best = min(sum(cost[b, perm[j], j].item() for j in range(n)) for perm in itertools.permutations(range(Q), n))
        assert sum(cost[b, qi, ti].item() for qi, ti in zip(q.tolist(), t.tolist())) == pytest.approx(best, abs=1e-9)


def test_matching_cost_terms():
    logits = torch.zeros(1, 1, 3)  # uniform: p = 1/3
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2]]])
    targets = _targets([[[0, 0.5, 0.5, 0.2, 0.2]]])
    w = LossWeights(class_weight=1.0, l1_weight=5.0, giou_weight=2.0)
    assert matching_cost(logits, boxes, targets, w).item() == pytest.approx(-1 / 3 - 2.0, abs=1e-6)


def test_set_loss_is_zero_box_loss_for_perfect_boxes_and_counts_no_object():
    model = create_model("detr-tiny", num_classes=2, image_size=(32, 32), backbone_channels=(8, 16), dim=32,
                         num_heads=2, encoder_depth=1, decoder_depth=2, num_queries=4)
    obj = DetectionObjective(2)
    from attnlab.tasks.detection import set_loss

    targets = _targets([[[1, 0.3, 0.4, 0.2, 0.1]], []])
    boxes = torch.tensor([[0.3, 0.4, 0.2, 0.1]]).repeat(2, 4, 1)
    logits = torch.zeros(2, 4, 3)
    parts = set_loss(logits, boxes, targets, obj.weights)
    assert parts["l1"].item() == pytest.approx(0.0, abs=1e-6) and parts["giou"].item() == pytest.approx(0.0, abs=1e-6)
    assert parts["class"].item() == pytest.approx(torch.log(torch.tensor(3.0)).item(), abs=1e-5)
    x = torch.randn(2, 3, 32, 32)
    assert model(x, all_layers=True).shape == (2, 2, 4, 2 + 1 + 4)


def test_detr_shapes_boxes_in_unit_range_and_config_errors():
    model = create_model("detr-tiny", image_size=(32, 48), backbone_channels=(8, 16, 16), dim=32, num_heads=4)
    out = model(torch.randn(2, 3, 32, 48))
    assert out.shape == (2, 12, 3 + 1 + 4) and model.feature_grid == (4, 6)
    assert ((out[..., 4:] > 0) & (out[..., 4:] < 1)).all()
    with pytest.raises(ConfigError, match="divisible by the backbone stride 8"):
        create_model("detr-tiny", image_size=(60, 64))
    with pytest.raises(ConfigError, match="num_queries must be a positive number"):
        create_model("detr-tiny", num_queries=0)
    with pytest.raises(ValueError, match=r"expects images \(B, 3, 64, 64\)"):
        create_model("detr-tiny")(torch.randn(1, 3, 32, 32))


def test_loss_decreases_on_a_tiny_set():
    from attnlab.data.detection import load_shapes_task

    torch.manual_seed(0)
    data = load_shapes_task(seed=0, image_size=32, train_size=4, val_size=1, test_size=1, max_objects=2, hflip=False)
    x = torch.stack([data.train[i][0] for i in range(4)])
    y = torch.stack([data.train[i][1] for i in range(4)])
    model = create_model("detr-tiny", image_size=(32, 32), backbone_channels=(8, 16), dim=32, num_heads=2,
                         encoder_depth=1, decoder_depth=2, num_queries=3)
    obj = DetectionObjective(3)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(60):
        loss, n = obj.loss(model, (x, y))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert n == 4 and sum(losses[-5:]) / 5 < 0.6 * losses[0], losses
