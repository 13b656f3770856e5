"""Translation task family: ``--task translation --data <folder of <split>.<lang>[.gz] files>``.

Data: `attnlab.data.parallel` (aligned files, e.g. Multi30k's ``train.en.gz`` / ``train.de.gz``).
A byte-level BPE tokenizer, shared by both languages by default, is trained on the
training split and saved in the run directory. Model: ``transformer-mt``
(`attnlab.models.seq2seq`); decoding: `attnlab.models.generation` (greedy / beam search).

Objective: label-smoothed cross-entropy over target tokens (padding ignored; Szegedy et al.
2016, as in Vaswani et al. 2017). Evaluation decodes each sentence (greedy, or beam search
with ``--eval.beam_size``, see `DecodingOptions`) and scores the detokenized output against the raw reference
with sacreBLEU (Post 2018): ``bleu`` (cased, 13a tokenization: the standard signature) and
``bleu_lc`` (lowercased 13a: the nearest detokenized counterpart of the lowercased *tokenized*
BLEU most papers on Multi30k report, which is computed on each paper's own tokenization and
is not the same number, as sacreBLEU's documentation warns), plus the unsmoothed ``loss`` per
target token of the split. ``bleu`` drives model selection.

A finished run's data (evaluate, ``--resume``) is read with the run's own tokenizer(s)
(`translation_run_vocabulary`); ``--init RUN`` fine-tunes an earlier ``transformer-mt`` run on
new data with its tokenizer(s) (`translation_from_run`), so its embeddings keep their token ids.

Predict: a text file, one source sentence per line -> its translation (beam 5), with the
hypothesis's length-normalised probability as the score. Explain: the decoder's
cross-attention (target x source) of the first line's translation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.data.parallel import load_translation
from attnlab.data.tokenizers import BOS_ID, EOS_ID, PAD_ID, load_tokenizer
from attnlab.errors import CheckpointError, ConfigError, DataError
from attnlab.models.generation import beam_search, greedy_search
from attnlab.tasks.base import CrossEntropyOptions, InitSupport, Pretrained, RunVocabulary, TaskSpec, warn_cut

__all__ = ["SPECS", "DecodingOptions", "TranslationObjective", "translate", "corpus_bleu", "DEFAULT_MODEL_CONFIG", "DEFAULT_TRAIN",
           "translation_run_vocabulary", "translation_from_run"]

# Small defaults (2 + 2 layers x 128) so that a CPU run takes minutes, not hours; the larger
# Multi30k config is documented and run by benchmarks/translation.py.
DEFAULT_MODEL_CONFIG: dict[str, Any] = {"dim": 128, "encoder_depth": 2, "decoder_depth": 2, "num_heads": 4,
                                        "mlp_ratio": 2.0, "dropout": 0.1}
DEFAULT_TRAIN: dict[str, Any] = {"epochs": 5, "batch_size": 64, "lr": 1e-3, "weight_decay": 0.01, "warmup_epochs": 0.5,
                                 "keep": "best", "group_by_length": True}
DEFAULT_DATA_OPTIONS: dict[str, Any] = {"tokenizer": "bpe", "vocab_size": 8000}


@dataclass
class DecodingOptions:
    """How evaluation decodes (``--eval.beam_size 4 --eval.length_penalty 0.6``): greedy when
    ``beam_size`` is 1; beam search divides a hypothesis's log-probability by its length to the
    power ``length_penalty`` (Wu et al. 2016's alpha; 0 = no normalisation)."""

    beam_size: int = 1
    length_penalty: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.beam_size, int) or self.beam_size < 1:
            raise ConfigError(f"eval.beam_size must be an integer >= 1, got {self.beam_size!r}")
        if self.length_penalty < 0:
            raise ConfigError(f"eval.length_penalty must be >= 0, got {self.length_penalty!r}")


def corpus_bleu(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """sacreBLEU on detokenized text: cased (``bleu``) and lowercased (``bleu_lc``)."""
    import sacrebleu

    return {"bleu": float(sacrebleu.corpus_bleu(hypotheses, [references]).score),
            "bleu_lc": float(sacrebleu.corpus_bleu(hypotheses, [references], lowercase=True).score)}


def translate(model: nn.Module, src: Tensor, *, beam_size: int = 1, length_penalty: float = 1.0) -> list[list[int]]:
    """Token ids of the translations of a source batch (B, M): greedy when ``beam_size`` is 1."""
    if beam_size <= 1:
        return greedy_search(model, src)
    return beam_search(model, src, beam_size=beam_size, length_penalty=length_penalty)


class TranslationObjective:
    """Label-smoothed token cross-entropy; sacreBLEU of decoded sentences on evaluation."""

    metric = "bleu"
    greater_is_better = True

    def __init__(self, tgt_tokenizer, *, label_smoothing: float = 0.1, beam_size: int = 1, length_penalty: float = 1.0):
        self.tokenizer = tgt_tokenizer
        self.label_smoothing = label_smoothing
        self.beam_size = beam_size
        self.length_penalty = length_penalty

    def loss(self, model: nn.Module, batch: Any) -> tuple[Tensor, int]:
        src, tgt, _ = batch
        logits = model(src, tgt[:, :-1])  # (B, N-1, V)
        loss = F.cross_entropy(logits.float().flatten(0, 1), tgt[:, 1:].flatten(), ignore_index=PAD_ID,
                               label_smoothing=self.label_smoothing)
        return loss, int(src.shape[0])

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: Iterable[Any]) -> dict[str, float]:
        hyps, refs = [], []
        total, count = 0.0, 0
        for src, tgt, texts in batches:
            logits = model(src, tgt[:, :-1]).float()
            target = tgt[:, 1:]
            total += float(F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=PAD_ID, reduction="sum"))
            count += int((target != PAD_ID).sum())
            ids = translate(model, src, beam_size=self.beam_size, length_penalty=self.length_penalty)
            hyps += [self.tokenizer.decode(i) for i in ids]
            refs += list(texts)
        return {**corpus_bleu(hyps, refs), "loss": total / max(count, 1)}


def _tokenizers(info: dict[str, Any]):
    src = load_tokenizer(info["src_tokenizer"])
    return src, (src if info.get("tgt_tokenizer") is None else load_tokenizer(info["tgt_tokenizer"]))


def translation_fields(task_data) -> dict[str, Any]:
    info = task_data.info
    return {"src_vocab_size": info["src_vocab_size"], "tgt_vocab_size": info["tgt_vocab_size"],
            "share_embeddings": bool(info["shared_vocab"]), "max_length": max(256, info["max_length"] + 2),
            "pad_id": PAD_ID, "bos_id": BOS_ID, "eos_id": EOS_ID}


def _objective(task_data, options: CrossEntropyOptions, decoding: DecodingOptions) -> TranslationObjective:
    _, tgt_tok = _tokenizers(task_data.info)
    return TranslationObjective(tgt_tok, label_smoothing=options.label_smoothing, beam_size=decoding.beam_size,
                                length_penalty=decoding.length_penalty)


def _encode_sources(info: dict[str, Any], texts: list[str], where: str) -> list[list[int]]:
    """Source ids + <eos>, cut to the run's ``max_length`` as in training; a cut is said (``where``: the file)."""
    src_tok, _ = _tokenizers(info)
    n = int(info["max_length"])
    encoded = src_tok.encode_batch(texts)
    for text, ids in zip(texts, encoded):
        if len(ids) > n - 1:  # the translation would be of the start only
            warn_cut(where, text, len(ids), n - 1, n, rest="is not translated")
    return [ids[: n - 1] + [EOS_ID] for ids in encoded]


def _cross_attention_example(model: nn.Module, info: dict[str, Any], src_ids: list[int], title: str, label: str | None = None) -> Any:
    from attnlab.tasks.text import token_report_example

    src_tok, tgt_tok = _tokenizers(info)
    device = next(model.parameters()).device
    model.eval()
    src = torch.tensor([src_ids], device=device)
    out = translate(model, src, beam_size=1)[0]
    tgt_in = [BOS_ID] + out  # teacher-force the model's own translation
    layers = [f"decoder_blocks.{i}.cross_attn" for i in range(len(model.decoder_blocks))]
    return token_report_example(
        model, (src.cpu(), torch.tensor([tgt_in])), tokens=tgt_tok.token_strings(tgt_in), layers=layers,
        key_tokens=src_tok.token_strings(src_ids), prediction=tgt_tok.decode(out), label=label, title=title,
    )


def _report(model: nn.Module, task_data, count: int) -> list:
    test = task_data.test
    return [_cross_attention_example(model, task_data.info, test.src[i].tolist(), f"test #{i}: {test.src_texts[i][:60]}",
                                     label=test.tgt_texts[i]) for i in range(min(count, len(test)))]


def _source_lines(item: str) -> list[str]:
    from attnlab.data.text import read_lines

    lines = [line.strip() for line in read_lines(item) if line.strip()]  # each result names its input line
    if not lines:
        raise DataError(f"{item}: no source sentence to translate (one a line)")
    return lines


def predict_translation(model: nn.Module, record: dict[str, Any], inputs: list[str], top_k: int) -> list[dict[str, Any]]:
    """One result per source line: {"input", "class" (the translation), "score", "translation"}."""
    if top_k != 1:  # it was silently ignored
        raise ConfigError(f"--top-k {top_k}: translation predict writes the beam's best translation; --top-k does not apply")
    info = record["info"]
    _, tgt_tok = _tokenizers(info)
    device = next(model.parameters()).device
    model.eval()
    results = []
    for item in inputs:
        lines = _source_lines(item)
        for start in range(0, len(lines), 64):
            chunk = lines[start : start + 64]
            from attnlab.data.text import pad_batch

            src = pad_batch([torch.tensor(ids) for ids in _encode_sources(info, chunk, item)]).to(device)
            outs = beam_search(model, src, beam_size=5, length_penalty=1.0)
            for text, ids, row in zip(chunk, outs, range(len(chunk))):
                tgt = torch.tensor([[BOS_ID] + ids + [EOS_ID]], device=device)
                with torch.no_grad():
                    logp = F.log_softmax(model(src[row : row + 1], tgt[:, :-1]).float(), -1)
                    mean = logp.gather(-1, tgt[:, 1:, None]).mean()
                translation = tgt_tok.decode(ids)
                results.append({"input": text, "class": translation, "translation": translation, "score": float(mean.exp())})
    return results


def explain_translation(model: nn.Module, record: dict[str, Any], item: str) -> Any:
    from attnlab.errors import DataError

    lines = _source_lines(item)
    if not lines:
        raise DataError(f"{item}: no sentence to explain")
    return _cross_attention_example(model, record["info"], _encode_sources(record["info"], lines[:1], item)[0], Path(item).name)


def _carried_tokenizers(record: dict[str, Any], where: str) -> dict[str, Any]:
    """A run's tokenizer(s) (data.json ``info``) as loader options; ``where`` names the file."""
    info = record.get("info")
    if not isinstance(info, dict) or not isinstance(info.get("src_tokenizer"), dict):
        raise CheckpointError(f"{where}: no 'info.src_tokenizer' entry: the run's tokenizer is needed to read text as "
                              "it was trained (not a finished translation run?)")
    try:
        src, tgt = _tokenizers(info)
    except DataError as exc:
        raise CheckpointError(f"{where}: info.src_tokenizer / tgt_tokenizer: {exc}") from None
    return {"pretrained_tokenizer": src, **({} if tgt is src else {"pretrained_target_tokenizer": tgt})}


def translation_run_vocabulary(record: dict[str, Any]) -> dict[str, Any]:
    """A finished run's tokenizer(s) as loader options: another (or a changed) data folder is
    read with the ids its model learnt, never with a BPE re-trained on it ({} for a record without one)."""
    info = record.get("info")
    if not isinstance(info, dict) or not isinstance(info.get("src_tokenizer"), dict):
        return {}
    return _carried_tokenizers(record, "the run's data.json")


def _reopen_translation(record: dict[str, Any]) -> Pretrained:
    """A finished ``--init RUN`` run's tokenizer(s), from its data.json record alone (RUN may be gone)."""
    return Pretrained(data_options=_carried_tokenizers(record, "the run's data.json"), record=dict(record.get("init") or {}))


def translation_from_run(source: Path) -> Pretrained:
    """``--init RUN`` for translation: the source run's tokenizer(s) come along with its weights,
    so each embedding row keeps the token it was trained for."""
    from attnlab.tasks.init_run import open_run

    return open_run(source, data_options=lambda run: _carried_tokenizers(run.record, str(run.path / "data.json")))


_TOKENIZER_OPTIONS = ("tokenizer", "vocab_size", "shared_vocab", "lowercase")
INIT_HELP = ("translation: SOURCE is an earlier transformer-mt run; the data is tokenised with its tokenizer(s) "
             "(--data.tokenizer / vocab_size / shared_vocab / lowercase do not apply), the training defaults stay.")

SPECS = (
    TaskSpec(
        name="translation", load=load_translation, models=("transformer-mt",),
        description="translation: a folder of aligned <split>.<lang>[.gz] files (Multi30k), or --data SRC --data.target_file TGT",
        default_model_config=DEFAULT_MODEL_CONFIG, default_train=DEFAULT_TRAIN, default_data_options=DEFAULT_DATA_OPTIONS,
        default_objective={"label_smoothing": 0.1}, evaluation_options=DecodingOptions,
        model_fields=translation_fields, objective=_objective, report_examples=_report,
        predict=predict_translation, explain_example=explain_translation,
        init=InitSupport(help=INIT_HELP, reopen=_reopen_translation, from_run=translation_from_run,
                         default_train=DEFAULT_TRAIN, default_objective={"label_smoothing": 0.1}),
        run_vocabulary=RunVocabulary(translation_run_vocabulary, replaces=_TOKENIZER_OPTIONS),
    ),
)
