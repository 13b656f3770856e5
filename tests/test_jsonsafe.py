"""What attnlab writes as JSON is strict JSON: an undefined metric is null, never NaN."""

import json
import math

import pytest

from attnlab import jsonsafe
from attnlab.cli import main


def _strict(text: str):
    def refuse(word):
        raise ValueError(f"not JSON: {word}")
    return json.loads(text, parse_constant=refuse)


def test_non_finite_floats_become_null_at_any_depth():
    obj = {"a": math.nan, "b": [1.0, math.inf, (-math.inf, 2)], "c": {"d": {"e": math.nan, "f": "nan"}}, "g": 3, "h": True}
    assert jsonsafe.finite_or_none(obj) == {"a": None, "b": [1.0, None, [None, 2]], "c": {"d": {"e": None, "f": "nan"}},
                                            "g": 3, "h": True}
    assert _strict(jsonsafe.dumps(obj)) == jsonsafe.finite_or_none(obj)
    with pytest.raises(ValueError, match="not JSON: NaN"):
        _strict(json.dumps(obj))  # the stdlib default this replaces


def test_metrics_json_of_a_run_with_an_undefined_metric_is_strict(tmp_path, capsys):
    # fewer test windows than --eval.paper_batch_size: the drop-last figure is undefined
    run = tmp_path / "run"
    argv = ["--data.input_length", "48", "--data.horizon", "12", "--train.batch_size", "64", "--train.progress", "false",
            "--epochs", "1", "--eval.paper_batch_size", "100000"]
    assert main(["train", "--task", "forecasting", "--model", "dlinear", "--out", str(run), *argv]) == 0
    test = _strict((run / "metrics.json").read_text())["test"]
    assert test["mse_drop_last"] is None and test["mae_drop_last"] is None
    assert math.isfinite(test["mse"]) and test["mse"] > 0
    for line in (run / "metrics.jsonl").read_text().splitlines():
        _strict(line)
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json"]) == 0
    assert _strict(capsys.readouterr().out)["test"]["mse_drop_last"] is None
