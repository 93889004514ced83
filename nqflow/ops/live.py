"""`scheduler.py live`: one Databento Live session, alerts within a second of the print.

What it does, in one loop:
- subscribes ``trades``, ``definition`` and ``statistics`` of the watched option parents and
  the underlying (``stype_in="parent"``), replaying from `--start`, else from the end of the
  last window it recorded, else from the current session's open; a dropped connection is a
  new session from the end of the last window recorded (what was buffered after it is
  replayed, never counted twice), retried with backoff up to ``live.reconnect_max_seconds``;
- records the stream into the Databento cache (`nqflow.sources.databento_live`), so the window
  notebooks read it with no Historical pull and stay the record of every window;
- judges orders, sweeps, packages and worked orders the moment they are complete, by event time
  (`nqflow.engine.flash`), and sends them through the same outbox as the notebooks' alerts, at
  once: the notebook's alert for the same event has the same id and is not sent again;
- watches the feed: futures flowing with no option record for ``live.max_silent_minutes`` of
  open market raises health condition ``live:no_options`` (the account's live licence probably
  lacks CME options; the window loop goes on from Historical, since no window without options
  is recorded) and clears it when options come back; gateway errors (authentication,
  connection limit, a symbol that does not resolve) are one line each with the fix; slow-reader
  warnings are logged and counted.

Records are judged by ``ts_event`` only, so replaying a past day behaves as that day did.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import databento as db
import databento_dbn as dbn
import numpy as np
import pandas as pd
from databento.common.error import BentoError
from filelock import FileLock

from nqflow.alerts import Alert
from nqflow.config import Config
from nqflow.engine.baseline import BaselineStore
from nqflow.engine.flash import FlashMonitor
from nqflow.errors import ConfigError, CredentialsError, NqflowError
from nqflow.market import hours as cal
from nqflow.ops import health
from nqflow.ops.instance import sole_instance
from nqflow.ops.notify import deliver_pending, enabled_channels
from nqflow.ops.store import StateStore
from nqflow.paths import resolve
from nqflow.retry import backoff_seconds
from nqflow.sources.databento_historical import KEYS_URL, DatabentoSource
from nqflow.sources.databento_live import LiveRecorder, trades_frame

log = logging.getLogger(__name__)

SCHEMAS = ("trades", "definition", "statistics")
NO_OPTIONS = "live:no_options"
RECORDED_UNTIL = "live_recorded_until"  # state meta: the end of the last window the stream recorded
LIVE_PORT = 13000
REPLAY_LIMIT = pd.Timedelta(hours=23)  # Databento Live replays the last 24 hours; a margin for the clock
MAX_BATCH = 200_000  # records taken in one go before the stream is judged again


class _SaidOurselves(logging.Filter):
    """The client logs each symbol that does not resolve as an error, and the collected errors
    once more when the session closes; `LiveRunner` says each in one line with its fix."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("symbol_resolution_failed" in message or "Failed to resolve symbol" in message)


def _quiet_client_logs() -> None:
    for name in ("databento.live.protocol", "asyncio"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _SaidOurselves) for f in logger.filters):
            logger.addFilter(_SaidOurselves())


class LiveRefused(ConfigError):
    """The gateway refused the session for good (a bad key, the connection limit): no retry helps."""


def gateway_address(config: Config) -> tuple[str | None, int]:
    """``databento.live_gateway`` as (host, port); (None, 13000) for Databento's own."""
    value = config.databento.live_gateway.strip()
    if not value:
        return None, LIVE_PORT
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(
            f"databento.live_gateway must be host:port, not {value!r}: e.g. 127.0.0.1:13000, "
            f"or empty for Databento's own"
        )
    return host, int(port)


def live_key(config: Config) -> str:
    env = config.databento.api_key_env
    key = os.environ.get(env, "").strip()
    if not key:
        raise CredentialsError(
            f"{env} is not set; export {env}=db-... with a key from {KEYS_URL} that has a live licence"
        )
    return key


def refusal(message: str, config: Config) -> NqflowError | None:
    """A gateway error that no retry mends, as one line with its fix (None: worth retrying)."""
    text = message.lower()
    env = config.databento.api_key_env
    if "authentication" in text or "auth failed" in text or "api key" in text:
        return LiveRefused(
            f"the Databento Live gateway refused the key in {env} ({message.strip()}); set {env} to a key "
            f"from {KEYS_URL} whose account has a live data licence for {config.universe.dataset}"
        )
    if "connection limit" in text:
        return LiveRefused(
            f"the Databento Live gateway refused a new session: the account's open connection limit is "
            f"reached ({message.strip()}); stop another live session of this key (another `scheduler.py live`?)"
        )
    return None


@dataclass
class LiveStats:
    """What the stream did, for the stop line and the bench."""

    records: int = 0
    trades: int = 0
    option_trades: int = 0
    sessions: int = 0
    reconnects: int = 0
    slow_reader_warnings: int = 0
    alerts: int = 0
    files: int = 0
    last_event: pd.Timestamp | None = None
    errors: list[str] = field(default_factory=list)


class LiveRunner:
    """The live loop (module docstring). `run` returns on `stop_event` (SIGTERM / SIGINT)."""

    def __init__(
        self,
        config: Config,
        state_db: Path | None = None,
        start: pd.Timestamp | None = None,
        stop_event: threading.Event | None = None,
        say: Callable[[str], None] = log.info,
        now: Callable[[], pd.Timestamp] = lambda: pd.Timestamp.now(tz="UTC"),
    ):
        self.config = config
        self.state_db = Path(state_db or resolve(config.data.state_db))
        self.store = StateStore(self.state_db)
        self.start = start
        self.stop_event = stop_event or threading.Event()
        self.say = say
        self.now = now
        self.key = live_key(config)
        _quiet_client_logs()
        self.gateway = gateway_address(config)
        self.source = DatabentoSource(config, cache_dir=resolve(config.data.cache_dir))
        self.symbols = [*config.universe.parents, config.universe.underlying_parent]
        interval = pd.Timedelta(minutes=config.schedule.interval_minutes)
        self.recorder = LiveRecorder(
            self.source.cache_dir,
            config.universe.dataset,
            self.symbols,
            interval,
            pd.Timedelta(seconds=config.live.record_grace_seconds),
        )
        self.monitor = FlashMonitor(config, self.source, BaselineStore(self.state_db), say)
        self.channels = enabled_channels(config)
        self.stats = LiveStats()
        self._parent_of: dict[int, str] = {}
        self._last_option: pd.Timestamp | None = None
        self._last_future: pd.Timestamp | None = None
        self._silent_since: pd.Timestamp | None = None
        self._aged_out = False  # the gateway said the start is older than its replay
        self._told_recorded: pd.Timestamp | None = None  # RECORDED_UNTIL as last written to the state database
        self._replays_completed = 0  # REPLAY_COMPLETED messages of the current gateway session
        self._watermark: pd.Timestamp | None = None  # event time known passed without a record (heartbeats)
        self._silent: bool | None = None  # the no-options condition as last told to the state database

    # -- where to start -------------------------------------------------------------------
    def resume_point(self) -> pd.Timestamp:
        """`start`, else the end of the last window recorded, else the current session's open."""
        if self.start is not None:
            return self.start
        recorded = self.store.meta(RECORDED_UNTIL)
        if recorded:
            return pd.Timestamp(recorded)
        now = self.now()
        session = cal.session_of(now)
        if session is not None:
            return max(session[1], now - REPLAY_LIMIT)
        upcoming = cal.sessions(now.date(), now.date() + pd.Timedelta(days=7)).market_open
        return upcoming[upcoming > now].iloc[0]

    # -- the loop -------------------------------------------------------------------------
    def run(self) -> LiveStats:
        since = self.resume_point()
        failures = 0
        while not self.stop_event.is_set():
            try:
                got = self._session(since)
                failures = 0 if got else failures + 1
            except LiveRefused:
                raise
            except (BentoError, OSError) as exc:
                refused = refusal(str(exc), self.config)
                if refused is not None:
                    raise refused from None
                failures += 1
                log.warning("live: session failed (%s)", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            if self.stop_event.is_set():
                break
            since = self.recorder.recorded_until or since
            if self._aged_out:
                # Live replays the last 24 hours only: the window loop fills the gap from Historical.
                self._aged_out = False
                resume = max(since, self.now() - REPLAY_LIMIT)
                self.say(
                    f"live: {since:%Y-%m-%d %H:%M}Z is past Live's replay; streaming from "
                    f"{resume:%Y-%m-%d %H:%M}Z, the gap before it is the window loop's (Historical)"
                )
                since = resume
            self.recorder.forget_from(since)
            self.monitor.forget_after(since)
            self.stats.last_event = since  # the replay's records are judged again as they come
            self._watermark = None
            self.stats.reconnects += 1
            delay = backoff_seconds(1.0, max(failures - 1, 0), self.config.live.reconnect_max_seconds)
            self.say(f"live: connection lost; reconnecting in {delay:.0f} s, replaying from {since:%Y-%m-%d %H:%M:%S}Z")
            self.stop_event.wait(delay)
        return self.stats

    def _client(self, since: pd.Timestamp) -> db.Live:
        host, port = self.gateway
        client = db.Live(
            key=self.key,
            gateway=host,
            port=port,
            reconnect_policy="none",  # its reconnect leaves a gap: ours replays from the last window recorded
            heartbeat_interval_s=self.config.live.heartbeat_seconds,
        )
        for schema in SCHEMAS:
            client.subscribe(
                self.config.universe.dataset, schema, self.symbols, stype_in="parent", start=int(since.value)
            )
        return client

    def _session(self, since: pd.Timestamp) -> bool:
        """One gateway session from `since` until it closes or `stop_event`; True when data flowed."""
        self._ensure_session(since)
        records: queue.SimpleQueue = queue.SimpleQueue()
        errors: list[BaseException] = []
        client = self._client(since)
        client.add_callback(records.put, errors.append)
        self.stats.sessions += 1
        client.start()
        self.say(
            f"live: streaming {len(self.symbols)} parents from {client.gateway}:{client.port}, "
            f"replaying from {since:%Y-%m-%d %H:%M:%S}Z"
        )
        flowed = False
        self._replays_completed = 0
        every = self.config.live.flash_every_seconds
        try:
            while not self.stop_event.is_set():
                batch = _drain(records, every)
                if batch:
                    flowed = self._take(batch) or flowed
                self._tick()
                if not client.is_connected() and records.empty():
                    break
        finally:
            client.terminate()
        try:
            client.block_for_close(timeout=5)
        except BentoError as exc:
            if not self.stop_event.is_set():
                raise
            log.debug("live: closed (%s)", exc)
        if errors:
            raise BentoError(str(errors[0]))
        return flowed

    def _ensure_session(self, ts: pd.Timestamp) -> None:
        """Begin the flash monitor on the session holding `ts` (or the next one), after judging
        the one it leaves to its close."""
        session = cal.session_of(ts)
        if session is not None:
            day = session[0]
        else:
            days = cal.sessions(ts.date(), ts.date() + pd.Timedelta(days=7))
            day = days.index[days.market_open > ts][0]
        if self.monitor.trade_date == day:
            return
        if self.monitor.trade_date is not None:
            self._send(self.monitor.judge(self.monitor.market_close))
        try:
            self.monitor.begin(day, ts)
            self.source.replay.forget_decoded()  # the monitor keeps the session's chain; the raw frames go
        except NqflowError as exc:
            # no lookback or no chain yet: flash alerts wait for the session's definitions
            self.say(f"live: cannot begin session {day} yet ({exc}); trying again with the next records")
            self.monitor.trade_date = None

    # -- records ---------------------------------------------------------------------------
    def _take(self, batch: list) -> bool:
        """Sort a batch of stream records into the recorder and the monitor; True when it held data."""
        trades: list[bytes] = []
        data = False
        for record in batch:
            kind = type(record)
            if kind is dbn.TradeMsg:
                trades.append(bytes(record))
            elif kind is dbn.InstrumentDefMsg:
                self.recorder.add_day("definition", record.ts_event, bytes(record))
            elif kind is dbn.StatMsg:
                self.recorder.add_day("statistics", record.ts_event, bytes(record))
            elif kind is dbn.SymbolMappingMsg:
                self._parent_of[record.instrument_id] = record.stype_in_symbol
                continue
            elif kind is dbn.SystemMsg:
                self._system(record)
                continue
            elif kind is dbn.ErrorMsg:
                self._error(record)
                continue
            else:
                continue
            data = True
            self.stats.records += 1
        if trades:
            self._take_trades(b"".join(trades))
        return data

    def _take_trades(self, blob: bytes) -> None:
        raw = trades_frame(blob)
        ids = raw["instrument_id"].to_numpy()
        is_option = np.array([self._parent_of.get(int(i), "").endswith(".OPT") for i in ids], dtype=bool)
        ts = raw["ts_event"].to_numpy(dtype="datetime64[ns]").astype("int64")
        self.recorder.add_trades(blob, ts, is_option)
        self.stats.trades += len(raw)
        self.stats.option_trades += int(is_option.sum())
        last = pd.Timestamp(int(ts.max()), tz="UTC")
        # the latest seen, never moved back by a replay after a reconnect
        if is_option.any():
            self._last_option = _latest(self._last_option, int(ts[is_option].max()))
        if (~is_option).any():
            self._last_future = _latest(self._last_future, int(ts[~is_option].max()))
            if self._silent_since is None:  # silence is counted from the first futures print seen
                self._silent_since = pd.Timestamp(int(ts[~is_option].min()), tz="UTC")
        self.stats.last_event = max(self.stats.last_event or last, last)
        while len(raw):  # a batch may run into the next session (a fast replay)
            self._ensure_session(pd.Timestamp(int(ts.min()), tz="UTC"))
            if self.monitor.trade_date is None:
                return
            inside = ts < self.monitor.market_close.value
            self.monitor.add(raw[inside])
            raw, ts = raw[~inside].reset_index(drop=True), ts[~inside]

    def _system(self, record) -> None:
        if record.is_heartbeat():
            if self._replays_completed >= len(SCHEMAS):
                # Caught up with the market: the gateway's clock is event time now, so a quiet
                # market (the daily halt, the weekend) still closes the windows before it.
                self._watermark = _latest(self._watermark, int(record.ts_event))
            return
        if record.code == dbn.SystemCode.REPLAY_COMPLETED:
            self._replays_completed += 1
        if record.code == dbn.SystemCode.SLOW_READER_WARNING:
            self.stats.slow_reader_warnings += 1
            log.warning("live: the gateway says this reader is slow (%s); alerts may lag", record.msg)
        else:
            log.info("live: gateway: %s", record.msg)

    def _error(self, record) -> None:
        message = str(record.err)
        self.stats.errors.append(message)
        if record.code == dbn.ErrorCode.SYMBOL_RESOLUTION_FAILED:
            self.say(
                f"live: {message}; the session goes on without it: check universe.option_parents "
                f"(a product that lists nothing today is not an error)"
            )
        elif record.code == dbn.ErrorCode.REPLAY_DATA_AGED_OUT:
            self._aged_out = True
            self.say(f"live: {message}; the start is more than 24 hours back: the window loop fills it from Historical")
        else:
            log.error("live: gateway error: %s", message)

    # -- every flash interval ---------------------------------------------------------------
    def _tick(self) -> None:
        until = self.stats.last_event
        if until is None:
            return
        if self._watermark is not None and self._watermark > until:
            until = self._watermark
        self._record(until)
        alerts = self.monitor.judge(until)
        if alerts:
            self._send(alerts)
        self._watch_options(until)

    def _record(self, until: pd.Timestamp) -> None:
        written = self.recorder.write_due(until, lambda s, e: self.source.covers("trades", s, e))
        days = self.recorder.write_days(self.source.holds_day)
        for path in [*written, *days]:
            self.source.replay.add(path)
        if any(p.parent.parent.name == "definition" for p in days):
            self.monitor.refresh_definitions()
            self.source.replay.forget_decoded()
        self.stats.files += len(written) + len(days)
        recorded = self.recorder.recorded_until
        if recorded is not None and recorded != self._told_recorded:  # a write only when a window closed
            self.store.set_meta(RECORDED_UNTIL, recorded.isoformat())
            self._told_recorded = recorded

    def _send(self, alerts: list[Alert]) -> None:
        if not alerts:
            return
        now = self.now()
        new = self.store.record_alerts(alerts, self.channels, now.isoformat())
        self.stats.alerts += len(new)
        deliver_pending(self.store, self.config, now)

    def _watch_options(self, until: pd.Timestamp) -> None:
        """The no-options health condition, by event time over open market; the state database
        is told only when the condition starts or ends."""
        futures_flowing = self._last_future is not None and until - self._last_future < pd.Timedelta(minutes=1)
        if not futures_flowing or cal.session_of(until) is None:
            return  # a quiet or closed market says nothing about the licence
        since = self._last_option or self._silent_since
        quiet = (until - since).total_seconds() / 60.0 if since is not None else 0.0
        silent = quiet >= self.config.live.max_silent_minutes
        if silent == self._silent:
            return
        self._silent = silent
        conditions = (
            [
                health.Condition(
                    NO_OPTIONS,
                    health.Verdict.DEGRADED,
                    "live feed carries no options",
                    f"futures are streaming but no NQ option record has arrived for {quiet:.0f} min of open market "
                    f"(to {until:%Y-%m-%d %H:%M}Z): the account's live licence probably lacks CME options; the windows "
                    f"are pulled from Historical meanwhile (later). Ask Databento to add CME options to the licence",
                )
            ]
            if silent
            else []
        )
        now = self.now()
        raised, cleared = self.store.update_health(conditions, now.isoformat(), scope="live")
        alerts = [health.health_alert(c, at, now) for c, at in raised]
        alerts += [health.health_alert(health.from_row(row), at, now, cleared=True) for row, at in cleared]
        for alert in alerts:
            self.say(f"live: health: {alert.symbol}")
        if alerts:
            self.store.record_alerts(alerts, self.channels, now.isoformat())
            deliver_pending(self.store, self.config, now)


def _latest(known: pd.Timestamp | None, ts_ns: int) -> pd.Timestamp:
    ts = pd.Timestamp(ts_ns, tz="UTC")
    return ts if known is None or ts > known else known


def _drain(records: queue.SimpleQueue, wait: float) -> list:
    """Whatever arrived within `wait` seconds (at least the first record, if one comes)."""
    batch = []
    try:
        batch.append(records.get(timeout=wait))
        while len(batch) < MAX_BATCH:
            batch.append(records.get_nowait())
    except queue.Empty:
        pass
    return batch


def run_live(
    config: Config,
    state_db: Path | None = None,
    start: pd.Timestamp | None = None,
    say: Callable[[str], None] = log.info,
) -> LiveStats:
    """`scheduler.py live`: one instance per state database, until SIGTERM / SIGINT."""
    check_live_config(config)
    runner = LiveRunner(config, state_db, start, say=say)
    lock = FileLock(str(runner.state_db) + ".live.lock")
    with sole_instance(lock, "`scheduler.py live`", "stream", runner.stop_event) as received:
        stats = runner.run()
    s = runner.stats
    say(
        f"nqflow live stopped{' on ' + received[0] if received else ''}: {s.records:,} records "
        f"({s.option_trades:,} option trades), {s.alerts} flash alert(s), {s.files} file(s) recorded, "
        f"{s.reconnects} reconnect(s), {s.slow_reader_warnings} slow-reader warning(s); recorded up to "
        f"{runner.recorder.recorded_until or 'nothing yet'}"
    )
    return stats


def check_live_config(config: Config) -> None:
    """Live feeds the Databento cache the windows read: refuse any other source in one line."""
    if config.data.source != "databento":
        raise ConfigError(
            f"live streaming records into the Databento cache, which data.source {config.data.source!r} does not "
            f'read: set data.source = "databento" (or leave databento.live off)'
        )
    gateway_address(config)


def live_thread(config: Config, state_db: Path, stop_event: threading.Event, say: Callable[[str], None]):
    """`run` with ``databento.live = true``: the stream beside the window loop, on a thread of its
    own; a refusal (a bad key, no licence) says so once and leaves the loop polling."""

    def body() -> None:
        try:
            LiveRunner(config, state_db, stop_event=stop_event, say=say).run()
        except NqflowError as exc:
            say(f"live: stopped, the window loop goes on polling Historical: {exc}")
        except Exception:  # a live failure never takes the window loop down
            log.exception("live: stopped by an unexpected error; the window loop goes on polling Historical")

    thread = threading.Thread(target=body, name="nqflow-live", daemon=True)
    thread.start()
    return thread
