"""A shard sample's target member: a class index, a label set or a number, written and read back
bit for bit; a label the run lacks, a missing or malformed member, and shards of another
target than the run's each refused by name."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from attnlab.data.shard_targets import TargetDecoder, check_target_of, encode_target, scaler_of, target_of_index
from attnlab.data.targets import TargetScaler, multi_hot
from attnlab.errors import ConfigError, DataError


def test_a_label_set_is_written_by_name_and_read_in_the_runs_label_order():
    names = ["politics", "sports", "tech"]
    y = multi_hot([["tech", "politics"]], names)[0]  # (K,) float32, as the in-memory loader holds it
    member = encode_target("multilabel", y, names)
    assert set(member) == {"json"} and json.loads(member["json"]) == {"labels": ["politics", "tech"]}  # no .cls
    assert torch.equal(TargetDecoder("multilabel", names)(member, "s:0"), y)
    run = ["tech", "sports", "politics"]  # a finished run listing its labels in another order
    got = TargetDecoder("multilabel", run)(member, "s:0")
    assert got.dtype == torch.float32 and got.tolist() == [1.0, 0.0, 1.0]


def test_a_number_round_trips_bit_for_bit_as_its_shortest_decimal():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0, 1e3, 200), [0.1, -3.5, 1e-7, 3.4e38, -1.17549435e-38, 0.0]]).astype(np.float32)
    decode = TargetDecoder("regression", ["target"])
    for v in values:
        member = encode_target("regression", torch.tensor(v), ["target"])
        got = decode(member, "s:0")
        assert got.dtype == torch.float32 and got.item() == float(v), (v, member)
        assert np.float32(json.loads(member["json"])["value"]) == v
    assert encode_target("regression", torch.tensor(np.float32(3.1)), ["target"]) == {"json": b'{"value": 3.1}'}


def test_a_class_is_its_index_relabelled_by_position():
    member = encode_target("class", torch.tensor(1), ["a", "b"])
    assert member == {"cls": b"1"}
    assert int(TargetDecoder("class", ["b", "a"], positions=[1, 0])(member, "s:0")) == 0


@pytest.mark.parametrize("target, sample, message", [
    ("multilabel", {"txt": b"x"}, "s:3: a multilabel sample needs a .json {\"labels\": [names]}, has ['txt']"),
    ("multilabel", {"json": b'{"labels": ["sports", "cooking"]}'}, "s:3: label 'cooking' is not one of the run's 2 labels"),
    ("multilabel", {"json": b'{"labels": []}'}, "s:3: empty label set"),
    ("multilabel", {"json": b'{"labels": "sports"}'}, "labels must be a list of label names"),
    ("multilabel", {"json": b"not json"}, "s:3: .json is not {\"labels\": [names]}"),
    ("regression", {"cls": b"1"}, "s:3: a regression sample needs a .json {\"value\": number}, has ['cls']"),
    ("regression", {"json": b'{"value": NaN}'}, "regression target nan is not a finite number"),
    ("regression", {"json": b'{"value": "3.5"}'}, "regression target '3.5' is not a finite number"),
    ("regression", {"json": b'{"value": true}'}, "regression target True is not a finite number"),
    ("regression", {"json": b'{"target": 3.5}'}, ".json is not {\"value\": number}"),
])
def test_a_bad_target_member_is_named(target, sample, message):
    with pytest.raises(DataError) as info:
        TargetDecoder(target, ["politics", "sports"] if target == "multilabel" else ["target"])(sample, "s:3")
    assert str(info.value).startswith("s:3: ") and message in str(info.value), str(info.value)


def test_shards_of_another_target_than_the_runs_are_refused_with_the_flag_to_pass():
    assert target_of_index({"class_names": ["a"]}) == "class"  # written before targets: classes
    assert check_target_of("d", {"target": "multilabel"}, "multilabel") == "multilabel"
    with pytest.raises(ConfigError, match="d holds shards written with --data.target multilabel; .* not class"):
        check_target_of("d", {"target": "multilabel"}, "class")


def test_the_scaler_is_the_runs_or_the_one_written_with_the_shards():
    written = TargetScaler.fit(np.array([1.0, 2.0, 6.0])).to_dict()
    assert scaler_of("d", {"info": {"target_scaler": written}}, None) == written
    assert scaler_of("d", {"info": {"target_scaler": written}}, {"mean": 5, "std": 2}) == {"mean": 5.0, "std": 2.0}
    with pytest.raises(DataError, match="d: regression shards need info.target_scaler"):
        scaler_of("d", {"info": {}}, None)
