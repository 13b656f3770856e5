"""A self-contained HTML attention explorer: one file, no network, data embedded.

Encoding (documented in ``write_report``): each layer's (H, N, M) weights are scaled per row
by the row maximum and quantised to 8 (or 4) bits, the row maxima kept as float32; the
levels are deflated (zlib) and base64-encoded into one JSON ``<script>`` block, which the
page inflates with the browser's built-in ``DecompressionStream``. Per-row scaling keeps
diffuse rows visible: at N = 1024 a uniform row holds ~0.001 everywhere, which a plain
[0, 1] uint8 scale would round to zero. Everything is drawn on ``<canvas>``, so N >= 1024
stays responsive (no per-cell DOM nodes).
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from attnlab.explain._report_assets import FIGURES_JS, PAGE_CSS, PAGE_JS
from attnlab.explain.rollout import rollout as _rollout

__all__ = ["ReportExample", "write_report", "KINDS"]

log = logging.getLogger(__name__)

KINDS = ("image", "tokens", "series")


def _np(x: Any, what: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        x = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        x = x.numpy()
    a = np.asarray(x)
    if a.dtype.kind not in "fiub":
        raise ValueError(f"{what} must be numeric, got dtype {a.dtype}")
    return a


@dataclass
class ReportExample:
    """One input with its attention maps, for ``write_report``.

    Attributes:
        kind: "image" (input (H, W) or (H, W, 3), uint8 or float), "tokens" (input a list
            of strings) or "series" (input a 1-D array).
        maps: one (H, N, M) array per layer (heads may differ between layers); empty for a
            model without attention whose only maps are ``methods`` (e.g. the exact attribution
            of a linear forecaster, ``explain.linear``): N is then the number of ``tokens``.
        layer_names: one name per layer (default "layer 0", ...).
        tokens: labels of the N query positions (default "CLS"/"p0".. for images,
            the input tokens for text, "t0".. otherwise).
        key_tokens: labels of the M key positions when M != N (cross-attention).
        rollout: (N, N); computed from ``maps`` by ``write_report`` when left out and the
            maps are square.
        grid: (h, w) patch grid for images (default: square), ``num_prefix_tokens`` tokens
            (class, registers) come before the patches.
        methods: relevance maps by method name (``attnlab.explain.relevance``), each one score
            per non-prefix token in token order; the explorer offers them as a choice.
        item: the (model input, label) pair the example was made from, for a task adapter's
            ``Positions`` (not written to the page).
    """

    title: str
    kind: str
    input: Any
    maps: Sequence[Any]
    layer_names: Sequence[str] | None = None
    tokens: Sequence[str] | None = None
    prediction: Any = None
    label: Any = None
    rollout: Any = None
    grid: tuple[int, int] | None = None
    num_prefix_tokens: int = 0
    key_tokens: Sequence[str] | None = None
    methods: dict[str, Any] | None = None
    item: Any = field(default=None, repr=False, compare=False)
    _arrays: list[np.ndarray] = field(default_factory=list, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"ReportExample {self.title!r}: kind must be one of {KINDS}, got {self.kind!r}")
        arrays = [_np(m, f"ReportExample {self.title!r}: maps[{i}]") for i, m in enumerate(self.maps)]
        if not arrays and not self.methods:
            raise ValueError(f"ReportExample {self.title!r}: maps is empty; give one (H, N, M) array per layer, "
                             f"or the relevance maps in methods")
        for i, a in enumerate(arrays):
            if a.ndim != 3:
                raise ValueError(f"ReportExample {self.title!r}: maps[{i}] must be (H, N, M), got shape {a.shape}")
        self._arrays = arrays
        if arrays:
            n = arrays[0].shape[1]
        elif self.tokens is not None:
            n = len(self.tokens)
        else:  # no attention: the methods' scores give the positions
            n = self.num_prefix_tokens + _np(next(iter(self.methods.values())), "methods").size
        if self.layer_names is None:
            self.layer_names = [f"layer {i}" for i in range(len(arrays))]
        elif len(self.layer_names) != len(arrays):
            raise ValueError(f"ReportExample {self.title!r}: {len(self.layer_names)} layer names for {len(arrays)} layers")
        if self.num_prefix_tokens < 0:
            raise ValueError(f"ReportExample {self.title!r}: num_prefix_tokens must be >= 0")
        if self.kind == "image":
            patches = n - self.num_prefix_tokens
            if self.grid is None:
                side = int(round(math.sqrt(max(patches, 0))))
                if side * side != patches:
                    raise ValueError(f"ReportExample {self.title!r}: N={n} with {self.num_prefix_tokens} prefix tokens is not a square grid; pass grid=(h, w)")
                self.grid = (side, side)
            self.grid = (int(self.grid[0]), int(self.grid[1]))
            if self.grid[0] * self.grid[1] + self.num_prefix_tokens != n:
                raise ValueError(f"ReportExample {self.title!r}: grid {self.grid} + {self.num_prefix_tokens} prefix tokens != N={n}")
        if self.tokens is None:
            self.tokens = self._default_tokens(n)
        self.tokens = [str(t) for t in self.tokens]
        if len(self.tokens) != n:
            raise ValueError(f"ReportExample {self.title!r}: {len(self.tokens)} tokens for N={n} query positions")
        for name, scores in (self.methods or {}).items():
            if _np(scores, f"methods[{name!r}]").size != n - self.num_prefix_tokens:
                raise ValueError(f"ReportExample {self.title!r}: method {name!r} has {_np(scores, name).size} scores for "
                                 f"{n - self.num_prefix_tokens} non-prefix tokens")
        if self.rollout is not None:
            r = _np(self.rollout, "rollout")
            if r.shape != (n, n):
                raise ValueError(f"ReportExample {self.title!r}: rollout must be (N, N) = ({n}, {n}), got {r.shape}")

    def _default_tokens(self, n: int) -> list[str]:
        p = self.num_prefix_tokens
        if self.kind == "image":
            return [("CLS" if i == 0 else f"prefix{i}") for i in range(p)] + [f"p{i}" for i in range(n - p)]
        if self.kind == "tokens" and isinstance(self.input, (list, tuple)) and len(self.input) == n:
            return [str(t) for t in self.input]
        return [("CLS" if i == 0 else f"prefix{i}") for i in range(p)] + [f"t{i}" for i in range(n - p)]

    @classmethod
    def from_capture(cls, title: str, kind: str, input: Any, maps: Any, *, index: int = 0, **kwargs: Any) -> "ReportExample":
        """Build from ``AttentionMaps`` (``capture``), taking batch element ``index``."""
        return cls(title=title, kind=kind, input=input, maps=[m[index] for m in maps.maps], layer_names=list(maps.names), **kwargs)

    def figure_html(self, *, default_method: str | None = None) -> str:
        """Static HTML (inline SVG, no external reference) the page shows below the explorer while
        this example is selected; none here. A forecast draws its plot (``explain.forecast``)."""
        return ""


def _b64(raw: bytes, compress: bool) -> str:
    return base64.b64encode(zlib.compress(raw, 6) if compress else raw).decode("ascii")


def _encode_map(a: np.ndarray, bits: int, compress: bool) -> dict[str, Any]:
    """(H, N, M) float -> per-row-max scaled levels. Value = level / (2**bits - 1) * scale[h, n]."""
    a = np.nan_to_num(a.astype(np.float32, copy=False), nan=0.0, posinf=0.0, neginf=0.0)
    a = np.clip(a, 0.0, None)
    row_max = a.max(axis=-1)  # (H, N)
    top = (1 << bits) - 1
    levels = np.rint(a * (top / np.where(row_max > 0, row_max, 1.0))[..., None]).astype(np.uint8)
    flat = levels.reshape(-1)
    if bits == 4:  # two levels a byte, high nibble first
        flat = np.concatenate([flat, np.zeros(flat.size % 2, np.uint8)])
        flat = (flat[0::2] << 4) | flat[1::2]
    return {
        "heads": int(a.shape[0]), "n": int(a.shape[1]), "m": int(a.shape[2]), "bits": bits,
        "q": _b64(flat.tobytes(), compress),
        "scale": base64.b64encode(row_max.astype("<f4").tobytes()).decode("ascii"),
    }


def _encode_image(image: Any, compress: bool) -> dict[str, Any]:
    img = _np(image, "image input")
    if img.ndim == 3 and img.shape[0] in (1, 3, 4) and img.shape[-1] not in (1, 3, 4):
        img = np.moveaxis(img, 0, -1)  # (C, H, W) -> (H, W, C)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    if img.ndim != 3 or img.shape[-1] not in (3, 4):
        raise ValueError(f"image input must be (H, W), (H, W, 3) or (C, H, W), got shape {img.shape}")
    img = img[..., :3]
    if img.dtype != np.uint8:
        img = img.astype(np.float64)
        lo, hi = float(img.min()), float(img.max())
        if lo < 0.0 or hi > 1.0:
            img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
        img = np.rint(img * 255).astype(np.uint8)
    return {"type": "image", "h": int(img.shape[0]), "w": int(img.shape[1]), "data": _b64(np.ascontiguousarray(img).tobytes(), compress)}


def _encode_input(ex: ReportExample, compress: bool) -> dict[str, Any]:
    if ex.kind == "image":
        return _encode_image(ex.input, compress)
    if ex.kind == "tokens":
        if isinstance(ex.input, str) or not isinstance(ex.input, (list, tuple)):
            raise ValueError(f"ReportExample {ex.title!r}: a tokens input must be a list of strings")
        return {"type": "tokens", "tokens": [str(t) for t in ex.input]}
    series = _np(ex.input, "series input").astype("<f4").reshape(-1)
    if series.size == 0:
        raise ValueError(f"ReportExample {ex.title!r}: the series input is empty")
    return {"type": "series", "length": int(series.size), "data": _b64(series.tobytes(), compress)}


def _json_value(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu().tolist()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


def _encode_example(ex: ReportExample, bits: int, compress: bool, auto_rollout: bool) -> dict[str, Any]:
    arrays = ex._arrays
    roll = None if ex.rollout is None else _np(ex.rollout, "rollout")
    square = bool(arrays) and all(a.shape[1] == a.shape[2] == arrays[0].shape[1] for a in arrays)
    if roll is None and auto_rollout and square:
        roll = _rollout([torch.as_tensor(a)[None] for a in arrays], num_prefix_tokens=ex.num_prefix_tokens)[0].numpy()
    return {
        "title": str(ex.title),
        "kind": ex.kind,
        "prediction": _json_value(ex.prediction),
        "label": _json_value(ex.label),
        "tokens": list(ex.tokens),
        "keyTokens": None if ex.key_tokens is None else [str(t) for t in ex.key_tokens],
        "numPrefix": int(ex.num_prefix_tokens),
        "grid": None if ex.grid is None else list(ex.grid),
        "layers": [dict(name=str(name), **_encode_map(a, bits, compress)) for name, a in zip(ex.layer_names, arrays)],
        "rollout": None if roll is None else _encode_map(roll[None], bits, compress),
        "rolloutGiven": ex.rollout is not None,
        "input": _encode_input(ex, compress),
        "methods": {str(k): [round(float(v), 6) for v in _np(m, k).reshape(-1)] for k, m in (ex.methods or {}).items()},
    }


def _script_json(payload: dict[str, Any]) -> str:
    text = json.dumps(payload, ensure_ascii=True, separators=(",", ":"), allow_nan=False, default=str)
    # Inside <script>, "</script>" or "<!--" in a token would end or confuse the block.
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def write_report(
    path: str | Path,
    examples: Sequence[ReportExample],
    title: str = "Attention explorer",
    meta: dict[str, Any] | None = None,
    *,
    bits: int = 8,
    compress: bool = True,
    auto_rollout: bool = True,
    card: dict[str, Any] | None = None,
    default_method: str | None = None,
    default_layer: int = 0,
    default_head: int | None = None,
) -> Path:
    """Write one self-contained HTML file to explore the examples' attention.

    No network: no CDN, fonts or scripts are fetched; the data sits in a JSON ``<script>``.
    Maps are stored as per-row-max scaled ``bits``-bit levels (8, or 4 for half the size),
    deflated and base64-encoded (``compress=False`` skips deflate, for browsers without
    ``DecompressionStream``). Measured sizes, one example:

    * N = 16 (4x4 patches), 2 layers x 2 heads, 32x32 image: ~37 KB, nearly all of it the page.
    * N = 1024 (32x32 patches), 12 layers x 4 heads (50 M weights): ~7.5 MB for local, peaked
      attention (trained vision models look like this), ~62 MB for the near-uniform maps of
      an untrained model (per-row-scaled noise does not compress: raw bytes * 4/3).
      ``bits=4``: ~2.9 MB and ~27 MB. Writing takes 2-3 s.

    ``card``: faithfulness scores (``explain.card.score_methods``) drawn as a table and curves
    below the maps (``explain.card_view``); ``default_method``: the relevance map the page
    shows first (an example's ``methods`` key; default the attention of the chosen layer);
    ``default_layer`` / ``default_head``: the layer (negative counts from the last, as
    ``attnlab explain --layer``) and head (None: the mean of heads) the page opens on.

    Returns the path written.
    """
    if bits not in (4, 8):
        raise ValueError(f"write_report: bits must be 4 or 8, got {bits}")
    if not examples:
        raise ValueError("write_report: no examples given")
    for ex in examples:
        if not isinstance(ex, ReportExample):
            raise ValueError(f"write_report: examples must be ReportExample instances, got {type(ex).__name__}")
    payload = {
        "format": "attnlab-report/1",
        "title": str(title),
        "meta": {str(k): _json_value(v) for k, v in (meta or {}).items()},
        "compressed": bool(compress),
        "defaultMethod": default_method,
        "defaultLayer": int(default_layer),
        "defaultHead": None if default_head is None else int(default_head),
        "card": card,
        "examples": [_encode_example(ex, bits, compress, auto_rollout) for ex in examples],
    }
    figures = _figures(examples, default_method)
    page = (
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{html.escape(str(title))}</title>\n<style>{PAGE_CSS}</style>\n</head>\n<body>\n"
        f"{_BODY.replace('<!--card-->', _card(card)).replace('<!--figures-->', figures)}\n"
        f"<script type=\"application/json\" id=\"attnlab-data\">{_script_json(payload)}</script>\n"
        f"<script>{PAGE_JS}</script>\n{f'<script>{FIGURES_JS}</script>' if figures else ''}\n</body>\n</html>\n"
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    log.info("wrote attention report %s (%.1f KB, %d examples)", path, path.stat().st_size / 1024, len(examples))
    return path


def _figures(examples: Sequence[ReportExample], default_method: str | None) -> str:
    """Each example's ``figure_html``, shown while it is selected (``assets/figures.js``)."""
    out = []
    for i, ex in enumerate(examples):
        figure = ex.figure_html(default_method=default_method)
        if figure:
            out.append(f'<figure class="example-figure" data-example="{i}"{"" if i == 0 else " hidden"}>{figure}</figure>')
    return "".join(out)


def _card(card: dict[str, Any] | None) -> str:
    if card is None:
        return ""
    from attnlab.explain.card_view import card_html

    return card_html(card)


_BODY = """<header>
  <h1 id="title"></h1>
  <dl id="meta"></dl>
</header>
<main>
  <nav class="controls">
    <label id="example-label">Example <select id="example"></select></label>
    <label>Layer <select id="layer"></select></label>
    <label>Head <select id="head"></select></label>
    <label id="method-label">Map <select id="method"></select></label>
    <label>Colour <select id="scale">
      <option value="row">per row (where each query looks)</option>
      <option value="global">whole map</option>
      <option value="sqrt">whole map, square root</option>
    </select></label>
    <label>Overlay <input id="opacity" type="range" min="0" max="100" value="60"></label>
    <span id="status" class="status"></span>
  </nav>
  <div id="summary" class="summary"></div>
  <div class="panels">
    <figure class="panel">
      <figcaption id="map-caption">Attention map</figcaption>
      <div class="canvas-wrap"><canvas id="map"></canvas></div>
    </figure>
    <figure class="panel">
      <figcaption id="input-caption">Input</figcaption>
      <div class="canvas-wrap scroll" id="input-wrap"><canvas id="input"></canvas></div>
    </figure>
  </div>
  <div id="readout" class="readout"></div>
  <p class="help" id="help">Hover a row of the map, or a patch, token or time step of the input, to see where
  that query attends. Click to pin it (Esc to release). Keys: &uarr;/&darr; layer, &larr;/&rarr; head.</p>
  <!--figures-->
  <!--card-->
</main>"""
