"""The autotuner picks the faster route, caches it in memory and on disk, and survives races."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from attnlab import autotune


def _spin(seconds: float) -> None:
    """Busy-wait (a CPU cost, like a kernel; sleep would let a loaded machine schedule us late)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


class _Counted:
    def __init__(self, seconds: float):
        self.seconds, self.calls = seconds, 0

    def __call__(self) -> None:
        self.calls += 1
        _spin(self.seconds)


def test_choice_is_the_faster_candidate_on_a_synthetic_cost(autotune_cache):
    # 3x apart (0.6 ms vs 1.8 ms): a median over alternating rounds must see it even on a loaded machine.
    for order in (("fast", "slow"), ("slow", "fast")):
        costs = {"fast": _Counted(6e-4), "slow": _Counted(1.8e-3)}
        candidates = {name: costs[name] for name in order}
        assert autotune.choose(f"test.synthetic{order[0]}|8", candidates, default="slow") == "fast"
        assert costs["fast"].calls >= 3 and costs["slow"].calls >= 3  # warm-up + at least two timed rounds


def test_cost_of_a_decision_is_bounded(autotune_cache):
    costs = {"a": _Counted(1e-4), "b": _Counted(1e-4)}
    t0 = time.perf_counter()
    autotune.choose("test.bounded|8", costs, default="a", budget_s=0.02, max_repeats=1000)
    elapsed = time.perf_counter() - t0
    # Budget 20 ms plus at most one round in flight (0.2 ms) and file I/O; 0.5 s leaves room for a loaded machine.
    assert elapsed < 0.5
    assert costs["a"].calls < 1000 and costs["a"].calls == costs["b"].calls


def test_a_second_choose_reuses_the_choice_without_timing(autotune_cache):
    fast, slow = _Counted(1e-4), _Counted(1e-3)
    assert autotune.choose("test.reuse|16", {"fast": fast, "slow": slow}, default="slow") == "fast"
    calls = (fast.calls, slow.calls)
    assert autotune.choose("test.reuse|16", {"fast": fast, "slow": slow}, default="slow") == "fast"
    assert (fast.calls, slow.calls) == calls
    # The file holds it: a fresh in-process cache reads it back without timing either.
    autotune.clear_memory_cache()
    assert autotune.choose("test.reuse|16", {"fast": fast, "slow": slow}, default="slow") == "fast"
    assert (fast.calls, slow.calls) == calls
    stored = json.loads(autotune.cache_file().read_text())
    assert stored["machine"] == autotune.machine_key()
    (entry,) = [v for k, v in stored["choices"].items() if k.startswith("test.reuse|16|")]
    assert entry["choice"] == "fast" and entry["median_ms"]["fast"] < entry["median_ms"]["slow"]


def _child(code: str, cache_dir, **env) -> str:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120,
                          env={**_base_env(), autotune.CACHE_ENV_VAR: str(cache_dir), **env})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def _base_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != autotune.ENV_VAR}


_CHILD = """
    import sys, time
    import torch
    from attnlab import autotune
    autotune._others_cores = lambda before, after, wall: 0.0  # quiet, whatever else runs (see conftest)
    torch.set_num_threads(1)
    calls = []
    def cost(name, seconds):
        def run():
            calls.append(name)
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                pass
        return run
    keys = sys.argv[1:] or [f"test.proc{{i}}|{{i}}" for i in range({count})]
    for key in keys:
        assert autotune.choose(key, {{"fast": cost("fast", 1e-4), "slow": cost("slow", 6e-4)}}, default="slow") == "fast"
    print(len(calls))
"""


def test_a_second_process_reads_the_file(autotune_cache):
    assert int(_child(_CHILD.format(count=3), autotune_cache)) > 0  # the first process measures
    assert int(_child(_CHILD.format(count=3), autotune_cache)) == 0  # the second only reads


def test_concurrent_writers_leave_a_whole_file_with_every_entry(autotune_cache):
    code = textwrap.dedent(_CHILD.format(count=12))
    env = {**_base_env(), autotune.CACHE_ENV_VAR: str(autotune_cache)}
    procs = [subprocess.Popen([sys.executable, "-c", code.replace("test.proc", f"test.proc{p}-")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for p in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    files = list(autotune_cache.glob("autotune-*.json"))
    assert len(files) == 1 and not list(autotune_cache.glob(".autotune-*.tmp"))
    choices = json.loads(files[0].read_text())["choices"]
    # The file lock serialises read-merge-write: neither process's 12 entries were lost.
    assert sum(k.startswith("test.proc0-") for k in choices) == 12
    assert sum(k.startswith("test.proc1-") for k in choices) == 12


def test_a_corrupt_file_is_ignored_and_rewritten(autotune_cache):
    path = autotune.cache_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"format": 1, "choices": {"test.corrupt')  # cut short, as by a crash without os.replace
    fast, slow = _Counted(1e-4), _Counted(1e-3)
    assert autotune.choose("test.corrupt|4", {"fast": fast, "slow": slow}, default="slow") == "fast"
    assert fast.calls > 0
    data = json.loads(path.read_text())
    assert any(k.startswith("test.corrupt|4|") for k in data["choices"])


def test_a_file_for_another_machine_is_not_trusted(autotune_cache):
    path = autotune.cache_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = autotune._full_key("test.other|4")
    path.write_text(json.dumps({"format": 1, "machine": {**autotune.machine_key(), "cpu": "another CPU"},
                                "choices": {key: {"choice": "slow"}}}))
    fast, slow = _Counted(1e-4), _Counted(1e-3)
    assert autotune.choose("test.other|4", {"fast": fast, "slow": slow}, default="slow") == "fast"
    assert fast.calls > 0


def test_a_choice_stored_before_a_candidate_was_added_is_timed_again(autotune_cache):
    path = autotune.cache_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = autotune._full_key("test.added|4")
    path.write_text(json.dumps({"format": 1, "machine": autotune.machine_key(),
                                "choices": {key: {"choice": "old", "median_ms": {"old": 1.0, "plain": 2.0}}}}))
    assert autotune.lookup("test.added|4", ["old", "plain"], default="plain") == "old"  # the same candidates: trusted
    autotune.clear_memory_cache()
    new, old, plain = _Counted(1e-4), _Counted(1e-3), _Counted(1e-3)
    assert autotune.choose("test.added|4", {"old": old, "plain": plain, "new": new}, default="plain") == "new"
    assert new.calls > 0 and set(json.loads(path.read_text())["choices"][key]["median_ms"]) == {"old", "plain", "new"}


def test_autotune_off_returns_the_default_and_writes_nothing(autotune_cache, monkeypatch):
    monkeypatch.setenv(autotune.ENV_VAR, "0")
    fast, slow = _Counted(1e-4), _Counted(1e-3)
    assert autotune.choose("test.off|4", {"fast": fast, "slow": slow}, default="slow") == "slow"
    assert fast.calls == slow.calls == 0 and not list(autotune_cache.iterdir())


def test_force_overrides_and_restores(autotune_cache):
    fast, slow = _Counted(1e-4), _Counted(1e-3)
    with autotune.force({"test.force": "slow"}):
        assert autotune.choose("test.force|4", {"fast": fast, "slow": slow}, default="fast") == "slow"
        with autotune.force({"test.force": "fast"}):
            assert autotune.choose("test.force|4", {"fast": fast, "slow": slow}, default="slow") == "fast"
        assert autotune.choose("test.force|4", {"fast": fast, "slow": slow}, default="fast") == "slow"
        with pytest.raises(ValueError, match="not a candidate"):
            autotune.choose("test.force|4", {"fast": fast}, default="fast")
    assert fast.calls == slow.calls == 0  # forcing times nothing
    assert autotune._forced == {}


def test_default_must_be_a_candidate(autotune_cache):
    with pytest.raises(ValueError, match="default route"):
        autotune.choose("test.default|4", {"a": lambda: None}, default="b")


def test_shape_class_buckets_to_powers_of_two():
    assert autotune.shape_class(1000, 256, 768, dtype=torch.float32, grad=True) == "1024x256x1024|float32|grad"
    assert autotune.shape_class(1, 3, dtype=torch.bfloat16, grad=False) == "1x4|bfloat16|nograd"
    assert autotune.shape_class(1025) == "2048"


def test_a_candidate_that_cannot_run_is_dropped_and_a_failing_default_raises(autotune_cache):
    def broken():
        raise RuntimeError("this route does not take these strides")

    slow = _Counted(1e-3)
    assert autotune.choose("test.broken|4", {"broken": broken, "slow": slow}, default="slow") == "slow"
    assert slow.calls >= 3
    with pytest.raises(RuntimeError, match="strides"):
        autotune.choose("test.broken-default|4", {"broken": broken, "slow": slow}, default="broken")


def test_a_near_tie_keeps_the_default(autotune_cache):
    """Another route must beat the default by ``margin``: 2x apart wins at margin 0, not at 0.6."""
    a, b = _Counted(1e-3), _Counted(2e-3)
    assert autotune.choose("test.tie|4", {"a": a, "b": b}, default="b", margin=0.6) == "b"
    assert autotune.choose("test.tie|8", {"a": a, "b": b}, default="b", margin=0.0) == "a"


def test_an_unwritable_cache_still_chooses_and_remembers_in_memory(autotune_cache, monkeypatch):
    blocker = autotune_cache / "not-a-dir"
    blocker.write_text("a file where the cache directory should be")
    monkeypatch.setenv(autotune.CACHE_ENV_VAR, str(blocker / "attnlab"))
    fast, slow = _Counted(1e-4), _Counted(1e-3)
    assert autotune.choose("test.readonly|4", {"fast": fast, "slow": slow}, default="slow") == "fast"
    calls = fast.calls
    assert autotune.choose("test.readonly|4", {"fast": fast, "slow": slow}, default="slow") == "fast"
    assert fast.calls == calls and not (blocker / "attnlab").exists()


def test_a_choice_timed_under_load_is_timed_again_by_the_next_process(autotune_cache, monkeypatch):
    """A stored choice marked with other work on more cores than torch's threads leave free is kept by its
    process but re-measured by the next one (a fresh in-process cache), until a quiet measurement replaces it."""
    fast, slow = _Counted(1e-4), _Counted(1e-3)
    candidates = {"fast": fast, "slow": slow}
    monkeypatch.setattr(autotune, "_others_cores", lambda before, after, wall: 1.7)
    assert autotune.choose("test.load|8", candidates, default="slow") == "fast"
    (entry,) = [v for k, v in json.loads(autotune.cache_file().read_text())["choices"].items() if k.startswith("test.load|8|")]
    assert entry["others_cores"] == 1.7
    calls = fast.calls
    assert autotune.choose("test.load|8", candidates, default="slow") == "fast" and fast.calls == calls  # this process keeps it
    monkeypatch.setattr(autotune, "_others_cores", lambda before, after, wall: 0.0)
    monkeypatch.setattr(autotune.os, "cpu_count", lambda: torch.get_num_threads())  # no free cores: any load counts
    autotune.clear_memory_cache()
    assert autotune.choose("test.load|8", candidates, default="slow") == "fast" and fast.calls > calls  # timed again
    calls = fast.calls
    autotune.clear_memory_cache()
    assert autotune.choose("test.load|8", candidates, default="slow") == "fast" and fast.calls == calls  # quiet: trusted


def test_other_work_is_measured_from_proc_stat():
    """A child spinning on one core while we sleep shows as about one core of other work."""
    before = autotune._cpu_seconds()
    if before is None:
        pytest.skip("no /proc/stat")
    t0 = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", "import time\nend = time.perf_counter() + 0.6\nwhile time.perf_counter() < end: pass"])
    child.wait(timeout=60)
    others = autotune._others_cores(before, autotune._cpu_seconds(), time.perf_counter() - t0)
    assert others is not None and 0.4 < others < (autotune.os.cpu_count() or 1) + 0.5
