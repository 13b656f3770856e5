"""An empty train, validation or test split is refused when a run trains (`check_splits`, in
`train_run`): one line naming the split and the option (or the shards) that emptied it, before a
run writes anything. Loaders called directly (``attnlab shard``, ``evaluate --data``) may still
return one: evaluating needs only the test split."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attnlab.cli import main
from attnlab.data.shard_writer import write_shards
from attnlab.tasks import load_task
from tests.data.test_audio import _fsdd_folder


def _images(root: Path, classes=("a", "b", "c"), count=6) -> Path:
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.fromarray((rng.random((8, 8)) * 255).astype(np.uint8)).save(root / name / f"{i}.png")
    return root


@pytest.mark.parametrize("option, split", [("val_fraction", "validation"), ("test_fraction", "test")])
def test_cli_refuses_an_empty_split_and_writes_nothing(tmp_path, capsys, option, split):
    root = _images(tmp_path / "img")
    out = tmp_path / "runs" / "x"
    argv = ["train", "--task", "images", "--data", str(root), "--epochs", "1", "--train.batch_size", "4",
            f"--data.{option}", "0", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert f"the {split} split is empty" in err and f"--data.{option} 0" in err, err
    assert not out.exists() and not (tmp_path / "runs").exists()


def _refused(capsys, *argv) -> str:
    """Train with ``argv``: refused with one line (returned) and exit code 2, before training."""
    capsys.readouterr()
    assert main(["train", *map(str, argv), "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_audio_and_detection_refuse_an_empty_split(tmp_path, capsys):
    fsdd = _fsdd_folder(tmp_path / "fsdd", count=6)
    err = _refused(capsys, "--task", "audio", "--data", fsdd, "--data.val_fraction", "0", "--out", tmp_path / "a")
    assert "'audio': the validation split is empty: --data.val_fraction 0 gives it no example" in err
    from attnlab.data.detection import generate_shapes, write_coco

    images, boxes, labels = generate_shapes(6, seed=0, image_size=32, max_objects=2)
    coco = write_coco(tmp_path / "coco", images, boxes, labels, ["circle", "square", "triangle"])
    err = _refused(capsys, "--task", "detection", "--data", coco, "--data.image_size", "32", "--data.test_fraction", "0",
                   "--out", tmp_path / "d")
    assert "'detection': the test split is empty: --data.test_fraction 0 gives" in err
    # no validation split by design: detection then monitors on the training images
    data = load_task("detection", str(coco), seed=0, image_size=32, val_fraction=0)
    assert len(data.val) == len(data.train) > 0
    assert not (tmp_path / "a").exists() and not (tmp_path / "d").exists()


def test_too_small_a_fraction_names_its_value(tmp_path, capsys):
    root = _images(tmp_path / "img", count=2)  # 2 per class: round(2 * 0.1) = 0 validation images
    err = _refused(capsys, "--task", "images", "--data", root, "--data.image_size", "[8, 8]", "--out", tmp_path / "r")
    assert "--data.val_fraction 0.1 gives it no example of this data; give a larger" in err


def test_evaluating_needs_only_the_test_split(tmp_path):
    root = _images(tmp_path / "img", count=4)
    data = load_task("images", str(root), seed=0, image_size=[8, 8], val_fraction=0)  # the loader itself returns it
    assert len(data.val) == 0 and len(data.test) > 0


def test_shards_without_a_split_are_written_but_not_trained_on(tmp_path, capsys):
    root = _images(tmp_path / "img", count=3)
    index = write_shards(root, tmp_path / "s", shard_size=100, options={"image_size": (8, 8), "val_fraction": 0, "test_fraction": 0})
    assert index["sizes"] == {"train": 9, "val": 0, "test": 0}
    err = _refused(capsys, "--task", "images", "--data", tmp_path / "s", "--out", tmp_path / "r")
    assert re.search(r"the validation split is empty: the shards .* hold no val sample", err), err
