"""Image classification task families: digits (built in), mnist (.npz), images (a folder).

Models: ``vit-tiny`` / ``vit-small`` (Dosovitskiy et al. 2021, `attnlab.models.vit`) and
``hybrid-cnn`` (`attnlab.models.hybrid`). ``images`` with ``--data.target multilabel`` reads
a CSV of label columns instead (`attnlab.data.multilabel_images`): sigmoid + BCE, and predict
returns the labels above the threshold chosen on validation (`attnlab.tasks.targets`).

``--init SOURCE`` fine-tunes a ViT instead: a Hugging Face ViT ``save_pretrained`` directory
(`open_vit_checkpoint`) or an earlier attnlab run of a ViT (`vit_from_run`). The position table
is resampled to the new patch grid (`attnlab.layers.positional.resample_abs_pos_embed`, as timm
does; Dosovitskiy et al. 2021 §3.2), the first convolution adapted to the data's channels
(timm's ``adapt_input_conv``), the head is new (a run of the same task and classes keeps its own), and the
training defaults become fine-tuning ones (``FINETUNE_TRAIN``). A Hugging Face ViT's
``preprocessor_config.json`` sets the data's normalisation (its mean and std, as timm's
``resolve_data_config`` and HF's image processor would), not the training split's statistics.
"""

from __future__ import annotations

import logging
import math
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from attnlab.data.images import PREDICT_SUFFIXES
from attnlab.data.base import TaskData, call_with_options, path_loader
from attnlab.data.shard_patterns import is_shard_pattern
from attnlab.data.mnist import load_mnist_task
from attnlab.data.vision import load_digits_task, load_image_folder_task
from attnlab.errors import CheckpointError
from attnlab.tasks.base import InitSupport, Pretrained, RunVocabulary, TaskSpec, run_targets
from attnlab.tasks.targets import (
    describe_output,
    describe_truth,
    read_outputs,
    target_of,
    task_record,
)

__all__ = ["SPECS", "image_fields", "image_positions", "predict_images", "adapt_input_conv", "open_vit_checkpoint", "reopen_vit_checkpoint",
           "vit_from_run", "FINETUNE_TRAIN"]

logger = logging.getLogger(__name__)

MODELS = ("vit-tiny", "vit-small", "hybrid-cnn")


def image_fields(task_data) -> dict[str, Any]:
    c, h, w = task_data.input_shape
    return {"num_classes": task_data.num_classes, "image_size": (h, w), "in_channels": c}


def _report(model: nn.Module, task_data, count: int) -> list:
    from attnlab.explain.examples import image_example, vision_examples

    if task_data.target == "class":
        return vision_examples(model, task_data, count)
    record, examples = task_record(task_data), []
    for i in range(min(count, len(task_data.test))):
        x, y = task_data.test[i]
        example = image_example(model, x, class_names=task_data.class_names, spec=task_data.spec, title=f"test #{i}")
        examples.append(_read_as_target(example, model, x, record, describe_truth(record, y)))
    return examples


def _read_as_target(example: Any, model: nn.Module, x: Tensor, record: dict[str, Any], label: str | None = None) -> Any:
    """An example's prediction (and label) as the run's target kind reads them (multi-label: the label set)."""
    if target_of(record) == "class":
        return example
    with torch.no_grad():
        logits = model(x[None].to(next(model.parameters()).device)).float()[0]  # (K,)
    example.prediction, example.label = describe_output(record, logits), label
    return example


def predict_images(model: nn.Module, record: dict[str, Any], inputs: list[str], top_k: int) -> list[dict[str, Any]]:
    from attnlab.data.base import ImageSpec
    from attnlab.data.vision import prepare_image

    spec = ImageSpec.from_dict(record["spec"])
    results = []
    for item in inputs:
        x = prepare_image(item, spec)[None].to(next(model.parameters()).device)
        with torch.no_grad():
            logits = model(x).float()  # (1, K)
        results.append({"input": item, **read_outputs(record, logits, top_k)[0]})  # a class, or a label set
    return results


def explain_image(model: nn.Module, record: dict[str, Any], input_path: str):
    from pathlib import Path

    from attnlab.data.base import ImageSpec
    from attnlab.data.vision import prepare_image
    from attnlab.explain.examples import image_example

    spec = ImageSpec.from_dict(record["spec"])
    x = prepare_image(input_path, spec)
    example = image_example(model, x, class_names=record["class_names"], spec=spec, title=Path(input_path).name)
    example.item = (x, None)  # what the relevance methods attribute (image_positions)
    return _read_as_target(example, model, x, record)


def load_digits(data: str | None, *, seed: int, **options: Any) -> TaskData:
    if data is not None:
        logger.warning("task 'digits' uses scikit-learn's bundled digits; ignoring --data %s", data)
    return call_with_options(load_digits_task, "digits", options, seed=seed)


load_mnist = path_loader("mnist", load_mnist_task, "an .npz with x_train, y_train, x_test, y_test")
def _image_folder_vocabulary(record: dict[str, Any]) -> dict[str, Any]:
    """A finished image-folder or label-CSV run's classes (labels) and image spec (size, channels,
    training statistics) as loader options: other data is labelled and normalised as the run was
    ({} for records without them)."""
    if (record.get("target") or "class") not in ("class", "multilabel") or not isinstance(record.get("spec"), dict):
        return {}
    return {**run_targets(record), "spec": dict(record["spec"])}


load_images = path_loader("images", load_image_folder_task, "a folder of class folders: root/<class>/*.png", arg="root",
                          pattern=is_shard_pattern)  # 'DIR/train-{000000..000009}.tar': shards that attnlab shard wrote

# --- --init SOURCE: fine-tuning a ViT ------------------------------------------------------

_NEW_PARAMETERS = ("head.",)  # the classifier is sized by the new data's classes


def adapt_input_conv(weight: Tensor, in_channels: int) -> Tensor:
    """A first convolution's weight for another number of input channels, as timm's
    ``adapt_input_conv``: one channel sums the source channels (a grey image seen as R = G = B
    gives the RGB model's response); more channels repeat the source ones cyclically, scaled
    by source / new channels. Computed in float32 at least, returned in ``weight``'s dtype.

    Shape: (O, I, kh, kw) -> (O, in_channels, kh, kw).
    """
    source = weight.shape[1]
    if source == in_channels:
        return weight
    work = weight.to(torch.promote_types(weight.dtype, torch.float32))
    if in_channels == 1:
        work = work.sum(dim=1, keepdim=True)  # (O, 1, kh, kw)
    else:
        work = work.repeat(1, math.ceil(in_channels / source), 1, 1)[:, :in_channels] * (source / in_channels)
    return work.to(weight.dtype)


def _fit_to_model(tensors: dict[str, Tensor], model: nn.Module, source_grid: tuple[int, int],
                  record: dict[str, Any]) -> dict[str, Tensor]:
    """The source tensors (attnlab names) reshaped for ``model``: the position table resampled to
    its patch grid, the first convolution to its input channels. Writes both into ``record``."""
    from attnlab.layers.positional import resample_abs_pos_embed
    from attnlab.models.vit import VisionTransformer

    if not isinstance(model, VisionTransformer):  # hybrid-cnn: copied as it is (a new head)
        return tensors
    tensors = dict(tensors)
    config = model.config
    record["source_grid"], record["grid"] = list(source_grid), list(model.patch_grid)
    first = "stem.0.weight" if config.stem_channels else "patch_embed.weight"
    if first in tensors and tensors[first].dim() == 4 and tensors[first].shape[1] != config.in_channels:
        record["in_channels"] = [int(tensors[first].shape[1]), config.in_channels]
        tensors[first] = adapt_input_conv(tensors[first], config.in_channels)
    table = tensors.get("pos_embed")
    prefix = model.num_prefix_tokens
    if table is not None and table.dim() == 3 and table.shape[1] == prefix + source_grid[0] * source_grid[1]:
        tensors["pos_embed"] = resample_abs_pos_embed(table, model.patch_grid, source_grid, num_prefix_tokens=prefix)
    return tensors  # anything else of another shape is named by copy_weights


def _positive_int(config: dict[str, Any], key: str, path: Path) -> int:
    value = config.get(key)
    if isinstance(value, (list, tuple)) and len(value) == 2 and value[0] == value[1]:
        value = value[0]
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise CheckpointError(f"{path}: {key} is missing or not a positive integer (got {value!r})")
    return value


def _hf_vit_renames(prefix: str, depth: int) -> dict[str, str]:
    """attnlab ``VisionTransformer`` parameter -> Hugging Face ViT tensor (encoder only, no head)."""
    emb = f"{prefix}embeddings."
    renames = {"cls_token": emb + "cls_token", "pos_embed": emb + "position_embeddings",
               "patch_embed.weight": emb + "patch_embeddings.projection.weight",
               "patch_embed.bias": emb + "patch_embeddings.projection.bias",
               "norm.weight": f"{prefix}layernorm.weight", "norm.bias": f"{prefix}layernorm.bias"}
    parts = {"norm1": "layernorm_before", "norm2": "layernorm_after", "attn.q_proj": "attention.attention.query",
             "attn.k_proj": "attention.attention.key", "attn.v_proj": "attention.attention.value",
             "attn.out_proj": "attention.output.dense", "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense"}
    for i in range(depth):
        for ours, theirs in parts.items():
            for kind in ("weight", "bias"):
                renames[f"blocks.{i}.{ours}.{kind}"] = f"{prefix}encoder.layer.{i}.{theirs}.{kind}"
    return renames


def open_vit_checkpoint(source: Path) -> Pretrained:
    """``--init SOURCE`` for images: check a Hugging Face ViT directory (``ViTModel`` or
    ``ViTForImageClassification``; model.safetensors or its shards, never pickle) before anything is written."""
    from attnlab.data.wordpiece import read_json_object
    from attnlab.interop.hf import HIDDEN_ACTIVATIONS, check_vit_variant, hidden_activation, read_image_normalisation
    from attnlab.interop.weights import find_weights, read_weights, weight_names, weights_sha256

    source = Path(source)
    if not source.exists():
        raise CheckpointError(f"{source}: checkpoint not found (not an attnlab run directory, nor a Hugging Face ViT)")
    if not source.is_dir():
        raise CheckpointError(f"{source}: not an attnlab run directory, nor a Hugging Face save_pretrained folder")
    config_path = source / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{config_path}: missing; {source} is not an attnlab run directory, nor a Hugging Face "
                              "checkpoint")
    weights = find_weights(source)
    config = read_json_object(config_path)
    if config.get("model_type") != "vit":
        raise CheckpointError(f"{config_path}: model_type {config.get('model_type')!r} is not supported "
                              "(--init for images reads a Hugging Face ViT: model_type 'vit', or an attnlab run)")
    sizes = {key: _positive_int(config, key, config_path) for key in
             ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "image_size", "patch_size")}
    channels = _positive_int({"num_channels": config.get("num_channels", 3)}, "num_channels", config_path)
    activation = hidden_activation(config_path, config, HIDDEN_ACTIVATIONS)  # gelu_new -> gelu_tanh, as for BERT
    check_vit_variant(config_path, config)
    if sizes["image_size"] % sizes["patch_size"] or sizes["hidden_size"] % sizes["num_attention_heads"]:
        raise CheckpointError(f"{config_path}: image_size must be divisible by patch_size and hidden_size by "
                              "num_attention_heads")
    names = weight_names(weights)
    prefix = "vit." if any(name.startswith("vit.") for name in names) else ""
    renames = _hf_vit_renames(prefix, sizes["num_hidden_layers"])
    missing = [theirs for theirs in renames.values() if theirs not in names]
    if missing:
        raise CheckpointError(f"{weights}: tensor {missing[0]!r} is missing"
                              f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}: not a ViT encoder")
    grid = sizes["image_size"] // sizes["patch_size"]
    normalisation = read_image_normalisation(source)  # the processor's mean / std, pixels in [0, 1]
    record: dict[str, Any] = {"source": str(source.resolve()), "kind": "huggingface", "model_type": "vit",
                              "weights": weights.name, "sha256": weights_sha256(weights), "source_channels": channels}
    if normalisation is not None:
        record["normalisation"] = normalisation

    def load(model: nn.Module) -> None:
        from attnlab.tasks.init_run import copy_weights

        tensors = read_weights(weights)
        ours = _fit_to_model({k: tensors[v] for k, v in renames.items()}, model, (grid, grid), record)
        copy_weights(model, ours, source, fresh=_NEW_PARAMETERS)

    dim = sizes["hidden_size"]
    fields = {"dim": dim, "depth": sizes["num_hidden_layers"], "num_heads": sizes["num_attention_heads"],
              "mlp_ratio": sizes["intermediate_size"] / dim, "patch_size": sizes["patch_size"], "pooling": "cls",
              "pos_embed": "learned", "stem_channels": 0, "norm_eps": float(config.get("layer_norm_eps", 1e-12)),
              "activation": activation,
              "dropout": float(config.get("hidden_dropout_prob", 0.0)),
              "attn_dropout": float(config.get("attention_probs_dropout_prob", 0.0)), "mlp_dropout": 0.0}
    files = {"config.json": config_path.read_text(encoding="utf-8")}
    if (source / "preprocessor_config.json").is_file():
        files["preprocessor_config.json"] = (source / "preprocessor_config.json").read_text(encoding="utf-8")
    return Pretrained(model_fields=fields, data_options=_norm_options(record), load_weights=load, files=files,
                      record=record)


def _norm_options(record: dict[str, Any]) -> dict[str, Any]:
    """The loader option that normalises the data as the checkpoint's image processor did
    (`attnlab.data.images.fit_channel_stats`); {} for a checkpoint without one (or an older run)."""
    norm = record.get("normalisation")
    if not isinstance(norm, dict):
        return {}
    return {"norm_stats": {"mean": norm.get("mean"), "std": norm.get("std"), "file": norm.get("file")}}


def reopen_vit_checkpoint(record: dict[str, Any]) -> Pretrained:
    """A finished ``--init`` run needs nothing of SOURCE: its config.yaml holds the whole model
    (grid, channels, new head) and model.safetensors the weights; the provenance is kept, and
    the data is normalised as at training time (the checkpoint's statistics, kept in ``init``)."""
    init = dict(record.get("init") or {})
    return Pretrained(record=init, data_options=_norm_options(init))


def vit_from_run(source: Path, *, task: str | None = None) -> Pretrained:
    """``--init RUN`` for images: the run's ViT with its position table resampled to the new
    data's grid and its first convolution adapted to the data's channels. The head is new, except
    for a run of the same ``task`` trained on the same classes (and target) as the new data: more
    training on them, so its head is kept (an image folder of other classes gets a new head). The
    data are normalised with the source run's statistics, as a checkpoint's image processor's
    (timm's ``resolve_data_config``): its weights learnt on inputs scaled so."""
    from attnlab.tasks.init_run import open_run, same_classes

    def adapt(run, model: nn.Module) -> dict[str, Tensor]:
        config = run.model_config
        size, patch = config.get("image_size") or (0, 0), int(config.get("patch_size") or 1)
        tensors = _fit_to_model(run.tensors, model, (int(size[0]) // patch, int(size[1]) // patch), pretrained.record)
        data = pretrained.data  # None: nothing to compare with, the task's classes decide
        keep = task is not None and run.task == task and (data is None or same_classes(run, data))
        pretrained.record["head"] = "kept" if keep else "new"
        if not keep:  # the model's own fresh initialisation (the copy then leaves it as it is)
            tensors = {**tensors, **{k: v for k, v in model.state_dict().items() if k.startswith(_NEW_PARAMETERS)}}
        return tensors

    def carried(run) -> dict[str, Any]:  # the source's normalisation: its weights were trained on inputs so scaled
        spec = run.record.get("spec") or {}
        if not spec.get("mean") or not spec.get("std"):
            return {}
        norm["normalisation"] = {"file": "data.json", "mean": list(spec["mean"]), "std": list(spec["std"])}
        return _norm_options(norm)

    norm: dict[str, Any] = {}
    pretrained = open_run(source, adapt=adapt, data_options=carried)
    pretrained.record.update(norm)  # kept in data.json's init: evaluate and --resume normalise alike
    return pretrained


def image_positions(model: nn.Module, task_data, items: list, index: list[int]) -> list:
    """Patches of (image, label) ``items``; removed = the mean training pixel
    per channel, every pixel of a removed patch (Chefer et al. 2021 remove patches alike)."""
    from attnlab.tasks.positions import patch_positions

    return patch_positions(model, task_data, items, index, mean_dims=(1, 2),
                           removed_means="mean training pixel per channel, patch-wise")


_ADAPTERS: dict[str, Any] = {"model_fields": image_fields, "report_examples": _report, "predict": predict_images,
                             "explain_example": explain_image, "explain_positions": image_positions}

# --init: fine-tuning defaults. A pretrained ViT needs a gentler start than a random one (DeiT,
# Touvron et al. 2021, and timm fine-tune with AdamW, warm-up and cosine decay at a fraction of the
# pre-training rate): each task's own recipe with a quarter of its from-scratch learning rate and
# a quarter of its epochs (issue 23's target: better at 1/4 of the epochs), 10% warm-up, weight
# decay 0.05 (DeiT), label smoothing 0.1 (DeiT). benchmarks/finetune_vision.py measures digits.
FINETUNE_TRAIN: dict[str, dict[str, Any]] = {
    "digits": {"epochs": 15, "batch_size": 32, "lr": 5e-4, "weight_decay": 0.05, "warmup_ratio": 0.1, "keep": "last"},
    "mnist": {"epochs": 3, "batch_size": 128, "lr": 2.5e-4, "weight_decay": 0.05, "warmup_ratio": 0.1},
    "images": {"epochs": 8, "batch_size": 32, "lr": 2.5e-4, "weight_decay": 0.05, "warmup_ratio": 0.1},
}
FINETUNE_OBJECTIVE: dict[str, Any] = {"label_smoothing": 0.1}
INIT_HELP = ("digits, mnist, images: SOURCE is a Hugging Face ViT save_pretrained directory (model_type 'vit', "
             "model.safetensors or its shards) or an attnlab run of vit-tiny / vit-small; at another image size or patch grid "
             "the position table is resampled (bicubic, as timm), an RGB checkpoint on grey images gets its first "
             "convolution summed over channels (timm's adapt_input_conv), a Hugging Face ViT's preprocessor_config.json "
             "mean and std normalise the data (grey data: the channels' mean), the head is new (a run of the same task and "
             "classes keeps its own), and the training "
             "defaults become AdamW at a quarter of the task's lr and epochs, 10% warm-up, weight decay 0.05; digits: ")


def _init(task: str, help: str) -> InitSupport:
    train = FINETUNE_TRAIN[task]
    lr = f"{train['lr']:.1e}".replace("e-0", "e-").replace(".0e", "e")
    return InitSupport(help=f"{help}lr {lr}, {train['epochs']} epochs.", open=open_vit_checkpoint,
                       reopen=reopen_vit_checkpoint, from_run=partial(vit_from_run, task=task), default_train=train,
                       default_objective=FINETUNE_OBJECTIVE)


SPECS = (
    TaskSpec(
        name="digits", load=load_digits, models=MODELS, input_suffixes=PREDICT_SUFFIXES,
        description="scikit-learn's 8x8 digits (built in, no download)",
        # A conv stem, dropout and label smoothing keep a ViT from overfitting 1,258 images.
        default_model_config={"stem_channels": 32, "dropout": 0.2},
        # Validation has only 180 images, so "best on validation" is noisy: keep the last epoch
        # (cosine decay ends near zero).
        default_train={"epochs": 60, "batch_size": 32, "lr": 2e-3, "weight_decay": 0.1, "keep": "last"},
        default_objective={"label_smoothing": 0.1}, init=_init("digits", INIT_HELP), **_ADAPTERS,
    ),
    TaskSpec(
        name="mnist", load=load_mnist, models=("vit-small", "vit-tiny", "hybrid-cnn"), input_suffixes=PREDICT_SUFFIXES,
        description="MNIST from an .npz (x_train, y_train, x_test, y_test)",
        default_train={"epochs": 12, "batch_size": 128, "lr": 1e-3, "weight_decay": 0.05},
        init=_init("mnist", "mnist: the same with "), **_ADAPTERS,
        run_vocabulary=RunVocabulary(_image_folder_vocabulary),  # another .npz must fit the run's classes and size
    ),
    TaskSpec(
        name="images", load=load_images, models=MODELS, input_suffixes=PREDICT_SUFFIXES,
        description="a folder of class folders of images (png/jpg/bmp), or with --data.target multilabel a CSV "
                    "of label columns (path,<label>,...)",
        default_model_config={"patch_size": 4, "stem_channels": 32},
        default_train={"epochs": 30, "batch_size": 32}, init=_init("images", "images: the same with "), **_ADAPTERS,
        run_vocabulary=RunVocabulary(_image_folder_vocabulary, replaces=("image_size", "channels")),
    ),
)
