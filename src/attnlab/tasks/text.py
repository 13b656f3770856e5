"""Text classification task family: ``--task text-classification --data <file or folder>``.

Data: `attnlab.data.text` (``label<TAB>text`` / CSV / ``label text`` lines; a folder with
train/dev/test files such as SST-2 and TREC as distributed). A tokenizer is trained on the
training split and saved in the run directory (``tokenizer.json``, and in ``data.json`` for
predict): by default a lowercased word vocabulary (``--data.tokenizer word``, every word
seen in training; ``--data.min_frequency 2`` drops the rare ones), or byte-level BPE
(``bpe``) or characters (``char``). Model: ``text-transformer`` (`attnlab.models.text`).

``--init SOURCE`` fine-tunes a BERT-family checkpoint instead (`open_text_checkpoint`): its own
WordPiece tokenizer (`attnlab.data.wordpiece`), its pooling, a new head and BERT's
fine-tuning defaults (``FINETUNE_TRAIN``); docs/interop.md.

``--data.target regression`` / ``multilabel`` (`attnlab.data.text`) train on a numeric target
or on label sets instead (`attnlab.tasks.targets` reads the outputs).

Predict / explain inputs: a text file, one text per line. A line whose first field (before
a tab, comma in a ``.csv``, or the first space) is one of the run's class names (multi-label:
a comma-separated set of them; regression: a number before a tab or CSV comma) is read as
``label text`` and its label is reported beside the prediction.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from attnlab.data.text import frame_for_classification, load_text_classification
from attnlab.data.tokenizers import load_tokenizer
from attnlab.tasks.base import InitSupport, Pretrained, RunVocabulary, TaskSpec, run_targets, warn_cut
from attnlab.tasks.targets import (
    describe_output,
    describe_truth,
    read_outputs,
    target_of,
    task_record,
)

__all__ = ["SPECS", "text_positions", "token_report_example", "read_text_inputs", "predict_text", "explain_text", "DEFAULT_MODEL_CONFIG", "DEFAULT_TRAIN",
           "FINETUNE_TRAIN", "open_text_checkpoint", "reopen_text_checkpoint", "text_run_vocabulary"]

# The benchmarked defaults (benchmarks/text_classification.py; results in benchmarks/README.md).
# Small data sets (thousands of sentences, no pretrained weights): whole words, a convolution over
# the embeddings, Kim 2014's 3/4/5-word filters over the encoder output, max pooling and dropout 0.5
# before the head (each chosen on validation over first-token / mean pooling and BPE pieces).
DEFAULT_MODEL_CONFIG: dict[str, Any] = {"dim": 128, "depth": 2, "num_heads": 4, "mlp_ratio": 2.0, "dropout": 0.2,
                                        "embed_dropout": 0.2, "conv_kernel": 3, "pooling": "max",
                                        "conv_widths": (3, 4, 5), "conv_channels": 100, "head_dropout": 0.5}
# 8 epochs of length-grouped batches (validation peaked by epoch 5-8; the earlier 15 epochs took
# ~2.5x as long at equal validation accuracy: benchmarks/README.md, text-classification default speed).
DEFAULT_TRAIN: dict[str, Any] = {"epochs": 8, "batch_size": 32, "lr": 1e-3, "weight_decay": 0.1, "keep": "best",
                                 "group_by_length": True}
DEFAULT_OBJECTIVE: dict[str, Any] = {"label_smoothing": 0.1}
DEFAULT_DATA_OPTIONS: dict[str, Any] = {"tokenizer": "word", "vocab_size": 30000, "lowercase": True}


def token_report_example(
    model: nn.Module, inputs: tuple[Tensor, ...], *, tokens: Sequence[str], prediction: str, label: str | None = None,
    title: str = "", layers: Any = None, key_tokens: Sequence[str] | None = None, prefix: int = 0,
) -> Any:
    """A "tokens" ``ReportExample`` of one input (batch of 1) with the chosen layers' maps."""
    from attnlab.explain.capture import capture
    from attnlab.explain.report import ReportExample

    device = next(model.parameters()).device
    model.eval()
    maps = capture(model, *(t.to(device) for t in inputs), layers=layers, device="cpu")
    return ReportExample(
        title=title or "text", kind="tokens", input=list(tokens), maps=[m[0].float().numpy() for m in maps.maps],
        layer_names=list(maps.names), tokens=list(tokens), prediction=prediction, label=label,
        num_prefix_tokens=prefix, key_tokens=None if key_tokens is None else list(key_tokens),
    )


def text_fields(task_data) -> dict[str, Any]:
    info = task_data.info
    return {"vocab_size": info["vocab_size"], "num_classes": task_data.num_classes, "max_length": info["max_length"]}


def _logits(model: nn.Module, ids: list[int]) -> Tensor:
    """The model's raw output for one text. Shape: -> (K,)."""
    device = next(model.parameters()).device
    with torch.no_grad():
        return model(torch.tensor([ids], device=device)).float()[0].cpu()


def _example(model: nn.Module, tokenizer, ids: list[int], record: dict[str, Any], label: str | None, title: str) -> Any:
    return token_report_example(
        model, (torch.tensor([ids]),), tokens=tokenizer.token_strings(ids), label=label, title=title,
        prediction=describe_output(record, _logits(model, ids)), prefix=int(getattr(model, "num_prefix_tokens", 0)),
    )


def _report(model: nn.Module, task_data, count: int) -> list:
    tokenizer = load_tokenizer(task_data.info["tokenizer"])
    test, record = task_data.test, task_record(task_data)
    return [_example(model, tokenizer, test.ids[i].tolist(), record, describe_truth(record, test.y[i]),
                     f"test #{i}: {test.texts[i][:60]}") for i in range(min(count, len(test)))]


class _Embedded(nn.Module):
    """Token embeddings after the prefix (B, N - p, C) -> logits, for texts of one length.

    The prefix tokens' (``<bos>``) embeddings and the ids (whose padding mask the encoder
    reads; a length group has none) stay fixed. Shape: ids (B, N).
    """

    def __init__(self, model: nn.Module, ids: Tensor, prefix: int):
        super().__init__()
        self.model, self.prefix = model, prefix
        self.register_buffer("ids", ids, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        ids = self.ids.repeat(x.shape[0] // self.ids.shape[0], 1)  # Integrated Gradients repeats the batch per step
        head = self.model.encoder.token_embed(ids[:, : self.prefix]).to(x.dtype)  # (B, p, C)
        return self.model(ids, embeddings=torch.cat([head, x], 1))


def text_positions(model: nn.Module, task_data, items: list, index: list[int]) -> list:
    """(ids, label) ``items`` as token embeddings (one ``Positions`` per text
    length, so no row carries padding); removed = the embedding of ``[MASK]`` where the
    vocabulary has it, else of ``<pad>`` (the token stays attended: only what it says is gone)."""
    from attnlab.explain.positions import Positions
    from attnlab.tasks.positions import labels_of, readout_of

    tokenizer = load_tokenizer(task_data.info["tokenizer"])
    backend = getattr(tokenizer, "_tok", None)
    mask = backend.token_to_id("[MASK]") if backend is not None else None
    token = model.config.pad_id if mask is None else mask
    device = next(model.parameters()).device
    prefix = int(getattr(model, "num_prefix_tokens", 0))
    removed = model.encoder.token_embed.weight[token].detach()  # (C,)
    by_length: dict[int, list[int]] = {}
    for k, (ids, _) in enumerate(items):
        if len(ids) > prefix:
            by_length.setdefault(len(ids), []).append(k)
    groups = []
    for _, rows in sorted(by_length.items()):
        ids = torch.stack([torch.as_tensor(items[k][0]) for k in rows]).to(device)  # (B, N)
        wrap = _Embedded(model, ids, prefix)
        x = model.encoder.token_embed(ids[:, prefix:]).detach()  # (B, N - p, C)
        groups.append(Positions(x, wrap, removed, prefix, labels=labels_of([items[k] for k in rows]),
                                index=torch.as_tensor([index[k] for k in rows]),
                                removed_means=f"embedding of {'[MASK]' if mask is not None else '<pad>'}",
                                readout=readout_of(task_data)))
    return groups


def text_record_data(record: dict[str, Any]) -> SimpleNamespace:
    """What `text_positions` reads of the task data (the tokenizer, the target), from a run's record."""
    return SimpleNamespace(task=record.get("task"), target=record.get("target", "class"), info=record["info"],
                           calibration=record.get("calibration"))


def _known_label(field: str, known: set[str], target: str, has_separator: bool) -> bool:
    """Whether a line's first field is its label: a class name; a set of known names; or (for
    regression, and only before a tab or CSV comma, since a text may begin with a number) a number."""
    if target == "multilabel":
        names = [n.strip() for n in field.split(",")]
        return all(n in known for n in names)
    if target == "regression":
        try:
            return has_separator and math.isfinite(float(field))
        except ValueError:
            return False
    return field in known


def read_text_inputs(item: str, class_names: Sequence[str], *, target: str = "class") -> list[tuple[str, str | None]]:
    """(text, label or None) per non-blank line of a file; see the module docstring."""
    from attnlab.data.text import parse_labelled_line, read_lines

    known = set(class_names)
    is_csv = item.lower().endswith(".csv")
    rows = []
    for number, line in enumerate(read_lines(item), start=1):
        if not line.strip():
            continue
        parsed = parse_labelled_line(line, csv_format=is_csv)
        if is_csv and number == 1 and parsed is not None and parsed[0].lower() == "label" and parsed[0] not in known:
            continue  # a header row, skipped as in training (it was classified as a text)
        labelled = parsed is not None and _known_label(parsed[0], known, target, is_csv or "\t" in line)
        rows.append((parsed[1], parsed[0]) if labelled else (line.strip(), None))
    return rows


def _max_length(record: dict[str, Any]) -> int:
    return int(record["info"]["max_length"])


def _encode_input(tokenizer, text: str, record: dict[str, Any], item: str) -> list[int]:
    """One predict / explain text as the run reads it, cut to its ``max_length`` as in training;
    a cut is said (a warning naming the file and the text), never silent."""
    pieces = tokenizer.encode(text)
    ids = frame_for_classification(tokenizer, pieces, _max_length(record))
    kept = len(ids) - len(frame_for_classification(tokenizer, [], _max_length(record)))  # less [CLS] .. [SEP] or <bos>
    total = len(pieces)
    if total > kept:
        warn_cut(item, text, total, kept, _max_length(record))
    return ids


def predict_text(model: nn.Module, record: dict[str, Any], inputs: list[str], top_k: int) -> list[dict[str, Any]]:
    """One result per line: {"input", "class", "score", "top"}; a regression run {"input", "value"}
    (the target's units), a multi-label run {"input", "labels", "scores", "threshold", "top"};
    + "label" when the line has one."""
    tokenizer = load_tokenizer(record["info"]["tokenizer"])
    model.eval()
    results = []
    for item in inputs:
        rows = read_text_inputs(item, record["class_names"], target=target_of(record))
        if not rows:  # an empty result would read as "nothing to report", exit code 0
            from attnlab.errors import DataError

            raise DataError(f"{item}: no text to classify (one text a line; the file has only blank lines)")
        for text, label in rows:
            ids = _encode_input(tokenizer, text, record, item)
            result = {"input": text, **read_outputs(record, _logits(model, ids)[None], top_k)[0]}
            if label is not None:
                result["label"] = label
            results.append(result)
    return results


def explain_text(model: nn.Module, record: dict[str, Any], item: str) -> Any:
    """The first line of ``item`` as a "tokens" ``ReportExample``."""
    from attnlab.errors import DataError

    tokenizer = load_tokenizer(record["info"]["tokenizer"])
    rows = read_text_inputs(item, record["class_names"], target=target_of(record))
    if not rows:
        raise DataError(f"{item}: no text to explain")
    text, label = rows[0]
    ids = _encode_input(tokenizer, text, record, item)
    example = _example(model, tokenizer, ids, record, label, Path(item).name)
    example.item = (torch.tensor(ids), None)  # what the relevance methods attribute (text_positions)
    return example


# --init SOURCE: fine-tuning a pretrained BERT-family encoder, with the settings of Devlin et al.
# 2019 (AdamW, lr in 2e-5..5e-5, 10% warm-up, 3 epochs, batch 32, weight decay 0.01) and no
# label smoothing; the from-scratch defaults above (a small conv model, lr 1e-3) do not apply.
FINETUNE_TRAIN: dict[str, Any] = {"epochs": 3, "batch_size": 32, "lr": 5e-5, "weight_decay": 0.01, "warmup_ratio": 0.1,
                                  "min_lr_factor": 0.0, "keep": "best"}
FINETUNE_OBJECTIVE: dict[str, Any] = {"label_smoothing": 0.0}
# What the run directory keeps of SOURCE (under init/): the tokenizer and the configs, not the weights.
_INIT_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
               "1_Pooling/config.json", "modules.json", "sentence_bert_config.json")
INIT_HELP = ("text-classification: SOURCE is a Hugging Face save_pretrained directory of the BERT family (MiniLM "
             "included; model.safetensors or its shards, never pickle); the text is tokenised with its tokenizer (tokenizer.json, else vocab.txt; "
             "ids as transformers' AutoTokenizer gives them: its lower-casing, [CLS]/[SEP], truncation at its "
             "model_max_length, at most its positions), pooled as it declares (sentence-transformers "
             "1_Pooling mean/CLS/max, else CLS + tanh pooler), a new head is sized by the data's classes, and the "
             "training defaults become AdamW lr 5e-5, 10% warm-up, 3 epochs, batch 32, weight decay 0.01, no label "
             "smoothing (flags still override).")


def open_text_checkpoint(source: Path) -> Pretrained:
    """``--init SOURCE`` for text: check the checkpoint and its tokenizer, before anything is written."""
    import logging

    from attnlab.data.wordpiece import load_checkpoint_tokenizer
    from attnlab.errors import CheckpointError
    from attnlab.interop import open_bert_checkpoint

    source = Path(source)
    checkpoint = open_bert_checkpoint(source)
    tokenizer = load_checkpoint_tokenizer(source, max_length=checkpoint.max_positions)
    tokenizer_file = source / ("tokenizer.json" if (source / "tokenizer.json").is_file() else "vocab.txt")
    if tokenizer.vocab_size > checkpoint.vocab_size:
        raise CheckpointError(f"{tokenizer_file}: the vocabulary has {tokenizer.vocab_size} tokens but the embedding table "
                              f"{checkpoint.vocab_size} rows (config.json vocab_size): not this model's tokenizer")
    if tokenizer.vocab_size < checkpoint.vocab_size:  # tables padded to a round size are common practice
        logging.getLogger(__name__).warning("%s: %d tokens for an embedding table of %d rows; the rest stay unused",
                                            tokenizer_file, tokenizer.vocab_size, checkpoint.vocab_size)
    files = {}
    for name in _INIT_FILES:
        if (source / name).is_file():
            files[name] = (source / name).read_text(encoding="utf-8")
    record = {"source": str(source.resolve()), "weights": checkpoint.weights.name, "sha256": checkpoint.sha256(),
              "model_type": checkpoint.config["model_type"], "tokenizer": tokenizer_file.name,
              "pooling": checkpoint.pooling + (" + tanh pooler" if checkpoint.pooler else "")}
    return Pretrained(model_fields={**checkpoint.model_fields(), "pad_id": tokenizer.pad_id, "unk_id": tokenizer.unk_id},
                      data_options={"pretrained_tokenizer": tokenizer}, load_weights=checkpoint.load_into, files=files,
                      record=record)


def _run_tokenizer(record: dict[str, Any], where: str):
    """The tokenizer a run's data.json record keeps (``info.tokenizer``); ``where`` names the
    file. Without it the run's text cannot be read as it was trained: a CheckpointError, as for
    the other parts of a run directory `attnlab.tasks.init_run` checks, not a KeyError."""
    from attnlab.errors import CheckpointError, DataError

    info = record.get("info") if isinstance(record, dict) else None
    if not isinstance(info, dict) or info.get("tokenizer") is None:
        raise CheckpointError(f"{where}: no 'info.tokenizer' entry: the run's tokenizer is needed to read text as "
                              "it was trained (not a finished text-classification run?)")
    try:
        return load_tokenizer(info["tokenizer"])
    except DataError as exc:
        raise CheckpointError(f"{where}: info.tokenizer: {exc}") from None


def reopen_text_checkpoint(record: dict[str, Any]) -> Pretrained:
    """A finished ``--init`` run's tokenizer, from its data.json record alone (SOURCE may be gone)."""
    return Pretrained(data_options={"pretrained_tokenizer": _run_tokenizer(record, "the run's data.json")},
                      record=dict(record.get("init") or {}))


def text_run_vocabulary(record: dict[str, Any]) -> dict[str, Any]:
    """A finished run's tokenizer and classes (or target scaler) as loader options: its data is
    read with them, whatever file is given now ({} for a record without a tokenizer)."""
    info = record.get("info")
    if not isinstance(info, dict) or not isinstance(info.get("tokenizer"), dict):
        return {}
    return {"pretrained_tokenizer": _run_tokenizer(record, "the run's data.json"), **run_targets(record)}


def text_from_run(source: Path) -> Pretrained:
    """``--init RUN`` for text: the source run's tokenizer and text length come along with its weights.

    The head is new, sized by the new data's classes, unless the run was trained on the same
    classes (and target): then it is more training on them and the run's head is kept. A run on
    other labels (intermediate-task fine-tuning: SST-2, then another sentiment set) thus starts
    from its encoder, as a Hugging Face checkpoint does (the vision tasks do the same).
    """
    from attnlab.tasks.init_run import open_run, same_classes

    def carried(run) -> dict[str, Any]:
        tokenizer = _run_tokenizer(run.record, str(run.path / "data.json"))
        return {"pretrained_tokenizer": tokenizer, "max_length": run.record["info"].get("max_length")}

    def adapt(run, model: nn.Module) -> dict[str, Tensor]:
        data = pretrained.data
        keep = data is None or (run.task == "text-classification" and same_classes(run, data))
        pretrained.record["head"] = "kept" if keep else "new"
        if keep:
            return run.tensors
        return {**run.tensors, **{k: v for k, v in model.state_dict().items() if k.startswith("head.")}}

    pretrained = open_run(source, data_options=carried, adapt=adapt)
    return pretrained


SPECS = (
    TaskSpec(
        name="text-classification", load=load_text_classification, models=("text-transformer",),
        description="text classification (--data.target regression | multilabel for numbers or label sets): "
                    "label<TAB>text file(s), CSV, or a train/dev/test folder (SST-2, TREC)",
        default_model_config=DEFAULT_MODEL_CONFIG, default_train=DEFAULT_TRAIN, default_data_options=DEFAULT_DATA_OPTIONS,
        default_objective=DEFAULT_OBJECTIVE,
        model_fields=text_fields, report_examples=_report, predict=predict_text, explain_example=explain_text,
        explain_positions=text_positions, explain_record_data=text_record_data,
        init=InitSupport(help=INIT_HELP, open=open_text_checkpoint, reopen=reopen_text_checkpoint, from_run=text_from_run,
                         default_train=FINETUNE_TRAIN, default_objective=FINETUNE_OBJECTIVE),
        run_vocabulary=RunVocabulary(text_run_vocabulary, replaces=("tokenizer", "vocab_size", "lowercase", "min_frequency")),
    ),
)
