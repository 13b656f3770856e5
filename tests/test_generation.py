"""Decoding: KV-cache generation equals full recompute, beam 1 equals greedy, sampling filters, BLEU."""

from __future__ import annotations

import pytest
import torch

from attnlab.models.generation import beam_search, filter_logits, generate, greedy_search
from attnlab.models import create_model


# Tiny ops: one thread is faster, and several threads crawl on a shared 2-core machine.
pytestmark = pytest.mark.usefixtures("one_thread")


def _lm(pos_embed: str = "learned"):
    torch.manual_seed(0)
    return create_model("gpt-lm", vocab_size=37, max_length=16, dim=32, depth=2, num_heads=4, pos_embed=pos_embed).double().eval()


def _mt(eos_bias: float = 0.0):
    torch.manual_seed(0)
    model = create_model("transformer-mt", src_vocab_size=41, tgt_vocab_size=41, dim=32, encoder_depth=2, decoder_depth=2,
                         num_heads=4, max_length=40, share_embeddings=False, tie_embeddings=False).double().eval()
    torch.nn.init.normal_(model.out_proj.weight, std=0.3)  # a random model with varied outputs
    model.out_proj.weight.data[model.config.eos_id] += eos_bias
    return model


@pytest.mark.parametrize("pos_embed", ["learned", "rope", "alibi"])
def test_kv_cache_generation_equals_full_recompute(pos_embed):
    model = _lm(pos_embed)
    prompt = torch.randint(4, 37, (3, 5))
    greedy_cached = generate(model, prompt, max_new_tokens=9, temperature=0)
    greedy_full = generate(model, prompt, max_new_tokens=9, temperature=0, use_cache=False)
    assert greedy_cached.shape == (3, 14)
    assert torch.equal(greedy_cached, greedy_full)
    sampled = [generate(model, prompt, max_new_tokens=9, temperature=1.3, top_k=20, top_p=0.95, use_cache=cache,
                        generator=torch.Generator().manual_seed(7)) for cache in (True, False)]
    assert torch.equal(*sampled)
    # token by token, the cached logits are the full forward's logits
    caches = model.new_caches()
    seq = torch.randint(4, 37, (2, 12))
    steps = torch.cat([model(seq[:, :4], caches=caches)] + [model(seq[:, i : i + 1], caches=caches) for i in range(4, 12)], 1)
    torch.testing.assert_close(steps, model(seq), rtol=1e-10, atol=1e-10)
    # preallocated caches and last-position-only logits (what generate uses) give the same numbers
    caches = model.new_caches(max_length=12)
    last = [model(seq[:, :4], caches=caches, last_only=True)] + [
        model(seq[:, i : i + 1], caches=caches, last_only=True) for i in range(4, 12)]
    torch.testing.assert_close(torch.cat(last, 1), model(seq)[:, 3:], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("pos_embed", ["learned", "sincos", "rope", "alibi"])
def test_a_left_padded_row_gives_the_logits_it_gives_unpadded(pos_embed):
    """TransformerLM's padding mask: pads are never attended to and positions count real tokens,
    in one forward and token by token through the KV cache."""
    model = _lm(pos_embed)
    seq = torch.randint(4, 37, (1, 8))
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), seq], 1)
    mask = torch.arange(11)[None] >= 3  # (1, 11), 3 pads first
    reference = model(seq)
    torch.testing.assert_close(model(padded, mask=mask)[:, 3:], reference, rtol=1e-10, atol=1e-10)
    caches = model.new_caches()
    steps = [model(padded[:, :6], caches=caches, mask=mask[:, :6])]
    steps += [model(padded[:, i : i + 1], caches=caches, mask=mask[:, : i + 1]) for i in range(6, 11)]
    torch.testing.assert_close(torch.cat(steps, 1)[:, 3:], reference, rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match=r"mask must be bool \(B=1, cached \+ new = 11\)"):
        model(padded, mask=mask[:, 1:])


def test_generation_past_the_context_slides_the_window():
    model = _lm("learned")  # 16 learned positions
    prompt = torch.randint(4, 37, (1, 10))
    out = generate(model, prompt, max_new_tokens=20, temperature=0)
    assert out.shape == (1, 30) and torch.equal(out[:, :10], prompt)
    # each token past the context is the greedy choice given the last 16 tokens
    for t in range(16, 30):
        logits = model(out[:, t - 16 : t])[:, -1]
        assert int(logits.argmax()) == int(out[0, t])


def test_stop_tokens_end_generation():
    model = _lm()
    prompt = torch.randint(4, 37, (1, 3))
    free = generate(model, prompt, max_new_tokens=10, temperature=0)
    stop = int(free[0, 5])  # the 3rd generated token
    out = generate(model, prompt, max_new_tokens=10, temperature=0, stop_tokens=[stop])
    first = (free[0, 3:] == stop).nonzero()[0].item()
    assert out.shape[1] == 3 + first + 1 and int(out[0, -1]) == stop


def test_filter_logits_top_k_and_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(filter_logits(logits, top_k=2)[0, 2:]).all()
    kept = torch.isfinite(filter_logits(logits, top_p=0.7))[0].tolist()
    assert kept == [True, True, False, False]  # 0.5 < 0.7, so the 0.3 token that crosses it stays
    assert torch.isfinite(filter_logits(logits, top_p=0.4))[0].tolist() == [True, False, False, False]


@pytest.mark.parametrize("eos_bias", [0.0, 2.5])
def test_beam_one_equals_greedy(eos_bias):
    model = _mt(eos_bias)
    src = torch.randint(4, 41, (6, 7))
    src[1, 4:] = 0  # padding
    greedy = greedy_search(model, src, max_len=15)
    assert greedy == beam_search(model, src, beam_size=1, max_len=15)
    assert greedy == beam_search(model, src, beam_size=1, max_len=15, length_penalty=0.3)
    if eos_bias:
        assert any(len(g) < 15 for g in greedy)  # some sentences ended with <eos>


def test_beam_search_finds_a_hypothesis_at_least_as_likely_as_greedy():
    model = _mt(eos_bias=2.0)
    src = torch.randint(4, 41, (5, 6))

    def logprob(row: int, ids: list[int]) -> float:
        tgt = torch.tensor([[model.config.bos_id] + ids + [model.config.eos_id]])
        logp = model(src[row : row + 1], tgt[:, :-1]).log_softmax(-1)
        return float(logp.gather(-1, tgt[:, 1:, None]).sum())

    greedy = greedy_search(model, src, max_len=20)
    beams = beam_search(model, src, beam_size=5, length_penalty=0.0, max_len=20)
    for row, (g, b) in enumerate(zip(greedy, beams)):
        if len(g) < 20:  # greedy finished: beam (no length normalisation) can only do as well or better
            assert logprob(row, b) >= logprob(row, g) - 1e-9


def test_incremental_decoder_equals_full_decoder():
    model = _mt()
    src = torch.randint(4, 41, (3, 8))
    src[0, 5:] = 0
    tgt = torch.randint(4, 41, (3, 6))
    state = model.start_decoding(src)
    steps = torch.stack([model.step(tgt[:, i : i + 1], state) for i in range(6)], 1)
    torch.testing.assert_close(steps, model(src, tgt), rtol=1e-10, atol=1e-10)


def test_bleu_of_a_perfect_hypothesis_is_100():
    from attnlab.tasks.translation import corpus_bleu

    refs = ["Ein Mann fährt Fahrrad.", "Zwei Hunde spielen im Schnee ."]
    scores = corpus_bleu(list(refs), refs)
    assert scores["bleu"] == pytest.approx(100.0) and scores["bleu_lc"] == pytest.approx(100.0)
    assert corpus_bleu(["Ein Hund", "Katze"], refs)["bleu"] < 10


@pytest.mark.parametrize("kind", ["bpe", "word", "char"])
def test_generated_text_keeps_the_space_after_the_prompt(kind, monkeypatch):
    """`attnlab generate RUN --prompt "First Citizen:"` printed "First Citizen:we are" for BPE and word
    runs: the new tokens, decoded alone, lost the space that opens them."""
    import attnlab.tasks.language_model as lm
    from attnlab.data.tokenizers import train_tokenizer

    text = "First Citizen: we are all resolved rather to die than to famish.\n" * 20
    tok = train_tokenizer(kind, [text], vocab_size=300)
    prompt, rest = tok.encode("First Citizen:"), tok.encode("First Citizen: we are all resolved")
    assert rest[: len(prompt)] == prompt
    # the model's sampling is not under test: it "generates" the ids that follow the prompt
    monkeypatch.setattr(lm, "generate", lambda model, ids, **_: torch.tensor([rest]))
    model = create_model("gpt-lm", vocab_size=tok.vocab_size, max_length=64, dim=16, depth=1, num_heads=2)
    out = lm.generate_text(model, {"info": {"tokenizer": tok.to_dict()}}, "First Citizen:", max_new_tokens=4, seed=0)
    assert out.startswith(" we are all resolved"), out


def test_a_prompt_a_word_tokenizer_reads_as_nothing_says_so():
    """`generate --prompt "   "` on a word-level run said "the prompt is empty: give at least one character"."""
    from attnlab.data.tokenizers import train_tokenizer
    from attnlab.errors import ConfigError
    from attnlab.tasks.language_model import generate_text

    tok = train_tokenizer("word", ["to be or not to be"] * 4, vocab_size=50)
    model = create_model("gpt-lm", vocab_size=tok.vocab_size, max_length=16, dim=16, depth=1, num_heads=2)
    with pytest.raises(ConfigError, match=r"^the prompt '   ' gives no tokens for this run's tokenizer \(spaces are no word\)"):
        generate_text(model, {"info": {"tokenizer": tok.to_dict()}}, "   ", max_new_tokens=2)


def _tiny_vocab_mt(seed: int, eos_bias: float):
    torch.manual_seed(seed)
    model = create_model("transformer-mt", src_vocab_size=5, tgt_vocab_size=5, dim=16, encoder_depth=1, decoder_depth=1,
                         num_heads=2, max_length=16, share_embeddings=False, tie_embeddings=False, dropout=0.0).double().eval()
    torch.nn.init.normal_(model.out_proj.weight, std=1.0)
    model.out_proj.weight.data[model.config.eos_id] += eos_bias
    return model


def _exhaustive_best(model, src, max_len: int, length_penalty: float) -> tuple[list[int], float]:
    """Float64 brute force over every target of up to ``max_len`` tokens: a hypothesis ended by <eos>
    scores sum(log p) / (tokens + 1)**length_penalty (HF's and fairseq's length counts the <eos>); one
    still open at ``max_len`` scores sum(log p) / max_len**length_penalty. Returns the best and the margin to the next."""
    import itertools

    c = model.config
    scored = []
    for t in range(max_len + 1):
        for ys in itertools.product([v for v in range(c.tgt_vocab_size) if v != c.eos_id], repeat=t):
            logp = model(src, torch.tensor([[c.bos_id, *ys]])).log_softmax(-1)[0]  # (t + 1, V)
            total = float(sum(logp[i, y] for i, y in enumerate(ys)))
            if t < max_len:
                scored.append(((total + float(logp[t, c.eos_id])) / (t + 1) ** length_penalty, list(ys)))
            else:
                scored.append((total / t**length_penalty, list(ys)))
    scored.sort(key=lambda item: -item[0])
    return scored[0][1], scored[0][0] - scored[1][0]


@pytest.mark.parametrize("seed, eos_bias", [(0, 0.0), (1, 1.5), (2, -1.0)])
@pytest.mark.parametrize("length_penalty", [0.0, 0.6, 1.0, 2.0])
def test_a_beam_wider_than_every_prefix_is_exhaustive_search(seed, eos_bias, length_penalty):
    """With a beam holding every prefix (4^3 alive x 5 tokens < 400) no hypothesis is pruned: the
    result is the brute-force best under the same length penalty, finished and open hypotheses alike."""
    model = _tiny_vocab_mt(seed, eos_bias)
    src = torch.tensor([[1, 4, 4, 1]])
    with torch.no_grad():
        best, margin = _exhaustive_best(model, src, 4, length_penalty)
        assert margin > 1e-9  # a unique best
        assert beam_search(model, src, beam_size=400, length_penalty=length_penalty, max_len=4) == [best]


@pytest.mark.parametrize("beam_size", [2, 3])
def test_batched_beam_search_equals_one_sentence_at_a_time(beam_size):
    """A sentence's beams and finished hypotheses are its own: padding and its neighbours change nothing."""
    model = _mt()
    shift = torch.zeros(41, dtype=torch.float64)
    shift[model.config.eos_id] = 1.5  # <eos> likelier by a constant logit: some sentences end early, others not
    model.out_proj.register_forward_hook(lambda module, inputs, logits: logits + shift)
    src = torch.randint(4, 41, (4, 7))
    src[1, 3:] = 0
    src[3, 5:] = 0
    batch = beam_search(model, src, beam_size=beam_size, length_penalty=1.0, max_len=12)
    alone = [beam_search(model, src[i : i + 1, : int((src[i] != 0).sum())], beam_size=beam_size, length_penalty=1.0,
                         max_len=12)[0] for i in range(4)]
    assert batch == alone
    assert {len(hyp) < 12 for hyp in batch} == {True, False}  # some ended with <eos>, some ran to max_len


@pytest.mark.parametrize("option, value, message", [
    ("max_new_tokens", 0, r"max_new_tokens must be >= 1, got 0"),
    ("top_k", -1, r"top_k must be >= 0 \(0: no cut\), got -1"),
    ("top_p", 0.0, r"top_p must be in \(0, 1\] \(1: no cut\), got 0.0"),
    ("top_p", 1.5, r"top_p must be in \(0, 1\] \(1: no cut\), got 1.5"),
])
def test_generate_refuses_sampling_values_hugging_face_refuses(option, value, message):
    """They were ignored (top_p <= 0 and top_k < 0 sampled from every token; max_new_tokens 0 returned the
    prompt); transformers' generate raises for each."""
    from attnlab.models.generation import generate

    with pytest.raises(ValueError, match=r"^generate: " + message):
        generate(_lm(), torch.tensor([[1, 2, 3]]), **{option: value})
