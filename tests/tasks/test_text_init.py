"""``--init``: a BERT checkpoint's encoder, tokenizer and pooling carried into a text-classification run."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from attnlab.errors import ConfigError
from attnlab.models.registry import create_model
from attnlab.tasks.text import open_text_checkpoint
from tests.tasks.bert_fixtures import VOCAB, save_bert, write_text_data, write_tokenizer

transformers = pytest.importorskip("transformers")

SENTENCES = ["The film was Boring!", "a very good actor , great fun"]


def _batch(tokenizer):
    rows = [tokenizer.for_classification(ids) for ids in tokenizer.encode_batch(SENTENCES)]
    n = max(map(len, rows))
    ids = torch.tensor([r + [tokenizer.pad_id] * (n - len(r)) for r in rows])  # (B, N), row 0 padded
    assert (ids == tokenizer.pad_id).any()
    return ids


def _model(pretrained, num_classes=3):
    model = create_model("text-transformer", num_classes=num_classes, **pretrained.model_fields)
    pretrained.load_weights(model)
    return model.eval()


@pytest.mark.parametrize("pooling", [None, "mean"])
def test_encoder_and_logits_match_transformers(tmp_path, pooling):
    source = save_bert(tmp_path / "bert", pooling=pooling)
    pretrained = open_text_checkpoint(source)
    tokenizer = pretrained.data_options["pretrained_tokenizer"]
    ids = _batch(tokenizer)
    types = torch.zeros_like(ids)
    types[1, 4:] = 1  # token types reach the embeddings
    mask = (ids != tokenizer.pad_id).long()
    ours = _model(pretrained)
    hf = transformers.BertForSequenceClassification.from_pretrained(source, num_labels=3).eval()
    with torch.no_grad():
        ours.head.weight.copy_(hf.classifier.weight)
        ours.head.bias.copy_(hf.classifier.bias)
        hidden, _ = ours.encoder(ids, types)
        out = hf.bert(input_ids=ids, attention_mask=mask, token_type_ids=types)
        torch.testing.assert_close(hidden, out.last_hidden_state, atol=1e-5, rtol=0)
        logits = ours(ids, types)
        if pooling is None:  # BERT's CLS + tanh pooler: exactly BertForSequenceClassification
            torch.testing.assert_close(logits, hf(input_ids=ids, attention_mask=mask, token_type_ids=types).logits,
                                       atol=1e-5, rtol=0)
        else:  # sentence-transformers mean pooling over the real tokens
            m = mask[..., None].float()
            pooled = (out.last_hidden_state * m).sum(1) / m.sum(1)
            torch.testing.assert_close(logits, hf.classifier(pooled), atol=1e-5, rtol=0)
    assert pretrained.model_fields["pooling"] == ("first" if pooling is None else "mean")
    assert pretrained.model_fields["pooler"] is (pooling is None)


def test_tokenizer_follows_the_checkpoint(tmp_path):
    from tokenizers.implementations import BertWordPieceTokenizer

    source = save_bert(tmp_path / "bert")
    tokenizer = open_text_checkpoint(source).data_options["pretrained_tokenizer"]
    theirs = BertWordPieceTokenizer(str(source / "vocab.txt"), lowercase=True)
    for text in SENTENCES:
        assert tokenizer.for_classification(tokenizer.encode(text)) == theirs.encode(text).ids  # [CLS] ... [SEP]
    assert tokenizer.token_strings(tokenizer.encode("boring")) == ["bor", "##ing"]
    long = tokenizer.for_classification(tokenizer.encode("good " * 100))
    assert len(long) == 64 and long[-1] == tokenizer.sep_id  # truncated at max_position_embeddings
    (source / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
    cased = open_text_checkpoint(source).data_options["pretrained_tokenizer"]  # tokenizer_config.json wins
    assert cased.encode("Good") == [cased.unk_id] and cased.encode("good") == tokenizer.encode("Good")
    (source / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    (source / "tokenizer.json").unlink()  # vocab.txt fallback, same ids
    again = open_text_checkpoint(source).data_options["pretrained_tokenizer"]
    assert [again.encode(t) for t in SENTENCES] == [tokenizer.encode(t) for t in SENTENCES]
    (source / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
    cased = open_text_checkpoint(source).data_options["pretrained_tokenizer"]
    assert cased.encode("Good") == [cased.unk_id]  # no lower-casing: "Good" is not in the vocabulary


def _cli(*args):
    from attnlab.cli import main

    return main([*map(str, args)])


def test_train_init_then_run_without_source(tmp_path, capsys):
    source = save_bert(tmp_path / "bert", pooling="mean")
    data = write_text_data(tmp_path / "reviews.tsv")
    out = tmp_path / "run"
    assert _cli("train", "--task", "text-classification", "--data", data, "--init", source, "--out", out, "--epochs", "2",
                "--train.batch_size", "8", "--train.lr", "1e-3", "--train.device", "cpu", "--train.progress", "false") == 0
    config = (out / "config.yaml").read_text()
    record = json.loads((out / "data.json").read_text())
    assert f"init: {source}" in config
    assert "lr: 0.001" in config and "weight_decay: 0.01" in config and "warmup_ratio: 0.1" in config  # fine-tuning defaults
    assert "label_smoothing: 0.0" in config
    assert record["init"]["sha256"] == __import__("hashlib").sha256((source / "model.safetensors").read_bytes()).hexdigest()
    assert record["info"]["tokenizer"]["kind"] == "wordpiece" and record["info"]["max_length"] == 64
    for name in ("tokenizer.json", "init/tokenizer.json", "init/config.json", "init/1_Pooling/config.json"):
        assert (out / name).is_file(), name
    capsys.readouterr()
    shutil.move(source, tmp_path / "moved")  # the run no longer needs SOURCE
    assert _cli("evaluate", out, "--json", "--device", "cpu") == 0
    assert "accuracy" in json.loads(capsys.readouterr().out)["test"]
    sample = tmp_path / "sample.txt"
    sample.write_text("pos\tthe film was great fun !\nthe plot was boring\n")
    assert _cli("predict", out, sample, "--json", "--device", "cpu") == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["input"] for r in results] == ["the film was great fun !", "the plot was boring"]
    assert results[0]["label"] == "pos" and {r["class"] for r in results} <= {"pos", "neg"}
    html = tmp_path / "explain.html"
    shutil.move(data, tmp_path / "elsewhere.tsv")  # explaining one input needs the run, not its training file
    assert _cli("explain", out, sample, "-o", html) == 0
    sample.write_text("the plot was boring\n")
    assert _cli("explain", out, sample, "-o", html) == 0
    text = html.read_text()
    assert "[CLS]" in text and "##ing" in text  # WordPiece pieces, continuations marked
    assert '"integrated_gradients"' in text  # the relevance methods' maps, as with the file in place
    shutil.move(tmp_path / "elsewhere.tsv", data)
    assert _cli("train", "--resume", out, "--epochs", "3") == 0  # one more epoch, SOURCE still gone
    assert json.loads((out / "metrics.json").read_text())["epochs_run"] == 3


def _expect_error(capsys, *args, match):
    capsys.readouterr()  # what building the fixture printed
    assert _cli(*args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and match in err, err


@pytest.mark.parametrize("case", ["missing", "not-a-checkpoint", "pickle-only", "model-type", "vocabulary", "no-tokenizer",
                                  "pooling-width", "integer-weights"])
def test_bad_sources_are_one_line_and_write_nothing(tmp_path, capsys, case):
    data = write_text_data(tmp_path / "reviews.tsv")
    source = tmp_path / "bert"
    if case == "missing":
        match = f"{source}: checkpoint not found"
    elif case == "not-a-checkpoint":
        source.mkdir()
        (source / "notes.txt").write_text("hello")
        match = f"{source / 'config.json'}: missing"
    elif case == "pickle-only":
        save_bert(source)
        (source / "model.safetensors").rename(source / "pytorch_model.bin")  # never unpickled
        match = f"{source / 'pytorch_model.bin'}: pickled weights are refused"
    elif case == "model-type":
        transformers.GPT2Model(transformers.GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=1,
                                                       n_head=2)).save_pretrained(source)
        write_tokenizer(source)
        match = f"{source / 'config.json'}: model_type 'gpt2' is not supported"
    elif case == "no-tokenizer":
        save_bert(source)
        for name in ("tokenizer.json", "vocab.txt"):
            (source / name).unlink()
        match = f"{source}: no tokenizer (tokenizer.json or vocab.txt)"
    elif case == "pooling-width":  # a 1_Pooling folder of another model, 64 wide
        save_bert(source, pooling="mean")
        pooling = source / "1_Pooling" / "config.json"
        pooling.write_text(json.dumps({**json.loads(pooling.read_text()), "word_embedding_dimension": 64}))
        match = f"{pooling}: word_embedding_dimension 64 does not match the model's hidden_size 32"
    elif case == "integer-weights":  # load_state_dict would cast them silently
        save_bert(source)
        tensors = load_file(str(source / "model.safetensors"))
        name = next(k for k in tensors if k.endswith("attention.self.query.weight"))
        tensors[name] = tensors[name].round().to(torch.int64)
        save_file(tensors, str(source / "model.safetensors"))
        match = f"{source / 'model.safetensors'}: tensor {name!r} is int64 (integer) in the checkpoint but float32"
    else:
        save_bert(source, vocab_size=20)  # the table has 20 rows, the tokenizer ~80 tokens
        match = f"{source / 'tokenizer.json'}: the vocabulary has {len(VOCAB)} tokens but the embedding table 20 rows"
    out = tmp_path / "run"
    _expect_error(capsys, "train", "--task", "text-classification", "--data", data, "--init", source, "--out", out,
                  match=match)
    assert not out.exists()


def test_tokenizer_options_do_not_mix_with_init(tmp_path):
    from attnlab.run import train_run
    from attnlab.run_config import resolve_config

    source = save_bert(tmp_path / "bert")
    config = resolve_config({"task": "text-classification", "data": str(write_text_data(tmp_path / "d.tsv")),
                             "init": str(source), "data_options": {"tokenizer": "word"}})
    with pytest.raises(ConfigError, match="do not apply with --init"):
        train_run(config, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("option", [("tokenizer", "bpe"), ("lowercase", "false"), ("vocab_size", "8000"),
                                    ("min_frequency", "1")])
def test_every_given_tokenizer_option_is_refused_with_init(tmp_path, capsys, option):
    # the loader's own defaults (bpe, 8000, not lower-cased) once slipped through unnoticed
    source = save_bert(tmp_path / "bert")
    data, out = write_text_data(tmp_path / "d.tsv"), tmp_path / "run"
    _expect_error(capsys, "train", "--task", "text-classification", "--data", data, "--init", source, "--out", out,
                  f"--data.{option[0]}", option[1], match=f"--data.{option[0]} {option[1]}: --data.tokenizer / vocab_size "
                  "/ lowercase / min_frequency do not apply with --init")
    assert not out.exists()


def test_init_from_a_run_without_a_tokenizer_entry_names_its_data_json(tmp_path, capsys):
    data, first = write_text_data(tmp_path / "d.tsv"), tmp_path / "first"
    common = ("--task", "text-classification", "--data", data, "--epochs", "1")
    assert _cli("train", *common, "--model.dim", "32", "--model.depth", "1", "--out", first) == 0
    record = json.loads((first / "data.json").read_text())
    del record["info"]["tokenizer"]
    (first / "data.json").write_text(json.dumps(record))
    out = tmp_path / "second"
    _expect_error(capsys, "train", *common, "--init", first, "--out", out,
                  match=f"{first / 'data.json'}: no 'info.tokenizer' entry")
    assert not out.exists()


def test_train_help_says_what_init_changes(capsys):
    with pytest.raises(SystemExit):
        _cli("train", "--help")
    text = " ".join(capsys.readouterr().out.split())
    for words in ("--init SOURCE", "BERT family", "its tokenizer", "lr 5e-5", "10% warm-up", "--train.freeze"):
        assert words in text, words


def test_a_sequence_classification_checkpoint_gives_its_encoder_and_pooler(tmp_path):
    """``BertForSequenceClassification`` saves under ``bert.``; its classifier is dropped for a new head."""
    source = tmp_path / "cls"
    config = transformers.BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=48, max_position_embeddings=64, num_labels=5)
    torch.manual_seed(1)
    hf = transformers.BertForSequenceClassification(config).eval()
    hf.save_pretrained(source)
    write_tokenizer(source)
    pretrained = open_text_checkpoint(source)
    assert pretrained.model_fields["pooling"] == "first" and pretrained.model_fields["pooler"]
    ids = _batch(pretrained.data_options["pretrained_tokenizer"])
    ours = _model(pretrained, num_classes=2)
    with torch.no_grad():
        out = hf.bert(input_ids=ids, attention_mask=(ids != 0).long())
        hidden, _ = ours.encoder(ids)
        torch.testing.assert_close(hidden, out.last_hidden_state, atol=1e-5, rtol=0)
        torch.testing.assert_close(torch.tanh(ours.pooler(hidden[:, 0])), out.pooler_output, atol=1e-5, rtol=0)
    assert ours.head.weight.shape == (2, 32)


@pytest.mark.slow
def test_fine_tuned_runs_export_and_join_ensembles(tmp_path, capsys):
    """export --onnx and deep ensembles take fine-tuned runs as they take any other (issue 23)."""
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    from attnlab.run import load_run

    source = save_bert(tmp_path / "bert", pooling="mean")
    data = write_text_data(tmp_path / "reviews.tsv")
    runs = [tmp_path / f"run{i}" for i in (0, 1)]
    for lr, out in zip(("1e-4", "1e-3"), runs):  # one split (seed), two members
        assert _cli("train", "--task", "text-classification", "--data", data, "--init", source, "--out", out,
                    "--epochs", "1", "--train.lr", lr, "--train.batch_size", "8", "--train.progress", "false") == 0
    capsys.readouterr()
    assert _cli("evaluate", *runs, "--json") == 0
    assert 0.0 <= json.loads(capsys.readouterr().out)["test"]["accuracy"] <= 1.0
    onnx_file = tmp_path / "tuned.onnx"
    assert _cli("export", runs[0], "--onnx", onnx_file) == 0
    _, model, record = load_run(runs[0])
    tokenizer = __import__("attnlab.data.tokenizers", fromlist=["load_tokenizer"]).load_tokenizer(record["info"]["tokenizer"])
    session = ort.InferenceSession(str(onnx_file))
    ids = _batch(tokenizer)  # (2, N), one row padded with the checkpoint's [PAD]
    got = session.run(None, {session.get_inputs()[0].name: ids.numpy()})[0]
    with torch.no_grad():
        want = model.eval()(ids).numpy()
    assert abs(got - want).max() < 1e-4


@pytest.mark.slow  # three training runs
def test_a_run_of_other_classes_starts_a_run_with_a_new_head(tmp_path, capsys):
    """Intermediate-task fine-tuning: a text run (two classes) starts one on three classes. The
    encoder is copied, the head is new and sized by the new data's classes (a run of the same
    classes keeps its own), as for the vision tasks; before, the head's shape was refused."""
    two = write_text_data(tmp_path / "two.tsv", rows=30)
    three = tmp_path / "three.tsv"
    texts = ["a good movie", "awful plot", "the film was fun", "not good", "very bad actor", "great fun"]
    three.write_text("".join(f"{'xyz'[i % 3]}\t{texts[i % 6]}\n" for i in range(30)))
    first, second, third = tmp_path / "first", tmp_path / "second", tmp_path / "third"
    common = ("--task", "text-classification", "--epochs", "1", "--train.device", "cpu", "--train.progress", "false",
              "--train.batch_size", "8")
    assert _cli("train", *common, "--data", two, "--model.dim", "16", "--model.conv_channels", "4", "--model.depth", "1", "--out", first) == 0
    frozen = ("--train.freeze", "encoder")  # the copied encoder stays as the first run left it
    assert _cli("train", *common, "--data", three, "--init", first, "--out", second, *frozen) == 0
    before, after = load_file(str(first / "model.safetensors")), load_file(str(second / "model.safetensors"))
    assert after["head.weight"].shape[0] == 3 and before["head.weight"].shape[0] == 2
    encoder = [name for name in before if name.startswith("encoder.")]
    assert encoder and all(torch.equal(before[name], after[name]) for name in encoder)
    assert json.loads((second / "data.json").read_text())["init"]["head"] == "new"
    assert _cli("train", *common, "--data", two, "--init", first, "--out", third, "--train.lr", "1e-9") == 0
    assert json.loads((third / "data.json").read_text())["init"]["head"] == "kept"
    kept = load_file(str(third / "model.safetensors"))["head.weight"]
    torch.testing.assert_close(kept, before["head.weight"], atol=1e-6, rtol=0)  # lr 1e-9: the head barely moves


@pytest.mark.slow
def test_predict_gives_the_probabilities_evaluate_scores_on_the_same_texts(tmp_path, capsys):
    """A fine-tuned (mean-pooled, padded in batches) run: predict reads each test line alone, evaluate
    in padded batches; the accuracy and the cross-entropy from predict's probabilities are evaluate's."""
    import math

    source = save_bert(tmp_path / "bert", pooling="mean")
    good, bad = ["good", "great", "fun", "film", "the", "plot"], ["bad", "awful", "not", "movie", "the", "actor"]
    folder = tmp_path / "data"
    folder.mkdir()
    for split, n in (("train", 48), ("dev", 12), ("test", 20)):
        rows = []
        for i in range(n):  # lengths 2..12 words: batches hold padding
            words = good if i % 2 else bad
            text = " ".join(words[(i * 5 + k) % len(words)] for k in range(2 + (i * 3) % 11))
            rows.append(f"{'pos' if i % 2 else 'neg, or worse'}\t{text}")
        (folder / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    run = tmp_path / "run"
    assert _cli("train", "--task", "text-classification", "--data", folder, "--init", source, "--out", run, "--epochs", "1",
                "--train.batch_size", "8", "--train.progress", "false") == 0
    capsys.readouterr()
    assert _cli("evaluate", run, "--json") == 0
    scored = json.loads(capsys.readouterr().out)["test"]
    assert _cli("predict", run, folder / "test.tsv", "--json", "--top-k", "5") == 0
    results = json.loads(capsys.readouterr().out)
    assert len(results) == 20 and all(len(r["top"]) == 2 for r in results)  # top-k past the classes: every class
    for r in results:
        probs = {t["class"]: t["score"] for t in r["top"]}
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-6) and r["class"] == max(probs, key=probs.get)
    accuracy = sum(r["class"] == r["label"] for r in results) / len(results)
    loss = -sum(math.log({t["class"]: t["score"] for t in r["top"]}[r["label"]]) for r in results) / len(results)
    assert accuracy == pytest.approx(scored["accuracy"], abs=1e-9)
    assert loss == pytest.approx(scored["loss"], abs=1e-5)
    assert {r["label"] for r in results} == {"pos", "neg, or worse"}  # a class name with a comma survives JSON
    assert _cli("predict", run, folder / "test.tsv") == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 20 and all(line.rsplit(": ", 1)[1].split(" (")[0] in ("pos", "neg, or worse") for line in lines)
