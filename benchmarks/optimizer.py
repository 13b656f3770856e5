"""Does the trainer's fused AdamW (``--train.fused_optimizer``, the default) pay? Side by side, one run.

Rows (fp32, timed alternately call for call; speed-up = per-tensor time / fused time, > 1: the
default is faster):
  AdamW step <model>   ``optimizer.step()`` alone on the model's parameters with random
                       gradients, in the trainer's groups (decay / no decay): torch's fused
                       kernel (``fused=True``) vs its per-tensor loop (``foreach=False``, what
                       ``torch.optim.AdamW`` does on CPU unless told) and the multi-tensor
                       ``foreach=True`` route, for the models the CLI trains by default and the
                       MiniLM shape that ``--init`` fine-tunes (BERT 6 x 384, 30,522 tokens).
  train step <model>   forward, cross-entropy, backward, clipping and the AdamW step of the main
                       job's model (``vit-tiny`` on 8 x 8 digits, batch 64) and of the MiniLM
                       shape (batch 32 x 48 tokens), fused vs per-tensor (same weights, batch).

``--quick``: small models, a few rounds (smoke test). Results:
benchmarks/results/optimizer-<device>[-quick].json unless ``--out``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import format_table, git_revision, machine_info, time_rounds, write_json  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
ROUTES = {"fused": {"fused": True}, "per-tensor": {"foreach": False}, "foreach": {"foreach": True}}


def _model(name: str, fields: dict[str, Any]) -> torch.nn.Module:
    from attnlab.models.registry import create_model

    torch.manual_seed(0)
    return create_model(name, **fields)


def _optimizer(model: torch.nn.Module, route: str) -> torch.optim.Optimizer:
    from attnlab.training.param_groups import parameter_groups

    groups = parameter_groups(model, lr=1e-4, weight_decay=0.01)
    return torch.optim.AdamW(groups, lr=1e-4, **ROUTES[route])


def _medians(times: list[list[float]]) -> list[float]:
    """The median time of each call over the rounds of ``time_rounds`` (the upper one for an even count)."""
    return [sorted(column)[len(column) // 2] for column in zip(*times)]


def step_rows(label: str, name: str, fields: dict[str, Any], rounds: int, device: torch.device) -> list[dict]:
    """``optimizer.step()`` alone, each route on its own copy of the model (same gradients)."""
    calls: list[Callable[[], None]] = []
    for route in ROUTES:
        model = _model(name, fields).to(device)
        torch.manual_seed(1)
        for p in model.parameters():
            p.grad = torch.randn_like(p) * 1e-3
        opt = _optimizer(model, route)
        calls.append(opt.step)
    times = time_rounds(calls, device, rounds)
    med = _medians(times)
    params = sum(p.numel() for p in _model(name, fields).parameters())
    return [{"row": f"AdamW step {label}", "params_m": params / 1e6, "route": route, "ms": m * 1e3,
             "speedup_of_fused": m / med[0]} for route, m in zip(ROUTES, med)]


def train_rows(label: str, name: str, fields: dict[str, Any], batch: tuple[torch.Tensor, torch.Tensor], rounds: int,
               device: torch.device) -> list[dict]:
    """One training step (forward, loss, backward, clip, step) with the fused vs per-tensor AdamW."""
    x, y = (t.to(device) for t in batch)
    calls = []
    for route in ("fused", "per-tensor"):
        model = _model(name, fields).to(device).train()
        opt = _optimizer(model, route)

        def step(model=model, opt=opt) -> None:
            F.cross_entropy(model(x).float(), y).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)

        calls.append(step)
    times = time_rounds(calls, device, rounds)
    med = _medians(times)
    return [{"row": f"train step {label}", "params_m": sum(p.numel() for p in model.parameters()) / 1e6, "route": route,
             "ms": m * 1e3, "speedup_of_fused": m / med[0]} for route, m in zip(("fused", "per-tensor"), med)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave as is)")
    p.add_argument("--rounds", type=int, default=None, help="alternating timed calls per route (default 15)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    minilm = {"vocab_size": 30522, "max_length": 512, "dim": 384, "depth": 6, "num_heads": 12, "mlp_ratio": 4.0,
              "type_vocab_size": 2, "norm_first": False, "embed_norm": True, "pooling": "mean", "num_classes": 2}
    vit = {"image_size": (8, 8), "in_channels": 1, "num_classes": 10}
    if args.quick:
        rounds, tokens = 2, 8
        minilm.update(vocab_size=500, dim=32, depth=1, num_heads=2, max_length=16)
    else:
        rounds, tokens = 15, 48
    rounds = args.rounds or rounds
    g = torch.Generator().manual_seed(0)
    rows = step_rows("vit-tiny (main job)", "vit-tiny", vit, rounds, device)
    rows += step_rows("text-transformer (default)", "text-transformer", {"vocab_size": 8000, "num_classes": 2}, rounds,
                      device)
    rows += step_rows("MiniLM shape (6 x 384)", "text-transformer", minilm, rounds, device)
    digits = (torch.randn(64, 1, 8, 8, generator=g), torch.randint(0, 10, (64,), generator=g))
    rows += train_rows("vit-tiny, 64 digits", "vit-tiny", vit, digits, rounds, device)
    text = (torch.randint(5, minilm["vocab_size"], (32, tokens), generator=g), torch.randint(0, 2, (32,), generator=g))
    rows += train_rows(f"MiniLM shape, 32 x {tokens} tokens", "text-transformer", minilm, text, rounds, device)
    table = [{**r, "params_m": f"{r['params_m']:.2f}", "ms": f"{r['ms']:.1f}", "speedup_of_fused": f"{r['speedup_of_fused']:.2f}x"}
             for r in rows]
    print(format_table(table, [("row", "row"), ("params_m", "params (M)"), ("route", "AdamW route"), ("ms", "ms"),
                               ("speedup_of_fused", "time / fused")]))
    payload = {"benchmark": "optimizer", "quick": args.quick, "rounds": rounds, "rows": rows,
               "machine": machine_info(device), "git": git_revision(__file__)}
    name = f"optimizer-{device.type}{'-quick' if args.quick else ''}.json"
    print(f"wrote {write_json(args.out or RESULTS / name, payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
