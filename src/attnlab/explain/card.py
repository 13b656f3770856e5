"""A report card: every relevance method scored for faithfulness on one set of ``Positions``.

For each method: positive / negative perturbation AUC (Chefer et al. 2021), deletion /
insertion AUC (Petsiuk et al. 2018) and the Spearman correlation with the maps of a fully
re-initialised model (Adebayo et al. 2018), each a mean over examples with its bootstrap 95%
interval, plus the mean positive / negative perturbation curves. The ``random`` map is scored
the same way and shown beside every figure (Jain & Wallace 2019: a heat map is not evidence
by itself). ``best_method`` picks the lowest positive-perturbation AUC: removing what the map
calls most relevant should break the prediction soonest.

Integrated Gradients' row also carries its completeness gap (``completeness``: the mean and max
over the scored examples of |sum(attributions) - (f(x) - f(removed))| / |f(x) - f(removed)|,
``explain.relevance.integrated_gradients``): how far its quadrature is from the integral it
approximates, which the map itself does not show. An example whose gap exceeds ``IG_TOLERANCE``
(1%) is recomputed at twice the steps up to ``max_steps`` (``adaptive_integrated_gradients``;
Sundararajan et al. 2017 advise raising the steps where completeness is off); the gap reported is
the final one, beside how many examples ended at each step count (``completeness["steps"]``).

Integrated Gradients integrates from the removed value (the ``Positions``' baseline), so it
attributes against the same reference the perturbation measures remove to. Multi-label and
regression runs are scored through their ``Positions.readout`` (``explain.readout``); a
regression run's maps are the magnitude of each position's attribution, since its readout
counts a change of the prediction in either direction.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from attnlab.errors import ConfigError
from attnlab.explain.capture import attention_modules
from attnlab.explain.faithfulness import (
    FRACTIONS,
    auc,
    bootstrap_ci,
    deletion_insertion,
    perturbation,
    randomised_copy,
    spearman,
)
from attnlab.explain.positions import Positions
from attnlab.explain.relevance import (
    ATTENTION_METHODS,
    IG_MAX_STEPS,
    IG_STEPS,
    IG_TOLERANCE,
    METHODS,
    adaptive_integrated_gradients,
    relevance,
)

__all__ = [
    "LOWER_IS_BETTER",
    "MEASURES",
    "best_method",
    "check_methods",
    "completeness_note",
    "format_table",
    "position_maps",
    "score_methods",
    "supported_methods",
]

MEASURES = ("positive", "negative", "deletion", "insertion", "randomisation")
LOWER_IS_BETTER = {"positive": True, "negative": False, "deletion": True, "insertion": False, "randomisation": True}


def supported_methods(forward: nn.Module) -> tuple[str, ...]:
    """The methods that work for this model: all of ``METHODS`` when it has attnlab attention,
    else the ones that need only gradients (and the random floor)."""
    if attention_modules(forward):
        return METHODS
    return tuple(m for m in METHODS if m not in ATTENTION_METHODS)


def check_methods(methods: Sequence[str] | None, forward: nn.Module, model_name: str) -> tuple[str, ...]:
    """``methods`` (None: every supported one), checked; a method the model cannot support is a
    ``ConfigError`` naming the method and the model (the CLI prints it as one line, exit 2)."""
    ok = supported_methods(forward)
    if methods is None:
        return ok
    for m in methods:
        if m not in METHODS:
            raise ConfigError(f"unknown relevance method {m!r} for model {model_name}; choose from {', '.join(METHODS)}")
        if m not in ok:
            raise ConfigError(f"method {m!r} needs attention maps, but model {model_name} has no attnlab attention "
                              f"layers; it supports {', '.join(ok)}")
    return tuple(dict.fromkeys(methods))


def _explain(method: str, g: Positions, steps: int, seed: int, max_steps: int = IG_MAX_STEPS):
    baseline = g.removed.to(g.x.dtype).expand_as(g.x)

    def explain(forward: nn.Module, x: torch.Tensor, gaps: list | None = None, used: list | None = None) -> torch.Tensor:
        """``method``'s map of ``x``; Integrated Gradients appends its (B,) final completeness gap to
        ``gaps`` and the (B,) steps each row ended at to ``used``."""
        if method == "integrated_gradients":
            rel, gap, n = adaptive_integrated_gradients(forward, x, baseline=baseline, steps=steps,
                                                        max_steps=max_steps)  # (B, N), (B,), (B,)
            if gaps is not None:
                gaps.append(gap.cpu().numpy())
            if used is not None:
                used.append(n.numpy())
        else:
            rel = relevance(forward, x, method, num_prefix_tokens=g.num_prefix_tokens, steps=steps, baseline=baseline,
                            seed=seed, sequence=g.sequence).detach()  # (B, N)
        # a regression readout scores a change of either sign: a position that lowers the prediction matters as much
        return rel.abs() if g.readout.kind == "regression" else rel

    return explain


def position_maps(groups: Sequence[Positions], methods: Sequence[str], *, steps: int = IG_STEPS, seed: int = 0,
                  max_steps: int = IG_MAX_STEPS) -> dict[str, list]:
    """Each method's map for every row of every group: {method: [(N,) tensor per row, groups in order]}."""
    out: dict[str, list] = {m: [] for m in methods}
    for g in groups:
        g.forward.eval()
        for m in methods:
            out[m] += list(_explain(m, g, steps, seed, max_steps)(g.forward, g.x).float())
    return out


def attach_method_maps(examples: Sequence, groups: Sequence[Positions], methods: Sequence[str], *, steps: int = IG_STEPS,
                       seed: int = 0, max_steps: int = IG_MAX_STEPS) -> None:
    """Put each method's map on the report examples the groups' rows are (row index ``i`` ->
    ``examples[i]``), in the order the report draws the positions (``Positions.order``)."""
    maps = position_maps(groups, methods, steps=steps, seed=seed, max_steps=max_steps)
    rows = [(int(i), g.order) for g in groups for i in g.index]
    for m in methods:
        for (i, order), scores in zip(rows, maps[m]):
            if i >= len(examples):
                continue
            ex = examples[i]
            if len(ex.tokens) - ex.num_prefix_tokens != scores.numel():  # the example shows other positions
                continue
            ex.methods = {**(ex.methods or {}), m: (scores if order is None else scores[list(order)]).numpy()}


def score_methods(groups: Sequence[Positions], methods: Sequence[str], *, steps: int = IG_STEPS, seed: int = 0,
                  resamples: int = 1000, max_steps: int = IG_MAX_STEPS) -> dict:
    """Score ``methods`` on every row of ``groups`` (see the module docstring).

    Returns a JSON-ready dict: ``examples``, ``removed`` (what removal means), ``fractions``,
    ``methods`` {name: {measure: [mean, low, high], "curves": {"positive": [...], "negative":
    [...]}, "seconds": s}}, ``integrated_gradients`` also ``"completeness": {"mean": gap, "max":
    gap, "above": examples over the tolerance, "steps": {steps: examples that ended there}}`` (see
    the module docstring), and ``best`` (``best_method``).
    """
    per: dict[str, dict[str, list[np.ndarray]]] = {m: {k: [] for k in MEASURES + ("pos_curve", "neg_curve", "gap",
                                                                                     "used")}
                                                  for m in methods}
    seconds = dict.fromkeys(methods, 0.0)
    for g in groups:
        g.forward.eval()
        rand = randomised_copy(g.forward, seed=seed).eval()
        with torch.no_grad():
            target = g.readout.target(g.forward(g.x))  # (B,) the output the maps explain (a classifier's: its class)
        for m in methods:
            t0 = time.perf_counter()
            explain = _explain(m, g, steps, seed, max_steps)
            rel = explain(g.forward, g.x, per[m]["gap"], per[m]["used"])  # (B, N)
            pos = perturbation(g.forward, g.x, rel, g.removed, positive=True, target=target, readout=g.readout)  # (B, F)
            neg = perturbation(g.forward, g.x, rel, g.removed, positive=False, target=target, readout=g.readout)
            fr, dele, ins = deletion_insertion(g.forward, g.x, rel, g.removed, target=target, readout=g.readout)
            r = per[m]
            r["pos_curve"].append(pos)
            r["neg_curve"].append(neg)
            r["positive"].append(auc(pos, FRACTIONS))
            r["negative"].append(auc(neg, FRACTIONS))
            r["deletion"].append(auc(dele, fr))
            r["insertion"].append(auc(ins, fr))
            r["randomisation"].append(spearman(rel, explain(rand, g.x)).numpy())
            seconds[m] += time.perf_counter() - t0
    rows = {}
    for m in methods:
        values = {k: np.concatenate(v) for k, v in per[m].items() if v}
        rows[m] = {k: list(bootstrap_ci(values[k], n=resamples, seed=seed)) for k in MEASURES}
        rows[m]["curves"] = {"positive": values["pos_curve"].mean(0).tolist(),
                             "negative": values["neg_curve"].mean(0).tolist()}
        rows[m]["seconds"] = seconds[m]
        if "gap" in values:
            n, count = np.unique(values["used"], return_counts=True)
            rows[m]["completeness"] = {"mean": float(values["gap"].mean()), "max": float(values["gap"].max()),
                                       "above": int((values["gap"] > IG_TOLERANCE).sum()),
                                       "steps": {str(int(a)): int(c) for a, c in zip(n, count)}}
    removed = "; ".join(dict.fromkeys(g.removed_means for g in groups if g.removed_means))
    readout = groups[0].readout
    result = {"examples": int(sum(len(g) for g in groups)), "removed": removed, "fractions": list(FRACTIONS),
              "steps": steps, "max_steps": max(steps, max_steps), "tolerance": IG_TOLERANCE, "target": readout.kind,
              "measured": dict(zip(("perturbation", "deletion"), readout.words)), "methods": rows}
    result["best"] = best_method(result)
    return result


def best_method(scores: dict) -> str | None:
    """The method (not the random floor) with the lowest positive-perturbation AUC; ties go to
    the one listed first. None when only the random map was scored."""
    rows = {m: r for m, r in scores["methods"].items() if m != "random"}
    if not rows:
        return None
    return min(rows, key=lambda m: rows[m]["positive"][0])


def format_table(scores: dict, *, title: str = "") -> str:
    """A plain-text table: one row per method, mean [95% CI] of each measure, the random floor
    last and repeated in the header line so every figure has its baseline beside it."""
    head = title + (" " if title else "") + f"{scores['examples']} examples; removed = {scores['removed'] or 'n/a'}"
    if scores.get("target", "class") != "class":
        head += (f"; {scores['target']} target: perturbation measures {scores['measured']['perturbation']}, "
                 f"deletion / insertion {scores['measured']['deletion']}")
    arrows = {k: "lower better" if LOWER_IS_BETTER[k] else "higher better" for k in MEASURES}
    lines = [head, "mean [95% bootstrap CI]; " + ", ".join(f"{k}: {v}" for k, v in arrows.items()),
             f"{'method':22s}" + "".join(f"{k:>24s}" for k in MEASURES) + f"{'seconds':>9s}"]
    order = [m for m in scores["methods"] if m != "random"] + [m for m in scores["methods"] if m == "random"]
    for m in order:
        r = scores["methods"][m]
        mark = " *" if m == scores.get("best") else ("  (floor)" if m == "random" else "")
        cells = "".join(f"{r[k][0]:9.3f} [{r[k][1]:.3f},{r[k][2]:.3f}]" for k in MEASURES)
        lines.append(f"{(m + mark):22s}{cells}{r['seconds']:9.2f}")
    if scores.get("best"):
        lines.append(f"* best positive-perturbation AUC: {scores['best']}")
    gap = scores["methods"].get("integrated_gradients", {}).get("completeness")
    if gap:
        lines.append(completeness_note(gap, scores.get("steps"), scores.get("max_steps"), scores.get("tolerance")))
    return "\n".join(lines)


def completeness_note(gap: dict, steps: int | None, max_steps: int | None = None, tolerance: float | None = None) -> str:
    """Integrated Gradients' completeness gap in words, for the table and the HTML card."""
    at = f"{steps} steps" if steps else "its steps"
    if max_steps and steps and max_steps > steps and tolerance is not None:  # the refinement was on
        ended = gap.get("steps", {})
        total = sum(ended.values())
        moved = ", ".join(f"{c} of {total} at {n}" for n, c in ended.items() if int(n) != steps) or "none needed more"
        at += f", doubled up to {max_steps} where above {tolerance:.0%} ({moved})"
    above = f"; {gap['above']} still above {tolerance:.0%}" if gap.get("above") and tolerance is not None else ""
    return (f"integrated_gradients completeness gap |sum(attributions) - (f(x) - f(removed))| / |f(x) - f(removed)| "
            f"at {at}: mean {gap['mean']:.2%}, max {gap['max']:.2%}{above} (more steps make it smaller)")
