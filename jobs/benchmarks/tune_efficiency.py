"""What ASHA saves: the same small space searched as a full grid (every trial runs every epoch)
and as a grid with ASHA, on the demo phantoms.

Prints the training epochs each search ran, the fraction ASHA used, and the gap between the two
best validation scores. Goal: ASHA uses at most 50 % of the epochs and loses at most 0.01.

    python jobs/benchmarks/tune_efficiency.py [--train 1920] [--size 32] [--epochs 12] [--metric val_loss]
                                              [--lrs 3e-4 1e-3 3e-3 1e-2] [--dropouts 0.2 0.3 0.4 0.5]
                                              [--grace-period 1] [--reduction-factor 4] [--seed 0] [--work-dir DIR]

ASHA's rungs (grace period 1 epoch, reduction factor 4 unless the options say otherwise) fall
after epochs 1 and 4. One trial runs at a time (2 cores), in the grid's random order (--seed). ASHA
passes whoever reaches a rung first, so its savings depend on how many trials come after the
first few: with 8 configs a rung after epoch 1 or 2 trained about half the epochs and missed the
goal in some runs, with 16 the first trials' head start is spread thin. 60 steps per epoch (with
15, the first epoch's score is noise) and validation loss, which still ranks configs when every
good one reaches a validation AUC of 1 on the phantoms. The gap is measured in the metric's own
units, counted so that a positive gap means ASHA's best is worse.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

from medray.data.synth import write_demo_dataset
from medray.tune.space import load_sweep
from medray.tune.sweep import run_sweep

ROOT = Path(__file__).resolve().parents[2]


def search(folder: Path, name: str, data: Path, args, asha: bool) -> tuple[pd.Series, float, float, str]:
    """(epochs each trial trained, best validation value, seconds, "min" or "max" for the metric)."""
    sweep = {
        "name": name, "base": str(ROOT / "configs" / "demo.yaml"), "search": "grid", "metric": args.metric,
        "seed": args.seed,  # the order the grid's points run in, the same for both searches
        "set": {"data": {"path": str(data)}, "model": {"input_size": args.size},
                # No early stopping: the grid's epochs are exactly trials x epochs.
                "train": {"epochs": args.epochs, "batch_size": 32, "early_stopping_patience": 0},
                "explain": {"enabled": False}, "report": {"enabled": False}, "output": {"dir": str(folder)}},
        "asha": {"enabled": asha, "grace_period": args.grace_period, "reduction_factor": args.reduction_factor},
        "resources": {"workers_per_trial": 1, "cpus_per_worker": 0.5, "max_concurrent_trials": 1},
        "space": {"train.lr": {"choice": args.lrs}, "model.dropout": {"choice": args.dropouts}},
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(sweep))
    started = time.perf_counter()
    config, base = load_sweep(path)
    board = run_sweep(config, base).leaderboard  # ranked best first by the sweep's metric and mode
    return board["epochs"], float(board[args.metric].iloc[0]), time.perf_counter() - started, config.mode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=1920)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--lrs", type=float, nargs="+", default=[3e-4, 1e-3, 3e-3, 1e-2])
    parser.add_argument("--dropouts", type=float, nargs="+", default=[0.2, 0.3, 0.4, 0.5])
    parser.add_argument("--metric", choices=["val_auc", "val_accuracy", "val_loss"], default="val_loss")
    parser.add_argument("--grace-period", type=int, default=1, help="epochs before ASHA's first rung")
    parser.add_argument("--reduction-factor", type=float, default=4, help="ASHA keeps the best 1/factor at each rung")
    parser.add_argument("--seed", type=int, default=0, help="shuffles the order the grid's points run in")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="a new folder to keep the data and both sweeps in (leaderboards, every epoch)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.work_dir or Path(tmp)
        write_demo_dataset(folder / "demo", train=args.train, val=args.train // 4, test=args.train // 4,
                           size=args.size, seed=0)
        data = folder / "demo" / "parquet"
        grid_trials, grid_best, grid_seconds, mode = search(folder, "grid", data, args, asha=False)
        asha_trials, asha_best, asha_seconds, _ = search(folder, "asha", data, args, asha=True)
    trials, grid_epochs, asha_epochs = len(args.lrs) * len(args.dropouts), grid_trials.sum(), asha_trials.sum()
    print(f"space: {trials} configs (train.lr x model.dropout), {args.epochs} epochs each, "
          f"{args.train} training phantoms at {args.size} px")
    print(f"full grid   {grid_epochs:4d} epochs  best {args.metric} {grid_best:.4f}  {grid_seconds:6.0f} s")
    print(f"grid + ASHA {asha_epochs:4d} epochs  best {args.metric} {asha_best:.4f}  {asha_seconds:6.0f} s")
    stops = asha_trials.value_counts().sort_index()
    print("ASHA's trials by epochs trained: " + ", ".join(f"{count} x {epochs}" for epochs, count in stops.items()))
    gap = asha_best - grid_best if mode == "min" else grid_best - asha_best
    print(f"ASHA used {asha_epochs / grid_epochs:.0%} of the epochs (goal <= 50%); "
          f"best-score gap {gap:+.4f} (goal <= 0.01)")


if __name__ == "__main__":
    main()
