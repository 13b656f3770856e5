"""Long-horizon forecasting task family: ``--task forecasting --data ETTh1.csv``.

Data: `attnlab.data.forecasting` (a CSV with a date column and numeric channels, or an .npy /
.npz (T, C); the Informer / DLinear / PatchTST split and train-only scaler; without ``--data``
a generated seasonal series). Models: ``patchtst`` (Nie et al. 2023, the default) and
``dlinear`` (Zeng et al. 2023), both (B, C, L) -> (B, C_out, H).

Objective: mean squared error on the scaled values, as the papers train. Evaluation: ``mse``
and ``mae`` over every channel, step and window of the split, with no window dropped; the
papers' test loaders drop the last partial batch (``drop_last=True``, which flatters the
figure: Qiu et al. 2024, TFB), so ``mse_drop_last`` / ``mae_drop_last`` give the figure over
the windows such a loader keeps (``--eval.paper_batch_size``, 128 as PatchTST; DLinear's
scripts use 32), for comparison with published tables only.

``attnlab predict RUN history.csv`` forecasts the ``horizon`` steps after the file's last row
from its last ``input_length`` rows and prints them as CSV in the data's own units, with
timestamps when the file has dates. ``attnlab explain RUN file.csv -o out.png`` (or ``out.html``)
shows which input patches attend where (for DLinear, linear in its input: each input step's exact
contribution to the forecast, ``explain.linear``), on the target channel's history, forecast and (when the
file holds ``input_length + horizon`` rows or more: the last ``horizon`` rows are then the truth,
the ``input_length`` before them the history) the truth; report.html draws that plot for a few
test windows (``explain.forecast_view``), with the windows' dates on the time axis. The relevance
methods (``explain RUN INPUT --method``), ``explain RUN --faithfulness`` and the report's card explain
the mean of the target channel's forecast over the target's input patches or steps
(``tasks.forecast_positions``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.data.base import call_with_options
from attnlab.data.forecasting import future_dates, load_forecasting_task, read_series
from attnlab.errors import ConfigError, DataError
from attnlab.tasks.base import NoOptions, RunVocabulary, TaskSpec
from attnlab.tasks.forecast_positions import forecast_positions
from attnlab.tasks.positions import span_names

__all__ = [
    "DEFAULT_MODEL_CONFIG",
    "DEFAULT_TRAIN",
    "SPECS",
    "ForecastEvaluation",
    "ForecastObjective",
    "explain_forecast",
    "forecast_record_data",
    "forecast_run_vocabulary",
    "forecast_metrics",
    "predict_forecast",
]

# Defaults that train on a CPU in minutes on the built-in series; the ETTh1 recipes are configs/forecasting/*.yaml.
DEFAULT_MODEL_CONFIG: dict[str, Any] = {}
DEFAULT_TRAIN: dict[str, Any] = {"epochs": 10, "batch_size": 64, "lr": 1e-3, "weight_decay": 0.0, "warmup_epochs": 0,
                                 "grad_clip": 0.0, "keep": "best"}
DEFAULT_DATA_OPTIONS: dict[str, Any] = {}


@dataclass
class ForecastEvaluation:
    """``--eval.paper_batch_size``: the test batch size of the paper to compare with; the
    ``*_drop_last`` metrics leave out the windows its ``drop_last=True`` loader drops."""

    paper_batch_size: int = 128

    def __post_init__(self) -> None:
        if not isinstance(self.paper_batch_size, int) or self.paper_batch_size < 1:
            raise ConfigError(f"eval.paper_batch_size must be an integer >= 1, got {self.paper_batch_size!r}")


def forecast_metrics(pred: Tensor, target: Tensor, paper_batch_size: int = 128) -> dict[str, float]:
    """MSE and MAE over every element, and over the first ``floor(B / paper_batch_size) *
    paper_batch_size`` windows (what a ``drop_last`` loader evaluates; NaN when that is none).

    Shape: pred, target (B, C, H), in window order.
    """
    err = pred.double() - target.double()
    sq, ab = err.pow(2).flatten(1).mean(1), err.abs().flatten(1).mean(1)  # (B,) per window (all equal-sized)
    kept = (len(err) // paper_batch_size) * paper_batch_size
    nan = float("nan")
    return {"mse": float(sq.mean()), "mae": float(ab.mean()),
            "mse_drop_last": float(sq[:kept].mean()) if kept else nan, "mae_drop_last": float(ab[:kept].mean()) if kept else nan,
            "windows": float(len(err)), "windows_drop_last": float(kept)}


def _outputs(model: nn.Module, x: Tensor, channels: int) -> Tensor:
    """The model's forecast of the target's channels: (B, C_out, H); MS keeps the last channel."""
    out = model(x)
    return out[:, -channels:] if out.shape[1] != channels else out


class ForecastObjective:
    """MSE on scaled values (training); ``forecast_metrics`` over every window (evaluation)."""

    metric = "mse"
    greater_is_better = False

    def __init__(self, paper_batch_size: int = 128):
        self.paper_batch_size = paper_batch_size

    def loss(self, model: nn.Module, batch: Any) -> tuple[Tensor, int]:
        x, y = batch
        return F.mse_loss(_outputs(model, x, y.shape[1]).float(), y.float()), int(x.shape[0])

    @torch.no_grad()
    def outputs(self, model: nn.Module, batches: Iterable[Any]) -> tuple[Tensor, Tensor]:
        """(forecasts, truths), each (B, C_out, H) float32 on the CPU, in window order."""
        preds, targets = [], []
        for x, y in batches:
            preds.append(_outputs(model, x, y.shape[1]).float().cpu())
            targets.append(y.float().cpu())
        if not preds:
            raise DataError("forecasting: the evaluated split holds no window")
        return torch.cat(preds), torch.cat(targets)

    def score(self, outputs: Tensor, targets: Tensor) -> dict[str, float]:
        metrics = forecast_metrics(outputs, targets, self.paper_batch_size)
        metrics["loss"] = metrics["mse"]
        return metrics

    def evaluate(self, model: nn.Module, batches: Iterable[Any]) -> dict[str, float]:
        return self.score(*self.outputs(model, batches))


def _objective(task_data, options: NoOptions, evaluation: ForecastEvaluation) -> ForecastObjective:
    return ForecastObjective(evaluation.paper_batch_size)


def forecast_fields(task_data) -> dict[str, Any]:
    info = task_data.info
    return {"seq_len": info["input_length"], "horizon": info["horizon"], "in_channels": len(info["channels"]),
            "out_channels": len(info["outputs"]) if info["features"] == "MS" else 0}


def load_forecasting(data: str | None, *, seed: int, **options: Any):
    """--task forecasting: a CSV (date + channels) or .npy/.npz (T, C); the generated series without --data."""
    return call_with_options(load_forecasting_task, "forecasting", options, path=data, seed=seed)


def forecast_run_vocabulary(record: dict[str, Any]) -> dict[str, Any]:
    """A finished run's input channels (model order, the target last) and target as loader options:
    another file (``evaluate RUN --data OTHER``) is read by column name, not by position."""
    info = record.get("info") if isinstance(record.get("info"), dict) else {}
    channels, target = info.get("channels"), info.get("target")
    if not (isinstance(channels, list) and channels and isinstance(target, str)):
        return {}  # an older run: read as before
    return {"channels": [str(n) for n in channels], "target": target}


# --- predict / explain / report ----------------------------------------------------------------


def _scale(info: dict[str, Any], values: np.ndarray) -> Tensor:
    """Raw (T, C_in) in the run's channel order -> scaled (C_in, T) float32."""
    mean, std = np.asarray(info["mean"]), np.asarray(info["std"])
    return torch.from_numpy((values - mean) / std).float().T.contiguous()


def _unscale(info: dict[str, Any], scaled: Tensor) -> np.ndarray:
    """Scaled (C_out, H) -> (C_out, H) float64 in the data's units (the output channels are the last inputs)."""
    k = len(info["outputs"])
    mean, std = np.asarray(info["mean"][-k:])[:, None], np.asarray(info["std"][-k:])[:, None]
    return scaled.double().cpu().numpy() * std + mean


def _read_history(info: dict[str, Any], item: str):
    """A history file -> (raw values (T, C_in) in the run's channel order, dates or None, a note on
    the missing values filled (the run's ``--data.nan interpolate``), or "", each row's place in the file)."""
    series = read_series(item, date_column=info.get("date_column", "date"), nan=info.get("nan", "refuse"),
                         date_format=info.get("date_format"), columns=info["channels"])  # other columns are not read
    values = series.values
    if len(values) < info["input_length"]:
        raise DataError(f"{item}: {len(values)} rows; the model forecasts from the last input_length = {info['input_length']}")
    n = series.filled
    filled = f"{n} missing value{'s' if n > 1 else ''} filled by linear interpolation" if n else ""
    where = [f"line {n}" for n in series.lines] if series.lines is not None else [f"row {i}" for i in range(len(values))]
    return values, series.dates, filled, where


def _check_forecast(info: dict[str, Any], item: str, forecast: np.ndarray, window: np.ndarray, where: list[str]) -> None:
    """Refuse a forecast that is not finite (an input beyond what the model's float32 holds once scaled),
    naming the input cell furthest from the training mean; it was printed as ``nan``."""
    if np.isfinite(forecast).all():
        return
    with np.errstate(over="ignore", invalid="ignore"):
        far = np.abs((window - np.asarray(info["mean"])) / np.asarray(info["std"]))  # (L, C_in)
    r, c = np.unravel_index(int(np.argmax(far)), far.shape)
    raise DataError(f"{item}: {where[len(where) - len(window) + r]}, column {info['channels'][c]!r}: {window[r, c]:g} is "
                    f"{far[r, c]:.3g} standard deviations from the training mean; the forecast from it is not a finite number")


def _explains(model: nn.Module) -> bool:
    """A model report.html and ``explain`` can show: attention maps, or an exact linear attribution."""
    from attnlab.explain.capture import attention_modules

    return hasattr(model, "effective_weights") or bool(attention_modules(model))


def _example(model: nn.Module, info: dict[str, Any], x: Tensor, truth: np.ndarray | None, title: str,
             dates: list[str] | None = None):
    """One scaled window (C_in, L) through the model: a ForecastExample of the target channel
    (``dates``: the L input and H forecast steps' timestamps, or None). A model linear in its input
    (``effective_weights``: DLinear) gets its exact attribution per input step instead of attention maps."""
    from attnlab.explain.capture import capture
    from attnlab.explain.forecast import ForecastExample
    from attnlab.explain.linear import METHOD, linear_attribution

    device = next(model.parameters()).device
    model.eval()
    k = len(info["outputs"])
    c = len(info["channels"]) - 1  # the target is the last input channel
    maps, names, methods, about = [], [], None, ""
    if hasattr(model, "effective_weights"):
        with torch.no_grad():
            output = _outputs(model, x[None].to(device), k)[0].float().cpu()  # (C_out, H)
        weight, bias = model.effective_weights(c)  # (H, L), (H,): the target channel's forecast = weight @ x[c] + bias
        attribution = linear_attribution(weight, bias, x[c], output[-1])
        methods, about = {METHOD: attribution.relevance}, attribution.caption()
        spans = [(t, t + 1) for t in range(x.shape[-1])]
    else:
        captured = capture(model, x[None].to(device), device="cpu")  # each (C_in, heads, N, N): one sequence per channel
        output = captured.output[0, -k:].float()
        maps, names = [m[c].float().numpy() for m in captured.maps], list(captured.names)
        spans = model.token_spans() if hasattr(model, "token_spans") else [(0, x.shape[-1])]
    forecast = _unscale(info, output)[-1]  # (H,) the target channel
    history = x[c].double().numpy() * info["std"][c] + info["mean"][c]
    text = f"{len(forecast)}-step forecast of {info['target']}: mean {forecast.mean():.4g}, range [{forecast.min():.4g}, {forecast.max():.4g}]"
    if truth is not None:
        with np.errstate(over="ignore"):
            mse = float(np.mean((forecast - truth) ** 2))
        text += (f"; MSE against the truth {mse:.4g} ({info['target']}'s units squared)" if np.isfinite(mse) else
                 f"; MSE against the truth beyond float64 (a truth value of {truth[np.argmax(np.abs(truth))]:.3g})")
    return ForecastExample(
        title=title, kind="series", input=history.astype(np.float32), maps=maps, layer_names=names,
        tokens=span_names(spans), prediction=text, label=None,
        forecast=forecast, truth=truth, spans=spans, channel=info["target"], dates=dates, methods=methods, about=about,
    )


def _report(model: nn.Module, task_data, count: int) -> list:
    if not _explains(model):  # neither attention nor an exact attribution to show
        return []
    info, test = task_data.info, task_data.test
    picks = sorted({int(i) for i in np.linspace(0, len(test) - 1, min(count, len(test)))})
    dates = getattr(test, "dates", None)
    span = info["input_length"] + info["horizon"]
    out = []
    for i in picks:
        x, y = test[i]
        truth = _unscale(info, y)[-1]
        example = _example(model, info, x, truth, f"test window {i} (row {test.start + i + test.input_length})",
                           None if dates is None else list(dates[i : i + span]))
        example.item = (x, y)  # the window the report card's maps explain (the picks are spread, not the first few)
        out.append(example)
    return out


def predict_forecast(model: nn.Module, record: dict[str, Any], inputs: list[str], top_k: int) -> list[dict[str, Any]]:
    """One result per history file: {"input", "note", "forecast" (rows), "csv"}; the CLI prints the CSV."""
    if top_k != 1:  # it was silently ignored
        raise ConfigError(f"--top-k {top_k}: forecasting predict writes one forecast; --top-k does not apply")
    info = record["info"]
    L = info["input_length"]
    device = next(model.parameters()).device
    results = []
    model.eval()
    for item in inputs:
        values, dates, filled, where = _read_history(info, item)
        x = _scale(info, values[-L:])  # (C_in, L)
        with torch.no_grad():
            out = _outputs(model, x[None].to(device), len(info["outputs"]))[0].float()  # (C_out, H)
        forecast = _unscale(info, out).T  # (H, C_out)
        _check_forecast(info, item, forecast, values[-L:], where)
        stamps = future_dates(dates, len(forecast), info.get("date_format")) if dates else None
        header = (["date"] if stamps else ["step"]) + list(info["outputs"])
        buffer = io.StringIO()
        table = csv.writer(buffer, lineterminator="\n")  # a channel named "temp, C" stays one column, quoted
        table.writerow(header)
        rows = []
        for h, row in enumerate(forecast):
            key = stamps[h] if stamps else h + 1
            rows.append({header[0]: key, **{n: float(v) for n, v in zip(info["outputs"], row)}})
            table.writerow([str(key)] + [f"{float(v):.6g}" for v in row])
        note = f"{len(forecast)}-step forecast" + (f"; {filled}" if filled else "")
        results.append({"input": item, "class": None, "note": note, "forecast": rows, "csv": buffer.getvalue()})
    return results


def explain_forecast(model: nn.Module, record: dict[str, Any], item: str) -> Any:
    """The target channel's forecast from ``item`` as a `ForecastExample` (with the truth when the
    file holds input_length + horizon rows or more)."""
    if not _explains(model):
        raise ConfigError(f"model {getattr(model, 'model_name', type(model).__name__)!r} has no attention to explain")
    info = record["info"]
    L, H = info["input_length"], info["horizon"]
    values, dates, filled, where = _read_history(info, item)
    truth, stamps = None, None
    if len(values) >= L + H:
        truth = values[-H:, -1]
        values = values[:-H]
        stamps = dates[-(L + H):] if dates else None
    elif dates:
        future = future_dates(dates, H, info.get("date_format"))
        stamps = dates[-L:] + future if future else None
    title = Path(item).name + (f" ({filled})" if filled else "")
    x = _scale(info, values[-L:])  # (C_in, L)
    example = _example(model, info, x, truth, title, stamps)
    _check_forecast(info, item, example.forecast, values[-L:], where[: len(values)])
    example.item = (x, None)  # what the relevance methods attribute (forecast_positions)
    return example


def forecast_record_data(record: dict[str, Any]) -> SimpleNamespace:
    """What `forecast_positions` needs of the task data for one input file: nothing the record
    lacks (removed is the scaled target's training mean, 0), so the training file is not read again."""
    return SimpleNamespace(task="forecasting", info=record["info"])


SPECS = (
    TaskSpec(
        name="forecasting", load=load_forecasting, models=("patchtst", "dlinear"), input_suffixes=(".csv", ".npy", ".npz"),
        description="long-horizon forecasting: a CSV (date + channels) or .npy/.npz (T, C); a generated series by default",
        default_model_config=DEFAULT_MODEL_CONFIG, default_train=DEFAULT_TRAIN, default_data_options=DEFAULT_DATA_OPTIONS,
        objective_options=NoOptions, evaluation_options=ForecastEvaluation, objective=_objective, model_fields=forecast_fields,
        report_examples=_report, predict=predict_forecast, explain_example=explain_forecast,
        explain_positions=forecast_positions, explain_record_data=forecast_record_data,
        run_vocabulary=RunVocabulary(forecast_run_vocabulary),
    ),
)
