"""Planted shortcut: do the relevance maps find a cue we know the model uses? (issue 24, measure 4)

Images: scikit-learn's 8x8 digits with a class-coded marker in the top-left 2x2 pixels, which
is exactly the ViT's first patch (vit-tiny, 2x2 patches, 4x4 grid). Class k's code is the 4-bit
pattern of k + 1 over those four pixels (lit = 16, the brightest digit value; unlit = 0), so
the all-dark corner of an unmarked digit is no code. 90% of the training images carry their
own class's code (the marker agrees with the label on 90% of them); the other 10% carry none.
The images are written as PNGs into a class-folder tree and trained by the product path,
`attnlab train --task images` with the digits recipe (conv stem, dropout 0.2, label
smoothing 0.1, lr 2e-3, weight decay 0.1).

Held-out digits (20%, never written to the folder) are scored three ways: clean (no marker),
marked (their own class's code) and conflicting (the code of class y + 1): the share of
conflicting images predicted as the marker's class is how much the model relies on the cue,
the ground truth that makes the test meaningful. On the marked images each method's map for
the predicted class is scored by
- top-1 hit rate: the marker patch is the most relevant one (argmax of the signed map);
- mass: the marker's share of the positive relevance, relu(r)[marker] / sum relu(r);
beside the random map (1/16 of hits by chance), with 95% bootstrap intervals over images; and
the model-randomisation check (Adebayo et al., NeurIPS 2018): Spearman rank correlation between
each map on the trained model and on the fully re-initialised copy (cascading, top down).

Text: TREC (shared/data/text/trec) with a made-up word per class (``zqvxa`` for class 0,
``zqvxb`` for 1, ...) inserted at a random position into 90% of the training questions of that
class; text-transformer with its task defaults (`attnlab train --task text-classification`).
The TREC test questions get their own class's word (marked) or the next class's (conflicting).
Relevance is over the token embeddings (the model's float input; IG's baseline is the zero
embedding), computed per sentence length so no padding enters a map; the top-1 token is the
argmax over every token of the question, <bos> included.

Methods: attnlab.explain.relevance (raw attention, rollout, gradient-weighted rollout of Chefer
et al., CVPR 2021, last-layer attention x gradient, Captum's input x gradient and Integrated
Gradients, random). --quick: 1 epoch each of 2-layer 32-wide models (600 TREC questions), few
examples, a smoke test of the plumbing.
Results: benchmarks/results/shortcut[-quick].json unless --out is given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

if __package__:
    from . import _common as common
else:  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _common as common

from attnlab.explain.faithfulness import bootstrap_ci, cascading_randomisation
from attnlab.explain.positions import Patches
from attnlab.explain.relevance import IG_STEPS, METHODS, relevance

ROOT = Path(__file__).resolve().parents[1]
TREC = Path(os.environ.get("ATTNLAB_DATA", ROOT.parent / "shared" / "data")) / "text" / "trec"
PRESENCE = 0.9  # share of training examples that carry their class's marker
MARKER_PATCH = 0  # the top-left 2x2 patch: row-major patch index 0
DIGITS_RECIPE = ["--model.patch_size", "2", "--model.stem_channels", "32", "--model.dropout", "0.2",
                 "--train.lr", "2e-3", "--train.weight_decay", "0.1", "--train.batch_size", "32",
                 "--train.keep", "last", "--objective.label_smoothing", "0.1", "--data.image_size", "[8, 8]"]


def marker_codes(classes: int = 10) -> np.ndarray:
    """Class k -> the bits of k + 1 over the 2x2 corner, row-major. (K, 2, 2) in {0, 1}."""
    return np.array([[(k + 1) >> b & 1 for b in (3, 2, 1, 0)] for k in range(classes)], dtype=np.float64).reshape(-1, 2, 2)


def plant(images: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Digits (N, 8, 8) in 0..16 with each one's code (N, 2, 2) written into the top-left corner."""
    out = images.copy()
    out[:, :2, :2] = codes * 16.0
    return out


def _train(args: list[str]) -> None:
    from attnlab.cli import main

    rc = main(["train", *args])
    if rc not in (None, 0):
        raise SystemExit(f"attnlab train failed ({rc})")


def _scores(rel: Tensor, marker: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per example: top-1 on the marker (1/0) and the marker's share of positive relevance.

    Shape: rel (B, N), marker (B,) -> (B,), (B,).
    """
    hit = (rel.argmax(-1) == marker).double()
    pos = rel.clamp_min(0).double()
    mass = pos.gather(1, marker[:, None])[:, 0] / pos.sum(-1).clamp_min(1e-30)
    return hit.numpy(), mass.numpy()


def _summary(per: dict[str, np.ndarray]) -> dict[str, tuple[float, float, float]]:
    return {k: bootstrap_ci(v) for k, v in per.items()}


# --- images -------------------------------------------------------------------------------


def _digits(seed: int):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    idx = np.arange(len(bunch.target))
    train, test = train_test_split(idx, test_size=0.2, stratify=bunch.target, random_state=seed)
    return bunch.images, bunch.target, np.sort(train), np.sort(test)


def _to_uint8(images: np.ndarray) -> np.ndarray:
    return np.rint(images * 255.0 / 16.0).astype(np.uint8)  # what the PNG holds; the loader divides by 255


def write_image_folder(root: Path, images: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> float:
    """root/<class>/<i>.png, PRESENCE of them marked with their class's code. Returns the marked share."""
    from PIL import Image

    codes = marker_codes()
    marked = rng.random(len(labels)) < PRESENCE
    images = images.copy()
    images[marked] = plant(images[marked], codes[labels[marked]])
    for i, (im, y) in enumerate(zip(_to_uint8(images), labels)):
        (root / str(y)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(im, mode="L").save(root / str(y) / f"{i:04d}.png")
    return float(marked.mean())


def image_shortcut(tmp: Path, *, epochs: int, examples: int, rand_examples: int, steps: int, seed: int,
                   model_args: list[str] | None = None) -> dict:
    from attnlab.data.base import ImageSpec
    from attnlab.run import load_run

    images, labels, train, test = _digits(seed)
    rng = np.random.default_rng(seed)
    marked_share = write_image_folder(tmp / "digits-marked", images[train], labels[train], rng)
    t0 = time.perf_counter()
    _train(["--task", "images", "--data", str(tmp / "digits-marked"), "--model", "vit-tiny", "--out",
            str(tmp / "digits-run"), "--epochs", str(epochs), "--seed", str(seed), *DIGITS_RECIPE, *(model_args or [])])
    train_s = time.perf_counter() - t0
    _, model, record = load_run(tmp / "digits-run")
    spec = ImageSpec.from_dict(record["spec"])
    names = [int(n) for n in record["class_names"]]  # folder names, sorted: "0".."9"
    test = test[:examples]
    y = torch.as_tensor(labels[test])
    codes = marker_codes()

    def prepare(x: np.ndarray) -> Tensor:
        return spec.normalise(torch.from_numpy(_to_uint8(x)[:, None].astype(np.float32)) / 255.0)  # (B, 1, 8, 8)

    sets = {"clean": prepare(images[test]), "marked": prepare(plant(images[test], codes[labels[test]])),
            "conflicting": prepare(plant(images[test], codes[(labels[test] + 1) % 10]))}
    with torch.no_grad():
        pred = {k: torch.as_tensor(names)[model(v).argmax(-1)] for k, v in sets.items()}
    result = {"marked_training_share": marked_share, "train_seconds": train_s, "test_images": len(test),
              "accuracy": {k: float((p == y).double().mean()) for k, p in pred.items()},
              "follows_marker": float((pred["conflicting"] == (y + 1) % 10).double().mean())}

    wrap = Patches(model, tuple(sets["marked"].shape[1:]), model.config.patch_size).eval()
    x = wrap.cut(sets["marked"])  # (B, 16, 4)
    marker = torch.full((len(x),), MARKER_PATCH)
    prefix = model.num_prefix_tokens
    rows = {}
    for m in METHODS:
        t0 = time.perf_counter()

        def explain(mod, t, m=m):
            return relevance(mod, t, m, num_prefix_tokens=prefix, steps=steps)

        hit, mass = _scores(explain(wrap, x), marker)
        _, rho = cascading_randomisation(wrap, x[:rand_examples], explain)
        rows[m] = {**_summary({"top1": hit, "mass": mass, "randomisation": rho[-1]}),
                   "seconds": time.perf_counter() - t0}
    result["methods"] = rows
    return result


# --- text ---------------------------------------------------------------------------------


def _word(k: int) -> str:
    return "zqvx" + chr(ord("a") + k)  # not an English word; one token of the word tokenizer


def _insert(text: str, word: str, rng: np.random.Generator) -> str:
    words = text.split()
    words.insert(int(rng.integers(0, len(words) + 1)), word)
    return " ".join(words)


def _read_trec(path: Path) -> list[tuple[str, str]]:
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.strip():
            label, text = line.split(" ", 1)
            rows.append((label, text.strip()))
    return rows


class Embedded(nn.Module):
    """Token embeddings (B, N, C) -> logits of a text model, for fixed token ids: the embedding
    layer's output is swapped for the input, so Captum and the attention methods attribute to
    the same token positions. Captum's IG batches several copies of the input: the ids repeat."""

    def __init__(self, model: nn.Module, tokens: Tensor):
        super().__init__()
        self.model, self.tokens = model, tokens

    def forward(self, emb: Tensor) -> Tensor:
        tokens = self.tokens.repeat(emb.shape[0] // self.tokens.shape[0], 1)  # (B, N)
        handle = self.model.encoder.token_embed.register_forward_hook(lambda mod, inp, out: emb)
        try:
            return self.model(tokens)
        finally:
            handle.remove()


def text_shortcut(tmp: Path, trec: Path, *, epochs: int, examples: int, steps: int, seed: int,
                  questions: int | None = None, model_args: list[str] | None = None) -> dict:
    from attnlab.data.text import encode_for_classification
    from attnlab.data.tokenizers import load_tokenizer
    from attnlab.run import load_run

    rng = np.random.default_rng(seed)
    train = _read_trec(trec / "TREC.train.all")[:questions]
    marked = rng.random(len(train)) < PRESENCE
    lines = [f"{y}\t{_insert(t, _word(int(y)), rng) if m else t}" for (y, t), m in zip(train, marked)]
    (tmp / "trec-marked.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    t0 = time.perf_counter()
    _train(["--task", "text-classification", "--data", str(tmp / "trec-marked.tsv"), "--model", "text-transformer",
            "--out", str(tmp / "trec-run"), "--epochs", str(epochs), "--seed", str(seed), *(model_args or [])])
    train_s = time.perf_counter() - t0
    _, model, record = load_run(tmp / "trec-run")
    tokenizer = load_tokenizer(record["info"]["tokenizer"])
    index = {n: i for i, n in enumerate(record["class_names"])}
    test = _read_trec(trec / "TREC.test.all")[:examples]
    k = len(index)
    y = np.array([index[label] for label, _ in test])
    marked_words = [int(label) for label, _ in test]
    sets = {"clean": [t for _, t in test],
            "marked": [_insert(t, _word(w), rng) for (_, t), w in zip(test, marked_words)],
            "conflicting": [_insert(t, _word((w + 1) % k), rng) for (_, t), w in zip(test, marked_words)]}
    max_length = int(record["info"]["max_length"])
    ids = {s: encode_for_classification(tokenizer, texts, max_length) for s, texts in sets.items()}
    marker_id = {w: tokenizer.encode_batch([_word(w)])[0] for w in range(k)}
    if any(len(v) != 1 for v in marker_id.values()):
        raise SystemExit(f"a marker word is not one token: {marker_id}")

    def predict(seqs):
        with torch.no_grad():
            return np.array([int(model(torch.tensor([s])).argmax(-1)) for s in seqs])

    pred = {s: predict(v) for s, v in ids.items()}
    follows = np.array([index[str((w + 1) % k)] for w in marked_words])
    result = {"marked_training_share": float(marked.mean()), "train_seconds": train_s, "test_questions": len(test),
              "accuracy": {s: float((p == y).mean()) for s, p in pred.items()},
              "follows_marker": float((pred["conflicting"] == follows).mean())}
    groups: dict[int, list[int]] = {}
    for i, s in enumerate(ids["marked"]):
        groups.setdefault(len(s), []).append(i)
    rows = {}
    for m in METHODS:
        t0 = time.perf_counter()
        hits, masses = [], []
        for n, members in sorted(groups.items()):  # one length per batch: no padding in any map
            tokens = torch.tensor([ids["marked"][i] for i in members])  # (B, N)
            marker = torch.tensor([ids["marked"][i].index(marker_id[marked_words[i]][0]) for i in members])
            with torch.no_grad():
                emb = model.encoder.token_embed(tokens)  # (B, N, C)
            rel = relevance(Embedded(model, tokens).eval(), emb, m, num_prefix_tokens=model.num_prefix_tokens,
                            steps=steps, seed=n)
            hit, mass = _scores(rel, marker)
            hits.append(hit)
            masses.append(mass)
        rows[m] = {**_summary({"top1": np.concatenate(hits), "mass": np.concatenate(masses)}),
                   "seconds": time.perf_counter() - t0}
    result["methods"] = rows
    return result


# --- report -------------------------------------------------------------------------------


def _print(title: str, r: dict, measures: tuple[str, ...]) -> None:
    acc = ", ".join(f"{k} {v:.3f}" for k, v in r["accuracy"].items())
    print(f"\n{title}: accuracy {acc}; follows a conflicting marker {r['follows_marker']:.3f}")
    print(f"{'method':22s}" + "".join(f"{k:>24s}" for k in measures) + f"{'s':>7s}")
    for m, row in r["methods"].items():
        print(f"{m:22s}" + "".join(f"{row[k][0]:10.3f} [{row[k][1]:.3f},{row[k][2]:.3f}]" for k in measures)
              + f"{row['seconds']:7.1f}")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=20, help="image model epochs")
    ap.add_argument("--text-epochs", type=int, default=4)
    ap.add_argument("--examples", type=int, default=360, help="test images / questions scored")
    ap.add_argument("--rand-examples", type=int, default=48, help="images in the randomisation check")
    ap.add_argument("--steps", type=int, default=IG_STEPS, help=f"Integrated Gradients steps (default {IG_STEPS})")
    ap.add_argument("--trec", type=Path, default=TREC)
    ap.add_argument("--questions", type=int, help="TREC training questions used (default: all 5,452)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if args.quick:
        args.epochs, args.text_epochs, args.examples, args.rand_examples, args.steps = 1, 1, 16, 4, 4
        args.questions = min(args.questions or 600, 600)
    model_args = common.QUICK_MODEL_ARGS if args.quick else None
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        images = image_shortcut(Path(tmp), epochs=args.epochs, examples=args.examples, rand_examples=args.rand_examples,
                                steps=args.steps, seed=args.seed, model_args=model_args)
        text = None
        if (args.trec / "TREC.train.all").is_file():
            text = text_shortcut(Path(tmp), args.trec, epochs=args.text_epochs, examples=args.examples,
                                 steps=args.steps, seed=args.seed, questions=args.questions, model_args=model_args)
    result = {**common.run_header("shortcut", args, common.machine_info(torch.device("cpu")), __file__),
              "images": images, "text": text, "wall_seconds": time.perf_counter() - start}
    _print(f"vit-tiny on marked digits, {images['test_images']} test images", images, ("top1", "mass", "randomisation"))
    if text is None:
        print(f"\ntext: skipped, TREC not found under {args.trec}")
    else:
        _print(f"text-transformer on marked TREC, {text['test_questions']} test questions", text, ("top1", "mass"))
    print(f"\nwall time {result['wall_seconds']:.0f} s (mean [95% bootstrap CI]; top1 / mass on marked test examples)")
    out = args.out or Path(__file__).parent / "results" / f"shortcut{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=float))
    return result


if __name__ == "__main__":
    main()
