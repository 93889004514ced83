"""Detection quality over the whole sample market: recall per kind, false alerts per session.

Backtests every window of every session with at least 5 sessions of history (the same
`run_window` the notebook runs, spread over Dask workers), reads each session's off-book
volume from the next day's statistics, confirms every alert against the next morning's open
interest, and compares all of it with ground_truth.json. Prints
figures, and the alerts that match no planted event. Run: make quality  [WORKERS, default 2]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nqflow.config import load_config
from nqflow.engine.monitor import REPO_ROOT
from nqflow.engine.offbook import read_off_book_days
from nqflow.engine.positions import confirm_days
from nqflow.research.backtest import backtest
from nqflow.research.lab import summary_table
from nqflow.research.quality import evaluate
from nqflow.research.sample.generator import generate_sample_market, load_ground_truth
from nqflow.sources.replay import ReplaySource


def main() -> None:
    workers = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    config = load_config()
    folder = generate_sample_market(REPO_ROOT / "data" / "sample")
    truth = load_ground_truth(folder)
    sessions = ReplaySource(folder).sessions_available()[5:]
    result = backtest(config, sessions[0], sessions[-1], folder, workers=workers)
    off_book = read_off_book_days(ReplaySource(folder), sessions, config)
    alerts = pd.concat([result.alerts.drop(columns="trade_date"), off_book], ignore_index=True)
    days = [str(d) for d in sessions]
    confirmations = confirm_days(ReplaySource(folder), alerts, sessions, config)
    figures = evaluate(alerts, truth, config, days, confirmations)
    figures.pop("per_event")
    false_ids = set(figures.pop("false_alert_ids"))
    figures["precision"] = summary_table(alerts, truth, config, days)["precision"]
    print(json.dumps(figures, indent=2))
    for alert in alerts[alerts["alert_id"].isin(false_ids)].to_dict("records"):
        print(
            f"no planted event: {alert['window_start'][:16]} {alert['kind']} {alert['level']} {alert['symbol']} "
            f"ratio {alert['ratio'] or 0:.1f} tier {alert['tier'] or 0:g} volume {alert['volume']:,}"
        )


if __name__ == "__main__":
    main()
