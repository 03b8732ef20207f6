"""report.html for images without labels (`medray explain --model` over unlabelled images): what
the model predicted and its maps, and why there are no accuracy figures."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from medray.report.analysis import picture_galleries
from medray.report.build import REPORT, environment
from medray.report.run_section import PREDICTIONS

WHY_NO_METRICS = ("These images have no labels, so nothing says which predictions are right: accuracy, "
                  "ROC AUC, calibration and the confusion matrix cannot be computed. The table counts the "
                  "classes the model predicted; maps and galleries are grouped by them.")


def build_unlabelled_report(out_dir: Path, class_names: list[str], model: dict) -> Path:
    """Write `<out_dir>/report.html` from predictions.parquet, model.json's facts and the galleries."""
    predictions = pd.read_parquet(out_dir / PREDICTIONS, columns=["prediction_name", "confidence"])
    counts = predictions["prediction_name"].value_counts()
    rows = [{"name": name, "count": int(counts.get(name, 0)),
             "share": float(counts.get(name, 0)) / max(len(predictions), 1),
             "confidence": float(predictions.loc[predictions["prediction_name"] == name, "confidence"].mean())
             if counts.get(name, 0) else None} for name in class_names]
    html = environment().get_template("unlabelled.html.j2").render(
        title=f"medray report: {out_dir.name}", generated=f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        why=WHY_NO_METRICS, images=len(predictions), rows=rows, model=model, galleries=picture_galleries(out_dir))
    path = out_dir / REPORT
    path.write_text(html, encoding="utf-8")
    return path
