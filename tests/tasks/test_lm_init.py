"""``--init``: a GPT-2 checkpoint (or an earlier gpt-lm run) continued on a text file, with its own byte-level BPE."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import pytest
import torch

from attnlab.models.registry import create_model
from attnlab.tasks.language_model import open_lm_checkpoint

transformers = pytest.importorskip("transformers")

LINES = ["First Citizen: Before we proceed any further, hear me speak.", "All: Speak, speak.",
         "You are all resolved rather to die than to famish?", "Café naïve — ünïcödé 😀 résumé."]
STRINGS = ["Hello world", " Speak, speak!\nAll: die", "Café 😀 naïve", "<|endoftext|>First", "zebra QX unseen"]
EOT = "<|endoftext|>"


def _train_bpe():
    from tokenizers import ByteLevelBPETokenizer

    tok = ByteLevelBPETokenizer(add_prefix_space=False)  # GPT-2's: byte alphabet, no prefix space
    tok.train_from_iterator(LINES * 5, vocab_size=300, min_frequency=1, special_tokens=[EOT], show_progress=False)
    return tok


def save_gpt2(directory: Path, *, vocab_size: int | None = None, tokenizer_json: bool = True, seed: int = 0) -> Path:
    """A random ``GPT2LMHeadModel`` (32 wide, 2 layers, 32 positions) and a small byte-level BPE
    (``tokenizer.json``, or GPT-2's original ``vocab.json`` + ``merges.txt``)."""
    tok = _train_bpe()
    config = transformers.GPT2Config(vocab_size=vocab_size or tok.get_vocab_size(), n_positions=32, n_embd=32, n_layer=2,
                                     n_head=4, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(seed)
    transformers.GPT2LMHeadModel(config).eval().save_pretrained(directory)
    if tokenizer_json:
        tok.save(str(directory / "tokenizer.json"))
    else:
        tok.save_model(str(directory))
    return directory


def write_text(path: Path, repeat: int = 12) -> Path:
    path.write_text("\n".join(LINES * repeat) + "\n", encoding="utf-8")
    return path


def _cli(*args):
    from attnlab.cli import main

    return main([*map(str, args)])


FAST = ("--train.progress", "false", "--train.device", "cpu")


@pytest.mark.parametrize("tokenizer_json", [True, False])
def test_logits_and_tokenizer_match_transformers(tmp_path, tokenizer_json):
    source = save_gpt2(tmp_path / "gpt2", tokenizer_json=tokenizer_json)
    pretrained = open_lm_checkpoint(source)
    tokenizer = pretrained.data_options["pretrained_tokenizer"]
    theirs = transformers.GPT2TokenizerFast.from_pretrained(str(source))
    for text in STRINGS:  # the same ids as transformers' GPT-2 tokenizer: no prefix space, no BOS
        assert tokenizer.encode(text) == theirs(text)["input_ids"], text
    assert tokenizer.encode(EOT) == [tokenizer.eos_id] == [theirs.eos_token_id]
    assert pretrained.record["tokenizer"] == ("tokenizer.json" if tokenizer_json else "vocab.json + merges.txt")
    assert pretrained.data_options["context_length"] == 32
    model = create_model("gpt-lm", **pretrained.model_fields)
    pretrained.load_weights(model)
    hf = transformers.GPT2LMHeadModel.from_pretrained(source).eval()
    ids = torch.tensor([tokenizer.encode(" ".join(LINES))[:24], tokenizer.encode(" ".join(LINES[::-1]))[:24]])  # (B, N)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(ids), hf(input_ids=ids).logits, atol=1e-5, rtol=0)


def test_the_saved_bpe_reloads_through_load_tokenizer(tmp_path):
    from attnlab.data.tokenizers import load_tokenizer

    tokenizer = open_lm_checkpoint(save_gpt2(tmp_path / "gpt2")).data_options["pretrained_tokenizer"]
    again = load_tokenizer(json.loads(json.dumps(tokenizer.to_dict())))  # as data.json keeps it
    assert type(again) is type(tokenizer) and again.eos_id == tokenizer.eos_id
    for text in STRINGS:
        assert again.encode(text) == tokenizer.encode(text), text


def test_byte_level_decoding_keeps_characters_whole(tmp_path):
    tokenizer = open_lm_checkpoint(save_gpt2(tmp_path / "gpt2")).data_options["pretrained_tokenizer"]
    text = "naïve 😀 and 🦜 (a byte pair never seen)"
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text  # the emoji's four bytes are several tokens
    assert "\ufffd" in "".join(tokenizer.token_strings(ids))  # ... which alone decode to nothing whole


def test_train_then_evaluate_generate_resume_without_source(tmp_path, capsys):
    from attnlab.data.bpe import CheckpointBPETokenizer
    from attnlab.models.generation import generate
    from attnlab.run import load_run
    from attnlab.tasks.language_model import generate_text

    source = save_gpt2(tmp_path / "gpt2")
    data = write_text(tmp_path / "corpus.txt")
    out = tmp_path / "run"
    assert _cli("train", "--task", "language-model", "--data", data, "--init", source, "--out", out, "--epochs", "1",
                *FAST) == 0
    config, record = (out / "config.yaml").read_text(), json.loads((out / "data.json").read_text())
    assert f"init: {source}" in config
    for setting in ("lr: 5.0e-05", "warmup_ratio: 0.1", "batch_size: 8", "weight_decay: 0.01", "dropout: 0.1"):
        assert setting in config, setting  # fine-tuning defaults and the checkpoint's dropout
    assert record["init"]["sha256"] == hashlib.sha256((source / "model.safetensors").read_bytes()).hexdigest()
    assert record["info"]["tokenizer"]["kind"] == "checkpoint-bpe" and record["info"]["block_size"] == 32
    for name in ("tokenizer.json", "init/tokenizer.json", "init/config.json"):
        assert (out / name).is_file(), name
    shutil.move(source, tmp_path / "moved")  # the run no longer needs SOURCE
    capsys.readouterr()
    assert _cli("evaluate", out, "--json", "--device", "cpu") == 0
    assert json.loads(capsys.readouterr().out)["test"]["loss"] > 0
    assert _cli("generate", out, "--prompt", "Café", "--max-new-tokens", "6", "--seed", "0") == 0
    assert capsys.readouterr().out.startswith("Café")
    _, model, record = load_run(out)
    theirs = transformers.GPT2TokenizerFast(tokenizer_file=str(out / "init" / "tokenizer.json"))
    prompt = theirs("Speak, ")["input_ids"]
    greedy = generate(model, torch.tensor([prompt]), max_new_tokens=10, temperature=0)[0, len(prompt):].tolist()
    text = generate_text(model, record, "Speak, ", max_new_tokens=10, temperature=0)
    eos = CheckpointBPETokenizer.from_dict(record["info"]["tokenizer"]).eos_id
    if eos in greedy:
        greedy = greedy[: greedy.index(eos) + 1]  # generation stops at <|endoftext|>
    assert text == theirs.decode(greedy, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    assert _cli("train", "--resume", out, "--epochs", "2") == 0  # one more epoch, SOURCE still gone
    assert json.loads((out / "metrics.json").read_text())["epochs_run"] == 2


def test_vocab_and_merges_only_travel_with_the_run(tmp_path, capsys):
    source = save_gpt2(tmp_path / "gpt2", tokenizer_json=False)
    data = write_text(tmp_path / "corpus.txt")
    out = tmp_path / "run"
    assert _cli("train", "--task", "language-model", "--data", data, "--init", source, "--out", out, "--epochs", "1",
                "--data.block_size", "16", *FAST) == 0
    assert (out / "init" / "vocab.json").is_file() and (out / "init" / "merges.txt").is_file()
    record = json.loads((out / "data.json").read_text())
    assert record["info"]["block_size"] == 16 and record["info"]["context_length"] == 32
    assert "max_length: 32" in (out / "config.yaml").read_text()  # the whole position table is kept
    shutil.rmtree(source)
    capsys.readouterr()
    assert _cli("evaluate", out, "--json") == 0


def test_init_from_a_gpt_lm_run_keeps_its_tokenizer(tmp_path, capsys):
    from safetensors.torch import load_file

    data = write_text(tmp_path / "corpus.txt")
    first, second = tmp_path / "first", tmp_path / "second"
    assert _cli("train", "--task", "language-model", "--data", data, "--out", first, "--epochs", "1", "--model.dim", "32",
                "--model.depth", "1", "--data.block_size", "16", "--data.samples_per_epoch", "24", *FAST) == 0
    assert _cli("train", "--task", "language-model", "--data", data, "--init", first, "--out", second, "--epochs", "1",
                "--data.block_size", "8", "--data.samples_per_epoch", "8", *FAST) == 0
    one, two = (json.loads((d / "data.json").read_text()) for d in (first, second))
    assert one["info"]["tokenizer"] == two["info"]["tokenizer"] and one["info"]["tokenizer"]["kind"] == "char"
    assert two["init"]["kind"] == "run" and two["info"]["block_size"] == 8  # shorter windows, same positions
    assert load_file(str(second / "model.safetensors"))["pos_embed.weight"].shape == (16, 32)
    shutil.rmtree(first)
    capsys.readouterr()
    assert _cli("evaluate", second, "--json") == 0
    assert _cli("generate", second, "--prompt", "All:", "--max-new-tokens", "5", "--seed", "1") == 0


def test_init_from_a_fine_tuned_gpt2_run(tmp_path):
    source = save_gpt2(tmp_path / "gpt2")
    data = write_text(tmp_path / "corpus.txt", repeat=6)
    first, second = tmp_path / "first", tmp_path / "second"
    common = ("--task", "language-model", "--data", data, "--epochs", "1", "--data.samples_per_epoch", "8", *FAST)
    assert _cli("train", *common, "--init", source, "--out", first) == 0
    assert _cli("train", *common, "--init", first, "--out", second) == 0
    one, two = (json.loads((d / "data.json").read_text()) for d in (first, second))
    assert two["info"]["tokenizer"] == one["info"]["tokenizer"] and two["info"]["context_length"] == 32


def _expect_error(capsys, *args, match):
    capsys.readouterr()  # what building the fixture printed
    assert _cli(*args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and match in err, err


@pytest.mark.parametrize("case", ["missing", "not-a-checkpoint", "pickle-only", "model-type", "vocabulary", "no-tokenizer",
                                  "block-size", "tokenizer-option"])
def test_bad_sources_are_one_line_and_write_nothing(tmp_path, capsys, case):
    data = write_text(tmp_path / "corpus.txt")
    source = tmp_path / "gpt2"
    extra: tuple[str, ...] = ()
    if case == "missing":
        match = f"{source}: checkpoint not found"
    elif case == "not-a-checkpoint":
        source.mkdir()
        (source / "notes.txt").write_text("hello")
        match = f"{source / 'config.json'}: missing"
    elif case == "pickle-only":
        save_gpt2(source)
        (source / "model.safetensors").rename(source / "pytorch_model.bin")  # never unpickled
        match = f"{source / 'pytorch_model.bin'}: pickled weights are refused"
    elif case == "model-type":
        transformers.BertModel(transformers.BertConfig(vocab_size=300, hidden_size=16, num_hidden_layers=1,
                                                       num_attention_heads=2, intermediate_size=16)).save_pretrained(source)
        _train_bpe().save(str(source / "tokenizer.json"))
        match = f"{source / 'config.json'}: model_type 'bert' is not supported"
    elif case == "no-tokenizer":
        save_gpt2(source)
        (source / "tokenizer.json").unlink()
        match = f"{source}: no tokenizer (tokenizer.json, or vocab.json and merges.txt)"
    elif case == "block-size":
        save_gpt2(source)
        extra = ("--data.block_size", "64")
        match = "--data.block_size must be in [1, 32] (the checkpoint's positions), got 64"
    elif case == "tokenizer-option":
        save_gpt2(source)
        extra = ("--data.tokenizer", "bpe")
        match = "do not apply with --init"
    else:
        save_gpt2(source, vocab_size=100)  # the table has 100 rows, the tokenizer 300 tokens
        match = f"{source / 'tokenizer.json'}: the vocabulary has 300 tokens but the embedding table 100 rows"
    out = tmp_path / "run"
    _expect_error(capsys, "train", "--task", "language-model", "--data", data, "--init", source, "--out", out, *extra,
                  match=match)
    assert not out.exists()


def test_a_padded_embedding_table_only_warns(tmp_path, caplog):
    source = save_gpt2(tmp_path / "gpt2", vocab_size=320)  # rounded up, as GPT-2 checkpoints often are
    with caplog.at_level(logging.WARNING):
        pretrained = open_lm_checkpoint(source)
    assert "300 tokens for an embedding table of 320 rows" in caplog.text
    assert pretrained.model_fields["vocab_size"] == 320


def test_train_help_says_what_init_changes(capsys):
    with pytest.raises(SystemExit):
        _cli("train", "--help")
    text = " ".join(capsys.readouterr().out.split()).replace("- ", "-")  # argparse may wrap a line after a hyphen
    for words in ("language-model: SOURCE is a Hugging Face GPT-2", "byte-level BPE", "n_positions", "lr 5e-5"):
        assert words in text, words
