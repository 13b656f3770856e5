"""Translation metrics (`attnlab.tasks.translation`): corpus BLEU against the BLEU formula written
out in float64 and against sacreBLEU's own calls, and the evaluation loss as the mean over every
target token of the split (not a mean of per-batch means)."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import sacrebleu
import torch
from torch import nn

from attnlab.data.tokenizers import PAD_ID
from attnlab.tasks import translation
from attnlab.tasks.translation import TranslationObjective, corpus_bleu


def _bleu_reference(hyps: list[str], refs: list[str]) -> float:
    """Papineni et al. 2002 corpus BLEU-4 on whitespace tokens, one reference each: clipped n-gram
    counts and lengths summed over the corpus first, then the geometric mean and brevity penalty."""
    match, total = [0] * 4, [0] * 4
    hyp_len = ref_len = 0
    for h, r in zip(hyps, refs):
        h, r = h.split(), r.split()
        hyp_len, ref_len = hyp_len + len(h), ref_len + len(r)
        for n in range(1, 5):
            hc = Counter(tuple(h[i:i + n]) for i in range(len(h) - n + 1))
            rc = Counter(tuple(r[i:i + n]) for i in range(len(r) - n + 1))
            match[n - 1] += sum(min(c, rc[g]) for g, c in hc.items())
            total[n - 1] += max(len(h) - n + 1, 0)
    log_p = sum(math.log(m / t) for m, t in zip(match, total)) / 4
    bp = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return 100 * bp * math.exp(log_p)


REFS = ["a man in a red hat rides a bike down the street", "two dogs play in the snow near a fence",
        "the girl is reading a book on the green grass", "people walk along the beach at sunset",
        "a child jumps into the blue swimming pool"]
HYPS = ["a man in a red hat rides a bicycle down the road", "two dogs play in snow near the fence",
        "the girl reads a book on the grass", "people walking on the beach at sunset",
        "a child jumps into a swimming pool"]


def test_corpus_bleu_is_the_corpus_level_formula_and_sacrebleus_default_signature():
    # plain lowercase words without punctuation: 13a tokenization is a whitespace split here
    expected = _bleu_reference(HYPS, REFS)
    scores = corpus_bleu(HYPS, REFS)
    assert scores["bleu"] == pytest.approx(expected, abs=1e-9)
    assert 20 < expected < 80
    # corpus BLEU is not the mean of sentence BLEUs
    sentence_mean = sum(sacrebleu.sentence_bleu(h, [r]).score for h, r in zip(HYPS, REFS)) / len(REFS)
    assert abs(sentence_mean - expected) > 1.0


def test_cased_bleu_is_sacrebleus_13a_default_and_bleu_lc_its_lowercased_score():
    refs = ["A Man rides a bike.", "Two DOGS play in the snow, near a fence!"]
    hyps = ["a man rides a Bike .", "Two dogs play in the snow, near a fence!"]
    scores = corpus_bleu(hyps, refs)
    default = sacrebleu.BLEU()  # 13a, mixed case, exp smoothing: the signature papers are asked to report
    assert scores["bleu"] == pytest.approx(default.corpus_score(hyps, [refs]).score, abs=1e-9)
    assert default.get_signature().format().endswith("case:mixed|eff:no|tok:13a|smooth:exp|version:" + sacrebleu.__version__)
    assert scores["bleu_lc"] == pytest.approx(sacrebleu.BLEU(lowercase=True).corpus_score(hyps, [refs]).score, abs=1e-9)
    assert scores["bleu_lc"] > scores["bleu"] + 5  # the case differences count only in "bleu"


class _FixedLogits(nn.Module):
    """A stand-in model: fixed random next-token logits for each (source, target prefix) batch."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, src, tgt_in):
        g = torch.Generator().manual_seed(int(src.sum()) * 7919 + int(tgt_in.sum()))
        return torch.randn(*tgt_in.shape, self.vocab, generator=g) * 2


class _Words:
    def decode(self, ids):
        return " ".join(str(i) for i in ids)


def test_evaluation_loss_is_the_mean_over_all_target_tokens_of_the_split(monkeypatch):
    monkeypatch.setattr(translation, "translate", lambda model, src, **_: [[5, 6, 7, 8, 9]] * len(src))
    g = torch.Generator().manual_seed(0)
    vocab, batches = 20, []
    for b, n in ((3, 9), (1, 4), (5, 6)):  # unequal batch sizes and lengths, padded targets
        src = torch.randint(4, vocab, (b, 5), generator=g)
        tgt = torch.randint(4, vocab, (b, n), generator=g)
        lengths = torch.randint(2, n + 1, (b,), generator=g)
        tgt[torch.arange(n)[None] >= lengths[:, None]] = PAD_ID
        batches.append((src, tgt, ["5 6 7 8 9"] * b))
    model = _FixedLogits(vocab)
    nll, tokens, per_batch = 0.0, 0, []
    for src, tgt, _ in batches:
        logp = model(src, tgt[:, :-1]).double().log_softmax(-1)
        target = tgt[:, 1:]
        keep = target != PAD_ID
        token_nll = -logp.gather(-1, target.clamp(min=0)[..., None])[..., 0][keep]
        nll, tokens = nll + float(token_nll.sum()), tokens + int(keep.sum())
        per_batch.append(float(token_nll.mean()))
    metrics = TranslationObjective(_Words(), label_smoothing=0.1).evaluate(model, batches)
    assert metrics["loss"] == pytest.approx(nll / tokens, rel=1e-6)  # unsmoothed, over every real token
    assert abs(sum(per_batch) / len(per_batch) - nll / tokens) > 1e-3  # the per-batch mean would differ
    assert metrics["bleu"] == pytest.approx(100.0)
