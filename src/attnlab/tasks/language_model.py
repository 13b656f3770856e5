"""Language-model task family: ``--task language-model --data <text file>``.

Data: `attnlab.data.language_model` (one text file; first 90% train, last 10% validation = test, as
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

``--init SOURCE`` continues a pretrained GPT-2 (Radford et al. 2019) on the text instead
(`open_lm_checkpoint`): a Hugging Face ``save_pretrained`` directory, its own byte-level BPE
(`attnlab.data.bpe`), windows up to its ``n_positions`` and fine-tuning defaults
(``FINETUNE_TRAIN``); or an earlier ``gpt-lm`` run with its tokenizer (`lm_from_run`).
"""

from __future__ import annotations

import argparse
import logging
import math
import unicodedata
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.data.language_model import load_language_model
from attnlab.data.tokenizers import EOS_ID, CharTokenizer, load_tokenizer
from attnlab.errors import CheckpointError, ConfigError, DataError
from attnlab.models.generation import generate
from attnlab.tasks.base import InitSupport, NoOptions, Pretrained, RunVocabulary, TaskCommand, TaskSpec

__all__ = ["SPECS", "LanguageModelObjective", "generate_text", "DEFAULT_MODEL_CONFIG", "DEFAULT_TRAIN", "FINETUNE_TRAIN",
           "open_lm_checkpoint", "reopen_lm_checkpoint", "lm_from_run", "lm_run_vocabulary"]

DEFAULT_MODEL_CONFIG: dict[str, Any] = {"dim": 128, "depth": 4, "num_heads": 4, "mlp_ratio": 4.0, "dropout": 0.0}
# Two passes over tinyshakespeare's training text are ~2,600 steps of 12 windows (nanoGPT runs 2,000).
DEFAULT_TRAIN: dict[str, Any] = {"epochs": 2, "batch_size": 12, "lr": 2e-3, "weight_decay": 0.1, "warmup_epochs": 0.08,
                                 "min_lr_factor": 0.1, "grad_clip": 1.0, "keep": "last"}
DEFAULT_DATA_OPTIONS: dict[str, Any] = {"tokenizer": "char", "block_size": 64}


class LanguageModelObjective:
    """Mean next-token cross-entropy; ``loss`` and ``perplexity`` on evaluation.

    Deep ensembles (`attnlab.ensemble`) average the members' next-token distributions; the loss of
    that mixture at each position needs only each member's probability of the true token, so
    ``outputs`` gives those, (B, T), not the (B, T, V) distributions (GPT-2's V is 50,257).
    """

    metric = "loss"
    greater_is_better = False
    outputs_index_vocabulary = True  # ensemble members must share the tokenizer

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

    @torch.no_grad()
    def outputs(self, model: nn.Module, batches: Iterable[Any]) -> tuple[Tensor, Tensor]:
        """(each position's probability of its true next token (B, T) float64, the tokens (B, T)), on the CPU."""
        probs, targets = [], []
        for x, y in batches:
            logp = model(x).float().log_softmax(-1).gather(-1, y[..., None])[..., 0]  # (B, T)
            probs.append(logp.double().exp().cpu())
            targets.append(y.cpu())
        return torch.cat(probs), torch.cat(targets)

    def score(self, outputs: Tensor, targets: Tensor) -> dict[str, float]:
        """Loss and perplexity of (possibly averaged) true-token probabilities (B, T)."""
        loss = float(-outputs.double().clamp_min(1e-300).log().mean()) if outputs.numel() else 0.0
        return {"loss": loss, "perplexity": math.exp(min(loss, 50.0))}


def lm_fields(task_data) -> dict[str, Any]:
    info = task_data.info
    return {"vocab_size": info["vocab_size"], "max_length": info.get("context_length") or info["block_size"]}


def _tokens_example(model: nn.Module, tokenizer, ids: Sequence[int], title: str) -> Any:
    from attnlab.tasks.text import token_report_example

    device = next(model.parameters()).device
    model.eval()
    with torch.no_grad():
        probs = model(torch.tensor([list(ids)], device=device))[0, -1].float().softmax(-1).cpu()
    nxt = int(probs.argmax())
    return token_report_example(model, (torch.tensor([list(ids)]),), tokens=tokenizer.token_strings(ids), title=title,
                                prediction=f"next: {tokenizer.token_strings([nxt])[0]!r} ({float(probs[nxt]):.2f})")


# The report shows the head of each window: a GPT-2 window of 1,024 tokens would keep
# layers x heads x 1,024^2 weights per example and no reader can follow such a map.
_REPORT_TOKENS = 128


def _report(model: nn.Module, task_data, count: int) -> list:
    tokenizer = load_tokenizer(task_data.info["tokenizer"])
    val = task_data.val
    return [_tokens_example(model, tokenizer, val[i * max(1, len(val) // count)][0][:_REPORT_TOKENS].tolist(),
                            f"validation window {i}") for i in range(min(count, len(val)))]


def _encode_prompt(record: dict[str, Any], text: str, where: str) -> list[int]:
    """``text`` (from file ``where``) as ids; characters a character model never saw are refused, as in generate."""
    tokenizer = load_tokenizer(record["info"]["tokenizer"])
    text = _check_known(tokenizer, text, f"{where}: the text")
    ids = tokenizer.encode(text)
    if not ids:
        raise DataError(f"{where}: {_no_tokens(text, 'the text')}")
    return ids[-_kept(len(ids), int(record["info"]["block_size"]), where, "block_size") :]


def _no_tokens(text: str, what: str) -> str:
    """Why a prompt gives no token: it is empty, or only spaces (a word tokenizer drops them)."""
    if not text:
        return f"{what} is empty: give at least one character"
    return f"{what} {text[:40]!r} gives no tokens for this run's tokenizer (spaces are no word): give a word"


def _kept(total: int, context: int, where: str, option: str) -> int:
    """How many tokens of a text of ``total`` the model reads (the last ``context``): a cut is said, not silent."""
    if total > context:
        logging.getLogger(__name__).warning("%s is %d tokens; the model reads the last %d (its %s), the rest is ignored",
                                            where, total, context, option)
    return context


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
        ids = _encode_prompt(record, _read_prompt(item), item)
        with torch.no_grad():
            probs = model(torch.tensor([ids], device=device))[0, -1].float().softmax(-1).cpu()
        scores, tokens = probs.topk(min(top_k, probs.numel()))
        names = tokenizer.token_strings(tokens.tolist())
        results.append({"input": item, "class": names[0], "score": float(scores[0]),
                        "top": [{"class": n, "score": float(s)} for n, s in zip(names, scores)]})
    return results


def explain_lm(model: nn.Module, record: dict[str, Any], item: str) -> Any:
    tokenizer = load_tokenizer(record["info"]["tokenizer"])
    return _tokens_example(model, tokenizer, _encode_prompt(record, _read_prompt(item), item), Path(item).name)


def generate_text(
    model: nn.Module, record: dict[str, Any], prompt: str, *, max_new_tokens: int = 200, temperature: float = 0.8,
    top_k: int | None = None, top_p: float | None = None, stop: Sequence[str] = (), seed: int | None = None,
    use_cache: bool = True,
) -> str:
    """Continue ``prompt`` with a language-model run's model; returns the generated text only.

    ``record`` is the run's data.json (its tokenizer). ``stop``: strings, each of which must be
    one token (e.g. "\\n" for a character model); generation ends after the first of them
    (kept in the output), or after the tokenizer's end of text (<eos>; GPT-2's <|endoftext|>).
    Sampling runs on the model's device.
    """
    if max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens must be >= 1, got {max_new_tokens}")
    if not (temperature >= 0 and math.isfinite(temperature)):
        raise ConfigError(f"--temperature must be a finite number >= 0, got {temperature}")
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise ConfigError(f"--top-k must be an integer >= 1 (leave it out for no cut), got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ConfigError(f"--top-p must be in (0, 1], got {top_p}")
    if seed is not None and not -(2**63) <= seed < 2**64:  # torch.Generator.manual_seed's range (an OverflowError)
        raise ConfigError(f"--seed must be an integer of at most 64 bits, got {seed}")
    tokenizer = load_tokenizer(record["info"]["tokenizer"])
    eos = getattr(tokenizer, "eos_id", EOS_ID)  # a checkpoint's BPE has its own (or none)
    stop_ids = [] if eos is None else [eos]
    prompt = _check_known(tokenizer, prompt, "the prompt")
    for s in stop:
        ids = tokenizer.encode(_check_known(tokenizer, s, f"stop string {s!r}"))
        if len(ids) != 1:
            raise ConfigError(f"stop string {s!r} is {len(ids)} tokens for this tokenizer; each stop string must be one token")
        stop_ids.append(ids[0])
    ids = tokenizer.encode(prompt)
    if not ids:
        raise ConfigError(_no_tokens(prompt, "the prompt"))
    context = getattr(model, "context_length", None)
    if context is not None:  # generate() conditions on the last `context` tokens
        _kept(len(ids), context, "the prompt", "max_length")
    device = next(model.parameters()).device
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()  # a fresh, non-deterministic seed
    else:
        generator.manual_seed(seed)
    out = generate(model, torch.tensor([ids], device=device), max_new_tokens=max_new_tokens, temperature=temperature,
                   top_k=top_k, top_p=top_p, stop_tokens=stop_ids, use_cache=use_cache, generator=generator)
    # The new tokens decoded after the prompt's: decoded alone, a BPE or word run drops the space
    # that opens them (its decode strips a leading space / joins words), gluing them to the prompt.
    full, head = tokenizer.decode(out[0].tolist()), tokenizer.decode(ids)
    return full[len(head):] if full.startswith(head) else tokenizer.decode(out[0, len(ids):].tolist())


def _check_known(tokenizer: Any, text: str, what: str) -> str:
    """``text`` as a character model can read it. It maps characters it never saw in training to
    <unk>, so the model would see something other than the text given: ``text`` with such
    characters is refused by name, unless a canonically equivalent form (Unicode NFC or NFD: the
    same text, e.g. "é" as one code point or as "e" + a combining accent) uses known characters
    only; that form is returned."""
    if not isinstance(tokenizer, CharTokenizer):
        return text  # byte-level BPE knows every text; word / BPE runs' <unk> pieces are the usual open vocabulary

    def unknown_in(t: str) -> list[str]:
        return sorted({c for c in (t.lower() if tokenizer.lowercase else t) if c not in tokenizer.chars})

    unknown = unknown_in(text)
    if not unknown:
        return text
    for form in ("NFC", "NFD"):
        other = unicodedata.normalize(form, text)
        if not unknown_in(other):
            return other
    shown = ", ".join(repr(c) for c in unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
    raise ConfigError(f"{what} has characters this run's vocabulary ({tokenizer.vocab_size} tokens) never saw in "
                      f"training: {shown}")


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


# --init SOURCE: continuing a pretrained GPT-2 on new text. Its weights are already good, so a
# small peak lr (5e-5: transformers' run_clm / Trainer default; GPT-1 fine-tuned at 6.25e-5,
# Radford et al. 2018) and a 10% warm-up keep the first AdamW steps, whose second-moment
# estimates are still poor, from wrecking them; a few epochs (3, as run_clm) then decay to 0.
# Batch 8 windows of up to n_positions tokens (run_clm's per-device batch), weight decay 0.01,
# gradient clipping 1.0, the checkpoint's dropout; the best validation loss is kept (over-
# fitting a small corpus shows up within these epochs). The from-scratch defaults above (lr
# 2e-3, windows of 64) do not apply; flags still override.
FINETUNE_TRAIN: dict[str, Any] = {"epochs": 3, "batch_size": 8, "lr": 5e-5, "weight_decay": 0.01, "warmup_ratio": 0.1,
                                  "min_lr_factor": 0.0, "grad_clip": 1.0, "keep": "best"}
# What the run directory keeps of SOURCE (under init/): the tokenizer and the configs, not the weights.
_INIT_FILES = ("config.json", "generation_config.json", "tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json",
               "special_tokens_map.json")
INIT_HELP = ("language-model: SOURCE is a Hugging Face GPT-2 save_pretrained directory (model.safetensors or its shards) or "
             "an earlier gpt-lm run; the text is tokenised with its tokenizer (GPT-2's byte-level BPE: tokenizer.json, "
             "else vocab.json + merges.txt; a run's own tokenizer), windows default to its positions (n_positions; "
             "--data.block_size may cut shorter), and the training defaults become AdamW lr 5e-5, 10% warm-up, "
             "3 epochs, batch 8, weight decay 0.01 (flags still override).")


def open_lm_checkpoint(source: Path) -> Pretrained:
    """``--init SOURCE`` for the language model: check a GPT-2 directory and its BPE, before anything is written."""
    import logging

    from attnlab.data.bpe import load_checkpoint_bpe
    from attnlab.interop.gpt2 import open_gpt2_checkpoint

    source = Path(source)
    checkpoint = open_gpt2_checkpoint(source)
    tokenizer, tokenizer_file = load_checkpoint_bpe(source)
    if tokenizer.vocab_size > checkpoint.vocab_size:
        raise CheckpointError(f"{tokenizer_file}: the vocabulary has {tokenizer.vocab_size} tokens but the embedding table "
                              f"{checkpoint.vocab_size} rows (config.json vocab_size): not this model's tokenizer")
    if tokenizer.vocab_size < checkpoint.vocab_size:  # tables padded to a round size are common practice
        logging.getLogger(__name__).warning("%s: %d tokens for an embedding table of %d rows; the rest stay unused",
                                            tokenizer_file, tokenizer.vocab_size, checkpoint.vocab_size)
    files = {name: (source / name).read_text(encoding="utf-8") for name in _INIT_FILES if (source / name).is_file()}
    record = {"source": str(source.resolve()), "kind": "gpt2", "weights": checkpoint.weights.name,
              "sha256": checkpoint.sha256(), "model_type": "gpt2",
              "tokenizer": tokenizer_file.name + (" + merges.txt" if tokenizer_file.name == "vocab.json" else "")}
    return Pretrained(model_fields=checkpoint.model_fields(), load_weights=checkpoint.load_into, files=files, record=record,
                      data_options={"pretrained_tokenizer": tokenizer, "context_length": checkpoint.max_positions})


def reopen_lm_checkpoint(record: dict[str, Any]) -> Pretrained:
    """A finished ``--init`` run's tokenizer and positions, from its data.json record alone (SOURCE may be gone)."""
    info = record["info"]
    return Pretrained(data_options={"pretrained_tokenizer": load_tokenizer(info["tokenizer"]),
                                    "context_length": info.get("context_length")},
                      record=dict(record.get("init") or {}))


def lm_from_run(source: Path) -> Pretrained:
    """``--init RUN`` for the language model: the source run's tokenizer and positions come along with its weights."""
    from attnlab.tasks.init_run import open_run

    def carried(run) -> dict[str, Any]:
        info = run.record.get("info") or {}
        if not isinstance(info.get("tokenizer"), dict):
            raise CheckpointError(f"{run.path / 'data.json'}: the run's record has no tokenizer")
        return {"pretrained_tokenizer": load_tokenizer(info["tokenizer"]),
                "context_length": int(run.model_config.get("max_length") or info["block_size"])}

    return open_run(source, data_options=carried)


def lm_run_vocabulary(record: dict[str, Any]) -> dict[str, Any]:
    """A finished run's tokenizer as a loader option: its text (a changed or another file) is read
    with the ids its model learnt, not with a tokenizer re-trained on it ({} for a record without one)."""
    info = record.get("info")
    if not isinstance(info, dict) or not isinstance(info.get("tokenizer"), dict):
        return {}
    try:
        return {"pretrained_tokenizer": load_tokenizer(info["tokenizer"])}
    except DataError as exc:
        raise CheckpointError(f"the run's data.json: info.tokenizer: {exc}") from None


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
        init=InitSupport(help=INIT_HELP, open=open_lm_checkpoint, reopen=reopen_lm_checkpoint, from_run=lm_from_run,
                         default_train=FINETUNE_TRAIN),
        run_vocabulary=RunVocabulary(lm_run_vocabulary, replaces=("tokenizer", "vocab_size", "lowercase")),
    ),
)
