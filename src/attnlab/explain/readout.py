"""What a map explains, and what the faithfulness measures read, for each kind of target.

The relevance methods explain one output per example: ``argmax`` of the model's outputs (B, K),
which is the predicted class of a classifier, the most probable label of a multi-label model
(one sigmoid per label) and the one output of a regression model. The faithfulness measures
(``explain.faithfulness``) compare the outputs on a perturbed input with those on the intact
one, through a ``Readout``:

========== ============================================ =============================================
kind       ``agreement`` (perturbation curves)          ``score`` (deletion / insertion curves)
========== ============================================ =============================================
class      1 if the predicted class is unchanged, else  the softmax probability of the class
           0 (Chefer et al. 2021)                       predicted on the intact input (Petsiuk et al.
                                                        2018)
multilabel 1 if the explained label's decision (its     the probability of the explained label's
           sigmoid against the run's threshold) is      intact decision: its sigmoid where it was
           unchanged, else 0                            predicted present, 1 - sigmoid where absent
regression exp(-d^2 / 2), d the change of the           the same
           prediction in the target's training standard
           deviations (the model predicts the
           standardised target)
========== ============================================ =============================================

Every value is 1 on the intact input and in [0, 1], so the curves, their AUCs and which
direction is better read the same for every kind. The regression kernel is a choice, not a
published protocol: a change of one standard deviation scores 0.61, of two 0.14.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from attnlab.errors import ConfigError

__all__ = ["CLASS", "KINDS", "Readout"]

KINDS = ("class", "multilabel", "regression")

_WORDS = {
    "class": ("accuracy on the predicted class", "probability of the predicted class"),
    "multilabel": ("the most probable label's decision kept", "probability of that label's intact decision"),
    "regression": ("exp(-d\u00b2/2), d = the prediction's change in training standard deviations", "the same"),
}


@dataclass(frozen=True)
class Readout:
    """``kind`` (one of ``KINDS``) and, for multilabel, the decision ``threshold`` on the sigmoid."""

    kind: str = "class"
    threshold: float = 0.5

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"Readout: kind must be one of {KINDS}, got {self.kind!r}")
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"Readout: threshold must be in (0, 1), got {self.threshold}")

    @property
    def words(self) -> tuple[str, str]:
        """What ``agreement`` and ``score`` measure, in words (the report card's captions)."""
        return _WORDS[self.kind]

    def target(self, outputs: Tensor) -> Tensor:
        """(B, K) intact outputs -> (B,) the output each map explains (``argmax``; see the module docstring)."""
        return outputs.argmax(dim=-1)

    def _present(self, logits: Tensor) -> Tensor:
        return logits >= math.log(self.threshold / (1.0 - self.threshold))  # sigmoid(z) >= threshold

    def _change(self, outputs: Tensor, intact: Tensor, target: Tensor) -> Tensor:
        d = (outputs.gather(1, target[:, None]) - intact.gather(1, target[:, None]))[:, 0].double()
        return torch.exp(-0.5 * d * d)

    def agreement(self, outputs: Tensor, intact: Tensor, target: Tensor) -> Tensor:
        """(B,) float64 in [0, 1]: outputs (B, K) on a perturbed input against ``intact`` (B, K)."""
        if self.kind == "class":
            return (outputs.argmax(-1) == target).double()
        if self.kind == "multilabel":
            now, before = (self._present(t.gather(1, target[:, None])[:, 0]) for t in (outputs, intact))
            return (now == before).double()
        return self._change(outputs, intact, target)

    def score(self, outputs: Tensor, intact: Tensor, target: Tensor) -> Tensor:
        """(B,) float64 in [0, 1]: the smooth counterpart of ``agreement`` (deletion / insertion)."""
        if self.kind == "class":
            return outputs.softmax(-1).gather(1, target[:, None])[:, 0].double()
        if self.kind == "multilabel":
            p = torch.sigmoid(outputs.gather(1, target[:, None])[:, 0].double())
            return torch.where(self._present(intact.gather(1, target[:, None])[:, 0]), p, 1.0 - p)
        return self._change(outputs, intact, target)


CLASS = Readout("class")
