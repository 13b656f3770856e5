"""The exact attribution of an affine forecast (explain.linear) against float64 sums written out here, and
end to end: a DLinear run's report.html and ``attnlab explain`` pages against autograd's Jacobian."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from attnlab.explain.linear import METHOD, linear_attribution
from tests.explain.test_forecast_view import _assert_self_contained, _check_bands, _check_lines, _figures
from tests.explain.test_report import _payload


def test_contributions_sum_with_the_bias_to_the_forecast_and_relevance_is_the_scaled_mean():
    rng = np.random.default_rng(0)
    H, L = 5, 9
    w, b, x = rng.normal(size=(H, L)), rng.normal(size=H), rng.normal(size=L)
    forecast = np.array([sum(w[h, l] * x[l] for l in range(L)) + b[h] for h in range(H)])
    got = linear_attribution(torch.from_numpy(w).float(), b, torch.from_numpy(x), forecast + 1e-3 * np.arange(H))
    np.testing.assert_allclose(got.contributions, np.float32(w).astype(np.float64) * x[None], rtol=0, atol=1e-15)
    assert got.error == pytest.approx(4e-3, abs=1e-6)  # the largest gap: float32 weights plus the offset added above
    mean = np.array([sum(w[h, l] * x[l] for h in range(H)) / H for l in range(L)])
    np.testing.assert_allclose(got.relevance, np.abs(mean) / np.abs(mean).max(), atol=1e-6)
    assert got.relevance.max() == 1.0 and got.relevance.min() >= 0.0
    caption = got.caption()
    assert METHOD in caption and "not attention" in caption and "mean of the 5 forecast steps" in caption
    assert "training mean" in caption and "reproduce the model's forecast to 0.004" in caption


def test_an_all_zero_input_has_zero_relevance_and_bad_shapes_are_named():
    got = linear_attribution(np.ones((3, 4)), np.zeros(3), np.zeros(4), np.zeros(3))
    assert got.error == 0.0 and not got.relevance.any()
    with pytest.raises(ValueError, match=r"weight \(H, L\), bias \(H,\), x \(L,\), forecast \(H,\); got \(3, 4\), \(3,\), \(5,\)"):
        linear_attribution(np.ones((3, 4)), np.zeros(3), np.zeros(5), np.zeros(3))
    with pytest.raises(ValueError, match="not finite"):
        linear_attribution(np.ones((3, 4)), np.zeros(3), np.zeros(4), np.array([0.0, np.nan, 0.0]))


def test_a_dlinear_run_reports_and_explains_its_exact_attribution(tmp_path, capsys):
    """report.html of a DLinear run (no attention) shows each test window's exact attribution, and
    ``explain`` writes it as PNG and HTML: the relevance is |mean over h of J[h, l] x[l]| with J the
    float64 Jacobian of the trained model's forecast (autograd, not the model's own effective_weights)."""
    import copy

    from attnlab.cli import main
    from attnlab.data.forecasting import generated_series
    from attnlab.run import load_run
    from tests.tasks.test_forecasting import TINY, _history_csv

    run = tmp_path / "run"
    assert main(["train", "--task", "forecasting", "--model", "dlinear", "--out", str(run), *TINY[:4],
                 "--train.batch_size", "64", "--train.progress", "false", "--epochs", "1"]) == 0
    _, model, record = load_run(run)
    info = record["info"]
    n, h = info["input_length"], info["horizon"]
    mean, std = np.array(info["mean"]), np.array(info["std"])
    series = generated_series()
    reference = copy.deepcopy(model).double().eval()

    def reference_at(row: int) -> tuple[np.ndarray, np.ndarray]:
        """Float64 relevance (L,), max 1, and forecast (H,) in units, of the window whose forecast starts at ``row``."""
        x = torch.from_numpy((series.values[row - n:row] - mean) / std).T.contiguous()  # (C, L) float64
        jac = torch.autograd.functional.jacobian(lambda s: reference(s[None])[0, -1], x)[:, -1]  # (H, L): the target's
        r = (jac * x[-1]).mean(0).abs().numpy()
        with torch.no_grad():
            forecast = reference(x[None])[0, -1].numpy() * std[-1] + mean[-1]
        return r / r.max(), forecast

    def check(page: str, rows: list[int]) -> None:
        _assert_self_contained(page)
        examples = _payload(page)["examples"]
        figures = _figures(page)
        assert len(examples) == len(figures) == len(rows) >= 1
        random = torch.rand(len(rows), n, generator=torch.Generator().manual_seed(0)).numpy()  # the floor, one batch
        for i, row in enumerate(rows):
            want, forecast = reference_at(row)
            assert examples[i]["layers"] == [] and examples[i]["rollout"] is None and len(examples[i]["tokens"]) == n
            np.testing.assert_allclose(examples[i]["methods"][METHOD], want, atol=2e-6)  # written to 6 decimals
            # the relevance methods beside it: |input x gradient| of a linear model, and IG from 0, ARE its map
            maps = {METHOD: want, "input_x_gradient": want, "integrated_gradients": want, "random": random[i]}
            assert list(examples[i]["methods"]) == list(maps)
            _check_bands(figures[i], [], [(t, t + 1) for t in range(n)], n, maps)
            _check_lines(figures[i], series.values[row - n:row, -1], forecast, series.values[row:row + h, -1])
        for error in re.findall(r"reproduce the model&#x27;s forecast to (\S+) \(scaled units\)", page):
            assert float(error) < 1e-5  # float32 forward against the float64 sum

    page = (run / "report.html").read_text(encoding="utf-8")
    rows = [int(r) for r in re.findall(r"<figcaption>test window \d+ \(row (\d+)\):", page)]
    assert len(rows) == 4 and page.count("exact attribution of the forecast to each input step, not attention") == 4
    check(page, rows)

    history = _history_csv(tmp_path / "long.csv", n + 10 + h, offset=300)  # the last h rows are the truth
    png, html_page = tmp_path / "why.png", tmp_path / "why.html"
    assert main(["explain", str(run), str(history), "-o", str(png)]) == 0
    assert main(["explain", str(run), str(history), "-o", str(html_page)]) == 0
    assert png.stat().st_size > 10_000
    check(html_page.read_text(encoding="utf-8"), [300 + 10 + n])
    capsys.readouterr()
    assert main(["explain", str(run), str(history), "-o", str(png), "--head", "0"]) == 2  # no head to choose
    err = capsys.readouterr().err.strip()
    assert err.endswith("this model has no attention layers: --layer, --head and --rollout do not apply (its map: "
                        "exact attribution)") and len(err.splitlines()) == 1, err
