"""Loud when blind: health conditions, health alerts through the outbox (raised once, cleared
once), the status verdict and its exit code, retention. Real SQLite, a real SMTP server."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

import pandas as pd
import pytest
from helpers import SMTP_PASSWORD, Inbox, InProcessExecutor, free_port, smtp_server

from nqflow.config import load_config
from nqflow.engine.baseline import BaselineStore
from nqflow.ops import health
from nqflow.ops.retention import apply_retention
from nqflow.ops.scheduling import Scheduler, SimulatedClock
from nqflow.ops.store import RunOutcome, StateStore
from nqflow.paths import REPO_ROOT

QUIET = {"notify.console.enabled": False, "notify.email.enabled": False, "notify.slack.enabled": False}


@pytest.fixture()
def make_scheduler(tmp_path, source):
    baseline = BaselineStore(tmp_path / "baseline.sqlite")

    def make(now: str, fail_times: int = 0, **overrides) -> Scheduler:
        config = load_config(overrides={**QUIET, "notify.log.path": str(tmp_path / "alerts.log"), **overrides})
        return Scheduler(
            config,
            clock=SimulatedClock(pd.Timestamp(now)),
            outputs_dir=tmp_path / "out",
            state_db=tmp_path / "state.sqlite",
            executor=InProcessExecutor(source, baseline, fail_times),
        )

    return make


def logged(tmp_path) -> list[dict]:
    path = tmp_path / "alerts.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_window_failed_for_good_is_raised_once_then_cleared_once(make_scheduler, tmp_path):
    settings = {"schedule.max_attempts": 2, "schedule.retry_backoff_seconds": 60.0}
    scheduler = make_scheduler("2026-10-30T15:03:00Z", fail_times=2, **settings)
    window = (pd.Timestamp("2026-10-30T14:45Z"), pd.Timestamp("2026-10-30T15:00Z"))
    scheduler.tick()
    # nothing done yet is no evidence of sight: status is blind, but no alert is raised for it
    assert scheduler.health_tick() == [] and [c.key for c in scheduler.health_conditions()] == ["never_done"]
    assert health.verdict(scheduler.health_conditions()) == health.Verdict.BLIND
    scheduler.clock.current += pd.Timedelta(seconds=61)
    scheduler.tick()  # the last attempt fails
    (raised,) = scheduler.health_tick()
    assert raised.kind == "health" and raised.symbol == "window 2026-10-30T14:45Z failed for good"
    assert "injected failure" in raised.reasons[0] and "scheduler.py window 2026-10-30T14:45Z" in raised.reasons[0]
    assert scheduler.health_tick() == []  # once
    assert {c.key: c.verdict for c in scheduler.health_conditions()} == {
        "window_failed:2026-10-30T14:45:00+00:00": health.Verdict.DEGRADED,
        "never_done": health.Verdict.BLIND,
    }
    restarted = make_scheduler(str(scheduler.clock.now()), **settings)
    assert restarted.health_tick() == []  # and once across restarts
    assert restarted.process(*window).ok  # the operator re-runs it
    (recovered,) = restarted.health_tick()
    assert recovered.symbol == "recovered: window 2026-10-30T14:45Z failed for good" and recovered.label == "LOW"
    assert health.verdict(restarted.health_conditions()) == health.Verdict.HEALTHY
    sent = [a for a in logged(tmp_path) if a["kind"] == "health"]
    assert [a["alert_id"] for a in sent] == [raised.alert_id, recovered.alert_id]


def test_blind_counts_open_market_minutes_only(make_scheduler):
    scheduler = make_scheduler("2026-10-29T22:40:00Z")  # Thursday; the daily halt was 21:00-22:00Z
    scheduler.store.start_attempt("2026-10-29T20:45:00+00:00", "2026-10-29T21:00:00+00:00", "x")
    scheduler.store.finish_window(
        "2026-10-29T20:45:00+00:00", "2026-10-29T21:00:00+00:00", RunOutcome("ok", "x", 0.0, None, None, 0, {})
    )
    assert [c.key for c in scheduler.health_conditions()] == []  # 30 open minutes since the halt
    scheduler.clock.current = pd.Timestamp("2026-10-29T22:50:00Z")
    (blind,) = scheduler.health_conditions()
    assert (
        blind.key == "blind" and blind.verdict == health.Verdict.BLIND and "45 minutes of open market" in blind.detail
    )
    (alert,) = scheduler.health_tick()
    assert alert.label == "HIGH"


def test_data_lagging_by_hours_says_real_time_licensing(tmp_path):
    store, config, now = StateStore(tmp_path / "s.sqlite"), load_config(), pd.Timestamp("2026-10-30T15:00Z")
    assert health.assess(store, config, now, now - pd.Timedelta(minutes=20)) == []
    (lag,) = health.assess(store, config, now, now - pd.Timedelta(hours=3))
    assert lag.key == "data_lag" and lag.verdict == health.Verdict.BLIND
    assert "3.0 h behind real time" in lag.detail and "real-time licensing" in lag.detail
    weekend = pd.Timestamp("2026-10-31T15:00Z")  # the market is closed: data may stop
    assert health.assess(store, config, weekend, weekend - pd.Timedelta(hours=20)) == []


def test_a_channel_down_is_told_on_the_others_and_its_alerts_go_out_once_it_is_back(
    make_scheduler, truth, tls, tmp_path, monkeypatch
):

    monkeypatch.setenv("SSL_CERT_FILE", str(tls[0]))
    monkeypatch.setenv("NQFLOW_SMTP_PASSWORD", SMTP_PASSWORD)
    port = free_port()
    block = next(e for e in truth["events"] if e["kind"] == "block" and e["premium_usd"] > 3e6)
    start = pd.Timestamp(block["window_start"])
    scheduler = make_scheduler(
        str(start + pd.Timedelta(minutes=17)),
        **{
            "notify.email.enabled": True,
            "notify.email.host": "127.0.0.1",
            "notify.email.port": port,
            "notify.email.user": "desk",
            "notify.email.recipients": ["desk@example.test"],
            "notify.retry_backoff_seconds": 30.0,
            "health.channel_down_minutes": 60.0,
            "health.blind_minutes": 1e9,
        },
    )
    assert scheduler.process(start, start + pd.Timedelta(minutes=15)).ok
    scheduler.deliver()  # the log takes it; SMTP is down (nothing listens on the port)
    assert scheduler.health_tick() == []  # seen failing, not yet for long
    market = [a for a in logged(tmp_path) if a["kind"] != "health"]
    assert market
    for minutes in (30, 61):
        scheduler.clock.current += pd.Timedelta(minutes=30 if minutes == 30 else 31)
        scheduler.deliver()
        raised = scheduler.health_tick()
        assert (raised == []) == (minutes == 30)  # raised once the channel has been down an hour
    (down,) = raised
    assert down.symbol == "email channel down" and "SMTP 127.0.0.1" in down.reasons[0]
    deliveries = scheduler.store.deliveries().set_index(["alert_id", "channel"])["status"]
    assert deliveries[(down.alert_id, "email")] == "skipped" and deliveries[(down.alert_id, "log")] == "sent"
    inbox = Inbox()
    server = smtp_server(tls, inbox, port)
    try:
        for _ in range(12):  # backoff doubles: give the outbox a few hours of ticks
            scheduler.clock.current += pd.Timedelta(minutes=20)
            scheduler.deliver()
            scheduler.health_tick()
    finally:
        server.stop()
    assert len(inbox.messages) == 1 and all(
        a["alert_id"] in inbox.messages[0].get_body(("plain",)).get_content() for a in market
    )
    health_sent = [a["symbol"] for a in logged(tmp_path) if a["kind"] == "health"]
    assert health_sent == ["email channel down", "recovered: email channel down"]
    assert health.verdict(scheduler.health_conditions()) == health.Verdict.HEALTHY


def test_status_json_exit_code_is_the_verdict(tmp_path):
    store = StateStore(tmp_path / "state.sqlite")
    store.start_attempt("2026-10-30T14:45:00+00:00", "2026-10-30T15:00:00+00:00", "x")
    for _ in range(4):
        store.finish_window(
            "2026-10-30T14:45:00+00:00",
            "2026-10-30T15:00:00+00:00",
            RunOutcome("failed", "x", 0.0, None, None, None, None, error="DataError: gone"),
        )
        store.start_attempt("2026-10-30T14:45:00+00:00", "2026-10-30T15:00:00+00:00", "x")
    store.finish_window(
        "2026-10-30T14:45:00+00:00",
        "2026-10-30T15:00:00+00:00",
        RunOutcome("failed", "x", 0.0, None, None, None, None, error="DataError: gone"),
    )
    done = subprocess.run(
        [sys.executable, "scheduler.py", "--state-db", str(tmp_path / "state.sqlite"), "status", "--json"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = json.loads(done.stdout)  # nothing but JSON on stdout
    # a window failed for good (degraded) and nothing done since 2026-10-30 (blind): the worst wins
    assert done.returncode == 7 == report["exit_code"] and report["verdict"] == "blind"
    assert {c["key"] for c in report["conditions"]} == {
        "blind",
        "window_failed:2026-10-30T14:45:00+00:00",
        "never_done",
    }
    assert report["measured_against"] == "data_end" and report["data_end"].startswith("2026-11-2")


def test_retention_deletes_old_notebooks_and_reports_and_the_index_stops_linking_them(make_scheduler, tmp_path):
    scheduler = make_scheduler("2026-10-30T15:03:00Z")
    out = scheduler.outputs_dir
    for day, names in (
        ("2026-06-01", ["0100-0115Z.ipynb", "0100-0115Z.html"]),
        ("2026-10-01", ["0100-0115Z.ipynb", "0100-0115Z.html", "session.html"]),
        ("2026-10-29", ["0100-0115Z.ipynb", "0100-0115Z.html"]),
    ):
        (out / day).mkdir(parents=True)
        for name in names:
            (out / day / name).write_text("x" * 1000)
    start = "2026-10-01T01:00:00+00:00"
    scheduler.store.start_attempt(start, "2026-10-01T01:15:00+00:00", start)
    scheduler.store.finish_window(
        start,
        "2026-10-01T01:15:00+00:00",
        RunOutcome(
            "ok",
            start,
            1.0,
            str(out / "2026-10-01" / "0100-0115Z.ipynb"),
            str(out / "2026-10-01" / "0100-0115Z.html"),
            0,
            {},
        ),
    )
    removed = scheduler.retention_tick()
    assert (removed.notebooks, removed.reports, removed.folders) == (2, 1, 1)
    assert not (out / "2026-06-01").exists()  # older than both: gone
    assert sorted(p.name for p in (out / "2026-10-01").iterdir()) == ["0100-0115Z.html", "session.html"]
    assert len(list((out / "2026-10-29").iterdir())) == 2  # young: kept
    index = (out / "index.html").read_text()
    assert "0100-0115Z.html" in index and "0100-0115Z.ipynb" not in index  # only what exists is linked
    assert scheduler.store.window(start, "2026-10-01T01:15:00+00:00")["status"] == "ok"  # window state kept
    assert scheduler.retention_tick() is None  # once a day
    assert apply_retention(out, scheduler.config.retention, dt.date(2027, 6, 1)).reports == 3


def test_health_alerts_are_listed_as_the_monitor_s_in_the_index(make_scheduler):
    scheduler = make_scheduler("2026-10-29T22:50:00Z")
    scheduler.store.start_attempt("2026-10-29T20:45:00+00:00", "2026-10-29T21:00:00+00:00", "x")
    scheduler.store.finish_window(
        "2026-10-29T20:45:00+00:00", "2026-10-29T21:00:00+00:00", RunOutcome("ok", "x", 0.0, None, None, 0, {})
    )
    (alert,) = scheduler.health_tick()
    page = scheduler.refresh_index().read_text()
    assert 'data-kind="health" data-label="HIGH" data-product="(monitor)"' in page and alert.symbol in page
