"""Alert delivery through real servers on 127.0.0.1: SMTP (aiosmtpd, STARTTLS + AUTH) and an
HTTP endpoint standing in for a Slack incoming webhook. Outages, Retry-After, a process
killed mid-delivery, escalation/cooldown, and secrets kept out of messages and logs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import pandas as pd
import pytest
from helpers import SMTP_PASSWORD, Inbox, free_port, make_alert, smtp_server

from nqflow.config import load_config
from nqflow.ops.notify import deliver_pending, enabled_channels
from nqflow.ops.store import RunOutcome, StateStore
from nqflow.ops.suppression import repeats_to_suppress

T0 = pd.Timestamp("2026-10-29T14:32:00Z")


@pytest.fixture()
def env(monkeypatch, tls, webhook):
    monkeypatch.setenv("SSL_CERT_FILE", str(tls[0]))  # smtplib's default context trusts the test CA
    monkeypatch.setenv("NQFLOW_SMTP_PASSWORD", SMTP_PASSWORD)
    monkeypatch.setenv("NQFLOW_SLACK_WEBHOOK_URL", webhook.url)
    return webhook


def channel_config(tmp_path, smtp_port: int, **extra):
    return load_config(
        overrides={
            "notify.console.enabled": False,
            "notify.log.path": str(tmp_path / "alerts.log"),
            "notify.email.enabled": True,
            "notify.email.host": "127.0.0.1",
            "notify.email.port": smtp_port,
            "notify.email.user": "desk",
            "notify.email.recipients": ["desk@example.test"],
            "notify.email.min_confidence": 0,
            "notify.email.timeout_seconds": 5,
            "notify.slack.enabled": True,
            "notify.slack.min_confidence": 0,
            "notify.slack.timeout_seconds": 5,
            "notify.email.report_base_url": "https://reports.example.test/nqflow",
            "notify.retry_backoff_seconds": 30,
            **extra,
        }
    )


def ids_in_slack(webhook) -> list[str]:
    return [b["block_id"] for body in webhook.bodies for b in body["blocks"] if b["type"] == "section"]


def ids_in_mail(inbox) -> list[str]:
    return [
        line.split()[-1]
        for m in inbox.messages
        for line in m.get_body(("plain",)).get_content().splitlines()
        if line.strip().startswith("id ")
    ]


# --------------------------------------------------------------------------- tests
def test_email_digest_and_slack_message_contents(tmp_path, tls, env):
    inbox, port = Inbox(), free_port()
    server = smtp_server(tls, inbox, port)
    try:
        config = channel_config(tmp_path, port)
        store = StateStore(tmp_path / "state.sqlite")
        alerts = [make_alert(1, confidence=45), make_alert(2, confidence=88), make_alert(3, confidence=61)]
        store.record_alerts(alerts, enabled_channels(config), T0.isoformat())
        report = str(tmp_path / "out" / "2026-10-29" / "1415-1430Z.html")
        start, end = alerts[0].window_start, alerts[0].window_end
        store.start_attempt(start, end, T0.isoformat())
        store.finish_window(start, end, RunOutcome("ok", T0.isoformat(), 1.0, None, report, len(alerts), {}))
        sent = deliver_pending(store, config, T0)  # the link is the report the window recorded
    finally:
        server.stop()
    assert sent == {"log": 3, "email": 3, "slack": 3}
    [message] = inbox.messages  # one digest per window
    assert message["Subject"].startswith("nqflow: 3 alert(s) in window 2026-10-29T14:15Z, top: HIGH large_order")
    assert message["To"] == "desk@example.test"
    plain = message.get_body(("plain",)).get_content()
    html_part = message.get_body(("html",)).get_content()
    assert ids_in_mail(inbox) == [
        alerts[1].alert_id,
        alerts[2].alert_id,
        alerts[0].alert_id,
    ]  # strongest first
    assert "https://reports.example.test/nqflow/2026-10-29/1415-1430Z.html" in plain
    assert "reason one of alert 2" in plain and "<table" in html_part and "reason one of alert 3" in html_part
    assert SMTP_PASSWORD not in message.as_string()

    [body] = env.bodies
    sections = [b for b in body["blocks"] if b["type"] == "section"]
    assert body["blocks"][0]["type"] == "header" and "3 alert(s)" in body["blocks"][0]["text"]["text"]
    assert [s["block_id"] for s in sections] == [alerts[1].alert_id, alerts[2].alert_id, alerts[0].alert_id]
    assert (
        sections[0]["text"]["text"].startswith("*[HIGH 88] large_order")
        and "• reason one of alert 2" in sections[0]["text"]["text"]
    )
    assert body["blocks"][-1]["elements"][0]["text"].endswith("/2026-10-29/1415-1430Z.html")
    log_lines = [json.loads(line) for line in (tmp_path / "alerts.log").read_text().splitlines()]
    assert sorted(a["alert_id"] for a in log_lines) == sorted(a.alert_id for a in alerts)


def test_outage_then_recovery_delivers_every_alert_exactly_once(tmp_path, tls, env, caplog):
    port = free_port()
    config = channel_config(tmp_path, port)
    store = StateStore(tmp_path / "state.sqlite")
    first = [make_alert(i) for i in range(3)]
    store.record_alerts(first, enabled_channels(config), T0.isoformat())

    # SMTP is down (connection refused) and Slack answers 503, then 429 with Retry-After.
    env.script = [(503, {}), (429, {"Retry-After": "300"})]
    assert deliver_pending(store, config, T0) == {"log": 3}
    assert deliver_pending(store, config, T0 + pd.Timedelta(seconds=10)) == {}  # backoff: not due yet
    now = T0 + pd.Timedelta(seconds=31)
    assert deliver_pending(store, config, now) == {}  # email refused again; Slack gets the 429
    slack_rows = store.deliveries().query("channel == 'slack'")
    assert (
        pd.to_datetime(slack_rows["next_attempt_at"]) >= now + pd.Timedelta(seconds=300)
    ).all()  # Retry-After honoured
    assert "retry after 300s" in slack_rows["last_error"].iloc[0]

    # A second window's alerts arrive during the outage; then the process restarts and SMTP comes back.
    second = [make_alert(i, window_start="2026-10-29T14:30:00+00:00") for i in range(2)]
    store.record_alerts(second, enabled_channels(config), now.isoformat())
    inbox = Inbox()
    server = smtp_server(tls, inbox, port)
    try:
        restarted = StateStore(tmp_path / "state.sqlite")
        for minutes in (2, 6, 12, 30, 60):
            deliver_pending(restarted, config, now + pd.Timedelta(minutes=minutes))
        deliver_pending(restarted, config, now + pd.Timedelta(minutes=90))  # nothing left: sends nothing
    finally:
        server.stop()
    every = sorted(a.alert_id for a in first + second)
    assert sorted(ids_in_mail(inbox)) == every and len(inbox.messages) == 2  # one digest per window
    assert sorted(ids_in_slack(env)) == every
    assert set(restarted.deliveries()["status"]) == {"sent"}
    logged = caplog.text + (tmp_path / "alerts.log").read_text()
    assert "slack delivery failed" in caplog.text and "email delivery failed" in caplog.text
    assert SMTP_PASSWORD not in logged and "SECRET-hook-token" not in logged


KILLED_DELIVERY = """
import pandas as pd, sys
from nqflow.config import load_config
from nqflow.ops.notify import deliver_pending
from nqflow.ops.store import RunOutcome, StateStore
config = load_config(overrides={{"notify.console.enabled": False, "notify.log.enabled": False,
    "notify.email.enabled": True, "notify.email.host": "127.0.0.1", "notify.email.port": {port},
    "notify.email.user": "desk", "notify.email.recipients": ["desk@example.test"],
    "notify.email.min_confidence": 0, "notify.email.timeout_seconds": 60}})
deliver_pending(StateStore(sys.argv[1]), config, pd.Timestamp("{now}"))
"""


def test_a_process_killed_mid_delivery_loses_nothing(tmp_path, tls, env):
    port = free_port()
    store = StateStore(tmp_path / "state.sqlite")
    alerts = [make_alert(i) for i in range(4)]
    store.record_alerts(alerts, ["email"], T0.isoformat())
    hold = threading.Event()
    hanging = Inbox(hold)
    server = smtp_server(tls, hanging, port)
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_DELIVERY.format(port=port, now=T0.isoformat()), str(tmp_path / "state.sqlite")],
        env=os.environ.copy(),
    )
    try:
        assert hanging.in_data.wait(60), "the delivery never reached SMTP DATA"
        process.send_signal(signal.SIGKILL)  # killed while the server holds the message
        process.wait(30)
    finally:
        hold.set()
        server.stop()
    assert process.returncode == -signal.SIGKILL
    assert set(StateStore(tmp_path / "state.sqlite").deliveries()["status"]) == {"sending"}  # nothing marked sent

    inbox = Inbox()
    server = smtp_server(tls, inbox, port)
    try:
        config = channel_config(tmp_path, port, **{"notify.slack.enabled": False, "notify.log.enabled": False})
        assert deliver_pending(StateStore(tmp_path / "state.sqlite"), config, T0 + pd.Timedelta(minutes=1)) == {
            "email": 4
        }
    finally:
        server.stop()
    assert sorted(ids_in_mail(inbox)) == sorted(a.alert_id for a in alerts)


KILLED_SLACK = """
import pandas as pd, sys
from nqflow.config import load_config
from nqflow.ops.notify import deliver_pending
from nqflow.ops.store import RunOutcome, StateStore
config = load_config(overrides={{"notify.console.enabled": False, "notify.log.enabled": False,
    "notify.slack.enabled": True, "notify.slack.min_confidence": 0, "notify.slack.timeout_seconds": 60}})
deliver_pending(StateStore(sys.argv[1]), config, pd.Timestamp("{now}"))
"""


def test_a_slack_post_cut_short_by_a_kill_is_not_posted_again_but_named_in_one_notice(tmp_path, env):
    """Killed after Slack took the message and before the send was recorded: Slack cannot say
    what it has, so the alerts are in doubt. They are not posted again (an alert never reaches a
    channel twice), and one notice on Slack repeats what each said, so none is lost unsaid."""
    store = StateStore(tmp_path / "state.sqlite")
    window = [make_alert(i) for i in range(2)]
    later = [make_alert(i, window_start="2026-10-29T14:30:00+00:00") for i in range(2)]
    store.record_alerts(window + later, ["slack"], T0.isoformat())
    env.hold = threading.Event()
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_SLACK.format(now=T0.isoformat()), str(tmp_path / "state.sqlite")],
        env=os.environ.copy(),
    )
    try:
        assert env.received.wait(60), "the first window's message never reached the webhook"
        process.send_signal(signal.SIGKILL)  # killed while Slack holds its answer
        process.wait(30)
    finally:
        env.hold.set()
    env.hold = None
    assert ids_in_slack(env) == [a.alert_id for a in window]  # it did arrive; nqflow cannot know that
    status = store.deliveries().set_index("alert_id")["status"]
    assert {status[a.alert_id] for a in window} == {"sending"}
    assert {status[a.alert_id] for a in later} == {"pending"}

    config = channel_config(tmp_path, free_port(), **{"notify.email.enabled": False})
    assert deliver_pending(store, config, T0 + pd.Timedelta(minutes=1)) == {"log": 1, "slack": 3}  # the notice, 2 later
    assert deliver_pending(store, config, T0 + pd.Timedelta(minutes=2)) == {}  # nothing again, no second notice
    posted = ids_in_slack(env)
    assert len(posted) == len(set(posted)) == 5
    notices = store.alerts(kind="health")
    assert len(notices) == 1 and notices[0].alert_id in posted and "2 slack alert(s)" in notices[0].symbol
    named = " ".join(notices[0].reasons)
    assert all(a.alert_id in named for a in window) and not any(a.alert_id in named for a in later)
    notice_text = json.dumps(env.bodies[-2:])
    assert all(a.alert_id in notice_text for a in window)  # the reader sees what each said
    status = store.deliveries().query("channel == 'slack'").set_index("alert_id")["status"]
    assert {status[a.alert_id] for a in window} == {"in_doubt"}
    assert {status[a.alert_id] for a in later} == {"sent"} and status[notices[0].alert_id] == "sent"


def test_an_alert_logged_before_a_crash_is_not_logged_twice(tmp_path, env):
    """Killed after writing the alert log but before recording the delivery: the retry finds the
    alerts in the log and does not write them again (the log is the channel nqflow can read back)."""
    from nqflow.ops.notify import send_log

    config = channel_config(tmp_path, free_port(), **{"notify.email.enabled": False, "notify.slack.enabled": False})
    store = StateStore(tmp_path / "state.sqlite")
    alerts = [make_alert(i) for i in range(3)]
    store.record_alerts(alerts, ["log"], T0.isoformat())
    send_log(alerts[:2], config, {})  # what the killed process wrote; its delivery rows still pending
    assert set(store.deliveries()["status"]) == {"pending"}
    assert deliver_pending(store, config, T0) == {"log": 3}
    lines = [json.loads(line) for line in (tmp_path / "alerts.log").read_text().splitlines()]
    assert sorted(a["alert_id"] for a in lines) == sorted(a.alert_id for a in alerts)
    assert set(store.deliveries()["status"]) == {"sent"}


def surge(n: int, minute: int, tier: float, confidence: float, symbol: str = "NQZ6 C21000") -> dict:
    start = (pd.Timestamp("2026-10-29T14:00Z") + pd.Timedelta(minutes=minute)).isoformat()
    return make_alert(n, window_start=start, kind="volume_surge", confidence=confidence, tier=tier, symbol=symbol)


def test_a_repeated_surge_is_sent_again_only_when_it_escalates():
    sent = [surge(0, 0, 10, 55)]
    new = [
        surge(1, 15, 10, 60),  # same tier, +5 confidence: suppressed
        surge(2, 30, 30, 58),  # higher tier: sent
        surge(3, 45, 30, 69),  # +11 over the 30x one's 58: sent
        surge(4, 45, 10, 50, symbol="NQZ6 P20000"),  # another strike: sent
        surge(5, 150, 10, 40),  # after the 60-minute cooldown: sent
        make_alert(6, window_start=sent[0].window_start),
    ]  # an order is never a repeat
    suppressed = repeats_to_suppress(new, sent, cooldown_minutes=60, confidence_gain=10)
    assert list(suppressed) == [new[0].alert_id]
    assert "already alerted at 10x / confidence 55 within 60 min" in suppressed[new[0].alert_id]


def test_suppressed_repeats_stay_in_the_history_but_are_not_delivered(tmp_path, env):
    config = channel_config(tmp_path, free_port(), **{"notify.email.enabled": False})
    store = StateStore(tmp_path / "state.sqlite")
    first, repeat = surge(0, 0, 10, 55), surge(1, 15, 10, 57)
    store.record_alerts([first], enabled_channels(config), T0.isoformat())
    since = (pd.Timestamp(repeat.window_start) - pd.Timedelta(minutes=60)).isoformat()
    suppressed = repeats_to_suppress([repeat], store.surges_sent_since(since), 60, 10)
    store.record_alerts([repeat], enabled_channels(config), T0.isoformat(), suppressed)
    deliver_pending(store, config, T0)
    assert ids_in_slack(env) == [first.alert_id]
    assert {a.alert_id for a in store.alerts()} == {first.alert_id, repeat.alert_id}
    rows = store.deliveries().set_index(["alert_id", "channel"])
    assert rows.loc[(repeat.alert_id, "slack"), "status"] == "suppressed"
    assert store.surges_sent_since(since) == [first]


def test_a_failure_on_a_later_window_does_not_resend_the_earlier_ones(tmp_path, env):
    """Two windows pending; Slack takes the first message and fails the second. Only the second
    is sent again: each window's delivery is recorded as it happens."""
    config = channel_config(tmp_path, free_port(), **{"notify.email.enabled": False})
    store = StateStore(tmp_path / "state.sqlite")
    early = [make_alert(i) for i in range(2)]
    late = [make_alert(i, window_start="2026-10-29T14:30:00+00:00") for i in range(2)]
    store.record_alerts(early + late, enabled_channels(config), T0.isoformat())
    env.script = [(200, {}), (500, {})]
    assert deliver_pending(store, config, T0) == {"log": 4, "slack": 2}
    slack = store.deliveries().query("channel == 'slack'").set_index("alert_id")["status"]
    assert all(slack[a.alert_id] == "sent" for a in early) and all(slack[a.alert_id] != "sent" for a in late)
    assert deliver_pending(store, config, T0 + pd.Timedelta(minutes=5)) == {"slack": 2}
    assert sorted(ids_in_slack(env)) == sorted(a.alert_id for a in early + late)  # each once
    assert [len(body["blocks"]) for body in env.bodies] == [3, 3]  # one message per window: header, two alerts


def test_a_digest_sent_again_keeps_its_message_id(tmp_path, tls, env):
    """Re-sent after a crash (another outbox with the same alerts), a digest carries the same
    Message-ID, which mail systems use to drop the repeat; another digest has another one."""
    inbox, port = Inbox(), free_port()
    server = smtp_server(tls, inbox, port)
    try:
        config = channel_config(tmp_path, port, **{"notify.slack.enabled": False})
        alerts = [make_alert(i) for i in range(3)]
        for name in ("first", "again"):
            store = StateStore(tmp_path / f"{name}.sqlite")
            store.record_alerts(alerts, enabled_channels(config), T0.isoformat())
            deliver_pending(store, config, T0)
        other = StateStore(tmp_path / "other.sqlite")
        other.record_alerts(alerts[:2], enabled_channels(config), T0.isoformat())
        deliver_pending(other, config, T0)
    finally:
        server.stop()
    first, again, different = (m["Message-ID"] for m in inbox.messages)
    assert first == again and first != different and first.startswith("<nqflow.") and first.endswith(">")
