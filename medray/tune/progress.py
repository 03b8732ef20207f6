"""One console line per finished trial, printed by the driver while the sweep runs (Ray's own
output goes to the sweep's logs/ray.log, see medray.console)."""

from __future__ import annotations

from pathlib import Path

from ray import tune

from medray import storage
from medray.cluster import remove_leftover_worker_groups
from medray.console import say
from medray.errors import exception_in_traceback, find_user_error
from medray.run_folder import RunFolder, download
from medray.tune.leaderboard import stop_reason


class TrialLog(tune.Callback):
    def __init__(self, sweep_dir: str, metric: str, mode: str, location: str = ""):
        """`location`: the sweep folder when it is in object storage and `sweep_dir` its scratch copy."""
        self.sweep_dir, self.metric, self.mode, self.location = sweep_dir, metric, mode, location

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._print(trial)
        running = [other for other in trials if other is not trial and other.status == "RUNNING"]
        if not running:  # a trial ASHA stopped may have left its worker group behind
            remove_leftover_worker_groups()

    def on_trial_error(self, iteration, trials, trial, **info):
        self._print(trial)
        # Tune keeps the worker's traceback in error.txt; the user gets its one line.
        # (Never the pickled error: medray does not unpickle.)
        path = trial.error_file
        text = Path(path).read_text() if path and Path(path).is_file() else ""
        found = find_user_error(Exception(text)) or exception_in_traceback(text)
        if found:
            say(f"trial {trial.trial_id}  error: {found}")

    def _print(self, trial) -> None:
        # Both: the leaderboard ranks a trial by its best or its last epoch (train.export_epoch).
        analysis = trial.metric_analysis.get(self.metric, {})
        best, last = (analysis.get(key) for key in (self.mode, "last"))
        score = "n/a" if best is None else f"best {best:.4f} last {last:.4f}"
        epochs = trial.last_result.get("epoch", 0)
        folds = trial.last_result.get("fold")  # a cross-validated trial reports once per fold
        params = "  ".join(f"{key}={_short(value)}" for key, value in trial.config.items())
        # result.json may not be flushed yet: what Tune received says how far the trial got.
        trial_dir = Path(self.sweep_dir) / trial.trial_id
        if self.location:  # the trial wrote outcome.json (or not) to the bucket
            download(RunFolder(trial_dir, storage.join(self.location, trial.trial_id)))
        reason = stop_reason(trial_dir, last_epoch=int(epochs))
        if folds is not None:
            mean, sd = trial.last_result.get(self.metric), trial.last_result.get(f"{self.metric}_sd")
            score = "n/a" if mean is None else f"mean {mean:.4f} sd {sd:.4f}"
            say(f"trial {trial.trial_id}  {reason:<14}  {self.metric} {score}  folds {folds:g}  {params}")
            return
        say(f"trial {trial.trial_id}  {reason:<14}  {self.metric} {score}  epochs {epochs:g}  {params}")


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
