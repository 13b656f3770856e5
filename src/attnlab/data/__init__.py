"""Task data: loaders that read files (or built-in data) into a `TaskData`.

Each module serves one modality (vision, text, parallel text, audio, time series, sasrec,
detection); `attnlab.tasks` binds them to ``--task`` names. Nothing here registers anything
on import.
"""

from attnlab.data.base import ImageSpec, TaskData, TensorPairDataset
from attnlab.data.mnist import load_mnist_task
from attnlab.data.vision import RandomShift, load_digits_task, load_image_folder_task, prepare_image

__all__ = [
    "ImageSpec",
    "RandomShift",
    "TaskData",
    "TensorPairDataset",
    "load_digits_task",
    "load_image_folder_task",
    "load_mnist_task",
    "prepare_image",
]
