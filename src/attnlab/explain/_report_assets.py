"""Stylesheet and scripts of the HTML attention explorer (``report.py``).

They live beside this module as package data (``[tool.setuptools.package-data]`` in
pyproject.toml): ``assets/explorer.css``, the explorer's script in one file per concern
(`PAGE_JS_PARTS`), and ``assets/figures.js`` (only on pages with an example figure, such as a
forecast's SVG); all are inlined into every report, so it stays one file that works offline.
The parts are joined, in their fixed order, inside one closure: they share its names (the
decoded data, the state, the current view) as the single file they were cut from did, and a
part's top-level statements run after those of the parts before it. No external resource is
referenced: system fonts only, colour maps embedded as control points (viridis and inferno
from matplotlib, CC0), decompression by the browser's ``DecompressionStream``.
"""

from __future__ import annotations

from importlib import resources

__all__ = ["PAGE_CSS", "PAGE_JS", "PAGE_JS_PARTS", "FIGURES_JS"]


def _asset(name: str) -> str:
    return resources.files("attnlab.explain").joinpath("assets", name).read_text(encoding="utf-8")


PAGE_CSS = _asset("explorer.css")
# Data and selection, the map, the input panel, the controls (which start the page: last).
PAGE_JS_PARTS = ("explorer_data.js", "explorer_map.js", "explorer_input.js", "explorer_controls.js")
PAGE_JS = '"use strict";\n(function () {\n' + "\n".join(_asset(name) for name in PAGE_JS_PARTS) + "})();\n"
FIGURES_JS = _asset("figures.js")
