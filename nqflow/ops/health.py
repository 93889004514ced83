"""Is the monitor seeing the market? Conditions, a verdict, and health alerts with recoveries.

A `Condition` is one thing wrong right now, judged from the state database, the clock and
(for a source that publishes late) the provider's available end:

- ``window_failed:<start>`` (degraded): a window used its last attempt and failed;
- ``blind`` (blind): the market has been open for ``health.blind_minutes`` with no window done
  (the provider is not publishing, or every window fails); closed-market time does not count;
- ``data_lag`` (blind): the provider's data ends more than ``health.max_data_lag_minutes``
  behind real time while the market is open;
- ``channel_down:<name>`` (degraded): a channel has had deliveries failing for
  ``health.channel_down_minutes``.

`Scheduler.health_tick` turns conditions into ``health`` alerts through the same outbox as
market alerts: one when a condition is raised, one when it clears, each exactly once (ids are
derived from the condition and when it was raised, and the state database remembers what was
raised). A channel-down alert is not sent on the channel it is about; the others carry it.
The verdict (`verdict`) is what ``scheduler.py status --json`` exits with.

This module imports nothing from the detection engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import pandas as pd

from nqflow.alerts import Alert, Direction, Kind, Label, Level, one_line, stable_id
from nqflow.config import Config
from nqflow.errors import ExitCode
from nqflow.market import hours as cal
from nqflow.ops.store import StateStore


class Verdict(IntEnum):
    """The monitor's state, ordered; `exit_code` is what `scheduler.py status` exits with."""

    HEALTHY = 0
    DEGRADED = 1
    BLIND = 2

    @property
    def exit_code(self) -> ExitCode:
        return {Verdict.HEALTHY: ExitCode.OK, Verdict.DEGRADED: ExitCode.DEGRADED, Verdict.BLIND: ExitCode.BLIND}[self]


@dataclass(frozen=True)
class Condition:
    key: str
    verdict: Verdict
    title: str  # short, for subjects and the index: "blind for 60 min"
    detail: str  # what is wrong and what to do
    delay: pd.Timedelta = field(default=pd.Timedelta(0))  # raised once it has lasted this long

    def to_json(self) -> dict:
        return {"key": self.key, "verdict": self.verdict.name.lower(), "title": self.title, "detail": self.detail}


def _open_minutes(start: pd.Timestamp, end: pd.Timestamp, interval_minutes: int) -> float:
    """Minutes of [start, end) in open-market windows of the schedule."""
    return float(
        sum(interval_minutes for s, e in cal.windows_between(start, end, interval_minutes) if cal.window_is_open(s, e))
    )


def assess(
    store: StateStore,
    config: Config,
    now: pd.Timestamp,
    data_end: pd.Timestamp | None = None,
    horizon: pd.Timestamp | None = None,
) -> list[Condition]:
    """Every condition that holds at `now` (see the module doc). `data_end`: the provider's
    available end when the source publishes late (None: not judged). `horizon`: where a source
    with a fixed end (a replay folder) ends: blindness is measured up to it instead of the clock.
    With no window recorded at all, blindness counts from the first start of `run`
    (``meta.first_started_at``)."""
    windows = store.windows(limit=config.schedule.max_catchup_windows * 4)
    return [
        *_failed_windows(windows, config),
        *_blind(windows, store.meta("first_started_at"), config, now, horizon),
        *_data_lag(config, now, data_end),
        *_channels_down(store.pending_deliveries(), config),
    ]


def _failed_windows(windows: pd.DataFrame, config: Config) -> list[Condition]:
    s = config.schedule
    failed = windows[(windows["status"] == "failed") & (windows["attempts"] >= s.max_attempts)]
    if failed.empty:  # nearly every pass of a long run: itertuples costs a frame's columns even on no rows
        return []
    return [
        Condition(
            f"window_failed:{w.window_start}",
            Verdict.DEGRADED,
            f"window {w.window_start[:16]}Z failed for good",
            f"window {w.window_start[:16]}Z failed all {w.attempts} attempts ({w.last_error}); its flow is not "
            f"monitored: fix the cause, then run `scheduler.py window {w.window_start[:16]}Z`",
        )
        for w in failed.itertuples(index=False)
    ]


def _blind(
    windows: pd.DataFrame, first_started: str | None, config: Config, now: pd.Timestamp, horizon: pd.Timestamp | None
) -> list[Condition]:
    s, h = config.schedule, config.health
    if not (len(windows) or first_started):
        return []
    done = windows[windows["status"] == "ok"]
    ready = now - pd.Timedelta(minutes=s.availability_delay_minutes)
    if horizon is not None:
        ready = min(ready, horizon)
    due_end = ready.floor(f"{s.interval_minutes}min")
    since = (
        pd.Timestamp(done["window_end"].max())
        if len(done)
        else pd.Timestamp(windows["window_start"].min())
        if len(windows)
        else pd.Timestamp(first_started)
    )
    missed = _open_minutes(since, due_end, s.interval_minutes)
    if missed < h.blind_minutes:
        return []
    return [
        Condition(
            "blind",
            Verdict.BLIND,
            f"blind: no window done for {missed:.0f} open-market minutes",
            f"no window has been done since {since:%Y-%m-%d %H:%M}Z ({missed:.0f} minutes of open market up to "
            f"{'the data end' if horizon is not None else 'now'}); the data is not published or every window "
            f"fails: see `scheduler.py status` and the window errors",
        )
    ]


def _data_lag(config: Config, now: pd.Timestamp, data_end: pd.Timestamp | None) -> list[Condition]:
    h = config.health
    if data_end is None or cal.session_of(now) is None:
        return []
    lag = now - data_end
    if lag <= pd.Timedelta(minutes=h.max_data_lag_minutes):
        return []
    hours = lag / pd.Timedelta(hours=1)
    licensing = (
        " A lag of hours means the account gets delayed data: 15-minute polling needs CME "
        "real-time licensing on the Databento account."
        if hours >= 1
        else ""
    )
    return [
        Condition(
            "data_lag",
            Verdict.BLIND,
            f"data lags real time by {lag / pd.Timedelta(minutes=1):.0f} min",
            f"Databento's data ends at {data_end:%Y-%m-%d %H:%M}Z, {hours:.1f} h behind real time, more than "
            f"health.max_data_lag_minutes={h.max_data_lag_minutes:g} allows.{licensing}",
        )
    ]


def _channels_down(deliveries: pd.DataFrame, config: Config) -> list[Condition]:
    if not len(deliveries):
        return []
    # a delivery that failed stays pending with its error until it is sent (`notify.deliver_pending`)
    failing = deliveries[
        (deliveries["status"] == "pending") & deliveries["last_error"].notna() & (deliveries["attempts"] > 0)
    ]
    return [
        Condition(
            f"channel_down:{channel}",
            Verdict.DEGRADED,
            f"{channel} channel down",
            f"{len(rows)} alert(s) wait on the {channel} channel ({_last_error(rows)}); "
            f"they are retried and sent once it is back: check its settings and the server",
            pd.Timedelta(minutes=config.health.channel_down_minutes),
        )
        for channel, rows in failing.groupby("channel")
    ]


def never_done(store: StateStore) -> Condition | None:
    """No window was ever done with this state database: nothing says the monitor sees the
    market, so `status` is not healthy (no alert: `blind` raises one once open market passes)."""
    if store.count_windows("ok"):
        return None
    return Condition(
        "never_done",
        Verdict.BLIND,
        "no window done yet",
        f"no window has been done with the state database {store.path}; run `scheduler.py once` or "
        f"start `scheduler.py run`, then ask `status` again",
    )


def _last_error(rows: pd.DataFrame) -> str:
    errors = rows["last_error"].dropna()
    return str(errors.iloc[-1]) if len(errors) else "failing"


def in_force(conditions: list[Condition], store: StateStore, now: pd.Timestamp) -> list[Condition]:
    """The conditions that have lasted their delay (first seen as the state database recorded it)."""
    seen = store.health_states()
    return [
        c
        for c in conditions
        if c.delay <= pd.Timedelta(0) or (c.key in seen and now - pd.Timestamp(seen[c.key]["observed_at"]) >= c.delay)
    ]


def from_row(row: dict) -> Condition:
    """A condition as the state database remembers it (`StateStore.update_health`)."""
    return Condition(row["key"], Verdict[row["verdict"].upper()], row["title"], row["detail"])


def verdict(conditions: list[Condition]) -> Verdict:
    return max((c.verdict for c in conditions), default=Verdict.HEALTHY)


def health_alert(condition: Condition, raised_at: str, now: pd.Timestamp, cleared: bool = False) -> Alert:
    """The alert for a condition raised at `raised_at` (or its recovery): its id is fixed by
    the two, so recording it again changes nothing."""
    title = f"recovered: {condition.title}" if cleared else condition.title
    reason = (
        f"cleared at {now:%Y-%m-%d %H:%M}Z after it was raised at {raised_at[:16]}Z: {condition.detail}"
        if cleared
        else condition.detail
    )
    return Alert(
        alert_id=stable_id("health", condition.key, raised_at, "cleared" if cleared else "raised"),
        kind=Kind.HEALTH,
        level=Level.SYSTEM,
        window_start=now.isoformat(),
        window_end=now.isoformat(),
        event_time=now.isoformat(),
        symbol=title,
        direction=Direction.MIXED,
        volume=0,
        premium_usd=0.0,
        confidence=100.0,
        label=Label.LOW if cleared else (Label.HIGH if condition.verdict == Verdict.BLIND else Label.MEDIUM),
        reasons=[reason, f"condition {condition.key}, {condition.verdict.name.lower()}"],
    )


def in_doubt_notice(channel: str, alerts: list[Alert], now: pd.Timestamp) -> Alert:
    """The one notice a channel gets for alerts whose send to it was cut short by a stop: each
    may or may not have arrived, and none is sent again (an alert never reaches a channel
    twice), so the notice repeats what each said. Its id is fixed by the channel and the alerts."""
    ids = sorted(a.alert_id for a in alerts)
    return Alert(
        alert_id=stable_id("health", "delivery_in_doubt", channel, *ids),
        kind=Kind.HEALTH,
        level=Level.SYSTEM,
        window_start=now.isoformat(),
        window_end=now.isoformat(),
        event_time=now.isoformat(),
        symbol=f"{len(ids)} {channel} alert(s) may be missing",
        direction=Direction.MIXED,
        volume=0,
        premium_usd=0.0,
        confidence=100.0,
        label=Label.MEDIUM,
        reasons=[
            f"nqflow stopped while it sent {len(ids)} alert(s) to {channel}, before it recorded the send: "
            f"each may or may not have arrived, and none is sent again so that none arrives twice; "
            f"all are in the alert log and `scheduler.py alerts`",
            *(f"{a.alert_id}: {one_line(a)}" for a in alerts),
        ],
    )
