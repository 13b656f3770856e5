"""Shared data-loading checks (attnlab.data.base)."""

from __future__ import annotations

import pytest
import torch

from attnlab.data import audio, parallel, sasrec, text, timeseries, vision  # noqa: F401  (register the loaders)
from attnlab.tasks import load_task
from attnlab.errors import DataError

PATH_TASKS = ("translation", "sasrec", "timeseries", "text-classification", "language-model", "audio", "mnist", "images")


@pytest.mark.parametrize("task", PATH_TASKS)
def test_a_missing_data_path_is_named_by_every_loader(task, tmp_path):
    """Loaders are reached without the CLI too (saved run configs, scripts): each must say the path is missing."""
    missing = tmp_path / "moved-away"
    with pytest.raises(DataError, match="data path not found") as info:
        load_task(task, str(missing), seed=0)
    assert str(missing) in str(info.value)


def test_class_index_tensors_parse_cls_members_and_make_each_class_once():
    from attnlab.data.base import ClassIndexTensors

    labels = ClassIndexTensors()
    values = [int(v) for v in torch.randint(0, 50, (40,))]
    got = [labels(str(v).encode("ascii"), f"s:{i}") for i, v in enumerate(values)]
    assert [int(y) for y in got] == values and all(y.dtype == torch.int64 and y.shape == () for y in got)
    for v, y in zip(values, got):
        assert y is labels(str(v).encode("ascii"), "again")  # one tensor per class
    for bad in (b"x1", b"\xff", b""):
        with pytest.raises(DataError, match=r"shard-3.tar:k7: .cls is not a class index"):
            labels(bad, "shard-3.tar:k7")


def test_a_switch_given_as_text_is_refused_not_read_as_true():
    from attnlab.data.base import call_with_options
    from attnlab.errors import ConfigError

    def loader(*, seed: int, skip_bad: bool = False, lazy: bool | None = None, name: str = "x"):
        return skip_bad, lazy, name

    assert call_with_options(loader, "t", {"skip_bad": True, "lazy": None, "name": "true"}, seed=0) == (True, None, "true")
    for option, value in (("skip_bad", "disabled"), ("lazy", "maybe"), ("skip_bad", None), ("lazy", 1)):
        with pytest.raises(ConfigError, match=rf"^--data.{option} must be true or false, got {value!r}$"):
            call_with_options(loader, "t", {option: value}, seed=0)
