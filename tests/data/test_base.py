"""Shared data-loading checks (attnlab.data.base)."""

from __future__ import annotations

import pytest

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
