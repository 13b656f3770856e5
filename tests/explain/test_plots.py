"""Plots write real, non-empty PNGs and check their inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnlab.explain import alignment_plot, head_grid, image_overlay, time_series_plot, token_highlight, upsample_heat

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path) -> bool:
    data = path.read_bytes()
    return data[:8] == PNG_MAGIC and len(data) > 2000


def test_head_grid(tmp_path):
    w = torch.softmax(torch.randn(4, 5, 5), dim=-1)
    fig = head_grid(w, tokens=["CLS", "a", "b", "c", "d"], path=tmp_path / "grid.png")
    assert _is_png(tmp_path / "grid.png")
    assert sum(ax.get_visible() for ax in fig.axes) >= 4
    head_grid(np.random.rand(6, 40, 50), path=tmp_path / "sub" / "big.png")  # creates the folder
    assert _is_png(tmp_path / "sub" / "big.png")
    assert head_grid(np.random.rand(3, 3)) is not None  # no path: no file, a Figure back
    with pytest.raises(ValueError, match="tokens"):
        head_grid(w, tokens=["x"])


def test_image_overlay(tmp_path):
    image = np.random.rand(3, 32, 48)  # (C, H, W) floats
    image_overlay(image, np.random.rand(2, 3), tmp_path / "chw.png")
    image_overlay((np.random.rand(32, 32) * 255).astype(np.uint8), torch.rand(4, 4), tmp_path / "gray.png", alpha=0.3)
    assert _is_png(tmp_path / "chw.png") and _is_png(tmp_path / "gray.png")


def test_upsample_heat():
    up = upsample_heat(np.array([[0.0, 1.0]]), (2, 4))
    # Bilinear, half-pixel centres: columns at x = 0.25, 0.75 of the 2 source cells -> 0, .25, .75, 1.
    np.testing.assert_allclose(up, [[0.0, 0.25, 0.75, 1.0]] * 2)


def test_alignment_plot(tmp_path):
    w = torch.softmax(torch.randn(4, 6), dim=-1)
    alignment_plot(w, ["le", "chat", "est", "noir", "ce", "soir"], ["the", "cat", "is", "black"], tmp_path / "align.png")
    assert _is_png(tmp_path / "align.png")
    with pytest.raises(ValueError, match="source"):
        alignment_plot(w, ["a"], ["b"], tmp_path / "bad.png")


def test_token_highlight(tmp_path):
    tokens = "the movie was not good at all , but the acting was great".split() * 4
    token_highlight(tokens, np.random.rand(len(tokens)), tmp_path / "tok.png", title="saliency")
    assert _is_png(tmp_path / "tok.png")
    with pytest.raises(ValueError, match="scores"):
        token_highlight(["a", "b"], [1.0], tmp_path / "bad.png")


def test_time_series_plot(tmp_path):
    t = np.linspace(0, 6, 500)
    time_series_plot(np.sin(t), np.random.rand(25), tmp_path / "ts.png", title="attention")
    assert _is_png(tmp_path / "ts.png")
