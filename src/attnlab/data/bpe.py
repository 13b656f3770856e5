"""A pretrained checkpoint's byte-level BPE (GPT-2: Radford et al. 2019; BPE: Sennrich et al. 2016).

Continuing a GPT-2 on new text only makes sense with GPT-2's own tokenizer: the embedding
table's rows are its ids. ``load_checkpoint_bpe(directory)`` reads a Hugging Face checkpoint
directory's ``tokenizer.json`` through the ``tokenizers`` library, or, without one, its
``vocab.json`` + ``merges.txt`` (GPT-2's original files, rebuilt as transformers'
``GPT2TokenizerFast`` builds them: byte-level pre-tokeniser and decoder around a BPE model).
``tokenizer_config.json``'s ``add_prefix_space`` is honoured, as in transformers.

Unlike the tokenizers trained here (`attnlab.data.tokenizers`) nothing is added to the text:
ids are exactly transformers' (no prefix space by default, no BOS), and the special tokens
keep the checkpoint's ids (GPT-2's ``<|endoftext|>`` is 50256; ``eos_id`` is None when the
vocabulary has no end-of-text token). Decoding goes through the byte-level decoder on the
whole id sequence, so a character split over several byte tokens comes back whole.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from attnlab.errors import CheckpointError, DataError

__all__ = ["CheckpointBPETokenizer", "load_checkpoint_bpe", "BPE_KIND"]

BPE_KIND = "checkpoint-bpe"


class CheckpointBPETokenizer:
    """A ``tokenizers.Tokenizer`` with a BPE model, plus the checkpoint's end-of-text token."""

    kind = BPE_KIND

    def __init__(self, tokenizer: Any, *, eos_token: str | None = "<|endoftext|>"):
        model = json.loads(tokenizer.to_str()).get("model") or {}
        if model.get("type") != "BPE":
            raise DataError(f"checkpoint tokenizer: a {model.get('type')!r} model, not byte-level BPE")
        self._tok = tokenizer
        self._tok.no_padding()
        self._tok.no_truncation()
        self.eos_token = eos_token
        self.eos_id = tokenizer.token_to_id(eos_token) if eos_token else None

    @property
    def vocab_size(self) -> int:
        """Ids in use: the BPE vocabulary and added tokens (the largest id + 1)."""
        return self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def token_strings(self, ids: Sequence[int]) -> list[str]:
        """Readable label of each id (attention displays): the piece decoded on its own
        (a piece holding part of a multi-byte character shows U+FFFD)."""
        return [self._tok.decode([int(i)], skip_special_tokens=False) for i in ids]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "tokenizer": json.loads(self._tok.to_str()), "eos_token": self.eos_token}

    def to_json(self) -> str:
        """The library's own ``tokenizer.json`` text (``transformers`` reads it too)."""
        return self._tok.to_str(pretty=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CheckpointBPETokenizer":
        from tokenizers import Tokenizer

        if d.get("kind") != BPE_KIND or not isinstance(d.get("tokenizer"), dict):
            raise DataError(f"not a saved {BPE_KIND} tokenizer (kind {d.get('kind')!r})")
        return cls(Tokenizer.from_str(json.dumps(d["tokenizer"])), eos_token=d.get("eos_token"))


def _read_settings(directory: Path) -> dict[str, Any]:
    """tokenizer_config.json, with special_tokens_map.json's entries where it has none."""
    from attnlab.data.wordpiece import read_json_object

    settings = read_json_object(directory / "tokenizer_config.json") if (directory / "tokenizer_config.json").is_file() else {}
    if (directory / "special_tokens_map.json").is_file():
        for role, value in read_json_object(directory / "special_tokens_map.json").items():
            settings.setdefault(role, value)
    eos = settings.get("eos_token")
    settings["eos_token"] = eos.get("content") if isinstance(eos, dict) else eos
    return settings


def _from_vocab_merges(vocab: Path, merges: Path, add_prefix_space: bool) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    try:
        bpe = models.BPE.from_file(str(vocab), str(merges))
    except Exception as exc:  # the Rust library raises its own Exception type
        raise CheckpointError(f"{vocab} / {merges.name}: not a BPE vocabulary and merges ({str(exc).splitlines()[0]})") from None
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def load_checkpoint_bpe(directory: str | Path) -> tuple[CheckpointBPETokenizer, Path]:
    """The byte-level BPE of a Hugging Face checkpoint directory and the file it came from:
    ``tokenizer.json``, else ``vocab.json`` + ``merges.txt``. Raises CheckpointError naming
    the file when there is none or it cannot be read."""
    from tokenizers import AddedToken, Tokenizer, pre_tokenizers

    directory = Path(directory)
    settings = _read_settings(directory)
    prefix_space = settings.get("add_prefix_space")
    eos = str(settings.get("eos_token") or "<|endoftext|>")
    if (directory / "tokenizer.json").is_file():
        path = directory / "tokenizer.json"
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # the Rust library raises its own Exception type
            raise CheckpointError(f"{path}: not a tokenizers file ({str(exc).splitlines()[0]})") from None
        pre = json.loads(tok.to_str()).get("pre_tokenizer") or {}
        if isinstance(prefix_space, bool) and pre.get("type") == "ByteLevel" and pre.get("add_prefix_space") != prefix_space:
            # tokenizer_config.json wins, as in transformers' GPT2TokenizerFast
            tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=prefix_space, use_regex=pre.get("use_regex", True))
    elif (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file():
        path = directory / "vocab.json"
        tok = _from_vocab_merges(path, directory / "merges.txt", bool(prefix_space))
        if tok.token_to_id(eos) is not None:  # matched whole in the text, as transformers' added tokens are
            tok.add_special_tokens([AddedToken(eos, special=True, normalized=False)])
    else:
        raise CheckpointError(f"{directory}: no tokenizer (tokenizer.json, or vocab.json and merges.txt) beside the weights")
    if tok.get_vocab_size() == 0:
        raise CheckpointError(f"{path}: the vocabulary is empty")
    try:
        return CheckpointBPETokenizer(tok, eos_token=eos), path
    except DataError as exc:
        raise CheckpointError(f"{path}: {str(exc).removeprefix('checkpoint tokenizer: ')}") from None
