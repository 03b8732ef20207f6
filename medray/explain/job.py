"""`medray explain`: the bulk explain job for a finished run, reading that run's model.keras and
writing into its folder (`<run>/explain/`). Re-running it after a crash resumes."""

from __future__ import annotations

from pathlib import Path

from medray import console, storage
from medray.errors import MedrayError
from medray.explain.bulk import ExplainOutcome, explain_split
from medray.explain.scorecard import format_scorecard
from medray.job import prepare_job
from medray.run_folder import open_run_folder, publish, read_thresholds


def explain_run(config, run_location: str | Path) -> ExplainOutcome:
    """`run_location`: a local run folder or a URI; a remote one is read into a scratch copy and
    its explain/ folder uploaded back when done."""
    folder = open_run_folder(str(run_location))
    run_dir = folder.local
    model_path = run_dir / "model.keras"
    if not model_path.is_file():
        raise MedrayError(f"{storage.join(folder.location, 'model.keras')} does not exist; pass --run with the "
                          "folder of a finished `medray run` (it holds model.keras)")
    job = prepare_job(config)
    console.keep_log_in(run_dir / "logs")
    # The run's own manifest: the same rows as at training time, bad ones skipped or refused alike.
    job = job.start(run_dir)
    test = job.read_split("test", originals=config.explain.overlays)  # overlays are drawn on the scans
    outcome = explain_split(test, model_path.read_bytes(), job.backbone.name, job.task,
                            config.explain, run_dir / "explain", on_shard=None, rows=job.source.num_rows("test"),
                            read_rows=lambda row_ids: job.read_split("test", row_ids),
                            thresholds=read_thresholds(run_dir))
    (run_dir / "explain" / "summary.txt").write_text(describe(outcome))
    publish(folder, "explain")
    return outcome


def describe(outcome: ExplainOutcome) -> str:
    lines = [f"explained {outcome.images} test images ({outcome.resumed} from an earlier, interrupted run): "
             f"{outcome.rows} maps, {outcome.empty_maps} empty",
             format_scorecard(outcome.scores),
             f"maps      {outcome.maps_dir}"]
    if outcome.overlay_dir is not None:
        lines.append(f"overlays  {outcome.overlay_dir}")
    if outcome.galleries:
        lines.append(f"galleries {outcome.galleries[0].parent}")
    return "\n".join(lines) + "\n"
