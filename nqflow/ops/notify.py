"""Alert delivery: console, JSON-lines alert log, email (SMTP) and Slack (incoming webhook).

Delivery goes through the SQLite outbox (`nqflow.ops.store`): alerts are recorded first, then each
channel marks what it delivered. A failed delivery is retried with backoff on later ticks and
survives restarts; an alert is never sent twice to the same channel. Secrets (SMTP password,
webhook URL) are read from the environment at send time and never logged.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import logging.handlers
import os
import smtplib
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import parseaddr
from pathlib import Path
from typing import Any

import pandas as pd
from filelock import FileLock

from nqflow.alerts import Alert, Kind, one_line, usd
from nqflow.config import Config
from nqflow.errors import CredentialsError
from nqflow.ops.health import in_doubt_notice
from nqflow.ops.store import StateStore
from nqflow.paths import resolve
from nqflow.reports.pages import render
from nqflow.retry import backoff_seconds, honour_retry_after, retry_after_seconds


class DeliveryError(Exception):
    """A channel could not deliver now; the outbox retries later (not before `retry_after` s)."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def enabled_channels(config: Config) -> list[str]:
    return [name for name, channel in CHANNELS.items() if channel.settings(config).enabled]


def _wanted(alert: Alert, settings) -> bool:
    if alert.kind == Kind.HEALTH:  # the monitor's own state reaches every channel, whatever its filters
        return True
    if alert.kind == Kind.CONFIRMATION:  # queued only on the channels that carried the alerts it follows up
        return True
    return alert.confidence >= settings.min_confidence and (not settings.kinds or alert.kind in settings.kinds)


def _report_link(alert: Alert, config: Config, reports: dict[str, str]) -> str:
    path = reports.get(alert.window_start, "")
    base = config.notify.email.report_base_url
    if base and path:
        return base.rstrip("/") + "/" + Path(path).parent.name + "/" + Path(path).name
    return path


def send_console(alerts: list[Alert], config: Config, reports: dict[str, str]) -> None:
    colour = sys.stdout.isatty()
    codes = {"HIGH": "\033[1;31m", "MEDIUM": "\033[33m", "LOW": "\033[2m"}
    for alert in alerts:
        line = one_line(alert)
        print(f"{codes[alert.label]}{line}\033[0m" if colour else line, flush=True)


_log_handlers: dict[str, logging.Handler] = {}


def send_log(alerts: list[Alert], config: Config, reports: dict[str, str]) -> None:
    settings = config.notify.log
    path = resolve(settings.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = _log_handlers.get(str(path))
    if handler is None:
        handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=settings.max_bytes, backupCount=settings.backup_count, encoding="utf-8"
        )
        _log_handlers[str(path)] = handler
    logged = logged_alert_ids(path)
    for alert in alerts:
        if alert.alert_id in logged:  # written before a crash cut the delivery's record short
            continue
        record = logging.LogRecord(
            "nqflow.alerts", logging.INFO, "", 0, json.dumps(alert.to_json(), sort_keys=True), None, None
        )
        handler.emit(record)
    handler.flush()


#: How much of the alert log's end is read for alerts already written (pending deliveries are recent).
LOG_TAIL_BYTES = 1 << 20


def logged_alert_ids(path: Path) -> set[str]:
    """The alert ids in the last `LOG_TAIL_BYTES` of the alert log. The log is the one channel
    nqflow can read back, so its delivery is idempotent: a process killed after writing an alert
    but before recording the delivery does not write it twice when the delivery is retried."""
    try:
        with path.open("rb") as handle:
            handle.seek(max(path.stat().st_size - LOG_TAIL_BYTES, 0))
            tail = handle.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return set()
    ids = set()
    for line in tail.splitlines():
        try:
            ids.add(json.loads(line)["alert_id"])
        except (ValueError, KeyError, TypeError):  # a line cut by the seek, or not an alert
            continue
    return ids


def _email_bodies(alerts: list[Alert], config: Config, reports: dict[str, str]) -> tuple[str, str, str]:
    ranked = sorted(alerts, key=lambda a: -a.confidence)
    window = ranked[0].window_start
    top = ranked[0]
    subject = f"nqflow: {len(ranked)} alert(s) in window {window[:16]}Z, top: {top.label} {top.kind} {top.symbol}"
    if all(a.kind == Kind.HEALTH for a in ranked):
        subject = f"nqflow health: {'; '.join(a.symbol for a in ranked)}"
    if all(a.kind == Kind.CONFIRMATION for a in ranked):
        subject = f"nqflow follow-up: {ranked[0].symbol}: {ranked[0].reasons[0]}"
    link = _report_link(ranked[0], config, reports)
    text = [f"{len(ranked)} institutional-flow alert(s), strongest first.", f"Report: {link}", ""]
    for a in ranked:
        text.append(one_line(a))
        text.extend(f"    - {r}" for r in a.reasons)
        text.append(f"    id {a.alert_id}")
    body_html = render(
        "alert_email.html.j2",
        link=link,
        alerts=[
            {
                "label": str(a.label),
                "confidence": f"{a.confidence:.0f}",
                "kind": str(a.kind),
                "symbol": a.symbol,
                "direction": str(a.direction),
                "volume": f"{a.volume:,}",
                "premium": usd(a.premium_usd),
                "reasons": a.reasons,
                "alert_id": a.alert_id,
            }
            for a in ranked
        ],
    )
    return subject, "\n".join(text), body_html


def send_email(alerts: list[Alert], config: Config, reports: dict[str, str]) -> None:
    settings = config.notify.email
    if not settings.recipients:
        raise CredentialsError("notify.email.recipients is empty; list at least one address in config/monitoring.toml")
    password = smtp_password(settings)
    for window_alerts in _by_window(alerts):
        subject, text, body_html = _email_bodies(window_alerts, config, reports)
        message = EmailMessage()
        message["Subject"], message["From"], message["To"] = subject, settings.sender, ", ".join(settings.recipients)
        message["Message-ID"] = message_id(window_alerts, settings.sender)
        message.set_content(text)
        message.add_alternative(body_html, subtype="html")
        with smtp_session(settings, password) as smtp:
            try:
                smtp.send_message(message)
            except (OSError, smtplib.SMTPException) as exc:
                raise DeliveryError(f"SMTP {settings.host}:{settings.port}: {type(exc).__name__}: {exc}") from None


def smtp_password(settings) -> str:
    """The SMTP password from the environment (never the config); required when a user is set."""
    password = os.environ.get(settings.password_env, "")
    if settings.user and not password:
        raise CredentialsError(
            f"SMTP user is set but ${settings.password_env} is empty; export the password in the environment"
        )
    return password


def slack_url(settings) -> str:
    """The Slack webhook URL from the environment: it is a secret, never logged or echoed."""
    url = os.environ.get(settings.webhook_url_env, "")
    if not url:
        raise CredentialsError(
            f"Slack is enabled but ${settings.webhook_url_env} is empty; export the webhook URL in the environment"
        )
    return url


@contextlib.contextmanager
def smtp_session(settings, password: str):
    """A connected, secured and logged-in SMTP session (`notify.email` settings); any failure
    is a DeliveryError naming the server, never the password."""
    try:
        smtp: smtplib.SMTP
        if settings.security == "ssl":
            smtp = smtplib.SMTP_SSL(
                settings.host, settings.port, timeout=settings.timeout_seconds, context=ssl.create_default_context()
            )
        else:
            smtp = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout_seconds)
        with smtp:
            if settings.security == "starttls":
                smtp.starttls(context=ssl.create_default_context())
            if settings.user:
                smtp.login(settings.user, password)
            yield smtp
    except (OSError, smtplib.SMTPException) as exc:
        raise DeliveryError(f"SMTP {settings.host}:{settings.port}: {type(exc).__name__}: {exc}") from None


def message_id(alerts: list[Alert], sender: str) -> str:
    """The same digest gets the same Message-ID: if a crash between the server's acceptance and
    our record makes us send it again, mail systems that drop repeated Message-IDs drop it."""
    digest = hashlib.sha1("|".join(sorted(a.alert_id for a in alerts)).encode()).hexdigest()[:24]
    domain = parseaddr(sender)[1].rpartition("@")[2] or "nqflow.invalid"
    return f"<nqflow.{digest}@{domain}>"


def slack_payload(alerts: list[Alert], config: Config, reports: dict[str, str]) -> dict:
    ranked = sorted(alerts, key=lambda a: -a.confidence)
    title = f"nqflow: {len(ranked)} alert(s), window {ranked[0].window_start[:16]}Z"
    if all(a.kind == Kind.HEALTH for a in ranked):
        title = f"nqflow health: {'; '.join(a.symbol for a in ranked)}"[:150]
    if all(a.kind == Kind.CONFIRMATION for a in ranked):
        title = f"nqflow follow-up: {ranked[0].symbol}, opened or closed"[:150]
    blocks: list[dict] = [{"type": "header", "text": {"type": "plain_text", "text": title}}]
    for a in ranked:  # at most MAX_ALERTS_PER_MESSAGE (`_by_window`)
        blocks.append(
            {
                "type": "section",
                "block_id": a.alert_id[:255],
                "text": {"type": "mrkdwn", "text": f"*{one_line(a)}*\n" + "\n".join(f"• {r}" for r in a.reasons)},
            }
        )
    link = _report_link(ranked[0], config, reports)
    if link:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"Report: {link}"}]})
    return {"text": f"nqflow: {len(ranked)} alert(s)", "blocks": blocks}


def send_slack(alerts: list[Alert], config: Config, reports: dict[str, str]) -> None:
    settings = config.notify.slack
    url = slack_url(settings)
    for window_alerts in _by_window(alerts):
        data = json.dumps(slack_payload(window_alerts, config, reports)).encode()
        request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=settings.timeout_seconds) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            retry_after = retry_after_seconds(exc.headers.get("Retry-After") if exc.headers else None)
            raise DeliveryError(
                f"Slack webhook answered HTTP {exc.code}"
                + (f", retry after {retry_after:g}s" if retry_after is not None else ""),
                retry_after,
            ) from None
        except (OSError, urllib.error.URLError) as exc:
            raise DeliveryError(
                f"Slack webhook unreachable: {type(exc).__name__}"
            ) from None  # the URL is a secret: not echoed


@dataclass(frozen=True)
class Channel:
    """A way alerts leave nqflow: its name (the config section under ``notify``), where its
    settings are, and how it sends one window's alerts (raising DeliveryError to be retried)."""

    name: str
    settings: Callable[[Config], Any]
    send: Callable[[list[Alert], Config, dict[str, str]], None]
    #: A send cut short by a crash may be made again: the channel tells what it already has (the
    #: alert log is read back), the repeat is dropped downstream (a digest keeps its Message-ID,
    #: which mail systems use to drop repeats) or costs nothing (a console line). Slack cannot
    #: tell, so what a crash left in doubt is not posted again there (`in_doubt_notice`).
    resends_in_doubt: bool = False


#: Every channel, in delivery order; config sections, CLI and the outbox all come from here.
CHANNELS: dict[str, Channel] = {
    channel.name: channel
    for channel in (
        Channel("console", lambda config: config.notify.console, send_console, resends_in_doubt=True),
        Channel("log", lambda config: config.notify.log, send_log, resends_in_doubt=True),
        Channel("email", lambda config: config.notify.email, send_email, resends_in_doubt=True),
        Channel("slack", lambda config: config.notify.slack, send_slack),
    )
}


#: A message carries at most this many alerts (a Slack message holds 50 blocks); a window with
#: more goes out in several, each recorded as it is sent.
MAX_ALERTS_PER_MESSAGE = 20


def _by_window(alerts: list[Alert]) -> list[list[Alert]]:
    """The alerts in messages: one per window, in their order, split at MAX_ALERTS_PER_MESSAGE."""
    groups: dict[str, list[Alert]] = {}
    for alert in alerts:
        groups.setdefault(alert.window_start, []).append(alert)
    return [
        group[i : i + MAX_ALERTS_PER_MESSAGE]
        for group in groups.values()
        for i in range(0, len(group), MAX_ALERTS_PER_MESSAGE)
    ]


def deliver_pending(store: StateStore, config: Config, now: pd.Timestamp) -> dict[str, int]:
    """Send every due delivery of every enabled channel; returns how many were sent per channel.
    Each message links its window's report as the state database records it, whichever sender
    (the window loop or the live stream) sends it.

    One sender at a time per state database (a file lock beside it): the window loop and the
    live stream deliver from the same outbox, and two senders reading the same pending row
    would send it twice."""
    with FileLock(str(store.path) + ".deliver.lock"):
        return _deliver_pending(store, config, now)


def _deliver_pending(store: StateStore, config: Config, now: pd.Timestamp) -> dict[str, int]:
    sent: dict[str, int] = {}
    channels = enabled_channels(config)
    busy = store.channels_with_outbox()  # most passes of a long run: none, and nothing more is asked
    if not busy:
        return sent
    for channel in channels:  # first, so that a notice it records goes out in this pass
        if channel in busy:
            _settle_in_flight(store, channel, channels, now)
    busy = store.channels_with_outbox()  # a notice recorded just now is pending on every channel
    for channel in channels:
        if channel not in busy:
            continue
        settings = CHANNELS[channel].settings(config)
        due = store.due_deliveries(channel, now.isoformat(), config.notify.max_delivery_attempts)
        skipped = [a.alert_id for a in due if not _wanted(a, settings)]
        if skipped:
            store.mark_skipped(skipped, channel, "below the channel's min_confidence or not one of its kinds")
        wanted = [a for a in due if _wanted(a, settings)]
        if not wanted:
            continue
        reports = store.report_paths([a.window_start for a in wanted])
        # One message per window, recorded as it goes: when a later window's message fails, the
        # earlier ones stay delivered and are not sent again.
        failure: tuple[str, str] | None = None  # (error, retry at) once the channel failed in this pass
        for window_alerts in _by_window(wanted):
            ids = [a.alert_id for a in window_alerts]
            if failure is not None:  # not hammering a channel that is down: these wait with the rest
                store.mark_failed(ids, channel, f"not tried: {failure[0]}", failure[1])
                continue
            store.mark_sending(ids, channel)
            try:
                CHANNELS[channel].send(window_alerts, config, reports)
            except (DeliveryError, CredentialsError) as exc:
                attempts = _attempts(store, ids[0], channel)
                delay = honour_retry_after(
                    backoff_seconds(config.notify.retry_backoff_seconds, attempts), getattr(exc, "retry_after", None)
                )
                failure = (str(exc), (now + pd.Timedelta(seconds=delay)).isoformat())
                store.mark_failed(ids, channel, *failure)
                logging.getLogger("nqflow").warning("%s delivery failed, will retry: %s", channel, exc)
                continue
            store.mark_delivered(ids, channel, now.isoformat())
            sent[channel] = sent.get(channel, 0) + len(ids)
    return sent


def _settle_in_flight(store: StateStore, channel: str, channels: list[str], now: pd.Timestamp) -> None:
    """Deliveries a sender began and never recorded: it died between the send and its record
    (we hold the sender's lock, so no live sender owns them). Where the channel may send again
    they are pending once more; elsewhere they are in doubt, not sent again so that nothing
    arrives twice, and one notice naming them goes to every channel (as health alerts do), so
    that nothing is lost unsaid."""
    in_flight = store.in_flight(channel)
    if not in_flight:
        return
    ids = [a.alert_id for a in in_flight]
    if CHANNELS[channel].resends_in_doubt:
        store.mark_pending(ids, channel)
        return
    store.mark_in_doubt(ids, channel, "the sender stopped between sending and recording; not sent again")
    store.record_alerts([in_doubt_notice(channel, in_flight, now)], channels, now.isoformat())
    logging.getLogger("nqflow").warning(
        "%d %s deliveries were cut short by a stop and are in doubt: not sent again", len(ids), channel
    )


def _attempts(store: StateStore, alert_id: str, channel: str) -> int:
    with store.connect() as conn:
        row = conn.execute(
            "SELECT attempts FROM deliveries WHERE alert_id = ? AND channel = ?", (alert_id, channel)
        ).fetchone()
    return int(row[0]) if row else 0
