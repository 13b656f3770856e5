"""Text data: file formats, errors with file and line, tokenizer round trips, the real files' shapes."""

from __future__ import annotations

import gzip
import re

import pytest
import torch

from attnlab.tasks import load_task
from attnlab.data.text import read_labelled
from attnlab.data.tokenizers import BOS_ID, EOS_ID, PAD_ID, load_tokenizer, train_tokenizer
from attnlab.errors import ConfigError, DataError
from tests.conftest import DATA_DIR


# Tiny ops: one thread is faster, and several threads crawl on a shared 2-core machine.
pytestmark = pytest.mark.usefixtures("one_thread")


TEXTS = ["A man rides a bike.", "Zwei Hunde spielen im Schnee!", "über 12 € — naïve café", "  spaces  twice ", "tab\there"]


@pytest.mark.parametrize("kind", ["bpe", "char"])
def test_tokenizer_round_trip_and_reload(kind):
    tok = train_tokenizer(kind, TEXTS * 5, vocab_size=300)
    for text in TEXTS:
        ids = tok.encode(text)
        assert min(ids) >= 4  # specials are never produced by plain text
        assert tok.decode(ids) == text
    again = load_tokenizer(tok.to_dict())
    assert again.encode(TEXTS[2]) == tok.encode(TEXTS[2]) and again.vocab_size == tok.vocab_size
    assert load_tokenizer(tok.to_json()).encode(TEXTS[1]) == tok.encode(TEXTS[1])
    assert tok.token_strings([PAD_ID, BOS_ID, EOS_ID]) == ["<pad>", "<bos>", "<eos>"]


def test_bpe_handles_unseen_characters_and_lowercase():
    tok = train_tokenizer("bpe", ["hello world"] * 3, vocab_size=300, lowercase=True)
    assert tok.decode(tok.encode("HELLO Ωmega")) == "hello ωmega"  # byte level: nothing is unknown
    char = train_tokenizer("char", ["abc"])
    assert char.encode("abz") == [4, 5, 1]  # unseen -> <unk>
    with pytest.raises(DataError, match="not a saved attnlab tokenizer"):
        load_tokenizer({"kind": "wordpiece"})


def test_word_tokenizer_vocabulary_unknown_words_and_reload():
    texts = ["What is the film ?", "they do n't like it", "What's the U.S. film ?", "the end 1,000"]
    tok = train_tokenizer("word", texts, vocab_size=1000, lowercase=True, min_frequency=1)
    assert tok.kind == "word" and tok.vocab_size == len(set(tok.token_strings(range(tok.vocab_size))))
    ids = tok.encode("WHAT is the zebra ?")
    assert min(ids) >= 1 and ids[3] == 1 and tok.decode(ids) == "what is the <unk> ?"  # unseen word -> <unk>
    assert tok.token_strings(tok.encode("don't it's 1,000")) == ["do", "n't", "it", "'s", "1", ",", "000"]
    assert tok.decode(tok.encode("they do n't like the film")) == "they do n't like the film"
    again = load_tokenizer(tok.to_json())  # the library's tokenizer.json
    assert isinstance(again, type(tok)) and again.encode("the film ?") == tok.encode("the film ?")
    assert load_tokenizer(tok.to_dict()).vocab_size == tok.vocab_size
    frequent = train_tokenizer("word", texts, vocab_size=1000, lowercase=True, min_frequency=2)
    assert frequent.encode("the film like") == [tok_id for tok_id in frequent.encode("the film")] + [1]
    with pytest.raises(ConfigError, match="min_frequency"):
        train_tokenizer("word", texts, min_frequency=0)


def test_classification_formats(tmp_path):
    (tmp_path / "a.tsv").write_text("pos\tgood film\nneg\tbad , very bad\n\npos\tfine\n")
    (tmp_path / "b.csv").write_text('label,text\npos,"good, really"\nneg,bad\n')
    (tmp_path / "c.txt").write_text("1 a stirring film\n0 a mess .\n")
    assert read_labelled(tmp_path / "a.tsv")[:2] == (["good film", "bad , very bad", "fine"], ["pos", "neg", "pos"])
    assert read_labelled(tmp_path / "b.csv")[:2] == (["good, really", "bad"], ["pos", "neg"])
    assert read_labelled(tmp_path / "c.txt")[1] == ["1", "0"]


def test_a_byte_order_mark_is_not_part_of_the_first_label_or_text(tmp_path):
    from attnlab.tasks.text import read_text_inputs

    path = tmp_path / "notepad.txt"
    path.write_bytes(b"\xef\xbb\xbfpos\tgood film\r\nneg\tbad film\r\n")  # Windows Notepad's UTF-8
    assert read_labelled(path)[:2] == (["good film", "bad film"], ["pos", "neg"])
    assert read_text_inputs(str(path), ["neg", "pos"]) == [("good film", "pos"), ("bad film", "neg")]


def test_bad_rows_name_file_and_line(tmp_path):
    bad = tmp_path / "train.tsv"
    bad.write_text("pos\tgood\nneg\n")
    with pytest.raises(DataError, match=r"train.tsv:2: expected 'label<TAB>text'"):
        read_labelled(bad)
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "train.tsv").write_text("a\tx y\nb\ty z\n" * 5)
    (folder / "test.tsv").write_text("a\tx\nc\tnew label\n")
    with pytest.raises(DataError, match=r"test.tsv:2: label 'c' does not occur"):
        load_task("text-classification", str(folder), seed=0)
    src, tgt = tmp_path / "p.en", tmp_path / "p.de"
    src.write_text("a\nb\nc\n")
    tgt.write_text("x\n\nz\n")
    with pytest.raises(DataError, match=r"p.de:2: empty sentence"):
        load_task("translation", str(src), seed=0, target_file=str(tgt))
    tgt.write_text("x\ny\n")
    with pytest.raises(DataError, match=r"has 3 lines but .*p.de has 2"):
        load_task("translation", str(src), seed=0, target_file=str(tgt))
    with pytest.raises(DataError, match="needs --data PATH"):
        load_task("language-model", None, seed=0)


@pytest.mark.parametrize("target", ["class", "multilabel"])
def test_a_line_without_a_tab_in_a_tab_separated_file_is_named(tmp_path, target):
    label = "sports,politics" if target == "multilabel" else "pos"
    path = tmp_path / "train.tsv"
    path.write_text(f"{label}\tthe first text\n\n{label}\tanother text\nsports the third text\n")
    with pytest.raises(DataError, match=r"train\.tsv:4: expected 'label<TAB>text' \(the file is tab-separated: "
                                        r"line 1 has a tab\), got a line without a tab: 'sports the third text'"):
        load_task("text-classification", str(path), seed=0, tokenizer="word", target=target)
    path.write_text("pos the first text\nneg\tanother text\n")  # whichever line has the tab
    with pytest.raises(DataError, match=r"train\.tsv:1: .*line 2 has a tab"):
        read_labelled(path)


def test_classification_splits_and_batches(tmp_path):
    lines = [f"{'pos' if i % 2 else 'neg'}\tword{i % 7} text number {i}" for i in range(60)]
    (tmp_path / "all.tsv").write_text("\n".join(lines) + "\n")
    task = load_task("text-classification", str(tmp_path / "all.tsv"), seed=0, vocab_size=300, max_length=5)
    assert (len(task.train), len(task.val), len(task.test)) == (48, 6, 6)
    assert task.class_names == ["neg", "pos"]
    x, y = task.collate_fn([task.train[0], task.train[1]])
    assert x.dtype == torch.long and x.shape[0] == 2 and x.shape[1] <= 5 and (x[:, 0] == BOS_ID).all()
    assert "tokenizer.json" in task.files
    words = load_task("text-classification", str(tmp_path / "all.tsv"), seed=0, tokenizer="word", min_frequency=3)
    assert words.info["tokenizer"]["kind"] == "word" and words.info["vocab_size"] == 4 + 7 + 2  # word0..6, text, number


def test_translation_folder_gz_and_language_model(tmp_path):
    for split, n in (("train", 30), ("val", 4), ("test_2016", 4)):
        for lang, word in (("en", "dog"), ("de", "Hund")):
            with gzip.open(tmp_path / f"{split}.{lang}.gz", "wt") as f:
                f.write("".join(f"a {word} {i}\n" for i in range(n)))
    task = load_task("translation", str(tmp_path), seed=0, vocab_size=300, tgt_lang="de")
    assert (len(task.train), len(task.val), len(task.test)) == (30, 4, 4)
    src, tgt, refs = task.collate_fn([task.test[0], task.test[1]])
    assert refs == ["a Hund 0", "a Hund 1"] and (tgt[:, 0] == BOS_ID).all() and (src == EOS_ID).any(1).all()
    assert task.src_tokenizer.decode(src[0, :-1].tolist()) == "a dog 0"
    text = tmp_path / "t.txt"
    text.write_text("hello world, this is a tiny corpus.\n" * 30)
    lm = load_task("language-model", str(text), seed=0, block_size=8, samples_per_epoch=5)
    x, y = lm.train[0]
    assert x.shape == (8,) and torch.equal(x[1:], y[:-1]) and len(lm.train) == 5
    assert lm.test is lm.val and len(lm.val) == (lm.info["val_tokens"] - 1) // 8


@pytest.mark.parametrize("name, raw, needle", [
    ("weights.bin", b"hello\nworld\x00\x17\x80\xff binary", r"weights\.bin:2: a NUL byte \(offset 11\): a binary file, not text$"),
    ("corpus.txt", gzip.compress(b"gzip without its suffix\n" * 40), r"corpus\.txt:1: .*binary file, not text; a gzip file must end in \.gz"),
    ("notes.txt", "two lines\nof UTF-16\n".encode("utf-16"), r"notes\.txt:1: .*; UTF-16 text: save it as UTF-8"),
])
def test_a_binary_file_is_refused_as_text_not_read_as_latin1(tmp_path, name, raw, needle):
    path = tmp_path / name
    path.write_bytes(raw)
    with pytest.raises(DataError, match=needle):  # Latin-1 decodes any bytes: a model would train on them
        load_task("language-model", str(path), seed=0, block_size=4)
    latin = tmp_path / "old.txt"
    latin.write_bytes("caf\u00e9 and na\u00efve\n".encode("latin-1") * 20)  # not UTF-8, no NUL: still read, as Latin-1
    assert load_task("language-model", str(latin), seed=0, block_size=4).info["val_tokens"] > 0


@pytest.mark.skipif(not (DATA_DIR / "text" / "trec").is_dir(), reason="shared data not present")
def test_real_trec_and_sst2_files_load_as_they_are():
    texts, labels, _ = read_labelled(DATA_DIR / "text" / "trec" / "TREC.train.all")  # Latin-1 file
    assert len(texts) == 5452 and sorted(set(labels)) == [str(i) for i in range(6)]
    texts, labels, _ = read_labelled(DATA_DIR / "text" / "sst2" / "stsa.binary.test")
    assert len(texts) == 1821 and set(labels) == {"0", "1"}


@pytest.mark.parametrize("option, value, message", [
    ("block_size", 0, "--data.block_size must be an integer >= 1, got 0"),
    ("block_size", -4, "--data.block_size must be an integer >= 1, got -4"),
    ("samples_per_epoch", -1, "--data.samples_per_epoch must be an integer >= 0"),
])
def test_language_model_window_options_out_of_range_are_named(tmp_path, option, value, message):
    from attnlab.data.language_model import load_language_model
    from attnlab.errors import ConfigError

    path = tmp_path / "t.txt"
    path.write_text("to be or not to be, that is the question.\n" * 20)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_language_model(str(path), seed=0, **{option: value})


def test_a_training_file_of_one_class_is_refused_naming_it(tmp_path):
    """It trained a 1-class classifier whose every score is 1.0, silently; the folder loaders refuse one class
    folder. A regression or multi-label file, and a finished run's data (its classes known), are not refused."""
    one = tmp_path / "one.tsv"
    one.write_text("pos\tgood film\n" * 20)
    with pytest.raises(DataError, match=r"^.*one.tsv: every example is labelled 'pos': classification needs two classes"):
        load_task("text-classification", str(one), seed=0)
    assert load_task("text-classification", str(one), seed=0, target="multilabel").num_classes == 1
    assert load_task("text-classification", str(one), seed=0, class_names=["neg", "pos"]).num_classes == 2
