"""TrainConfig refuses values the loop cannot honour, in one line naming the field and value."""

from __future__ import annotations

import math

import pytest

from attnlab.errors import ConfigError
from attnlab.training import TrainConfig


@pytest.mark.parametrize("name", ["weight_decay", "warmup_epochs", "grad_clip", "min_lr_factor"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -0.5])
def test_non_finite_or_negative_floats_are_refused(name, value):
    with pytest.raises(ConfigError, match=rf"TrainConfig\.{name} must be a finite number >= 0, got {value!r}"):
        TrainConfig(**{name: value})


def test_min_lr_factor_above_one_is_refused():
    with pytest.raises(ConfigError, match=r"min_lr_factor must be in \[0, 1\], got 5"):
        TrainConfig(min_lr_factor=5)


@pytest.mark.parametrize("name, value", [("weight_decay", 0.0), ("warmup_epochs", 2.5), ("grad_clip", 0.0),
                                         ("min_lr_factor", 1.0)])
def test_edge_values_are_kept(name, value):
    assert getattr(TrainConfig(**{name: value}), name) == value
