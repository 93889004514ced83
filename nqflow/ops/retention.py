"""Bounded disk: old executed notebooks and reports are deleted, alert history and window
state never are.

Files are aged by the date folder they live in (``outputs/YYYY-MM-DD/``), the trade date or
UTC date of what they report, so the rule reads the same on a simulated clock and after a
restore from backup. The index links only files that exist (`nqflow.reports.index`).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path

from nqflow.config import Retention

log = logging.getLogger(__name__)

#: What each retention setting removes, by file suffix.
NOTEBOOK_SUFFIXES = (".ipynb",)
REPORT_SUFFIXES = (".html", ".png")


@dataclass
class Removed:
    notebooks: int = 0
    reports: int = 0
    bytes: int = 0
    folders: int = 0


def apply_retention(outputs_dir: Path, retention: Retention, today: dt.date) -> Removed:
    """Delete notebooks older than ``retention.notebook_days`` and reports older than
    ``retention.report_days`` under `outputs_dir`, and date folders left empty."""
    removed = Removed()
    if not outputs_dir.is_dir():
        return removed
    for folder in sorted(outputs_dir.iterdir()):
        try:
            day = dt.date.fromisoformat(folder.name)
        except ValueError:
            continue  # index.html, backtests/, screenshots/: not dated, not ours to age
        if not folder.is_dir():
            continue
        age = (today - day).days
        for path in folder.iterdir():
            old_notebook = path.suffix in NOTEBOOK_SUFFIXES and age > retention.notebook_days
            old_report = path.suffix in REPORT_SUFFIXES and age > retention.report_days
            if path.is_file() and (old_notebook or old_report):
                removed.bytes += path.stat().st_size
                path.unlink()
                removed.notebooks += old_notebook
                removed.reports += old_report
        if not any(folder.iterdir()):
            folder.rmdir()
            removed.folders += 1
    if removed.notebooks or removed.reports:
        log.info(
            "retention: deleted %d notebook(s) and %d report(s), %.1f MB",
            removed.notebooks,
            removed.reports,
            removed.bytes / 1e6,
        )
    return removed
