"""Tuning cost: wall time of the same trials with and without pruning, and trials per hour.

    python benchmarks/tune_pruning.py --data <fer2013.csv.gz> [--trials 10] [--epochs 3] [--subset 0.2]

Both studies use the same sampler seed, so they propose the same first trials; pruning then stops
the weak ones after an epoch or two.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from fer.data import load_dataset
from fer.tune import load_tune_config, run_study


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--subset", type=float, default=0.2)
    args = ap.parse_args()
    data = load_dataset(args.data)
    out = tempfile.mkdtemp(prefix="fer-tune-bench-")
    for pruner in ("none", "median"):
        cfg = load_tune_config(
            "experiments/tune.yaml",
            [
                f"trials={args.trials}",
                f"epochs={args.epochs}",
                f"subset={args.subset}",
                f"pruner={pruner}",
                f"study_name=bench-{pruner}",
                f"output_dir={out}",
            ],
        )
        t = time.perf_counter()
        r = run_study(cfg, data=data)
        wall = time.perf_counter() - t
        print(
            f"pruner={pruner:6s}: {args.trials} trials ({r.n_pruned} pruned) in {wall / 60:.1f} min, "
            f"{args.trials / wall * 3600:.0f} trials/hour, best val_acc {r.best_value:.4f} {r.best_params}"
        )


if __name__ == "__main__":
    main()
