"""Faithfulness of relevance maps: does the model agree with what a map says matters?

- Positive / negative perturbation (Chefer et al., CVPR 2021): remove 10%..90% of the
  positions, most relevant first (positive; lower AUC is better) or least relevant first
  (negative; higher is better), and record accuracy on the class predicted on the intact input.
- Deletion / insertion (Petsiuk et al., BMVC 2018, "RISE"): the predicted-class probability as
  positions are removed from the intact input (lower AUC better) or put back into a fully
  removed one (higher better).
- Model randomisation (Adebayo et al., NeurIPS 2018, "Sanity Checks for Saliency Maps"):
  Spearman rank correlation between a map on the trained model and on copies whose layers are
  re-initialised from the top down; a faithful method's correlation falls.
- ``bootstrap_ci``: 95% percentile intervals over examples.

Multi-label and regression models are measured the same way through a ``Readout``
(``explain.readout``): what stays of the intact prediction, in [0, 1], instead of accuracy and
class probability.

What "removed" means is the caller's: ``removed`` is a tensor broadcastable to the input
(mean pixel, pad token embedding, series mean), passed in by the task side.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from attnlab.explain.readout import CLASS, Readout

__all__ = ["FRACTIONS", "auc", "bootstrap_ci", "cascading_randomisation", "deletion_insertion", "perturbation",
           "randomised_copy", "remove_positions", "spearman"]

FRACTIONS = tuple(i / 10 for i in range(1, 10))  # Chefer et al.: 10% .. 90%


def auc(y: np.ndarray, x: Sequence[float]) -> np.ndarray:
    """Trapezoid area under ``y`` over ``x``, divided by the span of ``x`` (so in y's units).

    Shape: y (..., F), x (F,) -> (...).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    return ((y[..., 1:] + y[..., :-1]) / 2 * np.diff(x)).sum(-1) / (x[-1] - x[0])


def _ranks(a: Tensor) -> Tensor:
    """Average ranks (ties share their mean rank) along the last dim, float64. (B, N) -> (B, N)."""
    a = a.double()
    order = a.argsort(dim=-1)
    ranks = torch.empty_like(a)
    ranks.scatter_(-1, order, torch.arange(a.shape[-1], dtype=torch.float64).expand_as(a).contiguous())
    out = torch.empty_like(a)
    for i in range(a.shape[0]):  # ties: mean rank per distinct value
        _, inv = torch.unique(a[i], return_inverse=True)
        sums = torch.zeros(int(inv.max()) + 1, dtype=torch.float64).index_add_(0, inv, ranks[i])
        counts = torch.zeros_like(sums).index_add_(0, inv, torch.ones_like(ranks[i]))
        out[i] = (sums / counts)[inv]
    return out


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation per row (Pearson of average ranks). (B, N), (B, N) -> (B,)."""
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(-1, keepdim=True), rb - rb.mean(-1, keepdim=True)
    return (ra * rb).sum(-1) / (ra.norm(dim=-1) * rb.norm(dim=-1)).clamp_min(1e-300)


def remove_positions(x: Tensor, keep: Tensor, removed: Tensor | float) -> Tensor:
    """``x`` with positions where ``keep`` is False replaced by ``removed``.

    Shape: x (B, N, ...), keep (B, N) bool, removed broadcastable to x -> like x.
    """
    k = keep.reshape(keep.shape + (1,) * (x.dim() - 2))
    return torch.where(k, x, torch.as_tensor(removed, dtype=x.dtype, device=x.device))


def _top_mask(rel: Tensor, k: int, most: bool) -> Tensor:
    """(B, N) True at the k most (or least) relevant positions."""
    idx = rel.argsort(dim=-1, descending=most, stable=True)[:, :k]
    return torch.zeros_like(rel, dtype=torch.bool).scatter_(1, idx, True)


@torch.no_grad()
def perturbation(model: Callable[[Tensor], Tensor], x: Tensor, rel: Tensor, removed: Tensor | float, *,
                 positive: bool = True, fractions: Sequence[float] = FRACTIONS,
                 target: Tensor | None = None, readout: Readout = CLASS) -> np.ndarray:
    """Chefer et al. 2021: correct (1/0) on the predicted class after removing each fraction;
    other targets: ``readout.agreement`` with the intact outputs (``explain.readout``).

    Shape: x (B, N, ...), rel (B, N) -> (B, F) floats in [0, 1]; mean over B is the accuracy curve.
    """
    intact = model(x)  # (B, K)
    target = readout.target(intact) if target is None else target
    n = rel.shape[1]
    out = []
    for f in fractions:
        gone = _top_mask(rel, round(f * n), most=positive)
        out.append(readout.agreement(model(remove_positions(x, ~gone, removed)), intact, target))
    return torch.stack(out, 1).cpu().numpy()


@torch.no_grad()
def deletion_insertion(model: Callable[[Tensor], Tensor], x: Tensor, rel: Tensor, removed: Tensor | float, *,
                       steps: int = 10, target: Tensor | None = None,
                       readout: Readout = CLASS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Petsiuk et al. 2018: predicted-class probability as the most relevant positions are
    deleted from ``x`` / inserted into a fully removed input; other targets: ``readout.score``
    against the intact outputs (``explain.readout``).

    The curve is read after removing k = round(i N / steps) of the N positions, i = 0 .. steps,
    each distinct k once, and its x is the fraction actually removed, k / N: a nominal 1/steps
    grid would put the output after 5 of 49 patches at 0.1 instead of 0.102 and bias the AUC
    (``auc``, the trapezoid rule on these x). This is RISE's and Quantus's convention (a fixed
    number of pixels per step; PixelFlipping / RegionPerturbation: one region per step, so x is
    the count removed); with ``steps`` dividing N, x is exactly 0, 1/steps, .., 1, and with
    ``steps`` >= N every count 0 .. N is a point.

    Shape: -> fractions (F,) = k / N, deletion (B, F), insertion (B, F); F <= steps + 1.
    """
    if steps < 1:
        raise ValueError(f"deletion_insertion: steps must be >= 1, got {steps}")
    intact = model(x)  # (B, K)
    target = readout.target(intact) if target is None else target
    n = rel.shape[1]
    counts = sorted({round(i * n / steps) for i in range(steps + 1)})  # i * n exact, one rounding
    dele, ins = [], []
    for k in counts:
        top = _top_mask(rel, k, most=True)
        for keep, acc in ((~top, dele), (top, ins)):
            acc.append(readout.score(model(remove_positions(x, keep, removed)), intact, target))
    fr = np.asarray(counts, dtype=np.float64) / n
    return fr, torch.stack(dele, 1).cpu().numpy(), torch.stack(ins, 1).cpu().numpy()


def _reinit_order(model: nn.Module) -> list[nn.Module]:
    """Leaf modules with parameters and ``reset_parameters``, output side first."""
    mods = [m for m in model.modules() if hasattr(m, "reset_parameters") and any(True for _ in m.parameters(recurse=False))]
    return mods[::-1]


def _reinit_all_rest(model: nn.Module, order: list[nn.Module]) -> None:
    """Re-draw the parameters no module in ``order`` owns (a class token, a position table)."""
    owned = {id(q) for mm in order for q in mm.parameters(recurse=False)}
    with torch.no_grad():
        for p in model.parameters():
            if id(p) not in owned:
                p.normal_(0, 0.02)


@contextlib.contextmanager
def _seeded(model: nn.Module, seed: int) -> Iterator[None]:
    """torch's generators for ``model``'s devices seeded with ``seed`` (``reset_parameters`` takes
    no generator), and the caller's RNG state (a training loop's dropout, shuffling) restored after."""
    cuda = sorted({p.device.index if p.device.index is not None else torch.cuda.current_device()
                   for p in model.parameters() if p.device.type == "cuda"})
    other = any(p.device.type not in ("cpu", "cuda") for p in model.parameters())
    with torch.random.fork_rng(devices=cuda):
        if other:  # e.g. MPS: seed every device as torch.manual_seed does (only CPU and CUDA are restored)
            torch.manual_seed(seed)
        torch.default_generator.manual_seed(seed)
        for i in cuda:
            with torch.cuda.device(i):
                torch.cuda.manual_seed(seed)
        yield


def randomised_copy(model: nn.Module, *, seed: int = 0) -> nn.Module:
    """A copy of ``model`` with every layer re-initialised: the last step of the cascade, alone
    (what a report card needs at the cost of one extra map instead of one per layer)."""
    rand = copy.deepcopy(model)
    with _seeded(rand, seed):
        order = _reinit_order(rand)
        for m in order:
            m.reset_parameters()
        _reinit_all_rest(rand, order)
    return rand


def cascading_randomisation(model: nn.Module, x: Tensor, explain: Callable[[nn.Module, Tensor], Tensor], *,
                            seed: int = 0) -> tuple[list[int], np.ndarray]:
    """Adebayo et al. 2018: re-initialise layers top-down on a copy, one more at a time.

    ``explain(model, x)`` -> (B, N) maps. Returns the count of re-initialised modules at each
    step and the Spearman correlation with the trained model's maps, (S, B); the last step
    has every layer re-initialised (as ``randomised_copy``). Parameters not owned by such
    modules (e.g. a class token) are re-drawn too at the last step.
    """
    ref = explain(model, x).detach()
    rand = copy.deepcopy(model)
    order = _reinit_order(rand)
    counts, rhos = [], []
    with _seeded(rand, seed):  # one seeded stream through every step
        for i, m in enumerate(order, 1):
            m.reset_parameters()
            if i == len(order):
                _reinit_all_rest(rand, order)
            counts.append(i)
            rhos.append(spearman(ref, explain(rand, x).detach()).numpy())
    return counts, np.stack(rhos)


def bootstrap_ci(values: np.ndarray, *, n: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """Mean over examples and its percentile bootstrap interval (resampling examples). (B,) -> 3 floats."""
    v = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(n, len(v)))].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(v.mean()), float(lo), float(hi)
