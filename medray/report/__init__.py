"""Evaluation report: metrics, error analysis and plots of a run or a sweep, as one static HTML page."""

from medray.report.build import build_report

__all__ = ["build_report"]
