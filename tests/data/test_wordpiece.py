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
