"""The report card as HTML: a table of each method's faithfulness scores (mean and bootstrap
95% interval, the random floor beside every figure) and the positive / negative perturbation
curves as inline SVG (no script, no network), for ``write_report(card=...)``.

``scores`` is what ``attnlab.explain.card.score_methods`` returns, plus optional ``split``
and ``seconds`` keys (the data it was measured on, and what it cost). Integrated Gradients'
row names its completeness gap under the method's name: a map from too few steps looks like
any other, so the card says how far its attributions are from adding up.
"""

from __future__ import annotations

import html

from attnlab.explain.card import LOWER_IS_BETTER, MEASURES, completeness_note

__all__ = ["card_html"]

_LABELS = {"positive": "positive perturbation AUC", "negative": "negative perturbation AUC",
           "deletion": "deletion AUC", "insertion": "insertion AUC", "randomisation": "randomisation Spearman"}
_COLOURS = ("#2f6fde", "#e4572e", "#1f8a4c", "#8e44ad", "#d4a017", "#17a2b8", "#5f6b7a", "#c0392b")


def _cell(r: list[float], floor: list[float] | None) -> str:
    text = f"{r[0]:.3f} <small>[{r[1]:.3f}, {r[2]:.3f}]</small>"
    if floor is not None:
        text += f"<br><small class=\"floor\">random {floor[0]:.3f}</small>"
    return text


def _curves(scores: dict, which: str, width: int = 300, height: int = 190) -> str:
    """One SVG plot: accuracy on the predicted class against the fraction removed, per method."""
    fr = scores["fractions"]
    left, bottom, top, right = 34, 28, 10, 8
    pw, ph = width - left - right, height - top - bottom

    def xy(f: float, a: float) -> str:
        x = left + (f - fr[0]) / (fr[-1] - fr[0]) * pw
        return f"{x:.1f},{top + (1 - a) * ph:.1f}"

    parts = [(f'<svg class="curve" data-curve="{which}" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
              f'role="img" aria-label="{which} perturbation curves">'),
             f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#dde2e8"/>']
    for a in (0.0, 0.5, 1.0):
        y = top + (1 - a) * ph
        parts.append(f'<text x="{left - 4}" y="{y + 3:.1f}" text-anchor="end" font-size="9" fill="#5f6b7a">{a:g}</text>')
    for f in (fr[0], fr[len(fr) // 2], fr[-1]):
        parts.append(f'<text x="{xy(f, 0).split(",")[0]}" y="{height - 14}" text-anchor="middle" font-size="9" '
                     f'fill="#5f6b7a">{f:.0%}</text>')
    parts.append(f'<text x="{left + pw / 2:.0f}" y="{height - 2}" text-anchor="middle" font-size="10" fill="#5f6b7a">'
                 f'removed, {"most" if which == "positive" else "least"} relevant first</text>')
    for k, (m, r) in enumerate(scores["methods"].items()):
        colour = "#9aa5b1" if m == "random" else _COLOURS[k % len(_COLOURS)]
        dash = ' stroke-dasharray="4 3"' if m == "random" else ""
        points = " ".join(xy(f, a) for f, a in zip(fr, r["curves"][which]))
        parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.6"{dash}>'
                     f'<title>{html.escape(m)}</title></polyline>')
    parts.append("</svg>")
    return "".join(parts)


def _legend(scores: dict) -> str:
    items = []
    for k, m in enumerate(scores["methods"]):
        colour = "#9aa5b1" if m == "random" else _COLOURS[k % len(_COLOURS)]
        items.append(f'<span><i style="background:{colour}"></i>{html.escape(m)}</span>')
    return '<div class="legend">' + "".join(items) + "</div>"


def _note(gap: dict, scores: dict) -> str:
    """The table's completeness line, for the card row's tooltip."""
    return completeness_note(gap, scores.get("steps"), scores.get("max_steps"), scores.get("tolerance"))


def card_html(scores: dict) -> str:
    """The card's HTML section (see the module docstring)."""
    methods = scores["methods"]
    floor = methods.get("random")
    best = scores.get("best")
    head = "".join(f"<th>{_LABELS[k]}<br><small>{'lower' if LOWER_IS_BETTER[k] else 'higher'} is better</small></th>"
                   for k in MEASURES)
    rows = []
    for m, r in methods.items():
        cls = ' class="best"' if m == best else (' class="floor"' if m == "random" else "")
        name = html.escape(m) + (" &#9733;" if m == best else "") + (" (floor)" if m == "random" else "")
        if r.get("completeness"):
            gap = r["completeness"]
            name += (f'<br><small class="gap" title="{html.escape(_note(gap, scores))}">'
                     f"completeness gap mean {gap['mean']:.1%}, max {gap['max']:.1%}</small>")
        cells = "".join(f"<td>{_cell(r[k], None if m == 'random' else floor and floor[k])}</td>" for k in MEASURES)
        rows.append(f'<tr data-method="{html.escape(m)}"{cls}><th>{name}</th>{cells}<td>{r["seconds"]:.2f}</td></tr>')
    where = html.escape(str(scores.get("split", "")))
    cost = f", {scores['seconds']:.1f} s" if "seconds" in scores else ""
    note = (f"{scores['examples']} {where} examples{cost}; removed = {html.escape(scores.get('removed') or 'n/a')}; "
            f"mean [bootstrap 95% interval over examples]. The map shown by default is the method with the lowest "
            f"positive-perturbation AUC ({html.escape(str(best))}). Chefer et al. 2021 (perturbation), Petsiuk et al. "
            f"2018 (deletion / insertion), Adebayo et al. 2018 (randomisation: correlation with the maps of a "
            f"re-initialised model; the random map ignores the model, so it scores 1, the worst).")
    measured = (scores.get("measured") or {}).get("perturbation", "accuracy on the predicted class")
    if scores.get("target", "class") != "class":
        note += (f" This {html.escape(scores['target'])} run's curves measure {html.escape(measured)} (perturbation) and "
                 f"{html.escape(scores['measured']['deletion'])} (deletion / insertion), in [0, 1] as a classifier's "
                 f"accuracy and probability are (attnlab.explain.readout).")
    if any(r.get("completeness") for r in methods.values()):
        steps = scores.get("steps", "?")
        if scores.get("max_steps", 0) > scores.get("steps", 0):  # the refinement was on (explain.card)
            steps = (f"{steps} steps, doubled up to {scores['max_steps']} for an example whose gap is above "
                     f"{scores.get('tolerance', 0.01):.0%}")
        else:
            steps = f"{steps} steps"
        note += (f" Completeness gap of Integrated Gradients ({steps}): |sum of the "
                 f"attributions - (f(x) - f(removed))| / |f(x) - f(removed)| per example, 0 for the exact integral "
                 f"(Sundararajan et al. 2017); a large one means too few steps (<code>--steps</code>).")
    if scores.get("skipped"):
        note += " Not scored: " + html.escape(", ".join(scores["skipped"])) + "."
    return (f'<section id="card" class="card" data-best="{html.escape(str(best))}">'
            f"<h2>Report card: how faithful is each map?</h2><p class=\"note\">{note}</p>"
            f'<div class="card-table"><table><thead><tr><th>method</th>{head}<th>seconds</th></tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>"
            f'<div class="curves"><figure><figcaption>positive perturbation: {html.escape(measured)}'
            f"</figcaption>{_curves(scores, 'positive')}</figure><figure><figcaption>negative perturbation"
            f"</figcaption>{_curves(scores, 'negative')}</figure>{_legend(scores)}</div></section>")
