"""Deep ensembles of finished runs: averaged probabilities against a float64 reference, refusals."""

from __future__ import annotations

import json

import pytest
import torch

from attnlab.cli import main
from attnlab.ensemble import ensemble_probabilities, evaluate_ensemble
from attnlab.errors import ConfigError
from attnlab.run import evaluate_run, load_run
from tests.conftest import train_tiny_sasrec

TINY = ["--epochs", "1", "--model.depth", "1", "--model.num_heads", "2", "--train.batch_size", "64",
        "--train.progress", "false"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two digits runs on the same split (seed 0) of different widths, and one on another split (seed 1)."""
    root = tmp_path_factory.mktemp("ensemble")
    dirs = {}
    for name, extra in (("a", ["--model.dim", "32"]), ("b", ["--model.dim", "16"]),
                        ("other-split", ["--model.dim", "16", "--train.seed", "1"])):
        dirs[name] = root / name
        assert main(["train", "--out", str(dirs[name]), *TINY, *extra]) == 0
    return dirs


def _reference_probabilities(run_dir) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax of the model's float64 logits over the digits test split, example by example."""
    from attnlab.data.vision import load_digits_task

    config, model, _ = load_run(run_dir)
    test = load_digits_task(seed=config.train.seed).test
    model = model.double()
    probs, labels = [], []
    with torch.no_grad():
        for i in range(len(test)):
            x, y = test[i]
            probs.append(torch.softmax(model(x[None].double()), dim=-1)[0])
            labels.append(int(y))
    return torch.stack(probs), torch.tensor(labels)


def test_probabilities_are_the_members_mean(runs):
    probs, labels, members = ensemble_probabilities([runs["a"], runs["b"]])
    ref_a, y = _reference_probabilities(runs["a"])
    ref_b, _ = _reference_probabilities(runs["b"])
    reference = (ref_a + ref_b) / 2
    assert torch.equal(labels, y)
    torch.testing.assert_close(probs.double(), reference, atol=2e-5, rtol=0)
    assert [m["run_dir"] for m in members] == [str(runs["a"]), str(runs["b"])]
    result = evaluate_ensemble([runs["a"], runs["b"]])
    assert result["test"]["accuracy"] == pytest.approx((reference.argmax(-1) == y).double().mean().item(), abs=1e-9)
    nll = -reference.gather(1, y[:, None]).log().mean().item()
    assert result["test"]["loss"] == pytest.approx(nll, abs=1e-4)


def test_one_member_is_the_run_itself(runs):
    alone = evaluate_ensemble([runs["a"]])["test"]
    single = evaluate_run(runs["a"])["test"]
    assert alone["accuracy"] == pytest.approx(single["accuracy"], abs=1e-12)
    assert alone["loss"] == pytest.approx(single["loss"], abs=1e-6)


def test_members_on_another_split_are_refused(runs):
    with pytest.raises(ConfigError, match="test split .* differs"):
        ensemble_probabilities([runs["a"], runs["other-split"]])
    with pytest.raises(ConfigError, match="at least one run"):
        ensemble_probabilities([])


def test_cli_evaluates_several_runs_as_one(runs, capsys):
    assert main(["evaluate", str(runs["a"]), str(runs["b"])]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[-1].startswith("ensemble of 2: accuracy ")
    assert main(["evaluate", str(runs["a"]), str(runs["b"]), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["members"]) == 2 and 0 <= result["test"]["accuracy"] <= 1
    assert main(["evaluate", str(runs["a"]), str(runs["other-split"])]) == 2
    err = capsys.readouterr().err.strip()
    assert "differs" in err and len(err.splitlines()) == 1


def test_text_runs_with_their_own_tokenizers_join(tmp_path):
    """Each text run trains its tokenizer on its own (seed-dependent) training split, so the same test
    sentence gets other ids; the ensemble still matches the members by their raw texts."""
    data = tmp_path / "data"
    data.mkdir()
    rows = [f"{'pos' if i % 2 else 'neg'}\t{'great' if i % 2 else 'dull'} word{i} film" for i in range(40)]
    (data / "train.tsv").write_text("\n".join(rows) + "\n")
    (data / "test.tsv").write_text("\n".join(rows[:10]) + "\nneg\tdull unseen film\n")
    runs = []
    for seed in (0, 1):
        runs.append(tmp_path / f"s{seed}")
        assert main(["train", "--task", "text-classification", "--data", str(data), "--out", str(runs[-1]),
                     "--epochs", "1", "--model.dim", "16", "--model.depth", "1", "--model.num_heads", "2",
                     "--data.tokenizer", "word", "--train.seed", str(seed), "--train.progress", "false"]) == 0
    assert (runs[0] / "tokenizer.json").read_text() != (runs[1] / "tokenizer.json").read_text()
    probs, labels, _ = ensemble_probabilities(runs)
    singles = [ensemble_probabilities([r])[0] for r in runs]
    torch.testing.assert_close(probs, (singles[0] + singles[1]) / 2, atol=1e-6, rtol=0)
    assert labels.tolist() == [i % 2 for i in range(10)] + [0]  # classes sorted: neg 0, pos 1


def test_tasks_without_averageable_outputs_are_refused(tmp_path, capsys):
    run = train_tiny_sasrec(tmp_path)
    capsys.readouterr()
    assert main(["evaluate", str(run), str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert "SasrecObjective gives no outputs a deep ensemble can average" in err and len(err.splitlines()) == 1, err


def test_runs_on_audio_shards_join_and_match_a_run_on_their_folder(tmp_path, capsys):
    """A streamed test split (shards: no random access) is fingerprinted by reading it in order;
    a run trained on the folder the shards came from, with the same features, scores the same files."""
    from tests.data.test_audio import _fsdd_folder

    data = _fsdd_folder(tmp_path / "fsdd", digits=(1, 3), count=8)
    features = ["--data.n_mels", "16", "--data.duration", "0.256"]
    assert main(["shard", str(data), str(tmp_path / "shards"), "--task", "audio", *features]) == 0
    tiny = ["--task", "audio", "--epochs", "1", "--model.depth", "1", "--model.dim", "16", "--model.num_heads", "2",
            "--train.batch_size", "8", "--train.progress", "false"]
    runs = []
    for name, source, extra in (("s0", "shards", []), ("s1", "shards", ["--train.seed", "1"]), ("f", "fsdd", features)):
        runs.append(str(tmp_path / name))
        assert main(["train", *tiny, *extra, "--data", str(tmp_path / source), "--out", runs[-1]]) == 0
    capsys.readouterr()
    result = evaluate_ensemble(runs)
    own = [evaluate_run(r)["test"] for r in runs]
    assert [m["test"]["loss"] for m in result["members"]] == pytest.approx([o["loss"] for o in own], abs=1e-6)
    assert 0 <= result["test"]["accuracy"] <= 1


def test_audio_runs_with_other_features_join_by_file(tmp_path, capsys):
    """Runs on the same files with other feature settings (16 vs 32 mels) each score their own
    inputs: the ensemble matches them by file and averages their probabilities. Shards (no file
    positions) with other features are refused naming the setting, not the split seed."""
    from tests.data.test_audio import _fsdd_folder

    data = _fsdd_folder(tmp_path / "fsdd", digits=(1, 3), count=8)
    tiny = ["--task", "audio", "--epochs", "1", "--model.depth", "1", "--model.dim", "16", "--model.num_heads", "2",
            "--train.batch_size", "8", "--train.progress", "false", "--data.duration", "0.256", "--data", str(data)]
    runs = [str(tmp_path / "m16"), str(tmp_path / "m32")]
    for run, mels in zip(runs, ("16", "32")):
        assert main(["train", *tiny, "--data.n_mels", mels, "--out", run]) == 0
    probs, labels, members = ensemble_probabilities(runs)
    singles = [ensemble_probabilities([r]) for r in runs]
    torch.testing.assert_close(probs, (singles[0][0] + singles[1][0]) / 2, atol=1e-6, rtol=0)
    assert torch.equal(labels, singles[0][1]) and len(labels) == 20  # FSDD index 0-4 of 2 digits, 2 speakers
    assert [m["test"]["loss"] for m in members] == pytest.approx([evaluate_run(r)["test"]["loss"] for r in runs], abs=1e-6)
    assert main(["shard", str(data), str(tmp_path / "shards"), "--task", "audio", "--data.n_mels", "16",
                 "--data.duration", "0.256"]) == 0
    streamed = str(tmp_path / "streamed")
    assert main(["train", *tiny[:-1], str(tmp_path / "shards"), "--out", streamed]) == 0
    capsys.readouterr()
    assert main(["evaluate", streamed, runs[1]]) == 2
    err = capsys.readouterr().err.strip()
    assert "n_mels 32 (" in err and ": 16)" in err and "split seeds" not in err and len(err.splitlines()) == 1, err
    assert main(["evaluate", streamed, runs[0], "--json"]) == 0  # the same features: the same tensors


def test_runs_on_two_copies_of_a_folder_with_other_features_are_refused_naming_both_folders(tmp_path, capsys):
    """Runs trained on two copies of one folder (other paths) with other feature settings hold other
    tensors and other sources, so they cannot be matched by file: the refusal named "split seeds"
    (the same seed drew both splits); it now names both folders and the setting, and scoring both
    on one folder (--data) joins them."""
    import shutil

    from tests.data.test_audio import _fsdd_folder

    data = _fsdd_folder(tmp_path / "fsdd", digits=(1, 3), count=8)
    copy = tmp_path / "elsewhere" / "fsdd"
    shutil.copytree(data, copy)
    tiny = ["--task", "audio", "--epochs", "1", "--model.depth", "1", "--model.dim", "16", "--model.num_heads", "2",
            "--train.batch_size", "8", "--train.progress", "false", "--data.duration", "0.256"]
    runs = [str(tmp_path / "m16"), str(tmp_path / "m32")]
    for run, mels, folder in zip(runs, ("16", "32"), (data, copy)):
        assert main(["train", *tiny, "--data.n_mels", mels, "--data", str(folder), "--out", run]) == 0
    capsys.readouterr()
    assert main(["evaluate", *runs]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "split seed" not in err, err
    assert str(copy) in err and str(data) in err and "n_mels 32 (" in err and ": 16)" in err and "--data" in err, err
    assert main(["evaluate", *runs, "--data", str(data), "--json"]) == 0, capsys.readouterr().err


class _Member:
    """What `ensemble_outputs` reads of a finished run, with outputs given here (no training)."""

    def __init__(self, task: str, objective, outputs: torch.Tensor, targets: torch.Tensor):
        from types import SimpleNamespace

        from torch.utils.data import TensorDataset

        split = TensorDataset(torch.arange(len(targets)), targets)
        self.config = SimpleNamespace(task=task, data=None)
        self.task_data = SimpleNamespace(target="regression" if task == "timeseries" else "class", class_names=[],
                                         info={}, test=split, val=split, spec=None, tokenizer=None)
        self.trainer = SimpleNamespace(objective=objective, outputs=lambda dataset: (outputs, targets))


@pytest.mark.parametrize("kind", ["regression", "language-model"])
def test_the_members_mean_keeps_their_float64_outputs(kind, monkeypatch):
    """The mean of the members' outputs was cast to float32 before scoring: regression predictions
    in large units were rounded (float32 spacing is 1.0 at 1e7: the MSE below more than doubled) and a
    language model's tiny true-token probabilities (< 1e-45) became 0, scored as a loss of 690
    nats. The mean keeps the members' dtype, so one member scores as the run itself."""
    import attnlab.run
    from attnlab.tasks.language_model import LanguageModelObjective
    from attnlab.training.regression import RegressionObjective

    g = torch.Generator().manual_seed(0)
    if kind == "regression":
        y = 1e7 + 10 * torch.randn(64, generator=g, dtype=torch.float64)
        member = _Member("timeseries", RegressionObjective(1e7, 10.0), y + 0.3 * torch.randn(64, generator=g, dtype=torch.float64), y)
    else:
        probs = torch.rand(4, 8, generator=g, dtype=torch.float64)
        probs[0, :3] = 1e-50  # three tokens the model all but ruled out
        member = _Member("language-model", LanguageModelObjective(), probs, torch.zeros(4, 8, dtype=torch.long))
    monkeypatch.setattr(attnlab.run, "evaluation_trainer", lambda run_dir, **_: (member.config, member.trainer, member.task_data))
    result = evaluate_ensemble(["member"])
    own = result["members"][0]["test"]
    assert result["test"] == pytest.approx(own, rel=1e-12, abs=1e-12)
    if kind == "language-model":  # float64 reference: -log of each probability, averaged
        assert own["loss"] == pytest.approx(float(-member.trainer.outputs(None)[0].log().mean()), rel=1e-12)
