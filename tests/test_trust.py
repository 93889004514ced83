"""Trustworthy to run: never healthy while blind, never losing state, bad input refused in one
line with an exit code of its own, before any work, and nothing already recorded changed (#22)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from helpers import make_alert

from nqflow.config import load_config
from nqflow.errors import DataError, ExitCode
from nqflow.ops.scheduling import Scheduler, SimulatedClock
from nqflow.ops.store import SCHEMA_VERSION, RunOutcome, StateStore
from nqflow.paths import REPO_ROOT

QUIET = ["--set", "notify.email.enabled=false", "--set", "notify.slack.enabled=false"]


def cli(*words: str, tmp_path: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """scheduler.py with state, outputs and the alert log in `tmp_path` (as a user would pass them)."""
    base = [
        sys.executable,
        "scheduler.py",
        "--state-db",
        str(tmp_path / "state.sqlite"),
        "--outputs",
        str(tmp_path / "out"),
        "--set",
        f"notify.log.path={tmp_path / 'alerts.log'}",
        *QUIET,
    ]
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("DATABENTO", "NQFLOW_"))}
    return subprocess.run(
        [*base, *words],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**environment, **(env or {})},
    )


def one_error_line(done: subprocess.CompletedProcess) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


def windows_in(path: Path) -> list[tuple]:
    if not path.exists():
        return []
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT window_start, window_end, status, attempts FROM windows ORDER BY 1, 2").fetchall()


@pytest.fixture()
def read_only_dir(tmp_path):
    """A folder nobody can write, root included: a read-only tmpfs where mounting works, else a
    path under /proc (which holds no folders of ours)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    mounted = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True
        ).returncode
        == 0
    )
    yield folder if mounted else Path("/proc/nqflow-cannot-write")
    if mounted:
        subprocess.run(["umount", str(folder)], check=False)


# -- never healthy while blind -------------------------------------------------------------------


def test_a_window_past_the_data_is_refused_as_not_published_and_never_recorded(sample_dir, tmp_path):
    done = cli("--data-dir", str(sample_dir), "window", "2030-01-02T15:00Z", tmp_path=tmp_path)
    line = one_error_line(done)
    assert done.returncode == ExitCode.NOT_YET == 5
    assert "not published yet" in line and "ends at 2026-11-2" in line and str(sample_dir) in line
    assert windows_in(tmp_path / "state.sqlite") == [] and not (tmp_path / "out" / "2030-01-02").exists()
    as_json = cli("--data-dir", str(sample_dir), "window", "2030-01-02T15:00Z", "--json", tmp_path=tmp_path)
    error = json.loads(as_json.stdout)  # an error object, never `[]`
    assert as_json.returncode == 5 and error["exit_code"] == 5 and error["kind"] == "DataNotYetAvailable"
    assert "not published yet" in error["error"]
    status = cli("--data-dir", str(sample_dir), "status", "--json", tmp_path=tmp_path)
    report = json.loads(status.stdout)
    assert status.returncode == ExitCode.BLIND and report["verdict"] == "blind" and report["last_ok_window"] is None
    assert [c["key"] for c in report["conditions"]] == ["never_done"] and report["measured_against"] == "data_end"


def test_a_window_in_the_future_is_not_published_yet(make_scheduler_at):
    scheduler = make_scheduler_at("2026-10-30T15:10:00Z")
    with pytest.raises(DataError, match="not published yet: it ends at 2026-10-30 15:15Z") as info:
        scheduler.check_window(pd.Timestamp("2026-10-30T15:00Z"), pd.Timestamp("2026-10-30T15:15Z"))
    assert info.value.exit_code == ExitCode.NOT_YET
    assert scheduler.store.windows().empty


class OptionsGone:
    """The sample market with its option trades withheld (an entitlement that lost CME options):
    futures still print, so the market is plainly open."""

    def __init__(self, source):
        self.source = source

    def __getattr__(self, name):
        return getattr(self.source, name)

    def trades(self, start, end):
        trades = self.source.trades(start, end)
        return trades[~trades["put_call"].isin(["C", "P"])]


def test_open_market_with_no_option_trades_is_a_data_error_never_a_quiet_window(source, tmp_path):
    from nqflow.engine.baseline import BaselineStore
    from nqflow.engine.monitor import run_window

    with pytest.raises(
        DataError,
        match=r"no NQ option trades in 2026-10-30 15:00Z-15:15Z while CME Globex was open "
        r"\(\d+ futures trades\): a data problem",
    ) as info:
        run_window(
            load_config(),
            "2026-10-30T15:00Z",
            "2026-10-30T15:15Z",
            OptionsGone(source),
            BaselineStore(tmp_path / "baseline.sqlite"),
            record_baseline=False,
        )
    assert "\n" not in str(info.value)


def test_status_measures_a_replay_folder_against_its_data_end(make_scheduler_at):
    scheduler = make_scheduler_at("2026-12-02T15:00:00Z")  # days after the sample ends
    start = "2026-11-27T16:45:00+00:00"  # the sample's last window (the Thanksgiving half day closes 18:15Z)
    scheduler.store.start_attempt(start, "2026-11-27T17:00:00+00:00", start)
    scheduler.store.finish_window(start, "2026-11-27T17:00:00+00:00", RunOutcome("ok", start, 1.0, None, None, 0, {}))
    basis = scheduler.health_basis()
    assert basis["measured_against"] == "data_end" and basis["data_end"].startswith("2026-11-27")
    # 75 minutes of open market after the last window done, but the clock's five days do not count
    keys = [c.key for c in scheduler.health_conditions()]
    assert keys == ["blind"] and "up to the data end" in scheduler.health_conditions()[0].detail


@pytest.fixture()
def make_scheduler_at(tmp_path, sample_dir):
    def make(now: str, **overrides) -> Scheduler:
        config = load_config(overrides={"notify.log.path": str(tmp_path / "alerts.log"), **overrides})
        return Scheduler(
            config,
            clock=SimulatedClock(pd.Timestamp(now)),
            data_dir=str(sample_dir),
            outputs_dir=tmp_path / "out",
            state_db=tmp_path / "state.sqlite",
        )

    return make


# -- never losing state ----------------------------------------------------------------------------


def test_demo_never_deletes_a_state_database_it_did_not_create(tmp_path):
    """`fresh_state`, the demo's whole policy on the database it is pointed at (test_demo runs the
    demo on one it did not create, end to end): a new one is marked as the demo's, an earlier
    demo's is replaced, anybody else's is used as it is."""
    from nqflow.research.demo import fresh_state

    new = tmp_path / "new.sqlite"
    assert fresh_state(new).startswith("a new demo state database") and windows_in(new) == []
    record_window(new, "2026-10-30T15:00:00+00:00")
    assert "the last demo's was replaced" in fresh_state(new) and windows_in(new) == []

    mine = tmp_path / "mine.sqlite"
    for minute in ("00", "15"):
        record_window(mine, f"2026-10-30T15:{minute}:00+00:00")
    before = windows_in(mine)
    said = fresh_state(mine)
    assert "not created by a demo, so nothing in it is deleted" in said and windows_in(mine) == before
    assert StateStore(mine).meta("created_by") is None  # and it is not marked as the demo's either


def record_window(path: Path, start: str) -> None:
    end = (pd.Timestamp(start) + pd.Timedelta(minutes=15)).isoformat()
    store = StateStore(path)
    store.start_attempt(start, end, start)
    store.finish_window(start, end, RunOutcome("ok", start, 1.0, None, None, 0, {}))


def test_an_unwritable_outputs_or_state_folder_is_one_line_before_any_work(sample_dir, tmp_path, read_only_dir):
    outputs = cli(
        "--data-dir",
        str(sample_dir),
        "--outputs",
        str(read_only_dir / "out"),
        "window",
        "2026-10-30T15:00Z",
        tmp_path=tmp_path,
    )
    line = one_error_line(outputs)
    assert outputs.returncode == ExitCode.CONFIG and f"cannot write to the outputs folder {read_only_dir}" in line
    assert "data.outputs_dir or --outputs" in line and windows_in(tmp_path / "state.sqlite") == []
    state = cli(
        "--data-dir", str(sample_dir), "--state-db", str(read_only_dir / "state.sqlite"), "status", tmp_path=tmp_path
    )
    assert state.returncode == ExitCode.CONFIG and "cannot write the state database" in one_error_line(state)
    doctor = cli(
        "--data-dir", str(sample_dir), "--outputs", str(read_only_dir / "out"), "doctor", "--json", tmp_path=tmp_path
    )
    report = json.loads(doctor.stdout)
    assert doctor.returncode == ExitCode.FAILED and not report["ready"]
    (folders,) = [c for c in report["checks"] if c["name"] == "folders"]
    assert folders["status"] == "FAIL" and "outputs folder" in folders["detail"]


def test_a_window_that_cannot_write_its_report_is_recorded_failed_and_retried(make_scheduler_at, tmp_path):
    scheduler = make_scheduler_at("2026-10-30T15:20:00Z")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "2026-10-30").write_text("a file where the day's folder goes")
    run = scheduler.process(pd.Timestamp("2026-10-30T15:00Z"), pd.Timestamp("2026-10-30T15:15Z"))
    row = scheduler.store.window("2026-10-30T15:00:00+00:00", "2026-10-30T15:15:00+00:00")
    assert not run.ok and row["status"] == "failed" and row["next_attempt_at"] is not None
    assert "cannot write to the outputs folder" in row["last_error"]


def test_the_window_state_is_keyed_by_the_whole_window(tmp_path):
    store = StateStore(tmp_path / "state.sqlite")
    store.start_attempt("2026-10-30T15:00:00+00:00", "2026-10-30T15:15:00+00:00", "x")
    store.finish_window(
        "2026-10-30T15:00:00+00:00", "2026-10-30T15:15:00+00:00", RunOutcome("ok", "x", 1.0, None, None, 2, {})
    )
    store.start_attempt("2026-10-30T15:00:00+00:00", "2026-10-30T17:00:00+00:00", "y")
    assert store.window("2026-10-30T15:00:00+00:00", "2026-10-30T15:15:00+00:00")["status"] == "ok"
    assert store.window("2026-10-30T15:00:00+00:00", "2026-10-30T17:00:00+00:00")["status"] == "pending"


#: The state database as nqflow wrote it before schema versions (PRAGMA user_version 0).
SCHEMA_BEFORE_VERSIONS = """
CREATE TABLE windows (window_start TEXT PRIMARY KEY, window_end TEXT NOT NULL, status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, next_attempt_at TEXT, started_at TEXT, finished_at TEXT,
    duration_s REAL, notebook_path TEXT, html_path TEXT, alerts INTEGER, summary TEXT);
CREATE TABLE alerts (alert_id TEXT PRIMARY KEY, window_start TEXT NOT NULL, kind TEXT NOT NULL, level TEXT,
    symbol TEXT, confidence REAL, label TEXT, event_time TEXT, payload TEXT NOT NULL, recorded_at TEXT NOT NULL);
CREATE INDEX alerts_window ON alerts (window_start);
CREATE TABLE daily_runs (job TEXT NOT NULL, trade_date TEXT NOT NULL, status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, next_attempt_at TEXT, finished_at TEXT, duration_s REAL,
    notebook_path TEXT, html_path TEXT, alerts INTEGER, summary TEXT, PRIMARY KEY (job, trade_date));
CREATE TABLE health (key TEXT PRIMARY KEY, verdict TEXT NOT NULL, title TEXT NOT NULL, detail TEXT NOT NULL,
    observed_at TEXT NOT NULL, raised_at TEXT, cleared_at TEXT);
CREATE TABLE deliveries (alert_id TEXT NOT NULL, channel TEXT NOT NULL, status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, next_attempt_at TEXT, delivered_at TEXT,
    PRIMARY KEY (alert_id, channel));
INSERT INTO windows VALUES ('2026-10-30T15:00:00+00:00', '2026-10-30T15:15:00+00:00', 'ok', 1, NULL, NULL,
    'x', 'y', 7.5, 'a.ipynb', 'a.html', 1, '{"alerts": 1}');
INSERT INTO windows VALUES ('2026-10-30T15:15:00+00:00', '2026-10-30T15:30:00+00:00', 'failed', 2, 'DataError: gone',
    'z', 'x', 'y', 1.0, NULL, NULL, NULL, NULL);
INSERT INTO alerts VALUES ('a1', '2026-10-30T15:00:00+00:00', 'large_order', 'instrument', 'NQZ6 C21000', 72.5,
    'HIGH', '2026-10-30T15:03:00+00:00', '{"alert_id": "a1"}', 'x');
INSERT INTO deliveries VALUES ('a1', 'email', 'sent', 1, NULL, NULL, 'y');
INSERT INTO deliveries VALUES ('a1', 'slack', 'pending', 3, 'HTTP 503', 'z', NULL);
"""


def test_a_database_of_the_schema_before_versions_is_upgraded_and_loses_nothing(tmp_path):
    path = tmp_path / "state.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript(SCHEMA_BEFORE_VERSIONS)
    tables = ("windows", "alerts", "deliveries", "daily_runs", "health")
    with sqlite3.connect(path) as conn:
        before = {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall() for t in tables}
    store = StateStore(path)
    with sqlite3.connect(path) as conn:
        after = {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall() for t in tables}
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"alerts_window", "alert_notes_day", "deliveries_status"} <= indexes
        plan = conn.execute("EXPLAIN QUERY PLAN SELECT * FROM deliveries WHERE status = 'pending'").fetchall()
        assert "deliveries_status" in " ".join(str(step) for step in plan)  # found by status, not by a scan
    assert after == before
    assert store.window("2026-10-30T15:15:00+00:00", "2026-10-30T15:30:00+00:00")["last_error"] == "DataError: gone"
    StateStore(path)  # opening an upgraded file again changes nothing
    with sqlite3.connect(path) as conn:
        assert {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall() for t in tables} == before
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(Exception, match="schema version 99, newer than this nqflow knows"):
        StateStore(path)


# -- bad input, refused before any work ----------------------------------------------------------------


@pytest.mark.parametrize(
    "words, code, message",
    [
        (["window", "2026-10-30T15:00Z", "2026-10-30T14:00Z"], 2, "ends before it starts"),
        (
            ["window", "2026-10-30T15:00Z", "2026-10-30T17:00Z"],
            2,
            "is not one 15-minute interval; for a longer range use "
            "`scheduler.py backfill 2026-10-30T15:00Z 2026-10-30T17:00Z`",
        ),
        (["window", "2026-10-30T15:07Z"], 2, "is not on the 15-minute grid"),
        (["window", "2026-10-31T15:00Z"], 2, "market closed"),
        (["window", "2026-10-30T15:00"], 2, "has no timezone"),
        (["backfill", "2026-10-30T16:00Z", "2026-10-30T14:00Z"], 2, "is reversed or empty"),
        (["alerts", "--since", "notadate"], 2, "cannot parse timestamp 'notadate'"),
        (["backtest", "2026-11-05", "2026-11-02"], 2, "is reversed"),
        (["--set", "thresholds.large_premium=1", "status"], 3, "unknown config key thresholds.large_premium"),
        (["--set", "data.source=ftp", "status"], 3, "data.source must be one of replay, databento"),
    ],
)
def test_bad_input_is_one_line_with_its_exit_code_and_nothing_recorded(words, code, message, sample_dir, tmp_path):
    done = cli("--data-dir", str(sample_dir), *words, tmp_path=tmp_path, timeout=120)
    assert done.returncode == code and message in one_error_line(done)
    assert windows_in(tmp_path / "state.sqlite") == [] and not (tmp_path / "out").exists()


def test_workers_must_be_at_least_one(sample_dir, tmp_path):
    done = cli(
        "--data-dir",
        str(sample_dir),
        "backtest",
        "2026-11-02",
        "2026-11-03",
        "--workers",
        "0",
        tmp_path=tmp_path,
        timeout=60,
    )
    assert done.returncode == ExitCode.USAGE and "--workers: must be at least 1, not 0" in done.stderr


def test_a_missing_api_key_is_refused_before_any_notebook_and_said_once(tmp_path):
    began = time.monotonic()
    done = cli(
        "--source",
        "databento",
        "--data-dir",
        str(tmp_path / "cache"),
        "window",
        "2026-10-30T15:00Z",
        tmp_path=tmp_path,
        timeout=60,
    )
    line = one_error_line(done)
    assert done.returncode == ExitCode.CONFIG and "DATABENTO_API_KEY" in line
    assert time.monotonic() - began < 8 and not (tmp_path / "out").exists()  # no kernel was started
    assert windows_in(tmp_path / "state.sqlite") == []


def test_alerts_since_honours_the_offset(tmp_path):
    store = StateStore(tmp_path / "state.sqlite")
    early, late = make_alert(1, "2026-10-30T17:45:00+00:00"), make_alert(2, "2026-10-30T18:15:00+00:00")
    store.record_alerts([early, late], [], "x")
    done = cli("alerts", "--since", "2026-10-30T14:00:00-04:00", "--json", tmp_path=tmp_path, timeout=60)
    # 14:00 EDT is 18:00Z: only the later window's alert
    assert done.returncode == 0 and [a["alert_id"] for a in json.loads(done.stdout)] == [late.alert_id]


def test_the_exit_codes_are_listed_in_the_help():
    done = subprocess.run([sys.executable, "scheduler.py", "-h"], cwd=REPO_ROOT, capture_output=True, text=True)
    for code in ExitCode:
        assert f"  {code.value}  " in done.stdout


# -- run says what it does ---------------------------------------------------------------------------------


def test_run_says_when_it_starts_what_each_window_did_and_when_it_stops(sample_dir, tmp_path):
    process = subprocess.Popen(
        [
            sys.executable,
            "scheduler.py",
            "--data-dir",
            str(sample_dir),
            "--state-db",
            str(tmp_path / "state.sqlite"),
            "--outputs",
            str(tmp_path / "out"),
            "--set",
            f"notify.log.path={tmp_path / 'alerts.log'}",
            *QUIET,
            "--set",
            "schedule.poll_seconds=0.2",
            "run",
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = process.stdout.readline()
    assert first.startswith("nqflow run: source replay (") and "26 option products" in first
    assert "channels console, log" in first and "SIGINT or SIGTERM stops" in first
    process.send_signal(signal.SIGTERM)
    rest, _ = process.communicate(timeout=60)
    assert process.returncode == 0 and rest.strip().splitlines()[-1].startswith(
        "nqflow run stopped on SIGTERM: 0 window"
    )


def test_each_window_and_daily_job_says_one_line(make_scheduler_at, tmp_path):
    said: list[str] = []
    scheduler = make_scheduler_at("2026-10-30T15:20:00Z")
    scheduler.say = said.append
    scheduler.process(pd.Timestamp("2026-10-30T15:00Z"), pd.Timestamp("2026-10-30T15:15Z"))
    assert len(said) == 1 and said[0].startswith("window 2026-10-30 15:00-15:15Z: ") and "report " in said[0]
