"""A pretrained checkpoint's own tokenizer (BERT family: WordPiece, Wu et al. 2016; Devlin et al. 2019).

Fine-tuning with another tokenizer or other lower-casing runs without error and quietly
loses accuracy, so ``--init`` runs tokenise with the checkpoint's, giving the ids
``transformers.AutoTokenizer.from_pretrained(DIR)(text, truncation=True)`` gives: its
``tokenizer.json`` (read by the ``tokenizers`` library), or its ``vocab.txt`` as a fallback
(BERT's normaliser and pre-tokeniser around a WordPiece model, with the special tokens matched
in the text as transformers matches them). As in transformers' ``BertTokenizer`` (4.x and 5.x),
``tokenizer_config.json``'s ``do_lower_case``, ``strip_accents`` and ``tokenize_chinese_chars``
decide the normaliser, with BERT's defaults (lower-case, strip accents when lower-casing, split
CJK characters) for those it does not name, whatever ``tokenizer.json``'s normaliser says; a
``tokenizer_class`` of ``PreTrainedTokenizerFast`` reads ``tokenizer.json`` as written. A
``tokenizer.json`` whose other parts are not BERT's, or a ``tokenizer_class`` that is not
BERT's WordPiece (BertJapaneseTokenizer, MPNetTokenizer, ...), is refused: the ids would not
be transformers'. Any padding or truncation baked into the file is switched off:
``for_classification`` adds ``[CLS]`` / ``[SEP]`` and cuts at ``model_max_length`` (at most
the model's positions) itself, and batches are padded with ``pad_id``. Token types are all 0
(one text per example), as transformers gives for a single text.

One deliberate difference: the model masks every ``pad_id`` (the attention mask is
``ids != pad_id``), so a literal ``[PAD]`` written inside a text, which transformers turns
into the pad id but attends to, is masked out here.

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
                 unk_token: str = "[UNK]", max_length: int = 512, default_length: int | None = None):
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
        # Where texts are cut unless --data.max_length says otherwise: tokenizer_config.json's
        # model_max_length (AutoTokenizer's truncation=True) when shorter than the positions.
        self.default_length = min(int(default_length or max_length), self.max_length)

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
        """``[CLS] ids [SEP]``, the pieces cut so the whole fits ``max_length`` (default: ``default_length``),
        at most the model's positions."""
        limit = min(max_length or self.default_length, self.max_length)
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
    """BERT's tokenizer around ``vocab.txt``, as transformers' BertTokenizer builds it."""
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
    tok.normalizer = normalizers.BertNormalizer(**normalizer)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


# tokenizer_config.json keys -> BertNormalizer options (transformers' BertTokenizer arguments), and
# BERT's own values for those it does not name (strip_accents None: strip when lower-casing).
_NORMALIZER_SETTINGS = {"do_lower_case": "lowercase", "strip_accents": "strip_accents",
                        "tokenize_chinese_chars": "handle_chinese_chars"}
_BERT_NORMALIZER: dict[str, Any] = {"clean_text": True, "handle_chinese_chars": True, "strip_accents": None, "lowercase": True}
# tokenizer_config.json's tokenizer_class values that AutoTokenizer builds as BERT's WordPiece tokenizer
# (transformers 4 and 5 alike), and those that load tokenizer.json exactly as it is written.
_BERT_CLASSES = {f"{name}Tokenizer{fast}" for name in ("Bert", "DistilBert", "Electra", "MobileBert") for fast in ("", "Fast")}
_FILE_CLASSES = {"PreTrainedTokenizerFast", "TokenizersBackend"}


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


def _tokenizer_class(settings: dict[str, Any], where: Path) -> str | None:
    """tokenizer_config.json's ``tokenizer_class``, refused unless AutoTokenizer reads it as BERT's
    WordPiece (or as tokenizer.json verbatim): BertJapaneseTokenizer, MPNetTokenizer, ... split text
    otherwise, and tokenising them as BERT would run and quietly lose accuracy."""
    name = settings.get("tokenizer_class")
    if name is not None and name not in _BERT_CLASSES | _FILE_CLASSES:
        raise CheckpointError(f"{where}: tokenizer_class {name!r} is not BERT's WordPiece tokenizer "
                              f"(attnlab reads {', '.join(sorted(c for c in _BERT_CLASSES if not c.endswith('Fast')))} "
                              f"or {' / '.join(sorted(_FILE_CLASSES))})")
    return name


def _check_bert_pipeline(state: dict[str, Any], path: Path, unk_token: str) -> None:
    """A tokenizer.json that BERT's tokenizer class reads the same way in transformers 4 and 5.

    Both take the vocabulary and set BERT's normaliser from tokenizer_config.json (its defaults
    where it is silent); transformers 5 also rebuilds the pre-tokeniser and WordPiece model with
    BERT's settings, where transformers 4 keeps the file's. A file with other parts would give
    ids that depend on the transformers version, so it is refused rather than guessed.
    """
    model, normalizer, pre = state.get("model") or {}, state.get("normalizer") or {}, state.get("pre_tokenizer") or {}
    expected = {"model": (model.get("type"), "WordPiece"), "model.continuing_subword_prefix": (model.get("continuing_subword_prefix"), "##"),
                "model.max_input_chars_per_word": (model.get("max_input_chars_per_word"), 100),
                "model.unk_token": (model.get("unk_token"), unk_token), "normalizer": (normalizer.get("type"), "BertNormalizer"),
                "normalizer.clean_text": (normalizer.get("clean_text"), True), "pre_tokenizer": (pre.get("type"), "BertPreTokenizer")}
    for part, (found, wanted) in expected.items():
        if found != wanted:
            raise CheckpointError(f"{path}: {part} is {found!r}, not BERT's {wanted!r}: transformers 4 and 5 tokenise such a "
                                  "file differently (set tokenizer_class to PreTrainedTokenizerFast in tokenizer_config.json "
                                  "to have it read as written)")


def _model_max_length(settings: dict[str, Any], where: Path, positions: int) -> int:
    """Where AutoTokenizer(text, truncation=True) cuts: tokenizer_config.json's ``model_max_length``,
    at most the model's positions (transformers writes 1e30 when a checkpoint declares none)."""
    value = settings.get("model_max_length")
    if value is None:
        return positions
    if isinstance(value, bool) or not isinstance(value, int) or value < 3:
        raise CheckpointError(f"{where}: model_max_length must be a whole number >= 3 ([CLS] x [SEP]), got {value!r}")
    return min(value, positions)


def load_checkpoint_tokenizer(directory: str | Path, *, max_length: int) -> WordPieceTokenizer:
    """The tokenizer of a Hugging Face checkpoint directory: ``tokenizer.json``, else ``vocab.txt``,
    giving the ids, attention mask and token types ``transformers.AutoTokenizer`` gives
    (tests/data/test_wordpiece.py holds the parity matrix).

    ``max_length``: the model's positions (``max_position_embeddings``); texts are cut by default
    at ``tokenizer_config.json``'s ``model_max_length`` when it is shorter (``default_length``).
    Raises CheckpointError naming the file when there is no tokenizer, it cannot be read, or it is
    not one attnlab tokenises as transformers does.
    """
    from tokenizers import AddedToken, Tokenizer, normalizers

    directory = Path(directory)
    config_path = directory / "tokenizer_config.json"
    settings = read_json_object(config_path) if config_path.is_file() else {}
    if (directory / "special_tokens_map.json").is_file():
        for role, value in read_json_object(directory / "special_tokens_map.json").items():
            settings.setdefault(role, value["content"] if isinstance(value, dict) else value)
    specials = {f"{role}_token": str(settings.get(f"{role}_token") or default)
                for role, default in (("cls", "[CLS]"), ("sep", "[SEP]"), ("pad", "[PAD]"), ("unk", "[UNK]"))}
    tokenizer_class = _tokenizer_class(settings, config_path)
    default_length = _model_max_length(settings, config_path, max_length)
    # transformers' BertTokenizer sets the normaliser from tokenizer_config.json, with BERT's own
    # values for what it does not name, whatever tokenizer.json's normaliser says.
    normalizer = {**_BERT_NORMALIZER, **_normalizer_settings(settings, config_path)}
    if (directory / "tokenizer.json").is_file():
        path = directory / "tokenizer.json"
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # the Rust library raises its own Exception type
            raise CheckpointError(f"{path}: not a tokenizers file ({str(exc).splitlines()[0]})") from None
        if tok.get_vocab_size() == 0:
            raise CheckpointError(f"{path}: the vocabulary is empty")
        if tokenizer_class not in _FILE_CLASSES:
            _check_bert_pipeline(json.loads(tok.to_str()), path, specials["unk_token"])
            tok.normalizer = normalizers.BertNormalizer(**normalizer)
    elif (directory / "vocab.txt").is_file():
        path = directory / "vocab.txt"
        if tokenizer_class in _FILE_CLASSES:
            raise CheckpointError(f"{config_path}: tokenizer_class {tokenizer_class!r} needs a tokenizer.json, "
                                  f"and {directory} has only vocab.txt")
        tok = _from_vocab(path, normalizer, specials["unk_token"])
        # transformers adds the special tokens as such: "[SEP]" written in a text is the separator,
        # matched before lower-casing, not the pieces "[", "sep", "]".
        mask = str(settings.get("mask_token") or "[MASK]")
        tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                for t in [*specials.values(), mask] if tok.token_to_id(t) is not None])
    else:
        raise CheckpointError(f"{directory}: no tokenizer (tokenizer.json or vocab.txt) beside the weights")
    try:
        return WordPieceTokenizer(tok, max_length=max_length, default_length=default_length, **specials)
    except DataError as exc:
        raise CheckpointError(f"{path}: {str(exc).removeprefix('wordpiece tokenizer: ')}") from None
