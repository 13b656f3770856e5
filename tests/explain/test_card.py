"""The report card's Integrated Gradients completeness gap (explain/card.py, card_view.py)
against float64 references: exact for a linear model, a many-node integral for a nonlinear one."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attnlab.explain.card import format_table, score_methods
from attnlab.explain.card_view import card_html
from attnlab.explain.positions import Positions
from attnlab.explain.relevance import IG_MAX_STEPS
from tests.explain._tiny import TinyViT, ig_float64

pytest.importorskip("captum")


def _group(forward: nn.Module, rows: int = 6) -> Positions:
    torch.manual_seed(1)
    x = torch.randn(rows, 6, 16, dtype=torch.float64)
    return Positions(x, forward.eval(), 0.5 * torch.randn(16, dtype=torch.float64), 1, removed_means="a random vector")


def test_a_linear_model_reports_no_gap_at_any_steps():
    torch.manual_seed(0)
    group = _group(nn.Sequential(nn.Flatten(), nn.Linear(96, 3)).double())
    for steps in (1, 4):
        scores = score_methods([group], ["integrated_gradients", "random"], steps=steps, resamples=20)
        gap = scores["methods"]["integrated_gradients"]["completeness"]
        assert 0 <= gap["mean"] <= gap["max"] < 1e-6, (steps, gap)
        assert gap["steps"] == {str(steps): 6} and gap["above"] == 0  # nothing to refine
        assert "completeness" not in scores["methods"]["random"]


def test_the_gap_of_a_nonlinear_model_is_its_distance_from_the_float64_integral():
    torch.manual_seed(0)
    group = _group(TinyViT(depth=2).double())
    base = group.removed.expand_as(group.x)
    with torch.no_grad():
        target = group.forward(group.x).argmax(-1)
    exact = ig_float64(group.forward, group.x, base, target, 96).sum((1, 2))  # (B,) = f(x) - f(removed)
    worst = {}
    for steps in (2, 8):
        approx = ig_float64(group.forward, group.x, base, target, steps).sum((1, 2))
        want = ((approx - exact).abs() / exact.abs()).detach()
        scores = score_methods([group], ["integrated_gradients", "random"], steps=steps, max_steps=steps,
                               resamples=20)  # max_steps = steps: fixed steps, no refinement
        gap = scores["methods"]["integrated_gradients"]["completeness"]
        assert gap["mean"] == pytest.approx(float(want.mean()), rel=1e-4, abs=1e-7), steps
        assert gap["max"] == pytest.approx(float(want.max()), rel=1e-4, abs=1e-7), steps
        worst[steps] = gap["max"]
    assert worst[8] < 0.01 < worst[2]  # the figure tells too few steps from enough


def test_the_card_refines_the_examples_above_one_percent_and_reports_their_steps():
    """At 2 steps some rows miss by more than 1%; the card recomputes those at 4, 8, .. and reports the
    final gap, each row's against a float64 integral at the steps it ended at, and how many ended where."""
    torch.manual_seed(0)
    group = _group(TinyViT(depth=2).double())
    base = group.removed.expand_as(group.x)
    with torch.no_grad():
        target = group.forward(group.x).argmax(-1)
    exact = ig_float64(group.forward, group.x, base, target, 96).sum((1, 2))

    def gap_at(n):
        return ((ig_float64(group.forward, group.x, base, target, n).sum((1, 2)) - exact).abs() / exact.abs()).detach()

    want, used, n = gap_at(2), torch.full((6,), 2), 2
    assert (want > 0.01).all(), want  # 2 nodes: every row is off
    while n < IG_MAX_STEPS and (want > 0.01).any():  # the rule, by hand: double the rows still above 1%
        n *= 2
        redo = want > 0.01
        want[redo], used[redo] = gap_at(n)[redo], n
    scores = score_methods([group], ["integrated_gradients", "random"], steps=2, resamples=20)
    gap = scores["methods"]["integrated_gradients"]["completeness"]
    assert gap["max"] == pytest.approx(float(want.max()), rel=1e-4, abs=1e-7)
    assert gap["mean"] == pytest.approx(float(want.mean()), rel=1e-4, abs=1e-7)
    assert gap["max"] < 0.01 and gap["above"] == 0
    counts = {str(k): int((used == k).sum()) for k in used.unique().tolist()}
    assert gap["steps"] == counts and len(counts) > 1, counts  # rows ended at different steps
    assert scores["max_steps"] == IG_MAX_STEPS and scores["tolerance"] == 0.01
    moved = ", ".join(f"{c} of 6 at {k}" for k, c in counts.items() if k != "2")
    assert f"at 2 steps, doubled up to {IG_MAX_STEPS} where above 1% ({moved}): mean" in format_table(scores)


def test_the_table_and_the_html_card_name_the_gap_and_its_steps():
    torch.manual_seed(0)
    group = _group(TinyViT(depth=2).double())
    scores = score_methods([group], ["rollout", "integrated_gradients", "random"], steps=3, max_steps=3, resamples=20)
    gap = scores["methods"]["integrated_gradients"]["completeness"]
    table = format_table(scores)
    assert f"at 3 steps: mean {gap['mean']:.2%}, max {gap['max']:.2%}" in table
    page = card_html(scores)
    row = page.split('<tr data-method="integrated_gradients"')[1].split("</tr>")[0]
    assert f"completeness gap mean {gap['mean']:.1%}, max {gap['max']:.1%}" in row
    assert "completeness gap" not in page.split('<tr data-method="rollout"')[1].split("</tr>")[0]
    assert "Completeness gap of Integrated Gradients (3 steps)" in page
