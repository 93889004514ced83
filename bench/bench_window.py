"""Seconds per window end to end: papermill run of notebooks/monitor.ipynb plus the HTML report."""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nqflow.engine.monitor import REPO_ROOT
from nqflow.ops.runner import execute_window
from nqflow.research.sample.generator import generate_sample_market


def main(n: int = 3) -> None:
    sample = generate_sample_market(REPO_ROOT / "data" / "sample")
    durations = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            start = pd.Timestamp("2026-10-30T15:00Z") + pd.Timedelta(minutes=15 * i)
            run = execute_window(
                start,
                start + pd.Timedelta(minutes=15),
                Path(tmp),
                {"data_dir": str(sample), "state_db": str(Path(tmp) / "state.sqlite")},
            )
            durations.append(run.duration_s)
            print(f"window {start:%H:%M}Z: {run.duration_s:5.2f}s ({'ok' if run.ok else run.error})")
    print(
        f"seconds per window end to end (papermill + HTML): median {statistics.median(durations):.2f}s "
        f"(first includes building the 20-session baseline)"
    )


if __name__ == "__main__":
    main()
