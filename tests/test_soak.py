"""Soak: `run` (Scheduler.run_forever, in a process of its own) driven by a simulated clock
through two sessions, the Thanksgiving half day of 26 November 2026 and the half day after
it, against the stand-in Databento gateway, a real SMTP server and a loopback Slack webhook,
with faults injected:

- a burst of gateway 503s on the very first pulls;
- the kernel of one window's notebook killed mid-run;
- the provider's data held back for over an hour (blind, and lagging real time);
- SMTP down for an hour and a quarter;
- the scheduler process SIGKILLed mid-run and started again.

Afterwards every open-market window is ok, every alert was delivered exactly once on each
channel that wanted it, and each health condition was raised once and cleared once.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter

import pandas as pd
import pytest
from helpers import KEY, SMTP_PASSWORD, Inbox, Webhook, free_port, smtp_server

from nqflow.engine.baseline import BaselineStore, ensure_history
from nqflow.market import hours as cal
from nqflow.market.hours import windows_between
from nqflow.ops.store import StateStore
from nqflow.paths import REPO_ROOT

START = pd.Timestamp("2026-11-25T23:17:00Z")  # just after the 26 Nov session opened
END = pd.Timestamp("2026-11-27T18:45:00Z")  # after the 27 Nov half day closed
KILL_KERNEL_WINDOW = pd.Timestamp("2026-11-26T14:30:00Z")
DATA_HELD_AT, DATA_RELEASED = pd.Timestamp("2026-11-26T16:00:00Z"), pd.Timestamp("2026-11-26T17:15:00Z")
SMTP_DOWN, SMTP_UP = (
    pd.Timestamp("2026-11-27T14:30:00Z"),
    pd.Timestamp("2026-11-27T15:45:00Z"),
)  # the 14:45 package goes out at 15:02
SIGKILL_AT = pd.Timestamp("2026-11-27T16:00:00Z")


@pytest.mark.slow
def test_two_sessions_with_faults_end_with_every_window_ok_and_every_alert_sent_once(gw, tls, source, tmp_path):
    from standin_gateway import Fault

    baseline = tmp_path / "baseline.sqlite"
    ensure_history(BaselineStore(baseline), source, dt.date(2026, 11, 28), 7)  # the same records the gateway serves
    hook, inbox, smtp_port = Webhook(), Inbox(), free_port()
    settings = {
        "state_dir": str(tmp_path),
        "cache_dir": str(tmp_path / "cache"),
        "baseline": str(baseline),
        "start": START.isoformat(),
        "end": END.isoformat(),
        "kill_window": KILL_KERNEL_WINDOW.isoformat(),
        "overrides": {
            "schedule.poll_seconds": 120,
            "schedule.session_reports": False,
            "schedule.off_book": False,
            "schedule.retry_backoff_seconds": 60.0,
            "thresholds.baseline_sessions": 5,
            "notify.console.enabled": False,
            "notify.log.path": str(tmp_path / "alerts.log"),
            "notify.retry_backoff_seconds": 30.0,
            "notify.email.enabled": True,
            "notify.email.host": "127.0.0.1",
            "notify.email.port": smtp_port,
            "notify.email.user": "desk",
            "notify.email.recipients": ["desk@example.test"],
            "notify.slack.enabled": True,
            "health.channel_down_minutes": 30.0,
            "databento.gateway": gw.url,
            "databento.retry_base_seconds": 0.01,
            "databento.retry_max_seconds": 0.05,
            "databento.range_cache_seconds": 0.0,
            "data.state_db": str(tmp_path / "state.sqlite"),
        },
    }
    (tmp_path / "settings.json").write_text(json.dumps(settings))
    env = {
        **os.environ,
        "DATABENTO_API_KEY": KEY,
        "SSL_CERT_FILE": str(tls[0]),
        "NQFLOW_SMTP_PASSWORD": SMTP_PASSWORD,
        "NQFLOW_SLACK_WEBHOOK_URL": hook.url,
    }
    clock_file = tmp_path / "clock.txt"

    def start_scheduler() -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "tests/soak_run.py", str(tmp_path / "settings.json")],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / "stderr.log").open("a"),
        )

    def simulated_now() -> pd.Timestamp:
        try:
            return pd.Timestamp(clock_file.read_text())
        except (FileNotFoundError, ValueError):
            return START

    gw.inject(*[Fault("get_range", status=503, detail="gateway overloaded")] * 6)  # more than one call's retries
    gw.available_end = DATA_HELD_AT
    server = smtp_server(tls, inbox, smtp_port)
    done: set[str] = set()
    process = start_scheduler()
    deadline = time.monotonic() + 900
    try:
        while process.poll() is None:
            assert time.monotonic() < deadline, f"soak still running at simulated {simulated_now()}"
            now = simulated_now()
            if now >= DATA_RELEASED and "release" not in done:
                # past the sample's last record, as a live feed's end runs past the close
                gw.available_end, _ = END, done.add("release")
            if now >= SMTP_DOWN and "smtp down" not in done:
                server.stop()
                done.add("smtp down")
            if now >= SMTP_UP and "smtp up" not in done:
                server = smtp_server(tls, inbox, smtp_port)
                done.add("smtp up")
            if now >= SIGKILL_AT and "sigkill" not in done:
                process.send_signal(signal.SIGKILL)
                assert process.wait(timeout=30) == -signal.SIGKILL
                done.add("sigkill")
                process = start_scheduler()
            time.sleep(0.02)
    finally:
        if process.poll() is None:
            process.kill()
        server.stop()
        hook.close()
    stderr = (tmp_path / "stderr.log").read_text()
    assert process.returncode == 0, stderr[-3000:]
    assert done == {"release", "smtp down", "smtp up", "sigkill"}
    assert "killed the kernel of window 2026-11-26 14:30Z" in stderr

    store = StateStore(tmp_path / "state.sqlite")
    windows = store.windows(limit=1000).set_index("window_start")
    expected = [
        s.isoformat()
        for s, e in windows_between(pd.Timestamp("2026-11-25T23:00Z"), END - pd.Timedelta(minutes=2), 15)
        if cal.window_is_open(s, e)
    ]
    assert sorted(windows.index) == expected and (windows["status"] == "ok").all()
    assert windows.loc["2026-11-25T23:00:00+00:00", "attempts"] == 2  # the 503 burst cost one attempt
    assert windows.loc[KILL_KERNEL_WINDOW.isoformat(), "attempts"] == 2  # so did the killed kernel
    assert "2026-11-26T17:00:00+00:00" in windows.index  # the held-back windows were caught up

    alerts = {a.alert_id: a.to_json() for a in store.alerts()}
    deliveries = store.deliveries()
    # nothing left pending: sent, or skipped by a channel's filters, or a repeated surge in cooldown,
    # or a Slack post the SIGKILL cut short (in doubt: not posted again, named in one notice)
    final = ["sent", "skipped", "suppressed", "in_doubt"]
    assert deliveries["status"].isin(final).all(), deliveries[~deliveries["status"].isin(final)]
    suppressed = set(deliveries.loc[deliveries["status"] == "suppressed", "alert_id"])
    sent = {
        channel: set(rows.loc[rows["status"] == "sent", "alert_id"]) for channel, rows in deliveries.groupby("channel")
    }
    logged = Counter(json.loads(line)["alert_id"] for line in (tmp_path / "alerts.log").read_text().splitlines())
    mailed = Counter(
        i for m in inbox.messages for i in re.findall(r"id (\w{16})", m.get_body(("plain",)).get_content())
    )
    posted = Counter(block["block_id"] for body in hook.bodies for block in body["blocks"] if "block_id" in block)
    in_doubt = set(deliveries.loc[deliveries["status"] == "in_doubt", "alert_id"])
    notices = {i: a for i, a in alerts.items() if a["kind"] == "health" and "may be missing" in a["symbol"]}
    assert all(i in json.dumps(list(notices.values())) for i in in_doubt) and len(notices) <= 1
    for channel, seen in (("log", logged), ("email", mailed), ("slack", posted)):
        assert set(seen) - in_doubt == sent[channel] and set(seen.values()) == {1}, channel  # each once, only those
    assert sent["log"] == set(alerts) - suppressed  # the log takes everything not held back as a repeat
    market = [a for a in alerts.values() if a["kind"] != "health"]
    assert len(market) >= 8 and {"large_order", "strategy"} <= {a["kind"] for a in market}

    health = Counter(a["symbol"].split(" for ")[0].split(" by ")[0] for a in alerts.values() if a["kind"] == "health")
    raised = {s for s in health if not s.startswith("recovered: ") and "may be missing" not in s}
    assert {"email channel down", "blind: no window done"} <= raised
    assert any(s.startswith("data lags real time") for s in raised)
    assert all(health[s] == 1 and health[f"recovered: {s}"] == 1 for s in raised), health
    down = next(a for a in alerts.values() if a["symbol"] == "email channel down")
    assert deliveries.set_index(["alert_id", "channel"]).loc[(down["alert_id"], "email"), "status"] == "skipped"
