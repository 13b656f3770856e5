"""How faithful is each relevance method? vit-tiny on digits (the main job), every method,
every measure, the random map beside each, bootstrap 95% intervals over test examples.

Measures (attnlab.explain.faithfulness): positive / negative perturbation AUC (Chefer et al.
2021: remove 10%..90% of the patches, most / least relevant first, accuracy on the predicted
class; positive lower is better, negative higher), deletion / insertion AUC of the
predicted-class probability (Petsiuk et al. 2018; deletion lower, insertion higher), and
Spearman rank correlation with the maps of a fully re-initialised copy (Adebayo et al. 2018;
lower means the map depends on the weights). "Removed" for images: the mean pixel of the
training split, patch-wise (every pixel of a removed patch).

Positions are patches (attnlab.explain.positions.Patches, the code `attnlab explain --faithfulness`
runs): the image is cut into (B, P, C*p*p) patches and the wrapper folds them back before the
ViT, so input x gradient and IG attribute to the same patches attention does; IG integrates from
the removed image.

--run RUN: explain that run (default: train the main job, `attnlab train`, into a temp dir).
--quick: an untrained 1-epoch run on few examples, a smoke test. Results:
benchmarks/results/faithfulness-digits[-quick].json unless --out is given.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

if __package__:
    from . import _common as common
else:  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _common as common

from attnlab.explain.card import MEASURES, score_methods
from attnlab.explain.positions import Patches, Positions
from attnlab.explain.relevance import METHODS


def _train(quick: bool, out: Path) -> Path:
    from attnlab.cli import main

    args = ["train", "--out", str(out)] + (["--epochs", "1"] if quick else [])
    rc = main(args)
    if rc not in (None, 0):
        raise SystemExit(f"attnlab train failed ({rc})")
    return out


def _data(run: Path, count: int):
    from attnlab.run import _load_task, load_run

    config, model, _ = load_run(run)
    task = _load_task(config)
    xs, ys = zip(*[task.test[i][:2] for i in range(min(count, len(task.test)))])
    train_x = torch.stack([task.train[i][0] for i in range(min(512, len(task.train)))])
    return model, torch.stack(xs), torch.as_tensor(ys), train_x.mean(dim=(0, 2, 3))  # mean pixel per channel


def evaluate(model: nn.Module, images: torch.Tensor, mean_pixel: torch.Tensor, methods, *, steps: int = 16) -> dict:
    """Every method's scores on ``images`` as patch positions (the Positions the digits task
    hands ``attnlab explain --faithfulness``; cascade: the fully re-initialised model)."""
    wrap = Patches(model, tuple(images.shape[1:]), model.config.patch_size).eval()
    x = wrap.cut(images)  # (B, P, C*p*p)
    removed = wrap.cut(mean_pixel[None, :, None, None].expand_as(images[:1]))[0]  # (P, C*p*p)
    positions = Positions(x, wrap, removed, model.num_prefix_tokens, removed_means="mean training pixel")
    scores = score_methods([positions], methods, steps=steps)
    return {m: {**{k: tuple(r[k]) for k in MEASURES}, "seconds": r["seconds"]} for m, r in scores["methods"].items()}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path)
    ap.add_argument("--examples", type=int, default=200)
    ap.add_argument("--steps", type=int, default=16, help="Integrated Gradients steps")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if args.quick:
        args.examples = min(args.examples, 16)
        args.steps = min(args.steps, 4)  # IG is the slowest method; the test's limit is 300 s
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or _train(args.quick, Path(tmp) / "digits-run")
        model, images, labels, mean_pixel = _data(run, args.examples)
        with torch.no_grad():
            acc = float((model(images).argmax(-1) == labels).double().mean())
        rows = evaluate(model, images, mean_pixel, METHODS, steps=args.steps)
    result = {**common.run_header("faithfulness", args, common.machine_info(torch.device("cpu")), __file__),
              "examples": len(labels), "accuracy": acc, "methods": rows}
    print(f"vit-tiny on digits, {len(labels)} test examples, accuracy {acc:.3f}; mean [95% CI]")
    print(f"{'method':22s}" + "".join(f"{k:>22s}" for k in MEASURES))
    for m, r in rows.items():
        print(f"{m:22s}" + "".join(f"{r[k][0]:8.3f} [{r[k][1]:.3f},{r[k][2]:.3f}]" for k in MEASURES))
    out = args.out or Path(__file__).parent / "results" / f"faithfulness-digits{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=float))
    return result


if __name__ == "__main__":
    main()
