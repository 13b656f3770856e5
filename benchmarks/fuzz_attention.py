"""Nightly-style stress run: the attention property test with many examples.

    python benchmarks/fuzz_attention.py --examples 10000

Every example draws random B/H/G/N/M/D (1 and non-powers of two included), masks with
all-False rows and columns, causal/window with M > N, tensor or ALiBi bias, fp32/bf16/fp64
and a backend, and checks output and gradients against the float64 reference, no NaN/Inf.
Prints the count and writes JSON to benchmarks/results/fuzz-attention.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=10_000)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fuzz-attention.json"))
    args = parser.parse_args(argv)

    from hypothesis import HealthCheck, given, settings

    from tests.attention.test_properties import cases, check

    counter = {"n": 0}

    @settings(max_examples=args.examples, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(cases())
    def run(c):
        counter["n"] += 1
        check(c)

    start = time.perf_counter()
    status = "passed"
    try:
        run()
    except Exception as exc:  # report the falsifying example and fail
        status = f"failed: {exc}"
    elapsed = time.perf_counter() - start
    print(f"{counter['n']} examples, {status}, {elapsed:.1f} s")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"examples": counter["n"], "status": status, "seconds": elapsed}, indent=2) + "\n")
    return 0 if status == "passed" else 1


if __name__ == "__main__":
    sys.exit(main())
