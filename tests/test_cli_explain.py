"""``attnlab explain`` with relevance methods, ``--faithfulness``, and the report card, end to end
on a tiny digits run; bad methods are one line and exit code 2."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from attnlab.cli import main
from attnlab.explain.faithfulness import FRACTIONS
from attnlab.explain.relevance import METHODS
from tests.conftest import train_tiny_sasrec

TINY = ["--epochs", "2", "--model.depth", "1", "--model.dim", "32", "--model.num_heads", "2", "--train.batch_size", "64",
        "--train.progress", "false"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "digits-card"
    assert main(["train", "--out", str(out), *TINY]) == 0
    return out


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    from sklearn.datasets import load_digits

    path = tmp_path_factory.mktemp("inputs") / "digit.npy"
    np.save(path, load_digits().images[3])
    return path


def _page_data(path) -> dict:
    text = path.read_text()
    block = re.search(r'<script type="application/json" id="attnlab-data">(.*?)</script>', text, re.DOTALL).group(1)
    return json.loads(block)


def test_report_card_default_is_the_best_positive_auc_on_validation(run_dir):
    data = _page_data(run_dir / "report.html")
    card = data["card"]
    assert card["split"] == "validation" and card["examples"] == 32  # RunConfig.card_examples, of 180 validation images
    assert set(card["methods"]) == set(METHODS)  # vit-tiny has attention: every method, the random floor included
    pos = {m: r["positive"][0] for m, r in card["methods"].items() if m != "random"}
    assert data["defaultMethod"] == card["best"] == min(pos, key=pos.get)
    for m, r in card["methods"].items():
        for measure in ("positive", "negative", "deletion", "insertion", "randomisation"):
            mean, lo, hi = r[measure]
            assert lo <= mean <= hi, (m, measure)
        # the AUC is the normalised trapezoid area under the curve the card draws (numpy's, independently)
        curve = np.array(r["curves"]["positive"])
        assert r["positive"][0] == pytest.approx(np.trapezoid(curve, FRACTIONS) / (FRACTIONS[-1] - FRACTIONS[0]), abs=1e-9)
    assert card["methods"]["random"]["randomisation"][0] == pytest.approx(1.0)  # a map that ignores the model
    for ex in data["examples"]:  # every report example carries every method's map, one score per patch
        assert set(ex["methods"]) == set(METHODS)
        assert all(len(v) == 16 for v in ex["methods"].values())
    html = (run_dir / "report.html").read_text()
    assert f'data-best="{card["best"]}"' in html and "<svg" in html and "random (floor)" in html


def test_explain_method_png_and_html(run_dir, sample, tmp_path, capsys):
    png = tmp_path / "gradient.png"
    assert main(["explain", str(run_dir), str(sample), "-o", str(png), "--method", "gradient"]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 1000
    html = tmp_path / "x.html"
    assert main(["explain", str(run_dir), str(sample), "-o", str(html), "--method", "integrated_gradients"]) == 0
    data = _page_data(html)
    assert data["defaultMethod"] == "integrated_gradients"
    assert set(data["examples"][0]["methods"]) == set(METHODS)  # the page offers every method
    assert main(["explain", str(run_dir), str(sample), "-o", str(html), "--rollout"]) == 0  # the alias
    rollout = _page_data(html)
    assert rollout["defaultMethod"] == "rollout"
    scores = np.array(rollout["examples"][0]["methods"]["rollout"])
    assert scores.shape == (16,) and np.all(scores >= 0) and scores.sum() > 0


def test_explain_page_opens_on_the_chosen_layer_and_head(run_dir, sample, tmp_path):
    html = tmp_path / "layer.html"
    assert main(["explain", str(run_dir), str(sample), "-o", str(html), "--layer", "0", "--head", "1"]) == 0
    data = _page_data(html)
    assert (data["defaultLayer"], data["defaultHead"]) == (0, 1)
    assert main(["explain", str(run_dir), str(sample), "-o", str(html)]) == 0  # the PNG's default: last layer, mean
    data = _page_data(html)
    assert (data["defaultLayer"], data["defaultHead"]) == (-1, None)


def test_faithfulness_table_and_json(run_dir, capsys):
    capsys.readouterr()
    assert main(["explain", str(run_dir), "--faithfulness", "--method", "rollout,input_x_gradient,random", "--limit", "8",
                 "--split", "test", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["split"] == "test" and result["examples"] == 8 and result["model"] == "vit-tiny"
    assert list(result["methods"]) == ["rollout", "input_x_gradient", "random"]
    assert "mean training pixel" in result["removed"]
    assert result["best"] in ("rollout", "input_x_gradient")
    assert main(["explain", str(run_dir), "--faithfulness", "--method", "gradient,random", "--limit", "4"]) == 0
    table = capsys.readouterr().out
    assert "vit-tiny on validation: 4 examples" in table
    assert re.search(r"^gradient \*", table, re.MULTILINE) and re.search(r"^random\s+\(floor\)", table, re.MULTILINE)


@pytest.mark.parametrize("argv, message", [
    (["--faithfulness", "--method", "nope"], "unknown relevance method 'nope' for model vit-tiny"),
    (["{sample}", "-o", "{tmp}/x.png", "--method", "nope"], "unknown relevance method 'nope' for model vit-tiny"),
    (["--faithfulness", "--split", "validation", "--limit", "0"], "--limit must be >= 1"),
    (["{sample}"], "explain needs INPUT and -o"),
    (["{sample}", "-o", "{tmp}/x.png", "--method", "gradient,rollout"], "--method takes one method"),
    (["{sample}", "-o", "{tmp}/x.html", "--layer", "9"], "--layer 9 is out of range"),  # the page opened on nothing
    (["{sample}", "-o", "{tmp}/x.html", "--head", "99"], "--head 99 is out of range"),
])
def test_bad_explain_inputs_are_one_line_exit_2(run_dir, sample, tmp_path, capsys, argv, message):
    argv = [a.format(sample=sample, tmp=tmp_path) for a in argv]
    assert main(["explain", str(run_dir), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_an_output_that_is_a_folder_or_under_a_file_is_one_line(run_dir, sample, tmp_path, capsys):
    (tmp_path / "d.png").mkdir()
    (tmp_path / "notes").write_text("a file")
    for output, message in ((tmp_path / "d.png", "d.png: is a folder; name the .png or .html file to write"),
                            (tmp_path / "notes" / "x.html", f"{tmp_path / 'notes'} is a file, not a folder")):
        capsys.readouterr()
        assert main(["explain", str(run_dir), str(sample), "-o", str(output)]) == 2  # it was a traceback
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc, where even root cannot make files")
def test_an_output_nothing_can_be_written_to_is_one_line(run_dir, sample, capsys):
    assert main(["explain", str(run_dir), str(sample), "-o", "/proc/attnlab-x.png"]) == 2  # it was a traceback
    assert capsys.readouterr().err.strip() == "attnlab: error: /proc/attnlab-x.png: cannot write it (No such file or directory)"


def test_a_task_without_an_explain_adapter_names_the_method_path_and_model(tmp_path, capsys):
    """Recommendation (sasrec) has no Positions adapter."""
    run = train_tiny_sasrec(tmp_path)
    capsys.readouterr()
    assert main(["explain", str(run), "--faithfulness", "--method", "gradient"]) == 2
    err = capsys.readouterr().err.strip()
    assert "task 'sasrec' has no explain adapter" in err and "sasrec" in err and len(err.splitlines()) == 1


def test_an_attention_method_on_dlinear_is_one_line_naming_what_it_supports(tmp_path, capsys):
    """Forecasting has an adapter; DLinear has no attention, so the attention methods are refused by name."""
    run = tmp_path / "fc"
    assert main(["train", "--task", "forecasting", "--model", "dlinear", "--data.input_length", "48", "--data.horizon",
                 "12", "--train.batch_size", "64", "--train.progress", "false", "--epochs", "1", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["explain", str(run), "--faithfulness", "--method", "gradient"]) == 2
    err = capsys.readouterr().err.strip()
    assert ("method 'gradient' needs attention maps, but model dlinear has no attnlab attention layers; it supports "
            "input_x_gradient, integrated_gradients, random") in err and len(err.splitlines()) == 1, err


def test_steps_reach_integrated_gradients_of_a_single_map(run_dir, sample, tmp_path, monkeypatch, capsys):
    import attnlab.explain.card as card

    seen = []
    real = card.attach_method_maps
    monkeypatch.setattr(card, "attach_method_maps", lambda *a, **k: (seen.append(k.get("steps")), real(*a, **k))[1])
    out = tmp_path / "ig.png"
    assert main(["explain", str(run_dir), str(sample), "-o", str(out), "--method", "integrated_gradients", "--steps", "3"]) == 0
    assert seen == [3] and out.is_file()


def test_integrated_gradients_steps_default_to_one_constant_everywhere():
    """The card, the CLI and the library share IG_STEPS: at the old 8 steps, a 3-epoch digits
    vit-tiny's IG missed f(x) - f(removed) by up to 32% of it (docs/explain.md); at 16, 2%."""
    import importlib
    import inspect

    from attnlab import run
    from attnlab.cli import build_parser
    from attnlab.explain import card
    from attnlab.tasks import positions

    relevance = importlib.import_module("attnlab.explain.relevance")  # the package exports the function by this name

    assert relevance.IG_STEPS == 16
    for fn in (relevance.relevance, relevance.integrated_gradients, card.position_maps, card.attach_method_maps,
               card.score_methods, positions.input_method_maps, positions.faithfulness, positions.report_card,
               run.explain_run, run.faithfulness_run):
        assert inspect.signature(fn).parameters["steps"].default == relevance.IG_STEPS, fn.__qualname__
    explain = next(a for a in build_parser()._subparsers._group_actions[0].choices["explain"]._actions
                   if a.dest == "steps")
    assert f"default {relevance.IG_STEPS}" in explain.help
    # the refinement's cap (examples whose gap is above 1% get doubled steps) likewise
    for fn in (relevance.adaptive_integrated_gradients, card.position_maps, card.attach_method_maps, card.score_methods,
               positions.input_method_maps, positions.faithfulness, run.explain_run, run.faithfulness_run):
        assert inspect.signature(fn).parameters["max_steps"].default == relevance.IG_MAX_STEPS, fn.__qualname__
    cap = next(a for a in build_parser()._subparsers._group_actions[0].choices["explain"]._actions
               if a.dest == "max_steps")
    assert f"default {relevance.IG_MAX_STEPS}" in cap.help and f"above {relevance.IG_TOLERANCE:.0%}" in cap.help % ()


def test_faithfulness_without_steps_runs_ig_at_the_default(run_dir, capsys):
    from attnlab.explain.relevance import IG_MAX_STEPS, IG_STEPS

    capsys.readouterr()
    assert main(["explain", str(run_dir), "--faithfulness", "--method", "integrated_gradients", "--limit", "4",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["steps"] == IG_STEPS and result["max_steps"] == IG_MAX_STEPS
    gap = result["methods"]["integrated_gradients"]["completeness"]
    assert 0 <= gap["mean"] <= gap["max"] < 0.05, gap  # the tiny run's IG adds up at the default steps


@pytest.mark.parametrize("argv", [["--faithfulness", "--steps", "0"], ["{sample}", "-o", "{tmp}/x.png", "--steps", "-2"]])
def test_steps_below_one_are_refused_by_the_parser(run_dir, sample, tmp_path, capsys, argv):
    argv = [a.format(sample=sample, tmp=tmp_path) for a in argv]
    with pytest.raises(SystemExit) as info:
        main(["explain", str(run_dir), *argv])
    assert info.value.code == 2
    assert "argument --steps: must be an integer >= 1" in capsys.readouterr().err
