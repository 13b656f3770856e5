"""Planted shortcut, small: do the gradient-based maps find a cue the model is trained to use?

A tiny ViT (tests/explain/_tiny.py) takes 9 patch tokens of noise; its label's code vector is
added, strongly, to patch 0 (the marker) of 90% of the training examples, and weakly (x0.1) to
every other patch of all of them, so the marker is the easy cue and the rest a weak true signal.
After 150 Adam steps the model follows the marker (checked first: a conflicting
marker flips its prediction), and gradient-weighted rollout (Chefer et al., CVPR 2021),
last-layer attention x gradient and input x gradient must put their top-1 patch on the marker
far more often than the random map does (1/9 by chance). The benchmark version, with digits,
TREC, bootstrap intervals and the randomisation check (Adebayo et al. 2018), is
benchmarks/shortcut.py.
"""

from __future__ import annotations

import pytest
import torch

from attnlab.explain.relevance import relevance
from tests.explain._tiny import TinyViT

CLASSES, PATCHES, DIM, MARKER = 3, 9, 16, 0


def _data(n: int, codes: torch.Tensor, g: torch.Generator, *, presence: float, shift: int = 0):
    """(B, 9, 16) noise tokens; y's code x3 on the marker patch (code of y + shift), x0.1 elsewhere."""
    y = torch.randint(0, CLASSES, (n,), generator=g)
    x = torch.randn(n, PATCHES, DIM, generator=g)
    x[:, 1:] += 0.1 * codes[y][:, None]  # the weak true signal, on every other patch
    marked = torch.rand(n, generator=g) < presence
    x[marked, MARKER] += 3.0 * codes[(y[marked] + shift) % CLASSES]
    return x, y


@pytest.fixture(scope="module")
def trained():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: one thread is faster, and the machine is shared
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    codes = torch.nn.functional.normalize(torch.randn(CLASSES, DIM, generator=g), dim=-1) * DIM ** 0.5
    model = TinyViT(dim=DIM, heads=4, depth=2, grid=(3, 3), classes=CLASSES)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        x, y = _data(64, codes, g, presence=0.9)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.set_num_threads(threads)
    return model.eval(), codes, g


def test_the_model_follows_the_marker(trained):
    model, codes, g = trained
    x, y = _data(256, codes, g, presence=1.0, shift=1)  # a conflicting marker: the next class's code
    with torch.no_grad():
        follows = (model(x).argmax(-1) == (y + 1) % CLASSES).double().mean()
    assert follows > 0.8, f"the planted shortcut was not learned (follows a conflicting marker {follows:.2f})"


@pytest.mark.parametrize("method", ["gradient", "attn_x_grad", "input_x_gradient"])
def test_top1_lands_on_the_marker_far_more_often_than_random(trained, method):
    model, codes, g = trained
    x, _ = _data(256, codes, g, presence=1.0)
    hit = (relevance(model, x, method).argmax(-1) == MARKER).double().mean()
    floor = (relevance(model, x, "random", seed=1).argmax(-1) == MARKER).double().mean()
    assert floor < 0.25  # about 1/9
    assert hit > 0.8 and hit > floor + 0.5, f"{method}: top-1 on the marker {hit:.2f}, random {floor:.2f}"
