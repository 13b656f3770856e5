"""A forecast as inline SVG for report.html: the plotted channel's history, the forecast after the
cut and the truth when known, with each input patch's relevance as coloured bands behind the history.

The picture ``ForecastExample.draw_png`` draws with matplotlib, drawn as SVG text instead, so the
page stays one self-contained file (no script library, no font, no image fetched). Relevance is
computed here, in Python, for every choice the explorer offers: each layer's attention (the mean
of its heads, and each head), the rollout through all layers (Abnar & Zuidema 2020) and each
relevance method of the example; each is per patch, min-max scaled over the patches as
``draw_forecast`` scales it, and spread over the time steps with ``spread_scores`` (a step
covered by two overlapping patches gets their mean). The bands are the segments between patch
borders, where every choice's spread value is constant, so one set of ``<rect>`` serves every
choice: the page's script (``assets/figures.js``) only copies the chosen row of precomputed
values into them when the layer / head / map selectors change. Without script the figure shows
the choice the selectors start on.

The attention bands show how much the patches attend to each input patch, not a measured effect
on the forecast (Jain & Wallace 2019). A model without attention (DLinear) has no layer choices;
its one map is the exact attribution of ``explain.linear``, one band per input step.
"""

from __future__ import annotations

import html
import itertools
import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["spread_scores", "position_unit", "relevance_choices", "band_segments", "band_opacity", "forecast_svg", "SVG_SIZE"]

SVG_SIZE = (720, 300)  # width, height in CSS pixels (the viewBox; it scales down with the page)
_PLOT = (60, 30, 12, 54)  # left, top, right, bottom margins
_BAND = "#d6451e"  # the explorer's warm hue for tokens and time steps
_COLOURS = {"history": "#1d2430", "truth": "#2f6fde", "forecast": "#d62728"}
_INK, _MUTED, _LINE = "#1d2430", "#5f6b7a", "#dde2e8"


def position_unit(spans: Sequence[tuple[int, int]], *, plural: bool = False) -> str:
    """What one position of a forecast's map covers, for labels: "input step" when every span is one
    step (DLinear), else "input patch" (``plural``: "input steps" / "input patches")."""
    if all(b - a == 1 for a, b in spans):
        return "input steps" if plural else "input step"
    return "input patches" if plural else "input patch"


def spread_scores(scores: Any, spans: Sequence[tuple[int, int]], length: int) -> np.ndarray:
    """Per-step relevance from per-patch scores: each step gets the mean score of the patches covering it.

    Shape: scores (N,), spans N pairs [start, end) -> (length,).
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    total, count = np.zeros(length), np.zeros(length)
    for v, (a, b) in zip(s, spans):
        total[a:b] += v
        count[a:b] += 1
    return np.divide(total, count, out=np.zeros(length), where=count > 0)


def band_opacity(value: float) -> float:
    """Fill opacity of a band of relevance ``value`` in [0, 1] (``assets/figures.js`` uses the same)."""
    return round(0.04 + 0.56 * float(value), 4)


def _unit(scores: Any) -> np.ndarray:
    """Min-max scaled to [0, 1] over the patches, as ``draw_forecast`` scales them (all equal: zeros)."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    lo, hi = float(s.min()), float(s.max())
    return (s - lo) / (hi - lo) if hi > lo else np.zeros_like(s)


def relevance_choices(example: Any) -> dict[str, tuple[str, np.ndarray]]:
    """Every relevance the explorer's selectors can choose, per patch and scaled to [0, 1].

    Keys follow the selectors' values: ``"{layer}/mean"``, ``"{layer}/{head}"``, ``"rollout"``
    and ``"method:{name}"`` (only these for an example without attention maps); each value is
    (label, scores (N - prefix,)). Layer and head scores
    are ``render.relevance`` (what ``draw_png`` draws); a method's negative scores (evidence
    against) count as zero, as ``render_explanation`` draws them.
    """
    from attnlab.explain.render import relevance

    maps = [torch.as_tensor(np.asarray(m)) for m in example._arrays]
    prefix = example.num_prefix_tokens
    names = list(example.layer_names)
    out: dict[str, tuple[str, np.ndarray]] = {}
    for i, m in enumerate(maps):
        out[f"{i}/mean"] = (f"{names[i]} \u00b7 mean of {m.shape[0]} heads",
                            relevance(maps, layer=i, head=None, rollout=False, prefix=prefix).numpy())
        for h in range(m.shape[0]):
            out[f"{i}/{h}"] = (f"{names[i]} \u00b7 head {h}", relevance(maps, layer=i, head=h, rollout=False, prefix=prefix).numpy())
    if maps and all(m.shape[-1] == m.shape[-2] == maps[0].shape[-1] for m in maps):
        out["rollout"] = ("rollout (all layers)", relevance(maps, layer=-1, head=None, rollout=True, prefix=prefix).numpy())
    for name, scores in (example.methods or {}).items():
        out[f"method:{name}"] = (f"{name} (relevance method)", np.clip(np.asarray(scores, dtype=np.float64).reshape(-1), 0, None))
    return {k: (label, _unit(s)) for k, (label, s) in out.items()}


def band_segments(spans: Sequence[tuple[int, int]], length: int) -> list[tuple[int, int]]:
    """The steps [a, b) between consecutive patch borders: ``spread_scores`` is constant on each.

    Shape: spans N pairs [start, end) -> segments covering [0, length) in order.
    """
    borders = {0, length} | {min(max(int(v), 0), length) for span in spans for v in span}
    edges = sorted(borders)
    return [(a, b) for a, b in itertools.pairwise(edges) if b > a]


def _nice_step(span: float, count: int) -> float:
    """A 1-2-5 step giving at most about ``count`` ticks over ``span``."""
    raw = span / max(count, 1) if span > 0 else 1.0
    base = 10 ** math.floor(math.log10(raw))
    return next(m * base for m in (1, 2, 5, 10) if m * base >= raw)


def _date_label(stamp: str) -> tuple[str, str]:
    """'2020-01-03 04:00:00' -> ('2020-01-03', '04:00'); a date alone -> (date, '')."""
    day, _, time = str(stamp).replace("T", " ").partition(" ")
    time = time[:-3] if time.endswith(":00") and time.count(":") == 2 else time
    return day, ("" if time in ("00:00", "00:00:00") else time)


def _attr_json(obj: Any) -> str:
    return html.escape(json.dumps(obj, separators=(",", ":")), quote=True)


def _text(x: float, y: float, text: str, *, anchor: str = "middle", size: int = 10, fill: str = _MUTED, extra: str = "") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" fill="{fill}"{extra}>'
            f"{html.escape(text)}</text>")


def forecast_svg(example: Any, *, default: str | None = None) -> str:
    """The figure's ``<svg>`` (see the module docstring); ``default``: the choice drawn first (a
    key of ``relevance_choices``; default the first layer's head mean, where the selectors start).

    The ``<svg>`` carries what a reader (or a test) needs to read values back: ``data-plot`` (left,
    top, width, height of the plot area in SVG units), ``data-x`` and ``data-y`` (the step and
    value at its left/right and bottom/top edges); each band ``data-steps`` ("a b": steps [a, b))
    and ``data-r`` (its relevance, [0, 1]); ``data-relevance`` every choice's band values and
    ``data-labels`` their names.
    """
    x = np.asarray(example.input, dtype=np.float64).reshape(-1)
    f = np.asarray(example.forecast, dtype=np.float64).reshape(-1)
    t = None if example.truth is None else np.asarray(example.truth, dtype=np.float64).reshape(-1)
    L, H = x.size, f.size
    spans = list(example.spans) or [(0, L)]
    choices = relevance_choices(example)
    default = default if default in choices else next(iter(choices))
    segments = band_segments(spans, L)
    values = {k: [round(float(spread_scores(s, spans, L)[a]), 4) for a, _ in segments] for k, (_, s) in choices.items()}

    width, height = SVG_SIZE
    left, top, right, bottom = _PLOT
    pw, ph = width - left - right, height - top - bottom
    shown = [x, f] + ([t] if t is not None else [])
    lo, hi = min(float(v.min()) for v in shown), max(float(v.max()) for v in shown)
    pad = 0.05 * (hi - lo or 1.0)
    y0, y1 = lo - pad, hi + pad
    x1 = L + H

    def px(step: float) -> float:
        return left + step / x1 * pw

    def py(value: float) -> float:
        return top + (y1 - value) / (y1 - y0) * ph

    def line(kind: str, steps: np.ndarray, series: np.ndarray, w: float) -> str:
        points = " ".join(f"{px(s):.2f},{py(v):.2f}" for s, v in zip(steps, series))
        return (f'<polyline class="{kind}" points="{points}" fill="none" stroke="{_COLOURS[kind]}" stroke-width="{w}" '
                f'stroke-linejoin="round"><title>{kind}</title></polyline>')

    labels = {k: label for k, (label, _) in choices.items()}
    shaded = position_unit(spans, plural=True)  # DLinear: one step a position
    svg = (f'<svg class="forecast-plot" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
           f'aria-label="{html.escape(example.channel or "series")}: history, forecast{" and truth" if t is not None else ""}, '
           f'{shaded} shaded by relevance" data-plot="{left} {top} {pw} {ph}" data-x="0 {x1}" '
           f'data-y="{y0:.17g} {y1:.17g}" data-default="{html.escape(default)}" data-relevance="{_attr_json(values)}" '
           f'data-labels="{_attr_json(labels)}">')
    parts = [
        svg,
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#ffffff" stroke="{_LINE}"/>',
        '<g class="bands">',
    ]
    for (a, b), r in zip(segments, values[default]):
        parts.append(f'<rect class="band" x="{px(a):.2f}" y="{top}" width="{px(b) - px(a):.2f}" height="{ph}" fill="{_BAND}" '
                     f'fill-opacity="{band_opacity(r)}" data-steps="{a} {b}" data-r="{r}"/>')
    parts.append("</g>")
    step = _nice_step(y1 - y0, 6)  # value grid and labels
    for k in range(math.ceil(y0 / step), math.floor(y1 / step) + 1):
        v = k * step
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{py(v):.1f}" y2="{py(v):.1f}" stroke="{_LINE}" stroke-width="0.6"/>')
        parts.append(_text(left - 5, py(v) + 3, f"{v:.6g}", anchor="end", size=9))
    dates = list(example.dates) if example.dates is not None and len(example.dates) >= x1 else None
    every = max(1, int(_nice_step(x1, 6 if dates is None else 4)))
    for s in range(0, x1 + 1, every):
        parts.append(f'<line x1="{px(s):.1f}" x2="{px(s):.1f}" y1="{top + ph}" y2="{top + ph + 4}" stroke="{_MUTED}"/>')
        if dates is None:
            parts.append(_text(px(s), top + ph + 14, str(s), size=9))
        elif s < x1:
            day, time = _date_label(dates[s])
            parts.append(_text(px(s), top + ph + 14, day, size=9) + (_text(px(s), top + ph + 24, time, size=9) if time else ""))
    where = "date" if dates else "time step"
    parts.append(_text(left + pw / 2, height - 6, f"{where} ({shaded} shaded by relevance; the forecast starts "
                                                  f"at the dashed line{', at ' + dates[L] if dates else ''})", size=10))
    parts.append(_text(14, top + ph / 2, example.channel or "value", size=10,
                       extra=f' transform="rotate(-90 14 {top + ph / 2:.1f})"'))
    parts.append(f'<line class="cut" x1="{px(L):.2f}" x2="{px(L):.2f}" y1="{top}" y2="{top + ph}" stroke="{_MUTED}" '
                 f'stroke-dasharray="4 3"/>')
    parts.append(line("history", np.arange(L), x, 1.0))
    if t is not None:
        parts.append(line("truth", np.arange(L, L + t.size), t, 1.2))
    parts.append(line("forecast", np.arange(L, L + H), f, 1.4))
    xs = left  # legend, above the plot
    for kind in ("history", "truth", "forecast") if t is not None else ("history", "forecast"):
        parts.append(f'<line x1="{xs}" x2="{xs + 18}" y1="14" y2="14" stroke="{_COLOURS[kind]}" stroke-width="2"/>')
        parts.append(_text(xs + 22, 17, kind, anchor="start", size=11, fill=_INK))
        xs += 30 + 7 * len(kind)
    parts.append(f'<rect x="{xs}" y="8" width="18" height="12" fill="{_BAND}" fill-opacity="{band_opacity(1.0)}"/>')
    parts.append(_text(xs + 22, 17, "relevance: " + labels[default], anchor="start", size=11, fill=_INK,
                       extra=' class="relevance-label"'))
    parts.append("</svg>")
    return "".join(parts)
