"""Tokenizers for the text task families: byte-level BPE (Hugging Face ``tokenizers``) and characters.

Both share one interface (``encode``, ``decode``, ``vocab_size``, ``to_dict`` / ``from_dict``)
and the same four special tokens with fixed ids, so models and generation code can rely on
them: ``<pad>`` 0, ``<unk>`` 1, ``<bos>`` 2, ``<eos>`` 3.

- ``BPETokenizer``: byte-level BPE (Sennrich et al. 2016; GPT-2's byte alphabet, Radford et
  al. 2019) trained on the training split only. Byte-level pre-tokenisation round-trips any
  text exactly (no unknown characters), which sacreBLEU's detokenized scoring needs. The
  saved form is the library's own ``tokenizer.json`` (``tokenizers.Tokenizer.from_str``
  reloads it; so does ``transformers.PreTrainedTokenizerFast(tokenizer_file=...)``).
- ``CharTokenizer``: one id per character seen in training (nanoGPT's shakespeare_char);
  unseen characters map to ``<unk>``.

``load_tokenizer(dict)`` rebuilds either from its ``to_dict()`` form (stored in a run's
``data.json`` and ``tokenizer.json``).
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Sequence

from attnlab.errors import ConfigError, DataError

__all__ = [
    "PAD", "UNK", "BOS", "EOS", "SPECIAL_TOKENS", "PAD_ID", "UNK_ID", "BOS_ID", "EOS_ID",
    "BPETokenizer", "CharTokenizer", "train_tokenizer", "load_tokenizer",
]

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS)
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3


class BPETokenizer:
    """Byte-level BPE; ``lowercase`` adds a lowercasing normaliser (saved with the tokenizer)."""

    kind = "bpe"

    def __init__(self, tokenizer: Any):
        self._tok = tokenizer
        for i, token in enumerate(SPECIAL_TOKENS):
            if tokenizer.token_to_id(token) != i:
                raise DataError(f"BPE tokenizer: special token {token} must have id {i}, has {tokenizer.token_to_id(token)}")

    @classmethod
    def train(cls, texts: Iterable[str], *, vocab_size: int = 8000, lowercase: bool = False, min_frequency: int = 2) -> "BPETokenizer":
        from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

        if vocab_size < 260 + len(SPECIAL_TOKENS):
            raise ConfigError(f"BPE vocab_size must be >= {260 + len(SPECIAL_TOKENS)} (256 bytes + specials), got {vocab_size}")
        tok = Tokenizer(models.BPE(unk_token=UNK))
        if lowercase:
            tok.normalizer = normalizers.Lowercase()
        # encode() puts one space before every text (GPT-2's add_prefix_space, done by hand so
        # that decode can remove exactly that space): a first word gets its usual tokens.
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
        )
        tok.train_from_iterator((" " + t for t in texts), trainer=trainer)
        return cls(tok)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(" " + text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch([" " + t for t in texts], add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        # Byte-level decoding; the space encode() put in front is removed.
        text = self._tok.decode([int(i) for i in ids if int(i) >= len(SPECIAL_TOKENS)], skip_special_tokens=True)
        return text[1:] if text.startswith(" ") else text

    def token_strings(self, ids: Sequence[int]) -> list[str]:
        """Readable label of each id (for attention displays): specials as is, else the decoded piece."""
        out = []
        for i in ids:
            i = int(i)
            out.append(SPECIAL_TOKENS[i] if i < len(SPECIAL_TOKENS) else self._tok.decode([i]))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "tokenizer": json.loads(self._tok.to_str())}

    def to_json(self) -> str:
        """The library's own ``tokenizer.json`` text."""
        return self._tok.to_str(pretty=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BPETokenizer":
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_str(json.dumps(d["tokenizer"])))


class CharTokenizer:
    """One id per character of the training text; specials first."""

    kind = "char"

    def __init__(self, chars: Sequence[str], *, lowercase: bool = False):
        chars = list(chars)
        self.lowercase = lowercase
        if len(set(chars)) != len(chars) or any(len(c) != 1 for c in chars):
            raise DataError("CharTokenizer: chars must be distinct single characters")
        self.chars = chars
        self._index = {c: i + len(SPECIAL_TOKENS) for i, c in enumerate(chars)}

    @classmethod
    def train(cls, texts: Iterable[str], *, lowercase: bool = False) -> "CharTokenizer":
        seen: set[str] = set()
        for t in texts:
            seen.update(t.lower() if lowercase else t)
        return cls(sorted(seen), lowercase=lowercase)

    @property
    def vocab_size(self) -> int:
        return len(SPECIAL_TOKENS) + len(self.chars)

    def encode(self, text: str) -> list[int]:
        index = self._index
        return [index.get(c, UNK_ID) for c in (text.lower() if self.lowercase else text)]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Sequence[int]) -> str:
        n = len(SPECIAL_TOKENS)
        return "".join(self.chars[int(i) - n] for i in ids if n <= int(i) < self.vocab_size)

    def token_strings(self, ids: Sequence[int]) -> list[str]:
        n = len(SPECIAL_TOKENS)
        return [SPECIAL_TOKENS[int(i)] if int(i) < n else self.chars[int(i) - n] for i in ids]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "chars": "".join(self.chars), "lowercase": self.lowercase}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CharTokenizer":
        return cls(list(d["chars"]), lowercase=bool(d.get("lowercase", False)))


Tokenizer = BPETokenizer | CharTokenizer
TOKENIZER_KINDS = ("bpe", "char")


def train_tokenizer(kind: str, texts: Sequence[str], *, vocab_size: int = 8000, lowercase: bool = False) -> Tokenizer:
    """Train a tokenizer of ``kind`` ("bpe" | "char") on ``texts`` (the training split)."""
    if kind == "bpe":
        return BPETokenizer.train(texts, vocab_size=vocab_size, lowercase=lowercase)
    if kind == "char":
        return CharTokenizer.train(texts, lowercase=lowercase)
    raise ConfigError(f"tokenizer must be one of {list(TOKENIZER_KINDS)}, got {kind!r}")


def load_tokenizer(d: dict[str, Any] | str) -> Tokenizer:
    """Rebuild a tokenizer from ``to_dict()``, or JSON text: ``to_json()`` / a run's ``tokenizer.json``."""
    if isinstance(d, str):
        d = json.loads(d)
    kind = d.get("kind") if isinstance(d, dict) else None
    if kind is None and isinstance(d, dict) and isinstance(d.get("model"), dict) and d["model"].get("type") == "BPE":
        return BPETokenizer.from_dict({"tokenizer": d})  # a tokenizer.json as the library writes it
    if kind == "bpe":
        return BPETokenizer.from_dict(d)
    if kind == "char":
        return CharTokenizer.from_dict(d)
    raise DataError(f"not a saved attnlab tokenizer (kind {kind!r}; expected one of {list(TOKENIZER_KINDS)})")
