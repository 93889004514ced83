"""The Dask backtest gives exactly the alerts that running the same windows one by one gives."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import pandas as pd
import pandas.testing as pdt
import pytest

from nqflow.alerts import to_records
from nqflow.config import load_config
from nqflow.engine.baseline import BaselineStore
from nqflow.engine.monitor import REPO_ROOT, run_window
from nqflow.market import hours as cal
from nqflow.research.backtest import backtest

# Slow (make test-fast leaves it out); one xdist worker runs the modules that share the Dask
# cluster, feature folder and baseline of conftest.feature_store.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("features")]

QUIET_HOUR_UTC = 15  # one ordinary RTH window per session, besides the planted ones


@pytest.fixture(scope="module")
def twenty_sessions(sample_dir, truth, feature_store, tmp_path_factory):
    """20 sessions; per session the windows holding planted events plus the 15:00Z window.

    Every window of 20 sessions would take minutes twice over (once per path); the selection
    keeps all the planted events and a quiet window of every session, and it is the same
    selection on both paths.
    """
    from nqflow.sources.replay import ReplaySource

    config = load_config()
    source = ReplaySource(sample_dir)
    available = source.sessions_available()
    sessions = available[-20:]
    planted = {pd.Timestamp(e["window_start"]) for e in truth["events"]}

    def chosen(start: pd.Timestamp, end: pd.Timestamp) -> bool:
        return start in planted or (start.hour == QUIET_HOUR_UTC and start.minute == 0)

    client, features_dir, baseline = feature_store
    result = backtest(
        config,
        sessions[0],
        sessions[-1],
        sample_dir,
        client=client,
        window_filter=chosen,
        progress=False,
        features_dir=features_dir,
        baseline_path=baseline,
    )
    store = BaselineStore(tmp_path_factory.mktemp("serial") / "baseline.sqlite")
    serial = [
        a
        for day in sessions
        for start, end in cal.session_windows(day)
        if chosen(start, end)
        for a in to_records(run_window(config, start, end, source, store, available=available).alerts)
    ]
    windows = [start.isoformat() for day in sessions for start, end in cal.session_windows(day) if chosen(start, end)]
    return sessions, windows, result, serial


def test_backtest_equals_window_by_window(twenty_sessions):
    sessions, windows, result, serial = twenty_sessions
    assert result.sessions == sessions and len(sessions) == 20
    assert result.windows["window_start"].tolist() == windows and len(windows) > 40
    backtested = result.alerts.drop(columns="trade_date")
    expected = pd.DataFrame(serial, columns=backtested.columns).sort_values(
        ["window_start", "alert_id"], ignore_index=True
    )
    assert len(expected) > 20  # the planted events are found on both paths
    pdt.assert_frame_equal(backtested.reset_index(drop=True), expected, check_dtype=False)


def test_counts_cover_every_session_and_parquet_round_trips(twenty_sessions, tmp_path):
    sessions, _, result, _ = twenty_sessions
    counts = result.counts()
    assert list(counts.index) == [str(d) for d in sessions]
    assert counts.to_numpy().sum() == len(result.alerts)
    alerts_path, windows_path = result.to_parquet(tmp_path)
    pdt.assert_frame_equal(pd.read_parquet(alerts_path), result.alerts, check_dtype=False)
    assert pd.read_parquet(windows_path)["alerts"].sum() == len(result.alerts)


def test_backtest_cli_names_the_available_range_for_a_bad_one(sample_dir):
    run = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "scheduler.py"),
            "--data-dir",
            str(sample_dir),
            "backtest",
            "2025-01-06",
            "2025-01-10",
            "--workers",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2
    line = run.stderr.strip().splitlines()[-1]
    assert line.startswith("error: no sessions between 2025-01-06 and 2025-01-10") and "pick dates inside" in line
    assert "2026-10-23" in line and "2026-11-27" in line


def test_a_batch_of_a_whole_session_equals_its_windows_one_at_a_time(source, tmp_path):
    """`detect_windows` over all 92 windows of a session with planted events (loose thresholds,
    so ~50 alerts) gives, window for window, what the window gives with only the windows of
    its worked-order lookback before it (as `run_window` reads them): nothing else leaks
    between neighbouring windows of a batch (orders, sweeps, volumes, baselines)."""
    from nqflow.engine.baseline import ensure_history, window_keys
    from nqflow.engine.detect import detect_window, detect_windows
    from nqflow.engine.worked import lookback
    from nqflow.market.frames import window_from
    from nqflow.research.lab import LOOSE

    config = load_config(None, LOOSE)
    day = dt.date(2026, 11, 16)
    store = BaselineStore(tmp_path / "baseline.sqlite")
    ensure_history(store, source, day, config.thresholds.baseline_sessions)
    row = cal.sessions(day, day).iloc[0]
    fills = source.trades(row.market_open, row.market_close)
    windows = [
        window_from(
            s,
            e,
            day,
            fills[(fills["ts_event"] >= s) & (fills["ts_event"] < e)].reset_index(drop=True),
            source.chain(day),
            source.open_interest(day),
            source.spread_legs(day),
        )
        for s, e in cal.session_windows(day)
    ]
    slots = [cal.slot_of(w.start, row.market_open) for w in windows]
    expected = store.expected(
        day,
        slots,
        config.thresholds.baseline_sessions,
        {slot: window_keys(w.trades) for slot, w in zip(slots, windows)},
    )
    batch = detect_windows(windows, [expected[s] for s in slots], config)
    assert sum(len(d.alerts) for d in batch) > 12 and sum(d.orders["sweep_id"].ge(0).sum() for d in batch) > 0
    assert sum(len(d.packages) for d in batch) > 100  # the session's spreads, read as packages on both paths
    span = lookback(config.thresholds)
    for window, slot, together in zip(windows, slots, batch):
        # a window with the windows of its worked-order lookback, as run_window detects it
        earlier = [w for w in windows if w.start >= window.start - span and w.end <= window.start]
        alone = detect_windows([*earlier, window], [None] * len(earlier) + [expected[slot]], config)[-1]
        if not earlier:
            pdt.assert_frame_equal(alone.alerts, detect_window(window, expected[slot], config).alerts)
        pdt.assert_frame_equal(together.alerts, alone.alerts)
        pdt.assert_frame_equal(together.orders, alone.orders)
        pdt.assert_frame_equal(together.volumes, alone.volumes)
        assert together.summary == alone.summary


def test_each_worker_gets_one_run_of_consecutive_sessions_in_date_order(feature_store):
    """A session's dealer walls read the day before's trades and its expected volumes the days
    before's baseline files: each worker is given one run of consecutive days, of about equal
    work, run in date order; a history session (slot volumes only) weighs less."""
    from nqflow.research.backtest import consecutive_runs

    client, _, _ = feature_store
    workers = sorted(client.scheduler_info()["workers"])
    days = [dt.date(2026, 1, 1) + dt.timedelta(days=i) for i in range(30)]
    weights = {d: (0.3 if i < 10 else 1.0) for i, d in enumerate(days)}
    placed = consecutive_runs(client, dict(reversed(weights.items())))  # in any order given
    assert set(placed) == set(days) and len(workers) == 2
    runs = [placed[d]["workers"] for d in days]
    assert all(len(r) == 1 for r in runs) and runs == sorted(runs, key=lambda r: workers.index(r[0]))
    assert {r[0] for r in runs} == set(workers)  # two runs, one each, each unbroken
    first = [d for d in days if placed[d]["workers"] == [workers[0]]]
    work = sum(weights[d] for d in first)
    assert abs(work - sum(weights.values()) / 2) <= 1.0 and len(first) > 15  # the history's 10 days count 0.3 each
    priorities = [placed[d]["priority"] for d in days]
    assert priorities == sorted(priorities, reverse=True) and len(set(priorities)) == len(days)
    assert all(placed[d]["allow_other_workers"] for d in days)


def test_the_backtests_own_workers_run_its_set_up_and_the_driver_is_left_alone(feature_store):
    """Each worker of the backtest's own cluster runs `nqflow.research.worker` at its start (the
    garbage collector's batch thresholds); the process that asked for the cluster keeps its own."""
    import gc

    from nqflow.research.worker import BATCH_GC_THRESHOLDS

    client, _, _ = feature_store
    thresholds = client.run(gc.get_threshold)
    assert len(thresholds) == 2 and set(thresholds.values()) == {BATCH_GC_THRESHOLDS}
    assert gc.get_threshold() != BATCH_GC_THRESHOLDS
