"""Multi-label and regression text, and a multi-label image CSV, through `attnlab shard` and
training from the shards: a run
trained on the shards and one trained in memory each score exactly the same on the shards as on
the file they came from (the same samples, the same validation threshold, the same units);
predict answers with label sets and numbers in the target's units; shards read with another
--data.target, or lacking their target member, are one line and exit 2.

Training itself does not give the same metrics from the shards as from the file with the same
seed: the in-memory loader draws a fresh permutation of the split each epoch, the stream reads
the split in the order it was shuffled at write time, its shards in a (seed, epoch) order
through a shuffle buffer, so the batches differ (tests/data/test_text_shards.py checks that
every decoded sample is the in-memory one bit for bit)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from attnlab.cli import main
from tests.data.test_image_shards import LABELS, write_label_csv
from tests.data.test_text_shards import WORDS, write_multilabel, write_regression

TINY = ["--model.depth", "1", "--model.dim", "16", "--model.num_heads", "2", "--train.batch_size", "8",
        "--train.progress", "false", "--epochs", "1", "--data.tokenizer", "word"]


def _evaluate(capsys, run: Path, data: Path) -> dict:
    capsys.readouterr()
    assert main(["evaluate", str(run), "--data", str(data), "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)["test"]


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def _shard(tmp_path: Path, capsys, target: str, write) -> tuple[Path, Path]:
    src, shards = write(tmp_path / "data.tsv"), tmp_path / "s"
    assert main(["shard", str(src), str(shards), "--task", "text-classification", "--shard-size", "8",
                 "--data.tokenizer", "word", "--data.target", target]) == 0, capsys.readouterr().err
    assert "train 40 in 5 shard(s), val 5 in 1 shard(s), test 5 in 1 shard(s)" in capsys.readouterr().out
    return src, shards


def _train_and_score(tmp_path: Path, capsys, name: str, data: Path, src: Path, shards: Path, target: str) -> Path:
    """Train on ``data``; the run scores exactly the same on the shards as on the file (same rows in
    the same order, same threshold chosen on validation, same units), and as training reported."""
    run = tmp_path / name
    argv = ["train", "--task", "text-classification", "--data", str(data), "--out", str(run), "--data.target", target, *TINY]
    assert main(argv) == 0, capsys.readouterr().err
    metrics = json.loads((run / "metrics.json").read_text())["test"]
    assert KEYS[target] <= set(metrics)
    on_file, on_shards = _evaluate(capsys, run, src), _evaluate(capsys, run, shards)
    assert on_shards == on_file
    assert on_shards == pytest.approx({k: metrics[k] for k in on_shards}, abs=1e-6)
    return run


KEYS = {"multilabel": {"micro_f1", "macro_f1", "map", "threshold"}, "regression": {"mse", "mae", "r2"}}
WRITERS = [("multilabel", write_multilabel), ("regression", write_regression)]


@pytest.mark.parametrize("target, write", WRITERS)
def test_a_run_trained_on_target_shards_scores_as_on_its_file_and_predicts(tmp_path, capsys, target, write):
    src, shards = _shard(tmp_path, capsys, target, write)
    run = _train_and_score(tmp_path, capsys, "streamed", shards, src, shards, target)
    record = json.loads((run / "data.json").read_text())
    assert record["target"] == target and record["info"]["shards"] == str(shards)
    inputs = tmp_path / "inputs.txt"
    inputs.write_text("ball goal vote\nup up up item\n")
    capsys.readouterr()
    assert main(["predict", str(run), str(inputs), "--json"]) == 0, capsys.readouterr().err
    answers = json.loads(capsys.readouterr().out)
    assert len(answers) == 2
    if target == "regression":  # in the target's units (about 20), not standardised (about 0)
        assert all(5 < a["value"] < 35 for a in answers), answers
    else:
        threshold = json.loads((run / "metrics.json").read_text())["test"]["threshold"]
        assert all(set(a["labels"]) <= set(WORDS) and a["threshold"] == threshold for a in answers), answers
        # a test sample labelled with a label the run does not have: one line naming it and the sample
        foreign = _rewritten(shards, tmp_path / "foreign", lambda s: {**s, "json": b'{"labels": ["sports", "cooking"]}'})
        assert main(["evaluate", str(run), "--data", str(foreign)]) == 2
        err = _one_line(capsys)
        assert "test-000000.tar:000000000: label 'cooking' is not one of the run's 3 labels" in err, err


def _rewritten(shards: Path, out: Path, change) -> Path:
    """A copy of ``shards`` with ``change(sample)`` applied to every sample."""
    from attnlab.data.shards import INDEX_NAME, read_samples, write_split

    index = json.loads((shards / INDEX_NAME).read_text())
    for split, entries in index["splits"].items():
        samples = [(key, change(s)) for e in entries for key, s in read_samples(shards / e["file"])]
        index["splits"][split] = write_split(out, split, iter(samples), 100)
    (out / INDEX_NAME).write_text(json.dumps(index))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("target, write", WRITERS)
def test_a_run_trained_in_memory_scores_as_on_the_shards_of_its_file(tmp_path, capsys, target, write):
    src, shards = _shard(tmp_path, capsys, target, write)
    run = _train_and_score(tmp_path, capsys, "memory", src, src, shards, target)
    if target == "regression":  # the scaler the shards were written with: fitted on the same training split
        index = json.loads((shards / "shards.json").read_text())
        assert json.loads((run / "data.json").read_text())["info"]["target_scaler"] == index["info"]["target_scaler"]


def test_target_shards_read_as_another_target_or_without_their_member_are_one_line(tmp_path, capsys):
    src, shards = write_multilabel(tmp_path / "data.tsv"), tmp_path / "s"
    assert main(["shard", str(src), str(shards), "--task", "text-classification", "--data.target", "multilabel"]) == 0
    run = tmp_path / "run"
    assert main(["train", "--task", "text-classification", "--data", str(shards), "--out", str(run), *TINY]) == 2
    assert _one_line(capsys).endswith(f"{shards} holds shards written with --data.target multilabel; train and "
                                      "evaluate them with --data.target multilabel, not class")
    assert not run.exists()
    bare = _rewritten(shards, tmp_path / "bare", lambda s: {"txt": s["txt"]})  # the same samples without their .json
    argv = ["train", "--task", "text-classification", "--data", str(bare), "--out", str(run), "--data.target",
            "multilabel", *TINY]
    assert main(argv) == 2
    err = _one_line(capsys)
    assert "train-000000.tar:" in err and 'a multilabel sample needs a .json {"labels": [names]}, has [\'txt\']' in err


def test_a_multilabel_image_csv_as_shards_trains_evaluates_and_predicts_as_the_csv(tmp_path, capsys):
    csv, shards = write_label_csv(tmp_path / "data"), tmp_path / "s"
    flags = ["--data.target", "multilabel", "--data.image_size", "[8,8]"]
    assert main(["shard", str(csv), str(shards), "--shard-size", "8", *flags]) == 0, capsys.readouterr().err
    run = tmp_path / "run"
    argv = ["train", "--task", "images", "--data", str(shards), "--out", str(run), "--data.target", "multilabel",
            "--model.patch_size", "4", *TINY[:-2]]
    assert main(argv) == 0, capsys.readouterr().err
    metrics = json.loads((run / "metrics.json").read_text())["test"]
    on_csv, on_shards = _evaluate(capsys, run, csv), _evaluate(capsys, run, shards)
    assert on_shards == on_csv == pytest.approx({k: metrics[k] for k in on_shards}, abs=1e-6)
    assert KEYS["multilabel"] <= set(on_shards)
    assert main(["predict", str(run), str(csv.parent / "pics" / "3.png"), "--json"]) == 0, capsys.readouterr().err
    answer = json.loads(capsys.readouterr().out)[0]
    assert set(answer["labels"]) <= set(LABELS) and answer["threshold"] == metrics["threshold"]
