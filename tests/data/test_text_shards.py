"""Multi-label and regression text as shards: every decoded sample (ids and target) equals the
in-memory loader's bit for bit, the scaler is the one fitted on the training split, a
finished run's labels relabel the multi-hot rows by name, the validation threshold and the
test metrics agree with the in-memory splits, and bad shards are named."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from attnlab.data.shard_writer import write_shards
from attnlab.data.shards import INDEX_NAME, read_samples, write_split
from attnlab.data.targets import TargetScaler
from attnlab.data.text import load_text_classification
from attnlab.errors import ConfigError, DataError
from attnlab.training.metrics import best_threshold, multilabel_metrics, regression_metrics

WORDS = {"politics": ["vote", "law", "senate"], "sports": ["ball", "goal", "team"], "tech": ["chip", "code", "cpu"]}
OPTIONS = {"tokenizer": "word", "lowercase": True}


def write_multilabel(path: Path, n: int = 50) -> Path:
    rng = random.Random(0)
    lines = []
    for i in range(n):
        labels = rng.sample(sorted(WORDS), rng.randint(1, 2))
        lines.append(",".join(labels) + "\t" + " ".join(rng.choice(WORDS[name]) for name in labels for _ in range(3)) + f" n{i}")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_regression(path: Path, n: int = 50) -> Path:
    rng = np.random.default_rng(0)
    values = rng.normal(20.0, 7.0, n)  # units far from standardised: the scaler matters
    path.write_text("".join(f"{float(v)!r}\t{'up ' * int(abs(v) // 5)}item{i}\n" for i, v in enumerate(values)))
    return path


def _both(tmp_path: Path, target: str, write) -> tuple:
    src = write(tmp_path / "data.tsv")
    index = write_shards(src, tmp_path / "s", task="text-classification", shard_size=7, options={**OPTIONS, "target": target})
    memory = load_text_classification(str(src), seed=0, target=target, **OPTIONS)
    streamed = load_text_classification(str(tmp_path / "s"), seed=0, target=target)
    return index, memory, streamed


def _listed(stream) -> list:
    return list(stream.evaluation_view())


@pytest.mark.parametrize("target, write", [("multilabel", write_multilabel), ("regression", write_regression)])
def test_every_decoded_sample_is_the_in_memory_loaders_bit_for_bit(tmp_path, target, write):
    index, memory, streamed = _both(tmp_path, target, write)
    assert index["target"] == target and streamed.target == memory.target == target
    assert streamed.class_names == memory.class_names and streamed.metric == memory.metric
    assert streamed.info["target_scaler" if target == "regression" else "target"] == \
        memory.info["target_scaler" if target == "regression" else "target"]
    for split in ("train", "val", "test"):
        mine, theirs = getattr(memory, split), _listed(getattr(streamed, split))
        # the training split was written shuffled by the seed, val and test in order
        order = np.random.default_rng(0).permutation(len(mine)) if split == "train" else np.arange(len(mine))
        assert len(theirs) == len(mine) > 0
        for i, (ids, y) in zip(order.tolist(), theirs):
            assert torch.equal(ids, mine[i][0])
            assert y.dtype == mine[i][1].dtype == torch.float32 and y.shape == mine[i][1].shape
            assert torch.equal(y, mine[i][1]), (split, i, y, mine[i][1])
    if target == "regression":  # fitted on the training split's float32 targets, as in memory
        expected = TargetScaler.fit(memory.train.y.numpy())
        assert streamed.info["target_scaler"] == expected.to_dict()
        assert abs(expected.mean - 20.0) < 5 and expected.std > 3


def test_a_multilabel_stream_scores_as_the_in_memory_splits(tmp_path):
    """The same outputs over the streamed and the in-memory validation and test splits give the
    same threshold chosen on validation and the same micro/macro F1 and mAP: the streamed
    targets are the same rows in the same order."""
    _, memory, streamed = _both(tmp_path, "multilabel", write_multilabel)
    torch.manual_seed(0)
    weights = torch.randn(1000, 3)

    def scores(ids_and_targets):
        ids = [ids for ids, _ in ids_and_targets]
        probs = torch.stack([torch.sigmoid(weights[i % 1000].mean(0)) for i in ids])  # a fixed "model" of the ids
        return probs, torch.stack([y for _, y in ids_and_targets])

    val_m, val_s = scores([memory.val[i] for i in range(len(memory.val))]), scores(_listed(streamed.val))
    assert torch.equal(val_m[1], val_s[1])
    threshold = best_threshold(val_m[1], val_m[0])
    assert best_threshold(val_s[1], val_s[0]) == threshold
    test_m, test_s = scores([memory.test[i] for i in range(len(memory.test))]), scores(_listed(streamed.test))
    assert multilabel_metrics(test_s[1], test_s[0], threshold[0]) == multilabel_metrics(test_m[1], test_m[0], threshold[0])


def test_regression_metrics_of_a_stream_are_in_the_targets_units(tmp_path):
    _, memory, streamed = _both(tmp_path, "regression", write_regression)
    y = torch.stack([y for _, y in _listed(streamed.test)])
    assert torch.equal(y, memory.test.y)
    prediction = y.double() + 1.5  # off by 1.5 in the target's units
    got = regression_metrics(y, prediction.float())
    assert got["mae"] == pytest.approx(1.5, rel=1e-5) and got["mse"] == pytest.approx(2.25, rel=1e-5)


def test_a_finished_runs_labels_in_another_order_relabel_the_rows_and_a_foreign_label_is_named(tmp_path):
    _, memory, _ = _both(tmp_path, "multilabel", write_multilabel)
    run = ["tech", "sports", "politics"]
    streamed = load_text_classification(str(tmp_path / "s"), seed=0, target="multilabel", class_names=run)
    assert streamed.class_names == run
    for (_, y), i in zip(_listed(streamed.test), range(len(memory.test))):
        assert torch.equal(y, memory.test[i][1][[2, 1, 0]])
    with pytest.raises(DataError, match=r"s: the run has no label 'tech' \(its labels: \['politics', 'sports'\]\)"):
        load_text_classification(str(tmp_path / "s"), seed=0, target="multilabel", class_names=["politics", "sports"])


def test_a_runs_scaler_replaces_the_written_one(tmp_path):
    _both(tmp_path, "regression", write_regression)
    streamed = load_text_classification(str(tmp_path / "s"), seed=0, target="regression",
                                         target_scaler={"mean": 1.0, "std": 2.0})
    assert streamed.info["target_scaler"] == {"mean": 1.0, "std": 2.0}


def test_a_stream_of_another_target_or_lacking_its_member_is_named(tmp_path):
    _both(tmp_path, "multilabel", write_multilabel)
    with pytest.raises(ConfigError, match="holds shards written with --data.target multilabel; .* not class"):
        load_text_classification(str(tmp_path / "s"), seed=0)
    index = json.loads((tmp_path / "s" / INDEX_NAME).read_text())
    out = tmp_path / "bare"
    for split, entries in index["splits"].items():  # the same samples without their .json
        samples = [(key, {"txt": sample["txt"]}) for e in entries for key, sample in read_samples(tmp_path / "s" / e["file"])]
        index["splits"][split] = write_split(out, split, iter(samples), 100)
    (out / INDEX_NAME).write_text(json.dumps(index))
    bare = load_text_classification(str(out), seed=0, target="multilabel")
    with pytest.raises(DataError, match=r"val-000000.tar:000000000: a multilabel sample needs a .json"):
        _listed(bare.val)


def test_a_streams_first_examples_in_memory_keep_their_multi_hot_rows(tmp_path):
    _, memory, streamed = _both(tmp_path, "multilabel", write_multilabel)
    shown = streamed.test.in_memory(3)
    assert len(shown) == 3 and shown.texts == memory.test.texts[:3]
    assert torch.equal(shown.y, memory.test.y[:3]) and shown.y.dtype == torch.float32
