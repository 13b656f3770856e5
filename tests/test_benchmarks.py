"""Every benchmark script's ``--quick`` mode runs end to end and writes its JSON.

These are smoke tests of the plumbing (the full runs take minutes to hours and are not
tests); each script must exit 0, print a table and write a JSON object to ``--out``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DATA_DIR

ROOT = Path(__file__).resolve().parents[1]

# (script, extra arguments, data the script reads from shared/data)
QUICK = [
    ("attention.py", ["--memory", "off"], None),
    ("attention_targets.py", ["--passes", "bwd", "--dtypes", "fp32"], None),
    ("explain.py", [], None),
    ("timeseries.py", ["--datasets", "ItalyPowerDemand", "--root", str(DATA_DIR / "ucr"), "--ensemble", "2", "--peer"],
     DATA_DIR / "ucr" / "ItalyPowerDemand"),
    ("timeseries_cv.py", ["--datasets", "ItalyPowerDemand", "--configs", "default", "--root", str(DATA_DIR / "ucr")],
     DATA_DIR / "ucr" / "ItalyPowerDemand"),
    ("audio.py", ["--data", str(DATA_DIR / "fsdd" / "recordings"), "--threads", "1"], DATA_DIR / "fsdd" / "recordings"),
    ("sasrec.py", ["--data", str(DATA_DIR / "sasrec" / "games.txt"), "--threads", "1"], DATA_DIR / "sasrec" / "games.txt"),
    ("detection.py", ["--threads", "1"], None),
    ("data_scale.py", [], None),
    ("models.py", ["--threads", "1"], None),
    ("mfu.py", ["--threads", "1", "--profile", "1"], None),
    ("dropout.py", ["--threads", "1"], None),
    ("packing.py", ["--threads", "1"], None),
    ("optimizer.py", ["--threads", "1"], None),
    ("linear.py", ["--threads", "1"], None),
    ("text_classification.py", ["--root", str(DATA_DIR / "text"), "--threads", "1", "--ensemble", "2"], DATA_DIR / "text"),
    ("text_cv.py", ["--root", str(DATA_DIR / "text"), "--datasets", "trec", "--configs", "epochs-8"], DATA_DIR / "text"),
    ("translation.py", ["--data", str(DATA_DIR / "multi30k"), "--threads", "1"], DATA_DIR / "multi30k"),
    ("language_model.py", ["--data", str(DATA_DIR / "tinyshakespeare" / "input.txt"), "--threads", "1"],
     DATA_DIR / "tinyshakespeare" / "input.txt"),
    ("finetune_vision.py", ["--threads", "1"], None),  # --quick pretrains on digits: no shared data
    ("faithfulness.py", ["--examples", "8", "--threads", "1"], None),  # --quick: a 2-layer 32-wide vit-tiny, digits, 1 epoch
    ("shortcut.py", ["--trec", str(DATA_DIR / "text" / "trec")], DATA_DIR / "text" / "trec"),  # 1 epoch each, 2-layer 32-wide models
]


def _run_quick(script: str, extra: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``benchmarks/SCRIPT --quick --out cwd/result.json EXTRA``, run in ``cwd``."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--out", str(cwd / "result.json"), *extra]
    # One OpenMP thread unless a script sets its own: the quick runs are tiny ops, and two threads' barriers
    # made them 2-4x slower on a busy 2-core machine. The timeout is only against a hang: every quick run
    # takes well under a minute on a quiet machine, so a loaded one fails late, not falsely.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=cwd, env=env)


def _check_quick(script: str, done: subprocess.CompletedProcess, cwd: Path) -> None:
    assert done.returncode == 0, f"{script} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    result = json.loads((cwd / "result.json").read_text())
    assert isinstance(result, dict) and result, f"{script} wrote an empty result"
    assert done.stdout.strip(), f"{script} printed no table"


@pytest.fixture(scope="module")
def quick_runs(request, tmp_path_factory):
    """The selected QUICK scripts, started two at a time in the background when the first of them is
    tested: each is a single-threaded subprocess spending seconds importing torch, so two at once
    take about half the wall time on the 2-core machines the suite runs on (each test still waits
    for, and checks, its own run). {script: (future of the CompletedProcess, its folder)}."""
    from concurrent.futures import ThreadPoolExecutor

    chosen = {item.callspec.params["script"] for item in request.session.items
              if getattr(item, "originalname", None) == "test_quick_benchmark_runs_and_writes_json"}
    pool = ThreadPoolExecutor(max_workers=2)
    runs = {}
    for script, extra, needs in QUICK:
        if script in chosen and (needs is None or needs.exists()):
            cwd = tmp_path_factory.mktemp(script.removesuffix(".py"))
            runs[script] = (pool.submit(_run_quick, script, extra, cwd), cwd)
    yield runs
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.slow
@pytest.mark.parametrize("script,extra,needs", QUICK, ids=[q[0] for q in QUICK])
def test_quick_benchmark_runs_and_writes_json(script, extra, needs, quick_runs):
    if needs is not None and not needs.exists():
        pytest.skip(f"shared data not found: {needs}")
    future, cwd = quick_runs[script]
    _check_quick(script, future.result(), cwd)


@pytest.mark.slow
def test_quick_forecasting_benchmark_takes_the_input_length_and_records_the_commit(tmp_path):
    """--quick on the generated series, with --input-length in place of the quick mode's 48."""
    _check_quick("forecasting.py", _run_quick("forecasting.py", ["--threads", "1", "--input-length", "24"], tmp_path), tmp_path)
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["input_length"] == 24 and {r["input_length"] for r in result["runs"]} == {24}
    if (ROOT / ".git").exists():
        assert result["git"], "the JSON should name the checkout's commit"


@pytest.mark.slow
def test_quick_finetune_benchmark_runs_and_writes_json(tmp_path):
    """finetune.py's plumbing (parity, throughput, attnlab's and HF's runs) on a tiny random BERT in the
    MiniLM package's layout (sentence-transformers' 1_Pooling: mean), one thread. The real MiniLM took
    ~5 minutes here (300 s timeouts under load); it is fine-tuned end to end, and checked against
    transformers, by tests/tasks/test_minilm.py."""
    pytest.importorskip("transformers")
    from tests.tasks.bert_fixtures import save_bert

    init = save_bert(tmp_path / "tiny-bert", pooling="mean")
    if not (DATA_DIR / "text").exists():
        pytest.skip(f"shared data not found: {DATA_DIR / 'text'}")
    extra = ["--root", str(DATA_DIR / "text"), "--init", str(init), "--threads", "1"]
    _check_quick("finetune.py", _run_quick("finetune.py", extra, tmp_path), tmp_path)
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["complete"] and result["checkpoint"] == str(init)
    assert {r["side"] for rows in result["runs"].values() for r in rows} == {"attnlab", "hf"}


def test_timeseries_cv_folds_partition_train_and_never_read_test(tmp_path):
    """Each repeat's folds are a stratified partition of TRAIN's rows; TEST never enters them."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from timeseries_cv import write_folds

    ucr = tmp_path / "Toy"
    ucr.mkdir()
    rows = [f"{1 + (i % 3 == 0)}\t{i}.0\t{i + 1}.5\t{-i}.25" for i in range(30)]  # 10 of class 2, 20 of class 1
    (ucr / "Toy_TRAIN.tsv").write_text("\n".join(rows) + "\n")
    (ucr / "Toy_TEST.tsv").write_text("1\t99.0\t99.0\t99.0\n")
    for repeat in (0, 1):
        folders = write_folds(ucr, tmp_path / "folds", 5, repeat)
        assert len(folders) == 5
        held = []
        for folder, count in folders:
            fit = (folder / "Toy_TRAIN.tsv").read_text().splitlines()
            part = (folder / "Toy_TEST.tsv").read_text().splitlines()
            assert count == len(part)
            assert sorted(fit + part) == sorted(rows)  # the other folds plus this one = TRAIN
            assert sum(r.startswith("2") for r in part) == 2  # stratified: 10 / 5 of class 2 per fold
            held += part
        assert sorted(held) == sorted(rows)  # every TRAIN row held out exactly once
        assert not any("99.0" in r for r in held)
    firsts = [(tmp_path / "folds" / f"Toy-r{r}-f0" / "Toy_TEST.tsv").read_text() for r in (0, 1)]
    assert firsts[0] != firsts[1]  # repeats shuffle differently


def test_text_cv_folds_partition_the_pool_and_never_read_test(tmp_path):
    """Per fold: train + dev + held-out = the pool (TRAIN + DEV files), held-out parts partition it, TEST never enters."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from text_cv import pool, write_folds

    root = tmp_path / "sst2"
    root.mkdir()
    train = [f"{i % 3 == 0:d} train sentence {i}" for i in range(60)]
    dev = [f"{i % 2:d} dev sentence {i}" for i in range(10)]
    (root / "stsa.binary.train").write_text("\n".join(train) + "\n")
    (root / "stsa.binary.dev").write_text("\n".join(dev) + "\n")
    (root / "stsa.binary.test").write_text("1 test sentence\n")
    texts, labels = pool("sst2", tmp_path)
    assert len(texts) == 70 and not any("test" in t for t in texts)
    expected = sorted(line.replace(" ", "\t", 1) for line in train + dev)
    held = []
    for folder, count in write_folds(texts, labels, tmp_path / "folds", 5, repeat=0):
        parts = {split: (folder / f"{split}.tsv").read_text().splitlines() for split in ("train", "dev", "test")}
        assert count == len(parts["test"]) == 14
        assert sorted(parts["train"] + parts["dev"] + parts["test"]) == expected
        assert len(parts["dev"]) == 6  # 10% of the 56 fitting rows
        held += parts["test"]
    assert sorted(held) == expected  # every pooled sentence held out exactly once


def test_timeseries_overrides_are_the_configs_cross_validation_chose():
    """benchmarks/timeseries.py's per-data-set overrides are the recipes configs/timeseries/<name>.yaml, and
    those must stay the GRID entry its CV selected (ECG200 and ItalyPowerDemand: "encoder-stem"; GunPoint and
    TwoLeadECG: the default); the reference Encoder trains with the same recipe."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _common import load_recipe, recipe_overrides
    from _encoder_reference import TRAIN
    from timeseries import ENCODER_RECIPE, OVERRIDES
    from timeseries_cv import GRID

    assert OVERRIDES == {"ECG200": GRID["encoder-stem"], "ItalyPowerDemand": GRID["encoder-stem"]}
    recipes = {name: recipe_overrides(load_recipe("timeseries", name))
               for name in ("ECG200", "GunPoint", "ItalyPowerDemand", "TwoLeadECG")}
    assert recipes == {"ECG200": GRID["encoder-stem"], "GunPoint": GRID["default"],
                       "ItalyPowerDemand": GRID["encoder-stem"], "TwoLeadECG": GRID["default"]}
    assert GRID["encoder-stem"]["train"] == ENCODER_RECIPE == {
        "epochs": 100, "batch_size": 12, "lr": 1e-5, "warmup_epochs": 0, "min_lr_factor": 1.0, "weight_decay": 0.0,
        "grad_clip": 0.0}  # Fawaz et al.'s recipe, as published
    assert {k: TRAIN[k] for k in ENCODER_RECIPE} == ENCODER_RECIPE
