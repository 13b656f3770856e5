"""A multi-label image CSV as shards: each sample holds its image bytes and ``KEY.json`` label
set (no ``.cls``), and decodes to the CSV loader's pixels and multi-hot row bit for bit; a
finished run's labels relabel the rows by name, and labels the run or the shards lack are
named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from attnlab.data.shard_writer import write_shards
from attnlab.data.shards import read_samples
from attnlab.data.vision import load_image_folder_task
from attnlab.errors import ConfigError, DataError

LABELS = ["cat", "dog", "sky"]


def write_label_csv(root: Path, n: int = 40) -> Path:
    """``n`` small images, grey and colour, with 1 to 3 of the labels each."""
    rng = np.random.default_rng(0)
    (root / "pics").mkdir(parents=True)
    rows = ["path," + ",".join(LABELS)]
    for i in range(n):
        labels = rng.integers(0, 2, len(LABELS))
        labels[i % len(LABELS)] = 1
        shape = (8, 8, 3) if i % 2 else (8, 8)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(root / "pics" / f"{i}.png")
        rows.append(f"pics/{i}.png," + ",".join(map(str, labels)))
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"


def _shards(tmp_path: Path) -> tuple[Path, Path, dict]:
    csv = write_label_csv(tmp_path / "data")
    index = write_shards(csv, tmp_path / "s", task="images", shard_size=8,
                         options={"target": "multilabel", "image_size": [8, 8]})
    return csv, tmp_path / "s", index


def _listed(stream) -> list:
    return list(stream.evaluation_view())


@pytest.mark.parametrize("lazy", [False, True])
def test_every_decoded_sample_is_the_csv_loaders_bit_for_bit(tmp_path, lazy):
    csv, shards, index = _shards(tmp_path)
    assert index["target"] == "multilabel" and index["class_names"] == LABELS
    sample = next(read_samples(shards / index["splits"]["val"][0]["file"]))[1]
    assert set(sample) == {"png", "json"}  # the file's bytes and its label set, no .cls
    memory = load_image_folder_task(str(csv), seed=0, target="multilabel", image_size=(8, 8), lazy=lazy)
    streamed = load_image_folder_task(str(shards), seed=0, target="multilabel")
    assert (streamed.target, streamed.metric, streamed.class_names) == ("multilabel", "map", LABELS)
    assert streamed.spec == memory.spec
    for split in ("train", "val", "test"):
        mine, theirs = getattr(memory, split), _listed(getattr(streamed, split))
        order = np.random.default_rng(0).permutation(len(mine)) if split == "train" else np.arange(len(mine))
        assert len(theirs) == len(mine) > 0
        for i, (x, y) in zip(order.tolist(), theirs):
            assert torch.equal(x, mine[i][0]) and torch.equal(y, mine[i][1]) and y.dtype == torch.float32
            assert y.sum() >= 1
    shown = streamed.test.in_memory(3)  # what the report holds: the multi-hot rows stay 0/1 floats
    assert torch.equal(shown.y, torch.stack([memory.test[i][1] for i in range(3)]))


def test_a_runs_labels_in_another_order_relabel_the_rows_and_missing_or_foreign_labels_are_named(tmp_path):
    csv, shards, _ = _shards(tmp_path)
    memory = load_image_folder_task(str(csv), seed=0, target="multilabel", image_size=(8, 8))
    run = ["sky", "cat", "dog"]
    streamed = load_image_folder_task(str(shards), seed=0, target="multilabel", class_names=run,
                                      spec=memory.spec.to_dict())
    assert streamed.class_names == run
    for i, (_, y) in enumerate(_listed(streamed.test)):
        assert torch.equal(y, memory.test[i][1][[2, 0, 1]])
    with pytest.raises(DataError, match=r"s: the run has no label 'sky' \(its labels: \['cat', 'dog'\]\)"):
        load_image_folder_task(str(shards), seed=0, target="multilabel", class_names=["cat", "dog"])
    with pytest.raises(DataError, match=r"s: the shards have no label 'owl' of the run's \['cat', 'dog', 'sky', 'owl'\]"):
        load_image_folder_task(str(shards), seed=0, target="multilabel", class_names=LABELS + ["owl"])
    with pytest.raises(ConfigError, match="holds shards written with --data.target multilabel; .* not class"):
        load_image_folder_task(str(shards), seed=0)


def test_a_class_folder_still_writes_cls_members(tmp_path):
    root = tmp_path / "f"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for k in range(6):
            Image.fromarray(np.full((4, 4), 40 * k, np.uint8)).save(root / c / f"{k}.png")
    index = write_shards(root, tmp_path / "s", task="images", shard_size=4, options={"image_size": [4, 4]})
    assert index["target"] == "class"
    _, sample = next(read_samples(tmp_path / "s" / index["splits"]["train"][0]["file"]))
    assert set(sample) == {"png", "cls"}
    assert json.loads((tmp_path / "s" / "shards.json").read_text())["class_names"] == ["a", "b"]
