"""The detection task end to end: COCO mAP, train -> run dir -> predict -> explain."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnlab.tasks.detection import coco_map, detections


def test_coco_map_is_one_for_perfect_and_zero_for_wrong_class():
    gt = [(torch.tensor([0, 1]), torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.2]])), (torch.tensor([2]), torch.tensor([[0.5, 0.5, 0.4, 0.4]]))]
    perfect = [{"labels": l, "boxes": b, "scores": torch.ones(len(l))} for l, b in gt]
    assert coco_map(gt, perfect, 3, (64, 64)) == pytest.approx({"map": 1.0, "map_50": 1.0})
    wrong = [{"labels": (l + 1) % 3, "boxes": b, "scores": torch.ones(len(l))} for l, b in gt]
    assert coco_map(gt, wrong, 3, (64, 64)) == {"map": 0.0, "map_50": 0.0}
    # a box at IoU ~0.6 counts at .5 but not at the stricter thresholds
    shifted = [{"labels": l, "boxes": b + torch.tensor([0.05, 0, 0, 0]), "scores": torch.ones(len(l))} for l, b in gt[1:]]
    m = coco_map(gt[1:], shifted, 3, (64, 64))
    assert m["map_50"] == pytest.approx(1.0) and m["map"] < 0.7


def _iou_xywh(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two [x, y, w, h] boxes in float64 (COCO: areas w * h, no +1)."""
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(x2 - x1, 0.0) * max(y2 - y1, 0.0)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def _coco_ap_reference(gt, det, num_classes: int, size: tuple[int, int], iou: float) -> float:
    """COCO's box AP at one IoU threshold, by hand in float64: per class, detections sorted by score
    over all images, each matched greedily to the unmatched ground truth of its image with the
    highest IoU >= ``iou``; precision made monotone from the right and read at the 101 recall
    points 0, 0.01, ..., 1 (0 beyond the last recall reached); mean over classes with ground truth."""
    h, w = size

    def xywh(b):
        b = b.double().numpy()
        return np.stack([(b[:, 0] - b[:, 2] / 2) * w, (b[:, 1] - b[:, 3] / 2) * h, b[:, 2] * w, b[:, 3] * h], 1)

    aps = []
    for c in range(num_classes):
        gts = {i: xywh(boxes)[labels.numpy() == c] for i, (labels, boxes) in enumerate(gt)}
        total = sum(len(g) for g in gts.values())
        if total == 0:
            continue
        dets = [(float(s), i, box) for i, d in enumerate(det)
                for s, l, box in zip(d["scores"].tolist(), d["labels"].tolist(), xywh(d["boxes"])) if l == c]
        dets.sort(key=lambda t: -t[0])  # stable: equal scores keep image order, as COCO's mergesort
        used = {i: np.zeros(len(g), bool) for i, g in gts.items()}
        tp = []
        for _, i, box in dets:
            best, best_iou = -1, iou
            for j, g in enumerate(gts[i]):
                o = _iou_xywh(box, g)
                if not used[i][j] and o >= best_iou:
                    best, best_iou = j, o
            if best >= 0:
                used[i][best] = True
            tp.append(best >= 0)
        tp = np.asarray(tp, float)
        ctp, cfp = np.cumsum(tp), np.cumsum(1 - tp)
        recall, precision = ctp / total, ctp / np.maximum(ctp + cfp, np.spacing(1))
        for k in range(len(precision) - 2, -1, -1):
            precision[k] = max(precision[k], precision[k + 1])
        points = []
        for r in np.linspace(0, 1, 101):
            k = np.searchsorted(recall, r, side="left")
            points.append(precision[k] if k < len(precision) else 0.0)
        aps.append(np.mean(points))
    return float(np.mean(aps))


@pytest.mark.parametrize("seed", range(3))
def test_coco_map_matches_a_float64_101_point_reference(seed):
    """pycocotools through `coco_map` against COCO's definition written out: random objects of 3
    classes on 6 images, detections that are jittered copies (some wrong class, some duplicates,
    some false alarms) with scores that tie across images."""
    rng = np.random.default_rng(seed)
    gt, det = [], []
    for _ in range(6):
        n = int(rng.integers(0, 4))  # an image may have no object
        labels = torch.from_numpy(rng.integers(0, 3, n))
        centres, sizes = rng.uniform(0.3, 0.7, (n, 2)), rng.uniform(0.1, 0.4, (n, 2))
        boxes = torch.from_numpy(np.concatenate([centres, sizes], 1))
        gt.append((labels, boxes.float()))
        jitter = torch.from_numpy(rng.normal(0, 0.03, (n, 4)))
        dup = boxes[: n // 2] + torch.from_numpy(rng.normal(0, 0.05, (n // 2, 4)))
        alarms = torch.from_numpy(np.concatenate([rng.uniform(0.2, 0.8, (2, 2)), rng.uniform(0.1, 0.3, (2, 2))], 1))
        d_boxes = torch.cat([boxes + jitter, dup, alarms]).clamp(0.05, 0.95).float()
        d_labels = torch.cat([torch.where(torch.from_numpy(rng.random(n) < 0.2), (labels + 1) % 3, labels),
                              labels[: n // 2], torch.from_numpy(rng.integers(0, 3, 2))])
        scores = torch.from_numpy(np.round(rng.uniform(0.05, 1.0, len(d_boxes)), 1)).float()  # ties
        det.append({"labels": d_labels, "boxes": d_boxes, "scores": scores})
    size = (48, 64)
    m = coco_map(gt, det, 3, size)
    ref = {t: _coco_ap_reference(gt, det, 3, size, t) for t in np.linspace(0.5, 0.95, 10)}
    assert m["map_50"] == pytest.approx(ref[0.5], abs=1e-6)
    assert m["map"] == pytest.approx(np.mean(list(ref.values())), abs=1e-6)
    assert 0.05 < m["map"] < m["map_50"] < 1.0  # neither trivial nor perfect


def test_detections_take_top_query_class_pairs():
    logits = torch.tensor([[[5.0, 0.0, 0.0], [0.0, 0.0, 5.0]]])  # K=2: query 0 is class 0, query 1 "no object"
    boxes = torch.rand(1, 2, 4)
    (d,) = detections(logits, boxes, max_detections=3)
    assert d["labels"][0] == 0 and d["queries"][0] == 0 and len(d["scores"]) == 3
    torch.testing.assert_close(d["boxes"][0], boxes[0, 0])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from attnlab.run import train_run
    from attnlab.run_config import resolve_config

    out = tmp_path_factory.mktemp("det") / "run"
    config = resolve_config({
        "task": "detection",
        "model_config": {"backbone_channels": [8, 16, 16], "dim": 32, "num_heads": 2, "encoder_depth": 1, "decoder_depth": 2},
        "data_options": {"train_size": 16, "val_size": 4, "test_size": 4, "image_size": 32},
        "train": {"epochs": 1, "batch_size": 8, "progress": False},
        "report_examples": 2,
    })
    metrics = train_run(config, out=out)
    return out, metrics


def test_train_writes_run_dir_with_map_metrics(tiny_run):
    out, metrics = tiny_run
    assert {"map", "map_50", "loss"} <= set(metrics["test"])
    for name in ("config.yaml", "data.json", "model.safetensors", "metrics.json", "report.html"):
        assert (out / name).is_file(), name
    assert "cell 0,0" in (out / "report.html").read_text()


def test_predict_and_explain(tiny_run, tmp_path):
    from PIL import Image

    from attnlab.cli import main
    from attnlab.data.detection import generate_shapes
    from attnlab.run import explain_run
    from attnlab.run import predict_run

    out, _ = tiny_run
    imgs, _, _ = generate_shapes(1, seed=9, image_size=64)  # another size than training: resized
    image = tmp_path / "img.png"
    Image.fromarray(imgs[0]).save(image)
    np.save(tmp_path / "img.npy", imgs[0])
    results = predict_run(out, [str(image), str(tmp_path / "img.npy")])
    assert results and all(r["input"] in (str(image), str(tmp_path / "img.npy")) for r in results)
    for r in results:
        assert (r["box"] is None and r["class"] is None and "no objects" in r["note"]) or (
            len(r["box"]) == 4 and r["class"] == r["label"])
    assert main(["predict", str(out), str(image)]) == 0
    png = explain_run(out, str(image), tmp_path / "x.png")
    assert png.stat().st_size > 1000
    html = explain_run(out, str(image), tmp_path / "x.html")
    assert "decoder.1.cross_attn" in html.read_text()
    assert main(["explain", str(out), str(image), "-o", str(tmp_path / "y.png"), "--layer", "0", "--head", "1"]) == 0
    assert main(["explain", str(out), str(image), "-o", str(tmp_path / "z.png"), "--layer", "5"]) == 2


def test_explain_draws_each_detected_querys_attention(tmp_path):
    from attnlab.explain.detection import DetectionExample
    from attnlab.tasks.detection import detection_example
    from attnlab.models import create_model

    model = create_model("detr-tiny", image_size=(32, 32), backbone_channels=(8, 16), dim=32, num_heads=2, num_queries=4)
    ex = detection_example(model, torch.randn(3, 32, 32), class_names=["a", "b", "c"], threshold=0.0,
                           target=torch.tensor([[1, 0.5, 0.5, 0.25, 0.25], [-1, 0, 0, 0, 0]]))
    assert isinstance(ex, DetectionExample) and len(ex.detections) == 4 and ex.label.startswith("b [12, 12, 20, 20]")
    assert len(ex.cross_maps) == 3 and ex.cross_maps[0].shape == (2, 4, 64) and ex.grid == (8, 8)
    assert ex.draw_png(tmp_path / "d.png", head=0).stat().st_size > 1000


def test_explain_without_encoder_layers_falls_back_to_query_tokens(tmp_path):
    from attnlab.tasks.detection import detection_example
    from attnlab.explain.report import write_report
    from attnlab.models import create_model

    model = create_model("detr-tiny", image_size=(32, 32), backbone_channels=(8, 16), dim=32, num_heads=2,
                         num_queries=3, encoder_depth=0, decoder_depth=1)
    ex = detection_example(model, torch.randn(3, 32, 32), class_names=["a", "b", "c"], threshold=0.0)
    assert ex.kind == "tokens" and ex.tokens == ["query 0", "query 1", "query 2"] and len(ex.key_tokens) == 64
    assert write_report(tmp_path / "r.html", [ex]).is_file()
    assert ex.draw_png(tmp_path / "d.png").is_file()


def test_cli_prints_each_box_after_its_class():
    from attnlab.cli.output import result_line as _result_line

    hit = {"input": "a.png", "class": "circle", "score": 0.98765, "label": "circle", "box": [1.5, 2.0, 30.25, 40.0]}
    assert _result_line(hit) == "a.png: circle [1.5, 2, 30.25, 40] (0.988)"
    miss = {"input": "b.png", "class": None, "score": 0.2, "box": None, "note": "no objects (best score 0.20 < 0.5)"}
    assert _result_line(miss) == "b.png: no objects (best score 0.20 < 0.5)"
    assert _result_line({"input": "c.png", "class": "7", "score": 0.5}) == "c.png: 7 (0.500)"


def test_more_objects_than_queries_warns_once(caplog):
    from attnlab.tasks import detection as task_detection

    task_detection._warned_queries.clear()
    logits, boxes = torch.randn(1, 2, 4), torch.rand(1, 2, 4)
    targets = torch.tensor([[[0, 0.2, 0.2, 0.1, 0.1], [1, 0.5, 0.5, 0.1, 0.1], [2, 0.8, 0.8, 0.1, 0.1]]])
    with caplog.at_level("WARNING", logger="attnlab.tasks.detection"):
        matches = task_detection.hungarian_match(logits, boxes, targets)
        task_detection.hungarian_match(logits, boxes, targets)
    assert len(matches[0][0]) == 2  # two queries: two of the three objects matched
    warnings = [r for r in caplog.records if "3 objects but the model has 2 queries" in r.message]
    assert len(warnings) == 1


def _coco_named(folder, categories):
    """A 4-image COCO file whose one box per image has category ``categories[i % len]`` (id, name)."""
    import json

    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    coco = {"images": [], "annotations": [], "categories": [{"id": i, "name": n} for i, n in categories]}
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        coco["images"].append({"id": i + 1, "file_name": f"{i}.png", "width": 32, "height": 32})
        coco["annotations"].append({"id": i + 1, "image_id": i + 1, "category_id": categories[i % len(categories)][0],
                                    "bbox": [4.0, 4.0, 10.0, 12.0]})
    (folder / "ann.json").write_text(json.dumps(coco))
    return folder / "ann.json"


def test_evaluate_another_coco_file_labels_categories_by_the_runs_class_names(tmp_path, capsys):
    """A COCO run (circle, square, triangle) scored on a COCO file that numbers the same names
    otherwise: each box keeps its class by name, not by the file's id order; a name the run lacks
    is one line (exit 2), not a traceback from inside the metrics."""
    from attnlab.cli import main
    from attnlab.config import load_yaml
    from attnlab.run import train_run
    from attnlab.run_config import RunConfig, finished_task_data, from_dict, resolve_config

    out = tmp_path / "run"
    train_run(resolve_config({
        "task": "detection", "data": str(_coco_named(tmp_path / "train", [(1, "circle"), (2, "square"), (3, "triangle")])),
        "model_config": {"backbone_channels": [8, 8], "dim": 16, "num_heads": 2, "encoder_depth": 1, "decoder_depth": 1},
        "data_options": {"image_size": 16, "val_fraction": 0.25, "test_fraction": 0.25},
        "train": {"epochs": 1, "batch_size": 2, "progress": False}, "report_examples": 0}), out=out)
    path = _coco_named(tmp_path / "other", [(1, "triangle"), (5, "circle"), (7, "square")])
    config = from_dict(RunConfig, load_yaml(out / "config.yaml"))
    config.data = str(path)
    data = finished_task_data(config, out)
    assert data.class_names == ["circle", "square", "triangle"]
    by_name = {"0.png": "triangle", "1.png": "circle", "2.png": "square", "3.png": "triangle"}
    for split in (data.train, data.val, data.test):
        for j, name in enumerate(split.names):
            assert data.class_names[int(split[j][1][0, 0])] == by_name[name]
    assert main(["evaluate", str(out), "--data", str(path)]) == 0
    assert main(["evaluate", str(out), "--data", str(_coco_named(tmp_path / "one", [(4, "square")]))]) == 0  # a subset
    capsys.readouterr()
    for categories, message in (([(1, "circle"), (2, "hexagon")], "category 2 'hexagon' is not one of the run's classes"),):
        bad = _coco_named(tmp_path / "bad", categories)
        assert main(["evaluate", str(out), "--data", str(bad)]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1 and str(bad) in err


def test_a_shapes_run_evaluates_a_coco_file_by_class_name(tiny_run, tmp_path, capsys):
    """The shapes run's own options (train_size...) say how many shapes to draw and are not carried
    to a COCO file; its categories are the shapes' classes by name, whatever their ids, and a file
    of other classes is one line naming both lists. By hand, a shapes option on a file is still refused."""
    from attnlab.cli import main
    from attnlab.run import load_run
    from attnlab.run_config import finished_task_data

    out, _ = tiny_run
    path = _coco_named(tmp_path / "coco", [(1, "triangle"), (5, "circle"), (7, "square")])
    config, _, _ = load_run(out)
    assert config.data_options["train_size"] == 16
    config.data = str(path)
    data = finished_task_data(config, out)
    assert data.class_names == ["circle", "square", "triangle"] and data.info["source"] == "coco"
    assert data.input_shape == (3, 32, 32)  # the run's image size
    by_name = {"0.png": "triangle", "1.png": "circle", "2.png": "square", "3.png": "triangle"}
    for split in (data.train, data.val, data.test):
        for j, name in enumerate(split.names):
            assert data.class_names[int(split[j][1][0, 0])] == by_name[name]
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data", str(path), "--json"]) == 0
    bad = _coco_named(tmp_path / "bad", [(1, "cat"), (2, "dog")])
    assert main(["evaluate", str(out), "--data", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "['circle', 'square', 'triangle']" in err and "['cat', 'dog']" in err and len(err.splitlines()) == 1, err
    assert main(["train", "--task", "detection", "--data", str(path), "--data.train_size", "8", "--epochs", "1",
                 "--out", str(tmp_path / "new")]) == 2
    assert "has no option(s) ['train_size']" in capsys.readouterr().err


def test_predict_reads_arrays_as_images_and_names_a_bad_npy(tiny_run, tmp_path, capsys):
    """An (H, W, 4) array gives the boxes its PNG gives, in its own pixels (its size read as
    prepare_image reads its axes, not (W, 4)); an .npy that needs pickle is one line, exit 2."""
    from PIL import Image

    from attnlab.cli import main
    from attnlab.run import load_run
    from attnlab.tasks.detection import predict_detections

    out, _ = tiny_run
    _, model, record = load_run(out)
    rgb = np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)  # H 40, W 48
    Image.fromarray(rgb).save(tmp_path / "a.png")
    np.save(tmp_path / "a.npy", np.concatenate([rgb, np.full((40, 48, 1), 255, np.uint8)], axis=-1))
    png, npy = (predict_detections(model, record, [str(tmp_path / f"a.{ext}")], top_k=3, threshold=0.0)
                for ext in ("png", "npy"))
    assert len(png) == len(npy) == 3
    for a, b in zip(png, npy):
        assert a["class"] == b["class"] and a["box"] == b["box"]
        assert 0 <= a["box"][0] <= a["box"][2] and a["box"][2] <= 48 * 1.5  # x in the 48-wide image's pixels
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    capsys.readouterr()
    assert main(["predict", str(out), str(tmp_path / "objects.npy")]) == 2
    err = capsys.readouterr().err.strip()
    assert "objects.npy" in err and len(err.splitlines()) == 1, err


def test_predict_reads_each_input_file_once(tiny_run, tmp_path, monkeypatch):
    """An .npy was loaded twice (prepare_image, then np.load again for its size) and an image file
    decoded twice (prepare_image, then open_image for its size): once each now, same boxes."""
    from PIL import Image

    import attnlab.data.images as images
    from attnlab.run import load_run
    from attnlab.tasks.detection import predict_detections

    out, _ = tiny_run
    _, model, record = load_run(out)
    rgb = np.random.default_rng(1).integers(0, 255, (40, 48, 3), dtype=np.uint8)  # H 40, W 48
    Image.fromarray(rgb).save(tmp_path / "a.png")
    np.save(tmp_path / "a.npy", rgb)
    reads: list[str] = []
    load, open_image = np.load, images.open_image
    monkeypatch.setattr(np, "load", lambda path, *a, **k: (reads.append(str(path)), load(path, *a, **k))[1])
    monkeypatch.setattr(images, "open_image", lambda path, *a, **k: (reads.append(str(path)), open_image(path, *a, **k))[1])
    npy = predict_detections(model, record, [str(tmp_path / "a.npy")], top_k=3, threshold=0.0)
    png = predict_detections(model, record, [str(tmp_path / "a.png")], top_k=3, threshold=0.0)
    assert reads == [str(tmp_path / "a.npy"), str(tmp_path / "a.png")], reads
    assert [r["box"] for r in npy] == [r["box"] for r in png] and len(npy) == 3
    assert max(r["box"][2] for r in npy) <= 48 and max(r["box"][3] for r in npy) <= 40  # the input's own pixels


def test_predicted_boxes_are_clipped_to_the_image(tiny_run, tmp_path):
    """A query whose box reaches past the right / bottom edge (cx + w/2 > 1) is clipped there, as it
    was at the left / top edge (detectron2's Boxes.clip)."""
    from PIL import Image

    from attnlab.run import load_run
    from attnlab.tasks.detection import predict_detections

    out, _ = tiny_run
    _, model, record = load_run(out)
    k = len(record["class_names"])
    Image.fromarray(np.zeros((30, 50, 3), np.uint8)).save(tmp_path / "a.png")  # W 50, H 30

    class Fixed(torch.nn.Module):  # every query: class 0 certain, box centred at (0.9, 0.95), 0.5 x 0.4 of the image
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            logits = torch.full((x.shape[0], 3, k + 1), -20.0)
            logits[..., 0] = 20.0
            boxes = torch.tensor([0.9, 0.95, 0.5, 0.4]).expand(x.shape[0], 3, 4)
            return torch.cat([logits, boxes], -1)

    result = predict_detections(Fixed(), record, [str(tmp_path / "a.png")], top_k=1)[0]
    assert result["box"] == [pytest.approx(32.5), pytest.approx(22.5), 50.0, 30.0]  # x1 57.5, y1 34.5 before
