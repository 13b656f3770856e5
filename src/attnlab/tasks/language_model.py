"""Language-model task family: ``--task language-model --data <text file>``.

Data: `attnlab.data.text` (one text file; first 90% train, last 10% validation = test, as
nanoGPT splits tinyshakespeare). Tokenizer: characters by default (``--data.tokenizer bpe``
for byte-level BPE), saved in the run directory. Model: ``gpt-lm`` (`attnlab.models.lm`).
The defaults are nanoGPT's CPU shakespeare_char config: 4 layers, 4 heads, 128 wide,
context 64, batch 12, ~100 warm-up steps and cosine decay to 1/10 of the peak, no dropout;
the peak lr is 2e-3 rather than nanoGPT's 1e-3 (benchmarks/language_model.py compares them).
An epoch is one pass over the training text: as many random windows as the text holds
(``--data.samples_per_epoch N`` fixes another count; nanoGPT's 2,000 iterations of 12 are
``configs/language-model/tinyshakespeare.yaml``).

Objective: next-token cross-entropy; evaluation reports ``loss`` (nats per token, the
number nanoGPT prints) and ``perplexity``; lower loss is better.

``attnlab generate RUN_DIR --prompt "..."`` (`generate_text`) continues a prompt with KV-cache
sampling. Predict: for each input file, the model's top-k next tokens after its text.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.data.text import load_language_model
from attnlab.data.tokenizers import EOS_ID, load_tokenizer
from attnlab.errors import ConfigError, DataError
from attnlab.models.generation import generate
from attnlab.tasks.base import NoOptions, TaskCommand, TaskSpec

__all__ = ["SPECS", "LanguageModelObjective", "generate_text", "DEFAULT_MODEL_CONFIG", "DEFAULT_TRAIN"]

DEFAULT_MODEL_CONFIG: dict[str, Any] = {"dim": 128, "depth": 4, "num_heads": 4, "mlp_ratio": 4.0, "dropout": 0.0}
# Two passes over tinyshakespeare's training text are ~2,600 steps of 12 windows (nanoGPT runs 2,000).
DEFAULT_TRAIN: dict[str, Any] = {"epochs": 2, "batch_size": 12, "lr": 2e-3, "weight_decay": 0.1, "warmup_epochs": 0.08,
                                 "min_lr_factor": 0.1, "grad_clip": 1.0, "keep": "last"}
DEFAULT_DATA_OPTIONS: dict[str, Any] = {"tokenizer": "char", "block_size": 64}


class LanguageModelObjective:
    """Mean next-token cross-entropy; ``loss`` and ``perplexity`` on evaluation."""

    metric = "loss"
    greater_is_better = False

    def loss(self, model: nn.Module, batch: Any) -> tuple[Tensor, int]:
        x, y = batch
        logits = model(x)  # (B, T, V)
        return F.cross_entropy(logits.float().flatten(0, 1), y.flatten()), int(x.shape[0])

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: Iterable[Any]) -> dict[str, float]:
        total, count = 0.0, 0
        for x, y in batches:
            logits = model(x).float()
            total += float(F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum"))
            count += y.numel()
        loss = total / max(count, 1)
        return {"loss": loss, "perplexity": math.exp(min(loss, 50.0))}


def lm_fields(task_data) -> dict[str, Any]:
    return {"vocab_size": task_data.info["vocab_size"], "max_length": task_data.info["block_size"]}


def _tokens_example(model: nn.Module, tokenizer, ids: Sequence[int], title: str) -> Any:
    from attnlab.tasks.text import token_report_example

    device = next(model.parameters()).device
    model.eval()
    with torch.no_grad():
        probs = model(torch.tensor([list(ids)], device=device))[0, -1].float().softmax(-1).cpu()
    nxt = int(probs.argmax())
    return token_report_example(model, (torch.tensor([list(ids)]),), tokens=tokenizer.token_strings(ids), title=title,
                                prediction=f"next: {tokenizer.token_strings([nxt])[0]!r} ({float(probs[nxt]):.2f})")


def _report(model: nn.Module, task_data, count: int) -> list:
    tokenizer = load_tokenizer(task_data.info["tokenizer"])
    val = task_data.val
    return [_tokens_example(model, tokenizer, val[i * max(1, len(val) // count)][0].tolist(), f"validation window {i}")
            for i in range(min(count, len(val)))]


def _encode_prompt(record: dict[str, Any], text: str) -> list[int]:
    tokenizer = load_tokenizer(record["info"]["tokenizer"])
    ids = tokenizer.encode(text)
    if not ids:
        raise DataError("the prompt is empty: give at least one character")
    return ids[-int(record["info"]["block_size"]) :]


def _read_prompt(item: str) -> str:
    from attnlab.data.text import read_lines

    return "\n".join(read_lines(item))


def predict_lm(model: nn.Module, record: dict[str, Any], inputs: list[str], top_k: int) -> list[dict[str, Any]]:
    """One result per input file: the most likely next tokens after its text."""
    tokenizer = load_tokenizer(record["info"]["tokenizer"])
    device = next(model.parameters()).device
    model.eval()
    results = []
    for item in inputs:
        ids = _encode_prompt(record, _read_prompt(item))
        with torch.no_grad():
            probs = model(torch.tensor([ids], device=device))[0, -1].float().softmax(-1).cpu()
        scores, tokens = probs.topk(min(top_k, probs.numel()))
        names = tokenizer.token_strings(tokens.tolist())
        results.append({"input": item, "class": names[0], "score": float(scores[0]),
                        "top": [{"class": n, "score": float(s)} for n, s in zip(names, scores)]})
    return results


def explain_lm(model: nn.Module, record: dict[str, Any], item: str) -> Any:
    tokenizer = load_tokenizer(record["info"]["tokenizer"])
    return _tokens_example(model, tokenizer, _encode_prompt(record, _read_prompt(item)), Path(item).name)


def generate_text(
    model: nn.Module, record: dict[str, Any], prompt: str, *, max_new_tokens: int = 200, temperature: float = 0.8,
    top_k: int | None = None, top_p: float | None = None, stop: Sequence[str] = (), seed: int | None = None,
    use_cache: bool = True,
) -> str:
    """Continue ``prompt`` with a language-model run's model; returns the generated text only.

    ``record`` is the run's data.json (its tokenizer). ``stop``: strings, each of which must be
    one token (e.g. "\\n" for a character model); generation ends after the first of them
    (kept in the output), or after <eos>. Sampling runs on the model's device.
    """
    if max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens must be >= 1, got {max_new_tokens}")
    if temperature < 0:
        raise ConfigError(f"--temperature must be >= 0, got {temperature}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ConfigError(f"--top-p must be in (0, 1], got {top_p}")
    tokenizer = load_tokenizer(record["info"]["tokenizer"])
    stop_ids = [EOS_ID]
    for s in stop:
        ids = tokenizer.encode(s)
        if len(ids) != 1:
            raise ConfigError(f"stop string {s!r} is {len(ids)} tokens for this tokenizer; each stop string must be one token")
        stop_ids.append(ids[0])
    ids = tokenizer.encode(prompt)
    if not ids:
        raise ConfigError("the prompt is empty: give at least one character")
    device = next(model.parameters()).device
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()  # a fresh, non-deterministic seed
    else:
        generator.manual_seed(seed)
    out = generate(model, torch.tensor([ids], device=device), max_new_tokens=max_new_tokens, temperature=temperature,
                   top_k=top_k, top_p=top_p, stop_tokens=stop_ids, use_cache=use_cache, generator=generator)
    return tokenizer.decode(out[0, len(ids):].tolist())


def _generate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--stop", action="append", help="stop after this token (one token, e.g. a character); repeatable")
    p.add_argument("--seed", type=int, default=None)


def _generate_command(model: nn.Module, record: dict[str, Any], args: argparse.Namespace) -> str:
    text = generate_text(model, record, args.prompt, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                         top_k=args.top_k, top_p=args.top_p, stop=args.stop or (), seed=args.seed)
    return args.prompt + text


GENERATE = TaskCommand("generate", "continue a prompt with a trained language-model run (KV-cache sampling)",
                       _generate_arguments, _generate_command)

SPECS = (
    TaskSpec(
        name="language-model", load=load_language_model, models=("gpt-lm",),
        description="language modelling: one text file (tinyshakespeare); `attnlab generate RUN --prompt ...`",
        default_model_config=DEFAULT_MODEL_CONFIG, default_train=DEFAULT_TRAIN, default_data_options=DEFAULT_DATA_OPTIONS,
        objective_options=NoOptions,
        model_fields=lm_fields, objective=lambda task_data, options, evaluation: LanguageModelObjective(),
        report_examples=_report, predict=predict_lm, explain_example=explain_lm, commands=(GENERATE,),
    ),
)
