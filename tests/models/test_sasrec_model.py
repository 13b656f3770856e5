"""SASRec model and task: causality, padding invariance, loss and metrics against plain
references, a tiny end-to-end training that learns a pattern, and ``recommend``."""

from __future__ import annotations

import json
import shutil
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attnlab.errors import ConfigError, DataError
from attnlab.explain.capture import capture
from attnlab.models import create_model
from attnlab.tasks.sasrec import SasrecObjective, ranking_metrics, recommend, target_ranks


def _model(**overrides):
    config = dict(num_items=30, max_len=12, dim=16, depth=2, num_heads=2, dropout=0.1, attn_dropout=0.1)
    return create_model("sasrec", **{**config, **overrides})


def _histories(batch: int, max_len: int, num_items: int) -> torch.Tensor:
    """Left-padded random histories of random lengths 1..max_len. Shape: (B, L)."""
    seq = torch.randint(1, num_items + 1, (batch, max_len))
    lengths = torch.randint(1, max_len + 1, (batch,))
    return seq.masked_fill(torch.arange(max_len)[None] < (max_len - lengths)[:, None], 0)


def test_causal_later_items_do_not_change_earlier_states():
    model = _model().eval()
    seq = _histories(4, 12, 30)
    seq[:, 6:] = torch.randint(1, 31, (4, 6))  # positions 6.. are real items in every row
    changed = seq.clone()
    changed[:, 9] = (changed[:, 9] % 30) + 1
    with torch.no_grad():
        a, b = model(seq), model(changed)
    torch.testing.assert_close(a[:, :9], b[:, :9], rtol=0, atol=0)
    assert not torch.allclose(a[:, 9:], b[:, 9:])


def test_padding_does_not_change_real_states():
    """Right-aligned positions + key-padding mask: trimming or adding left padding is exact."""
    model = _model().eval()
    seq = _histories(5, 12, 30)
    seq[:, :-4] = 0  # histories of 1..4 items: the first 8 columns are padding only
    seq[:, -1] = torch.randint(1, 31, (5,))
    with torch.no_grad():
        full = model(seq)
        trimmed = model(seq[:, -4:])
    real = seq[:, -4:] != 0
    torch.testing.assert_close(trimmed[real], full[:, -4:][real], rtol=1e-5, atol=1e-6)
    assert torch.isfinite(full).all()  # all-padding query rows give zeros, not NaN


@pytest.mark.parametrize("block", ["paper", "pre-norm"])
def test_blocks_match_a_plain_float64_rewrite(block):
    """One block against the formulas written out in float64: the paper's code adds the
    normalised input and takes keys/values from the raw input; pre-norm is x + f(LN x)."""
    model = _model(block=block, depth=1, num_heads=2).double().eval()
    x = torch.randn(3, 7, 16, dtype=torch.float64)
    keep = torch.ones(3, 7, dtype=torch.bool)
    keep[0, :3] = False  # left padding
    blk = model.blocks[0]
    with torch.no_grad():
        got = blk(x, mask=keep, is_causal=True)

    def ln(t, norm):
        return F.layer_norm(t, (16,), norm.weight, norm.bias, norm.eps)

    def attn(q_in, kv_in):
        a = blk.attn

        def heads(t):
            return t.view(3, 7, 2, 8).transpose(1, 2)  # (B, H, N, D)

        q, k, v = heads(a.q_proj(q_in)), heads(a.k_proj(kv_in)), heads(a.v_proj(kv_in))
        scores = q @ k.transpose(-1, -2) / math.sqrt(8)
        allowed = torch.ones(7, 7, dtype=torch.bool).tril() & keep[:, None, None, :]
        w = scores.masked_fill(~allowed, float("-inf")).softmax(-1).nan_to_num(0.0)
        return a.out_proj((w @ v).transpose(1, 2).reshape(3, 7, 16))

    def ffn(t):
        return blk.mlp.fc2(torch.relu(blk.mlp.fc1(t)))

    with torch.no_grad():
        if block == "paper":
            q = ln(x, blk.norm1)
            h = ln(q + attn(q, x), blk.norm2)
            want = h + ffn(h)
        else:
            y = x + attn(ln(x, blk.norm1), ln(x, blk.norm1))
            want = y + ffn(ln(y, blk.norm2))
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    with pytest.raises(ConfigError, match="block"):
        _model(block="post-norm")


def test_score_and_shared_embedding():
    model = _model().eval()
    states = torch.randn(3, 16)
    items = torch.randint(1, 31, (3, 7))
    scores = model.score(states, items)
    assert scores.shape == (3, 7)
    torch.testing.assert_close(scores, model.score_all(states).gather(1, items))
    torch.testing.assert_close(scores[1, 2], states[1] @ model.item_embed.weight[items[1, 2]])


def test_config_validation():
    with pytest.raises(ConfigError, match="dim=10 must be divisible by num_heads=3"):
        create_model("sasrec", dim=10, num_heads=3)
    with pytest.raises(ConfigError, match="dropout must be in"):
        create_model("sasrec", dropout=1.0)
    with pytest.raises(ValueError, match=r"SASRec expects item ids \(B, N <= 50\)"):
        create_model("sasrec")(torch.ones(2, 51, dtype=torch.long))


def test_attention_is_captured_and_causal():
    model = _model().eval()
    seq = _histories(2, 12, 30)
    maps = capture(model, seq)
    assert len(maps) == 2 and maps.maps[0].shape == (2, 2, 12, 12)
    weights = maps.maps[0]
    assert torch.all(weights.triu(diagonal=1) == 0)  # no look-ahead
    pad = seq == 0
    assert torch.all(weights.masked_select(pad[:, None, None, :].expand_as(weights)) == 0)  # padding never attended


def test_ranking_metrics_hand_computed():
    scores = torch.zeros(1, 101)
    scores[0, 0] = 5.0  # held-out item
    scores[0, 1], scores[0, 2] = 6.0, 7.0  # two negatives above it: rank 3
    assert target_ranks(scores).tolist() == [2]
    m = ranking_metrics(target_ranks(scores))
    assert m["hr@10"] == 1.0 and m["hr@1"] == 0.0
    assert m["ndcg@10"] == pytest.approx(1 / math.log2(4)) and m["ndcg@5"] == pytest.approx(0.5)
    assert m["mrr"] == pytest.approx(1 / 3)
    # averaged over users; ties count against the held-out item; rank 11 is outside the top 10
    ranks = target_ranks(torch.tensor([[1.0, 1.0, 0.0], [2.0, 0.0, 0.0]]))
    assert ranks.tolist() == [1, 0]
    m = ranking_metrics(torch.tensor([0, 10]))
    assert m["hr@10"] == 0.5 and m["ndcg@10"] == pytest.approx(0.5) and m["hr@1"] == 0.5


def test_loss_and_evaluate_match_plain_references():
    """Length groups are an optimisation: the loss equals the plain full-batch BCE."""
    model = _model(dropout=0.0, attn_dropout=0.0)
    objective = SasrecObjective()
    seq = _histories(40, 12, 30)  # >= 16 rows, so the grouped path runs
    positives = torch.where(seq != 0, torch.randint(1, 31, seq.shape), 0)
    positives[:, -1] = torch.randint(1, 31, (40,))
    negatives = torch.where(positives != 0, torch.randint(1, 31, seq.shape), 0)
    loss, n = objective.loss(model, (seq, positives, negatives))
    states = model(seq)
    pos = (states * model.item_embed(positives)).sum(-1)
    neg = (states * model.item_embed(negatives)).sum(-1)
    keep = positives != 0
    reference = (F.softplus(-pos)[keep].sum() + F.softplus(neg)[keep].sum()) / keep.sum()
    assert n == 40
    torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-6)
    model.eval()
    candidates = torch.randint(1, 31, (40, 11))
    metrics = objective.evaluate(model, [(seq[:25], candidates[:25]), (seq[25:], candidates[25:])])
    with torch.no_grad():
        ranks = target_ranks(model.score(model(seq)[:, -1], candidates))
    assert metrics == ranking_metrics(ranks)


# --- end to end: a pattern a sequence model must learn ------------------------------------


def _pattern_file(path, *, users: int = 240, items: int = 40, seed: int = 0):
    """Each user walks the item ring: s, s+1, s+2, ... (next item = current + 1, mod items)."""
    rng = np.random.default_rng(seed)
    lines = []
    for u in range(users):
        start, length = rng.integers(items), rng.integers(5, 12)
        lines += [f"user{u} {(start + t) % items + 1}" for t in range(length)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def pattern_run(tmp_path_factory):
    from attnlab.run import train_run
    from attnlab.run_config import resolve_config

    folder = tmp_path_factory.mktemp("sasrec")
    data = _pattern_file(folder / "ring.txt")
    config = resolve_config({
        "task": "sasrec", "data": str(data), "data_options": {"max_len": 10, "num_negatives": 20},
        "model_config": {"dim": 32, "dropout": 0.1, "attn_dropout": 0.0},
        "train": {"epochs": 6, "batch_size": 16, "lr": 1e-2, "progress": False, "device": "cpu"},
        "report_examples": 1,
    })
    metrics = train_run(config, out=folder / "run")
    return folder, data, metrics


def test_training_learns_the_pattern_and_beats_popularity(pattern_run):
    from attnlab.data.sasrec import load_sasrec_task

    folder, data, metrics = pattern_run
    task = load_sasrec_task(str(data), seed=0, max_len=10, num_negatives=20)
    counts = np.bincount(np.concatenate([task.train.inputs.numpy().ravel(), task.train.positives.numpy().ravel()]),
                         minlength=41).astype(float)
    counts[0] = 0
    popularity = ranking_metrics(target_ranks(torch.from_numpy(counts)[task.test.candidates]))
    random_hr10 = 10 / 21
    assert metrics["test"]["hr@10"] > 0.9, metrics["test"]
    assert metrics["test"]["hr@10"] > popularity["hr@10"] + 0.2 and metrics["test"]["hr@10"] > random_hr10 + 0.2
    assert metrics["test"]["ndcg@10"] > popularity["ndcg@10"] + 0.2
    record = json.loads((folder / "run" / "data.json").read_text())
    assert record["info"]["num_items"] == 40 and record["task"] == "sasrec"
    report = (folder / "run" / "report.html").read_text()
    assert '"type":"tokens"' in report and "held-out item ranked" in report


def test_recommend(pattern_run, tmp_path):
    from attnlab.run import load_run

    folder, data, _ = pattern_run
    run_dir = folder / "run"
    _, model, record = load_run(run_dir)
    lines = [line.split() for line in data.read_text().splitlines()]
    history = [item for user, item in lines if user == "user3"]
    result = recommend(model, record, user="user3", k=5)
    assert result["user"] == "user3" and len(result["items"]) == 5
    assert result["history_length"] == len(history)
    top = [r["item"] for r in result["items"]]
    assert top[0] == str(int(history[-1]) % 40 + 1)  # the ring's next item
    assert not set(top) & set(history)  # already-seen items are left out
    scores = [r["score"] for r in result["items"]]
    assert scores == sorted(scores, reverse=True)
    with pytest.raises(DataError, match=r"unknown user 'nobody': not in .*ring\.txt \(240 users"):
        recommend(model, record, user="nobody", k=5)
    with pytest.raises(ConfigError, match="k must be an integer >= 1"):
        recommend(model, record, user="user3", k=0)


def test_predict_from_a_history_file(pattern_run, tmp_path):
    from attnlab.run import predict_run

    folder, _, _ = pattern_run
    history = tmp_path / "history.txt"
    history.write_text("7 8 9\n10\n")
    out = predict_run(folder / "run", [str(history)], top_k=3)
    assert out[0]["class"] == "11" and len(out[0]["top"]) == 3
    history.write_bytes(b"\xef\xbb\xbf7 8 9\n10\n")  # "UTF-8 with BOM": the mark is not part of item 7
    assert predict_run(folder / "run", [str(history)], top_k=3) == out
    history.write_text("7 999\n")
    with pytest.raises(DataError, match=r"item\(s\) \['999'\] are not in the training data"):
        predict_run(folder / "run", [str(history)], top_k=3)


def test_recommend_reads_a_moved_data_file_from_data(pattern_run, tmp_path, capsys):
    from attnlab.cli import main

    folder, data, _ = pattern_run
    run_dir = tmp_path / "run"
    shutil.copytree(folder / "run", run_dir)
    record = json.loads((run_dir / "data.json").read_text())
    record["info"]["data_path"] = str(tmp_path / "gone.txt")  # the file moved since training
    (run_dir / "data.json").write_text(json.dumps(record))
    capsys.readouterr()
    assert main(["recommend", str(run_dir), "--user", "user3", "-k", "2"]) == 2
    assert "recommend RUN --data NEW_PATH" in capsys.readouterr().err
    assert main(["recommend", str(run_dir), "--user", "user3", "-k", "2", "--data", str(data), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["items"]) == 2
