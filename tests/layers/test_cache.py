"""KVCache and the fused decoder's buffers start small and double as they fill (layers/cache.py)."""

from __future__ import annotations

import pytest
import torch

from attnlab.layers import KVCache
from attnlab.layers import cache as cache_module
from attnlab.models import create_model, generation
from attnlab.models.lm_decode import FusedDecoder


@pytest.mark.parametrize("chunks", [[3, 1, 1, 7, 1, 20, 1], [1] * 40, [37]])
def test_a_preallocated_cache_grows_and_holds_what_concatenation_holds(monkeypatch, chunks):
    monkeypatch.setattr(cache_module, "FIRST_CAPACITY", 4)
    cache = KVCache(max_length=10**12)  # a limit far beyond memory: nothing of that size is allocated
    ks, vs = [], []
    for n in chunks:
        k, v = torch.randn(2, 3, n, 8, dtype=torch.float64), torch.randn(2, 3, n, 5, dtype=torch.float64)
        ks.append(k), vs.append(v)
        keys, values = cache.update(k, v)
        torch.testing.assert_close(keys, torch.cat(ks, 2), rtol=0, atol=0)
        torch.testing.assert_close(values, torch.cat(vs, 2), rtol=0, atol=0)
    total = sum(chunks)
    assert len(cache) == total and total <= cache._k.shape[2] <= max(4, 2 * total)
    small = KVCache(max_length=5)
    small.update(torch.zeros(1, 1, 5, 2), torch.zeros(1, 1, 5, 2))
    assert small._k.shape[2] == 5  # never past its limit
    with pytest.raises(ValueError, match="6 positions exceed max_length=5"):
        small.update(torch.zeros(1, 1, 1, 2), torch.zeros(1, 1, 1, 2))


@pytest.mark.parametrize("pos_embed", ["learned", "rope"])  # the fused decoder, and the module path with caches
def test_generation_across_growth_gives_the_uncached_tokens(monkeypatch, pos_embed):
    torch.manual_seed(0)
    model = create_model("gpt-lm", vocab_size=41, max_length=64, dim=32, depth=2, num_heads=4, pos_embed=pos_embed).eval()
    with torch.no_grad():
        model.token_embed.weight.normal_(0.0, 0.5)
    assert FusedDecoder.supports(model) == (pos_embed == "learned")
    prompt = torch.randint(0, 41, (2, 3))
    monkeypatch.setattr(cache_module, "FIRST_CAPACITY", 4)  # grows 4 -> 8 -> 16 -> 32 -> 64 over the run
    grown = generation.generate(model, prompt, max_new_tokens=40, temperature=0)
    plain = generation.generate(model, prompt, max_new_tokens=40, temperature=0, use_cache=False)
    assert torch.equal(grown, plain)


def test_a_huge_max_new_tokens_allocates_only_what_it_uses():
    """RoPE / ALiBi models have no context limit: the cache was allocated for prompt + max_new_tokens
    positions up front, so ``--max-new-tokens 10**10`` died in the allocator before the first token."""
    torch.manual_seed(0)
    model = create_model("gpt-lm", vocab_size=11, max_length=16, dim=16, depth=1, num_heads=2, pos_embed="alibi",
                         tie_embeddings=False).eval()
    with torch.no_grad():  # the final norm gives ones, and only token 7's head row reads them: token 7 every step
        model.norm.weight.zero_(), model.norm.bias.fill_(1.0)
        model.lm_head.weight.zero_(), model.lm_head.weight[7].fill_(1.0)
    out = generation.generate(model, torch.tensor([[1, 2]]), max_new_tokens=10**10, temperature=0, stop_tokens=[7])
    assert out.tolist() == [[1, 2, 7]]
