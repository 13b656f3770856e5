"""Stylesheet and script of the HTML attention explorer (``report.py``).

They live beside this module as package data, ``assets/explorer.css`` and
``assets/explorer.js`` (``[tool.setuptools.package-data]`` in pyproject.toml), and are
inlined into every report. No external resource is referenced: system fonts only, colour
maps embedded as control points (viridis and inferno from matplotlib, CC0), decompression
by the browser's ``DecompressionStream``.
"""

from __future__ import annotations

from importlib import resources

__all__ = ["PAGE_CSS", "PAGE_JS"]


def _asset(name: str) -> str:
    return resources.files("attnlab.explain").joinpath("assets", name).read_text(encoding="utf-8")


PAGE_CSS = _asset("explorer.css")
PAGE_JS = _asset("explorer.js")
