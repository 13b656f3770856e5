"""FusedDecoder computes what TransformerLM.forward with KV caches computes, step for step."""

from __future__ import annotations

import pytest
import torch

from attnlab.models import generation
from attnlab.layers import KVCache
from attnlab.models import create_model
from attnlab.models.lm_decode import FusedDecoder

pytestmark = pytest.mark.usefixtures("one_thread")


def _lm(dtype=torch.float64, **kw):
    torch.manual_seed(0)
    cfg = dict(vocab_size=53, max_length=24, dim=32, depth=2, num_heads=4)
    cfg.update(kw)
    model = create_model("gpt-lm", **cfg).to(dtype).eval()
    with torch.no_grad():  # a random model with varied outputs
        model.token_embed.weight.normal_(0.0, 0.5)
    return model


@pytest.mark.parametrize("kw", [
    {},  # learned positions, GELU, tied head
    {"pos_embed": "sincos", "activation": "relu", "qkv_bias": False, "tie_embeddings": False},
    {"pos_embed": "none", "activation": "swiglu"},
    {"activation": "gelu_tanh", "num_heads": 2},
])
def test_steps_match_the_module_path_in_float64(kw):
    model = _lm(**kw)
    seq = torch.randint(0, 53, (3, 20))
    caches = KVCache.for_layers(len(model.blocks), 20)
    decoder = FusedDecoder(model, 3, 20)
    # prompt of 6, single tokens, then a chunk of 4 after a filled cache, then single tokens
    cuts = [0, 6, 7, 8, 12, 13, 20]
    with torch.no_grad():
        for a, b in zip(cuts, cuts[1:]):
            want = model(seq[:, a:b], caches=caches)[:, -1]
            got = decoder.step(seq[:, a:b])
            torch.testing.assert_close(got, want.float(), rtol=1e-5, atol=1e-5)
    assert decoder.length == 20


def test_generate_gives_the_module_path_tokens_in_float32(monkeypatch):
    model = _lm(torch.float32, dim=64, depth=3)
    prompt = torch.randint(0, 53, (2, 5))
    fused = generation.generate(model, prompt, max_new_tokens=15, temperature=0)
    sampled = generation.generate(model, prompt, max_new_tokens=15, temperature=1.0, top_k=10,
                                  generator=torch.Generator().manual_seed(3))
    monkeypatch.setattr(FusedDecoder, "supports", staticmethod(lambda m: False))
    assert torch.equal(fused, generation.generate(model, prompt, max_new_tokens=15, temperature=0))
    assert torch.equal(sampled, generation.generate(model, prompt, max_new_tokens=15, temperature=1.0, top_k=10,
                                                    generator=torch.Generator().manual_seed(3)))


def test_generate_under_bf16_autocast():
    model = _lm(torch.float32, dim=64)
    prompt = torch.randint(0, 53, (2, 5))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = generation.generate(model, prompt, max_new_tokens=6, temperature=0)
    assert out.shape == (2, 11) and torch.equal(out[:, :5], prompt)


def test_layouts_it_does_not_handle_keep_the_module_path():
    assert FusedDecoder.supports(_lm())
    assert not FusedDecoder.supports(_lm(pos_embed="rope"))
    assert not FusedDecoder.supports(_lm(pos_embed="alibi"))
    assert not FusedDecoder.supports(_lm().train())
    hooked = _lm()
    hooked.blocks[1].attn.weight_hook = lambda module, weights: None
    assert not FusedDecoder.supports(hooked)
    assert not FusedDecoder.supports(create_model("transformer-mt", src_vocab_size=20, tgt_vocab_size=20, dim=16,
                                                  encoder_depth=1, decoder_depth=1, num_heads=2).eval())


def test_steps_past_max_length_are_refused():
    decoder = FusedDecoder(_lm(), 1, 4)
    decoder.step(torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="exceed max_length=4"):
        decoder.step(torch.zeros(1, 1, dtype=torch.long))


def test_generate_decodes_through_the_route_measured_faster(autotune_cache, monkeypatch):
    """The fused route is timed against the module path once per shape class; a synthetic cost
    (every fused step sleeps) makes the module path the faster one, and generate follows it."""
    import time

    from attnlab import autotune

    model = _lm(torch.float32, dim=64)
    prompt = torch.randint(0, 53, (2, 5))
    with autotune.force({"decode.fused": "fused"}):
        expected = generation.generate(model, prompt, max_new_tokens=6, temperature=0)
    steps = []
    slow_step = FusedDecoder.step

    def sleepy(self, tokens):
        steps.append(tokens.shape)
        time.sleep(0.005)
        return slow_step(self, tokens)

    monkeypatch.setattr(FusedDecoder, "step", sleepy)
    assert torch.equal(generation.generate(model, prompt, max_new_tokens=6, temperature=0), expected)
    assert [v for k, v in autotune.choices().items() if k.startswith("decode.fused|")] == ["module"]
    timed = len(steps)
    generation.generate(model, prompt, max_new_tokens=6, temperature=0)
    assert len(steps) == timed  # decided once: no more timing, and the module path decodes
    with autotune.force({"decode.fused": "fused"}):
        generation.generate(model, prompt, max_new_tokens=6, temperature=0)
    assert len(steps) == timed + 6


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="no oneDNN in this torch build")
@pytest.mark.parametrize("kw", [{}, {"pos_embed": "sincos", "activation": "swiglu", "qkv_bias": False, "tie_embeddings": False}])
def test_prepacked_steps_match_the_module_path_in_float32(kw):
    from attnlab.models.lm_decode import packable

    model = _lm(torch.float32, dim=64, **kw)
    assert packable(model) and not packable(_lm(torch.float64))
    seq = torch.randint(0, 53, (3, 20))
    caches = KVCache.for_layers(len(model.blocks), 20)
    decoder = FusedDecoder(model, 3, 20, packed=True)
    assert decoder.packed and decoder.head[0].layout == torch._mkldnn  # oneDNN's blocked weight
    with torch.no_grad():
        for a, b in zip([0, 6, 7, 8, 12, 13], [6, 7, 8, 12, 13, 20]):
            want = model(seq[:, a:b], caches=caches)[:, -1]
            torch.testing.assert_close(decoder.step(seq[:, a:b]), want, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="no oneDNN in this torch build")
def test_generate_takes_the_prepacked_route_when_it_is_measured_faster(autotune_cache, monkeypatch):
    """A synthetic cost on the plain fused steps only: the packed candidate wins, gives the same tokens."""
    import time

    from attnlab import autotune

    model = _lm(torch.float32, dim=64)
    prompt = torch.randint(0, 53, (2, 5))
    with autotune.force({"decode.fused": "fused"}):
        expected = generation.generate(model, prompt, max_new_tokens=6, temperature=0)
    plain_step, packed_steps = FusedDecoder.step, []

    def slow_unless_packed(self, tokens):
        if self.packed:
            packed_steps.append(tokens.shape)
        else:
            time.sleep(0.005)
        return plain_step(self, tokens)

    monkeypatch.setattr(FusedDecoder, "step", slow_unless_packed)
    monkeypatch.setattr(generation, "_new_caches", lambda *a: time.sleep(0.05))  # the module path: slower still
    assert torch.equal(generation.generate(model, prompt, max_new_tokens=6, temperature=0), expected)
    assert [v for k, v in autotune.choices().items() if k.startswith("decode.fused|")] == ["packed"]
    assert len(packed_steps) > 6  # timed, then decoded


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="no oneDNN in this torch build")
def test_prepacked_weights_are_reused_until_a_parameter_changes():
    model = _lm(torch.float32, dim=64)
    prompt = torch.randint(0, 53, (2, 6))
    first = FusedDecoder(model, 2, 8, packed=True)
    assert FusedDecoder(model, 2, 8, packed=True).head[0] is first.head[0]  # reused, not reordered again
    assert FusedDecoder(model, 1, 8, packed=True).head[0] is not first.head[0]  # another batch size: its own
    assert FusedDecoder(model, 2, 8, packed=True).head[0] is first.head[0]  # ... beside the first
    with torch.no_grad():
        model.blocks[0].mlp.fc1.weight.mul_(2.0)  # in place, as an optimizer step or a load
        changed = FusedDecoder(model, 2, 8, packed=True)
        assert changed.head[0] is not first.head[0]
        want = model(prompt, caches=model.new_caches(8))[:, -1]
        torch.testing.assert_close(changed.step(prompt), want, rtol=1e-4, atol=1e-5)
