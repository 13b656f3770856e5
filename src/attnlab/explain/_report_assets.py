"""Stylesheet and scripts of the HTML attention explorer (``report.py``).

They live beside this module as package data, ``assets/explorer.css``,
``assets/explorer.js`` and ``assets/figures.js`` (the last only on pages with an example
figure, such as a forecast's SVG) (``[tool.setuptools.package-data]`` in pyproject.toml), and are
inlined into every report. No external resource is referenced: system fonts only, colour
maps embedded as control points (viridis and inferno from matplotlib, CC0), decompression
by the browser's ``DecompressionStream``.
"""

from __future__ import annotations

from importlib import resources

__all__ = ["PAGE_CSS", "PAGE_JS", "FIGURES_JS"]


def _asset(name: str) -> str:
    return resources.files("attnlab.explain").joinpath("assets", name).read_text(encoding="utf-8")


PAGE_CSS = _asset("explorer.css")
PAGE_JS = _asset("explorer.js")
FIGURES_JS = _asset("figures.js")
