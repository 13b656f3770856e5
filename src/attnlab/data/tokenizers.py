"""Tokenizers for the text task families: byte-level BPE and words (Hugging Face ``tokenizers``), characters.

All share one interface (``encode``, ``decode``, ``vocab_size``, ``to_dict`` / ``from_dict``)
and the same four special tokens with fixed ids, so models and generation code can rely on
them: ``<pad>`` 0, ``<unk>`` 1, ``<bos>`` 2, ``<eos>`` 3.

- ``BPETokenizer``: byte-level BPE (Sennrich et al. 2016; GPT-2's byte alphabet, Radford et
  al. 2019) trained on the training split only. Byte-level pre-tokenisation round-trips any
  text exactly (no unknown characters), which sacreBLEU's detokenized scoring needs. The
  saved form is the library's own ``tokenizer.json`` (``tokenizers.Tokenizer.from_str``
  reloads it; so does ``transformers.PreTrainedTokenizerFast(tokenizer_file=...)``).
- ``WordTokenizer``: one id per word (Hugging Face ``WordLevel``) seen at least
  ``min_frequency`` times in training, the ``vocab_size`` most frequent at most; other words
  map to ``<unk>``. Words are split at white space, then into runs of letters/digits, single
  punctuation marks, clitics (``'s``) and ``n't``, as Kim 2014 tokenises. For small
  classification sets trained from scratch (TREC, SST-2) whole words beat BPE pieces.
  ``decode`` joins the words with spaces (not an exact round trip).
- ``CharTokenizer``: one id per character seen in training (nanoGPT's shakespeare_char);
  unseen characters map to ``<unk>``.

A pretrained checkpoint brings its own tokenizer (`attnlab.data.wordpiece`, kind
``wordpiece``, with the checkpoint's special-token ids). ``load_tokenizer(dict)`` rebuilds
any from its ``to_dict()`` form (stored in a run's
``data.json`` and ``tokenizer.json``).
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Sequence

from attnlab.errors import ConfigError, DataError

__all__ = [
    "PAD", "UNK", "BOS", "EOS", "SPECIAL_TOKENS", "PAD_ID", "UNK_ID", "BOS_ID", "EOS_ID",
    "BPETokenizer", "WordTokenizer", "CharTokenizer", "train_tokenizer", "load_tokenizer",
]

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS)
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3


class _HFTokenizer:
    """What the ``tokenizers``-backed kinds share: the special-token ids, vocabulary size and
    saving/loading as the library's own JSON. ``prefix`` is put before every text."""

    kind = ""
    prefix = ""

    def __init__(self, tokenizer: Any):
        self._tok = tokenizer
        for i, token in enumerate(SPECIAL_TOKENS):
            if tokenizer.token_to_id(token) != i:
                raise DataError(f"{self.kind} tokenizer: special token {token} must have id {i}, has {tokenizer.token_to_id(token)}")

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(self.prefix + text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch([self.prefix + t for t in texts], add_special_tokens=False)]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "tokenizer": json.loads(self._tok.to_str())}

    def to_json(self) -> str:
        """The library's own ``tokenizer.json`` text."""
        return self._tok.to_str(pretty=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_str(json.dumps(d["tokenizer"])))


class BPETokenizer(_HFTokenizer):
    """Byte-level BPE; ``lowercase`` adds a lowercasing normaliser (saved with the tokenizer)."""

    kind = "bpe"
    # encode() puts one space before every text (GPT-2's add_prefix_space, done by hand so
    # that decode can remove exactly that space): a first word gets its usual tokens.
    prefix = " "

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
        tok.train_from_iterator((cls.prefix + t for t in texts), trainer=trainer)
        return cls(tok)

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


# Within a white-space separated word: "n't", a clitic ('s, 're), a run of letters / digits, or
# one other character (Kim 2014's clean_str splits the same pieces off).
_WORD_PIECES = r"\w+(?=n't)|n't|'\w+|\w+|[^\w\s]"


class WordTokenizer(_HFTokenizer):
    """Word-level vocabulary (``tokenizers`` ``WordLevel``); ``lowercase`` adds a lowercasing normaliser."""

    kind = "word"

    @classmethod
    def train(cls, texts: Iterable[str], *, vocab_size: int = 30000, lowercase: bool = False, min_frequency: int = 1) -> "WordTokenizer":
        from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

        if vocab_size <= len(SPECIAL_TOKENS):
            raise ConfigError(f"word vocab_size must be > {len(SPECIAL_TOKENS)} (the special tokens), got {vocab_size}")
        tok = Tokenizer(models.WordLevel(unk_token=UNK))
        if lowercase:
            tok.normalizer = normalizers.Lowercase()
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(_WORD_PIECES), behavior="isolated")])
        trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                            special_tokens=list(SPECIAL_TOKENS), show_progress=False)
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    def decode(self, ids: Sequence[int]) -> str:
        """The words of ``ids`` joined by spaces; specials are dropped, except ``<unk>``."""
        return " ".join(self._tok.id_to_token(int(i)) for i in ids if int(i) == UNK_ID or int(i) >= len(SPECIAL_TOKENS))

    def token_strings(self, ids: Sequence[int]) -> list[str]:
        return [self._tok.id_to_token(int(i)) for i in ids]


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


Tokenizer = BPETokenizer | WordTokenizer | CharTokenizer
TOKENIZER_KINDS = ("bpe", "word", "char")


def train_tokenizer(kind: str, texts: Sequence[str], *, vocab_size: int = 8000, lowercase: bool = False,
                    min_frequency: int | None = None) -> Tokenizer:
    """Train a tokenizer of ``kind`` ("bpe" | "word" | "char") on ``texts`` (the training split).

    ``min_frequency``: BPE merges, or words, seen fewer times are not in the vocabulary; None:
    2 for BPE, 1 for words (characters ignore it, as they ignore ``vocab_size``).
    """
    if min_frequency is None:
        min_frequency = 2 if kind == "bpe" else 1
    if min_frequency < 1:
        raise ConfigError(f"min_frequency must be >= 1, got {min_frequency}")
    if kind == "bpe":
        return BPETokenizer.train(texts, vocab_size=vocab_size, lowercase=lowercase, min_frequency=min_frequency)
    if kind == "word":
        return WordTokenizer.train(texts, vocab_size=vocab_size, lowercase=lowercase, min_frequency=min_frequency)
    if kind == "char":
        return CharTokenizer.train(texts, lowercase=lowercase)
    raise ConfigError(f"tokenizer must be one of {list(TOKENIZER_KINDS)}, got {kind!r}")


def load_tokenizer(d: dict[str, Any] | str) -> Tokenizer:
    """Rebuild a tokenizer from ``to_dict()``, or JSON text: ``to_json()`` / a run's ``tokenizer.json``."""
    if isinstance(d, str):
        d = json.loads(d)
    kind = d.get("kind") if isinstance(d, dict) else None
    model_type = d["model"].get("type") if kind is None and isinstance(d, dict) and isinstance(d.get("model"), dict) else None
    if model_type in ("BPE", "WordLevel"):  # a tokenizer.json as the library writes it
        return (BPETokenizer if model_type == "BPE" else WordTokenizer).from_dict({"tokenizer": d})
    if kind == "bpe":
        return BPETokenizer.from_dict(d)
    if kind == "word":
        return WordTokenizer.from_dict(d)
    if kind == "char":
        return CharTokenizer.from_dict(d)
    if kind == "wordpiece":  # a pretrained checkpoint's tokenizer (--init)
        from attnlab.data.wordpiece import WordPieceTokenizer

        return WordPieceTokenizer.from_dict(d)
    if kind == "checkpoint-bpe":  # a GPT-2 checkpoint's byte-level BPE (--init)
        from attnlab.data.bpe import CheckpointBPETokenizer

        return CheckpointBPETokenizer.from_dict(d)
    raise DataError(f"not a saved attnlab tokenizer (kind {kind!r}; expected one of {list(TOKENIZER_KINDS)})")
