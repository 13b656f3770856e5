"""Language-model metrics (`attnlab.tasks.language_model`): ``loss`` is the mean next-token NLL
over every token of the split and ``perplexity`` its exp, whatever the batches' sizes."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from attnlab.tasks.language_model import LanguageModelObjective


class _Bigram(nn.Module):
    """A stand-in model: a fixed random table of next-token logits per current token."""

    def __init__(self, vocab: int, seed: int):
        super().__init__()
        self.table = nn.Parameter(torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(seed)) * 2)

    def forward(self, x):  # (B, T) -> (B, T, V)
        return self.table[x]


def test_perplexity_is_exp_of_the_token_mean_nll_over_unequal_batches():
    vocab = 11
    model = _Bigram(vocab, 0)
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randint(0, vocab, (b, 16), generator=g), torch.randint(0, vocab, (b, 16), generator=g))
               for b in (7, 7, 2)]  # the last batch smaller, as an evaluation loader's tail
    nll, tokens, batch_ppl = 0.0, 0, []
    for x, y in batches:
        token_nll = -model(x).detach().double().log_softmax(-1).gather(-1, y[..., None])[..., 0]  # (B, T) float64
        nll, tokens = nll + float(token_nll.sum()), tokens + y.numel()
        batch_ppl.append(math.exp(float(token_nll.mean())))
    objective = LanguageModelObjective()
    with torch.no_grad():
        metrics = objective.evaluate(model, batches)
        outputs, targets = objective.outputs(model, batches)
    assert metrics["loss"] == pytest.approx(nll / tokens, rel=1e-6)
    assert metrics["perplexity"] == pytest.approx(math.exp(nll / tokens), rel=1e-5)
    assert abs(sum(batch_ppl) / len(batch_ppl) - metrics["perplexity"]) > 1e-2  # not a mean of per-batch exps
    # the ensemble path (true-token probabilities) scores the same
    assert objective.score(outputs, targets) == pytest.approx(metrics, rel=1e-5)
