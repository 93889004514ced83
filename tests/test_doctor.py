"""`scheduler.py doctor` against the stand-in Databento gateway, a real SMTP server and a
loopback webhook: every check passes on a good set-up, and each broken part is one FAIL line
that names the fix."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
from helpers import KEY, SMTP_PASSWORD, Inbox, Webhook, free_port, make_config, smtp_server

from nqflow.ops.doctor import run_doctor
from nqflow.ops.scheduling import Scheduler, SimulatedClock

# Slow: make test-fast leaves it out.
pytestmark = pytest.mark.slow


def doctor_config(gw, smtp_port: int, **databento):
    config = make_config(gw, **databento)
    notify = dataclasses.replace(
        config.notify,
        console=dataclasses.replace(config.notify.console, enabled=False),
        email=dataclasses.replace(
            config.notify.email,
            enabled=True,
            host="127.0.0.1",
            port=smtp_port,
            user="desk",
            recipients=("desk@example.test",),
        ),
        slack=dataclasses.replace(config.notify.slack, enabled=True),
    )
    return dataclasses.replace(config, notify=notify)


def checks_by_name(checks) -> dict[str, list]:
    named: dict[str, list] = {}
    for check in checks:
        named.setdefault(check.name, []).append(check)
    return named


def test_a_good_set_up_passes_every_check_and_sends_test_messages(gw, tls, tmp_path, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(tls[0]))
    monkeypatch.setenv("NQFLOW_SMTP_PASSWORD", SMTP_PASSWORD)
    hook, inbox, port = Webhook(), Inbox(), free_port()
    monkeypatch.setenv("NQFLOW_SLACK_WEBHOOK_URL", hook.url)
    server = smtp_server(tls, inbox, port)
    try:
        clock = SimulatedClock(gw.market.end + pd.Timedelta(minutes=10))
        scheduler = Scheduler(
            doctor_config(gw, port),
            clock=clock,
            source="databento",
            data_dir=str(tmp_path / "cache"),
            outputs_dir=tmp_path / "out",
            state_db=tmp_path / "state.sqlite",
        )
        checks = run_doctor(scheduler, send_test=True)
    finally:
        server.stop()
        hook.close()
    assert [c.status for c in checks] == ["ok"] * len(checks), [c.line() for c in checks]
    named = checks_by_name(checks)
    assert set(named) == {"config", "folders", "key", "data lag", "parents", "cost", "email", "slack", "disk"}
    latest = scheduler.data_source().sessions_available()[-1]  # the latest whole session published
    assert f"of 26 watched products list options on {latest}" in named["parents"][0].detail
    assert named["cost"][0].detail.startswith(f"a whole session's trades, definitions and statistics ({latest}) cost $")
    assert len(inbox.messages) == 1 and "doctor test message" in inbox.messages[0]["Subject"]
    assert len(hook.bodies) == 1 and "doctor test message" in hook.bodies[0]["blocks"][0]["text"]["text"]
    assert all(SMTP_PASSWORD not in c.detail and KEY not in c.detail and "SECRET" not in c.detail for c in checks)


def test_each_broken_part_is_one_failed_line_with_its_fix(gw, tls, tmp_path, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(tls[0]))
    monkeypatch.setenv("NQFLOW_SMTP_PASSWORD", SMTP_PASSWORD)
    monkeypatch.setenv("NQFLOW_SLACK_WEBHOOK_URL", f"http://127.0.0.1:{free_port()}/services/SECRET")
    gw.available_end = pd.Timestamp("2026-11-25T15:00Z")  # the account sees data hours old
    clock = SimulatedClock(pd.Timestamp("2026-11-25T19:00Z"))  # CME Globex open
    scheduler = Scheduler(
        doctor_config(gw, free_port()),
        clock=clock,
        source="databento",
        data_dir=str(tmp_path / "cache"),
        outputs_dir=tmp_path / "out",
        state_db=tmp_path / "s.sqlite",
    )
    named = checks_by_name(run_doctor(scheduler))
    assert named["data lag"][0].status == "FAIL" and "real-time licensing" in named["data lag"][0].detail
    assert named["email"][0].status == "FAIL" and "ConnectionRefusedError" in named["email"][0].detail
    assert "fix: check notify.email" in named["email"][0].detail
    assert named["slack"][0].status == "FAIL" and "SECRET" not in named["slack"][0].detail  # the URL is a secret
    monkeypatch.setenv("DATABENTO_API_KEY", "db-WRONGkey-0000000000000000")
    wrong = Scheduler(
        doctor_config(gw, free_port()),
        clock=clock,
        source="databento",
        data_dir=str(tmp_path / "c2"),
        outputs_dir=tmp_path / "out",
        state_db=tmp_path / "s2.sqlite",
    )
    (source,) = checks_by_name(run_doctor(wrong))["source"]
    assert source.status == "FAIL" and "rejected the key in DATABENTO_API_KEY" in source.detail
    assert "db-WRONGkey" not in source.detail
