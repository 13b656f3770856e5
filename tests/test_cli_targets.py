"""Regression, multi-label and class-weighted runs through the command line: train a few
steps, evaluate, predict, explain, each on tiny data generated here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from attnlab.cli import main

SERIES = ["--model.dim", "16", "--model.depth", "1", "--model.num_heads", "2", "--model.stem_channels", "0",
          "--train.batch_size", "8", "--train.progress", "false", "--epochs", "2"]
TEXT = ["--model.dim", "16", "--model.depth", "1", "--model.num_heads", "2", "--model.conv_channels", "8",
        "--train.batch_size", "8", "--train.progress", "false", "--epochs", "2"]


def _series_folder(root, rng, *, n=24, length=12):
    """UCR-style folder whose label is a number: 100 + 10 x the series' level."""
    root.mkdir()
    for split in ("TRAIN", "TEST"):
        level = rng.normal(size=n)
        rows = [f"{100 + 10 * m:.4f}\t" + "\t".join(f"{v:.4f}" for v in m + rng.normal(0, 0.1, length)) for m in level]
        (root / f"{root.name}_{split}.tsv").write_text("\n".join(rows) + "\n")
    return root


def test_timeseries_regression_end_to_end(tmp_path, capsys):
    rng = np.random.default_rng(0)
    root = _series_folder(tmp_path / "Level", rng)
    out = tmp_path / "run"
    argv = ["train", "--task", "timeseries", "--data", str(root), "--data.target", "regression", "--data.normalize", "none",
            "--out", str(out), *SERIES]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["test"]) == {"mse", "mae", "r2"}
    record = json.loads((out / "data.json").read_text())
    assert record["target"] == "regression" and record["num_classes"] == 1
    scaler = record["info"]["target_scaler"]
    train_targets = [float(line.split("\t")[0]) for line in (root / "Level_TRAIN.tsv").read_text().splitlines()]
    assert scaler["mean"] == pytest.approx(np.mean(train_targets)) and scaler["std"] == pytest.approx(np.std(train_targets))
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)["test"]
    assert again["mse"] == pytest.approx(metrics["test"]["mse"], rel=1e-6)
    assert main(["predict", str(out), str(root / "Level_TEST.tsv"), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert len(results) == 24 and all(isinstance(r["value"], float) for r in results)
    # in the target's units: predictions near the training targets' scale, not standardised ones
    assert abs(np.mean([r["value"] for r in results]) - scaler["mean"]) < 5 * scaler["std"]
    assert "label" in results[0]
    assert main(["predict", str(out), str(root / "Level_TEST.tsv")]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert float(line.rsplit(": ", 1)[1]) == pytest.approx(results[0]["value"], rel=1e-5)
    html = tmp_path / "x.html"
    assert main(["explain", str(out), str(root / "Level_TEST.tsv"), "-o", str(html)]) == 0
    assert main(["explain", str(out), str(root / "Level_TEST.tsv"), "-o", str(tmp_path / "r.png"), "--rollout"]) == 0
    # relevance methods and their faithfulness on a regression run (they were refused: "single-label classifier")
    assert main(["explain", str(out), str(root / "Level_TEST.tsv"), "-o", str(tmp_path / "g.png"), "--method", "gradient"]) == 0
    assert f"{results[0]['value']:.6g}" in html.read_text()
    card = _page_card(out / "report.html")
    assert card["target"] == "regression" and "training standard deviations" in card["measured"]["perturbation"]
    capsys.readouterr()
    assert main(["explain", str(out), "--faithfulness", "--method", "input_x_gradient,random", "--limit", "6", "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["target"] == "regression" and scores["examples"] == 6
    for row in scores["methods"].values():
        assert all(0.0 <= row[k][1] <= row[k][0] <= row[k][2] <= 1.0 for k in ("positive", "negative", "deletion"))


def _page_card(path: Path) -> dict:
    import re

    block = re.search(r'<script type="application/json" id="attnlab-data">(.*?)</script>', path.read_text(), re.DOTALL)
    return json.loads(block.group(1))["card"]


_WORDS = {"sports": ["goal", "match", "team"], "politics": ["vote", "law", "party"], "music": ["song", "band", "tune"]}


def _text_rows(rng, n):
    """(label set, text) rows: each example mentions the words of one or two topics."""
    topics = list(_WORDS)
    rows = []
    for i in range(n):
        chosen = sorted(rng.choice(topics, size=1 + i % 2, replace=False).tolist())
        words = [w for t in chosen for w in rng.choice(_WORDS[t], size=2).tolist()] + ["the", "a"]
        rows.append((chosen, " ".join(rng.permutation(words).tolist())))
    return rows


def test_text_regression_end_to_end_keeps_the_lowest_validation_mse(tmp_path, capsys):
    rng = np.random.default_rng(1)
    path = tmp_path / "scores.tsv"
    rows = _text_rows(rng, 60)
    path.write_text("".join(f"{len(t[0]) * 2.5 + rng.normal(0, 0.1):.3f}\t{t[1]}\n" for t in rows))
    out = tmp_path / "run"
    argv = ["train", "--task", "text-classification", "--data", str(path), "--data.target", "regression", "--out", str(out),
            *TEXT, "--epochs", "3", "--train.keep", "best"]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["test"]) == {"mse", "mae", "r2"}
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    val = [h["val_mse"] for h in history]
    assert metrics["val_best"] == min(val) and metrics["best_epoch"] == 1 + val.index(min(val))
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["test"]["mse"] == pytest.approx(metrics["test"]["mse"], rel=1e-6)
    inputs = tmp_path / "in.txt"
    inputs.write_text("5.0\tgoal vote the a\n3 songs by the band\n")
    assert main(["predict", str(out), str(inputs), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["input"] for r in results] == ["goal vote the a", "3 songs by the band"]  # a number only labels before a tab
    assert results[0]["label"] == "5.0" and "label" not in results[1] and isinstance(results[1]["value"], float)
    html = tmp_path / "x.html"
    assert main(["explain", str(out), str(inputs), "-o", str(html)]) == 0
    assert f"{results[0]['value']:.6g}" in html.read_text()


def test_text_multilabel_end_to_end(tmp_path, capsys):
    rng = np.random.default_rng(2)
    path = tmp_path / "topics.tsv"
    path.write_text("".join(f"{','.join(t)}\t{text}\n" for t, text in _text_rows(rng, 90)))
    out = tmp_path / "run"
    argv = ["train", "--task", "text-classification", "--data", str(path), "--data.target", "multilabel", "--out", str(out),
            *TEXT, "--epochs", "3"]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"micro_f1", "macro_f1", "map", "threshold"} <= set(metrics["test"])
    record = json.loads((out / "data.json").read_text())
    assert record["target"] == "multilabel" and record["class_names"] == ["music", "politics", "sports"]
    threshold = record["calibration"]["threshold"]
    assert 0 < threshold < 1 and metrics["test"]["threshold"] == threshold
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)["test"]
    assert again["micro_f1"] == pytest.approx(metrics["test"]["micro_f1"]) and again["threshold"] == threshold
    inputs = tmp_path / "in.txt"
    inputs.write_text("music,sports\tsong goal band team\nvote law party\n")
    assert main(["predict", str(out), str(inputs), "--json", "--top-k", "3"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert results[0]["label"] == "music,sports" and "label" not in results[1]
    for r in results:
        scores = {t["class"]: t["score"] for t in r["top"]}
        assert r["labels"] == [n for n in sorted(scores, key=scores.get, reverse=True) if scores[n] >= threshold]
        assert r["scores"] == [scores[n] for n in r["labels"]]
    html = tmp_path / "x.html"
    assert main(["explain", str(out), str(inputs), "-o", str(html)]) == 0
    card = _page_card(out / "report.html")  # scored through the multi-label readout, at the run's threshold
    assert card["target"] == "multilabel" and set(card["methods"]) >= {"gradient", "integrated_gradients", "random"}
    assert main(["explain", str(out), str(inputs), "-o", str(tmp_path / "m.png"), "--method", "integrated_gradients"]) == 0


def test_class_weights_balanced_end_to_end_and_refused_for_regression(tmp_path, capsys):
    rng = np.random.default_rng(3)
    path = tmp_path / "skewed.tsv"
    rows = [("sports" if i % 5 else "music", t) for i, (_, t) in enumerate(_text_rows(rng, 60))]
    path.write_text("".join(f"{label}\t{text}\n" for label, text in rows))
    out = tmp_path / "run"
    assert main(["train", "--task", "text-classification", "--data", str(path), "--train.class_weights", "balanced",
                 "--out", str(out), *TEXT]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["class_weights"] == "balanced"
    assert main(["evaluate", str(out)]) == 0
    capsys.readouterr()
    refused = tmp_path / "refused"
    assert main(["train", "--task", "text-classification", "--data", str(path), "--data.target", "multilabel",
                 "--train.class_weights", "balanced", "--out", str(refused), *TEXT]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "class_weights" in err and "MultiLabelObjective" in err, err
    assert not refused.exists()


def _label_images(root, rng, n=30):
    """Images whose left half is bright when 'left' is set and right half when 'right' is; a label CSV."""
    (root / "img").mkdir(parents=True)
    rows = ["path,left,right"]
    for i in range(n):
        left, right = [(1, 0), (0, 1), (1, 1)][i % 3]
        pixels = rng.integers(0, 60, (8, 8)).astype(np.uint8)
        pixels[:, :4] += 150 * left
        pixels[:, 4:] += 150 * right
        Image.fromarray(pixels).save(root / "img" / f"{i}.png")
        rows.append(f"img/{i}.png,{left},{right}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"


def test_image_multilabel_end_to_end(tmp_path, capsys):
    rng = np.random.default_rng(4)
    table = _label_images(tmp_path / "data", rng)
    out = tmp_path / "run"
    argv = ["train", "--task", "images", "--data", str(table), "--data.target", "multilabel", "--data.image_size", "[8, 8]",
            "--model.patch_size", "4", "--model.stem_channels", "0", "--model.dim", "16", "--model.depth", "1",
            "--model.num_heads", "2", "--train.batch_size", "8", "--train.progress", "false", "--epochs", "2",
            "--out", str(out)]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"micro_f1", "macro_f1", "map"} <= set(metrics["test"])
    record = json.loads((out / "data.json").read_text())
    assert record["class_names"] == ["left", "right"] and "threshold" in record["calibration"]
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["test"]["map"] == pytest.approx(metrics["test"]["map"])
    image = tmp_path / "data" / "img" / "2.png"
    assert main(["predict", str(out), str(image), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)[0]
    assert set(result["labels"]) <= {"left", "right"} and result["threshold"] == record["calibration"]["threshold"]
    assert all(s >= result["threshold"] for s in result["scores"])
    html = tmp_path / "x.html"
    assert main(["explain", str(out), str(image), "-o", str(html)]) == 0
    assert (out / "report.html").is_file()
    # another CSV is read with the run's labels and statistics: columns in another order score the same
    lines = table.read_text().splitlines()
    swapped = table.with_name("swapped.csv")
    swapped.write_text("\n".join(",".join(line.split(",")[i] for i in (0, 2, 1)) for line in lines) + "\n")
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data", str(swapped), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["test"]["map"] == pytest.approx(metrics["test"]["map"])
    for header, needle in (("path,left,right,up", "label column 'up' is not one of the run's 2 labels ['left', 'right']"),
                           ("path,left", "no column for the run's label 'right'")):
        other = table.with_name("other.csv")
        width = header.count(",")
        other.write_text("\n".join([header] + [",".join(line.split(",")[:2] + ["1"] * (width - 1)) for line in lines[1:]]) + "\n")
        assert main(["evaluate", str(out), "--data", str(other)]) == 2
        err = capsys.readouterr().err.strip()
        assert f"{other}:1: {needle}" in err and len(err.splitlines()) == 1, err


def _bad_text(tmp_path, name, lines):
    path = tmp_path / name
    path.write_text("".join(line + "\n" for line in lines))
    return path


_GOOD = [f"{v}\tsome words here {i}" for i, v in enumerate([1.5, 2.0, 3.25, 0.5] * 3)]


def _case_regression_text_label(tmp):
    path = _bad_text(tmp, "reg.tsv", _GOOD[:5] + ["high\tnot a number"] + _GOOD[5:])
    return ["--task", "text-classification", "--data", str(path), "--data.target", "regression"], [f"{path}:6", "'high'"]


def _case_regression_nan(tmp):
    path = _bad_text(tmp, "reg.tsv", _GOOD[:2] + ["nan\tmissing target"] + _GOOD[2:])
    return ["--task", "text-classification", "--data", str(path), "--data.target", "regression"], [f"{path}:3", "'nan'"]


def _case_ucr_regression_nan(tmp):
    root = tmp / "Level"
    _series_folder(root, np.random.default_rng(0), n=6)
    lines = (root / "Level_TEST.tsv").read_text().splitlines()
    lines[3] = "NaN\t" + lines[3].split("\t", 1)[1]
    (root / "Level_TEST.tsv").write_text("\n".join(lines) + "\n")
    return ["--task", "timeseries", "--data", str(root), "--data.target", "regression"], [f"{root / 'Level_TEST.tsv'}:4", "'NaN'"]


def _case_multilabel_empty_set(tmp):
    path = _bad_text(tmp, "ml.tsv", ["a,b\tone", "a\ttwo", ",\tthree", "b\tfour"])
    return ["--task", "text-classification", "--data", str(path), "--data.target", "multilabel"], [f"{path}:3", "empty label set"]


def _case_multilabel_stray_comma(tmp):
    path = _bad_text(tmp, "ml.tsv", ["a,b\tone", "a,,b\ttwo", "b\tfour"])
    return ["--task", "text-classification", "--data", str(path), "--data.target", "multilabel"], [f"{path}:2", "'a,,b'"]


def _label_table_with(tmp, index: int, edit) -> Path:
    """Six labelled images and their label CSV, line ``index`` (0 = the header) passed through ``edit``."""
    table = _label_images(tmp / "data", np.random.default_rng(5), n=6)
    lines = table.read_text().splitlines()
    lines[index] = edit(lines[index])
    table.write_text("\n".join(lines) + "\n")
    return table


def _case_label_column_not_binary(tmp):
    table = _label_table_with(tmp, 4, lambda line: line.rsplit(",", 1)[0] + ",2")
    return ["--task", "images", "--data", str(table), "--data.target", "multilabel"], [f"{table}:5", "'right'", "'2'"]


def _case_label_column_nan(tmp):
    table = _label_table_with(tmp, 2, lambda line: line.split(",", 1)[0] + ",NaN,1")
    return ["--task", "images", "--data", str(table), "--data.target", "multilabel"], [f"{table}:3", "'left'", "'NaN'"]


def _case_label_row_empty(tmp):
    table = _label_table_with(tmp, 6, lambda line: line.split(",", 1)[0] + ",0,0")
    return ["--task", "images", "--data", str(table), "--data.target", "multilabel"], [f"{table}:7", "empty label set"]


def _case_label_csv_without_target(tmp):
    table = _label_images(tmp / "data", np.random.default_rng(5), n=6)
    return ["--task", "images", "--data", str(table)], [str(table), "--data.target multilabel"]


def _case_unknown_target(tmp):
    path = _bad_text(tmp, "t.tsv", _GOOD)
    return ["--task", "text-classification", "--data", str(path), "--data.target", "ordinal"], ["--data.target", "'ordinal'"]


def _case_timeseries_multilabel(tmp):
    root = tmp / "Level"
    _series_folder(root, np.random.default_rng(0), n=6)
    return ["--task", "timeseries", "--data", str(root), "--data.target", "multilabel"], ["'timeseries'", "multilabel"]


BAD = {name[6:]: fn for name, fn in globals().items() if name.startswith("_case_")}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_targets_are_one_line_exit_2_and_write_nothing(case, tmp_path, capsys):
    argv, culprits = BAD[case](tmp_path)
    out = tmp_path / "runs" / "should-not-exist"
    assert main(["train", *argv, "--epochs", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for culprit in culprits:
        assert culprit in err, err
    assert not out.exists()


def test_regression_drops_the_task_smoothing_default_and_refuses_an_explicit_one(tmp_path, capsys):
    path = _bad_text(tmp_path, "reg.tsv", _GOOD)
    out = tmp_path / "run"
    assert main(["train", "--task", "text-classification", "--data", str(path), "--data.target", "regression",
                 "--out", str(out), *TEXT, "--epochs", "1"]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["objective"]["label_smoothing"] == 0.0
    capsys.readouterr()
    assert main(["train", "--task", "text-classification", "--data", str(path), "--data.target", "regression",
                 "--objective.label_smoothing", "0.1", "--out", str(tmp_path / "no"), *TEXT, "--epochs", "1"]) == 2
    assert "label_smoothing" in capsys.readouterr().err
