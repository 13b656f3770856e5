"""The three text task families end to end through the CLI: train, evaluate, predict, explain, generate."""

from __future__ import annotations

import io
import json
import sys

import pytest

from attnlab.cli import main
from attnlab.data.tokenizers import load_tokenizer


# Tiny ops: one thread is faster, and several threads crawl on a shared 2-core machine.
pytestmark = pytest.mark.usefixtures("one_thread")


TINY_CLS = ["--model.dim", "16", "--model.depth", "1", "--model.num_heads", "2", "--data.vocab_size", "300",
            "--train.batch_size", "8", "--train.progress", "false"]


def _classification_files(folder):
    folder.mkdir()
    good, bad = ["a great film", "wonderful and moving", "truly great"], ["a dull mess", "boring and bad", "truly awful"]
    rows = [f"pos\t{t}" for t in good] + [f"neg\t{t}" for t in bad]
    (folder / "train.tsv").write_text("\n".join(rows * 6) + "\n")
    (folder / "dev.tsv").write_text("\n".join(rows) + "\n")
    (folder / "test.tsv").write_text("\n".join(rows) + "\n")


def test_text_classification_cli(tmp_path, capsys, caplog):
    _classification_files(tmp_path / "data")
    run = tmp_path / "cls"
    assert main(["train", "--task", "text-classification", "--data", str(tmp_path / "data"), "--out", str(run),
                 "--epochs", "2", *TINY_CLS]) == 0
    for name in ("tokenizer.json", "report.html", "model.safetensors", "metrics.json"):
        assert (run / name).is_file(), name
    tok = load_tokenizer((run / "tokenizer.json").read_text())
    assert tok.decode(tok.encode("a great film")) == "a great film"
    html = (run / "report.html").read_text()
    assert '"tokens"' in html
    inputs = tmp_path / "in.txt"
    inputs.write_text("pos\ta great film\nsomething boring\n")
    capsys.readouterr()
    assert main(["predict", str(run), str(inputs), "--json", "--top-k", "2"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["input"] for r in results] == ["a great film", "something boring"]
    assert results[0]["label"] == "pos" and "label" not in results[1] and len(results[0]["top"]) == 2
    assert main(["explain", str(run), str(inputs), "-o", str(tmp_path / "e.png")]) == 0
    assert main(["evaluate", str(run), "--json"]) == 0
    long = tmp_path / "long.txt"
    long.write_text("pos\t" + "great " * 300 + "\n")  # past the run's max_length (128): it was cut silently
    caplog.clear()
    assert main(["predict", str(run), str(long)]) == 0
    assert "long.txt: 'great great" in caplog.text and "is 300 tokens; the run reads the first 127 (its max_length 128)" \
        in caplog.text
    sys_stdin = sys.stdin
    try:  # `echo TEXT | attnlab explain RUN - -o x.png`, as predict reads "-": it was "input not found: -"
        sys.stdin = io.TextIOWrapper(io.BytesIO(b"a great film\n"))
        assert main(["explain", str(run), "-", "-o", str(tmp_path / "stdin.png")]) == 0
        sys.stdin = io.TextIOWrapper(io.BytesIO(b"  \n"))
        capsys.readouterr()
        assert main(["explain", str(run), "-", "-o", str(tmp_path / "blank.png")]) == 2
        sys.stdin = io.TextIOWrapper(io.BytesIO(b"great " * 300 + b"\n"))
        caplog.clear()
        assert main(["predict", str(run), "-"]) == 0  # the cut's warning names what was given, not a temporary copy
        assert "standard input ('-'): 'great great" in caplog.text and "attnlab-stdin-" not in caplog.text
    finally:
        sys.stdin = sys_stdin
    assert (tmp_path / "stdin.png").is_file() and not (tmp_path / "blank.png").exists()
    assert capsys.readouterr().err.strip() == "attnlab: error: standard input ('-'): no text to explain"
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n\t\n")
    capsys.readouterr()
    assert main(["predict", str(run), str(blank)]) == 2  # it printed nothing and exited 0
    err = capsys.readouterr().err.strip()
    assert "blank.txt: no text to classify" in err and len(err.splitlines()) == 1


def test_predict_csv_header_is_skipped_as_in_training(tmp_path):
    from attnlab.tasks.text import read_text_inputs

    path = tmp_path / "in.csv"
    path.write_text('label,text\r\npos,"great, really"\r\nsomething boring\r\n')  # "label,text" was classified
    assert read_text_inputs(str(path), ["neg", "pos"]) == [("great, really", "pos"), ("something boring", None)]
    assert read_text_inputs(str(path), ["label", "pos"])[0] == ("text", "label")  # a class named "label" stays a row


def test_bad_row_is_one_line_error(tmp_path, capsys):
    data = tmp_path / "bad.tsv"
    data.write_text("pos\tfine\nonlyonefield\n")
    assert main(["train", "--task", "text-classification", "--data", str(data), "--out", str(tmp_path / "r")]) == 2
    assert "bad.tsv:2: expected 'label<TAB>text'" in capsys.readouterr().err


def test_translation_cli(tmp_path, capsys, caplog, monkeypatch):
    data = tmp_path / "mt"
    data.mkdir()
    words = {"dog": "Hund", "cat": "Katze", "man": "Mann", "house": "Haus"}
    pairs = [(f"a {e} and a {e2}", f"ein {d} und ein {d2}") for e, d in words.items() for e2, d2 in words.items()]
    for split, rows in (("train", pairs * 3), ("val", pairs[:4]), ("test", pairs[4:8])):
        (data / f"{split}.en").write_text("\n".join(p[0] for p in rows) + "\n")
        (data / f"{split}.de").write_text("\n".join(p[1] for p in rows) + "\n")
    run = tmp_path / "run"
    assert main(["train", "--task", "translation", "--data", str(data), "--out", str(run), "--epochs", "1",
                 "--model.dim", "16", "--model.encoder_depth", "1", "--model.decoder_depth", "1", "--model.num_heads", "2",
                 "--data.vocab_size", "300", "--eval.beam_size", "2", "--train.batch_size", "8",
                 "--train.progress", "false"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"bleu", "bleu_lc", "loss"} <= set(metrics["test"])
    assert (run / "tokenizer.json").is_file() and (run / "report.html").is_file()
    src = tmp_path / "src.txt"
    src.write_text("a dog and a cat\n")
    capsys.readouterr()
    assert main(["predict", str(run), str(src), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)[0]
    assert result["input"] == "a dog and a cat" and isinstance(result["translation"], str) and 0 <= result["score"] <= 1
    assert main(["predict", str(run), str(src), "--top-k", "3"]) == 2  # one translation a line: it was ignored
    assert "--top-k 3: translation predict writes the beam's best translation" in capsys.readouterr().err
    assert main(["explain", str(run), str(src), "-o", str(tmp_path / "x.html")]) == 0
    from attnlab.explain import plots

    drawn = {}
    real_grid = plots.head_grid
    monkeypatch.setattr(plots, "head_grid", lambda w, **kw: drawn.update(kw, shape=w.shape) or real_grid(w, **kw))
    assert main(["explain", str(run), str(src), "-o", str(tmp_path / "x.png"), "--head", "1"]) == 0
    assert drawn["key_tokens"][-1] == "<eos>" and len(drawn["key_tokens"]) == drawn["shape"][-1]  # source columns named
    assert drawn["shape"][0] == 1 and drawn["first_head"] == 1  # the head asked for (it drew every head)
    for argv, message in ((["--layer", "5"], "--layer 5 is out of range: the model has 1 attention layers"),  # IndexError
                          (["--head", "9"], "--head 9 is out of range: the model has 2 heads"),  # ignored
                          (["--rollout"], "--rollout does not apply to cross-attention")):  # ignored
        capsys.readouterr()
        assert main(["explain", str(run), str(src), "-o", str(tmp_path / "y.png"), *argv]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "y.png").exists()
    long = tmp_path / "long.txt"
    long.write_text("a dog and a cat " * 40 + "\n")  # past the run's max_length (128): its end was dropped silently
    caplog.clear()
    assert main(["predict", str(run), str(long)]) == 0
    assert "long.txt: 'a dog and a cat a dog and a cat a dog an...' is " in caplog.text
    assert "the run reads the first 127 (its max_length 128), the rest is not translated" in caplog.text
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    capsys.readouterr()
    assert main(["predict", str(run), str(empty)]) == 2
    assert "empty.txt: no source sentence to translate" in capsys.readouterr().err


def test_a_character_model_reads_the_canonically_equivalent_form_of_a_text(tmp_path, capsys):
    """"café" typed as "e" + a combining accent (NFD) is the same text as the training file's "é"
    (NFC): it was refused as an unseen character; now it reads as the form the run knows."""
    import unicodedata

    text = tmp_path / "t.txt"
    text.write_text(unicodedata.normalize("NFC", "un café crème, une crêpe à la pêche.\n") * 40)
    run = tmp_path / "lm"
    assert main(["train", "--task", "language-model", "--data", str(text), "--out", str(run), "--model.dim", "16",
                 "--model.depth", "1", "--model.num_heads", "2", "--data.block_size", "16", "--data.samples_per_epoch", "32",
                 "--train.progress", "false"]) == 0
    outputs = []
    for form in ("NFC", "NFD"):
        prompt = unicodedata.normalize(form, "un café")
        assert form == "NFC" or prompt != unicodedata.normalize("NFC", prompt)
        path = tmp_path / f"{form}.txt"
        path.write_text(prompt)
        capsys.readouterr()
        assert main(["predict", str(run), str(path), "--json"]) == 0
        predicted = json.loads(capsys.readouterr().out)
        assert main(["generate", str(run), "--prompt", prompt, "--temperature", "0", "--max-new-tokens", "5"]) == 0
        outputs.append((predicted[0]["top"], capsys.readouterr().out[len(prompt):]))
    assert outputs[0] == outputs[1]


def test_language_model_cli_and_generate(tmp_path, capsys, caplog):
    text = tmp_path / "t.txt"
    text.write_text("to be or not to be, that is the question.\n" * 40)
    run = tmp_path / "lm"
    assert main(["train", "--task", "language-model", "--data", str(text), "--out", str(run), "--model.dim", "16",
                 "--model.depth", "1", "--model.num_heads", "2", "--data.block_size", "16", "--data.samples_per_epoch", "96",
                 "--train.progress", "false"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["loss"] < 3.5 and metrics["test"]["perplexity"] > 1
    capsys.readouterr()
    assert main(["generate", str(run), "--prompt", "to be", "--max-new-tokens", "40", "--seed", "1", "--stop", "\n"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("to be") and len(out) > 6
    assert main(["generate", str(run), "--prompt", "to be", "--stop", "ab"]) == 2
    assert "each stop string must be one token" in capsys.readouterr().err
    for argv, message in ((["--temperature", "nan"], "--temperature must be a finite number >= 0, got nan"),
                          (["--temperature", "inf"], "--temperature must be a finite number >= 0, got inf"),
                          (["--top-k", "0"], "--top-k must be an integer >= 1"),
                          (["--top-k", "-3"], "--top-k must be an integer >= 1"),
                          (["--seed", str(2**70)], f"--seed must be an integer of at most 64 bits, got {2**70}"),
                          (["--stop", "€"], "stop string '€' has characters this run's vocabulary"),
                          (["--prompt", "to be 日本"], "the prompt has characters this run's vocabulary (")):
        args = ["--prompt", "to be", *argv] if "--prompt" not in argv else argv
        assert main(["generate", str(run), *args, "--max-new-tokens", "3"]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    prompt = tmp_path / "p.txt"
    prompt.write_text("to be or not to")
    assert main(["predict", str(run), str(prompt), "--top-k", "3"]) == 0
    assert main(["explain", str(run), str(prompt), "-o", str(tmp_path / "lm.png")]) == 0
    long = tmp_path / "long.txt"
    long.write_text("to be or not to be, " * 3)  # 60 characters, windows of 16: the start was dropped silently
    caplog.clear()
    assert main(["predict", str(run), str(long)]) == 0
    assert main(["generate", str(run), "--prompt", long.read_text(), "--max-new-tokens", "2"]) == 0
    assert "long.txt is 60 tokens; the model reads the last 16 (its block_size)" in caplog.text
    assert "the prompt is 60 tokens; the model reads the last 16 (its max_length)" in caplog.text
    unseen = tmp_path / "unseen.txt"
    unseen.write_text("to be 日本")  # predict and explain read it as <unk>s, silently; generate refused it
    for argv in (["predict", str(run), str(unseen)], ["explain", str(run), str(unseen), "-o", str(tmp_path / "u.png")]):
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert "unseen.txt: the text has characters this run's vocabulary (" in err and "'日'" in err, err
    assert not (tmp_path / "u.png").exists()
    sys_stdin = sys.stdin
    try:  # `echo ... | attnlab predict RUN -`: the error named a temporary file the user never made
        sys.stdin = io.TextIOWrapper(io.BytesIO("to be 日本".encode()))
        capsys.readouterr()
        assert main(["predict", str(run), "-"]) == 2
    finally:
        sys.stdin = sys_stdin
    err = capsys.readouterr().err.strip()
    assert err.startswith("attnlab: error: standard input ('-'): the text has characters") and "attnlab-stdin" not in err
