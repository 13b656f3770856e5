"""Is attnlab's CPU dropout faster than ``torch.nn.functional.dropout``? Side by side, one run.

Rows (fp32, forward + backward, timed alternately call for call; ratio = torch / attnlab
time, > 1: attnlab is faster):
  op (B, N, C)        ``attnlab.layers.dropout.dropout(x, p)`` vs ``F.dropout(x, p)`` on
                      activations of the sizes the models train on: Multi30k's length-grouped
                      batches (64 x 17, 128 and 256 wide), a text batch (64 x 128 x 256) and a
                      long one (8 x 512 x 1024).
  train step          one AdamW step of ``transformer-mt`` at Transformer-tiny's size (4 + 4
                      layers, 128 wide, FFN 256, dropout 0.3, vocabulary 8,000) on a batch of
                      64 pairs of 17 tokens, with attnlab's dropout vs the same model with
                      every dropout call sent to ``F.dropout`` (same weights, same batch).

``--quick``: small sizes, a few rounds (smoke test). Results:
benchmarks/results/dropout-<device>[-quick].json unless ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import format_table, git_revision, machine_info, time_paired, write_json  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


@contextlib.contextmanager
def _torch_dropout():
    """Route attnlab's dropout (modules and ``drop``) to ``F.dropout`` inside the block."""
    from attnlab.layers import dropout as module

    ours = module.dropout
    module.dropout = lambda x, p, training=True, inplace=False: x if not training or p == 0 else F.dropout(x, p, training, inplace)
    try:
        yield
    finally:
        module.dropout = ours


def op_rows(shapes: list[tuple[int, ...]], p: float, rounds: int, device: torch.device) -> list[dict]:
    from attnlab.layers.dropout import dropout

    rows = []
    for shape in shapes:
        x = torch.randn(*shape, device=device, requires_grad=True)
        g = torch.randn_like(x)

        def ours():
            dropout(x, p).backward(g)

        def theirs():
            F.dropout(x, p, True).backward(g)

        t_ours, t_theirs = time_paired(ours, theirs, device, rounds)
        rows.append({"row": f"op {tuple(shape)}", "p": p, "attnlab_ms": t_ours * 1e3, "torch_ms": t_theirs * 1e3,
                     "ratio": t_theirs / t_ours})
    return rows


def step_row(size: dict, batch: int, length: int, rounds: int, device: torch.device) -> dict:
    from attnlab.models.registry import create_model

    torch.manual_seed(0)
    model = create_model("transformer-mt", **size).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    vocab = size["src_vocab_size"]
    src = torch.randint(4, vocab, (batch, length), device=device)
    tgt = torch.randint(4, vocab, (batch, length + 1), device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        logits = model(src, tgt[:, :-1])
        F.cross_entropy(logits.reshape(-1, vocab), tgt[:, 1:].reshape(-1), label_smoothing=0.1).backward()
        opt.step()

    def theirs():
        with _torch_dropout():
            step()

    t_ours, t_theirs = time_paired(step, theirs, device, rounds)
    return {"row": f"train step transformer-mt {size['dim']} wide, B={batch} N={length}", "p": size["dropout"],
            "attnlab_ms": t_ours * 1e3, "torch_ms": t_theirs * 1e3, "ratio": t_theirs / t_ours}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave as is)")
    p.add_argument("--rounds", type=int, default=None, help="alternating timed calls per side (default 30; steps 10)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cpu")  # the fast path is CPU-only; CUDA keeps F.dropout
    size = {"src_vocab_size": 8000, "tgt_vocab_size": 8000, "dim": 128, "encoder_depth": 4, "decoder_depth": 4,
            "num_heads": 4, "mlp_ratio": 2.0, "dropout": 0.3}
    if args.quick:
        shapes, rounds, step_rounds, batch = [(8, 17, 64)], 2, 1, 4
        size.update(src_vocab_size=300, tgt_vocab_size=300, dim=32, encoder_depth=1, decoder_depth=1, num_heads=2)
    else:
        shapes, rounds, step_rounds, batch = [(64, 17, 128), (64, 17, 256), (64, 128, 256), (8, 512, 1024)], 30, 10, 64
    rounds = args.rounds or rounds
    rows = op_rows(shapes, 0.3, rounds, device)
    rows.append(step_row(size, batch, 17, args.rounds or step_rounds, device))
    table = [{**r, "attnlab_ms": f"{r['attnlab_ms']:.2f}", "torch_ms": f"{r['torch_ms']:.2f}", "ratio": f"{r['ratio']:.2f}x"}
             for r in rows]
    print(format_table(table, [("row", "row (fwd + bwd)"), ("p", "p"), ("attnlab_ms", "attnlab ms"),
                               ("torch_ms", "F.dropout ms"), ("ratio", "speed-up")]))
    payload = {"benchmark": "dropout", "quick": args.quick, "rows": rows, "machine": machine_info(device),
               "git": git_revision(__file__)}
    name = f"dropout-{device.type}{'-quick' if args.quick else ''}.json"
    print(f"wrote {write_json(args.out or RESULTS / name, payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
