"""Is attnlab's CPU dropout faster than ``torch.nn.functional.dropout``? Side by side, one run.

Rows (fp32, forward + backward; the three sides timed round-robin, call for call; speed-up =
the other side's time / attnlab's, > 1: attnlab's default is faster):
  op (B, N, C)        ``attnlab.layers.dropout.dropout(x, p)`` vs ``F.dropout(x, p)`` on
                      activations of the sizes the models train on: Multi30k's length-grouped
                      batches (64 x 17, 128 and 256 wide), a text batch (64 x 128 x 256), a
                      long one (8 x 512 x 1024) and PatchTST's feed-forward on ETTh1 (896 x 42 x 128).
  train step          one AdamW step of ``transformer-mt`` at Transformer-tiny's size (4 + 4
                      layers, 128 wide, FFN 256, dropout 0.3, vocabulary 8,000) on a batch of
                      64 pairs of 17 tokens, and one of the ETTh1 ``patchtst`` recipe's model
                      (B = 128 windows x 7 channels, input 336, H = 96), with attnlab's dropout vs
                      the same model with every dropout call sent to ``F.dropout`` (same weights,
                      same batch).
The third side is attnlab's dropout with ``ATTNLAB_DROPOUT_RNG=float`` (one float32 uniform per
element instead of 16-bit lanes of 64-bit draws): the "lanes vs float" column is its time / the
default's.

``--quick``: small sizes, a few rounds (smoke test). Results:
benchmarks/results/dropout-<device>[-quick].json unless ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environ, format_table, git_revision, machine_info, time_rounds, write_json  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def _float_draw():
    """attnlab's dropout with one float32 uniform per element (``ATTNLAB_DROPOUT_RNG=float``) inside the block."""
    from attnlab.layers.dropout import DROPOUT_RNG_ENV

    return environ(DROPOUT_RNG_ENV, "float")


def _three(ours, theirs, device: torch.device, rounds: int) -> dict:
    """Median ms of attnlab's default, F.dropout and attnlab's float draw, round-robin."""
    def float_draw():
        with _float_draw():
            ours()

    times = time_rounds([ours, theirs, float_draw], device, rounds)
    ms = [statistics.median(t[i] for t in times) * 1e3 for i in range(3)]
    return {"attnlab_ms": ms[0], "torch_ms": ms[1], "float_draw_ms": ms[2], "ratio": ms[1] / ms[0],
            "lanes_vs_float": ms[2] / ms[0]}


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

        rows.append({"row": f"op {tuple(shape)}", "p": p, **_three(ours, theirs, device, rounds)})
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

    return {"row": f"train step transformer-mt {size['dim']} wide, B={batch} N={length}", "p": size["dropout"],
            **_three(step, theirs, device, rounds)}


def patchtst_row(config: dict, batch: int, rounds: int, device: torch.device) -> dict:
    """One Adam step of the ETTh1 patchtst recipe's model on a batch of ``batch`` windows."""
    from attnlab.models.registry import create_model

    torch.manual_seed(0)
    model = create_model("patchtst", **config).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(batch, config["in_channels"], config["seq_len"], device=device)
    y = torch.randn(batch, config["in_channels"], config["horizon"], device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        F.mse_loss(model(x), y).backward()
        opt.step()

    def theirs():
        with _torch_dropout():
            step()

    return {"row": f"train step patchtst ETTh1, B={batch}x{config['in_channels']} L={config['seq_len']} "
                   f"H={config['horizon']}", "p": config["dropout"], **_three(step, theirs, device, rounds)}


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
    patchtst = {"seq_len": 336, "horizon": 96, "in_channels": 7, "dropout": 0.3, "residual_attention": True}
    if args.quick:
        shapes, rounds, step_rounds, batch, windows = [(8, 17, 64)], 2, 1, 4, 2
        size.update(src_vocab_size=300, tgt_vocab_size=300, dim=32, encoder_depth=1, decoder_depth=1, num_heads=2)
        patchtst.update(seq_len=48, horizon=12, depth=1)
    else:
        shapes = [(64, 17, 128), (64, 17, 256), (64, 128, 256), (8, 512, 1024), (896, 42, 128)]
        rounds, step_rounds, batch, windows = 30, 10, 64, 128
    rounds = args.rounds or rounds
    rows = op_rows(shapes, 0.3, rounds, device)
    rows.append(step_row(size, batch, 17, args.rounds or step_rounds, device))
    rows.append(patchtst_row(patchtst, windows, args.rounds or step_rounds, device))
    table = [{**r, "attnlab_ms": f"{r['attnlab_ms']:.2f}", "torch_ms": f"{r['torch_ms']:.2f}", "ratio": f"{r['ratio']:.2f}x",
              "float_draw_ms": f"{r['float_draw_ms']:.2f}", "lanes_vs_float": f"{r['lanes_vs_float']:.2f}x"}
             for r in rows]
    print(format_table(table, [("row", "row (fwd + bwd)"), ("p", "p"), ("attnlab_ms", "attnlab ms"),
                               ("torch_ms", "F.dropout ms"), ("ratio", "speed-up"), ("float_draw_ms", "float draw ms"),
                               ("lanes_vs_float", "lanes vs float")]))
    payload = {"benchmark": "dropout", "quick": args.quick, "rows": rows, "machine": machine_info(device),
               "git": git_revision(__file__)}
    name = f"dropout-{device.type}{'-quick' if args.quick else ''}.json"
    print(f"wrote {write_json(args.out or RESULTS / name, payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
