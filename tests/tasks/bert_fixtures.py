"""Small random BERT checkpoints, saved as transformers' ``save_pretrained`` writes them, with a WordPiece tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import torch

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["the", "a", "movie", "film", "was", "is", "good", "great", "bad", "awful", "plot", "actor", "fun", "bor",
         "##ing", "##ed", "##s", "not", "very", "!", ".", ","]
LETTERS = [chr(c) for c in range(ord("a"), ord("z") + 1)]
VOCAB = list(dict.fromkeys(SPECIALS + WORDS + LETTERS + ["##" + c for c in LETTERS]))


def write_tokenizer(directory: Path, *, vocab: list[str] = VOCAB, lowercase: bool = True, tokenizer_json: bool = True) -> None:
    from tokenizers.implementations import BertWordPieceTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    if tokenizer_json:
        BertWordPieceTokenizer(str(directory / "vocab.txt"), lowercase=lowercase).save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": lowercase, "model_max_length": 64}))


def save_bert(directory: Path, *, pooling: str | None = None, seed: int = 0, vocab_size: int | None = None,
              with_pooler: bool = True, **overrides) -> Path:
    """A random ``BertModel`` (hidden 32, 2 layers, 4 heads) + tokenizer in ``directory``;
    ``pooling`` "mean" / "cls" adds a sentence-transformers ``1_Pooling/config.json``."""
    import transformers

    config = transformers.BertConfig(vocab_size=vocab_size or len(VOCAB), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=48, max_position_embeddings=64,
                                     **overrides)
    torch.manual_seed(seed)
    transformers.BertModel(config, add_pooling_layer=with_pooler).eval().save_pretrained(directory)
    write_tokenizer(directory)
    if pooling is not None:
        (directory / "1_Pooling").mkdir()
        (directory / "1_Pooling" / "config.json").write_text(json.dumps(
            {"word_embedding_dimension": 32, "pooling_mode_cls_token": pooling == "cls",
             "pooling_mode_mean_tokens": pooling == "mean", "pooling_mode_max_tokens": False}))
    return directory


def write_text_data(path: Path, rows: int = 64) -> Path:
    good = ["a good movie", "great fun", "the film was great", "very good actor", "fun plot"]
    bad = ["a bad movie", "awful plot", "the film was boring", "not good", "very bad actor"]
    lines = []
    for i in range(rows):
        lines.append(f"pos\t{good[i % 5]} !" if i % 2 == 0 else f"neg\t{bad[i % 5]} .")
    path.write_text("\n".join(lines) + "\n")
    return path
