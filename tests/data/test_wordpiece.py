"""A checkpoint's own WordPiece tokenizer (`attnlab.data.wordpiece`) gives the ids transformers gives."""

from __future__ import annotations

import json

import pytest

from attnlab.data.wordpiece import load_checkpoint_tokenizer
from tests.tasks.bert_fixtures import VOCAB

transformers = pytest.importorskip("transformers")

TEXTS = ["The MOVIE was great fun zz", "a boring plot , not good !"]


def _theirs(directory):
    return transformers.AutoTokenizer.from_pretrained(str(directory))


def test_vocab_txt_ids_are_line_numbers(tmp_path):
    """BERT's ``load_vocab`` (and the tokenizers library) number tokens by line: a repeated line
    (the later one wins) or a line holding a Unicode line separator must not shift the later ids."""
    vocab = VOCAB[:10] + ["the"] + VOCAB[10:] + ["x\u2028y", "a\x85b", "zz"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True}))
    ours, theirs = load_checkpoint_tokenizer(tmp_path, max_length=64), _theirs(tmp_path)
    for text in TEXTS:
        assert ours.encode(text) == theirs(text, add_special_tokens=False)["input_ids"], text
    assert ours.encode("zz") == [len(vocab) - 1]
    assert ours.vocab_size == len(vocab)  # rows the embedding table needs: the last id + 1


ACCENTED = VOCAB + ["café", "cafe", "naïve", "naive", "中", "文", "é", "##é"]


@pytest.mark.parametrize("tokenizer_json", [True, False])
@pytest.mark.parametrize("settings", [{"strip_accents": False}, {"tokenize_chinese_chars": False},
                                      {"do_lower_case": False, "strip_accents": True}])
def test_tokenizer_config_settings_win_as_in_transformers(tmp_path, tokenizer_json, settings):
    """``tokenizer_config.json``'s ``strip_accents`` and ``tokenize_chinese_chars`` (not only
    ``do_lower_case``) decide BERT's normaliser, over ``tokenizer.json`` and for ``vocab.txt``."""
    from tokenizers.implementations import BertWordPieceTokenizer

    (tmp_path / "vocab.txt").write_text("\n".join(ACCENTED) + "\n", encoding="utf-8")
    if tokenizer_json:  # BERT's usual file: lower-cased, accents stripped, CJK characters split
        BertWordPieceTokenizer(str(tmp_path / "vocab.txt"), lowercase=True).save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True,
                                                                **settings}))
    ours, theirs = load_checkpoint_tokenizer(tmp_path, max_length=64), _theirs(tmp_path)
    for text in ["the café was naïve", "中文 movie", "Café good"]:
        assert ours.encode(text) == theirs(text, add_special_tokens=False)["input_ids"], text


# ---- parity matrix: attnlab's framing vs AutoTokenizer(text, truncation=True) --------------------------------

MATRIX_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "the", "cafe", "café", "Hello", "World",
                "The", "un", "##able", "##s", "!", ",", ".", "?", "'", "-", "中", "国", "中国", "naive", "naïve", "resume",
                "résumé", "[", "]", "pad", "sep", "x", "##x", "ü", "u", "Ü", "U"]
MATRIX_TEXTS = ["Hello World", "The café, naïve résumé.", "unables", "中国 中", "  hello   \t world \n ", "", "   ",
                "Ünder ü?", "HELLO - World's", "x" * 120, "zzz qqq", "hello [SEP] world [UNK] [MASK] [sep]",
                "Cafe\u0301 e\u0301", "hello\u200bworld\x00!", "中国中国 hello " * 30]
POSITIONS = 40


def _bert_file(lowercase=True, strip_accents=None, chinese=True):
    """tokenizer.json as BertTokenizerFast saves it, with the given normaliser."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(MATRIX_VOCAB)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=chinese,
                                                strip_accents=strip_accents, lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.post_processor = processors.TemplateProcessing(single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in MATRIX_VOCAB[:5]])
    return tok


def _checkpoint(directory, *, tokenizer_json=None, vocab_txt=False, config=None):
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps({"model_type": "bert", "max_position_embeddings": POSITIONS}))
    if tokenizer_json is not None:
        tokenizer_json.save(str(directory / "tokenizer.json"))
    if vocab_txt:
        (directory / "vocab.txt").write_text("\n".join(MATRIX_VOCAB) + "\n", encoding="utf-8")
    if config is not None:
        (directory / "tokenizer_config.json").write_text(json.dumps(config))
    return directory


def _assert_parity(directory, texts=MATRIX_TEXTS):
    """ids, attention mask (the model's: ids != pad_id) and token types (none given: all 0) equal transformers'."""
    from attnlab.data.text import encode_for_classification

    ours, theirs = load_checkpoint_tokenizer(directory, max_length=POSITIONS), _theirs(directory)
    for text, ids in zip(texts, encode_for_classification(ours, texts, ours.default_length)):
        want = theirs(text, truncation=True, max_length=min(theirs.model_max_length, POSITIONS))
        assert ids == want["input_ids"], text
        assert [int(i != ours.pad_id) for i in ids] == want["attention_mask"], text
        assert want.get("token_type_ids", [0] * len(ids)) == [0] * len(ids), text
    return ours


NORMALIZERS = [(lc, sa, ch) for lc in (True, False) for sa in (None, True, False) for ch in (True, False)]


@pytest.mark.parametrize("lowercase,strip_accents,chinese", NORMALIZERS)
@pytest.mark.parametrize("config", ["absent", "silent", "explicit", "contrary"])
def test_tokenizer_json_parity(tmp_path, lowercase, strip_accents, chinese, config):
    """tokenizer.json with each BertNormalizer, under a tokenizer_config.json that is absent, names
    nothing (transformers then applies BERT's defaults: lower-case, strip accents, split CJK, and
    rewrites the file's normaliser), repeats the file's settings, or contradicts them."""
    settings = {"absent": None, "silent": {"tokenizer_class": "BertTokenizer"},
                "explicit": {"do_lower_case": lowercase, "strip_accents": strip_accents, "tokenize_chinese_chars": chinese},
                "contrary": {"do_lower_case": not lowercase, "tokenize_chinese_chars": not chinese}}[config]
    _assert_parity(_checkpoint(tmp_path / "ckpt", tokenizer_json=_bert_file(lowercase, strip_accents, chinese), config=settings))


@pytest.mark.parametrize("config", [None, {}, {"do_lower_case": False}, {"do_lower_case": False, "strip_accents": True},
                                    {"do_lower_case": True, "strip_accents": False}, {"tokenize_chinese_chars": False},
                                    {"tokenizer_class": "BertTokenizerFast", "model_max_length": 12}])
def test_vocab_txt_parity(tmp_path, config):
    """vocab.txt only: the same normaliser rules, and special tokens written in the text ("[SEP]",
    "[MASK]") are the special tokens, as transformers adds them, not "[", "sep", "]"."""
    ours = _assert_parity(_checkpoint(tmp_path / "ckpt", vocab_txt=True, config=config))
    assert ours.encode("a [SEP] b [MASK]")[1:4:2] == [3, 4]


@pytest.mark.parametrize("model_max_length", [12, POSITIONS, 1000, int(1e30)])
def test_model_max_length_cuts_as_transformers(tmp_path, model_max_length):
    """AutoTokenizer(text, truncation=True) cuts at model_max_length: so does attnlab by default, at
    most the model's positions (1e30 is what transformers writes for "none declared")."""
    directory = _checkpoint(tmp_path / "ckpt", tokenizer_json=_bert_file(), vocab_txt=True,
                            config={"model_max_length": model_max_length})
    ours = _assert_parity(directory)
    assert ours.default_length == min(model_max_length, POSITIONS) and ours.max_length == POSITIONS
    assert len(ours.for_classification(ours.encode("hello " * 100))) == min(model_max_length, POSITIONS)


def test_model_max_length_is_the_text_loader_default(tmp_path):
    """--init with no --data.max_length cuts where the checkpoint does; a longer explicit length
    (up to the positions) is still allowed, as transformers allows max_length=."""
    from attnlab.data.text import load_text_classification

    directory = _checkpoint(tmp_path / "ckpt", vocab_txt=True, config={"model_max_length": 12})
    data = tmp_path / "train.tsv"
    data.write_text("".join(f"{'ab'[i % 2]}\t{'hello world ' * 20}\n" for i in range(20)))
    tok = load_checkpoint_tokenizer(directory, max_length=POSITIONS)
    task = load_text_classification(str(data), seed=0, pretrained_tokenizer=tok)
    assert task.info["max_length"] == 12 and max(task.train.lengths) == 12
    task = load_text_classification(str(data), seed=0, pretrained_tokenizer=tok, max_length=30)
    assert task.info["max_length"] == 30 and max(task.train.lengths) == 30


def test_tokenizer_class_reading_the_file_as_written(tmp_path):
    """tokenizer_class PreTrainedTokenizerFast: transformers reads tokenizer.json as written (no
    BERT defaults), so a cased file stays cased."""
    directory = _checkpoint(tmp_path / "ckpt", tokenizer_json=_bert_file(lowercase=False),
                            config={"tokenizer_class": "PreTrainedTokenizerFast"})
    ours = _assert_parity(directory)
    assert ours.encode("Hello") == [10]


def _non_bert_files():
    from tokenizers import models, normalizers, pre_tokenizers

    sequence, none, whitespace, long_words = _bert_file(), _bert_file(), _bert_file(), _bert_file()
    sequence.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.Lowercase()])
    none.normalizer = None
    whitespace.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    long_words.model = models.WordPiece({t: i for i, t in enumerate(MATRIX_VOCAB)}, unk_token="[UNK]", max_input_chars_per_word=10)
    return {"normalizer": sequence, "normalizer ": none, "pre_tokenizer": whitespace, "max_input_chars_per_word": long_words}


@pytest.mark.parametrize("part", list(_non_bert_files()))
def test_non_bert_tokenizer_json_is_refused(tmp_path, part):
    """transformers 5's BertTokenizer rebuilds BERT's normaliser, pre-tokeniser and WordPiece settings
    where transformers 4 keeps the file's: the ids depend on the version, so attnlab refuses (one line
    naming the file and the part) instead of picking one."""
    from attnlab.errors import CheckpointError

    directory = _checkpoint(tmp_path / "ckpt", tokenizer_json=_non_bert_files()[part], config={})
    with pytest.raises(CheckpointError, match=rf"tokenizer\.json: (model\.)?{part.strip()} is .*not BERT's") as info:
        load_checkpoint_tokenizer(directory, max_length=POSITIONS)
    assert "\n" not in str(info.value)
    (directory / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast"}))
    _assert_parity(directory)  # read as written, by both


@pytest.mark.parametrize("name", ["BertJapaneseTokenizer", "MPNetTokenizer"])
def test_tokenizer_class_that_is_not_bert_wordpiece_is_refused(tmp_path, name):
    from attnlab.errors import CheckpointError

    directory = _checkpoint(tmp_path / "ckpt", vocab_txt=True, config={"tokenizer_class": name})
    with pytest.raises(CheckpointError, match=rf"tokenizer_config\.json: tokenizer_class '{name}' is not BERT's WordPiece"):
        load_checkpoint_tokenizer(directory, max_length=POSITIONS)


@pytest.mark.parametrize("value", [0, "512", 2.5, True])
def test_bad_model_max_length_is_refused(tmp_path, value):
    from attnlab.errors import CheckpointError

    directory = _checkpoint(tmp_path / "ckpt", vocab_txt=True, config={"model_max_length": value})
    with pytest.raises(CheckpointError, match="tokenizer_config.json: model_max_length must be a whole number"):
        load_checkpoint_tokenizer(directory, max_length=POSITIONS)


def test_a_literal_pad_in_the_text_is_masked_unlike_transformers(tmp_path):
    """The one documented difference: the model's mask is ids != pad_id, so a "[PAD]" written in a
    text gets transformers' id but is not attended to (transformers' mask has 1 there)."""
    directory = _checkpoint(tmp_path / "ckpt", tokenizer_json=_bert_file(), config={})
    ours, theirs = load_checkpoint_tokenizer(directory, max_length=POSITIONS), _theirs(directory)
    want = theirs("hello [PAD] world")
    assert ours.for_classification(ours.encode("hello [PAD] world")) == want["input_ids"] == [2, 5, 0, 6, 3]
    assert want["attention_mask"] == [1, 1, 1, 1, 1]
