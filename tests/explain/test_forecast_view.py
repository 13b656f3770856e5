"""report.html draws a forecast as inline SVG: read the plot back and compare it with the numbers.

The polylines are read back through the ``<svg>``'s own axis attributes into steps and values and
compared with the history, forecast and truth (to a hundredth of an SVG pixel: the points are
written to 0.01); the bands, expanded to one value per step, with ``spread_scores`` of the
relevance computed here from the maps, for every layer / head / rollout / method the page offers.
A trained run's report and an ``attnlab explain -o out.html`` page are checked against a forecast
made by hand from the run's weights. The page's script is exercised in Chromium (skipped where
Chromium or Playwright is missing, as in test_browser.py).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta

import numpy as np
import pytest
import torch

from attnlab.explain import write_report
from attnlab.explain.forecast import ForecastExample, spread_scores
from attnlab.explain.forecast_view import band_opacity
from attnlab.explain.render import relevance
from tests.explain.test_browser import browser, canvas, open_report, settled  # noqa: F401  (browser: a fixture)

L, H = 20, 6
SPANS = [(0, 8), (4, 12), (8, 16), (12, 20), (16, 20)]  # overlapping patches, the last clipped (PatchTST)


def _softmax_maps(n: int, heads: int, depth: int, seed: int) -> list[np.ndarray]:
    g = torch.Generator().manual_seed(seed)
    return [torch.softmax(3 * torch.randn(heads, n, n, generator=g), dim=-1).numpy() for _ in range(depth)]


def _example(seed: int = 0, *, truth: bool = True, dates: bool = True, methods: dict | None = None) -> ForecastExample:
    rng = np.random.default_rng(seed)
    start = datetime(2021, 3, 1, 6)
    stamps = [(start + timedelta(hours=i)).strftime("%Y-%m-%d %H:%M:%S") for i in range(L + H)]
    return ForecastExample(
        title=f"window {seed}", kind="series", input=(10 + rng.normal(size=L)).astype(np.float32),
        maps=_softmax_maps(len(SPANS), heads=2, depth=2, seed=seed), forecast=10 + rng.normal(size=H),
        truth=10 + rng.normal(size=H) if truth else None, spans=SPANS, channel="load", dates=stamps if dates else None,
        methods=methods,
    )


def _linear_example(seed: int = 0) -> ForecastExample:
    """A forecaster without attention (DLinear's shape): one exact-attribution map, one position a step."""
    from attnlab.explain.linear import METHOD, linear_attribution

    rng = np.random.default_rng(seed)
    w, b, x = rng.normal(size=(H, L)), rng.normal(size=H), rng.normal(size=L)
    attribution = linear_attribution(w, b, x, w @ x + b)
    return ForecastExample(
        title=f"linear window {seed}", kind="series", input=(10 + x).astype(np.float32), maps=[],
        forecast=10 + w @ x + b, truth=None, spans=[(t, t + 1) for t in range(L)], channel="load",
        methods={METHOD: attribution.relevance}, about=attribution.caption(), tokens=[f"t{t}" for t in range(L)],
    )


def _figures(page: str) -> dict[int, ET.Element]:
    """Each example figure's ``<svg>``, parsed, by example index."""
    out = {}
    for m in re.finditer(r'<figure class="example-figure" data-example="(\d+)"[^>]*>(.*?)</figure>', page, re.DOTALL):
        out[int(m.group(1))] = ET.fromstring(re.search(r"<svg .*?</svg>", m.group(2), re.DOTALL).group(0))
    return out


def _axes(svg: ET.Element) -> tuple[list[float], list[float], list[float]]:
    return [[float(v) for v in svg.get(k).split()] for k in ("data-plot", "data-x", "data-y")]


def _read_line(svg: ET.Element, kind: str) -> tuple[np.ndarray, np.ndarray, float]:
    """(steps, values, tolerance) of one polyline, through the svg's axis attributes."""
    (left, top, pw, ph), (x0, x1), (y0, y1) = _axes(svg)
    (line,) = [p for p in svg.iter("polyline") if p.get("class") == kind]
    points = np.array([[float(v) for v in p.split(",")] for p in line.get("points").split()])
    steps = x0 + (points[:, 0] - left) / pw * (x1 - x0)
    values = y1 - (points[:, 1] - top) / ph * (y1 - y0)
    return steps, values, 0.01 * (y1 - y0) / ph


def _bands(svg: ET.Element) -> list[ET.Element]:
    return [r for r in svg.iter("rect") if r.get("class") == "band"]


def _per_step(svg: ET.Element, values: list[float], length: int) -> np.ndarray:
    """Band values (one per band) -> one per step, from each band's ``data-steps``."""
    out = np.full(length, np.nan)
    for band, v in zip(_bands(svg), values):
        a, b = map(int, band.get("data-steps").split())
        out[a:b] = v
    return out


def _unit(s) -> np.ndarray:
    s = np.asarray(s, dtype=np.float64)
    return (s - s.min()) / (s.max() - s.min()) if s.max() > s.min() else np.zeros_like(s)


def _expected_choices(maps: list, prefix: int = 0) -> dict[str, np.ndarray]:
    """Per-patch relevance of every choice, min-max scaled as draw_forecast scales it."""
    t = [torch.as_tensor(np.asarray(m)) for m in maps]
    out = {"rollout": relevance(t, layer=-1, head=None, rollout=True, prefix=prefix)} if t else {}
    for i, m in enumerate(t):
        out[f"{i}/mean"] = relevance(t, layer=i, head=None, rollout=False, prefix=prefix)
        out.update({f"{i}/{h}": relevance(t, layer=i, head=h, rollout=False, prefix=prefix) for h in range(m.shape[0])})
    return {k: _unit(v.numpy()) for k, v in out.items()}


def _check_bands(svg: ET.Element, maps: list, spans, length: int, methods: dict | None = None) -> None:
    import json

    values = json.loads(svg.get("data-relevance"))
    expected = _expected_choices(maps)
    expected.update({f"method:{k}": _unit(np.clip(v, 0, None)) for k, v in (methods or {}).items()})
    assert set(values) == set(expected)
    for key, scores in expected.items():
        np.testing.assert_allclose(_per_step(svg, values[key], length), spread_scores(scores, spans, length), atol=1e-4,
                                   err_msg=key)
    shown = [float(b.get("data-r")) for b in _bands(svg)]  # the bands as drawn: the default choice
    assert shown == values[svg.get("data-default")]
    assert [float(b.get("fill-opacity")) for b in _bands(svg)] == [band_opacity(r) for r in shown]
    (left, _, pw, _), (x0, x1), _ = _axes(svg)
    for band in _bands(svg):  # each band sits over its steps
        a, b = map(int, band.get("data-steps").split())
        assert float(band.get("x")) == pytest.approx(left + a / (x1 - x0) * pw, abs=0.006)
        assert float(band.get("width")) == pytest.approx((b - a) / (x1 - x0) * pw, abs=0.011)


def _check_lines(svg: ET.Element, history, forecast, truth) -> None:
    n, h = len(history), len(forecast)
    for kind, want, first in (("history", history, 0), ("forecast", forecast, n), ("truth", truth, n)):
        if want is None:
            assert not [p for p in svg.iter("polyline") if p.get("class") == kind]
            continue
        steps, values, tol = _read_line(svg, kind)
        np.testing.assert_allclose(steps, np.arange(first, first + len(want)), atol=1e-3, err_msg=kind)
        np.testing.assert_allclose(values, np.asarray(want, dtype=np.float64), atol=tol, rtol=0, err_msg=kind)
    assert _axes(svg)[1] == [0.0, float(n + h)]


def _assert_self_contained(page: str) -> None:
    assert "http://" not in page and "https://" not in page and "//cdn" not in page
    assert not re.search(r"<(link|img|iframe|image|use)\b", page) and not re.search(r"\b(src|href)=", page)
    assert "@import" not in page and "url(" not in page


# --- the figure, from an example built here ------------------------------------------------------

def test_forecast_figure_reads_back_as_its_numbers(tmp_path):
    examples = [_example(0), _example(1, truth=False, dates=False)]
    page = write_report(tmp_path / "r.html", examples).read_text(encoding="utf-8")
    figures = _figures(page)
    assert sorted(figures) == [0, 1] and page.count('class="example-figure"') == 2
    assert re.search(r'data-example="1" hidden>', page) and not re.search(r'data-example="0" hidden>', page)
    for i, ex in enumerate(examples):
        _check_lines(figures[i], ex.input, ex.forecast, ex.truth)
        _check_bands(figures[i], ex.maps, SPANS, L)
        assert figures[i].get("data-default") == "0/mean"  # where the explorer's selectors start
    _assert_self_contained(page)
    assert "forecast_view.band_opacity" in page  # the figures script is inlined


def test_axis_labels_dates_when_known():
    first, plain = (ET.fromstring(re.search(r"<svg .*?</svg>", _example(0, dates=d).figure_html(), re.DOTALL).group(0))
                    for d in (True, False))
    texts = [t.text for t in first.iter("text")]
    assert "2021-03-01" in texts and "06:00" in texts  # step 0: the first input step's timestamp, as two lines
    assert any(t and t.startswith("date (") and "2021-03-02 02:00:00" in t for t in texts)  # the cut: step L
    plain_texts = [t.text for t in plain.iter("text")]
    assert {"0", "5", "25"} <= set(plain_texts) and any(t and t.startswith("time step (") for t in plain_texts)  # L + H = 26
    assert "load" in texts  # the channel names the value axis


def test_a_relevance_method_is_a_choice_and_can_come_first(tmp_path):
    methods = {"gradient": np.array([0.5, -1.0, 2.0, 0.0, 1.0])}  # negative: evidence against, drawn as zero
    page = write_report(tmp_path / "r.html", [_example(2, methods=methods)], default_method="gradient").read_text()
    svg = _figures(page)[0]
    assert svg.get("data-default") == "method:gradient"
    _check_bands(svg, _example(2).maps, SPANS, L, methods)
    assert "relevance: gradient (relevance method)" in [t.text for t in svg.iter("text")]


def test_a_forecast_without_attention_draws_its_exact_attribution(tmp_path):
    ex = _linear_example(4)
    page = write_report(tmp_path / "r.html", [ex]).read_text(encoding="utf-8")
    svg = _figures(page)[0]
    _check_lines(svg, ex.input, ex.forecast, None)
    _check_bands(svg, [], [(t, t + 1) for t in range(L)], L, ex.methods)  # no layer or rollout choice
    assert svg.get("data-default") == "method:exact attribution" and len(_bands(svg)) == L
    caption = re.search(r"<figcaption>(.*?)</figcaption>", page).group(1)
    assert "exact attribution of the forecast to each input step, not attention" in caption
    assert "Contributions + bias reproduce the model&#x27;s forecast to" in caption and "attend" not in caption
    assert any(t and t.startswith("date (input steps shaded") or t and t.startswith("time step (input steps shaded")
               for t in (e.text for e in svg.iter("text")))
    _assert_self_contained(page)


def test_a_png_draws_the_method_asked_for(tmp_path, monkeypatch):
    """``explain RUN file.csv -o x.png --method M`` draws M's map (it drew the attention, or DLinear's first map)."""
    import attnlab.explain.forecast as forecast
    from attnlab.errors import AttnlabError
    from attnlab.explain.render import render_explanation

    drawn = []
    monkeypatch.setattr(forecast, "draw_forecast", lambda *a, **k: drawn.append((np.asarray(a[3]), k["title"], k["note"])))
    gradient = np.array([0.5, -1.0, 2.0, 0.0, 1.0])
    render_explanation(_example(2, methods={"gradient": gradient}), tmp_path / "x.png", method="gradient")
    np.testing.assert_array_equal(drawn[-1][0], np.clip(gradient, 0, None))  # negative: evidence against, drawn as 0
    assert "gradient per input patch" in drawn[-1][1] and drawn[-1][2].startswith("Gradient: each input patch's")
    render_explanation(_example(2, methods={"gradient": gradient}), tmp_path / "x.png")  # no method: the attention
    assert "attention per input patch (layer 1)" in drawn[-1][1]
    linear = _linear_example(4)
    linear.methods = {**linear.methods, "random": np.linspace(0, 1, L)}
    render_explanation(linear, tmp_path / "y.png", method="random")
    np.testing.assert_array_equal(drawn[-1][0], np.linspace(0, 1, L))
    render_explanation(linear, tmp_path / "y.png")  # its own map first, with its caption
    np.testing.assert_array_equal(drawn[-1][0], linear.methods["exact attribution"])
    assert drawn[-1][2].startswith("The exact attribution")
    with pytest.raises(AttnlabError, match="no 'rollout' map for this input; it has exact attribution, random"):
        linear.draw_png(tmp_path / "z.png", method="rollout")


def test_pages_without_a_forecast_have_no_figure(tmp_path):
    from tests.explain.test_report import _image_example

    page = write_report(tmp_path / "r.html", [_image_example()[0]]).read_text()
    assert "<figure class=\"example-figure\"" not in page and "forecast_view.band_opacity" not in page


# --- a trained run: report.html and attnlab explain -o out.html ----------------------------------

@pytest.mark.slow
def test_trained_run_report_and_explain_page_show_the_model_forecast(tmp_path):
    from attnlab.cli import main
    from attnlab.data.forecasting import generated_series
    from attnlab.explain.capture import capture
    from attnlab.explain.relevance import METHODS
    from attnlab.explain.relevance import relevance as relevance_map
    from attnlab.run import load_run
    from attnlab.tasks.forecast_positions import forecast_positions
    from tests.tasks.test_forecasting import TINY, _history_csv

    run = tmp_path / "run"
    argv = ["train", "--task", "forecasting", "--out", str(run), *TINY]
    argv[argv.index("--model.depth") + 1] = "2"  # two layers: layer choices that differ
    assert main(argv) == 0
    _, model, record = load_run(run)
    info = record["info"]
    n, h = info["input_length"], info["horizon"]
    mean, std = np.array(info["mean"]), np.array(info["std"])
    series = generated_series()
    spans = model.token_spans()

    def check(svg: ET.Element, row: int, i: int, count: int) -> None:
        """The figure of the window whose forecast starts at ``row`` of the generated series, example ``i`` of
        ``count`` on its page (the random map is row i of one seeded (count, N) draw)."""
        x = torch.from_numpy((series.values[row - n:row] - mean) / std).float().T[None]  # (1, C, L)
        maps = capture(model, x)
        forecast = maps.output[0, -1].double().numpy() * std[-1] + mean[-1]
        _check_lines(svg, series.values[row - n:row, -1], forecast, series.values[row:row + h, -1])
        g = forecast_positions(model, None, [(x[0], None)], [0])[0]  # the relevance methods: |map| of the mean forecast
        methods = {m: relevance_map(g.forward, g.x, m, num_prefix_tokens=0, steps=8, baseline=g.removed.expand_as(g.x),
                                    sequence=g.sequence)[0].abs().numpy() for m in METHODS if m != "random"}
        methods["random"] = torch.rand(count, len(spans), generator=torch.Generator().manual_seed(0))[i].numpy()
        _check_bands(svg, [m[-1].numpy() for m in maps.maps], spans, n, methods)  # the target channel's maps
        texts = [t.text for t in svg.iter("text")]
        assert series.dates[row - n][:10] in texts and any(series.dates[row] in (t or "") for t in texts)

    page = (run / "report.html").read_text(encoding="utf-8")
    _assert_self_contained(page)
    rows = [int(r) for r in re.findall(r"<figcaption>test window \d+ \(row (\d+)\):", page)]
    figures = _figures(page)
    assert len(rows) == len(figures) == 4
    for i, row in enumerate(rows):
        check(figures[i], row, i, len(rows))

    history = _history_csv(tmp_path / "long.csv", n + 10 + h, offset=300)  # the last h rows are the truth
    assert main(["explain", str(run), str(history), "-o", str(tmp_path / "why.html")]) == 0
    page = (tmp_path / "why.html").read_text(encoding="utf-8")
    _assert_self_contained(page)
    check(_figures(page)[0], 300 + 10 + n, 0, 1)


# --- the page's script, in Chromium ------------------------------------------------------------

def test_bands_follow_the_explorer_selectors_in_chromium(browser, tmp_path):  # noqa: F811
    import json

    path = write_report(tmp_path / "f.html", [_example(0), _example(3)], title="browser test: forecast")
    page, errors, _, _ = open_report(browser, path)

    def shown() -> tuple[str, list[float], str]:
        return page.evaluate("""() => {
          const fig = Array.from(document.querySelectorAll('.example-figure')).filter((f) => !f.hidden);
          if (fig.length !== 1) return null;
          const svg = fig[0].querySelector('svg');
          return [svg.dataset.shown, Array.from(svg.querySelectorAll('rect.band')).map((r) => +r.getAttribute('data-r')),
                  svg.querySelector('.relevance-label').textContent, fig[0].dataset.example];
        }""")

    try:
        values = [json.loads(svg.get("data-relevance")) for svg in _figures(path.read_text()).values()]
        key, bands, label, example = shown()
        assert (key, example) == ("0/mean", "0") and bands == values[0]["0/mean"] and "mean of 2 heads" in label
        page.select_option("#layer", "1")
        page.select_option("#head", "0")
        key, bands, label, _ = shown()
        assert key == "1/0" and bands == values[0]["1/0"] and label == "relevance: layer 1 \u00b7 head 0"
        page.evaluate("() => document.activeElement.blur()")  # keys on a focused <select> are the select's own
        page.keyboard.press("ArrowRight")  # the explorer's key: next head
        assert shown()[0] == "1/1" and shown()[1] == values[0]["1/1"]
        page.select_option("#layer", "rollout")
        assert shown()[:2] == ["rollout", values[0]["rollout"]]
        page.select_option("#example", "1")
        key, bands, _, example = shown()
        assert example == "1" and key == "rollout" and bands == values[1]["rollout"]
        assert errors == [], errors
    finally:
        page.close()


def test_an_example_without_attention_shows_only_its_map_in_chromium(browser, tmp_path):  # noqa: F811
    """A DLinear-like example first (the page opens on it), then an attention one, and back: no map panel,
    layer or head selector for the first, its exact attribution on the input and in the figure; no error."""
    import json

    path = write_report(tmp_path / "f.html", [_linear_example(0), _example(3)], title="browser test: no attention")
    page, errors, _, _ = open_report(browser, path)
    values = [json.loads(svg.get("data-relevance")) for svg in _figures(path.read_text()).values()]

    def state() -> dict:
        return page.evaluate("""() => {
          const fig = Array.from(document.querySelectorAll('.example-figure')).filter((f) => !f.hidden)[0];
          const svg = fig.querySelector('svg'), shown = (id) => document.getElementById(id).parentElement.style.display !== 'none';
          return { example: fig.dataset.example, key: svg.dataset.shown,
                   bands: Array.from(svg.querySelectorAll('rect.band')).map((r) => +r.getAttribute('data-r')),
                   mapPanel: !document.getElementById('map').closest('figure').hidden,
                   layer: shown('layer'), head: shown('head'),
                   methods: Array.from(document.querySelectorAll('#method option')).map((o) => o.value),
                   method: document.getElementById('method').value,
                   caption: document.getElementById('input-caption').textContent,
                   readout: document.getElementById('readout').textContent };
        }""")

    try:
        first = state()
        assert first["example"] == "0" and first["key"] == "method:exact attribution"
        assert first["bands"] == values[0]["method:exact attribution"]
        assert not first["mapPanel"] and not first["layer"] and not first["head"]
        assert first["methods"] == ["exact attribution"] and first["method"] == "exact attribution"
        assert first["caption"] == "relevance: exact attribution"
        assert first["readout"].startswith("no attention maps") and "top positions: t" in first["readout"]
        top = int(first["readout"].split("top positions: t")[1].split(" ")[0])
        assert values[0]["method:exact attribution"][top] == 1.0  # the strongest step is named first
        assert canvas(page, "input")["painted"] > 0
        box = page.locator("#input").bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + 50)  # nothing to hover: no query, no error
        page.evaluate("() => document.activeElement.blur()")
        for key in ("ArrowRight", "ArrowDown", "Escape"):
            page.keyboard.press(key)
        settled(page)
        assert state()["readout"] == first["readout"]

        page.select_option("#example", "1")
        settled(page)
        second = state()
        assert second["mapPanel"] and second["layer"] and second["key"] == "0/mean" and second["method"] == "attention"
        assert "queries" in second["readout"] and canvas(page, "map")["painted"] > 0
        page.select_option("#example", "0")
        settled(page)
        assert state() == first
        assert errors == [], errors
    finally:
        page.close()

