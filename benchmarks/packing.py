"""Where does the padding-free encoder (``attnlab.layers.packing``) pay? Side by side, one run.

Rows: two ``text-transformer`` shapes with random weights, MiniLM-L6's (BERT options, 6 x 384,
12 heads, FFN 1,536, dropout 0.1) and the from-scratch text default (2 x 128, FFN 256, n-gram
filters, max pooling; ``attnlab.tasks.text``), on batches of 32 sentences whose padding fraction is set by their
lengths (the longest is ``--length`` tokens; the others are drawn so that the given share of
the (B, N) positions is padding). Each row times the unpadded blocks (forced on, whatever
``MIN_PADDING`` says) against the padded ones (``ATTNLAB_UNPAD=0``) alternately, call for call:
a training step (forward, cross-entropy, backward, fused AdamW) and a no-grad eval forward.
speed-up = padded time / unpadded time (> 1: unpadding pays). The default unpads from
``MIN_PADDING`` (20%) of padding, above the crossover this benchmark locates.

``--quick``: a small model, a few rounds (smoke test). Results:
benchmarks/results/packing-<device>[-quick].json unless ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environ, format_table, git_revision, machine_info, resolve_device, time_rounds, write_json  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
FRACTIONS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)


@contextlib.contextmanager
def _unpad(on: bool):
    """Unpadded blocks forced on (threshold 0) or off (``ATTNLAB_UNPAD=0``) inside the block."""
    from attnlab.layers import packing

    saved_min = packing.MIN_PADDING
    packing.MIN_PADDING = 0.0
    try:
        with environ(packing.UNPAD_ENV, "1" if on else "0"):
            yield
    finally:
        packing.MIN_PADDING = saved_min


def lengths_for(fraction: float, batch: int, longest: int, generator: torch.Generator) -> torch.Tensor:
    """Sentence lengths (B,) with max ``longest`` whose padding is ``fraction`` of B x longest."""
    target = round((1.0 - fraction) * batch * longest)  # real tokens wanted
    lengths = torch.full((batch,), longest)
    while int(lengths.sum()) > target:
        i = int(torch.randint(1, batch, (1,), generator=generator))  # row 0 keeps the longest
        if lengths[i] > 2:
            lengths[i] -= 1
    return lengths


# MiniLM-L6's shape with BERT's options; the from-scratch text default (attnlab.tasks.text), whole-word vocabulary
MODELS = {
    "minilm": dict(vocab_size=30522, dim=384, depth=6, num_heads=12, mlp_ratio=4.0, mlp_dropout=0.0, norm_first=False,
                   embed_norm=True, type_vocab_size=2, pooling="mean", norm_eps=1e-12),
    "text-default": dict(vocab_size=20000, dim=128, depth=2, num_heads=4, mlp_ratio=2.0, dropout=0.2, embed_dropout=0.2,
                         conv_kernel=3, pooling="max", conv_widths=(3, 4, 5), conv_channels=100, head_dropout=0.5),
}


def model_for(name: str, quick: bool, device: torch.device):
    from attnlab.models import create_model

    config = {"dropout": 0.1, **MODELS[name], **(dict(dim=64, depth=2, num_heads=4) if quick else {})}
    torch.manual_seed(0)
    return create_model("text-transformer", num_classes=2, max_length=512, **config).to(device)


def rows_for(model_name: str, model, fraction: float, batch: int, longest: int, rounds: int, device: torch.device) -> list[dict]:
    g = torch.Generator().manual_seed(int(fraction * 1000))
    lengths = lengths_for(fraction, batch, longest, g)
    ids = torch.randint(5, model.config.vocab_size, (batch, longest), generator=g)
    ids = ids.masked_fill(torch.arange(longest)[None, :] >= lengths[:, None], 0).to(device)
    labels = torch.randint(0, 2, (batch,), generator=g).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.type == "cpu")
    padding = 1.0 - float((ids != 0).float().mean())

    def step():
        model.train()
        loss = F.cross_entropy(model(ids), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def infer():
        model.eval()
        with torch.no_grad():
            model(ids)

    rows = []
    for name, fn in (("train step", step), ("eval forward", infer)):
        def unpadded(fn=fn):
            with _unpad(True):
                fn()

        def padded(fn=fn):
            with _unpad(False):
                fn()

        times = time_rounds([unpadded, padded], device, rounds)
        ms = [statistics.median(t[i] for t in times) * 1e3 for i in range(2)]
        rows.append({"model": model_name, "row": name, "padding": padding, "tokens": int((ids != 0).sum()), "positions": ids.numel(),
                     "unpadded_ms": ms[0], "padded_ms": ms[1], "speedup": ms[1] / ms[0],
                     "round_speedups": [t[1] / t[0] for t in times]})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--length", type=int, default=64, help="the longest sentence, in tokens (N)")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--fractions", type=float, nargs="+", default=list(FRACTIONS))
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave as is)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    rounds, batch, longest = (2, 4, 16) if args.quick else (args.rounds, args.batch, args.length)
    rows = []
    for name in args.models:
        model = model_for(name, args.quick, device)
        for fraction in args.fractions:
            rows += rows_for(name, model, fraction, batch, longest, rounds, device)
            print(f"{name} padding {rows[-1]['padding']:.2f}: train {rows[-2]['speedup']:.2f}x, "
                  f"eval {rows[-1]['speedup']:.2f}x", flush=True)
    shown = [{"model": r["model"], "row": r["row"], "padding": f"{r['padding']:.2f}", "unpadded_ms": f"{r['unpadded_ms']:.1f}",
              "padded_ms": f"{r['padded_ms']:.1f}", "speedup": f"{r['speedup']:.2f}x"} for r in rows]
    print(format_table(shown, [("model", "model"), ("row", "row"), ("padding", "padding"), ("unpadded_ms", "unpadded ms"),
                               ("padded_ms", "padded ms"), ("speedup", "speed-up")]))
    out = args.out or RESULTS / f"packing-{device.type}{'-quick' if args.quick else ''}.json"
    write_json(out, {"benchmark": "packing", "quick": args.quick, "config": {k: str(v) if isinstance(v, Path) else v
                     for k, v in vars(args).items()}, "machine": machine_info(device), "git": git_revision(__file__),
                     "loadavg": list(os.getloadavg()), "rows": rows})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
