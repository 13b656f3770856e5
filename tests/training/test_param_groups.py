"""Fine-tuning controls: frozen parameters, layer-wise lr decay and the head lr, checked by hand."""

from __future__ import annotations

import pytest
import torch

from attnlab.data.text import TokenClassificationDataset, classification_collate
from attnlab.errors import ConfigError
from attnlab.models.registry import create_model
from attnlab.training import ClassificationObjective, TrainConfig, Trainer
from attnlab.training.param_groups import frozen_names, parse_freeze


def _model(depth: int = 3):
    torch.manual_seed(0)
    return create_model("text-transformer", vocab_size=30, num_classes=2, max_length=16, dim=16, depth=depth, num_heads=2,
                        pooler=True, dropout=0.0, embed_dropout=0.0)


def _trainer(model, **train):
    g = torch.Generator().manual_seed(0)
    ids = [torch.randint(4, 30, (6,), generator=g).tolist() for _ in range(16)]
    data = TokenClassificationDataset(ids, [i % 2 for i in range(16)])
    config = TrainConfig(epochs=1, batch_size=8, device="cpu", progress=False, warmup_epochs=0, **train)
    return Trainer(model, ClassificationObjective(2), data, None, config, collate_fn=classification_collate)


def _lr_of(trainer) -> dict[str, float]:
    by_id = {id(p): name for name, p in trainer.model.named_parameters()}
    return {by_id[id(p)]: group["lr"] for group in trainer.optimizer.param_groups for p in group["params"]}


def test_layer_decay_and_head_lr_by_hand():
    lr, decay, head = 1e-3, 0.5, 1e-2
    trainer = _trainer(_model(depth=3), lr=lr, layer_decay=decay, head_lr=head)
    lrs = _lr_of(trainer)
    embeddings = [n for n in lrs if n.startswith(("encoder.token_embed.", "encoder.pos_embed."))]
    assert len(embeddings) == 2
    for name in embeddings:  # embeddings: decay ** (depth + 1)
        assert lrs[name] == pytest.approx(lr * decay ** 4)
    for i in range(3):  # block i: decay ** (depth - i)
        assert lrs[f"encoder.blocks.{i}.attn.q_proj.weight"] == pytest.approx(lr * decay ** (3 - i))
        assert lrs[f"encoder.blocks.{i}.norm1.bias"] == pytest.approx(lr * decay ** (3 - i))
    for name in ("head.weight", "head.bias", "pooler.weight", "encoder.norm.weight"):  # the top group
        assert lrs[name] == pytest.approx(head)
    assert len(lrs) == sum(1 for _ in trainer.model.parameters())
    wd = {id(p): g["weight_decay"] for g in trainer.optimizer.param_groups for p in g["params"]}
    params = dict(trainer.model.named_parameters())
    assert wd[id(params["encoder.blocks.0.attn.q_proj.weight"])] == trainer.config.weight_decay
    assert wd[id(params["encoder.blocks.0.attn.q_proj.bias"])] == 0.0 and wd[id(params["encoder.token_embed.weight"])] == 0.0


def test_without_fine_tuning_controls_the_two_groups_stay():
    trainer = _trainer(_model())
    assert [g["weight_decay"] for g in trainer.optimizer.param_groups] == [trainer.config.weight_decay, 0.0]
    assert {g["lr"] for g in trainer.optimizer.param_groups} == {trainer.config.lr}


def test_frozen_parameters_do_not_move():
    model = _model()
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    trainer = _trainer(model, freeze="embeddings, blocks.0-1", lr=1e-2)
    trainer.fit()
    frozen = trainer.frozen
    assert "encoder.token_embed.weight" in frozen and "encoder.blocks.1.mlp.fc2.weight" in frozen
    assert not any(n.startswith("encoder.blocks.2.") for n in frozen)
    in_optimizer = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    after = dict(model.named_parameters())
    for name, p in after.items():
        if name in frozen:
            assert not p.requires_grad and id(p) not in in_optimizer
            assert torch.equal(p.detach(), before[name]), name
    assert not torch.equal(after["head.weight"].detach(), before["head.weight"])
    assert not torch.equal(after["encoder.blocks.2.attn.q_proj.weight"].detach(), before["encoder.blocks.2.attn.q_proj.weight"])


def test_freeze_patterns():
    model = _model()
    assert parse_freeze(" embeddings,, blocks.0 ") == ["embeddings", "blocks.0"]
    assert frozen_names(model, ["pooler"]) == {"pooler.weight", "pooler.bias"}
    assert frozen_names(model, ["encoder.blocks.*.norm1.*"]) == {f"encoder.blocks.{i}.norm1.{k}" for i in range(3)
                                                               for k in ("weight", "bias")}
    assert frozen_names(model, ["head"]) >= {"head.weight", "pooler.weight"}
    with pytest.raises(ConfigError, match="blocks are numbered 0..2"):
        frozen_names(model, ["blocks.1-3"])
    with pytest.raises(ConfigError, match=r"blocks.1-0: the range is reversed \(write blocks.0-1\)"):
        frozen_names(model, ["blocks.1-0"])
    with pytest.raises(ConfigError, match="matches no parameter"):
        frozen_names(model, ["decoder"])
    with pytest.raises(ConfigError, match="nothing to train"):
        _trainer(model, freeze="*")
    with pytest.raises(ConfigError, match="layer_decay must be in"):
        TrainConfig(layer_decay=1.5)


def test_models_without_layer_ids_refuse_layer_decay():
    model = torch.nn.Sequential(torch.nn.Embedding(30, 4), torch.nn.Flatten(), torch.nn.Linear(24, 2))
    with pytest.raises(ConfigError, match="declares its layers"):
        _trainer(model, layer_decay=0.8)
    assert frozen_names(model, ["0"]) == {"0.weight"}  # globs work on any model


def test_resume_with_other_groups_is_a_clear_error(tmp_path):
    from attnlab.errors import CheckpointError

    trainer = _trainer(_model())
    trainer.run_dir = tmp_path
    trainer.save()
    other = _trainer(_model(), layer_decay=0.5)
    with pytest.raises(CheckpointError, match="does not fit this run's parameter groups"):
        other.resume(tmp_path)


@pytest.mark.parametrize("name", ["vit-tiny", "gpt-lm"])
def test_vit_and_language_model_declare_their_layers(name):
    """--train.layer_decay / head_lr / freeze by layer on a ViT and a GPT: the groups by hand."""
    from attnlab.training.param_groups import parameter_groups

    if name == "vit-tiny":
        model = create_model(name, image_size=[8, 8], in_channels=1, num_classes=3, depth=3, stem_channels=8)
        embeddings, top = ("cls_token", "pos_embed", "patch_embed.", "stem."), ("norm.", "head.")
    else:
        model = create_model(name, vocab_size=40, depth=3, dim=16, num_heads=2)
        embeddings, top = ("token_embed.weight", "pos_embed."), ("norm.",)
    lr, decay, head = 1e-3, 0.5, 1e-2
    groups = parameter_groups(model, lr=lr, weight_decay=0.01, layer_decay=decay, head_lr=head)
    lrs = {id(p): g["lr"] for g in groups for p in g["params"]}
    seen = set()
    for param_name, p in model.named_parameters():
        if param_name.startswith("blocks."):
            i = int(param_name.split(".")[1])
            expected = lr * decay ** (3 - i)
        elif param_name.startswith(top):
            expected = head
        else:
            assert param_name.startswith(embeddings), param_name
            expected = lr * decay ** 4
        assert lrs[id(p)] == pytest.approx(expected), param_name
        seen.add(param_name.split(".")[0])
    assert {"blocks", "norm"} <= seen and len(lrs) == sum(1 for _ in model.parameters())
    frozen = frozen_names(model, ["embeddings", "blocks.0-1"])
    assert frozen == {n for n, _ in model.named_parameters() if n.startswith(embeddings + ("blocks.0.", "blocks.1."))}
    assert frozen_names(model, ["head"]) == {n for n, _ in model.named_parameters() if n.startswith(top)}
