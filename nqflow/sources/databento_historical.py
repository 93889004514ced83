"""The Databento Historical API as a data source, behind an on-disk DBN cache.

Every pull is written as a zstd DBN file under ``<cache_dir>/<dataset>/<schema>/<trade date>/``
and read back by the same `ReplaySource` that reads the bundled sample, so a window, a
threshold-lab replay or a re-run never pays for the same data twice, and
``--source replay --data-dir <cache_dir>`` replays what was fetched with no key at all.

What is pulled (``stype_in="parent"``, all of ``universe.option_parents`` plus
``universe.underlying_parent`` in one request):
- trades: per window (or per session when the baseline is built);
- definitions and open-interest statistics: once per trading day, from the start of the
  UTC day the session opens on, because Databento replays the full definition set at the
  start of each UTC day. Definitions are topped up when a window trades an instrument the
  cached ones do not know (an option listed during the session).

Universe check: the first time a trading day's definitions are pulled, the definitions of every
NQ option product *not* watched (the rest of the 26, and the micro products unless opted in) are
asked for too, in a request of their own that is not cached as data. Products that list options
that day are named once, with the line to add to config/monitoring.toml; a marker under
``<cache_dir>/<dataset>/universe/`` keeps the check to once per day across processes.

Guards:
- nothing past the dataset's available end (``metadata.get_dataset_range``) is requested:
  such a window raises `DataNotYetAvailable` and is tried again later, never read as empty;
- a pull longer than one schedule interval is priced first (``metadata.get_cost``) and
  refused above ``databento.budget_usd``;
- 429 (honouring Retry-After), 5xx, timeouts and dropped connections are retried with
  exponential backoff and full jitter (tenacity); 401/403 and other 4xx are one-line errors;
- zero option trades in a window while CME Globex is open is a data problem (a wrong
  symbol, a missing entitlement, a feed gap), not a quiet market.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import time
import uuid
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import databento as db
import pandas as pd
import requests
from databento.common.error import BentoError, BentoHttpError, BentoWarning
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
)

from nqflow.config import Config
from nqflow.errors import BudgetExceeded, CredentialsError, DataError, DataNotYetAvailable, NqflowError
from nqflow.market import hours as cal
from nqflow.market.frames import (
    future_fills,
    option_fills,
    session_bounds,
    time_range,
    undefined_fills,
    unwatched_message,
)
from nqflow.products import MICRO_NQ_OPTION_PRODUCTS, NQ_OPTION_PRODUCTS
from nqflow.retry import backoff_seconds, honour_retry_after, retry_after_seconds
from nqflow.sources.dbn import check_complete_dbn, open_dbn, read_dbn
from nqflow.sources.replay import ReplaySource

log = logging.getLogger(__name__)


def _drop_client_warnings() -> None:
    """Drop the `BentoWarning`s the Historical client raises at this module's calls.

    The client turns its gateway's warning header into `warnings.warn`. Catching them per call
    (`warnings.catch_warnings`) is process-wide and not thread-safe: beside the live stream's
    thread, one thread's exit restored the other's filters and the warning reached stderr. The
    one such warning nqflow acts on, parents that resolve to nothing, is read from the DBN
    answer's metadata instead (`_pull`), so nothing rests on the warning. The filter is put back
    before every call, since a `catch_warnings` elsewhere (pytest's own, for one) restores the
    filters it found; a thread inside its own `catch_warnings` at that instant can still let one
    through to stderr, but never swaps this thread's handlers (the per-call catch did)."""
    warnings.filterwarnings("ignore", category=BentoWarning, module=rf"{re.escape(__name__)}\Z")


KEYS_URL = "https://databento.com/portal/keys"


def _status(exc: BaseException) -> int | None:
    return exc.http_status if isinstance(exc, BentoHttpError) else None


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: rate limits, server errors, timeouts, connections dropped mid-answer."""
    status = _status(exc)
    if status is not None:
        return status in (408, 429) or status >= 500
    if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        return True
    # The client wraps a connection dropped while streaming as a plain BentoError.
    return isinstance(exc, BentoError) and "streaming" in str(exc).lower()


def _outcome(state: RetryCallState) -> str:
    """What a failed attempt raised, in one line (`describe`)."""
    error = state.outcome.exception() if state.outcome is not None else None
    return describe(error) if error is not None else "no exception"


def describe(exc: BaseException) -> str:
    """One line for any client failure, without the response body's noise."""
    status = _status(exc)
    if status is not None:
        message = getattr(exc, "message", None) or getattr(exc, "json_body", None) or ""
        return f"HTTP {status} {message}".strip()
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".strip()


class DatabentoSource:
    """`DataSource` over ``databento.Historical`` with a DBN file cache (see the module docstring)."""

    name = "databento"

    def __init__(
        self,
        config: Config,
        cache_dir: str | Path,
        client: db.Historical | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.config = config
        self.settings = config.databento
        self.dataset = config.universe.dataset
        self.symbols = [*config.universe.parents, config.universe.underlying_parent]
        self.client = client or self._client()
        for api in (self.client.timeseries, self.client.metadata):
            api.TIMEOUT = self.settings.timeout_seconds  # type: ignore[assignment]  # float seconds work; default 100 s
        self.cache_dir = Path(cache_dir) / self.dataset
        self.replay = ReplaySource(self.cache_dir, allow_empty=True)
        self._sleep = sleep
        self._range: tuple[float, dict] | None = None
        self._warned: set[str] = set()
        self.requests = 0  # HTTP requests made (all endpoints), for tests and the status line

    def _client(self) -> db.Historical:
        env = self.settings.api_key_env
        key = os.environ.get(env, "").strip()
        if not key:
            raise CredentialsError(
                f"{env} is not set; export {env}=db-... with a key from {KEYS_URL} "
                f"(or use --source replay for the bundled sample)"
            )
        try:
            return db.Historical(key=key, gateway=self.settings.gateway or db.HistoricalGateway.BO1)
        except ValueError as exc:
            raise CredentialsError(f"cannot use the key in {env} or gateway {self.settings.gateway!r}: {exc}") from None

    # -- HTTP with retries ----------------------------------------------------------
    def _wait(self, state: RetryCallState) -> float:
        backoff = backoff_seconds(
            self.settings.retry_base_seconds, state.attempt_number - 1, self.settings.retry_max_seconds, jitter=True
        )
        headers = getattr(state.outcome.exception(), "headers", None) if state.outcome else None
        server = retry_after_seconds(headers.get("Retry-After")) if headers else None
        return honour_retry_after(backoff, server, self.settings.retry_max_seconds)

    def _call(self, what: str, func: Callable, *args, **kwargs):
        """One API call with retries; every failure leaves as a one-line nqflow error."""

        def before_sleep(state: RetryCallState) -> None:
            log.warning(
                "Databento %s failed (%s); retry %d of %d in %.1fs",
                what,
                _outcome(state),
                state.attempt_number,
                self.settings.max_retries,
                state.next_action.sleep if state.next_action else 0.0,
            )

        def attempt():
            self.requests += 1
            _drop_client_warnings()
            return func(*args, **kwargs)

        retrying = Retrying(
            retry=retry_if_exception(is_transient),
            wait=self._wait,
            sleep=self._sleep,
            stop=stop_after_attempt(self.settings.max_retries + 1),
            reraise=True,
            before_sleep=before_sleep,
        )
        env = self.settings.api_key_env
        try:
            return retrying(attempt)
        except (BentoError, requests.RequestException) as exc:
            status = _status(exc)
            if status in (401, 403):
                raise CredentialsError(
                    f"Databento rejected the key in {env} ({describe(exc)}); set {env} to a valid key from {KEYS_URL}"
                ) from None
            if is_transient(exc):
                raise DataError(
                    f"Databento {what} still failing after {self.settings.max_retries + 1} tries "
                    f"({describe(exc)}); the window will be retried on a later tick"
                ) from None
            raise DataError(
                f"Databento refused {what} ({describe(exc)}); check universe.option_parents and the date range"
            ) from None

    def _warn_once(self, message: str) -> None:
        """A server's word (a parent symbol that resolves to nothing) goes to the log once."""
        key = message.split(": ", 1)[-1]
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s", message)

    # -- availability and cost ------------------------------------------------------
    def available_end(self, schema: str) -> pd.Timestamp:
        """The dataset's available end for `schema`, asked at most every `range_cache_seconds`."""
        now = time.monotonic()
        if self._range is None or now - self._range[0] > self.settings.range_cache_seconds:
            answer = self._call("get_dataset_range", self.client.metadata.get_dataset_range, dataset=self.dataset)
            self._range = (now, answer)
        answer = self._range[1]
        per_schema = answer.get("schema") or {}
        end = (per_schema.get(schema) or {}).get("end") or answer["end"]
        return pd.Timestamp(end).tz_convert("UTC") if pd.Timestamp(end).tzinfo else pd.Timestamp(end, tz="UTC")

    def published(self, end: pd.Timestamp) -> bool:
        """Whether trades up to `end` can be read: the cache holds the window ending there (the
        live stream recorded it), or Databento has published up to it (`available_end`)."""
        interval = pd.Timedelta(minutes=self.config.schedule.interval_minutes)
        if self.covers("trades", end - interval, end):
            return True
        if self.config.databento.live:
            self.replay.rescan()  # the stream, in another thread or process, may have written it since
            if self.covers("trades", end - interval, end):
                return True
        return end <= self.available_end("trades")

    def describe_end(self) -> str:
        """Where the published data ends, in words, for a window refused as not published yet."""
        return (
            f"Databento {self.dataset} trades are published up to {self.available_end('trades'):%Y-%m-%d %H:%M}Z "
            f"(without CME real-time licensing they run hours behind)"
        )

    def estimate_cost(self, schema: str, start: pd.Timestamp, end: pd.Timestamp) -> float:
        """Dollars Databento would bill for this pull (``metadata.get_cost``)."""
        return float(
            self._call(
                "get_cost",
                self.client.metadata.get_cost,
                dataset=self.dataset,
                symbols=self.symbols,
                stype_in="parent",
                schema=schema,
                start=start,
                end=end,
            )
        )

    def check_budget(self, pulls: Iterable[tuple[str, pd.Timestamp, pd.Timestamp]]) -> float:
        """Price a set of pulls; refuse the lot when it is over ``databento.budget_usd``."""
        pulls = [p for p in pulls if not self._cached(*p)]
        total = sum(self.estimate_cost(*p) for p in pulls)
        if total > self.settings.budget_usd:
            first, last = min(p[1] for p in pulls), max(p[2] for p in pulls)
            raise BudgetExceeded(
                f"Databento pull of {', '.join(sorted({p[0] for p in pulls}))} "
                f"{first:%Y-%m-%d %H:%M}Z-{last:%Y-%m-%d %H:%M}Z is estimated at ${total:,.2f}, "
                f"above databento.budget_usd=${self.settings.budget_usd:,.2f}; raise the budget "
                f"in config/monitoring.toml or pull a shorter range"
            )
        return total

    def prepare_sessions(self, days: Iterable[dt.date]) -> float:
        """Price (and refuse if over budget) the whole-session pulls a baseline build needs."""
        pulls = []
        for day in days:
            open_, close = session_bounds(day)
            pulls += [("trades", open_, close), *(self._day_pull(s, day) for s in ("definition", "statistics"))]
        return self.check_budget(pulls)

    # -- the cache --------------------------------------------------------------------
    def _cached(self, schema: str, start: pd.Timestamp, end: pd.Timestamp) -> bool:
        return self._uncovered(schema, start, end) is None

    def covers(self, schema: str, start: pd.Timestamp, end: pd.Timestamp) -> bool:
        """Whether the cache holds [start, end) of `schema` (no pull needed), as of the last scan."""
        return self._cached(schema, start, end)

    def holds_day(self, schema: str, trade_date: dt.date) -> bool:
        """Whether the cache holds `trade_date`'s pull of a day schema (definition, statistics)."""
        return self._day_cached(schema, trade_date)

    def _uncovered(self, schema: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.Timestamp | None:
        """Where the cached files of `schema`, taken together, stop covering [start, end) (None:
        they cover it all): a range over several cached windows is served without a pull, and a
        pull asks only from there on."""
        covered = start
        for f in sorted((f for f in self.replay.files if f.schema == schema), key=lambda f: f.start):
            if f.start > covered:
                break
            covered = max(covered, f.end)
            if covered >= end:
                return None
        return covered

    def _day_cached(self, schema: str, trade_date: dt.date) -> bool:
        folder = self.cache_dir / schema / str(trade_date)
        return folder.is_dir() and any(folder.glob("*.dbn.zst"))

    def _day_pull(self, schema: str, trade_date: dt.date) -> tuple[str, pd.Timestamp, pd.Timestamp]:
        open_, close = session_bounds(trade_date)
        return schema, open_.floor("D"), close

    def _pull(
        self,
        what: str,
        path: Path,
        schema: str,
        start: pd.Timestamp,
        end: pd.Timestamp,
        symbols: list[str],
        server_warnings: bool = True,
    ) -> None:
        """One ``timeseries.get_range`` into `path` (written whole or not at all), with retries."""
        partial = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.part"

        def pull():
            partial.unlink(missing_ok=True)  # the client refuses to overwrite, and a retry starts over
            return self.client.timeseries.get_range(
                dataset=self.dataset,
                symbols=symbols,
                stype_in="parent",
                schema=schema,
                start=start,
                end=end,
                path=partial,
            )

        try:
            self._call(what, pull)
            check_complete_dbn(partial)
            # The parents that resolved to nothing, from the answer's own metadata (the gateway's
            # warning header says the same through `warnings`, which this module leaves aside).
            missing = open_dbn(partial).metadata.not_found if server_warnings else []
            if missing:
                self._warn_once(
                    f"Databento {what}: symbols not found: {', '.join(missing)} (nothing listed under them "
                    f"in this range, as a fifth-week product outside a fifth week; a misspelt parent in "
                    f"universe.option_parents looks the same)"
                )
            partial.replace(path)
        finally:
            partial.unlink(missing_ok=True)

    def _fetch(self, schema: str, start: pd.Timestamp, end: pd.Timestamp, trade_date: dt.date) -> Path:
        """Pull [start, end) of one schema into the cache (atomically) and register the file."""
        available = self.available_end(schema)
        if end > available:
            raise DataNotYetAvailable(
                f"Databento {self.dataset} {schema} is published up to {available:%Y-%m-%d %H:%M:%S}Z; "
                f"{start:%Y-%m-%d %H:%M}Z-{end:%H:%M}Z is not available yet and will be tried again"
            )
        if end - start > pd.Timedelta(minutes=self.config.schedule.interval_minutes):
            self.check_budget([(schema, start, end)])
        folder = self.cache_dir / schema / str(trade_date)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{start:%Y%m%dT%H%M%S}-{end:%Y%m%dT%H%M%S}.dbn.zst"
        self._pull(f"{schema} {start:%Y-%m-%d %H:%M}Z-{end:%H:%M}Z", path, schema, start, end, self.symbols)
        self.replay.add(path)
        log.info("cached Databento %s %s", schema, path.relative_to(self.cache_dir))
        return path

    def _ensure_day(self, schema: str, trade_date: dt.date) -> None:
        if self._day_cached(schema, trade_date):
            return
        _, start, close = self._day_pull(schema, trade_date)
        available = self.available_end(schema)
        # Today's session is still open: take what is published; definitions are topped up later.
        end = min(close, available) if available > start else close
        self._fetch(schema, start, end, trade_date)
        if schema == "definition":
            self.check_universe(trade_date, start, end)

    def unwatched_parents(self) -> list[str]:
        """Parents of the NQ option products (micro ones included) that the universe leaves out."""
        watched = self.config.universe.products
        return [f"{code}.OPT" for code in (*NQ_OPTION_PRODUCTS, *MICRO_NQ_OPTION_PRODUCTS) if code not in watched]

    def check_universe(self, trade_date: dt.date, start: pd.Timestamp, end: pd.Timestamp) -> list[str]:
        """Products not watched that list options on `trade_date` (see the module docstring),
        named in the log once per day. Best effort: a failure here never fails the window, and
        the check is made again by the next process."""
        marker = self.cache_dir / "universe" / f"{trade_date}.json"
        if marker.exists():
            return json.loads(marker.read_text())["listed_unwatched"]
        parents = self.unwatched_parents()
        listed: list[str] = []
        if parents:
            marker.parent.mkdir(parents=True, exist_ok=True)
            path = marker.with_name(f"{trade_date}.definition.check")  # not *.dbn.zst: never read as data
            try:
                # parents that list nothing that day answer with a "not found" warning: expected here
                self._pull(
                    f"universe check {trade_date}", path, "definition", start, end, parents, server_warnings=False
                )
                definitions = read_dbn(path, "definition")
            except NqflowError as exc:
                log.warning("could not check %s for NQ option products not watched (%s)", trade_date, exc)
                return []
            finally:
                path.unlink(missing_ok=True)
            if len(definitions):
                options = definitions[definitions["instrument_class"].isin(["C", "P"])]
                listed = sorted(set(options["asset"].astype(str)) - set(self.config.universe.products))
            if listed:
                log.warning("%s: %s", trade_date, unwatched_message(listed, "are listed"))
        marker.write_text(json.dumps({"checked": parents, "listed_unwatched": listed}))
        return listed

    def _top_up_definitions(self, trade_date: dt.date, until: pd.Timestamp) -> None:
        self._top_up("definition", trade_date, until)

    def _top_up(self, schema: str, trade_date: dt.date, until: pd.Timestamp) -> None:
        """Pull what a day's cache lacks up to `until` (a day first cached while it was still going)."""
        known = [f for f in self.replay.files if f.schema == schema and f.path.parent.name == str(trade_date)]
        # A day first pulled right at its open can hold only an empty file (nothing published yet),
        # which no DBN scan lists: then the whole day so far is what it lacks.
        since = max((f.end for f in known), default=self._day_pull(schema, trade_date)[1])
        if until > since:
            self._fetch(schema, since, until, trade_date)

    # -- the DataSource interface ----------------------------------------------------
    def trades(self, start, end) -> pd.DataFrame:
        start, end = time_range(start, end)
        session = cal.session_of(start)
        trade_date = session[0] if session else start.date()
        if session:
            self._ensure_day("definition", trade_date)
        missing_from = self._uncovered("trades", start, end)
        if missing_from is not None:
            self._fetch("trades", missing_from, end, trade_date)
        fills = self.replay.trades(start, end)
        unknown = undefined_fills(fills)
        if session and len(unknown):
            log.info("%d fills of instruments without a cached definition; fetching new definitions", len(unknown))
            self._top_up_definitions(trade_date, end)
            fills = self.replay.trades(start, end)
        if session and cal.window_is_open(start, end) and option_fills(fills).empty:
            futures, unknown = len(future_fills(fills)), len(undefined_fills(fills))
            raise DataError(
                f"Databento returned no NQ option trades for {start:%Y-%m-%d %H:%M}Z-{end:%H:%M}Z "
                f"while CME Globex was open ({futures} futures trades, {unknown} on instruments without "
                f"a definition); this is a data problem, not a "
                f"quiet market: check universe.option_parents and your GLBX.MDP3 options entitlement"
            )
        return fills

    def chain(self, trade_date: dt.date) -> pd.DataFrame:
        self._ensure_day("definition", trade_date)
        return self.replay.chain(trade_date)

    def spread_legs(self, trade_date: dt.date) -> pd.DataFrame:
        self._ensure_day("definition", trade_date)
        return self.replay.spread_legs(trade_date)

    def open_interest(self, trade_date: dt.date) -> pd.DataFrame:
        self._ensure_day("statistics", trade_date)
        return self.replay.open_interest(trade_date)

    def statistics(self, trade_date: dt.date) -> pd.DataFrame:
        """The session's statistics; a day cached before its next-morning statistics were published
        is topped up to what is published now, so off-book readings never wait on a stale cache."""
        self._ensure_day("statistics", trade_date)
        _, _, close = self._day_pull("statistics", trade_date)
        self._top_up("statistics", trade_date, min(close, self.available_end("statistics")))
        return self.replay.statistics(trade_date)

    def sessions_available(self) -> list[dt.date]:
        """Trading days of the last 60 days held whole by the dataset (open after its start,
        closed before its available end)."""
        end = self.available_end("trades")
        assert self._range is not None  # available_end asked for it
        start = pd.Timestamp(self._range[1]["start"])
        start = start.tz_convert("UTC") if start.tzinfo else start.tz_localize("UTC")
        days = cal.sessions(end.date() - dt.timedelta(days=60), end.date())
        return [day for day, row in days.iterrows() if row.market_open >= start and row.market_close <= end]
