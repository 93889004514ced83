"""The scheduler's logic: which windows are due, running them, retries, catch-up and delivery.

Time comes from an injectable `Clock`, so catch-up, retries and the closed-market skip are
tested without waiting. One instance at a time holds a file lock beside the state database.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pandas as pd
from filelock import FileLock

from nqflow.alerts import Alert
from nqflow.config import Config
from nqflow.errors import DataNotYetAvailable, MarketClosed, NqflowError, UsageError
from nqflow.market import hours as cal
from nqflow.ops import health
from nqflow.ops.followups import confirmation_message
from nqflow.ops.instance import sole_instance
from nqflow.ops.notify import deliver_pending, enabled_channels
from nqflow.ops.retention import Removed, apply_retention
from nqflow.ops.runner import NotebookRun, daily_paths, execute_daily, execute_window, window_paths
from nqflow.ops.store import RunOutcome, StateStore, health_scope
from nqflow.ops.suppression import repeats_to_suppress
from nqflow.paths import ensure_writable, resolve
from nqflow.reports.index import write_index
from nqflow.retry import backoff_seconds
from nqflow.sources import SourceSpec, make_source, source_spec

log = logging.getLogger("nqflow.scheduler")


class Clock(Protocol):
    def now(self) -> pd.Timestamp: ...
    def sleep(self, seconds: float) -> None: ...
    def wait(self, stop: threading.Event, seconds: float) -> None:
        """Until `seconds` have passed or `stop` is set (`run`'s pause between passes)."""


def _guarded(execute: Callable[[], NotebookRun], notebook: Path) -> NotebookRun:
    """A notebook run that cannot escape as an exception (a folder gone read-only, a disk full):
    it comes back as a failed run with its error, so the window or day is recorded and retried,
    never left pending."""
    try:
        return execute()
    except Exception as exc:
        return NotebookRun(notebook, None, error=f"{type(exc).__name__}: {exc}".splitlines()[0][:500])


class SystemClock:
    def now(self) -> pd.Timestamp:
        return pd.Timestamp.now(tz="UTC")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def wait(self, stop: threading.Event, seconds: float) -> None:
        stop.wait(seconds)


class SimulatedClock:
    """A clock the demo moves by hand: each window is processed as if just after it closed."""

    def __init__(self, now: pd.Timestamp):
        self.current = now

    def now(self) -> pd.Timestamp:
        return self.current

    def sleep(self, seconds: float) -> None:
        self.current += pd.Timedelta(seconds=seconds)

    def wait(self, stop: threading.Event, seconds: float) -> None:
        self.sleep(seconds)  # simulated time passes at once: `run` can be driven through days


@dataclass
class Scheduler:
    config: Config
    clock: Clock = field(default_factory=SystemClock)
    source: str | None = None
    data_dir: str | None = None
    overrides: dict = field(default_factory=dict)
    outputs_dir: Path = None  # type: ignore[assignment]  # None: the config's (resolved in __post_init__)
    state_db: Path = None  # type: ignore[assignment]  # None: the config's (resolved in __post_init__)
    executor: Callable[..., NotebookRun] | None = None  # like runner.execute_window; tests may wrap it
    daily_executor: Callable[..., NotebookRun] | None = None  # like runner.execute_daily
    stop_event: threading.Event = field(default_factory=threading.Event)
    #: Where `run` says what it does (a line per window and daily job); the CLI prints them.
    say: Callable[[str], None] = field(default=log.info)

    def __post_init__(self) -> None:
        self.outputs_dir = Path(self.outputs_dir or resolve(self.config.data.outputs_dir))
        self.state_db = Path(self.state_db or resolve(self.config.data.state_db))
        self.store = StateStore(self.state_db)
        self.run_window: Callable[..., NotebookRun] = self.executor or execute_window
        self.run_daily: Callable[..., NotebookRun] = self.daily_executor or execute_daily
        self.interval = pd.Timedelta(minutes=self.config.schedule.interval_minutes)
        source_spec(self.source or self.config.data.source)  # a bad data.source: one line, before any work

    def preflight(self) -> None:
        """Refuse to start work that cannot succeed, in one line each: the source cannot be made
        (no API key, no replay folder), or a folder the run writes cannot be written."""
        self.data_source()
        ensure_writable(self.outputs_dir, "outputs folder", "data.outputs_dir or --outputs")
        log_channel = self.config.notify.log
        if log_channel.enabled:
            ensure_writable(resolve(log_channel.path).parent, "alert log folder", "notify.log.path")

    # -- which windows -----------------------------------------------------------------
    def latest_complete_window(self, now: pd.Timestamp) -> tuple[pd.Timestamp, pd.Timestamp]:
        ready = now - pd.Timedelta(minutes=self.config.schedule.availability_delay_minutes)
        end = ready.floor(self.interval)
        return end - self.interval, end

    def due_windows(self, now: pd.Timestamp) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
        """Open-market windows not yet done, oldest first: new ones since the last run (bounded
        catch-up) and failed ones whose retry time has come."""
        _, last_end = self.latest_complete_window(now)
        latest = self.store.window_starts(limit=1)
        s = self.config.schedule
        if not latest:
            first_start = last_end - self.interval
        else:
            first_start = pd.Timestamp(latest[0]) + self.interval
        first_start = max(first_start, last_end - s.max_catchup_windows * self.interval)
        due = []
        start = first_start
        while start + self.interval <= last_end:
            if cal.window_is_open(start, start + self.interval):
                due.append((start, start + self.interval))
            start += self.interval
        for start_text, end_text in self.store.windows_to_retry(
            now.isoformat(), s.max_attempts, among=s.max_catchup_windows * 4
        ):
            pair = (pd.Timestamp(start_text), pd.Timestamp(end_text))
            if pair not in due:
                due.append(pair)
        return sorted(due)

    # -- running -------------------------------------------------------------------------
    def notebook_parameters(self) -> dict:
        """What every notebook is given: plain parameters only, never a secret."""
        return {
            "config_path": self.config.path,
            "source": self.source or "",
            "data_dir": self.data_dir or "",
            "state_db": str(self.state_db),
            "overrides": self.overrides,
        }

    def process(self, start: pd.Timestamp, end: pd.Timestamp) -> NotebookRun:
        """Run one window's notebook, record its alerts (once) and the window's state."""
        s = self.config.schedule
        now = self.clock.now()
        attempts = self.store.start_attempt(start.isoformat(), end.isoformat(), now.isoformat())
        notebook, _ = window_paths(self.outputs_dir, start, end)
        run = _guarded(lambda: self.run_window(start, end, self.outputs_dir, self.notebook_parameters()), notebook)
        done = self.clock.now()
        if run.ok:
            n = self.config.notify
            since = (start - pd.Timedelta(minutes=n.cooldown_minutes)).isoformat()
            suppressed = repeats_to_suppress(
                run.alerts, self.store.surges_sent_since(since), n.cooldown_minutes, n.escalation_confidence_gain
            )
            self.store.record_alerts(run.alerts, enabled_channels(self.config), done.isoformat(), suppressed)
            self.store.finish_window(
                start.isoformat(),
                end.isoformat(),
                RunOutcome(
                    "ok",
                    done.isoformat(),
                    run.duration_s,
                    str(run.notebook_path),
                    str(run.html_path) if run.html_path else None,
                    len(run.alerts),
                    run.summary,
                ),
            )
        else:
            retry_at = None
            if attempts < s.max_attempts:
                retry_at = (
                    done + pd.Timedelta(seconds=backoff_seconds(s.retry_backoff_seconds, attempts - 1))
                ).isoformat()
            self.store.finish_window(
                start.isoformat(),
                end.isoformat(),
                RunOutcome(
                    "failed",
                    done.isoformat(),
                    run.duration_s,
                    str(run.notebook_path) if run.notebook_path.exists() else None,
                    str(run.html_path) if run.html_path else None,
                    error=run.error,
                    next_attempt_at=retry_at,
                ),
            )
            log.error("window %s failed (attempt %d/%d): %s", start.isoformat(), attempts, s.max_attempts, run.error)
        when = f"window {start:%Y-%m-%d %H:%M}-{end:%H:%M}Z"
        self.say(
            f"{when}: {len(run.alerts)} alert(s) in {run.duration_s:.1f}s; report {run.html_path}"
            if run.ok
            else f"{when} FAILED (attempt {attempts}/{s.max_attempts}): {run.error}"
        )
        return run

    # -- the data source, as far as the scheduler needs it ------------------------------
    @property
    def source_spec(self) -> SourceSpec:
        return source_spec(self.source or self.config.data.source)

    def data_source(self):
        """The configured source, for its availability and prices only (the notebook pulls the data)."""
        if getattr(self, "_data_source", None) is None:
            self._data_source = make_source(self.config, self.source, self.data_dir)
        return self._data_source

    def published(self, end: pd.Timestamp) -> bool:
        """False while the data up to `end` is not there yet: such a window waits without
        spending one of its attempts, and is never run as if it were empty."""
        return self.not_published_reason(end) is None

    def not_published_reason(self, end: pd.Timestamp) -> str | None:
        """Why data up to `end` cannot be read yet, in words (None: it can): the window ends in
        the future (or inside the availability delay), or past what the source holds (the
        provider's available end, a replay folder's last file)."""
        source = self.data_source()
        if not source.published(end):
            return f"{source.describe_end()}; pick an earlier window or add the data"
        ready = end + pd.Timedelta(minutes=self.config.schedule.availability_delay_minutes)
        now = self.clock.now()
        if ready > now:
            return (
                f"it ends at {end:%Y-%m-%d %H:%M}Z and is due from {ready:%Y-%m-%d %H:%M}Z (now {now:%Y-%m-%d %H:%M}Z)"
            )
        return None

    def check_window(self, start: pd.Timestamp, end: pd.Timestamp) -> None:
        """Refuse a window that is not one of the schedule's, in one line, before any work: the
        end after the start, both on the interval's grid, exactly one interval long (a longer
        range is a backfill), open market, and published."""
        minutes = self.config.schedule.interval_minutes
        span = f"{start:%Y-%m-%d %H:%M}Z-{end:%Y-%m-%d %H:%M}Z"
        if end <= start:
            raise UsageError(f"window {span} ends before it starts; give the start, and the end after it (or none)")
        if start != start.floor(self.interval) or end != end.floor(self.interval):
            raise UsageError(
                f"window {span} is not on the {minutes}-minute grid; start and end on a multiple of "
                f"{minutes} minutes, e.g. {start.floor(self.interval):%Y-%m-%dT%H:%M}Z"
            )
        if end - start != self.interval:
            raise UsageError(
                f"window {span} is not one {minutes}-minute interval; for a longer range use "
                f"`scheduler.py backfill {start:%Y-%m-%dT%H:%M}Z {end:%Y-%m-%dT%H:%M}Z`"
            )
        if not cal.window_is_open(start, end):
            raise MarketClosed(
                f"market closed for {span} (CME Globex equity options halt, weekend or holiday); pick an open window"
            )
        reason = self.not_published_reason(end)
        if reason is not None:
            raise DataNotYetAvailable(f"window {span} is not published yet: {reason}")

    def check_budget(self, windows: list[tuple[pd.Timestamp, pd.Timestamp]]) -> float:
        """Price a backfill before pulling it; refused above the source's budget. A single
        window is not priced: it is small, and pricing it would double its requests."""
        if not self.source_spec.priced or len(windows) < 2:
            return 0.0
        return self.data_source().check_budget([("trades", windows[0][0], windows[-1][1])])

    # -- once a day per watched session: the session report, then its off-book reading --------
    def daily_jobs(self) -> list[str]:
        """The jobs `run` does once per watched session (`DAILY_JOBS`), as configured."""
        s = self.config.schedule
        return [
            job
            # The next-day statistics first: a session report due at the same time then shows the verdicts.
            for job, on in (("off_book", s.off_book), ("session", s.session_reports), ("gex", s.dealer_positioning))
            if on
        ]

    def process_daily(self, job: str, trade_date: dt.date) -> NotebookRun:
        """Run one session's `job` notebook (`runner.DAILY_NOTEBOOKS`) and record its alerts once.
        Data not published yet leaves the day 'waiting' without spending an attempt."""
        s = self.config.schedule
        notebook, _ = daily_paths(self.outputs_dir, job, trade_date)
        run = _guarded(lambda: self.run_daily(job, trade_date, self.outputs_dir, self.notebook_parameters()), notebook)
        done, day = self.clock.now(), str(trade_date)
        paths = (
            str(run.notebook_path) if run.notebook_path.exists() else None,
            str(run.html_path) if run.html_path else None,
        )
        if run.ok:
            self.store.record_alerts(run.alerts, enabled_channels(self.config), done.isoformat())
            self.record_notes(day, run.notes, done.isoformat())
            self.store.record_daily_run(
                job, day, RunOutcome("ok", done.isoformat(), run.duration_s, *paths, len(run.alerts), run.summary)
            )
        elif run.waiting:
            retry_at = (done + pd.Timedelta(minutes=s.daily_wait_minutes)).isoformat()
            self.store.record_daily_run(
                job,
                day,
                RunOutcome(
                    "waiting", done.isoformat(), run.duration_s, *paths, error=run.error, next_attempt_at=retry_at
                ),
                attempt=False,
            )
            log.info("%s %s: data not published yet; looking again at %s", job, day, retry_at)
        else:
            attempts = int((self.store.daily_run(job, day) or {}).get("attempts") or 0) + 1
            retry_at = (
                (done + pd.Timedelta(seconds=backoff_seconds(s.retry_backoff_seconds, attempts - 1))).isoformat()
                if attempts < s.max_attempts
                else None
            )
            self.store.record_daily_run(
                job,
                day,
                RunOutcome(
                    "failed", done.isoformat(), run.duration_s, *paths, error=run.error, next_attempt_at=retry_at
                ),
            )
            log.error("%s %s failed (attempt %d/%d): %s", job, day, attempts, s.max_attempts, run.error)
        self.say(
            f"{job} {day}: "
            + (
                f"{len(run.alerts)} alert(s); report {run.html_path}"
                if run.ok
                else "waiting for the data to be published"
                if run.waiting
                else f"FAILED: {run.error}"
            )
        )
        return run

    def record_notes(self, day: str, notes: dict[str, list[dict]], now: str) -> None:
        """Keep what a daily notebook learned about the session's alerts beside them; the first
        confirmations of a session go out as one follow-up on the channels that carried its alerts,
        and its session report is written again to show them."""
        for note, rows in notes.items():
            new = self.store.record_notes(note, day, rows, now)
            if note != "confirmation" or not new or not rows:
                continue
            if "session" in self.daily_jobs():  # the session report shows the verdicts: write it again
                self.store.requeue_daily("session", day, now, "next-morning confirmations recorded")
            # Off-book alerts say in their own reasons whether they opened positions: the follow-up
            # is about the alerts sent while the session traded.
            followed = [row for row in rows if row["kind"] != "off_book"]
            channels = self.store.channels_that_carried([row["alert_id"] for row in followed])
            if followed and channels:
                self.store.record_alerts([confirmation_message(day, followed, self.config.confidence)], channels, now)

    def ready_at(self, job: str, trade_date: dt.date) -> pd.Timestamp:
        """When a session's `job` may first run: its report once its last window is due; its
        off-book reading once the next session has opened (the statistics come in its first hour);
        its dealer positioning an hour after it opened itself (that morning's open interest and the
        previous settlement come in its first hour: an earlier reading could be partial)."""
        if job == "gex":
            return cal.sessions(trade_date, trade_date).iloc[0].market_open + pd.Timedelta(hours=1)
        if job == "off_book":
            following = cal.next_trading_day(trade_date)
            return cal.sessions(following, following).iloc[0].market_open
        close = cal.sessions(trade_date, trade_date).iloc[0].market_close
        return close + pd.Timedelta(minutes=self.config.schedule.availability_delay_minutes)

    def daily_due(self, job: str, now: pd.Timestamp) -> list[dt.date]:
        """Watched sessions (windows recorded) whose `job` is not done and may run now
        (`ready_at`, and any retry time has come), oldest first."""
        s = self.config.schedule
        starts = set(self.store.window_starts(limit=s.max_catchup_windows * 8))
        sessions = sorted(
            {found[0] for found in (cal.session_of(pd.Timestamp(w)) for w in starts) if found is not None}
        )[-s.daily_lookback_sessions :]
        due = []
        for day in sessions:
            if now < self.ready_at(job, day):
                continue
            record = self.store.daily_run(job, str(day))
            if record is not None and (
                record["status"] == "ok"
                or (record["status"] == "failed" and record["attempts"] >= s.max_attempts)
                or (record["next_attempt_at"] or "") > now.isoformat()
            ):
                continue
            due.append(day)
        return due

    def daily_tick(self) -> list[NotebookRun]:
        """Every due daily run (`daily_due`, per job of `daily_jobs`), then deliveries and the index."""
        runs = []
        for job in self.daily_jobs():
            for day in self.daily_due(job, self.clock.now()):
                if self.stop_event.is_set():
                    break
                runs.append(self.process_daily(job, day))
                self.deliver()
        if runs:
            self.refresh_index()
        return runs

    # -- health: loud when blind ------------------------------------------------------------
    def data_end(self) -> pd.Timestamp | None:
        """Where the source's trades end now, for a source that publishes late or has a fixed
        end (None otherwise, or when it cannot be asked now: failing windows say so on their own)."""
        spec = self.source_spec
        if not (spec.publishes_late or spec.fixed_end):
            return None
        try:
            return self.data_source().available_end("trades")
        except NqflowError as exc:
            log.warning("could not ask the data source where its data ends: %s", exc)
            return None

    def _assess(self) -> list[health.Condition]:
        data_end = self.data_end()
        fixed = self.source_spec.fixed_end
        return health.assess(
            self.store, self.config, self.clock.now(), None if fixed else data_end, data_end if fixed else None
        )

    def health_conditions(self) -> list[health.Condition]:
        """The conditions in force now (`nqflow.ops.health`), as `status` reports them; with no
        window ever done, `never_done` too (no evidence is not health)."""
        now = self.clock.now()
        conditions = health.in_force(self._assess(), self.store, now)
        # the live stream's own conditions (`nqflow.ops.live`), as it last recorded them
        conditions += [
            health.from_row(row)
            for key, row in self.store.health_states().items()
            if health_scope(key) and row["raised_at"]
        ]
        nothing = health.never_done(self.store)
        return conditions + [nothing] if nothing else conditions

    def health_basis(self) -> dict:
        """What `status` measured blindness against: the clock, or a replay folder's data end."""
        data_end = self.data_end()
        if self.source_spec.fixed_end:
            return {"measured_against": "data_end", "data_end": data_end.isoformat() if data_end else None}
        return {"measured_against": "clock", "data_end": data_end.isoformat() if data_end else None}

    def health_tick(self) -> list[Alert]:
        """Raise a health alert for each condition that starts, and a recovery for each that
        clears, through the outbox (exactly once each); returns the alerts recorded."""
        now = self.clock.now()
        conditions = self._assess()
        raised, cleared = self.store.update_health(conditions, now.isoformat())
        pairs = [(c, health.health_alert(c, at, now)) for c, at in raised]
        pairs += [
            (health.from_row(row), health.health_alert(health.from_row(row), at, now, cleared=True))
            for row, at in cleared
        ]
        if not pairs:
            return []
        new = self.store.record_alerts([alert for _, alert in pairs], enabled_channels(self.config), now.isoformat())
        for condition, alert in pairs:
            if condition.key.startswith("channel_down:"):  # told on the other channels, not the one that is down
                self.store.mark_skipped(
                    [alert.alert_id], condition.key.split(":", 1)[1], "the alert is about this channel"
                )
            log.warning("health: %s", alert.symbol)
        self.deliver()
        return new

    def retention_tick(self) -> Removed | None:
        """Apply `retention` once per UTC day (`nqflow.ops.retention`); the index follows."""
        today = self.clock.now().date()
        if getattr(self, "_retention_day", None) == today:
            return None
        self._retention_day = today
        removed = apply_retention(self.outputs_dir, self.config.retention, today)
        if removed.notebooks or removed.reports:
            self.refresh_index()
        return removed

    def deliver(self) -> dict[str, int]:
        return deliver_pending(self.store, self.config, self.clock.now())

    def refresh_index(self) -> Path:
        return write_index(
            self.outputs_dir,
            self.store.windows(limit=2000),
            self.store.daily_runs(limit=800),
            self.store.alerts(),
            {note: self.store.notes(note) for note in ("confirmation", "worked_final")},
        )

    def tick(self) -> list[NotebookRun]:
        """One pass: every due window in order, then deliveries and the index."""
        runs = []
        for start, end in self.due_windows(self.clock.now()):
            if self.stop_event.is_set():
                break
            if not self.published(end):
                log.info("window %s is not published by the data provider yet; waiting", start.isoformat())
                break
            runs.append(self.process(start, end))
            self.deliver()
            self.refresh_index()
        self.deliver()
        return runs

    def process_windows(
        self, windows: list[tuple[pd.Timestamp, pd.Timestamp]], progress: bool = False
    ) -> list[NotebookRun]:
        """Run chosen windows (window / backfill / demo), skipping closed-market ones. Refused
        before any work when the source cannot be made, a folder cannot be written, or the last
        window is not published yet."""
        open_windows = [w for w in windows if cal.window_is_open(*w)]
        self.preflight()
        if open_windows:
            reason = self.not_published_reason(open_windows[-1][1])
            if reason is not None:
                last = open_windows[-1]
                raise DataNotYetAvailable(
                    f"window {last[0]:%Y-%m-%d %H:%M}Z-{last[1]:%H:%M}Z is not published yet: {reason}"
                )
        self.check_budget(open_windows)
        iterator: Iterable[tuple[pd.Timestamp, pd.Timestamp]] = open_windows
        if progress:
            from tqdm import tqdm

            iterator = tqdm(open_windows, desc="windows", unit="window")
        runs = []
        for start, end in iterator:
            if self.stop_event.is_set():
                break
            runs.append(self.process(start, end))
            self.deliver()
        self.refresh_index()
        return runs

    def lock(self) -> FileLock:
        return FileLock(str(self.state_db) + ".lock")

    def run_forever(self) -> None:
        """`scheduler.py run`: tick every poll interval until SIGINT/SIGTERM, one instance at a time."""
        with sole_instance(self.lock(), "scheduler", "instance", self.stop_event) as received:
            done_before = self.store.count_windows("ok")
            try:
                self.preflight()
                self.store.set_meta("first_started_at", self.clock.now().isoformat(), replace=False)
                self.say(self.start_line())
                if self.config.databento.live:
                    from nqflow.ops.live import check_live_config, live_thread

                    check_live_config(self.config)
                    live_thread(self.config, self.state_db, self.stop_event, self.say)
                interrupted = self.store.recover_interrupted(self.clock.now().isoformat())
                if interrupted:  # we hold the lock: no other scheduler is running them
                    log.warning(
                        "%d window(s) were left running by a scheduler that stopped mid-window; retrying them: %s",
                        len(interrupted),
                        ", ".join(interrupted),
                    )
                while not self.stop_event.is_set():
                    self.tick()
                    self.daily_tick()
                    self.health_tick()
                    self.retention_tick()
                    self.clock.wait(self.stop_event, self.config.schedule.poll_seconds)
            finally:
                done = self.store.count_windows("ok") - done_before
                self.say(
                    f"nqflow run stopped{' on ' + received[0] if received else ''}: {done} window(s) done this run; "
                    f"state in {self.state_db}"
                )

    def start_line(self) -> str:
        """What `run` is about to do, in one line: source, products, channels, windows due."""
        spec, universe = self.source_spec, self.config.universe
        where = self.data_dir or (self.config.data.cache_dir if spec.publishes_late else self.config.data.replay_dir)
        due = self.due_windows(self.clock.now())
        return (
            f"nqflow run: source {spec.name} ({where}), {len(universe.parents)} option products, "
            f"channels {', '.join(enabled_channels(self.config)) or 'none'}, {len(due)} window(s) due now, "
            f"every {self.config.schedule.poll_seconds:g} s; outputs {self.outputs_dir}; SIGINT or SIGTERM stops"
        )
