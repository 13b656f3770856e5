"""Decoding: greedy and beam search for encoder-decoders, sampling for language models.

- ``greedy_search(model, src)`` and ``beam_search(model, src, beam_size, length_penalty)``:
  batched, one encoder pass, then one decoder step per position with the KV caches of
  ``Seq2SeqTransformer.step``. Beam search follows fairseq's ``SequenceGenerator``: at each
  step the 2K best (beam, token) candidates per sentence are taken; an end-of-sentence among
  the best K finishes a hypothesis, scored sum(log p) / length**length_penalty (Wu et al.
  2016 use a similar normalisation); the first K others continue. A sentence is done once it
  holds K finished hypotheses. With K = 1 this is exactly greedy search (a test checks it).
- ``generate(model, prompt, ...)``: a decoder-only LM continues a prompt with temperature,
  top-k (Fan et al. 2018) and nucleus / top-p (Holtzman et al. 2020) sampling and stop
  tokens. With ``use_cache`` the prompt is run once and each new token costs one position;
  past the model's context length (learned positions) the cache is dropped and the last
  ``context`` tokens are recomputed each step, as nanoGPT does. A ``TransformerLM`` of the
  usual layout decodes through ``FusedDecoder`` (``attnlab.models.lm_decode``): the same
  numbers without the per-module overhead. On a CPU the two routes are timed once per batch,
  length and model size class (``attnlab.autotune`` family ``decode.fused``: a short prompt and
  a few steps each, alternately) and the faster one decodes; the fused route is the default. A
  third candidate is the fused route on weights prepacked for oneDNN (``FusedDecoder(packed=True)``).

Shape: src (B, M) -> list of B id lists (no <bos>, no <eos>); prompt (B, N) -> (B, N + new).
"""

from __future__ import annotations

import inspect
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlab import autotune
from attnlab.models.lm_decode import FusedDecoder, packable

__all__ = ["greedy_search", "beam_search", "generate", "filter_logits"]


def _strip(ids: Sequence[int], eos_id: int) -> list[int]:
    out = []
    for i in ids:
        if int(i) == eos_id:
            break
        out.append(int(i))
    return out


@torch.no_grad()
def greedy_search(model: nn.Module, src: Tensor, *, max_len: int | None = None) -> list[list[int]]:
    """Most likely token at each step until every sentence has produced <eos> (or ``max_len``)."""
    c = model.config
    b = src.shape[0]
    max_len = max_len or _default_max_len(model, src)
    state = model.start_decoding(src)
    tokens = torch.full((b, 1), c.bos_id, dtype=torch.long, device=src.device)
    out = tokens
    done = torch.zeros(b, dtype=torch.bool, device=src.device)
    for _ in range(max_len):
        logits = model.step(tokens, state)  # (B, V)
        nxt = logits.argmax(-1)  # (B,)
        nxt = torch.where(done, torch.full_like(nxt, c.eos_id), nxt)
        out = torch.cat([out, nxt[:, None]], dim=1)
        done |= nxt == c.eos_id
        if bool(done.all()):
            break
        tokens = nxt[:, None]
    return [_strip(row[1:].tolist(), c.eos_id) for row in out]


def _default_max_len(model: nn.Module, src: Tensor) -> int:
    # Translations rarely exceed the source by much; never beyond the position table.
    return min(int(src.shape[1] * 1.5) + 10, model.config.max_length - 1)


@torch.no_grad()
def beam_search(
    model: nn.Module, src: Tensor, *, beam_size: int = 5, length_penalty: float = 1.0, max_len: int | None = None
) -> list[list[int]]:
    """Best hypothesis per sentence by sum(log p) / len**length_penalty (len counts <eos>)."""
    c = model.config
    b, k = src.shape[0], beam_size
    if k < 1:
        raise ValueError(f"beam_search: beam_size must be >= 1, got {beam_size}")
    max_len = max_len or _default_max_len(model, src)
    device = src.device
    state = model.start_decoding(src)
    state.reorder(torch.arange(b, device=device).repeat_interleave(k))  # (B*K, ...)
    seqs = torch.full((b * k, 1), c.bos_id, dtype=torch.long, device=device)  # (B*K, t)
    scores = torch.zeros(b, k, device=device)
    scores[:, 1:] = float("-inf")  # all beams start identical: expand only the first
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(b)]
    done = [False] * b
    for step in range(max_len):
        logits = model.step(seqs[:, -1:], state).float()  # (B*K, V)
        logp = F.log_softmax(logits, dim=-1)
        v = logp.shape[-1]
        total = (scores[:, :, None] + logp.view(b, k, v)).view(b, k * v)  # (B, K*V)
        cand_scores, cand_index = total.topk(min(2 * k, k * v), dim=-1)  # (B, 2K)
        cand_beam, cand_token = cand_index // v, cand_index % v
        is_eos = cand_token == c.eos_id  # (B, 2K)
        # Finish hypotheses whose <eos> ranks among the best K (fairseq's rule).
        for bi, ci in (is_eos[:, :k] & torch.isfinite(cand_scores[:, :k])).nonzero().tolist():
            if done[bi]:
                continue
            hyp = seqs[bi * k + int(cand_beam[bi, ci]), 1:].tolist()
            length = len(hyp) + 1
            finished[bi].append((float(cand_scores[bi, ci]) / length**length_penalty, hyp))
        for bi in range(b):
            if not done[bi] and len(finished[bi]) >= k:
                done[bi] = True
        if all(done):
            break
        # Continue with the best K candidates that are not <eos>: order by (is_eos, rank).
        rank = torch.arange(cand_index.shape[1], device=device)[None, :] + is_eos.long() * (4 * k)
        keep = rank.topk(k, dim=-1, largest=False).indices  # (B, K)
        next_beam = cand_beam.gather(1, keep)  # (B, K)
        next_token = cand_token.gather(1, keep)
        scores = cand_scores.gather(1, keep)
        rows = (torch.arange(b, device=device)[:, None] * k + next_beam).view(-1)  # (B*K,)
        seqs = torch.cat([seqs.index_select(0, rows), next_token.view(-1, 1)], dim=1)
        state.reorder(rows)
    results = []
    for bi in range(b):
        if not done[bi]:  # max_len reached: the alive beams compete with the finished ones
            for j in range(k):
                hyp = seqs[bi * k + j, 1:].tolist()
                if math.isfinite(float(scores[bi, j])):
                    finished[bi].append((float(scores[bi, j]) / max(len(hyp), 1) ** length_penalty, hyp))
        best = max(finished[bi], key=lambda item: item[0])[1]
        results.append(_strip(best, c.eos_id))
    return results


def filter_logits(logits: Tensor, *, top_k: int | None = None, top_p: float | None = None) -> Tensor:
    """Set logits outside the top-k / top-p (nucleus) set to -inf. Shape: (B, V) -> (B, V).

    Top-k keeps every token at least as likely as the k-th (ties at the boundary all stay).
    Top-p keeps the smallest set of most likely tokens whose probability reaches ``top_p``
    (the token that crosses the threshold is kept, so at least one token always survives).
    Both compute what Hugging Face's ``TopKLogitsWarper`` / ``TopPLogitsWarper`` compute, tie
    breaking included: top-p sorts ascending (stable) and drops the tokens whose cumulative
    probability is <= 1 - top_p, so among equally likely tokens at the cut the later ids stay.
    """
    if top_k is not None and top_k > 0 and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0 < top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=False, stable=True)  # (B, V) ascending
        remove = sorted_logits.softmax(-1).cumsum(-1) <= 1 - top_p
        remove[:, -1] = False  # the most likely token always stays (HF's min_tokens_to_keep=1)
        remove = torch.zeros_like(remove).scatter(-1, order, remove)
        logits = logits.masked_fill(remove, float("-inf"))
    return logits


def _accepts(fn, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return False


def _new_caches(model: nn.Module, max_length: int | None):
    """The model's caches, preallocated to ``max_length`` when it supports that."""
    return model.new_caches(max_length) if _accepts(model.new_caches, "max_length") else model.new_caches()


def _last_logits(model: nn.Module, feed: Tensor, caches, last_only: bool, mask: Tensor | None = None) -> Tensor:
    """The last position's logits as float32 (B, V); with ``last_only`` the model runs only
    that position through its head. ``mask`` (B, cached + fed), True = real token: only given
    for a padded batch."""
    extra = {} if mask is None else {"mask": mask}
    logits = model(feed, caches=caches, last_only=True, **extra) if last_only else model(feed, caches=caches, **extra)
    return logits[:, -1].float()


def _prompt_mask(model: nn.Module, prompt: Tensor, attention_mask: Tensor | None) -> Tensor | None:
    """``attention_mask`` checked and as bool (B, N); None when every token is real (the fast routes)."""
    if attention_mask is None:
        return None
    if tuple(attention_mask.shape) != tuple(prompt.shape):
        raise ValueError(f"generate: attention_mask must be (B, N) = {tuple(prompt.shape)} as the prompt, got shape "
                         f"{tuple(attention_mask.shape)}")
    if attention_mask.dtype != torch.bool:
        if attention_mask.is_floating_point() or attention_mask.is_complex() or not bool(
                ((attention_mask == 0) | (attention_mask == 1)).all()):
            raise ValueError(f"generate: attention_mask must hold 0/1 or bool (1 = a real token), got {attention_mask.dtype} "
                             f"with values {sorted(set(attention_mask.flatten().tolist()))[:5]}")
        attention_mask = attention_mask == 1
    mask = attention_mask.to(prompt.device)
    empty = (~mask.any(-1)).nonzero()
    if empty.numel():
        raise ValueError(f"generate: attention_mask row {int(empty[0])} has no token (all padding)")
    late = (mask[:, :-1] & ~mask[:, 1:]).any(-1).nonzero()
    if late.numel():
        raise ValueError(f"generate: attention_mask must be left-padded (padding before the prompt, as decoder-only "
                         f"batches are in Hugging Face), but row {int(late[0])} has padding after a token")
    if bool(mask.all()):
        return None
    if not _accepts(model.forward, "mask"):
        raise ValueError(f"generate: {type(model).__name__} takes no padding mask; give prompts of one length")
    return mask


_PROBE_STEPS = 4  # decode steps each candidate times after its prompt


def _decode_route(model: nn.Module, prompt: Tensor, total: int, last_only: bool) -> str:
    """How this batch decodes fastest on this machine: "fused" (``FusedDecoder``), "packed" (the
    same on weights prepacked for oneDNN) or "module" (the model's own forward with caches).
    Measured once per shape class, then cached; off CPU, or with tuning off, "fused"."""
    if prompt.device.type != "cpu":
        return "fused"
    size = sum(p.numel() for p in model.parameters())
    dtype = next(model.parameters()).dtype
    key = f"decode.fused|{autotune.shape_class(prompt.shape[0], total, size, dtype=dtype)}"
    probe = prompt[:, -8:]  # a short prompt, then single tokens: mostly the per-token cost
    length = probe.shape[1] + _PROBE_STEPS

    def fused(packed: bool = False) -> None:
        decoder = FusedDecoder(model, probe.shape[0], length, packed=packed)
        logits = decoder.step(probe)
        for _ in range(_PROBE_STEPS):
            logits = decoder.step(logits.argmax(-1, keepdim=True))

    def module() -> None:
        caches = _new_caches(model, length)
        logits = _last_logits(model, probe, caches, last_only)
        for _ in range(_PROBE_STEPS):
            logits = _last_logits(model, logits.argmax(-1, keepdim=True), caches, last_only)

    candidates = {"fused": fused, "module": module}
    if packable(model):
        candidates["packed"] = lambda: fused(packed=True)
    return autotune.choose(key, candidates, default="fused")


@torch.no_grad()
def generate(
    model: nn.Module,
    prompt: Tensor,
    *,
    max_new_tokens: int = 100,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    stop_tokens: Sequence[int] = (),
    use_cache: bool = True,
    generator: torch.Generator | None = None,
    attention_mask: Tensor | None = None,
) -> Tensor:
    """Continue ``prompt`` (B, N) with a decoder-only LM; ``temperature=0`` is greedy.

    Stops early once every row has produced one of ``stop_tokens`` (that token is kept; rows
    that stopped are padded with it). ``attention_mask`` (B, N), 1/True = real token: prompts of
    different lengths padded on the left, as Hugging Face's ``generate`` takes them for a
    decoder-only model; padding is never attended to and positions count real tokens only, so
    each row continues as it would alone (such a batch decodes on the module route). Past the
    context the last ``context`` columns are recomputed, for each row exactly its own last tokens.
    Shape: (B, N) -> (B, N + generated).
    """
    if prompt.dim() != 2 or prompt.shape[1] < 1:
        raise ValueError(f"generate: prompt must be (B, N) with N >= 1, got shape {tuple(prompt.shape)}")
    if temperature < 0:
        raise ValueError(f"generate: temperature must be >= 0, got {temperature}")
    if max_new_tokens < 1:  # as transformers' generate: a value that cannot mean what was asked is refused
        raise ValueError(f"generate: max_new_tokens must be >= 1, got {max_new_tokens}")
    if top_k is not None and top_k < 0:
        raise ValueError(f"generate: top_k must be >= 0 (0: no cut), got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"generate: top_p must be in (0, 1] (1: no cut), got {top_p}")
    mask = _prompt_mask(model, prompt, attention_mask)  # (B, N) bool or None
    context = getattr(model, "context_length", None)
    out = prompt
    if context is not None and out.shape[1] > context:
        out = out[:, -context:]  # only the last `context` tokens condition the model
        mask = None if mask is None else mask[:, -context:]
    start = out.shape[1]
    stops = torch.tensor(list(stop_tokens), dtype=torch.long, device=prompt.device)
    stopped = torch.zeros(prompt.shape[0], dtype=torch.bool, device=prompt.device)
    last_only = _accepts(model.forward, "last_only")
    total = out.shape[1] + max_new_tokens
    caches = None
    fits = context is None or total <= context
    fused = use_cache and fits and mask is None and FusedDecoder.supports(model)
    route = _decode_route(model, out, total, last_only) if fused else "module"
    decoder = FusedDecoder(model, out.shape[0], total, packed=route == "packed") if route != "module" else None
    if use_cache and decoder is None:
        caches = _new_caches(model, total if fits else None)
    feed = out
    for _ in range(max_new_tokens):
        if caches is not None and context is not None and len(caches[0]) + feed.shape[1] > context:
            caches = None  # past the position table: recompute a sliding window from here on
        if decoder is not None:
            logits = decoder.step(feed)  # (B, V)
        else:
            if caches is None:
                feed = out if context is None else out[:, -context:]
            seen = None if mask is None else mask[:, -(feed.shape[1] + (len(caches[0]) if caches else 0)):]
            logits = _last_logits(model, feed, caches, last_only, seen)  # (B, V)
        if temperature == 0:
            nxt = logits.argmax(-1)
        else:
            probs = filter_logits(logits / temperature, top_k=top_k, top_p=top_p).softmax(-1)
            nxt = torch.multinomial(probs, 1, generator=generator)[:, 0]
        if stops.numel():
            last = out[:, -1]
            nxt = torch.where(stopped, last, nxt)
            stopped |= torch.isin(nxt, stops)
        out = torch.cat([out, nxt[:, None]], dim=1)
        if mask is not None:
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        feed = nxt[:, None]
        if stops.numel() and bool(stopped.all()):
            break
    return torch.cat([prompt, out[:, start:]], dim=1)  # the full prompt, then the new tokens
