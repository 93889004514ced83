"""Scheduler behaviour with an injected clock: catch-up, closed market, retries, no duplicates, lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pandas as pd
import pytest
from helpers import InProcessExecutor

from nqflow.config import load_config
from nqflow.engine.baseline import BaselineStore
from nqflow.engine.monitor import REPO_ROOT
from nqflow.errors import NqflowError
from nqflow.ops.scheduling import Scheduler, SimulatedClock
from nqflow.ops.store import RunOutcome


@pytest.fixture()
def make_scheduler(tmp_path, source):
    baseline = BaselineStore(tmp_path / "baseline.sqlite")

    def make(now: str, fail_times: int = 0, **config_overrides) -> Scheduler:
        config = load_config(overrides={"notify.log.path": str(tmp_path / "alerts.log"), **config_overrides})
        return Scheduler(
            config,
            clock=SimulatedClock(pd.Timestamp(now)),
            outputs_dir=tmp_path / "out",
            state_db=tmp_path / "state.sqlite",
            executor=InProcessExecutor(source, baseline, fail_times),
        )

    return make


def test_first_start_runs_only_the_latest_complete_window(make_scheduler):
    scheduler = make_scheduler("2026-10-30T15:03:00Z")
    assert scheduler.due_windows(scheduler.clock.now()) == [
        (pd.Timestamp("2026-10-30T14:45Z"), pd.Timestamp("2026-10-30T15:00Z"))
    ]
    scheduler.clock.current = pd.Timestamp("2026-10-30T15:01:00Z")  # inside the availability delay
    assert scheduler.due_windows(scheduler.clock.now())[-1][1] == pd.Timestamp("2026-10-30T14:45Z")


def test_catch_up_after_downtime_in_order_and_bounded(make_scheduler):
    scheduler = make_scheduler("2026-10-30T14:03:00Z", **{"schedule.max_catchup_windows": 6})
    scheduler.tick()
    scheduler.clock.current = pd.Timestamp("2026-10-30T17:03:00Z")  # three hours of downtime
    runs = scheduler.tick()
    started = scheduler.executor.calls[1:]
    assert started == sorted(started) and len(runs) == 6  # bounded by max_catchup_windows
    assert started[-1] == pd.Timestamp("2026-10-30T16:45Z")


def test_closed_market_windows_are_skipped(make_scheduler):
    weekend = make_scheduler("2026-10-31T15:03:00Z")  # Saturday
    assert weekend.due_windows(weekend.clock.now()) == []
    halt = make_scheduler("2026-10-30T21:48:00Z")  # 16:30 CT: daily halt
    halt.store.start_attempt("2026-10-30T20:45:00+00:00", "2026-10-30T21:00:00+00:00", "x")
    halt.store.finish_window(
        "2026-10-30T20:45:00+00:00", "2026-10-30T21:00:00+00:00", RunOutcome("ok", "x", 0.0, None, None, 0, {})
    )
    assert halt.due_windows(halt.clock.now()) == []  # 21:00-21:45 all inside the halt


def test_failed_window_is_retried_with_backoff_then_reported(make_scheduler):
    scheduler = make_scheduler(
        "2026-10-30T15:03:00Z", fail_times=10, **{"schedule.max_attempts": 3, "schedule.retry_backoff_seconds": 60.0}
    )
    window = (pd.Timestamp("2026-10-30T14:45Z"), pd.Timestamp("2026-10-30T15:00Z"))
    scheduler.tick()
    row = scheduler.store.window(window[0].isoformat(), window[1].isoformat())
    assert row["status"] == "failed" and row["attempts"] == 1 and "injected" in row["last_error"]
    scheduler.clock.current += pd.Timedelta(seconds=30)
    assert window not in scheduler.due_windows(scheduler.clock.now())  # backoff not over
    scheduler.clock.current += pd.Timedelta(seconds=31)
    assert window in scheduler.due_windows(scheduler.clock.now())
    scheduler.tick()  # attempt 2, next backoff 120 s
    scheduler.clock.current += pd.Timedelta(seconds=121)
    scheduler.tick()  # attempt 3: the last
    scheduler.clock.current += pd.Timedelta(hours=1)
    row = scheduler.store.window(window[0].isoformat(), window[1].isoformat())
    assert row["attempts"] == 3 and row["status"] == "failed" and row["next_attempt_at"] is None
    assert window not in scheduler.due_windows(scheduler.clock.now())


def test_running_a_window_again_never_duplicates_alerts_or_deliveries(make_scheduler, truth, capsys, tmp_path):
    block = next(e for e in truth["events"] if e["kind"] == "block" and e["premium_usd"] > 3e6)
    start = pd.Timestamp(block["window_start"])
    scheduler = make_scheduler(str(start + pd.Timedelta(minutes=20)))
    window = [(start, start + pd.Timedelta(minutes=15))]
    scheduler.process_windows(window)
    first = capsys.readouterr().out
    scheduler.process_windows(window)
    second = capsys.readouterr().out
    alerts = scheduler.store.alerts()
    assert alerts and len({a.alert_id for a in alerts}) == len(alerts)
    assert "large_order" in first and second == ""
    deliveries = scheduler.store.deliveries()
    assert (deliveries["status"] == "sent").all() and (deliveries["attempts"] == 1).all()
    log_lines = (tmp_path / "alerts.log").read_text().splitlines()
    assert len(log_lines) == len(alerts)


def test_one_instance_at_a_time(make_scheduler):
    first = make_scheduler("2026-10-30T15:03:00Z")
    lock = first.lock()
    lock.acquire()
    try:
        second = make_scheduler("2026-10-30T15:03:00Z")
        with pytest.raises(NqflowError, match="another scheduler holds"):
            second.run_forever()
    finally:
        lock.release()


def test_sigterm_stops_run_cleanly(tmp_path):
    env = dict(os.environ)
    process = subprocess.Popen(
        [
            sys.executable,
            str(REPO_ROOT / "scheduler.py"),
            "--state-db",
            str(tmp_path / "state.sqlite"),
            "--outputs",
            str(tmp_path / "out"),
            "--set",
            "schedule.poll_seconds=0.5",
            "--set",
            f'notify.log.path="{tmp_path / "alerts.log"}"',
            "run",
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    # `run` says its start-up line once its signal handlers are in place (however loaded the machine)
    first = process.stdout.readline().decode()
    assert first.startswith("nqflow run: "), f"run exited early: {process.stderr.read().decode()[-500:]}"
    assert process.poll() is None
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 0
    from filelock import FileLock

    FileLock(str(tmp_path / "state.sqlite") + ".lock").acquire(timeout=0)  # released on the way out


def test_a_window_left_running_by_a_killed_scheduler_is_run_again(make_scheduler):
    scheduler = make_scheduler("2026-10-30T15:33:00Z")
    start = "2026-10-30T15:15:00+00:00"
    scheduler.store.start_attempt(start, "2026-10-30T15:30:00+00:00", "2026-10-30T15:32:00+00:00")  # then SIGKILL
    assert (pd.Timestamp(start), pd.Timestamp("2026-10-30T15:30Z")) not in scheduler.due_windows(scheduler.clock.now())

    class OnePass(SimulatedClock):
        def wait(self, stop, seconds):
            stop.set()

    scheduler.clock = OnePass(scheduler.clock.now())
    scheduler.run_forever()
    row = scheduler.store.window(start, "2026-10-30T15:30:00+00:00")
    assert row["status"] == "ok" and row["attempts"] == 2
    assert pd.Timestamp(start) in scheduler.executor.calls
