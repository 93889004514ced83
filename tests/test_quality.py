"""Detection quality against the sample market's planted events (ground truth).

Runs the engine over every window that holds a planted event (sessions with at least 5
sessions of history) and over every window of one quiet session."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from nqflow import calendar as cal
from nqflow.baseline import BaselineStore
from nqflow.monitor import run_window
from nqflow.quality import evaluate

#: Stated bound for false alerts on a quiet session (92 windows) with the default thresholds.
MAX_QUIET_SESSION_ALERTS = 3


@pytest.fixture(scope="module")
def runs(source, truth, tmp_path_factory):
    from nqflow.config import load_config
    config = load_config()
    baseline = BaselineStore(tmp_path_factory.mktemp("quality") / "baseline.sqlite")
    available = source.sessions_available()
    sessions = [str(d) for d in available[5:]]
    event_windows = sorted({e["window_start"] for e in truth["events"] if e["session"] in sessions})
    quiet = truth["quiet_sessions"][-1]
    alerts = []
    for start in event_windows:
        start = pd.Timestamp(start)
        result = run_window(config, start, start + pd.Timedelta(minutes=15), source, baseline,
                            record_baseline=False, available=available)
        alerts.append(result.alerts)
    quiet_alerts = []
    for start, end in cal.session_windows(dt.date.fromisoformat(quiet)):
        quiet_alerts.append(run_window(config, start, end, source, baseline, record_baseline=False,
                                       available=available).alerts)
    return config, sessions, pd.concat(alerts, ignore_index=True), pd.concat(quiet_alerts, ignore_index=True)


def test_every_planted_event_above_threshold_is_found_with_kind_tier_and_direction(runs, truth):
    config, sessions, alerts, _ = runs
    result = evaluate(alerts, truth, config, sessions)
    assert result["positives"] >= 25  # enough planted events above threshold for recall to mean something
    assert result["missed"] == []
    assert set(result["recall_by_kind"]) == {"block", "sweep", "surge_instrument", "surge_product"}
    assert result["direction_accuracy"] == 1.0
    assert result["tier_accuracy"] == 1.0


def test_blocks_below_the_threshold_are_not_large_order_alerts(runs, truth):
    config, sessions, alerts, _ = runs
    small = [e for e in truth["events"] if e["kind"] == "block" and e["premium_usd"] < 3e6 and e["session"] in sessions]
    assert small
    for event in small:
        hits = alerts[(alerts["window_start"] == event["window_start"]) & (alerts["kind"] == "large_order")]
        assert not any(event["instrument_ids"][0] in ids for ids in hits["instrument_ids"])


def test_planted_alerts_carry_reasons_and_high_confidence(runs, truth):
    config, sessions, alerts, _ = runs
    orders = alerts[alerts["kind"].isin(["large_order", "sweep"])]
    assert (orders["confidence"] >= config.confidence.medium).all()
    assert all(len(r) >= 3 for r in alerts["reasons"])


def test_quiet_session_stays_quiet(runs):
    _, _, _, quiet_alerts = runs
    assert len(quiet_alerts) <= MAX_QUIET_SESSION_ALERTS
    assert (quiet_alerts["kind"] == "volume_surge").all()   # no large orders or sweeps on a quiet day
