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


from attnlab.models import generation  # noqa: E402
from attnlab.models.generation import generate  # noqa: E402

N_POSITIONS = 24


@pytest.fixture(scope="module")
def gpt2_pair(tmp_path_factory):
    """A random 2-layer GPT-2 (weights wide enough for varied greedy tokens) and the same weights in attnlab."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from attnlab.interop.hf import load_hf_gpt2

    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=100, n_positions=N_POSITIONS, initializer_range=0.4,
                        bos_token_id=1, eos_token_id=1)
    hf = GPT2LMHeadModel(config).eval()
    directory = tmp_path_factory.mktemp("gpt2")
    hf.save_pretrained(directory)
    return hf, load_hf_gpt2(directory)


def _hf_greedy(hf, prompt, mask=None, *, max_new_tokens, eos=None, use_cache=True):
    mask = torch.ones_like(prompt) if mask is None else mask.long()
    return hf.generate(prompt, attention_mask=mask, do_sample=False, max_new_tokens=max_new_tokens, use_cache=use_cache,
                       eos_token_id=eos, pad_token_id=0 if eos is None else eos)


@pytest.fixture(params=["fused", "module", "packed"])
def route(request, monkeypatch):
    """Each decode route ``generate`` may pick, forced (the autotuner would pick one by timing)."""
    monkeypatch.setattr(generation, "_decode_route", lambda *args: request.param)
    return request.param


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("use_cache", [True, False])
def test_greedy_equals_hf_generate(gpt2_pair, route, batch, use_cache):
    hf, model = gpt2_pair
    torch.manual_seed(1)
    prompt = torch.randint(2, 100, (batch, 5))
    ours = generate(model, prompt, max_new_tokens=N_POSITIONS - 5, temperature=0, use_cache=use_cache)  # up to n_positions
    assert torch.equal(ours, _hf_greedy(hf, prompt, max_new_tokens=N_POSITIONS - 5, use_cache=use_cache))
    assert len(set(ours[:, 5:].flatten().tolist())) > 3  # varied tokens, not one repeated


def test_a_row_that_ends_early_keeps_padding_while_the_others_continue(gpt2_pair, route):
    hf, model = gpt2_pair
    torch.manual_seed(2)
    prompt = torch.randint(2, 100, (4, 5))
    free = generate(model, prompt, max_new_tokens=12, temperature=0)
    eos = int(free[1, 7])  # row 1's third new token ends it (and whichever other row makes it)
    ours = generate(model, prompt, max_new_tokens=12, temperature=0, stop_tokens=[eos])
    assert torch.equal(ours, _hf_greedy(hf, prompt, max_new_tokens=12, eos=eos))  # HF pads with pad_token_id = eos
    assert ours.shape == (4, 17) and (ours[1, 8:] == eos).all() and not (ours[0, 5:] == eos).any()



def _left_padded(rows: list[list[int]], pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[False] * (width - len(r)) + [True] * len(r) for r in rows])
    return ids, mask


@pytest.mark.parametrize("use_cache", [True, False])
def test_left_padded_prompts_of_different_lengths_equal_hf_and_each_row_alone(gpt2_pair, use_cache):
    """A decoder-only batch is padded on the left (as HF requires); the padding is never attended
    to and positions count real tokens only, so each row continues as it does alone."""
    hf, model = gpt2_pair
    torch.manual_seed(3)
    rows = [torch.randint(2, 100, (n,)).tolist() for n in (2, 7, 4)]
    ids, mask = _left_padded(rows)
    ours = generate(model, ids, attention_mask=mask, max_new_tokens=10, temperature=0, use_cache=use_cache)
    assert torch.equal(ours, _hf_greedy(hf, ids, mask, max_new_tokens=10, use_cache=use_cache))
    for i, row in enumerate(rows):
        alone = generate(model, torch.tensor([row]), max_new_tokens=10, temperature=0)
        assert ours[i, 7:].tolist() == alone[0, len(row):].tolist()


def test_left_padded_rows_slide_past_the_positions_as_each_row_alone(gpt2_pair):
    """Past n_positions the last n_positions columns are recomputed: for every row exactly its own
    last tokens (a padded row keeps all of its tokens until it has n_positions of them)."""
    _, model = gpt2_pair
    torch.manual_seed(4)
    rows = [torch.randint(2, 100, (n,)).tolist() for n in (3, 9)]
    ids, mask = _left_padded(rows)
    ours = generate(model, ids, attention_mask=mask, max_new_tokens=N_POSITIONS + 4, temperature=0)
    for i, row in enumerate(rows):
        alone = generate(model, torch.tensor([row]), max_new_tokens=N_POSITIONS + 4, temperature=0)
        assert ours[i, 9:].tolist() == alone[0, len(row):].tolist()


@pytest.mark.parametrize("mask, message", [
    ([[True, True, False]], r"attention_mask must be left-padded"),
    ([[False, False, False]], r"row 0 has no token"),
    ([[True, True]], r"attention_mask must be \(B, N\) = \(1, 3\)"),
    ([[2, 1, 1]], r"attention_mask must hold 0/1 or bool"),
])
def test_a_bad_attention_mask_is_refused_in_one_line(gpt2_pair, mask, message):
    _, model = gpt2_pair
    with pytest.raises(ValueError, match=message):
        generate(model, torch.tensor([[5, 6, 7]]), attention_mask=torch.tensor(mask), max_new_tokens=2, temperature=0)
