"""`scheduler.py doctor`: check the set-up before the first window, and daily from a timer.

One line per check, ``ok`` / ``warn`` / ``FAIL``, each failure with its fix; the exit code
is 1 when any check failed. What is checked, by source and channel:

- Databento: the key is set and accepted (``metadata.get_dataset_range``), the data lag
  against real time, every watched parent resolving on the latest published session
  (its definitions, through the same cache as the monitor), and what a day's pulls cost;
- replay: the folder holds sessions;
- email: connect, secure and log in to the SMTP server (``--send-test`` sends a message);
- Slack: the webhook's host answers (``--send-test`` posts a message);
- disk: free space for what retention keeps.

Secrets are read from the environment and never printed.
"""

from __future__ import annotations

import shutil
import socket
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from nqflow.alerts import Alert, Direction, Kind, Label, Level, stable_id
from nqflow.config import Config
from nqflow.errors import NqflowError
from nqflow.market import hours as cal
from nqflow.paths import ensure_writable, resolve

#: Disk use of one session's outputs when there are none yet to measure (MB): 92 windows of
#: about 0.32 MB of executed notebook and 0.58 MB of HTML report, plus the session and off-book pages.
DEFAULT_NOTEBOOK_MB_PER_DAY = 30.0
DEFAULT_REPORT_MB_PER_DAY = 55.0


@dataclass
class Check:
    name: str
    status: str  # "ok", "warn", "FAIL"
    detail: str

    def line(self) -> str:
        return f"{self.status:<4}  {self.name:<10}  {self.detail}"


def _run(name: str, check) -> list[Check]:
    """A check function's results; an nqflow error or a refused connection is one failed line."""
    try:
        return check()
    except (NqflowError, OSError) as exc:
        return [Check(name, "FAIL", str(exc).splitlines()[0])]


def check_databento(scheduler) -> list[Check]:
    source = scheduler.data_source()
    config: Config = scheduler.config
    env = config.databento.api_key_env
    checks = [Check("key", "ok", f"${env} is set and Databento accepted it ({config.universe.dataset} reachable)")]
    end = source.available_end("trades")  # the first authenticated request
    now = scheduler.clock.now()
    lag = now - end
    limit = pd.Timedelta(minutes=config.health.max_data_lag_minutes)
    if lag <= limit or cal.session_of(now) is None:
        checks.append(
            Check(
                "data lag",
                "ok",
                f"trades published up to {end:%Y-%m-%d %H:%M}Z ({lag / pd.Timedelta(minutes=1):,.0f} min behind now)",
            )
        )
    else:
        checks.append(
            Check(
                "data lag",
                "FAIL",
                f"trades published up to {end:%Y-%m-%d %H:%M}Z, "
                f"{lag / pd.Timedelta(hours=1):,.1f} h behind real time while CME Globex is open; "
                f"fix: 15-minute polling needs CME real-time licensing on the Databento account",
            )
        )
    sessions = source.sessions_available()
    if not sessions:
        return [*checks, Check("parents", "FAIL", "no whole session is published yet; try again after the next close")]
    day = sessions[-1]
    chain = source.chain(day)
    listed = set(chain.loc[chain["put_call"].isin(["C", "P"]), "product"].astype(str))
    watched = sorted(config.universe.products)
    missing = [p for p in watched if p not in listed]
    if not listed & set(watched):
        checks.append(
            Check(
                "parents",
                "FAIL",
                f"none of the {len(watched)} watched products lists options on {day}; "
                f"fix: check universe.option_parents and the account's GLBX.MDP3 options entitlement",
            )
        )
    else:
        note = (
            f"; not listed that day: {', '.join(missing)} (a weekly lists only in weeks that have it)"
            if missing
            else ""
        )
        checks.append(
            Check(
                "parents",
                "ok",
                f"{len(watched) - len(missing)} of {len(watched)} watched products list options on {day}{note}",
            )
        )
    open_, close = cal.sessions(day, day).iloc[0][["market_open", "market_close"]]
    pulls = [("trades", open_, close), ("definition", open_.floor("D"), close), ("statistics", open_.floor("D"), close)]
    cost = sum(source.estimate_cost(*pull) for pull in pulls)
    checks.append(
        Check(
            "cost",
            "ok" if cost <= config.databento.budget_usd else "warn",
            f"a whole session's trades, definitions and statistics ({day}) cost ${cost:,.2f}; "
            f"budget per pull databento.budget_usd=${config.databento.budget_usd:,.2f}",
        )
    )
    return checks


def check_replay(scheduler) -> list[Check]:
    source = scheduler.data_source()
    sessions = source.sessions_available()
    if not sessions:
        return [
            Check(
                "data",
                "FAIL",
                f"no sessions in {scheduler.data_dir or scheduler.config.data.replay_dir}; "
                f"fix: run `scheduler.py sample` or point --data-dir at DBN files",
            )
        ]
    return [Check("data", "ok", f"replay folder holds {len(sessions)} sessions, {sessions[0]} to {sessions[-1]}")]


def _test_alert(now: pd.Timestamp, channel: str) -> Alert:
    return Alert(
        alert_id=stable_id("doctor", channel, now.isoformat()),
        kind=Kind.HEALTH,
        level=Level.SYSTEM,
        window_start=now.isoformat(),
        window_end=now.isoformat(),
        event_time=now.isoformat(),
        symbol="doctor test message",
        direction=Direction.MIXED,
        volume=0,
        premium_usd=0.0,
        confidence=100.0,
        label=Label.LOW,
        reasons=[f"sent by `scheduler.py doctor --send-test` to check the {channel} channel; nothing to do"],
    )


def check_email(scheduler, send_test: bool) -> list[Check]:
    from nqflow.ops.notify import DeliveryError, send_email, smtp_password, smtp_session

    settings = scheduler.config.notify.email
    try:
        with smtp_session(settings, smtp_password(settings)):
            pass
        checks = [
            Check(
                "email",
                "ok",
                f"SMTP {settings.host}:{settings.port} ({settings.security}) accepts "
                f"{'the login of ' + settings.user if settings.user else 'connections'}",
            )
        ]
        if send_test:
            send_email([_test_alert(scheduler.clock.now(), "email")], scheduler.config, {})
            checks.append(Check("email", "ok", f"test message sent to {', '.join(settings.recipients)}"))
        return checks
    except (DeliveryError, NqflowError) as exc:
        return [
            Check(
                "email",
                "FAIL",
                f"{exc}; fix: check notify.email (host, port, security, user) and ${settings.password_env}",
            )
        ]


def check_slack(scheduler, send_test: bool) -> list[Check]:
    from nqflow.ops.notify import DeliveryError, send_slack, slack_url

    settings = scheduler.config.notify.slack
    try:
        url = urllib.parse.urlsplit(slack_url(settings))
        port = url.port or (443 if url.scheme == "https" else 80)
        with socket.create_connection((url.hostname, port), timeout=settings.timeout_seconds):
            pass
        checks = [Check("slack", "ok", f"the webhook's host {url.hostname}:{port} answers")]
        if send_test:
            send_slack([_test_alert(scheduler.clock.now(), "slack")], scheduler.config, {})
            checks.append(Check("slack", "ok", "test message posted"))
        return checks
    except OSError as exc:
        return [
            Check(
                "slack",
                "FAIL",
                f"the webhook's host does not answer ({type(exc).__name__}); "
                f"fix: check ${settings.webhook_url_env} and the network",
            )
        ]
    except (DeliveryError, NqflowError) as exc:
        return [Check("slack", "FAIL", f"{exc}; fix: check ${settings.webhook_url_env}")]


def _mb_per_day(outputs_dir: Path, suffix: str, default: float) -> float:
    """Measured from the dated folders already written, else the default."""
    days = (
        [p for p in outputs_dir.glob("20[0-9][0-9]-[0-9][0-9]-[0-9][0-9]") if p.is_dir()]
        if outputs_dir.is_dir()
        else []
    )
    sizes = [sum(f.stat().st_size for f in day.glob(f"*{suffix}")) for day in days]
    full = [s for s in sizes if s > 0]
    return max(full) / 1e6 if len(full) >= 3 else default


def check_disk(scheduler) -> list[Check]:
    out: Path = scheduler.outputs_dir
    r = scheduler.config.retention
    notebooks = _mb_per_day(out, ".ipynb", DEFAULT_NOTEBOOK_MB_PER_DAY)
    reports = _mb_per_day(out, ".html", DEFAULT_REPORT_MB_PER_DAY)
    need_mb = notebooks * r.notebook_days + reports * r.report_days
    probe = out if out.exists() else next(p for p in out.parents if p.exists())
    free_mb = shutil.disk_usage(probe).free / 1e6
    detail = (
        f"retention keeps about {need_mb / 1e3:,.1f} GB ({notebooks:,.0f} MB of notebooks a day for "
        f"{r.notebook_days} days, {reports:,.0f} MB of reports for {r.report_days}); {free_mb / 1e3:,.1f} GB free"
    )
    if free_mb < need_mb:
        return [Check("disk", "FAIL", f"{detail}; fix: free space or lower retention.report_days")]
    return [Check("disk", "ok", detail)]


def check_folders(scheduler) -> list[Check]:
    """Every folder a run writes: outputs, the state database's, the alert log's, the cache's."""
    config: Config = scheduler.config
    folders = [
        (scheduler.outputs_dir, "outputs folder", "data.outputs_dir or --outputs"),
        (Path(scheduler.state_db).parent, "state folder", "data.state_db or --state-db"),
    ]
    if config.notify.log.enabled:
        folders.append((resolve(config.notify.log.path).parent, "alert log folder", "notify.log.path"))
    if scheduler.source_spec.publishes_late:
        folders.append((resolve(scheduler.data_dir or config.data.cache_dir), "Databento cache", "data.cache_dir"))
    for folder, what, setting in folders:
        ensure_writable(Path(folder), what, setting)  # raises the one-line StorageError
    return [Check("folders", "ok", "writable: " + ", ".join(f"{what} {folder}" for folder, what, _ in folders))]


def run_doctor(scheduler, send_test: bool = False) -> list[Check]:
    """Every check that applies to the configured source and channels, in order."""
    config = scheduler.config
    checks = [Check("config", "ok", f"{config.path} loads; source {scheduler.source or config.data.source}")]
    source_check = check_databento if scheduler.source_spec.priced else check_replay
    checks += _run("folders", lambda: check_folders(scheduler))
    checks += _run("source", lambda: source_check(scheduler))
    if config.notify.email.enabled:
        checks += _run("email", lambda: check_email(scheduler, send_test))
    if config.notify.slack.enabled:
        checks += _run("slack", lambda: check_slack(scheduler, send_test))
    checks += _run("disk", lambda: check_disk(scheduler))
    return checks
