"""Audio classification task family: ``--task audio`` on WAV files (Free Spoken Digit Dataset
naming, or a folder of class folders), a spectrogram Transformer, report and predict.

Explanations show the log-mel spectrogram as an image, low frequencies at the bottom, with
the model's (mel x frame) patch grid over it; tokens are named by their frequency band and
time span, e.g. ``250-480Hz 128-192ms``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from attnlab.data.audio import AudioSpec, hz_to_mel, load_audio_task, mel_to_hz, prepare_audio
from attnlab.data.base import path_loader
from attnlab.tasks.base import RunVocabulary, TaskSpec, run_targets

__all__ = ["SPECS", "audio_run_vocabulary", "audio_positions", "audio_fields", "predict_audio", "explain_audio", "spectrogram_report_example"]


def audio_fields(task_data) -> dict[str, Any]:
    c, n_mels, frames = task_data.input_shape
    return {"num_classes": task_data.num_classes, "n_mels": n_mels, "frames": frames, "in_channels": c}


def _spec(record_info: dict[str, Any]) -> AudioSpec:
    return AudioSpec.from_dict(record_info["audio"])


def _token_labels(spec: AudioSpec, grid: tuple[int, int], patch: tuple[int, int], prefix: int) -> list[str]:
    """Display order (highest band first): '<low>-<high>Hz <start>-<end>ms' per patch."""
    f_max = spec.sample_rate / 2 if spec.f_max is None else spec.f_max
    centres = mel_to_hz(np.linspace(hz_to_mel(spec.f_min), hz_to_mel(f_max), spec.n_mels + 2))[1:-1]  # (n_mels,)
    ms = 1000.0 * spec.hop_length / spec.sample_rate
    labels = ["CLS"] * prefix
    for r in reversed(range(grid[0])):
        lo, hi = centres[r * patch[0]], centres[(r + 1) * patch[0] - 1]
        labels += [f"{lo:.0f}-{hi:.0f}Hz {c * patch[1] * ms:.0f}-{(c + 1) * patch[1] * ms:.0f}ms" for c in range(grid[1])]
    return labels


def spectrogram_report_example(
    model: nn.Module, x: Tensor, spec: AudioSpec, *, class_names: Sequence[str], label: int | None = None, title: str = ""
):
    """One spectrogram (1, n_mels, frames) through the model, as an "image" ReportExample.

    The model orders patches lowest band first; the picture puts low frequencies at the
    bottom, so the image rows and the token order of every map are flipped together.
    """
    from attnlab.explain.capture import capture
    from attnlab.explain.report import ReportExample

    model.eval()
    maps = capture(model, x[None].to(next(model.parameters()).device), device="cpu")
    probs = torch.softmax(maps.output.float(), dim=-1)[0].cpu()
    pred = int(probs.argmax())
    gh, gw = model.patch_grid
    prefix = int(model.num_prefix_tokens)
    order = list(range(prefix)) + [prefix + r * gw + c for r in reversed(range(gh)) for c in range(gw)]
    index = torch.tensor(order)
    flipped = [m[0].float()[:, index][:, :, index].numpy() for m in maps.maps]  # each (H, N, N)
    image = x[0].detach().float().cpu().flip(0)  # (n_mels, frames), high bands on top
    image = ((image - image.min()) / (image.max() - image.min()).clamp(min=1e-12)).numpy()
    return ReportExample(
        title=title or "example", kind="image", input=image, maps=flipped, layer_names=list(maps.names),
        tokens=_token_labels(spec, (gh, gw), tuple(model.patch_span), prefix),
        prediction=f"{class_names[pred]} ({float(probs[pred]):.2f})",
        label=None if label is None else class_names[label], grid=(gh, gw), num_prefix_tokens=prefix,
    )


def _report(model: nn.Module, task_data, count: int) -> list:
    spec = _spec(task_data.info)
    examples = []
    for i in range(min(count, len(task_data.test))):
        x, y = task_data.test[i]
        examples.append(spectrogram_report_example(model, x, spec, class_names=task_data.class_names, label=int(y),
                                                   title=f"test #{i}"))
    return examples


def _label_from_path(path: Path, record: dict[str, Any]) -> int | None:
    """The true class when the file's name (FSDD) or folder (class folders) says it."""
    from attnlab.data.audio import FSDD_NAME

    names = list(record["class_names"])
    match = FSDD_NAME.match(path.name)
    guess = str(int(match.group(1))) if match and record["info"].get("layout") == "fsdd" else path.parent.name
    return names.index(guess) if guess in names else None


def predict_audio(model: nn.Module, record: dict[str, Any], inputs: list[str], top_k: int) -> list[dict[str, Any]]:
    """Classify WAV files: [{"input", "class", "score", "top": [{"class", "score"}, ...]}]."""
    spec = _spec(record["info"])
    names = record["class_names"]
    device = next(model.parameters()).device
    results = []
    for item in inputs:
        x = prepare_audio(item, spec)[None].to(device)  # (1, 1, n_mels, frames)
        with torch.no_grad():
            probs = torch.softmax(model(x).float(), dim=-1)[0].cpu()
        scores, classes = probs.topk(min(top_k, probs.numel()))
        results.append({
            "input": item, "class": names[int(classes[0])], "score": float(scores[0]),
            "top": [{"class": names[int(c)], "score": float(s)} for s, c in zip(scores, classes)],
        })
    return results


def explain_audio(model: nn.Module, record: dict[str, Any], input_path: str):
    """One WAV file's spectrogram, prediction and attention as a ReportExample."""
    spec = _spec(record["info"])
    path = Path(input_path)
    x = prepare_audio(path, spec)
    example = spectrogram_report_example(model, x, spec, class_names=record["class_names"],
                                         label=_label_from_path(path, record), title=path.name)
    example.item = (x, None)  # what the relevance methods attribute (audio_positions)
    return example


def audio_positions(model: nn.Module, task_data, items: list, index: list[int]) -> list:
    """Spectrogram patches (the model's mel x frame tokens) of (spectrogram, label)
    ``items``; removed = the mean training frame (mean over training clips and time, per mel
    band): a removed patch sounds like the average clip there, not like silence."""
    from attnlab.tasks.positions import patch_positions

    groups = patch_positions(model, task_data, items, index, mean_dims=(2,),
                             removed_means="mean training frame (per mel band), patch-wise")
    gh, gw = model.patch_grid
    for g in groups:  # the report draws low bands at the bottom (spectrogram_report_example)
        g.order = [r * gw + c for r in reversed(range(gh)) for c in range(gw)]
    return groups


# The --data options a carried AudioSpec replaces (they only said how the run's features were made).
_FEATURE_OPTIONS = ("sample_rate", "duration", "n_fft", "hop_length", "n_mels", "f_min", "f_max", "top_db", "normalize")


def audio_run_vocabulary(record: dict[str, Any]) -> dict[str, Any]:
    """A finished run's classes and feature spec (``info.audio``: rate, duration, mels, and the
    training statistics under ``normalize="dataset"``) as loader options; {} for a record without them."""
    info = record.get("info") if isinstance(record.get("info"), dict) else {}
    options = run_targets(record)
    if not options or not isinstance(info.get("audio"), dict):
        return {}
    return {**options, "audio_spec": dict(info["audio"])}


load_audio = path_loader("audio", load_audio_task, "a folder of .wav files: FSDD {digit}_{speaker}_{index}.wav, or root/<class>/*.wav",
                         arg="root")


SPECS = (
    TaskSpec(
        name="audio", load=load_audio, models=("audio-transformer",), input_suffixes=(".wav", ".flac", ".ogg"),
        description="WAV classification: FSDD ({digit}_{speaker}_{index}.wav) or root/<class>/*.wav",
        default_train={"epochs": 30, "batch_size": 64, "lr": 2e-3, "weight_decay": 0.05, "keep": "last"},
        default_objective={"label_smoothing": 0.1},
        model_fields=audio_fields, report_examples=_report, predict=predict_audio, explain_example=explain_audio,
        # another folder is labelled by the run's classes and gets the run's features (its statistics)
        run_vocabulary=RunVocabulary(audio_run_vocabulary, replaces=_FEATURE_OPTIONS),
        explain_positions=audio_positions,
    ),
)
