"""`report.html` for a run or a sweep folder: one static page that opens from disk, no server.

The page is rendered from `templates/report.html.j2` by Jinja2 with autoescaping on, because
class names, row ids and leaderboard cells come from data. Pictures are separate PNG files next to
the page, linked by relative paths, so the folder can be copied or zipped as a whole.
"""

from __future__ import annotations

import math
import numbers
from datetime import datetime, timezone
from pathlib import Path

import jinja2
import pandas as pd

from medray.errors import MedrayError
from medray.report.analysis import DEFAULT_EXAMPLES_PER_CLASS
from medray.report.multilabel_run import describe_multilabel_run, is_multilabel_run
from medray.report.plots import plot_model_comparison
from medray.report.run_section import PREDICTIONS, describe_run
from medray.report.sweep import COMPARED_METRICS, LEADERBOARD, read_leaderboard, read_model_metrics

REPORT = "report.html"
LEADERBOARD_PLOT = "leaderboard.png"
METRIC_LABELS = {
    "accuracy": "Accuracy",
    "balanced_accuracy": "Balanced accuracy",
    "macro_f1": "Macro F1",
    "weighted_f1": "Weighted F1",
    "roc_auc_ovr": "ROC AUC (macro, one-vs-rest)",
    "expected_calibration_error": "Expected calibration error",
}
# The headline of a multi-label run: the mean ROC AUC is the figure ChestX-ray14 papers compare.
MULTILABEL_METRIC_LABELS = {
    "mean_roc_auc": "Mean ROC AUC over labels",
    "mean_average_precision": "Mean average precision",
    "macro_f1": "Macro F1 at the validation thresholds",
    "hamming_loss": "Hamming loss (lower is better)",
    "exact_match_ratio": "Exact-match ratio",
}


def build_report(results_dir: str | Path, examples_per_class: int = DEFAULT_EXAMPLES_PER_CLASS) -> Path:
    """Write `<results_dir>/report.html` (and its plots) and return its path."""
    results_dir = Path(results_dir).resolve()
    if not results_dir.is_dir():
        raise MedrayError(f"{results_dir} is not a folder; pass a run folder such as results/<run-id>")
    run = None
    if (results_dir / PREDICTIONS).is_file():
        describe = describe_multilabel_run if is_multilabel_run(results_dir) else describe_run
        run = describe(results_dir, examples_per_class)
    sweep = describe_sweep(results_dir)
    if run is None and sweep is None:
        raise MedrayError(
            f"{results_dir} holds neither {PREDICTIONS} (a run) nor {LEADERBOARD} or */metrics.json (a sweep); "
            "pass the folder that `medray run` printed at its end")
    html = environment().get_template("report.html.j2").render(
        title=f"medray report: {results_dir.name}",
        generated=f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        run=run, sweep=sweep, metric_labels=METRIC_LABELS, multilabel_metric_labels=MULTILABEL_METRIC_LABELS,
    )
    path = results_dir / REPORT
    path.write_text(html, encoding="utf-8")
    return path


def describe_sweep(results_dir: Path) -> dict | None:
    leaderboard = read_leaderboard(results_dir)
    models = read_model_metrics(results_dir)
    if leaderboard is None and models.empty:
        return None
    comparison = None
    # Scores where higher is better share one axis; the calibration error (lower is better) stays in the table.
    plotted = [name for name in COMPARED_METRICS if name != "expected_calibration_error" and models[name].notna().any()]
    if len(models) > 1 and plotted:
        plot_dir = results_dir / "plots"
        plot_dir.mkdir(exist_ok=True)
        comparison = plot_model_comparison(models, plotted, plot_dir / "model_comparison.png")
        comparison = comparison.relative_to(results_dir).as_posix()
    return {
        "leaderboard": None if leaderboard is None else {
            "columns": [str(column) for column in leaderboard.columns],
            "numeric": [pd.api.types.is_numeric_dtype(dtype) for dtype in leaderboard.dtypes],  # aligned right
            "rows": [list(row) for row in leaderboard.itertuples(index=False)],
        },
        "models": [{"name": name, "metrics": row.to_dict(),
                    "report": f"{name}/{REPORT}" if (results_dir / name / REPORT).is_file() else None}
                   for name, row in models.iterrows()],
        "comparison": comparison,
        # drawn by the tune stage next to leaderboard.csv
        "leaderboard_plot": LEADERBOARD_PLOT if (results_dir / LEADERBOARD_PLOT).is_file() else None,
    }


def format_number(value, digits: int = 4) -> str:
    """Numbers as the report prints them; blanks and NaN as "n/a" rather than "nan"."""
    if value is None or isinstance(value, bool) or not isinstance(value, numbers.Real):
        return "n/a" if value is None else str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("medray.report", "templates"),
        autoescape=True,  # every string from data (class names, ids, CSV cells) is escaped
        undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True,
    )
    env.filters["num"] = format_number
    env.filters["pct"] = lambda value: "n/a" if value is None else f"{100 * value:.1f} %"
    return env

