"""Image classification task families: digits (built in), mnist (.npz), images (a folder).

Models: ``vit-tiny`` / ``vit-small`` (Dosovitskiy et al. 2021, `attnlab.models.vit`) and
``hybrid-cnn`` (`attnlab.models.hybrid`).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from attnlab.data.base import TaskData, call_with_options, path_loader
from attnlab.data.vision import load_digits_task, load_image_folder_task, load_mnist_task
from attnlab.tasks.base import TaskSpec

__all__ = ["SPECS", "image_fields", "predict_images"]

logger = logging.getLogger(__name__)

MODELS = ("vit-tiny", "vit-small", "hybrid-cnn")


def image_fields(task_data) -> dict[str, Any]:
    c, h, w = task_data.input_shape
    return {"num_classes": task_data.num_classes, "image_size": (h, w), "in_channels": c}


def _report(model: nn.Module, task_data, count: int) -> list:
    from attnlab.explain.examples import vision_examples

    return vision_examples(model, task_data, count)


def predict_images(model: nn.Module, record: dict[str, Any], inputs: list[str], top_k: int) -> list[dict[str, Any]]:
    from attnlab.data.base import ImageSpec
    from attnlab.data.vision import prepare_image

    spec = ImageSpec.from_dict(record["spec"])
    results = []
    for item in inputs:
        x = prepare_image(item, spec)[None].to(next(model.parameters()).device)
        with torch.no_grad():
            probs = torch.softmax(model(x).float(), dim=-1)[0].cpu()
        scores, classes = probs.topk(min(top_k, probs.numel()))
        names = record["class_names"]
        results.append({
            "input": item, "class": names[int(classes[0])], "score": float(scores[0]),
            "top": [{"class": names[int(c)], "score": float(s)} for s, c in zip(scores, classes)],
        })
    return results


def explain_image(model: nn.Module, record: dict[str, Any], input_path: str):
    from pathlib import Path

    from attnlab.data.base import ImageSpec
    from attnlab.data.vision import prepare_image
    from attnlab.explain.examples import image_example

    spec = ImageSpec.from_dict(record["spec"])
    x = prepare_image(input_path, spec)
    return image_example(model, x, class_names=record["class_names"], spec=spec, title=Path(input_path).name)


def load_digits(data: str | None, *, seed: int, **options: Any) -> TaskData:
    if data is not None:
        logger.warning("task 'digits' uses scikit-learn's bundled digits; ignoring --data %s", data)
    return call_with_options(load_digits_task, "digits", options, seed=seed)


load_mnist = path_loader("mnist", load_mnist_task, "an .npz with x_train, y_train, x_test, y_test")
load_images = path_loader("images", load_image_folder_task, "a folder of class folders: root/<class>/*.png", arg="root")

_ADAPTERS: dict[str, Any] = {"model_fields": image_fields, "report_examples": _report, "predict": predict_images,
                             "explain_example": explain_image}

SPECS = (
    TaskSpec(
        name="digits", load=load_digits, models=MODELS,
        description="scikit-learn's 8x8 digits (built in, no download)",
        # A conv stem, dropout and label smoothing keep a ViT from overfitting 1,258 images.
        default_model_config={"stem_channels": 32, "dropout": 0.2},
        # Validation has only 180 images, so "best on validation" is noisy: keep the last epoch
        # (cosine decay ends near zero).
        default_train={"epochs": 60, "batch_size": 32, "lr": 2e-3, "weight_decay": 0.1, "keep": "last"},
        default_objective={"label_smoothing": 0.1}, **_ADAPTERS,
    ),
    TaskSpec(
        name="mnist", load=load_mnist, models=("vit-small", "vit-tiny", "hybrid-cnn"),
        description="MNIST from an .npz (x_train, y_train, x_test, y_test)",
        default_train={"epochs": 12, "batch_size": 128, "lr": 1e-3, "weight_decay": 0.05}, **_ADAPTERS,
    ),
    TaskSpec(
        name="images", load=load_images, models=MODELS,
        description="a folder of class folders of images (png/jpg/bmp)",
        default_model_config={"patch_size": 4, "stem_channels": 32},
        default_train={"epochs": 30, "batch_size": 32}, **_ADAPTERS,
    ),
)
