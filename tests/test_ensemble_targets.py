"""Deep ensembles beyond classification: regression, forecasting and multi-label runs, each
against a reference built here from the members' float64 outputs and scikit-learn / numpy."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, mean_absolute_error, mean_squared_error, r2_score

from attnlab.cli import main
from attnlab.ensemble import ensemble_outputs, evaluate_ensemble
from attnlab.errors import ConfigError
from attnlab.run import evaluation_trainer, load_run
from attnlab.training.metrics import best_threshold

from .test_cli_targets import SERIES, TEXT, _series_folder, _text_rows


def _float64_outputs(run_dir, split: str, transform) -> tuple[torch.Tensor, torch.Tensor]:
    """The member's model in float64 over a split, one example at a time, through ``transform``."""
    _, model, _ = load_run(run_dir)
    _, _, task_data = evaluation_trainer(run_dir)
    data = getattr(task_data, split)
    model = model.double().eval()
    outs, targets = [], []
    with torch.no_grad():
        for i in range(len(data)):
            x, y = data[i]
            x = x[None].double() if x.is_floating_point() else x[None]
            outs.append(transform(model(x))[0])
            targets.append(torch.as_tensor(y))
    return torch.stack(outs), torch.stack(targets)


@pytest.fixture(scope="module")
def regression_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ens-reg")
    data = _series_folder(root / "Level", np.random.default_rng(0))
    runs = []
    for seed in (0, 1):
        runs.append(root / f"s{seed}")
        assert main(["train", "--task", "timeseries", "--data", str(data), "--data.target", "regression",
                     "--data.normalize", "none", "--out", str(runs[-1]), "--train.seed", str(seed), *SERIES]) == 0
    return runs


def test_regression_ensemble_averages_predictions_in_the_targets_units(regression_runs):
    refs = []
    for run in regression_runs:
        scaler = json.loads((run / "data.json").read_text())["info"]["target_scaler"]
        refs.append(_float64_outputs(run, "test", lambda z, s=scaler: z.squeeze(-1) * s["std"] + s["mean"]))
    mean = (refs[0][0] + refs[1][0]) / 2
    y = refs[0][1].double()
    result = evaluate_ensemble(regression_runs)
    assert result["test"]["mse"] == pytest.approx(mean_squared_error(y, mean), rel=1e-4)
    assert result["test"]["mae"] == pytest.approx(mean_absolute_error(y, mean), rel=1e-4)
    assert result["test"]["r2"] == pytest.approx(r2_score(y, mean), rel=1e-4, abs=1e-5)
    for member, (pred, _) in zip(result["members"], refs):
        assert member["test"]["mse"] == pytest.approx(mean_squared_error(y, pred), rel=1e-4)
    # the two members differ, so the ensemble is not just one of them
    assert abs(result["members"][0]["test"]["mse"] - result["members"][1]["test"]["mse"]) > 1e-6


@pytest.fixture(scope="module")
def forecast_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ens-fc")
    tiny = ["--data.input_length", "24", "--data.horizon", "6", "--train.batch_size", "64", "--train.progress", "false",
            "--epochs", "1"]
    runs = []
    for seed in (0, 1):
        runs.append(root / f"f{seed}")
        assert main(["train", "--task", "forecasting", "--model", "dlinear", "--out", str(runs[-1]),
                     "--train.seed", str(seed), *tiny]) == 0
    return runs


def test_forecasting_ensemble_averages_forecasts(forecast_runs):
    preds = [_float64_outputs(run, "test", lambda out: out) for run in forecast_runs]
    mean, y = (preds[0][0] + preds[1][0]) / 2, preds[0][1].double()
    result = evaluate_ensemble(forecast_runs)
    assert result["test"]["windows"] == len(y)
    assert result["test"]["mse"] == pytest.approx(float(((mean - y) ** 2).mean()), rel=1e-4)
    assert result["test"]["mae"] == pytest.approx(float((mean - y).abs().mean()), rel=1e-4)
    assert result["test"]["mse"] < max(m["test"]["mse"] for m in result["members"]) + 1e-9  # convexity of MSE


def test_runs_of_other_tasks_do_not_join(regression_runs, forecast_runs, capsys):
    with pytest.raises(ConfigError, match="cannot join an ensemble"):
        ensemble_outputs([regression_runs[0], forecast_runs[0]])
    assert main(["evaluate", str(forecast_runs[0]), str(regression_runs[0])]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot join" in err and len(err.splitlines()) == 1


def test_forecasters_of_other_columns_do_not_join(forecast_runs, tmp_path, capsys):
    other = tmp_path / "c0"
    assert main(["train", "--task", "forecasting", "--model", "dlinear", "--out", str(other), "--data.target", "c0",
                 "--data.input_length", "24", "--data.horizon", "6", "--data.features", "S", "--train.batch_size", "64",
                 "--train.progress", "false", "--epochs", "1"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(forecast_runs[0]), str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{other}: it forecasts ['c0']," in err and "must predict the same columns" in err, err
    assert len(err.splitlines()) == 1


def test_multilabel_ensemble_chooses_its_threshold_on_the_averaged_validation_probabilities(tmp_path, capsys):
    rng = np.random.default_rng(2)
    path = tmp_path / "topics.tsv"
    path.write_text("".join(f"{','.join(t)}\t{text}\n" for t, text in _text_rows(rng, 90)))
    runs = []
    for dim in ("16", "24"):  # one seed (one split), two widths: members that differ
        runs.append(tmp_path / f"m{dim}")
        assert main(["train", "--task", "text-classification", "--data", str(path), "--data.target", "multilabel",
                     "--out", str(runs[-1]), *TEXT, "--model.dim", dim, "--epochs", "3"]) == 0
    val_probs, val_y, _, _ = ensemble_outputs(runs, split="val")
    test_probs, test_y, _, _ = ensemble_outputs(runs)
    ref = [_float64_outputs(run, "test", torch.sigmoid)[0] for run in runs]
    torch.testing.assert_close(test_probs.double(), (ref[0] + ref[1]) / 2, atol=1e-5, rtol=0)
    threshold, _ = best_threshold(val_y, val_probs)
    result = evaluate_ensemble(runs)
    assert result["calibration"]["threshold"] == pytest.approx(threshold)
    predicted = (test_probs >= threshold).numpy().astype(int)
    assert result["test"]["micro_f1"] == pytest.approx(f1_score(test_y.numpy(), predicted, average="micro", zero_division=0), abs=1e-9)
    capsys.readouterr()
    assert main(["evaluate", *map(str, runs)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("ensemble of 2: micro_f1 ")


@pytest.fixture(scope="module")
def lm_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ens-lm")
    text = root / "lm.txt"
    rng = np.random.default_rng(3)
    words = ["the", "cat", "sat", "on", "a", "mat", "Dog", "ran", "far", "away"]
    text.write_text(" ".join(rng.choice(words, 1500)) + "\n")
    runs = []
    for seed, extra in ((0, []), (1, []), (2, ["--data.lowercase", "true"])):  # the third: another vocabulary
        runs.append(root / f"s{seed}")
        assert main(["train", "--task", "language-model", "--data", str(text), "--out", str(runs[-1]), "--epochs", "1",
                     "--model.dim", "16", "--model.depth", "1", "--model.num_heads", "2", "--data.block_size", "16",
                     "--train.seed", str(seed), "--train.progress", "false", *extra]) == 0
    return runs


def test_language_model_ensemble_scores_the_mixture_of_next_token_distributions(lm_runs):
    from attnlab.run import evaluate_run

    members = [_float64_outputs(r, "test", lambda logits: logits.softmax(-1)) for r in lm_runs[:2]]  # (N, T, V) each
    mixture = (members[0][0] + members[1][0]) / 2
    tokens = members[0][1]
    expected = float(-mixture.gather(-1, tokens[..., None]).log().mean())
    result = evaluate_ensemble(lm_runs[:2])
    assert result["test"]["loss"] == pytest.approx(expected, rel=1e-5)
    assert result["test"]["perplexity"] == pytest.approx(np.exp(expected), rel=1e-5)
    own = [evaluate_run(r)["test"]["loss"] for r in lm_runs[:2]]
    assert [m["test"]["loss"] for m in result["members"]] == pytest.approx(own, rel=1e-5)
    assert result["test"]["loss"] <= max(own)  # the mixture's log loss is at most the members' mean (Jensen)


def test_language_models_with_another_tokenizer_do_not_join(lm_runs, capsys):
    assert main(["evaluate", str(lm_runs[0]), str(lm_runs[2])]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{lm_runs[2]}: its tokenizer differs from {lm_runs[0]}'s" in err and len(err.splitlines()) == 1, err


def test_a_forecasting_target_named_or_left_to_its_default_is_the_same_target(forecast_runs, tmp_path):
    """--data.target names a column in forecasting: 'target' given is the default 'target', not another kind."""
    named = tmp_path / "named"
    assert main(["train", "--task", "forecasting", "--model", "dlinear", "--out", str(named), "--data.target", "target",
                 "--data.input_length", "24", "--data.horizon", "6", "--train.progress", "false", "--epochs", "1"]) == 0
    result = evaluate_ensemble([forecast_runs[0], named])
    assert result["test"]["windows"] == result["members"][0]["test"]["windows"]
