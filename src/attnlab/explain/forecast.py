"""Explain a forecast: which input patches the forecaster attends to, beside what it forecast.

A `ForecastExample` is a "series" ``ReportExample`` (the HTML explorer shows the input window
of the plotted channel with its patch-to-patch attention) that also holds the forecast and,
when known, the truth, and draws them: ``draw_png`` with matplotlib (the history with each
patch's relevance as a coloured band behind it, then the forecast and the truth after the cut,
and the relevance per patch below), and ``figure_html`` as inline SVG for report.html (the same
plot, for every layer / head / rollout / method the explorer offers: ``explain.forecast_view``). Relevance is the mean over query patches of the chosen layer's attention
(head-mean or one head) or the rollout (Abnar & Zuidema 2020) through all layers, scaled to
[0, 1]: how much the patches attend to each key patch, not a measured effect on the forecast
(Jain & Wallace 2019). A forecaster without attention that is linear in its input (DLinear) has
no maps: its one view is a method, the exact attribution of ``explain.linear``, one position per
input step, and ``about`` says so in the captions.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

# spread_scores lives beside the SVG view: the PNG and the page draw the same bands
from attnlab.errors import AttnlabError
from attnlab.explain.forecast_view import forecast_svg, position_unit, spread_scores
from attnlab.explain.linear import METHOD as LINEAR_METHOD
from attnlab.explain.report import ReportExample

__all__ = ["ForecastExample", "draw_forecast", "spread_scores"]


@dataclass
class ForecastExample(ReportExample):
    """A "series" ReportExample plus ``forecast`` (H,), ``truth`` (H,) or None, the patch ``spans``
    and the channel name, in the data's own units; ``dates``: the L history steps' and H forecast
    steps' timestamps (L + H strings), or None, for the axis labels; ``about``: for an example
    without attention maps, what its map is (``LinearAttribution.caption``), shown in the captions."""

    forecast: Any = None
    truth: Any = None
    spans: Sequence[tuple[int, int]] = ()
    channel: str = ""
    dates: Sequence[str] | None = None
    about: str = ""

    def draw_png(self, path: str | Path, *, layer: int = -1, head: int | None = None, rollout: bool = False,
                 method: str | None = None) -> Path:
        """``method``: a key of ``methods`` to draw; None: the attention of ``layer`` / ``head`` (or
        the rollout), or for an example without attention its first map."""
        from attnlab.explain.render import relevance

        note = ""
        if method is not None or not self._arrays:  # a method's map (render_explanation refuses --layer / --head)
            name = method if method is not None else next(iter(self.methods))
            if name not in (self.methods or {}):
                raise AttnlabError(f"no {name!r} map for this input; it has {', '.join(self.methods or {}) or 'none'}")
            scores = np.clip(np.asarray(self.methods[name], dtype=np.float64), 0, None)
            unit = position_unit(self.spans)
            title = f"{self.title}: {self.channel} — {name} per {unit}"
            note = self.about if name == LINEAR_METHOD else (
                f"{name}: each {unit}'s relevance for the mean of the forecast (a relevance method; its magnitude), "
                f"scaled to [0, 1]")
        else:
            maps = [torch.as_tensor(np.asarray(m)) for m in self._arrays]
            scores = relevance(maps, layer=layer, head=head, rollout=rollout, prefix=self.num_prefix_tokens).numpy()
            what = "rollout" if rollout else f"layer {layer % len(maps)}" + ("" if head is None else f", head {head}")
            title = f"{self.title}: {self.channel} — attention per input patch ({what})"
        draw_forecast(self.input, self.forecast, self.truth, scores, self.spans, path, title=title,
                      note=note[:1].upper() + note[1:])
        return Path(path)

    def figure_html(self, *, default_method: str | None = None) -> str:
        """The forecast plot as inline SVG with a caption; the bands start on ``default_method``
        when the example has that map, else on layer 0's head mean (where the explorer starts),
        or on the example's first map when it has no attention."""
        import html

        methods = list(self.methods or {})
        if default_method in methods:
            default = f"method:{default_method}"
        else:
            default = "0/mean" if self._arrays or not methods else f"method:{methods[0]}"
        truth = " and the truth" if self.truth is not None else ""
        if self._arrays:
            what = ("each input patch's relevance for the layer, head or map chosen above "
                    "(how much the patches attend to it, not a measured effect on the forecast)")
        else:
            what = html.escape(self.about or "each input step's relevance for the map chosen above")
        caption = (f"{html.escape(str(self.title))}: {html.escape(self.channel or 'the series')}, history then forecast{truth}; "
                   f"behind the history, {what}")
        return f"<figcaption>{caption}</figcaption>{forecast_svg(self, default=default)}"


def draw_forecast(history: Any, forecast: Any, truth: Any, scores: Any, spans: Sequence[tuple[int, int]],
                  path: str | Path | None = None, *, title: str = "", cmap: str = "YlOrRd", note: str = "") -> Any:
    """History with patch relevance behind it, then forecast (and truth) after the cut; one bar per patch below;
    ``note``: a footnote under the plot (what the relevance is, when it is not attention).

    Shape: history (L,), forecast (H,), truth (H,) or None, scores (N,) for N patches. Returns the Figure.
    """
    from attnlab.explain.plots import _figure, _save

    x = np.asarray(history, dtype=np.float64).reshape(-1)
    f = np.asarray(forecast, dtype=np.float64).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    lo, hi = float(s.min()), float(s.max())
    norm = (s - lo) / (hi - lo) if hi > lo else np.zeros_like(s)
    L, H = x.size, f.size
    per_step = spread_scores(norm, spans, L)
    lines = textwrap.wrap(note, 160) if note else []
    fig = _figure(10.0, 3.8 + 0.14 * len(lines))
    if lines:
        fig.supxlabel("\n".join(lines), fontsize=7, color="#5f6b7a")
    top, bottom = fig.subplots(2, 1, height_ratios=(4, 1))
    values = [x, f] + ([np.asarray(truth, dtype=np.float64).reshape(-1)] if truth is not None else [])
    ymin, ymax = min(float(v.min()) for v in values), max(float(v.max()) for v in values)
    pad = 0.05 * (ymax - ymin or 1.0)
    top.imshow(per_step[None], cmap=cmap, alpha=0.4, aspect="auto", extent=(0, L, ymin - pad, ymax + pad), vmin=0, vmax=1,
               interpolation="nearest")
    top.plot(np.arange(L), x, color="black", linewidth=0.8, label="history")
    if truth is not None:
        top.plot(np.arange(L, L + H), values[2], color="#2f6fde", linewidth=0.8, label="truth")
    top.plot(np.arange(L, L + H), f, color="#d62728", linewidth=1.0, label="forecast")
    top.axvline(L, color="grey", linewidth=0.6, linestyle="--")
    top.set_xlim(0, L + H), top.set_ylim(ymin - pad, ymax + pad)
    top.legend(loc="upper left", fontsize=7, ncol=3)
    bottom.bar([(a + b) / 2 for a, b in spans], norm, width=[max(b - a, 1) * 0.9 for a, b in spans], color="#d98b2b")
    bottom.set_xlim(0, L + H), bottom.set_yticks([])
    bottom.set_xlabel(f"time step ({position_unit(spans, plural=True)}; the forecast starts at the dashed line)")
    if title:
        top.set_title(title, fontsize=9)
    return _save(fig, path)
