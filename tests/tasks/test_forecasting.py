"""--task forecasting end to end: metrics over every window, predict as CSV, explain, report."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from attnlab.cli import main
from attnlab.data.forecasting import WindowDataset, generated_series
from attnlab.models import create_model
from attnlab.tasks.forecasting import ForecastObjective, forecast_metrics
from attnlab.training import TrainConfig, Trainer

TINY = ["--data.input_length", "48", "--data.horizon", "12", "--model.depth", "1", "--model.dim", "8", "--model.num_heads", "2",
        "--model.ff_dim", "16", "--train.batch_size", "64", "--train.progress", "false", "--epochs", "1"]


def test_metrics_match_scikit_learn_and_drop_last_keeps_full_batches():
    from sklearn.metrics import mean_absolute_error, mean_squared_error

    pred, target = torch.randn(300, 3, 7), torch.randn(300, 3, 7)
    m = forecast_metrics(pred, target, paper_batch_size=128)
    p, t = pred.double().reshape(300, -1).numpy(), target.double().reshape(300, -1).numpy()
    assert m["mse"] == pytest.approx(mean_squared_error(t.ravel(), p.ravel()), rel=1e-12)
    assert m["mae"] == pytest.approx(mean_absolute_error(t.ravel(), p.ravel()), rel=1e-12)
    assert m["windows"] == 300 and m["windows_drop_last"] == 256
    assert m["mse_drop_last"] == pytest.approx(mean_squared_error(t[:256].ravel(), p[:256].ravel()), rel=1e-12)
    assert np.isnan(forecast_metrics(pred[:5], target[:5], 128)["mse_drop_last"])


def test_trainer_evaluation_scores_every_window_once():
    """300 windows under a batch size that does not divide them: none dropped, none repeated."""
    series = torch.randn(2, 300 + 20 + 5 - 1)
    test = WindowDataset(series, series, 20, 5)
    assert len(test) == 300
    model = create_model("dlinear", seq_len=20, horizon=5, in_channels=2)
    trainer = Trainer(model, ForecastObjective(128), test, None, TrainConfig(batch_size=7, progress=False, device="cpu"))
    metrics = trainer.evaluate(test)
    x = torch.stack([test[i][0] for i in range(300)])
    y = torch.stack([test[i][1] for i in range(300)])
    with torch.no_grad():
        expected = ((model(x).double() - y.double()) ** 2).mean().item()
    assert metrics["windows"] == 300
    assert metrics["mse"] == pytest.approx(expected, rel=1e-6)


def _history_csv(path: Path, rows: int, offset: int = 0) -> Path:
    s = generated_series()
    lines = ["date," + ",".join(s.names)]
    lines += [s.dates[i] + "," + ",".join(repr(float(v)) for v in s.values[i]) for i in range(offset, offset + rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.slow
def test_train_predict_explain_evaluate_through_the_cli(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--task", "forecasting", "--out", str(run), *TINY]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    test = metrics["test"]
    assert {"mse", "mae", "mse_drop_last", "mae_drop_last"} <= set(test)
    assert test["windows"] == int(2400 * 0.2) + 48 - 48 - 12 + 1  # every test window of the generated series
    assert (run / "report.html").is_file() and "forecast of target" in (run / "report.html").read_text()
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["test"]["mse"] == pytest.approx(test["mse"], rel=1e-6)

    history = _history_csv(tmp_path / "history.csv", 60, offset=100)
    assert main(["predict", str(run), str(history)]) == 0
    table = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert table[0] == ["date", "c0", "c1", "c2", "target"] and len(table) == 13
    assert table[1][0] == generated_series().dates[160] and table[12][0] == generated_series().dates[171]
    # the same forecast by hand: the last 48 rows, the run's scaler, the model, back to units
    from attnlab.run import load_run

    _, model, record = load_run(run)
    info = record["info"]
    raw = generated_series().values[112:160]
    x = torch.from_numpy((raw - np.array(info["mean"])) / np.array(info["std"])).float().T[None]
    with torch.no_grad():
        expected = model(x)[0].double().numpy().T * np.array(info["std"]) + np.array(info["mean"])
    np.testing.assert_allclose(np.array([r[1:] for r in table[1:]], dtype=float), expected, rtol=1e-4, atol=1e-4)

    png, page = tmp_path / "why.png", tmp_path / "why.html"
    long_history = _history_csv(tmp_path / "long.csv", 60 + 12)  # history + truth
    assert main(["explain", str(run), str(long_history), "-o", str(png)]) == 0
    assert main(["explain", str(run), str(history), "-o", str(page), "--rollout"]) == 0
    assert png.stat().st_size > 10_000 and page.stat().st_size > 1_000


@pytest.mark.slow
def test_dlinear_multivariate_to_one_target(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--task", "forecasting", "--model", "dlinear", "--data.features", "MS", "--out", str(run), *TINY[:4],
            "--train.progress", "false", "--epochs", "1"]
    assert main(argv) == 0
    assert json.loads((run / "data.json").read_text())["info"]["outputs"] == ["target"]
    capsys.readouterr()
    assert main(["predict", str(run), str(_history_csv(tmp_path / "h.csv", 50))]) == 0
    table = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert table[0] == ["date", "target"] and len(table) == 13
    assert main(["explain", str(run), str(tmp_path / "h.csv"), "-o", str(tmp_path / "x.png")]) == 0  # exact attribution
    capsys.readouterr()
    second = _history_csv(tmp_path / "h2.csv", 50, offset=30)
    assert main(["predict", str(run), str(tmp_path / "h.csv"), str(second)]) == 0  # each table says its file
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"# {tmp_path / 'h.csv'}" and lines[14] == f"# {second}" and len(lines) == 28
    assert lines[15] == "date,target" and lines[16].startswith(generated_series().dates[80] + ",")


def test_dlinear_explain_example_is_the_exact_attribution_of_the_target(tmp_path):
    """MS features (4 channels in, the target out) and one pair of maps per channel: the example's map is
    |mean over h of J[h, l] x[l]| / max, J the float64 Jacobian of the target's forecast by autograd."""
    import copy

    from attnlab.explain.linear import METHOD
    from attnlab.run import load_run
    from attnlab.tasks.forecasting import explain_forecast

    run = tmp_path / "run"
    assert main(["train", "--task", "forecasting", "--model", "dlinear", "--data.features", "MS", "--model.individual",
                 "true", "--out", str(run), *TINY[:4], "--train.progress", "false", "--epochs", "1"]) == 0
    _, model, record = load_run(run)
    info = record["info"]
    example = explain_forecast(model, record, str(_history_csv(tmp_path / "h.csv", 60, offset=40)))
    raw = generated_series().values[40:88]  # 60 = 48 + 12 rows: the first 48 the history, the last 12 the truth
    x = torch.from_numpy((raw - np.array(info["mean"])) / np.array(info["std"])).T.contiguous()  # (C, L) float64
    reference = copy.deepcopy(model).double()
    jac = torch.autograd.functional.jacobian(lambda s: reference(s[None])[0, -1], x)  # (H, C, L)
    assert jac[:, :-1].abs().max() == 0  # the target's forecast reads the target channel only
    want = (jac[:, -1] * x[-1]).mean(0).abs()
    assert example.maps == [] and example.spans == [(t, t + 1) for t in range(48)]
    np.testing.assert_allclose(example.methods[METHOD], (want / want.max()).numpy(), rtol=0, atol=1e-6)
    with torch.no_grad():
        forecast = reference(x[None])[0, -1].numpy() * info["std"][-1] + info["mean"][-1]
    np.testing.assert_allclose(example.forecast, forecast, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(example.truth, generated_series().values[88:100, -1])
    error = float(example.about.split("reproduce the model's forecast to ")[1].split(" ")[0])
    assert 0 <= error < 1e-5 and "training mean" in example.about


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.slow
def test_bad_series_files_are_one_line_and_exit_2_in_train_and_predict(tmp_path, capsys):
    data = _history_csv(tmp_path / "train.csv", 400)
    lines = data.read_text().splitlines()
    lines[30], lines[31] = lines[31], lines[30]  # two rows out of order
    swapped = tmp_path / "swapped.csv"
    swapped.write_text("\n".join(lines) + "\n")
    argv = ["train", "--task", "forecasting", "--model", "dlinear", *TINY[:4], "--train.progress", "false", "--epochs", "1"]
    assert main([*argv, "--data", str(swapped), "--out", str(tmp_path / "bad")]) == 2
    err = _one_line_error(capsys)
    assert f"{swapped}: line 32, column 'date'" in err and "is not after line 31's" in err, err
    assert not (tmp_path / "bad").exists()

    lines = data.read_text().splitlines()
    for i in (50, 60, 61):  # three missing values: the run fills them, and says how many
        lines[i] = ",".join(lines[i].split(",")[:-1] + [""])
    data.write_text("\n".join(lines) + "\n")
    run = tmp_path / "run"
    assert main([*argv, "--data", str(data), "--data.nan", "interpolate", "--out", str(run)]) == 0
    assert json.loads((run / "data.json").read_text())["info"]["filled_missing"] == 3
    capsys.readouterr()
    history = _history_csv(tmp_path / "history.csv", 60)
    lines = history.read_text().splitlines()
    lines[20] = ",".join(lines[20].split(",")[:-1] + ["nan"])
    history.write_text("\n".join(lines) + "\n")
    assert main(["predict", str(run), str(history), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)[0]
    assert result["note"] == "12-step forecast; 1 missing value filled by linear interpolation"

    latin = tmp_path / "latin.csv"
    latin.write_bytes(history.read_bytes().replace(b"target", "t\u00e9mp".encode("latin-1")))
    assert main(["predict", str(run), str(latin)]) == 2
    assert f"{latin}: line 1, column " in _one_line_error(capsys)
    (tmp_path / "ett").mkdir()
    assert main([*argv, "--data", str(tmp_path / "ett"), "--out", str(tmp_path / "folder")]) == 2
    assert f"{tmp_path / 'ett'}: a folder, not a series file" in _one_line_error(capsys)


def test_evaluate_reads_another_file_by_the_runs_column_names(tmp_path, capsys):
    """Another file's columns in another order are read by name (the target was its last column,
    silently); a column the run was trained on that the file lacks is refused by name."""
    data = _history_csv(tmp_path / "train.csv", 400)
    run = tmp_path / "run"
    argv = ["train", "--task", "forecasting", "--model", "dlinear", "--data.features", "MS", *TINY[:4],
            "--train.progress", "false", "--epochs", "1", "--data", str(data), "--out", str(run)]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json"]) == 0
    expected = json.loads(capsys.readouterr().out)["test"]["mse"]
    rows = [line.split(",") for line in data.read_text().splitlines()]
    order = [0, 4, 2, 1, 3, 4]  # date, target, c1, c0, c2 and an extra copy
    moved = tmp_path / "moved.csv"
    moved.write_text("\n".join(",".join([r[i] for i in order[:-1]] + [r[order[-1]] if n else "extra"])
                               for n, r in enumerate(rows)) + "\n")
    assert main(["evaluate", str(run), "--data", str(moved), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["test"]["mse"] == pytest.approx(expected, rel=1e-6)
    fewer = tmp_path / "fewer.csv"
    fewer.write_text("\n".join(",".join(r[:2] + r[3:]) for r in rows) + "\n")  # no c1
    assert main(["evaluate", str(run), "--data", str(fewer)]) == 2
    err = _one_line_error(capsys)
    assert f"{fewer}: no column(s) ['c1']" in err, err


def test_a_history_value_beyond_float32_is_refused_not_forecast_as_nan(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--task", "forecasting", "--model", "dlinear", *TINY[:4], "--train.progress", "false",
                 "--epochs", "1", "--data", str(_history_csv(tmp_path / "train.csv", 400)), "--out", str(run)]) == 0
    history = _history_csv(tmp_path / "history.csv", 60)
    lines = history.read_text().splitlines()
    lines[40] = ",".join(lines[40].split(",")[:-1] + ["1e300"])  # printed as a column of nan, exit code 0
    history.write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert main(["predict", str(run), str(history)]) == 2
    err = _one_line_error(capsys)
    assert f"{history}: line 41, column 'target': 1e+300 is" in err and "not a finite number" in err, err


def test_dlinear_explain_names_a_huge_truth_value_and_takes_its_map_by_name(tmp_path):
    from attnlab.run import explain_run

    run = tmp_path / "run"
    assert main(["train", "--task", "forecasting", "--model", "dlinear", *TINY[:4], "--train.progress", "false",
                 "--epochs", "1", "--data", str(_history_csv(tmp_path / "train.csv", 400)), "--out", str(run)]) == 0
    history = _history_csv(tmp_path / "history.csv", 60)  # 48 history rows, then 12 truth rows
    lines = history.read_text().splitlines()
    lines[55] = ",".join(lines[55].split(",")[:-1] + ["-1e200"])  # a truth row: its square overflows float64
    history.write_text("\n".join(lines) + "\n")
    page = explain_run(run, str(history), tmp_path / "x.html").read_text()
    assert "MSE against the truth beyond float64 (a truth value of -1e+200)" in page and "MSE against the truth inf" not in page
    png = explain_run(run, str(history), tmp_path / "x.png", method="exact attribution")  # its own map, by name
    assert png.stat().st_size > 0


def test_a_missing_value_in_a_column_the_run_does_not_read_is_no_error(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--task", "forecasting", "--model", "dlinear", "--data.features", "S", *TINY[:4],
                 "--train.progress", "false", "--epochs", "1", "--data", str(_history_csv(tmp_path / "train.csv", 400)),
                 "--out", str(run)]) == 0
    history = _history_csv(tmp_path / "history.csv", 60)
    capsys.readouterr()
    assert main(["predict", str(run), str(history), "--json"]) == 0
    expected = json.loads(capsys.readouterr().out)[0]["forecast"]
    lines = history.read_text().splitlines()
    lines[30] = ",".join(lines[30].split(",")[:1] + [""] + lines[30].split(",")[2:])  # c0 empty: an S run reads only 'target'
    history.write_text("\n".join(lines) + "\n")
    assert main(["predict", str(run), str(history), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["forecast"] == expected
    assert main(["predict", str(run), str(history), "--top-k", "2"]) == 2  # one forecast a file: it was ignored
    assert "--top-k 2: forecasting predict writes one forecast" in capsys.readouterr().err
    lines[30] = ",".join(lines[30].split(",")[:-1] + [""])  # the target's own cell: still refused by line and column
    history.write_text("\n".join(lines) + "\n")
    assert main(["predict", str(run), str(history)]) == 2
    err = _one_line_error(capsys)
    assert f"{history}: line 31, column 'target': missing value (NaN)" in err, err


def _page_data(path: Path) -> dict:
    import re

    block = re.search(r'<script type="application/json" id="attnlab-data">(.*?)</script>', path.read_text(), re.DOTALL)
    return json.loads(block.group(1))


@pytest.mark.slow
def test_dlinear_report_card_is_a_regression_card_beside_its_exact_attribution(tmp_path, capsys):
    """The card scores the gradient methods on 32 validation windows as a regression; every report example keeps
    its exact attribution beside them, and |input x gradient| / max IS that attribution (a float64 map from the
    effective weights against Captum through the adapter's positions)."""
    from attnlab.explain.linear import METHOD

    run = tmp_path / "run"
    assert main(["train", "--task", "forecasting", "--model", "dlinear", *TINY[:4], "--train.batch_size", "64",
                 "--train.progress", "false", "--epochs", "1", "--out", str(run)]) == 0
    data = _page_data(run / "report.html")
    card = data["card"]
    assert card["target"] == "regression" and card["examples"] == 32 and card["split"] == "validation"
    assert list(card["methods"]) == ["input_x_gradient", "integrated_gradients", "random"]
    assert "target channel's training mean" in card["removed"]
    assert data["defaultMethod"] == card["best"]
    for ex in data["examples"]:
        assert list(ex["methods"]) == [METHOD, "input_x_gradient", "integrated_gradients", "random"]
        assert all(len(v) == 48 for v in ex["methods"].values())
        ixg = np.array(ex["methods"]["input_x_gradient"])
        np.testing.assert_allclose(ixg / ixg.max(), ex["methods"][METHOD], rtol=0, atol=2e-5)

    capsys.readouterr()
    assert main(["explain", str(run), "--faithfulness", "--json", "--limit", "8"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == "dlinear" and result["examples"] == 8 and result["target"] == "regression"
    assert list(result["methods"]) == ["input_x_gradient", "integrated_gradients", "random"]
    page = tmp_path / "x.html"
    assert main(["explain", str(run), str(_history_csv(tmp_path / "h.csv", 60)), "-o", str(page)]) == 0
    offered = _page_data(page)["examples"][0]["methods"]
    assert list(offered) == [METHOD, "input_x_gradient", "integrated_gradients", "random"]
    np.testing.assert_allclose(np.array(offered["input_x_gradient"]) / max(offered["input_x_gradient"]),
                               offered[METHOD], rtol=0, atol=2e-5)


@pytest.mark.slow
def test_patchtst_card_maps_belong_to_the_windows_the_report_shows(tmp_path, capsys):
    """The report's windows are spread over the test split (not its first few): each example's method maps are its
    own window's, recomputed here from the test split through the adapter."""
    from attnlab.data.forecasting import load_forecasting_task
    from attnlab.explain.relevance import METHODS, relevance
    from attnlab.run import load_run
    from attnlab.tasks.forecast_positions import forecast_positions

    run = tmp_path / "run"
    assert main(["train", "--task", "forecasting", "--out", str(run), *TINY]) == 0
    data = _page_data(run / "report.html")
    assert data["card"]["target"] == "regression" and list(data["card"]["methods"]) == list(METHODS)
    _, model, _ = load_run(run)
    test = load_forecasting_task(None, seed=0, input_length=48, horizon=12).test
    assert len(data["examples"]) > 1
    for ex in data["examples"]:
        i = int(ex["title"].split()[2])  # "test window {i} (row ...)"
        assert set(ex["methods"]) == set(METHODS) and all(len(v) == model.num_patches for v in ex["methods"].values())
        g = forecast_positions(model, None, [test[i]], [0])[0]
        want = relevance(g.forward, g.x, "input_x_gradient", num_prefix_tokens=0)[0].abs()
        np.testing.assert_allclose(ex["methods"]["input_x_gradient"], want.numpy(), rtol=1e-4, atol=1e-6)
    capsys.readouterr()
    assert main(["explain", str(run), "--faithfulness", "--json", "--limit", "8", "--split", "test"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == "patchtst" and result["examples"] == 8 and list(result["methods"]) == list(METHODS)
    history = _history_csv(tmp_path / "h.csv", 60)
    page, png = tmp_path / "x.html", tmp_path / "x.png"
    assert main(["explain", str(run), str(history), "-o", str(page), "--method", "integrated_gradients"]) == 0
    offered = _page_data(page)
    assert list(offered["examples"][0]["methods"]) == list(METHODS) and offered["defaultMethod"] == "integrated_gradients"
    assert 'data-default="method:integrated_gradients"' in page.read_text()  # the forecast figure opens on it
    assert main(["explain", str(run), str(history), "-o", str(png), "--method", "gradient"]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_predict_csv_quotes_channel_names_as_the_csv_module_reads_them(tmp_path, capsys):
    """A channel named with a comma or a quote (as a quoted CSV header holds it) is one column of
    the forecast table, as `csv.reader` / pandas read it back, not two."""
    s = generated_series()
    names = ["temp, C", 'say "hi"', "plain", "target"]
    path = tmp_path / "odd.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["date", *names])
        writer.writerows([s.dates[i], *(repr(float(v)) for v in s.values[i])] for i in range(400))
    run = tmp_path / "run"
    assert main(["train", "--task", "forecasting", "--model", "dlinear", "--data", str(path), "--out", str(run), *TINY[:4],
                 "--train.progress", "false", "--epochs", "1"]) == 0
    history = tmp_path / "h.csv"
    history.write_text("".join(path.read_text().splitlines(keepends=True)[:61]))
    capsys.readouterr()
    assert main(["predict", str(run), str(history)]) == 0
    table = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert table[0] == ["date", *names] and len(table) == 13 and all(len(row) == 5 for row in table)
    assert main(["predict", str(run), str(history), "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert list(csv.reader(io.StringIO(result["csv"])))[0] == ["date", *names]
    assert [float(v) for v in table[1][1:]] == pytest.approx([result["forecast"][0][n] for n in names], rel=1e-5)
