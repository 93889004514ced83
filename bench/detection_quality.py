"""Detection quality over the whole sample market: recall per kind, false alerts per session.

Runs every window of every session with at least 5 sessions of history through the engine
(in-process, as the notebook does) and compares with ground_truth.json. Prints figures only.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nqflow import calendar as cal  # noqa: E402
from nqflow.baseline import BaselineStore  # noqa: E402
from nqflow.config import load_config  # noqa: E402
from nqflow.data import ReplaySource  # noqa: E402
from nqflow.monitor import REPO_ROOT, run_window  # noqa: E402
from nqflow.quality import evaluate  # noqa: E402
from nqflow.sample import generate_sample_market  # noqa: E402


def main() -> None:
    config = load_config()
    folder = generate_sample_market(REPO_ROOT / "data" / "sample")
    source = ReplaySource(folder)
    truth = json.loads((folder / "ground_truth.json").read_text())
    available = source.sessions_available()
    sessions = available[5:]
    with tempfile.TemporaryDirectory() as tmp:
        store = BaselineStore(Path(tmp) / "baseline.sqlite")
        alerts = [run_window(config, s, e, source, store, record_baseline=False, available=available).alerts
                  for day in sessions for s, e in cal.session_windows(day)]
    result = evaluate(pd.concat(alerts, ignore_index=True), truth, config, [str(d) for d in sessions])
    result.pop("per_event")
    result.pop("false_alert_ids")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
