"""Sequential recommendation task family: SASRec (Kang & McAuley 2018) on a ``user item`` file.

Training: binary cross-entropy on every position of each user's history, the next item against
one sampled negative (the paper's loss). Evaluation: leave-one-out, the held-out item ranked
against 100 sampled negatives; HR@k and NDCG@k (the paper's Table III reports @10), with ties
counted against the held-out item so a constant model scores zero, not one.

``predict`` and ``explain`` (a file of item ids -> next items) read only the run directory: the
item-id map is in data.json (``info.item_ids``; see ``attnlab.data.sasrec.load_sasrec_task``); a
run written before it was kept re-reads its training file. ``recommend(model, record, user=...,
k=...)`` (``attnlab recommend RUN --user U``) re-reads the run's data file for the users'
histories: data.json keeps its absolute path and SHA-256. Evaluating another file (``attnlab evaluate RUN --data
OTHER``) or resuming reads it with the run's item map (`sasrec_run_vocabulary`).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.data import sasrec as sasrec_data
from attnlab.data.base import path_loader
from attnlab.data.file_checks import not_utf8
from attnlab.errors import ConfigError, DataError
from attnlab.tasks.base import NoOptions, RunVocabulary, TaskCommand, TaskSpec

__all__ = ["SPECS", "SasrecObjective", "target_ranks", "ranking_metrics", "recommend", "history_example", "predict_next",
           "sasrec_run_vocabulary"]


def _core(model: nn.Module) -> nn.Module:
    """The SASRec module itself (DDP wraps it in ``.module``); ``score`` lives there."""
    return getattr(model, "module", model)


def _is_wrapped(model: nn.Module) -> bool:
    return hasattr(model, "module")


def _length_groups(seq: Tensor) -> list[tuple[Tensor, int]]:
    """Rows of a left-padded batch (B, N) in up to 5 groups by history length, longest first,
    each with its longest history n: the model runs a group on its last n columns only.

    Exact: positions are right-aligned and padded keys are masked out, so the states of real
    items do not depend on how much padding precedes them. It matters because short histories
    dominate sparse data (Amazon Games: 88% of the 50 positions are padding, yet a random
    batch of 128 nearly always holds one long history): groups at 1/16, 1/8, 1/4, 1/2 of the
    batch cut the positions computed ~5x.
    """
    lengths = (seq != 0).sum(dim=1)  # (B,)
    b = len(seq)
    if b < 16:
        return [(torch.arange(b, device=seq.device), max(int(lengths.max()), 1))]
    order = lengths.argsort(descending=True)
    cuts = sorted({0, b // 16, b // 8, b // 4, b // 2, b})
    sorted_lengths = lengths[order].tolist()
    return [(order[lo:hi], max(sorted_lengths[lo], 1)) for lo, hi in zip(cuts, cuts[1:])]


def target_ranks(scores: Tensor) -> Tensor:
    """0-based rank of candidate 0 (the held-out item) among each row's candidates.

    Ties count against it (rank = how many others score >= it), so a model that scores
    everything alike ranks last. NaN counts against it too: a NaN compares False with
    everything, so ``>=`` alone ranked a held-out item scored NaN first (HR@k = NDCG@k = 1 for
    a model gone NaN); a NaN held-out score now ranks last, a NaN negative above it.
    Shape: (B, K) -> (B,) int64.
    """
    target, others = scores[:, :1], scores[:, 1:]
    return ((others >= target) | others.isnan() | target.isnan()).sum(dim=1)


def ranking_metrics(ranks: Tensor, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """HR@k (held-out item in the top k) and NDCG@k (1 / log2(rank + 2) when in the top k; one
    relevant item, so the ideal DCG is 1), averaged over users; plus MRR. Shape: ranks (U,)."""
    ranks = ranks.double()
    out: dict[str, float] = {}
    for k in ks:
        hit = ranks < k
        out[f"hr@{k}"] = float(hit.double().mean())
        if k > 1:
            out[f"ndcg@{k}"] = float(torch.where(hit, 1.0 / torch.log2(ranks + 2.0), torch.zeros_like(ranks)).mean())
    out["mrr"] = float((1.0 / (ranks + 1.0)).mean())
    return out


class SasrecObjective:
    """Per-position BCE, next item vs one negative; leave-one-out ranking metrics."""

    metric = "ndcg@10"
    greater_is_better = True

    def loss(self, model: nn.Module, batch: Any) -> tuple[Tensor, int]:
        seq, positives, negatives = batch  # each (B, N)
        core = _core(model)
        target = positives != 0  # (B, N): padding positions carry no loss
        pairs = core.item_embed(torch.stack([positives, negatives], dim=-1))  # (B, N, 2, C)
        if _is_wrapped(model):  # DDP: exactly one forward per step, through the wrapper
            parts = [(slice(None), seq.shape[1], model(seq))]
        else:
            # Embed once, run the blocks per length group: one dense embedding gradient per
            # lookup, not one per group (the 23k x 50 table's gradient costs more than a group).
            x = core.embed(seq)  # (B, N, C)
            parts = [(rows, n, core.encode(x[rows, -n:], seq[rows, -n:] != 0)) for rows, n in _length_groups(seq)]
        total = None
        for rows, n, states in parts:  # states (b, n, C)
            logits = (pairs[rows, -n:] * states.unsqueeze(-2)).sum(-1).float()  # (b, n, 2): SASRec.score
            labels = torch.zeros_like(logits)
            labels[..., 0] = 1.0
            per_position = F.binary_cross_entropy_with_logits(logits, labels, reduction="none").sum(-1)  # (b, n)
            part = (per_position * target[rows, -n:]).sum()
            total = part if total is None else total + part
        # The paper's normalisation: the sum over real positions / their count.
        return total / target.sum().clamp(min=1), int(seq.shape[0])

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: Iterable[Any]) -> dict[str, float]:
        ranks = []
        for history, candidates in batches:  # (B, N), (B, 1 + negatives)
            batch_ranks = torch.empty(len(history), dtype=torch.long)
            for rows, n in _length_groups(history):
                states = model(history[rows, -n:])[:, -1]  # (b, C): the state after the most recent item
                batch_ranks[rows.cpu()] = target_ranks(_core(model).score(states, candidates[rows]).float()).cpu()
            ranks.append(batch_ranks)
        return ranking_metrics(torch.cat(ranks))


# ---- id maps at inference time ------------------------------------------------------------

def _interactions(record: dict[str, Any], data: str | None = None) -> "sasrec_data.Interactions":
    info = record.get("info") or {}
    path = data or info.get("data_path")
    if not path:
        raise DataError("this run's data.json names no data file; pass the 'user item' file it was trained on")
    if not Path(path).is_file():
        raise DataError(f"the run's data file {path} is gone; the users' histories are read from it "
                        "(attnlab recommend RUN --data NEW_PATH names where it moved)")
    if data is None and info.get("data_sha256") and sasrec_data.file_sha256(path) != info["data_sha256"]:
        raise DataError(f"{path} changed since training (SHA-256 differs); ids would no longer match the model")
    inter = sasrec_data.read_interactions(path, _run_items(record), info.get("repeats", "refuse"))
    if inter.num_items != info.get("num_items", inter.num_items):
        raise DataError(f"{path} has {inter.num_items} items but the model was trained on {info['num_items']}")
    return inter


def _run_items(record: dict[str, Any]) -> list[str] | None:
    """The run's item ids in internal order (data.json ``info.item_ids``); None for an older run."""
    info = record.get("info") if isinstance(record.get("info"), dict) else {}
    ids = info.get("item_ids")
    return ids.split() if isinstance(ids, str) else None


def _item_map(record: dict[str, Any]) -> "sasrec_data.Interactions":
    """The run's items (``items``, ``item_index``) for reading a history: from data.json's item map,
    so predict and explain need only the run directory; an older run without one re-reads its
    training file (which must then be where it was, unchanged). No users or histories."""
    items = _run_items(record)
    if items is None:
        return _interactions(record)
    num_items = (record.get("info") or {}).get("num_items", len(items))
    if len(items) != num_items:
        raise DataError(f"this run's data.json maps {len(items)} items but the model was trained on {num_items}")
    return sasrec_data.Interactions(users=[], items=["<pad>", *items], sequences=[])


def sasrec_run_vocabulary(record: dict[str, Any]) -> dict[str, Any]:
    """A finished run's item-id map as a loader option ({} for an older run, whose map is rebuilt from the file)."""
    items = _run_items(record)
    return {} if items is None else {"items": items}


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def _next_scores(model: nn.Module, history: np.ndarray) -> Tensor:
    """Scores of every item as the next one after ``history`` (internal ids). Shape: (num_items + 1,)."""
    core = _core(model)
    seq = torch.from_numpy(sasrec_data.pad_left(history, core.config.max_len))[None].to(_device(model))  # (1, L)
    core.eval()
    return core.score_all(core(seq)[:, -1])[0].float().cpu()


def _top_items(scores: Tensor, exclude: np.ndarray, k: int, items: list[str]) -> list[dict[str, Any]]:
    scores = scores.clone()
    scores[0] = -math.inf
    if len(exclude):
        scores[torch.from_numpy(np.asarray(exclude, dtype=np.int64))] = -math.inf
    available = int(torch.isfinite(scores).sum())
    values, ids = scores.topk(min(k, available))
    return [{"item": items[int(i)], "score": float(v)} for v, i in zip(values, ids)]


def recommend(model: nn.Module, record: dict[str, Any], *, user: str, k: int = 10, exclude_seen: bool = True,
              data: str | None = None) -> dict[str, Any]:
    """Top-k next items for ``user`` (an id as in the data file), after their whole history.

    ``score`` is the model's logit (state . item embedding); items the user already has are
    left out unless ``exclude_seen=False``. ``record`` is the run's data.json; ``data`` points at
    the training file if it moved.
    """
    if not isinstance(k, int) or k < 1:
        raise ConfigError(f"k must be an integer >= 1, got {k!r}")
    inter = _interactions(record, data)
    index = inter.user_index.get(str(user))
    if index is None:
        examples = ", ".join(inter.users[:3])
        raise DataError(f"unknown user {user!r}: not in {inter.path} ({inter.num_users} users, e.g. {examples})")
    history = inter.sequences[index]
    scores = _next_scores(model, history)
    items = _top_items(scores, history if exclude_seen else np.zeros(0, np.int64), k, inter.items)
    return {"user": str(user), "history_length": int(len(history)), "items": items}


def _read_history(path: str, inter: "sasrec_data.Interactions") -> np.ndarray:
    """A file of item ids (whitespace separated, oldest first) -> internal ids. A file of
    ``user item`` lines (the training format) is refused, not read as items (see `_training_format`)."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise DataError(f"cannot read item history {path}: {exc}") from None
    except UnicodeDecodeError:
        raise not_utf8(Path(path)) from None
    if _training_format(text):
        raise DataError(f"{path}: holds 'user item' lines (the training file's format); predict and explain take "
                        "one history: a user's item ids, oldest first, separated by spaces or newlines "
                        "(e.g. the second column of one user's lines)")
    tokens = text.split()
    unknown = [t for t in tokens if t not in inter.item_index]
    if unknown:
        where = inter.path or f"(the run's item map, {inter.num_items} items)"
        raise DataError(f"{path}: item(s) {unknown[:5]} are not in the training data {where}")
    if not tokens:
        raise DataError(f"{path}: no item ids found (expected ids separated by spaces or newlines, oldest first)")
    return np.array([inter.item_index[t] for t in tokens], dtype=np.int64)


def _training_format(text: str) -> bool:
    """True for ``user item`` lines: two or more lines, each of two fields, a first field repeated
    (a user's id on each of their lines). Read as a history, the user ids would become items
    (silently, where user and item ids are both numbers). A history written two items a line
    repeats no id in its first column unless an item recurs there, which one history rarely does."""
    rows = [line.split() for line in text.splitlines() if line.strip()]
    if len(rows) < 2 or any(len(row) != 2 for row in rows):
        return False
    return len({row[0] for row in rows}) < len(rows)


def predict_next(model: nn.Module, record: dict[str, Any], inputs: list[str], top_k: int) -> list[dict[str, Any]]:
    """``attnlab predict``: each input is a file of item ids (oldest first); the top-k next items."""
    inter = _item_map(record)
    results = []
    for path in inputs:
        history = _read_history(path, inter)
        top = _top_items(_next_scores(model, history), history, max(top_k, 1), inter.items)
        results.append({"input": path, "class": top[0]["item"], "score": top[0]["score"],
                        "top": [{"class": t["item"], "score": t["score"]} for t in top]})
    return results


# ---- attention reports ----------------------------------------------------------------------

@torch.no_grad()
def history_example(model: nn.Module, history: Tensor, items: list[str], *, title: str, label: str | None = None,
                    candidates: Tensor | None = None):
    """A ``ReportExample`` (kind "tokens") of one left-padded history (L,): attention among its
    real items, the top next item as the prediction, and (with candidates, held-out first) the
    held-out item's rank among them."""
    from attnlab.explain.capture import capture
    from attnlab.explain.report import ReportExample

    core = _core(model)
    core.eval()
    seq = history[None].to(_device(core))  # (1, L)
    n = int((history != 0).sum())
    if n == 0:
        raise DataError(f"{title}: the history is empty")
    maps = capture(core, seq, device="cpu")
    states = maps.output[:, -1]  # (1, C)
    seen = history[history != 0].numpy()
    top = _top_items(core.score_all(states)[0].float().cpu(), seen, 1, items)[0]
    prediction = f"next: {top['item']}"
    if candidates is not None:
        rank = int(target_ranks(core.score(states, candidates[None].to(seq.device)).float())[0])
        prediction += f" (held-out item ranked {rank + 1} of {len(candidates)})"
    tokens = [items[int(i)] for i in history[-n:]]
    return ReportExample(
        title=title, kind="tokens", input=tokens, tokens=tokens, prediction=prediction, label=label,
        maps=[m[0, :, -n:, -n:].float().numpy() for m in maps.maps], layer_names=list(maps.names),
    )


def _report(model: nn.Module, task_data, count: int) -> list:
    test = task_data.test
    # The longest histories among the first users make the most readable attention maps.
    pool = range(min(len(test), 50 * max(count, 1)))
    chosen = sorted(pool, key=lambda i: -int((test.history[i] != 0).sum()))[:count]
    examples = []
    for i in sorted(chosen):
        history, candidates = test[i]
        user = test.user_ids[int(test.users[i])]
        examples.append(history_example(model, history, test.item_ids, title=f"user {user}",
                                        label=test.item_ids[int(candidates[0])], candidates=candidates))
    return examples


def _explain(model: nn.Module, record: dict[str, Any], input_path: str):
    inter = _item_map(record)
    history = _read_history(input_path, inter)
    seq = torch.from_numpy(sasrec_data.pad_left(history, _core(model).config.max_len))
    return history_example(model, seq, inter.items, title=Path(input_path).name)


def _recommend_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--user", required=True, help="user id as it appears in the data file")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--json", action="store_true")
    p.add_argument("--data", help="the 'user item' file the run was trained on, if it moved since")


def _recommend_command(model: nn.Module, record: dict[str, Any], args: argparse.Namespace) -> str:
    result = recommend(model, record, user=args.user, k=args.k, data=args.data)
    if args.json:
        return json.dumps(result, indent=2)
    return "\n".join(f"{rank:>3}. item {item['item']}  (score {item['score']:.3f})"
                     for rank, item in enumerate(result["items"], start=1))


RECOMMEND = TaskCommand("recommend", "top-k next items for a user of a sequential-recommendation run",
                        _recommend_arguments, _recommend_command)


load_sasrec = path_loader("sasrec", sasrec_data.load_sasrec_task, "a text file of 'user item' lines, each user's lines in time order")


SPECS = (
    TaskSpec(
        name="sasrec", load=load_sasrec, models=("sasrec",),
        description="next-item recommendation from a 'user item' file (SASRec, leave-one-out HR/NDCG@10)",
        # The paper's setting (Adam lr 1e-3, betas (0.9, 0.98), batch 128, no weight decay), except
        # that the lr decays along a cosine over 300 epochs to 1e-5 instead of staying constant
        # (chosen on validation NDCG@10: benchmarks/sasrec.py).
        default_train={"epochs": 300, "batch_size": 128, "lr": 1e-3, "adam_betas": (0.9, 0.98), "weight_decay": 0.0,
                       "warmup_epochs": 0.0, "min_lr_factor": 0.01, "grad_clip": 0.0, "keep": "best"},
        default_data_options={"max_len": 50, "num_negatives": 100},
        objective_options=NoOptions,
        model_fields=lambda task_data: {"num_items": task_data.info["num_items"], "max_len": task_data.info["max_len"]},
        objective=lambda task_data, options, evaluation: SasrecObjective(),
        report_examples=_report, predict=predict_next, explain_example=_explain, commands=(RECOMMEND,),
        run_vocabulary=RunVocabulary(sasrec_run_vocabulary),
    ),
)
