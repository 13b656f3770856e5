"""Cross-check: our deletion curve (Petsiuk et al. 2018) against Quantus's RegionPerturbation
(Samek et al. 2017; Quantus: Hedström et al., JMLR 2023) on the same model, inputs and maps.

Why the two can agree exactly, once configured to one protocol:
- Positions: attnlab scores (B, P) patches of a ViT; Quantus sums a pixel map over
  ``patch_size`` x ``patch_size`` blocks. With Quantus's patch size equal to the ViT's, and each
  patch's score spread over its pixels (``_pixel_map``), both rank the same 16 patches the same
  way (maps without ties, so the order is unique).
- Removal: both replace every pixel of a removed patch by one constant (our ``removed``,
  Quantus's float ``perturb_baseline``), cumulatively, most relevant first ("morf").
- Score: ``softmax=True`` makes Quantus read the probability of ``y_batch``; we pass the
  predicted class, which is our target. Quantus records p(x) - p(x with k patches removed)
  for k = 1 .. ``regions_evaluation``; our deletion curve at fractions k/16 (``steps=16``) is
  p(x with k patches removed), so Quantus[k - 1] = ours[0] - ours[k]. ``normalise=False`` and
  ``abs=False`` keep the map as given (normalising by the max would not change the order).
- "lerf" (least relevant first) on a map is "morf" on its negation, which checks the order.

The model-randomisation check is not cross-checked here: Quantus's MPRT re-seeds torch before
each layer's ``reset_parameters`` (seed + 1) and re-initialises modules without own parameters
too, while `cascading_randomisation` draws from one seeded stream and, at the last step, also
re-draws free parameters (class token, position table); the re-initialised weights differ, so
the correlations agree only in distribution, not to a tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from attnlab.explain.faithfulness import deletion_insertion
from attnlab.explain.relevance import relevance
from attnlab.models.registry import create_model

pytestmark = pytest.mark.slow  # importing Quantus alone takes seconds; six curves against a second library

quantus = pytest.importorskip("quantus", reason="quantus not installed (pip install 'attnlab[test]')")

PATCH, SIZE = 2, 8  # 4 x 4 = 16 patches of 2 x 2 pixels
REMOVED = -0.5  # the constant a removed pixel takes, on both sides


class _Patches(nn.Module):
    """(B, P, p*p) patches -> image -> ViT logits, as benchmarks/faithfulness.py does."""

    def __init__(self, vit: nn.Module):
        super().__init__()
        self.vit = vit

    def forward(self, patches: Tensor) -> Tensor:
        return self.vit(nn.functional.fold(patches.transpose(1, 2), (SIZE, SIZE), PATCH, stride=PATCH))

    @staticmethod
    def cut(images: Tensor) -> Tensor:
        return nn.functional.unfold(images, PATCH, stride=PATCH).transpose(1, 2)  # (B, P, p*p)


def _pixel_map(rel: Tensor) -> np.ndarray:
    """(B, P) patch scores -> (B, 1, H, W), each patch's pixels holding its score."""
    cols = rel[:, None, :].expand(-1, PATCH * PATCH, -1)  # (B, p*p, P)
    return nn.functional.fold(cols, (SIZE, SIZE), PATCH, stride=PATCH).numpy()


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    vit = create_model("vit-tiny", image_size=(SIZE, SIZE), patch_size=PATCH, in_channels=1, num_classes=4,
                       depth=2, dim=32, num_heads=4).eval()
    with torch.no_grad():  # an untrained ViT is near-uniform; sharper logits make the curves move
        vit.head.weight.mul_(30.0)
    images = torch.randn(12, 1, SIZE, SIZE)
    wrap = _Patches(vit).eval()
    x = wrap.cut(images)  # (B, 16, 4)
    with torch.no_grad():
        target = vit(images).argmax(-1)
    return vit, images, wrap, x, target


@pytest.mark.parametrize("method", ["gradient", "input_x_gradient", "random"])
@pytest.mark.parametrize("order", ["morf", "lerf"])
def test_deletion_curve_matches_quantus_region_perturbation(setup, method, order):
    vit, images, wrap, x, target = setup
    rel = relevance(wrap, x, method, num_prefix_tokens=vit.num_prefix_tokens, seed=3)  # (B, 16)
    assert all(len(torch.unique(r)) == r.numel() for r in rel), "the test needs maps without ties"
    ours_rel = rel if order == "morf" else -rel
    _, dele, _ = deletion_insertion(wrap, x, ours_rel, REMOVED, steps=x.shape[1], target=target)  # (B, 17)
    ours = dele[:, :1] - dele[:, 1:]  # (B, 16): drop in p(target) after k = 1..16 patches

    metric = quantus.RegionPerturbation(patch_size=PATCH, order=order, regions_evaluation=x.shape[1], abs=False,
                                        normalise=False, perturb_baseline=REMOVED, disable_warnings=True)
    theirs = np.asarray(metric(model=vit, x_batch=images.numpy(), y_batch=target.numpy(), a_batch=_pixel_map(rel),
                               device="cpu", softmax=True, channel_first=True))  # (B, 16)
    assert theirs.shape == ours.shape
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-5)
    # Not a vacuous agreement: removing patches moves the probability.
    assert np.abs(ours).max() > 0.1
