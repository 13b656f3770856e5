"""A pretrained checkpoint's own tokenizer (BERT family: WordPiece, Wu et al. 2016; Devlin et al. 2019).

Fine-tuning with another tokenizer or other lower-casing runs without error and quietly
loses accuracy, so ``--init`` runs tokenise with the checkpoint's: its ``tokenizer.json``
(read by the ``tokenizers`` library), or its ``vocab.txt`` as a fallback (BERT's normaliser
and pre-tokeniser around a WordPiece model). ``tokenizer_config.json``'s ``do_lower_case``
(with ``strip_accents`` and ``tokenize_chinese_chars``, where it names them) decides the
normaliser, as ``transformers``' ``BertTokenizer`` does. Any padding or
truncation baked into the file is switched off: ``encode_pair`` adds ``[CLS]`` / ``[SEP]``
and truncates to the model's positions itself, and batches are padded with ``pad_id``.

Unlike the tokenizers trained here (`attnlab.data.tokenizers`), the special tokens have the
checkpoint's ids (``[PAD]`` 0, ``[UNK]`` 100, ``[CLS]`` 101, ``[SEP]`` 102 in BERT's vocabulary).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from attnlab.errors import CheckpointError, DataError

__all__ = ["WordPieceTokenizer", "load_checkpoint_tokenizer", "read_json_object"]


class WordPieceTokenizer:
    """A ``tokenizers.Tokenizer`` plus the checkpoint's special tokens and position limit."""

    kind = "wordpiece"

    def __init__(self, tokenizer: Any, *, cls_token: str = "[CLS]", sep_token: str = "[SEP]", pad_token: str = "[PAD]",
                 unk_token: str = "[UNK]", max_length: int = 512):
        self._tok = tokenizer
        self._tok.no_padding()
        self._tok.no_truncation()
        self.specials = {"cls": cls_token, "sep": sep_token, "pad": pad_token, "unk": unk_token}
        ids = {}
        for role, token in self.specials.items():
            ids[role] = tokenizer.token_to_id(token)
            if ids[role] is None:
                raise DataError(f"wordpiece tokenizer: its vocabulary has no {role} token {token!r}")
        self.cls_id, self.sep_id, self.pad_id, self.unk_id = ids["cls"], ids["sep"], ids["pad"], ids["unk"]
        if max_length < 3:
            raise DataError(f"wordpiece tokenizer: max_length must be >= 3 ([CLS] x [SEP]), got {max_length}")
        self.max_length = int(max_length)

    @property
    def vocab_size(self) -> int:
        """Rows an embedding table needs: the largest id + 1 (a vocab.txt with a repeated line has
        fewer tokens than that)."""
        return max(self._tok.get_vocab(with_added_tokens=True).values(), default=-1) + 1

    def encode(self, text: str) -> list[int]:
        """Word pieces of ``text``, no special tokens."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def for_classification(self, ids: Sequence[int], max_length: int | None = None) -> list[int]:
        """``[CLS] ids [SEP]``, the pieces cut so the whole fits ``max_length`` (default: the model's positions)."""
        limit = min(max_length or self.max_length, self.max_length)
        return [self.cls_id, *list(ids)[: limit - 2], self.sep_id]

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def token_strings(self, ids: Sequence[int]) -> list[str]:
        """The pieces as the vocabulary spells them: a word's continuation pieces keep their ``##`` mark."""
        return [self._tok.id_to_token(int(i)) or "[?]" for i in ids]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "tokenizer": json.loads(self._tok.to_str()), "specials": dict(self.specials),
                "max_length": self.max_length}

    def to_json(self) -> str:
        """The library's own ``tokenizer.json`` text (padding and truncation off)."""
        return self._tok.to_str(pretty=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "WordPieceTokenizer":
        from tokenizers import Tokenizer

        if not isinstance(d.get("tokenizer"), dict):
            raise DataError("not a saved attnlab tokenizer: a wordpiece record without its 'tokenizer'")
        specials = d.get("specials", {})
        return cls(Tokenizer.from_str(json.dumps(d["tokenizer"])), max_length=int(d.get("max_length", 512)),
                   **{f"{role}_token": token for role, token in specials.items()})


def read_json_object(path: Path) -> dict[str, Any]:
    """A checkpoint's JSON file as a dict; a CheckpointError naming the file otherwise."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return value


def _from_vocab(path: Path, normalizer: dict[str, Any], unk_token: str) -> Any:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    try:
        text = path.read_text(encoding="utf-8")  # universal newlines: \r\n and \r end a line, as in transformers
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not a readable vocabulary ({exc})") from None
    lines = text.split("\n")  # not splitlines(): a token may hold \x85 or \u2028, which do not end a line here
    if lines and lines[-1] == "":
        lines.pop()
    # A token's id is its line number and a repeated token keeps its last line, as transformers'
    # load_vocab and the tokenizers library read vocab.txt: numbering unique tokens instead would
    # shift every id after a repeat onto another embedding row.
    vocab = {token: index for index, token in enumerate(lines)}
    if unk_token not in vocab:
        raise CheckpointError(f"{path}: no unknown token {unk_token!r} in the vocabulary")
    tok = Tokenizer(models.WordPiece(vocab, unk_token=unk_token, max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(**{**_BERT_NORMALIZER, **normalizer})
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


# tokenizer_config.json keys -> BertNormalizer options (transformers' BertTokenizer arguments), and
# BERT's own values for a vocab.txt without them (strip_accents None: strip when lower-casing).
_NORMALIZER_SETTINGS = {"do_lower_case": "lowercase", "strip_accents": "strip_accents",
                        "tokenize_chinese_chars": "handle_chinese_chars"}
_BERT_NORMALIZER: dict[str, Any] = {"clean_text": True, "handle_chinese_chars": True, "strip_accents": None, "lowercase": True}


def _normalizer_settings(settings: dict[str, Any], where: Path) -> dict[str, Any]:
    """The BertNormalizer options ``tokenizer_config.json`` gives (only those it names)."""
    given = {}
    for key, option in _NORMALIZER_SETTINGS.items():
        value = settings.get(key)
        if key not in settings or (value is None and option != "strip_accents"):
            continue
        if not isinstance(value, bool) and value is not None:
            raise CheckpointError(f"{where}: {key} must be true or false, got {value!r}")
        given[option] = value
    return given


def load_checkpoint_tokenizer(directory: str | Path, *, max_length: int) -> WordPieceTokenizer:
    """The tokenizer of a Hugging Face checkpoint directory: ``tokenizer.json``, else ``vocab.txt``.

    ``max_length``: the model's positions (``max_position_embeddings``). Raises CheckpointError
    naming the file when there is no tokenizer or it cannot be read.
    """
    from tokenizers import Tokenizer

    directory = Path(directory)
    settings = read_json_object(directory / "tokenizer_config.json") if (directory / "tokenizer_config.json").is_file() else {}
    if (directory / "special_tokens_map.json").is_file():
        for role, value in read_json_object(directory / "special_tokens_map.json").items():
            settings.setdefault(role, value["content"] if isinstance(value, dict) else value)
    specials = {f"{role}_token": str(settings.get(f"{role}_token") or default)
                for role, default in (("cls", "[CLS]"), ("sep", "[SEP]"), ("pad", "[PAD]"), ("unk", "[UNK]"))}
    given = _normalizer_settings(settings, directory / "tokenizer_config.json")
    if (directory / "tokenizer.json").is_file():
        path = directory / "tokenizer.json"
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # the Rust library raises its own Exception type
            raise CheckpointError(f"{path}: not a tokenizers file ({str(exc).splitlines()[0]})") from None
        if tok.get_vocab_size() == 0:
            raise CheckpointError(f"{path}: the vocabulary is empty")
        normalizer = json.loads(tok.to_str()).get("normalizer") or {}
        if normalizer.get("type") == "BertNormalizer" and any(normalizer.get(k) != v for k, v in given.items()):
            # tokenizer_config.json wins, as in transformers' BertTokenizer: lower-casing, accents, CJK spacing
            from tokenizers import normalizers

            kept = {k: normalizer.get(k, default) for k, default in _BERT_NORMALIZER.items()}
            tok.normalizer = normalizers.BertNormalizer(**{**kept, **given})
    elif (directory / "vocab.txt").is_file():
        path = directory / "vocab.txt"
        tok = _from_vocab(path, given, specials["unk_token"])
    else:
        raise CheckpointError(f"{directory}: no tokenizer (tokenizer.json or vocab.txt) beside the weights")
    try:
        return WordPieceTokenizer(tok, max_length=max_length, **specials)
    except DataError as exc:
        raise CheckpointError(f"{path}: {str(exc).removeprefix('wordpiece tokenizer: ')}") from None
