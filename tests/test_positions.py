"""Positions, not prints: worked orders across windows, next-morning confirmation, covered packages.

Worked orders are checked on synthetic orders (each rule of `nqflow.engine.worked` can fail
alone) and on the sample market's planted ones, through `run_window` (the notebook's path,
reading the windows before its own from the source). Confirmations are checked against the
sample's planted positions, and the follow-up through the real state store and outbox."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from helpers import alert_json, make_alert

from nqflow.alerts import Alert
from nqflow.config import Config, Thresholds, load_config
from nqflow.engine.baseline import BaselineStore
from nqflow.engine.monitor import run_window
from nqflow.engine.positions import confirm, read_confirmations, verdict_of
from nqflow.engine.strategies import covered_reading
from nqflow.engine.worked import eligible_children, price_drift, worked_crossings
from nqflow.errors import DataNotYetAvailable
from nqflow.ops.followups import confirmation_message
from nqflow.ops.scheduling import Scheduler, SimulatedClock
from nqflow.paths import REPO_ROOT

T = Thresholds()
START = pd.Timestamp("2026-11-18 15:00", tz="UTC")


def orders(*specs: tuple[float, str, float], instrument: int = 7) -> pd.DataFrame:
    """Aggressor orders from (seconds after START, side, premium) with 10 contracts each."""
    return pd.DataFrame(
        {
            "instrument_id": instrument,
            "ts_event": [START + pd.Timedelta(seconds=s) for s, _, _ in specs],
            "side": [side for _, side, _ in specs],
            "premium_usd": [p for _, _, p in specs],
            "size": 10,
            "package_id": -1,
        }
    )


def crossings(frame: pd.DataFrame, thresholds: Thresholds = T, alerted: np.ndarray | None = None) -> pd.DataFrame:
    alerted = np.zeros(len(frame), dtype=bool) if alerted is None else alerted
    session = np.full(len(frame), "2026-11-18", dtype=object)
    return worked_crossings(frame, session, eligible_children(frame, alerted), thresholds)


def test_a_worked_buy_alerts_once_where_its_running_total_crosses():
    frame = orders(*[(60 * i, "B", 300_000.0) for i in range(16)])
    found = crossings(frame)
    assert len(found) == 1  # one worked order, one alert: the six children after it add to it, not a new alert
    (row,) = found.to_dict("records")
    assert row["row"] == 9 and row["children"] == 10 and row["premium_usd"] == pytest.approx(3e6)
    assert row["first_row"] == 0 and row["child_rows"] == list(range(10)) and row["side_share"] == 1.0


def test_each_rule_can_stop_it():
    worked = [(60 * i, "B", 300_000.0) for i in range(12)]
    # a market maker trading both sides of the option at the same size: no side holds 65%
    both = orders(*worked, *[(60 * i + 30, "A", 300_000.0) for i in range(12)])
    assert crossings(both).empty
    # a gap longer than worked_max_gap_s starts a new chain: neither half reaches $3M
    gapped = orders(*[(60 * i + (400 if i >= 6 else 0), "B", 300_000.0) for i in range(12)])
    assert crossings(gapped).empty
    assert len(crossings(gapped, dataclasses.replace(T, worked_max_gap_s=500.0))) == 1
    # 110 s apart: 12 children span 20 minutes; a 15-minute span never holds $3M
    slow = orders(*[(110 * i, "B", 300_000.0) for i in range(12)])
    assert len(crossings(slow)) == 1 and crossings(slow, dataclasses.replace(T, worked_max_span_minutes=15.0)).empty
    # fewer children than worked_min_orders: $3.6M in 6 orders is not worked
    few = orders(*[(60 * i, "B", 600_000.0) for i in range(6)])
    assert crossings(few).empty and len(crossings(few, dataclasses.replace(T, worked_min_orders=6))) == 1
    # a package leg is one trade with its package, never a child; an alert of its own is not counted again
    legs = orders(*worked)
    legs.loc[legs.index[::2], "package_id"] = 3
    assert crossings(legs).empty
    alerted = np.zeros(12, dtype=bool)
    alerted[::3] = True
    assert crossings(orders(*worked), alerted=alerted).empty


def test_drift_says_how_the_childrens_prices_moved():
    sizes = np.full(10, 5.0)
    assert price_drift(np.linspace(800, 810, 10), sizes, 0.002) == "ascending"
    assert price_drift(np.linspace(810, 800, 10), sizes, 0.002) == "descending"
    assert price_drift(np.full(10, 805.0), sizes, 0.002) == "flat"


@pytest.fixture(scope="module")
def planted_worked(source, truth, tmp_path_factory):
    """Every planted worked order and decoy of the sessions with history, each through the
    notebook's `run_window` on the window where it crosses (a decoy: every window it spans)."""
    config = load_config()
    baseline = BaselineStore(tmp_path_factory.mktemp("worked") / "baseline.sqlite")
    available = source.sessions_available()
    sessions = {str(d) for d in available[5:]}
    results = {}
    for event in truth["events"]:
        if event["session"] not in sessions or event["kind"] not in ("worked", "two_sided"):
            continue
        if event["kind"] == "worked":
            starts = [pd.Timestamp(event["window_start"])]
        else:
            first = pd.Timestamp(event["first_time"]).floor("15min")
            starts = list(pd.date_range(first, pd.Timestamp(event["last_time"]), freq="15min"))
        alerts = [
            run_window(config, s, s + pd.Timedelta(minutes=15), source, baseline, False, available).alerts
            for s in starts
        ]
        results[event["event_id"]] = (event, pd.concat(alerts, ignore_index=True))
    return results


@pytest.mark.slow
def test_every_planted_worked_order_alerts_once_and_no_decoy_does(planted_worked):
    worked = [(e, a) for e, a in planted_worked.values() if e["kind"] == "worked"]
    decoys = [(e, a) for e, a in planted_worked.values() if e["kind"] == "two_sided"]
    assert len(worked) >= 8 and len(decoys) >= 3
    for event, alerts in worked:
        mine = alerts[alerts["kind"] == "worked_order"]
        assert len(mine) == 1, event["event_id"]
        alert = mine.iloc[0]
        assert alert["instrument_ids"] == event["instrument_ids"]
        assert alert["direction"] == {"B": "BUY", "A": "SELL"}[event["side"]]
        assert pd.Timestamp(event["first_time"]) <= pd.Timestamp(alert["first_time"])
        assert alert["child_orders"] >= 8 and alert["premium_usd"] >= 3e6
        assert alert["child_orders"] <= event["children"] + 2  # a stray same-side order may join the chain
        assert alert["price_drift"] == event["price_drift"]
        assert pd.Timestamp(alert["first_time"]).floor("15min") < pd.Timestamp(alert["window_start"])  # across windows
        assert any("child orders" in r and "one order worked" in r for r in alert["reasons"])
    for event, alerts in decoys:
        on_it = alerts[alerts["instrument_ids"].map(lambda ids, e=event: bool(set(ids) & set(e["instrument_ids"])))]
        assert on_it.empty, f"decoy {event['event_id']} alerted: {on_it[['kind', 'symbol']].to_dict('records')}"


def test_verdicts_from_the_open_interest_change():
    assert verdict_of(100, 60, 0.5) == "opening" and verdict_of(100, 50, 0.5) == "opening"
    assert verdict_of(100, -50, 0.5) == "closing" and verdict_of(100, 49, 0.5) == "mixed"
    assert verdict_of(100, None, 0.5) == "unknown" and verdict_of(0, 10, 0.5) == "unknown"
    alerts = [make_alert(n) for n in range(3)]
    before = pd.Series({1: 1000, 2: 500, 3: 40})
    after = pd.Series({1: 1400, 2: 480})  # 3 expired: no next-morning figure
    table = confirm(
        alerts, {alerts[0].alert_id: [1], alerts[1].alert_id: [1, 2], alerts[2].alert_id: [3]}, before, after, 0.5
    )
    assert table["oi_change"].tolist()[:2] == [400, 380] and table["verdict"].tolist() == [
        "opening",
        "opening",
        "unknown",
    ]
    assert table["instruments"].tolist() == [1, 2, 0]


def test_planted_positions_are_confirmed_right_and_the_last_session_waits(source, truth, config):
    day = dt.date.fromisoformat(truth["sessions"][-2])
    events = [e for e in truth["events"] if e["session"] == str(day) and e.get("position")]
    assert {e["position"] for e in events} >= {"opening"}
    alerts = []
    for event in events:  # an alert on each planted trade, as the engine would raise it
        alerts.append(
            make_alert(
                len(alerts),
                window_start=event["window_start"],
                symbol=event["symbols"][0],
                instrument_ids=event["instrument_ids"],
                volume=event["size"],
            )
        )
    confirmations = read_confirmations(source, day, alerts, config)
    assert confirmations.table["verdict"].tolist() == [e["position"] for e in events]
    assert all(
        set(r) >= {"alert_id", "kind", "symbol", "volume", "oi_before", "oi_after", "oi_change", "verdict"}
        for r in confirmations.records()
    )
    with pytest.raises(DataNotYetAvailable, match="not published yet"):
        read_confirmations(source, dt.date.fromisoformat(truth["sessions"][-1]), alerts, config)


def test_a_covered_package_is_read_at_the_delta_both_sides_agreed():
    legs = [
        {"put_call": "C", "ratio": 10, "sign": 1, "delta": 0.44},
        {"put_call": "F", "ratio": 6, "sign": -1, "delta": 1.0},
    ]
    agreed, model = covered_reading(legs)
    assert agreed == pytest.approx(0.6) and model == pytest.approx(0.44)
    assert covered_reading(legs[:1]) is None


def test_alerts_recorded_before_the_worked_fields_read_back(tmp_path):
    old = alert_json(1)
    for field in ("child_orders", "first_time", "last_time", "vwap", "price_drift"):
        old.pop(field)
    alert = Alert.from_json(old)
    assert alert.child_orders is None and alert.price_drift is None
    with pytest.raises(Exception, match="lacks fields"):
        Alert.from_json({k: v for k, v in alert_json(1).items() if k != "volume"})


def test_the_follow_up_goes_once_to_the_channels_that_carried_the_alerts(tmp_path):
    config = load_config(overrides={"notify.log.path": str(tmp_path / "a.log"), "notify.email.enabled": False})
    scheduler = Scheduler(
        config,
        clock=SimulatedClock(START),
        source="replay",
        outputs_dir=tmp_path / "out",
        state_db=tmp_path / "state.sqlite",
    )
    store = scheduler.store
    day = "2026-11-18"
    sent, skipped = make_alert(1, "2026-11-18T15:00:00+00:00"), make_alert(2, "2026-11-18T16:00:00+00:00")
    store.record_alerts([sent], ["console", "log"], START.isoformat())
    store.record_alerts(
        [skipped], ["console", "log", "slack"], START.isoformat(), suppressed={skipped.alert_id: "repeat"}
    )
    store.mark_delivered([sent.alert_id], "console", START.isoformat())
    store.mark_skipped([sent.alert_id], "log", "below min_confidence")
    rows = [
        {
            "alert_id": sent.alert_id,
            "kind": "large_order",
            "symbol": sent.symbol,
            "volume": 401,
            "oi_before": 1000,
            "oi_after": 1390,
            "oi_change": 390,
            "verdict": "opening",
            "confidence": 50.0,
        },
        {
            "alert_id": skipped.alert_id,
            "kind": "large_order",
            "symbol": skipped.symbol,
            "volume": 402,
            "oi_before": 900,
            "oi_after": 500,
            "oi_change": -400,
            "verdict": "closing",
            "confidence": 50.0,
        },
    ]
    scheduler.record_notes(day, {"confirmation": rows}, START.isoformat())
    follow = [a for a in store.alerts() if a.kind == "confirmation"]
    assert len(follow) == 1 and follow[0].reasons[0].endswith("1 opening, 1 closing")
    assert any("open interest +390 (1,000 -> 1,390)" in r for r in follow[0].reasons)
    deliveries = store.deliveries()
    channels = deliveries.loc[deliveries["alert_id"] == follow[0].alert_id, "channel"].tolist()
    assert channels == ["console"]  # the only channel that carried one of them
    scheduler.record_notes(day, {"confirmation": rows}, START.isoformat())  # read again: no second message
    assert len([a for a in store.alerts() if a.kind == "confirmation"]) == 1
    assert store.notes("confirmation", day)[sent.alert_id]["verdict"] == "opening"
    message = confirmation_message(day, rows, Config().confidence)
    assert message.alert_id == follow[0].alert_id and message.confidence == 50.0


@pytest.mark.slow
def test_confirm_prints_each_alert_of_a_watched_session_with_its_verdict(truth, sample_dir, tmp_path):
    """End to end through the real notebooks: a planted worked order's window is run (its alert
    recorded), then `scheduler.py confirm DATE --json` reads the next morning's open interest."""
    sessions = truth["sessions"][5:-1]
    event = next(e for e in truth["events"] if e["kind"] == "worked" and e["session"] in sessions)
    common = [
        sys.executable,
        str(REPO_ROOT / "scheduler.py"),
        "--state-db",
        str(tmp_path / "s.sqlite"),
        "--outputs",
        str(tmp_path / "out"),
        "--set",
        f"notify.log.path={tmp_path / 'a.log'}",
    ]
    window = subprocess.run([*common, "window", event["window_start"]], capture_output=True, text=True, timeout=600)
    assert window.returncode == 0, window.stderr
    done = subprocess.run([*common, "confirm", event["session"], "--json"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    worked = [r for r in rows if r["kind"] == "worked_order"]
    assert len(worked) == 1 and worked[0]["verdict"] == event["position"]
    assert set(worked[0]) >= {"alert_id", "kind", "symbol", "volume", "oi_before", "oi_after", "oi_change", "verdict"}
    assert worked[0]["oi_change"] == worked[0]["oi_after"] - worked[0]["oi_before"]
    page = (tmp_path / "out" / "index.html").read_text()
    assert f'data-verdict="{event["position"]}"' in page and "opened / closed" in page
    report = (tmp_path / "out" / event["session"] / "offbook.html").read_text()
    assert "Opened or closed" in report and event["symbols"][0] in report
