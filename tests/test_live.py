"""The live path against a stand-in Live gateway on loopback that the real `databento.Live`
client talks to, with the Historical stand-in beside it for the day's definitions and open
interest: flash alerts equal the window notebook's, the stream lands in the cache the windows
read, every alert reaches every channel once through a dropped connection and a SIGKILL, and a
feed without options raises and clears its health alert."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from helpers import KEY, make_config
from standin_live_gateway import Behaviour, StandInLiveGateway, live_command

from nqflow.alerts import Alert, to_alerts
from nqflow.engine.baseline import BaselineStore, ensure_history
from nqflow.engine.flash import FLASH_KINDS
from nqflow.engine.monitor import REPO_ROOT, run_window
from nqflow.errors import ConfigError
from nqflow.market import hours as cal
from nqflow.ops.live import NO_OPTIONS, RECORDED_UNTIL, LiveRunner, check_live_config
from nqflow.ops.runner import NotebookRun
from nqflow.ops.scheduling import Scheduler, SimulatedClock
from nqflow.ops.store import StateStore
from nqflow.sources.databento_historical import DatabentoSource

pytestmark = pytest.mark.xdist_group("live")  # its own: it can run beside the Historical gateway tests

DAY = pd.Timestamp("2026-10-27").date()  # blocks, a worked order and a strategy package
START = pd.Timestamp("2026-10-27T14:00Z")
END = pd.Timestamp("2026-10-27T18:30Z")


@pytest.fixture(scope="module")
def live_gw(gateway):
    with StandInLiveGateway(key=KEY, market=gateway.market) as gw:
        yield gw


@pytest.fixture()
def lgw(live_gw):
    live_gw.behaviour = Behaviour()
    live_gw.sessions.clear()
    live_gw.sent.clear()
    return live_gw


def live_config(gw, lgw, tmp_path, **live):
    config = make_config(gw, live_gateway=lgw.address)
    log_path = tmp_path / "alerts.log"
    return dataclasses.replace(
        config,
        data=dataclasses.replace(
            config.data,
            source="databento",
            cache_dir=str(tmp_path / "cache"),
            state_db=str(tmp_path / "state.sqlite"),
            outputs_dir=str(tmp_path / "outputs"),
        ),
        notify=dataclasses.replace(
            config.notify,
            console=dataclasses.replace(config.notify.console, enabled=False),
            log=dataclasses.replace(config.notify.log, path=str(log_path)),
        ),
        live=dataclasses.replace(config.live, **live),
    )


def stream(config, until: pd.Timestamp, start=START, timeout: float = 180.0) -> LiveRunner:
    """`scheduler.py live --start` in a thread until the stream has recorded `until`."""
    runner = LiveRunner(config, start=start)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (runner.recorder.recorded_until or start) < until:
        time.sleep(0.2)
    runner.stop_event.set()
    thread.join(30)
    assert not thread.is_alive()
    return runner


@pytest.mark.slow
def test_flash_alerts_equal_the_window_notebooks_and_the_windows_read_the_recording(gw, lgw, tmp_path, monkeypatch):
    monkeypatch.setenv("DATABENTO_API_KEY", KEY)
    config = live_config(gw, lgw, tmp_path)
    baseline = BaselineStore(config.data.state_db)
    source = DatabentoSource(config, tmp_path / "cache")
    ensure_history(baseline, source, DAY, config.thresholds.baseline_sessions)  # both judge with history
    lgw.behaviour = Behaviour(end=END + pd.Timedelta(seconds=5))
    runner = stream(config, END)
    flash = {a.alert_id: a.to_json() for a in StateStore(config.data.state_db).alerts()}
    assert flash, "no flash alert"

    pulls_before = len([r for r in gw.log if r.endpoint == "get_range" and r.params.get("schema") == "trades"])
    windows = [(s, e) for s, e in cal.session_windows(DAY, 15) if START <= s and e <= END]
    notebook = {}
    for s, e in windows:
        result = run_window(config, s, e, DatabentoSource(config, tmp_path / "cache"), baseline, record_baseline=False)
        for alert in result.alerts.to_dict("records"):
            if alert["kind"] in FLASH_KINDS:
                notebook[alert["alert_id"]] = Alert.from_json(alert).to_json()
    pulls_after = len([r for r in gw.log if r.endpoint == "get_range" and r.params.get("schema") == "trades"])
    assert pulls_after == pulls_before, "the windows pulled trades the stream had recorded"
    assert set(flash) == set(notebook)
    assert {a["kind"] for a in notebook.values()} >= {"large_order", "worked_order", "strategy"}
    for alert_id, alert in notebook.items():
        got = Alert.from_json(flash[alert_id]).to_json()
        assert {k: (got[k], v) for k, v in alert.items() if got[k] != v} == {}
    assert StateStore(config.data.state_db).meta(RECORDED_UNTIL) >= END.isoformat()
    assert runner.stats.option_trades > 0


def _cli(tmp_path, gw, lgw, *extra: str) -> list[str]:
    sets = {"notify.slack.enabled": "true", "notify.slack.min_confidence": "0"}
    return live_command(tmp_path, gw.url, lgw.address, *extra, sets=sets)


def _logged(path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _logged_ids(path) -> list[str]:
    return [alert["alert_id"] for alert in _logged(path)]


@pytest.mark.slow
def test_each_alert_reaches_each_channel_once_through_a_drop_and_a_sigkill(gw, lgw, tmp_path, webhook):
    env = {**os.environ, "DATABENTO_API_KEY": KEY, "NQFLOW_SLACK_WEBHOOK_URL": webhook.url}
    start, end = pd.Timestamp("2026-10-27T14:15Z"), pd.Timestamp("2026-10-27T16:00Z")
    lgw.behaviour = Behaviour(speed=400.0, drop_after=1_500, end=end + pd.Timedelta(seconds=5))
    log_path = tmp_path / "alerts.log"
    first = subprocess.Popen(_cli(tmp_path, gw, lgw, "--start", start.isoformat()), env=env, cwd=REPO_ROOT)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not _logged(log_path):
            assert first.poll() is None, "live exited early"
            time.sleep(0.1)
        assert [a["kind"] for a in _logged(log_path)][:1] == ["large_order"], "the first flash alert reached the log"
        assert len(lgw.sessions) >= 2, "the connection was dropped and the stream replayed in a new session"
    finally:
        first.kill()  # SIGKILL: no clean-up of any kind
        first.wait(30)
    recorded = StateStore(tmp_path / "state.sqlite").meta(RECORDED_UNTIL)
    assert recorded is not None and start < pd.Timestamp(recorded) < end
    # Restarted without --start: it resumes from the end of the last window it recorded.
    second = subprocess.Popen(_cli(tmp_path, gw, lgw), env=env, cwd=REPO_ROOT)
    try:
        deadline = time.monotonic() + 120
        store = StateStore(tmp_path / "state.sqlite")
        while time.monotonic() < deadline and pd.Timestamp(store.meta(RECORDED_UNTIL) or recorded) < end:
            assert second.poll() is None, "live exited early"
            time.sleep(0.2)
        resumed = [s for s in lgw.sessions if s.subscriptions][-1].subscriptions[0].get("start")
        assert int(resumed) == pd.Timestamp(recorded).value
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0
    store = StateStore(tmp_path / "state.sqlite")
    every = [a.to_json() for a in store.alerts()]
    # a kill between a Slack post and its record leaves that post in doubt: one notice names it
    notices = {a["alert_id"]: a for a in every if a["kind"] == "health"}
    alerts = [a for a in every if a["kind"] != "health"]
    assert {"large_order", "worked_order"} <= {a["kind"] for a in alerts}
    assert all("may be missing" in n["symbol"] for n in notices.values()) and len(notices) <= 1
    ids = sorted(a["alert_id"] for a in alerts)
    assert sorted(_logged_ids(log_path)) == sorted([*ids, *notices])
    slack = [b["block_id"] for body in webhook.bodies for b in body["blocks"] if b["type"] == "section"]
    assert len(slack) == len(set(slack)), "an alert reached Slack twice"
    deliveries = store.deliveries().query("channel == 'slack'").set_index("alert_id")["status"]
    in_doubt = {a for a in ids if deliveries[a] == "in_doubt"}
    assert set(slack) - set(notices) - in_doubt == set(ids) - in_doubt
    assert set(notices) <= set(slack) and all(a in json.dumps(list(notices.values())) for a in in_doubt)


@pytest.mark.slow
def test_a_feed_without_options_raises_health_and_leaves_the_windows_to_historical(gw, lgw, tmp_path, monkeypatch):
    monkeypatch.setenv("DATABENTO_API_KEY", KEY)
    config = live_config(gw, lgw, tmp_path, max_silent_minutes=5.0)
    store = StateStore(config.data.state_db)
    silent_end = pd.Timestamp("2026-10-27T14:30Z")
    lgw.behaviour = Behaviour(without_options=True, end=silent_end + pd.Timedelta(seconds=5))
    runner = stream(config, silent_end, start=START)
    assert runner.stats.option_trades == 0 and runner.stats.trades > 0
    raised = store.health_states()
    assert NO_OPTIONS in raised and raised[NO_OPTIONS]["raised_at"]
    health_alerts = store.alerts(kind="health")
    assert [a.symbol for a in health_alerts] == ["live feed carries no options"]
    assert "licence" in health_alerts[0].reasons[0]
    # nothing recorded for the silent windows: the window reads them from Historical
    assert not list((tmp_path / "cache" / "GLBX.MDP3" / "trades").rglob("2026102?T14*.dbn.zst"))
    pulls = len([r for r in gw.log if r.endpoint == "get_range" and r.params.get("schema") == "trades"])
    window = run_window(config, START, START + pd.Timedelta(minutes=15), DatabentoSource(config, tmp_path / "cache"))
    assert len(window.window.trades) > 0
    assert len([r for r in gw.log if r.endpoint == "get_range" and r.params.get("schema") == "trades"]) > pulls

    # options back: the condition clears, once
    lgw.behaviour = Behaviour(end=pd.Timestamp("2026-10-27T15:00Z"))
    stream(config, pd.Timestamp("2026-10-27T14:45Z"), start=silent_end)
    assert NO_OPTIONS not in store.health_states()
    symbols = sorted(a.symbol for a in store.alerts(kind="health"))
    assert symbols == ["live feed carries no options", "recovered: live feed carries no options"]


@pytest.mark.parametrize(
    ("error", "says"),
    [("auth", "refused the key in DATABENTO_API_KEY"), ("limit", "open connection limit is reached")],
)
def test_a_refused_session_is_one_line_with_its_fix(gw, lgw, tmp_path, error, says):
    lgw.behaviour = Behaviour(error=error)
    env = {**os.environ, "DATABENTO_API_KEY": KEY}
    done = subprocess.run(
        _cli(tmp_path, gw, lgw, "--start", START.isoformat()),
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert done.returncode == 3 and len(errors) == 1 and says in errors[0], done.stderr


def test_live_beside_the_window_loop_needs_the_databento_source_and_a_host_port(config, tmp_path):
    live_on = dataclasses.replace(config, databento=dataclasses.replace(config.databento, live=True))
    with pytest.raises(ConfigError, match='set data.source = "databento"'):
        check_live_config(live_on)
    bad = dataclasses.replace(
        live_on,
        data=dataclasses.replace(config.data, source="databento"),
        databento=dataclasses.replace(live_on.databento, live_gateway="localhost"),
    )
    with pytest.raises(ConfigError, match="must be host:port"):
        check_live_config(bad)


@pytest.mark.slow
def test_run_streams_live_beside_the_window_loop(gw, lgw, tmp_path, monkeypatch):
    """`run` with databento.live = true: the stream records a window Historical has not published
    yet, the window loop runs it from the recording, and the flash alert is not sent twice."""
    monkeypatch.setenv("DATABENTO_API_KEY", KEY)
    config = live_config(gw, lgw, tmp_path)
    config = dataclasses.replace(
        config,
        databento=dataclasses.replace(config.databento, live=True),
        schedule=dataclasses.replace(config.schedule, session_reports=False, off_book=False, dealer_positioning=False),
    )
    store = StateStore(config.data.state_db)
    store.set_meta(RECORDED_UNTIL, "2026-10-27T14:15:00+00:00")  # the stream resumes here
    gw.available_end = pd.Timestamp("2026-10-27T14:30Z")  # Historical lags the window due
    lgw.behaviour = Behaviour(end=pd.Timestamp("2026-10-27T14:50Z"))
    window = (pd.Timestamp("2026-10-27T14:30Z"), pd.Timestamp("2026-10-27T14:45Z"))
    calls = []

    def executor(start, end, outputs_dir, parameters):  # the window notebook, in-process, a new source each run
        calls.append(start)
        result = run_window(config, start, end, DatabentoSource(config, tmp_path / "cache"))
        return NotebookRun(Path(outputs_dir) / "w.ipynb", None, alerts=to_alerts(result.alerts), summary={})

    class UntilRecorded(SimulatedClock):
        passes = 0

        def wait(self, stop, seconds):
            self.passes += 1
            deadline = time.monotonic() + 90
            while self.passes == 1 and time.monotonic() < deadline:
                if pd.Timestamp(store.meta(RECORDED_UNTIL)) >= window[1]:
                    return  # one more pass: the window is published now
                time.sleep(0.2)
            stop.set()

    scheduler = Scheduler(
        config,
        clock=UntilRecorded(pd.Timestamp("2026-10-27T14:48Z")),
        outputs_dir=tmp_path / "outputs",
        state_db=tmp_path / "state.sqlite",
        executor=executor,
        daily_executor=lambda *a: pytest.fail("no daily job is due"),
        say=lambda line: None,
    )
    pulls = len(gw.log)
    scheduler.run_forever()
    assert calls == [window[0]]
    assert store.window(window[0].isoformat(), window[1].isoformat())["status"] == "ok"
    pulled = [
        (pd.Timestamp(r.params["start"]), pd.Timestamp(r.params["end"]))
        for r in gw.log[pulls:]
        if r.endpoint == "get_range" and r.params.get("schema") == "trades"
    ]
    assert pulled and not [p for p in pulled if p[0] < window[1] and p[1] > window[0]], (
        "the window came from Historical"
    )
    flashed = [a for a in store.alerts() if a.kind == "large_order"]
    assert flashed and all(a.window_start == window[0].isoformat() for a in flashed)
    logged = _logged_ids(tmp_path / "alerts.log")
    assert len(logged) == len(set(logged)) and {a.alert_id for a in flashed} <= set(logged)


def test_a_start_past_lives_replay_streams_from_within_it_and_leaves_the_gap_to_historical(
    gw, lgw, tmp_path, monkeypatch
):
    monkeypatch.setenv("DATABENTO_API_KEY", KEY)
    config = live_config(gw, lgw, tmp_path)
    lgw.behaviour = Behaviour(replay_hours=24.0)
    lines: list[str] = []
    runner = LiveRunner(config, start=START, say=lines.append)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len([s for s in lgw.sessions if s.subscriptions]) < 2:
        time.sleep(0.1)
    runner.stop_event.set()
    thread.join(30)
    first, second = [s for s in lgw.sessions if s.subscriptions][:2]
    assert int(first.subscriptions[0]["start"]) == START.value
    resumed = pd.Timestamp(int(second.subscriptions[0]["start"]), tz="UTC")
    assert abs(resumed - (pd.Timestamp.now(tz="UTC") - pd.Timedelta(hours=23))) < pd.Timedelta(minutes=2)
    assert any("past Live's replay" in line and "window loop's (Historical)" in line for line in lines)
