"""Are attnlab's models as fast as the ones people use today? Same weights, same inputs, one run.

Each row builds the peer from a config (random weights, nothing downloaded), saves it with
``save_pretrained`` and loads the very same weights into attnlab through
``attnlab.interop`` (so both sides compute the same function; the max output difference is
reported as a check), then times the two alternately, call for call, and reports the median
of each and the ratio ``ours / peer`` in throughput (> 1: attnlab is faster).

Rows:
  encoder-train N=128/512  tokens/s of a training step (forward, mean-square loss on the last
                           hidden states, backward, AdamW step) of a 4-layer x 256-wide BERT
                           encoder: attnlab ``text-transformer`` (post-norm, BERT options)
                           vs Hugging Face ``BertModel`` (attn_implementation="sdpa").
                           Target (issue 7): >= 1.2x.
  encoder-infer N=128/512  tokens/s of inference (no grad, eval) of the same encoder vs
                           ``torch.nn.TransformerEncoder`` with the same sizes in its fast
                           path (eval + no grad + batch_first + post-norm), random weights.
  generate B=1/8           new tokens/s of greedy KV-cache generation (64-token prompt, 64 new
                           tokens) of a 4 x 256 GPT-2: attnlab ``gpt-lm`` with ``generate``
                           vs Hugging Face ``GPT2LMHeadModel.generate`` (do_sample=False,
                           use_cache=True). Target (issue 7): >= 1.5x. The two must produce
                           the same tokens.
  vit-train                images/s of a training step of a ViT (32x32 RGB, 4x4 patches,
                           6 x 192): attnlab ``VisionTransformer`` vs Hugging Face
                           ``ViTForImageClassification`` (sdpa). timm, which issue 7 names as
                           the peer, needs torchvision and does not import beside the pinned
                           CPU torch; the row says so.

``--quick`` shrinks every size to seconds (CI smoke test). Results:
benchmarks/results/models-<device>[-quick].json unless ``--out``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (add_allocator_argument, apply_allocator, format_table, git_revision, machine_info, resolve_device,  # noqa: E402
                     route_header, routes_used, time_paired, write_json)

RESULTS = Path(__file__).resolve().parent / "results"


def _bert(size: dict[str, int], tmp: Path, device: torch.device):
    from transformers import BertConfig, BertModel

    from attnlab.interop import load_hf_bert

    cfg = BertConfig(vocab_size=size["vocab"], hidden_size=size["dim"], num_hidden_layers=size["depth"],
                     num_attention_heads=size["heads"], intermediate_size=4 * size["dim"],
                     max_position_embeddings=512, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                     attn_implementation="sdpa")
    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(tmp / "bert")
    peer = BertModel.from_pretrained(tmp / "bert", attn_implementation="sdpa").to(device)
    ours = load_hf_bert(tmp / "bert").to(device)
    return ours, peer


def _train_step(model: torch.nn.Module, forward: Callable[[], torch.Tensor]) -> Callable[[], None]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        forward().float().square().mean().backward()
        opt.step()

    return step


def encoder_rows(size: dict[str, int], seqs: list[int], batch: int, rounds: int, device: torch.device, tmp: Path) -> list[dict]:
    ours, peer = _bert(size, tmp, device)
    rows = []
    for n in seqs:
        ids = torch.randint(5, size["vocab"], (batch, n), device=device)
        ours.eval(), peer.eval()
        with torch.no_grad():
            diff = float((ours(ids)[0] - peer(input_ids=ids).last_hidden_state).abs().max())
        ours.train(), peer.train()
        t_ours, t_peer = time_paired(_train_step(ours, lambda: ours(ids)[0]),
                                 _train_step(peer, lambda: peer(input_ids=ids).last_hidden_state), device, rounds)
        rows.append({"row": f"encoder-train N={n}", "peer": "HF BertModel (sdpa)", "unit": "tokens/s",
                     "ours": batch * n / t_ours, "theirs": batch * n / t_peer, "ratio": t_peer / t_ours,
                     "target": 1.2, "max_abs_diff": diff})
    # Inference against PyTorch's fused encoder (its own random weights: a speed comparison only).
    layer = torch.nn.TransformerEncoderLayer(size["dim"], size["heads"], 4 * size["dim"], dropout=0.0,
                                             activation="gelu", batch_first=True, norm_first=False)
    fused = torch.nn.TransformerEncoder(layer, size["depth"], enable_nested_tensor=False).to(device).eval()
    ours.eval()
    for n in seqs:
        ids = torch.randint(5, size["vocab"], (batch, n), device=device)
        emb = torch.randn(batch, n, size["dim"], device=device)
        with torch.no_grad():
            t_ours, t_peer = time_paired(lambda: ours(ids), lambda: fused(emb), device, rounds)
        rows.append({"row": f"encoder-infer N={n}", "peer": "nn.TransformerEncoder (fast path)", "unit": "tokens/s",
                     "ours": batch * n / t_ours, "theirs": batch * n / t_peer, "ratio": t_peer / t_ours,
                     "target": None, "max_abs_diff": None})
    return rows


def generation_rows(size: dict[str, int], batches: list[int], prompt: int, new: int, rounds: int,
                    device: torch.device, tmp: Path) -> list[dict]:
    from transformers import GPT2Config, GPT2LMHeadModel

    from attnlab.models.generation import generate
    from attnlab.interop import load_hf_gpt2

    cfg = GPT2Config(vocab_size=size["vocab"], n_positions=prompt + new, n_embd=size["dim"], n_layer=size["depth"],
                     n_head=size["heads"], resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                     bos_token_id=None, eos_token_id=None)  # no end token: both sides generate every token
    torch.manual_seed(0)
    GPT2LMHeadModel(cfg).save_pretrained(tmp / "gpt2")
    peer = GPT2LMHeadModel.from_pretrained(tmp / "gpt2").to(device).eval()
    ours = load_hf_gpt2(tmp / "gpt2").to(device).eval()
    rows = []
    for b in batches:
        ids = torch.randint(0, size["vocab"], (b, prompt), device=device)
        ones = torch.ones_like(ids)

        def run_ours():
            return generate(ours, ids, max_new_tokens=new, temperature=0.0)

        def run_peer():
            return peer.generate(ids, attention_mask=ones, max_new_tokens=new, do_sample=False,
                                 use_cache=True, pad_token_id=0)

        with torch.no_grad():
            same = bool(torch.equal(run_ours(), run_peer()))
            t_ours, t_peer = time_paired(run_ours, run_peer, device, rounds)
        rows.append({"row": f"generate B={b}", "peer": "HF GPT2LMHeadModel.generate", "unit": "new tokens/s",
                     "ours": b * new / t_ours, "theirs": b * new / t_peer, "ratio": t_peer / t_ours,
                     "target": 1.5, "max_abs_diff": 0.0 if same else None, "same_tokens": same})
    return rows


def vit_rows(size: dict[str, int], batch: int, rounds: int, device: torch.device, tmp: Path) -> list[dict]:
    from transformers import ViTConfig, ViTForImageClassification

    from attnlab.interop import load_hf_vit

    cfg = ViTConfig(image_size=32, patch_size=4, num_channels=3, hidden_size=size["vit_dim"],
                    num_hidden_layers=size["vit_depth"], num_attention_heads=size["heads"],
                    intermediate_size=4 * size["vit_dim"], num_labels=10, hidden_dropout_prob=0.0,
                    attention_probs_dropout_prob=0.0, attn_implementation="sdpa")
    torch.manual_seed(0)
    ViTForImageClassification(cfg).save_pretrained(tmp / "vit")
    peer = ViTForImageClassification.from_pretrained(tmp / "vit", attn_implementation="sdpa").to(device).train()
    ours = load_hf_vit(tmp / "vit").to(device).train()
    x = torch.randn(batch, 3, 32, 32, device=device)
    t_ours, t_peer = time_paired(_train_step(ours, lambda: ours(x)), _train_step(peer, lambda: peer(pixel_values=x).logits),
                             device, rounds)
    try:
        importlib.import_module("timm")  # only probed: is the peer installed and importable?
        note = "timm importable but not measured here"
    except Exception as e:  # noqa: BLE001 - any import failure means the peer is unavailable
        note = f"timm not importable ({type(e).__name__}); HF ViT used instead"
    return [{"row": "vit-train", "peer": "HF ViTForImageClassification (sdpa)", "unit": "images/s",
             "ours": batch / t_ours, "theirs": batch / t_peer, "ratio": t_peer / t_ours, "target": 1.0,
             "max_abs_diff": None, "note": note}]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave as is)")
    p.add_argument("--rounds", type=int, default=None, help="alternating timed calls per side (default 5)")
    p.add_argument("--rows", nargs="+", choices=("encoder", "generate", "vit"), default=["encoder", "generate", "vit"])
    p.add_argument("--quick", action="store_true", help="tiny sizes: a seconds-long smoke run")
    p.add_argument("--out", type=Path, default=None)
    add_allocator_argument(p)
    args = p.parse_args(argv)
    apply_allocator(args.cpu_allocator)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if args.quick:
        size = {"vocab": 500, "dim": 32, "depth": 1, "heads": 2, "vit_dim": 32, "vit_depth": 1}
        seqs, batch, gen_batches, prompt, new, rounds, vit_batch = [16], 2, [1, 2], 8, 4, 1, 4
    else:
        size = {"vocab": 8000, "dim": 256, "depth": 4, "heads": 4, "vit_dim": 192, "vit_depth": 6}
        seqs, batch, gen_batches, prompt, new, rounds, vit_batch = [128, 512], 8, [1, 8], 64, 64, 5, 64
    rounds = args.rounds or rounds
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        if "encoder" in args.rows:
            rows += encoder_rows(size, seqs, batch, rounds, device, Path(tmp))
        if "generate" in args.rows:
            rows += generation_rows(size, gen_batches, prompt, new, rounds, device, Path(tmp))
        if "vit" in args.rows:
            rows += vit_rows(size, vit_batch, rounds, device, Path(tmp))
    table = [{**r, "ours": f"{r['ours']:,.0f}", "theirs": f"{r['theirs']:,.0f}", "ratio": f"{r['ratio']:.2f}x",
              "target": "" if r["target"] is None else f">= {r['target']}x",
              "met": "" if r["target"] is None else ("yes" if r["ratio"] >= r["target"] else "NO")} for r in rows]
    print(route_header())
    print(f"autotuned routes: {routes_used()}")
    print(format_table(table, [("row", "row"), ("peer", "peer"), ("unit", "unit"), ("ours", "attnlab"),
                               ("theirs", "peer"), ("ratio", "ours/peer"), ("target", "target"), ("met", "met")]))
    for r in rows:
        if r.get("note"):
            print(f"note ({r['row']}): {r['note']}")
        if r.get("same_tokens") is False:
            print(f"WARNING ({r['row']}): attnlab and the peer generated different tokens")
    payload = {"benchmark": "models", "quick": args.quick, "sizes": size, "batch": batch, "rows": rows,
               "machine": machine_info(device), "routes_used": routes_used(), "git": git_revision(__file__)}
    name = f"models-{device.type}{'-quick' if args.quick else ''}.json"
    print(f"wrote {write_json(args.out or RESULTS / name, payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
