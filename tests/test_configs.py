"""Every published recipe under ``configs/`` is a valid ``attnlab train --config`` file.

``configs/<task>/<data>.yaml`` holds the settings behind a benchmark's published result, and the
benchmark reads it (``benchmarks/_common.load_recipe``), so a recipe that stopped resolving (a
renamed field, a typo, a float YAML reads as a string) would break both. Resolving is what
``attnlab train --config FILE`` does before it loads any data, so this needs no data set.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from attnlab.config import load_yaml
from attnlab.run_config import resolve_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))


def test_there_are_recipes():
    assert len(CONFIGS) >= 10


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(ROOT / "configs")) for p in CONFIGS])
def test_recipe_resolves(path):
    values = load_yaml(path)
    assert values.get("task") == path.parent.name, "configs/<task>/<data>.yaml: the folder names the task"
    config = resolve_config(values)
    for section in ("model_config", "data_options"):
        for key, value in (values.get(section) or {}).items():
            assert getattr(config, section)[key] == value
    for key, value in (values.get("train") or {}).items():
        assert getattr(config.train, key) == value
        assert not isinstance(value, str) or not value[:1].isdigit(), f"train.{key}: {value!r} reads as a string"
    if values.get("data") is not None:
        assert not Path(values["data"]).is_absolute(), "data is relative to the repository root"
        assert values["data"].startswith("../shared/data/")


def test_benchmarks_read_the_recipes():
    """The benchmarks' recipes are the YAML files, section for section (one source of truth)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import text_classification
    import timeseries
    import translation
    from _common import load_recipe, recipe_overrides

    for name, overrides in text_classification.OVERRIDES.items():
        assert overrides == recipe_overrides(load_recipe("text-classification", name))
    assert text_classification.OVERRIDES["sst2"] == {"train": {"epochs": 3, "lr": 5e-4, "group_by_length": False}}
    for name in timeseries.REFERENCE:
        assert timeseries.OVERRIDES.get(name, {}) == recipe_overrides(load_recipe("timeseries", name))
    assert translation.CONFIG["model"] == "transformer-mt" and translation.CONFIG["train"]["epochs"] == 40
