"""Shard patterns as WebDataset users write them (``train-{000000..000002}.tar``, ``{a,b}``,
``*.tar``): resolved against the folder's shards.json, the named shards only, bad patterns one
DataError naming the pattern."""

from __future__ import annotations

import pytest
import torch

from attnlab.data.shard_patterns import (
    expand_pattern,
    is_shard_pattern,
    is_shard_source,
    open_shards,
)
from attnlab.data.shard_writer import write_shards
from attnlab.data.text import load_text_classification
from attnlab.errors import DataError

ROWS = ["pos\tgood movie great fun", "neg\tbad boring film", "pos\tloved it a lot", "neg\tterrible acting, dull"]
TASK = "text-classification"


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Text shards: train 40 examples in 6 shards of 7 (the last 5), val and test 4 each in one."""
    tmp = tmp_path_factory.mktemp("patterns")
    src = tmp / "t.tsv"
    src.write_text("\n".join(f"{r} {i}" for i in range(12) for r in ROWS) + "\n")
    index = write_shards(src, tmp / "s", task=TASK, shard_size=7, options={"tokenizer": "word"})
    assert [e["count"] for e in index["splits"]["train"]] == [7, 7, 7, 7, 7, 5]
    return tmp / "s"


def test_braces_zero_padded_ranges_comma_lists_and_globs_expand(shards):
    assert [p.name for p in expand_pattern(f"{shards}/train-{{000001..000003}}.tar")] == \
        ["train-000001.tar", "train-000002.tar", "train-000003.tar"]
    assert [p.name for p in expand_pattern(f"{shards}/{{val,test}}-000000.tar")] == ["val-000000.tar", "test-000000.tar"]
    assert [p.name for p in expand_pattern(f"{shards}/t*-00000[01].tar")] == \
        ["test-000000.tar", "train-000000.tar", "train-000001.tar"]
    assert [p.name for p in expand_pattern(f"{shards}/train-00000{{0,0,1}}.tar")] == ["train-000000.tar", "train-000001.tar"]


def test_a_pattern_is_told_from_a_path(shards):
    assert is_shard_pattern(f"{shards}/*.tar") and is_shard_pattern(f"{shards}/train-{{000000..000001}}.tar")
    assert not is_shard_pattern(str(shards)) and not is_shard_pattern(str(shards / "train-000000.tar"))
    assert is_shard_source(str(shards)) and is_shard_source(f"{shards}/*.tar") and not is_shard_source(None)


def test_a_range_keeps_the_named_shards_and_reads_the_other_splits_whole(shards):
    folder, index = open_shards(f"{shards}/train-{{000000..000002}}.tar", TASK)
    assert folder == shards
    assert [e["file"] for e in index["splits"]["train"]] == ["train-000000.tar", "train-000001.tar", "train-000002.tar"]
    assert index["sizes"] == {"train": 21, "val": 4, "test": 4}
    assert index["pattern"].endswith("train-{000000..000002}.tar")


def test_a_glob_over_every_shard_is_the_folder(shards):
    _, whole = open_shards(shards, TASK)
    _, globbed = open_shards(f"{shards}/*.tar", TASK)
    assert globbed["splits"] == whole["splits"] and globbed["sizes"] == whole["sizes"]


def test_a_pattern_over_every_split_cuts_each(shards):
    _, index = open_shards(f"{shards}/{{train,val,test}}-000000.tar", TASK)
    assert index["sizes"] == {"train": 7, "val": 4, "test": 4}


def test_the_loader_streams_only_the_named_shards(shards):
    whole = load_text_classification(str(shards), seed=0)
    part = load_text_classification(f"{shards}/train-{{000004,000005}}.tar", seed=0)
    assert len(part.train) == 12 and part.info["shards"].endswith("train-{000004,000005}.tar")
    assert part.class_names == whole.class_names and part.info["max_length"] == whole.info["max_length"]
    ids = [x for x, _ in part.train.evaluation_view()]
    listed = [x for x, _ in whole.train.evaluation_view()][28:]  # train-000004 and -000005: the last 7 + 5
    assert len(ids) == len(listed) == 12 and all(torch.equal(a, b) for a, b in zip(ids, listed))


@pytest.mark.parametrize("name, message", [
    ("nothing-*.tar", "matches no file"),
    ("train-{000005..000007}.tar", r"names .*train-000006.tar, which .*shards.json does not list"),
    ("train-{000000..000001.tar", "Unbalanced braces"),
])
def test_bad_patterns_are_one_data_error_naming_the_pattern(shards, name, message):
    pattern = f"{shards}/{name}"
    with pytest.raises(DataError, match=message) as info:
        open_shards(pattern, TASK)
    assert repr(pattern) in str(info.value) and "\n" not in str(info.value)


def test_a_tar_the_index_does_not_list_is_named(tmp_path, shards):
    import shutil

    copy = shutil.copytree(shards, tmp_path / "s")
    (copy / "extra.tar").write_bytes((copy / "val-000000.tar").read_bytes())
    with pytest.raises(DataError, match=r"names .*extra.tar, which .*shards.json does not list") as info:
        open_shards(f"{copy}/*.tar", TASK)
    assert f"{copy}/*.tar" in str(info.value)


def test_a_pattern_needs_the_index_beside_its_shards(tmp_path, shards):
    (tmp_path / "x-000000.tar").write_bytes((shards / "train-000000.tar").read_bytes())
    with pytest.raises(DataError, match=r"no shards.json in"):
        open_shards(f"{tmp_path}/x-*.tar", TASK)
    with pytest.raises(DataError, match="only the file name may be a pattern"):
        open_shards(f"{tmp_path}/*/train-*.tar", TASK)
