"""Explainability: capture exact attention, roll it out, plot it, and explore it in HTML.

``capture`` -> ``AttentionMaps`` -> ``rollout`` / ``gradient_rollout`` -> ``plots`` (PNG) and
``write_report`` (one self-contained HTML explorer). ``relevance`` scores the ``Positions`` a
task adapter hands over by any of ``METHODS``; ``faithfulness`` and ``card`` measure how
faithful each is; ``linear`` gives the exact attribution of a forecaster linear in its input
(DLinear), which has no attention to capture. matplotlib is imported only when a plot function runs, and transformers
never (``capture_hf`` only calls the model).
"""

from attnlab.explain.capture import AttentionMaps, Recorder, attention_modules, capture, recording
from attnlab.explain.capture_hf import capture_hf
from attnlab.explain.positions import Patches, Positions, Spans
from attnlab.explain.plots import alignment_plot, head_grid, image_overlay, time_series_plot, token_highlight, upsample_heat
from attnlab.explain.relevance import METHODS, relevance
from attnlab.explain.report import ReportExample, write_report
from attnlab.explain.rollout import attention_entropy, cls_to_patches, fuse_heads, gradient_rollout, rollout

__all__ = [
    "AttentionMaps",
    "Recorder",
    "attention_modules",
    "capture",
    "capture_hf",
    "recording",
    "rollout",
    "relevance",
    "METHODS",
    "Positions",
    "Patches",
    "Spans",
    "gradient_rollout",
    "fuse_heads",
    "cls_to_patches",
    "attention_entropy",
    "head_grid",
    "image_overlay",
    "alignment_plot",
    "token_highlight",
    "time_series_plot",
    "upsample_heat",
    "ReportExample",
    "write_report",
]
