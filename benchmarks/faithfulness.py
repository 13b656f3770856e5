"""How faithful is each relevance method? Any trained run whose task has an explain adapter
(default: the main job, vit-tiny on digits), every method, every measure, the random map beside
each, bootstrap 95% intervals over examples of a split.

Measures (attnlab.explain.faithfulness): positive / negative perturbation AUC (Chefer et al.
2021: remove 10%..90% of the positions, most / least relevant first, accuracy on the predicted
class; positive lower is better, negative higher), deletion / insertion AUC of the
predicted-class probability (Petsiuk et al. 2018; deletion lower, insertion higher), and
Spearman rank correlation with the maps of a fully re-initialised copy (Adebayo et al. 2018;
lower means the map depends on the weights). "Removed" is the task adapter's: the training
split's mean pixel over a whole patch (images), the [MASK] or <pad> embedding (text), the
training mean per channel (time series), the mean frame (audio); docs/explain.md.

The scores come from the product's own path, ``attnlab.run.faithfulness_run`` (what
``attnlab explain RUN --faithfulness --split test`` prints), so the benchmark measures what
users get; it adds the run's test metrics and the machine.

    python benchmarks/faithfulness.py                       # trains the main job, scores 200 test digits
    python benchmarks/faithfulness.py --run runs/trec --name trec --examples 200

--quick: a barely trained main job (1 epoch, 2 layers x 32 wide) on few examples, a smoke test. Results:
benchmarks/results/faithfulness-<name>[-quick].json (name default: digits) unless --out is given.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

if __package__:
    from . import _common as common
else:  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _common as common

from attnlab.explain.card import format_table
from attnlab.explain.relevance import IG_MAX_STEPS, IG_STEPS


def _train(quick: bool, out: Path) -> Path:
    from attnlab.cli import main

    # --quick checks the plumbing: the main job's architecture, small (every method, measure and the randomisation
    # check still run; 2 layers, so rollout still multiplies layers); the full-size model took minutes
    args = ["train", "--out", str(out)] + (["--epochs", "1", *common.QUICK_MODEL_ARGS] if quick else [])
    rc = main(args)
    if rc not in (None, 0):
        raise SystemExit(f"attnlab train failed ({rc})")
    return out


def main(argv=None) -> dict:
    from attnlab.run import evaluate_run, faithfulness_run, load_run

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, help="a run directory (default: train the main job into a temp dir)")
    ap.add_argument("--name", default="digits", help="results/faithfulness-<name>.json")
    ap.add_argument("--split", default="test", choices=["validation", "test"])
    ap.add_argument("--examples", type=int, default=200)
    ap.add_argument("--steps", type=int, default=IG_STEPS, help=f"Integrated Gradients steps (default {IG_STEPS})")
    ap.add_argument("--max-steps", type=int, default=IG_MAX_STEPS,
                    help=f"examples whose IG completeness gap is above 1%% get doubled steps up to this "
                    f"(default {IG_MAX_STEPS})")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave as is)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if args.quick:
        args.examples = min(args.examples, 16)
        args.steps = min(args.steps, 4)  # IG is the slowest method; the test's limit is 300 s
        args.max_steps = args.steps  # an untrained model's IG would be refined up to the cap
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or _train(args.quick, Path(tmp) / "digits-run")
        config, _, _ = load_run(run)
        test = evaluate_run(run)["test"]
        scores = faithfulness_run(run, split=args.split, limit=args.examples, steps=args.steps,
                                  max_steps=args.max_steps)
    result = {**common.run_header("faithfulness", args, common.machine_info(torch.device("cpu")), __file__),
              "task": config.task, "model": config.model, "data": str(config.data), "test_metrics": test, **scores}
    print(format_table(scores, title=f"{config.model} on {config.data or config.task} ({args.split}),"))
    out = args.out or Path(__file__).parent / "results" / f"faithfulness-{args.name}{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=float))
    return result


if __name__ == "__main__":
    main()
