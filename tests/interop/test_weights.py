"""Sharded safetensors checkpoints (``model.safetensors.index.json``) load like single files; pickles never do."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from attnlab.errors import CheckpointError

transformers = pytest.importorskip("transformers")


def _bert(directory, **save):
    config = transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=48, max_position_embeddings=40, num_labels=3)
    torch.manual_seed(0)
    hf = transformers.BertForSequenceClassification(config).eval()
    hf.save_pretrained(directory, **save)
    return hf


def test_a_sharded_bert_matches_transformers(tmp_path):
    from attnlab.interop import load_hf_bert

    hf = _bert(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file() and not (tmp_path / "model.safetensors").exists()
    ours = load_hf_bert(tmp_path)
    ids = torch.randint(1, 99, (3, 11))
    ids[1, 6:] = 0
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), hf(input_ids=ids, attention_mask=(ids != 0).long()).logits,
                                   atol=1e-5, rtol=1e-5)


def test_init_reads_a_sharded_checkpoint_and_records_a_digest_of_its_shards(tmp_path):
    from attnlab.tasks.text import open_text_checkpoint
    from attnlab.models.registry import create_model
    from tests.tasks.bert_fixtures import save_bert

    single = save_bert(tmp_path / "single")
    sharded = tmp_path / "sharded"
    transformers.BertModel.from_pretrained(single).save_pretrained(sharded, max_shard_size="20KB")
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        (sharded / name).write_bytes((single / name).read_bytes())
    models = []
    for source in (single, sharded):
        pretrained = open_text_checkpoint(source)
        model = create_model("text-transformer", num_classes=2, **pretrained.model_fields)
        pretrained.load_weights(model)
        models.append(model)
    for (name, a), b in zip(models[0].state_dict().items(), models[1].state_dict().values()):
        if not name.startswith("head."):
            assert torch.equal(a, b), name
    record = open_text_checkpoint(sharded).record
    assert record["weights"] == "model.safetensors.index.json" and len(record["sha256"]) == 64
    shard = sorted(sharded.glob("model-*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(CheckpointError, match=f"{shard.name}: missing"):
        open_text_checkpoint(sharded)


def test_sharded_gpt2_and_vit_open_for_init(tmp_path):
    from attnlab.interop.gpt2 import open_gpt2_checkpoint
    from attnlab.tasks.vision import open_vit_checkpoint

    gpt = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=50, n_positions=16, n_embd=32, n_layer=2, n_head=4))
    gpt.save_pretrained(tmp_path / "gpt2", max_shard_size="20KB")
    checkpoint = open_gpt2_checkpoint(tmp_path / "gpt2")
    from attnlab.models import create_model

    model = create_model("gpt-lm", **checkpoint.model_fields())
    checkpoint.load_into(model)
    torch.testing.assert_close(model.blocks[1].mlp.fc2.weight, gpt.transformer.h[1].mlp.c_proj.weight.t(), atol=0, rtol=0)
    vit = transformers.ViTModel(transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                       intermediate_size=64, image_size=8, patch_size=2, num_channels=1),
                                add_pooling_layer=False)
    vit.save_pretrained(tmp_path / "vit", max_shard_size="20KB")
    pretrained = open_vit_checkpoint(tmp_path / "vit")
    model = create_model("vit-tiny", image_size=(8, 8), in_channels=1, num_classes=3, **pretrained.model_fields)
    pretrained.load_weights(model)
    saved = {}
    for shard in (tmp_path / "vit").glob("model-*.safetensors"):
        saved.update(load_file(shard))
    torch.testing.assert_close(model.blocks[1].attn.q_proj.weight, saved["encoder.layer.1.attention.attention.query.weight"],
                               atol=0, rtol=0)


def test_the_loaders_refuse_a_pickle_by_name(tmp_path):
    from attnlab.interop import load_hf_bert

    _bert(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    (tmp_path / "pytorch_model.bin").write_bytes(b"not to be unpickled")
    with pytest.raises(CheckpointError, match="pytorch_model.bin: pickled weights are refused"):
        load_hf_bert(tmp_path)
