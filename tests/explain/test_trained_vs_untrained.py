"""Training changes what a ViT attends to: trained vs untrained attention on the same digits.

A ViT at initialisation (timm init, q/k weights of std 0.02) scores every key almost the
same, so each attention row is close to uniform: entropy ~ log(N). Training on digits
makes heads select patches, which lowers the entropy and moves the maps away from the
initial ones. The untrained reference is the trained run's own starting point (same
config, same seed), and a second untrained model (another seed) gives the noise floor
of the L1 distance. Everything is seeded: the numbers are the same run to run, and the
test fails when training leaves attention as it was (e.g. weights not loaded, hooks
capturing a stale model, rollout or capture returning the wrong maps).

Measured with the settings below (~7 s of training on 1 thread): test accuracy 0.961, mean
entropy 2.62 trained vs 2.833 untrained (log 17 = 2.833), row L1 0.29 / 0.56 (layer 0 / 1)
vs 0.025 between two untrained models; seeds 1 and 2 at 8 epochs give the same picture
(entropy 2.68-2.70, last-layer L1 0.38-0.46).
"""

from __future__ import annotations

import math
import time

import pytest
import torch

from attnlab.tasks import load_task
from attnlab.explain import attention_entropy, capture, cls_to_patches, rollout
from attnlab.models import create_model
from attnlab.run import load_run, train_run
from attnlab.run_config import resolve_config

SEED = 0
EPOCHS = 10
DEPTH = 2
NUM_IMAGES = 128


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine two
    OpenMP threads spinning against another process made this training 7x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _head_entropy(maps) -> torch.Tensor:
    """Mean row entropy per layer and head. Shape: (L, H)."""
    return torch.stack([attention_entropy(m, reduction="none").mean(dim=(0, 2)) for m in maps.maps])


def _row_l1(a, b) -> list[float]:
    """Mean L1 distance between matching attention rows (0 = same, 2 = disjoint), per layer."""
    return [float((x - y).abs().sum(dim=-1).mean()) for x, y in zip(a.maps, b.maps)]


def test_training_sharpens_and_moves_attention(tmp_path, one_thread):
    start = time.perf_counter()
    config = resolve_config({
        "task": "digits",
        "model_config": {"depth": DEPTH},
        "train": {"epochs": EPOCHS, "seed": SEED, "device": "cpu", "progress": False},
        "report_examples": 0,
    })
    metrics = train_run(config, out=tmp_path / "run")
    train_s = time.perf_counter() - start
    accuracy = metrics["test"]["accuracy"]
    assert accuracy > 0.8, f"sanity: 10 digit classes (chance 0.1), test accuracy only {accuracy:.3f}"

    run_config, trained, _ = load_run(metrics["run_dir"])
    torch.manual_seed(SEED)
    untrained = create_model(run_config.model, **run_config.model_config).eval()
    torch.manual_seed(SEED + 1)
    other_untrained = create_model(run_config.model, **run_config.model_config).eval()

    data = load_task("digits", None, seed=SEED)
    x = torch.stack([data.test[i][0] for i in range(NUM_IMAGES)])  # (B, 1, 8, 8), same images for all
    got = {name: capture(model, x) for name, model in
           [("trained", trained), ("untrained", untrained), ("other", other_untrained)]}
    for maps in got.values():
        assert len(maps) == DEPTH and maps.maps[0].shape == (NUM_IMAGES, 4, 17, 17)  # CLS + 4x4 patches

    n = got["trained"].maps[0].shape[-1]
    ent_trained, ent_untrained = _head_entropy(got["trained"]), _head_entropy(got["untrained"])
    l1_trained = _row_l1(got["trained"], got["untrained"])
    l1_floor = _row_l1(got["other"], got["untrained"])
    relevance = {k: cls_to_patches(rollout(v), 1, trained.patch_grid) for k, v in got.items()}
    rel_entropy = {k: float(attention_entropy((r / r.sum(dim=(1, 2), keepdim=True)).flatten(1))) for k, r in relevance.items()}
    print(
        f"\ntrained {EPOCHS} epochs in {train_s:.1f} s, test accuracy {accuracy:.3f}\n"
        f"mean attention entropy: trained {float(ent_trained.mean()):.3f}, untrained {float(ent_untrained.mean()):.3f}"
        f" (uniform: log {n} = {math.log(n):.3f})\n"
        f"per head, last layer: trained {[round(float(e), 3) for e in ent_trained[-1]]}\n"
        f"row L1 vs untrained, per layer: trained {[round(v, 3) for v in l1_trained]}, "
        f"another untrained seed {[round(v, 3) for v in l1_floor]}\n"
        f"CLS rollout relevance entropy: trained {rel_entropy['trained']:.3f}, untrained {rel_entropy['untrained']:.3f}"
    )

    # The baseline really is near-uniform: otherwise the comparison below proves little.
    assert float(ent_untrained.min()) > 0.99 * math.log(n)
    # Training sharpens attention: lower entropy on average, and clearly in the last layer.
    assert float(ent_trained.mean()) < float(ent_untrained.mean()) - 0.1
    assert float(ent_trained[-1].min()) < float(ent_untrained[-1].min()) - 0.2
    # ... and moves the maps far beyond the difference between two random initialisations.
    assert l1_trained[-1] > 0.25
    assert all(t > 5 * f for t, f in zip(l1_trained, l1_floor)), (l1_trained, l1_floor)
    # The rolled-out relevance of patches for the class token is more concentrated too.
    assert rel_entropy["trained"] < rel_entropy["untrained"]
