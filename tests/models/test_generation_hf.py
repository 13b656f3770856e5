"""Decoding against Hugging Face transformers: the sampling filters against its logits warpers,
greedy decoding of a random GPT-2 (loaded with ``load_hf_gpt2``) against ``GPT2LMHeadModel.generate``."""

from __future__ import annotations

import pytest
import torch

from attnlab.models.generation import filter_logits

transformers = pytest.importorskip("transformers")
from transformers.generation.logits_process import (  # noqa: E402
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _hf_probs(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """HF's sampling distribution: the warpers in the order ``generate`` applies them."""
    scores = TemperatureLogitsWarper(temperature)(None, logits.clone())
    if top_k:
        scores = TopKLogitsWarper(top_k)(None, scores)
    if top_p is not None:
        scores = TopPLogitsWarper(top_p)(None, scores)
    return scores.softmax(-1)


def _probs(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """attnlab's sampling distribution, as ``generate`` draws from it."""
    return filter_logits(logits / temperature, top_k=top_k, top_p=top_p).softmax(-1)


@pytest.mark.parametrize("temperature", [0.3, 1.0, 1.7])
@pytest.mark.parametrize("top_k, top_p", [(None, None), (5, None), (None, 0.6), (None, 0.95), (7, 0.8), (1, 0.5)])
def test_filtered_distribution_equals_hf_warpers(temperature, top_k, top_p):
    torch.manual_seed(0)
    logits = torch.randn(16, 23) * 3
    torch.testing.assert_close(_probs(logits, temperature, top_k, top_p), _hf_probs(logits, temperature, top_k, top_p),
                               atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("logits, top_k, top_p", [
    ([3.0, 2.0, 2.0, 2.0, 1.0], 2, None),  # ties at the top-k boundary: all three 2.0 stay (HF's `<` rule)
    ([5.0, 0.0, 0.0, -1.0], None, 0.3),  # the first token alone exceeds p: it alone stays (min_tokens_to_keep=1)
    ([1.0, 1.0, 1.0, 0.0], None, 0.5),  # ties at the top-p boundary: HF keeps the later indices
    ([0.0, 2.0, 2.0, 2.0, 2.0, -3.0], None, 0.6),
    ([2.0, 2.0, 1.0, 1.0, 1.0, 1.0], 4, 0.7),  # a top-k cut, then a top-p cut among ties
])
def test_filter_boundaries_equal_hf_warpers(logits, top_k, top_p):
    logits = torch.tensor([logits])
    ours, theirs = _probs(logits, 1.0, top_k, top_p), _hf_probs(logits, 1.0, top_k, top_p)
    assert (ours > 0).tolist() == (theirs > 0).tolist()
    torch.testing.assert_close(ours, theirs, atol=1e-7, rtol=1e-6)


def test_top_p_threshold_in_float32_as_hf():
    """Probabilities 0.5, 0.3, 0.2 and p = 0.8: HF's float32 test (ascending cumulative <= 1 - p)
    keeps all three; the distributions must be the same."""
    logits = torch.tensor([[0.5, 0.3, 0.2]]).log()
    torch.testing.assert_close(_probs(logits, 1.0, None, 0.8), _hf_probs(logits, 1.0, None, 0.8), atol=1e-7, rtol=1e-6)
