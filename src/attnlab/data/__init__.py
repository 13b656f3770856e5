"""Task data: one loader per task family, found by name through ``load_task``.

``load_task(task, data, seed=...)`` returns a `TaskData` (train/val/test datasets, classes,
input shape, and for images the `ImageSpec` that `prepare_image` replays at predict time).
Task families register themselves in `TASK_LOADERS` when imported below.
"""

from attnlab.data import vision  # noqa: F401  (registers the vision tasks)
from attnlab.data.base import (
    TASK_LOADERS,
    ImageSpec,
    TaskData,
    TensorPairDataset,
    load_task,
    register_task,
)
from attnlab.data.vision import (
    VISION_TASKS,
    RandomShift,
    load_digits_task,
    load_image_folder_task,
    load_mnist_task,
    prepare_image,
)

__all__ = [
    "TASK_LOADERS",
    "VISION_TASKS",
    "ImageSpec",
    "RandomShift",
    "TaskData",
    "TensorPairDataset",
    "load_digits_task",
    "load_image_folder_task",
    "load_mnist_task",
    "load_task",
    "prepare_image",
    "register_task",
]
