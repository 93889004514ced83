"""The live path against a stand-in Live gateway on loopback that the real `databento.Live`
client talks to, with the Historical stand-in beside it for the day's definitions and open
interest: flash alerts equal the window notebook's, the stream lands in the cache the windows
read, every alert reaches every channel once through a dropped connection and a SIGKILL, and a
feed without options raises and clears its health alert."""

from __future__ import annotations

import dataclasses
import threading
import time

import pandas as pd
import pytest
from helpers import KEY, make_config
from standin_live_gateway import Behaviour, StandInLiveGateway

from nqflow.alerts import Alert
from nqflow.engine.baseline import BaselineStore, ensure_history
from nqflow.engine.flash import FLASH_KINDS
from nqflow.engine.monitor import run_window
from nqflow.market import hours as cal
from nqflow.ops.live import RECORDED_UNTIL, LiveRunner
from nqflow.ops.store import StateStore
from nqflow.sources.databento_historical import DatabentoSource

pytestmark = pytest.mark.xdist_group("gateway")

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


def test_flash_alerts_equal_the_window_notebooks_and_the_windows_read_the_recording(gw, lgw, tmp_path, monkeypatch):
    monkeypatch.setenv("DATABENTO_API_KEY", KEY)
    config = live_config(gw, lgw, tmp_path)
    baseline = BaselineStore(config.data.state_db)
    source = DatabentoSource(config, tmp_path / "cache")
    ensure_history(baseline, source, DAY, config.thresholds.baseline_sessions)  # both judge with history
    lgw.behaviour = Behaviour(end=END + pd.Timedelta(seconds=5))
    runner = stream(config, END)
    flash = {a["alert_id"]: a for a in StateStore(config.data.state_db).alerts()}
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
