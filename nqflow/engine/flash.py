"""Flash alerts: orders, sweeps, packages and worked orders judged the moment they are complete.

The live path (`nqflow.ops.live`) feeds the session's fills here as they stream in, and asks
`FlashMonitor.judge` for the alerts complete by an event time. Completion is by event time,
never the wall clock: an event whose ``event_time`` plus ``sweep_span_ms`` is at or before the
latest ``ts_event`` received can no longer change (a sweep's members are within the span of its
first order; an order's membership of a sweep, and so whether it is an alert of its own or a
worked order's child, is settled by then; a package's legs print at one ``ts_event``).

The judging is the window notebook's own: `nqflow.engine.detect.detect_windows` over the
session's windows in the worked-order lookback before the window and the window so far, with
the slot's expected volume from the same baseline. Event alerts are judged on what had traded
when they were complete (`nqflow.engine.detect`), so a flash alert equals the notebook's alert
for the same event field for field, with the same stable id: recorded first, the notebook's
finds it already in the outbox and nothing is sent twice. Volume surges keep their window (the
notebook raises them); the baseline is read, never built here (building it pulls whole
sessions): without history, flash alerts flow with their surprise not scored, and one line says
so.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from nqflow.alerts import Alert, Kind
from nqflow.config import Config
from nqflow.engine.baseline import BaselineStore, window_keys
from nqflow.engine.detect import WINDOW, evaluate
from nqflow.engine.features import Features, concat_features, market_features, with_expected
from nqflow.engine.gex import session_walls
from nqflow.engine.worked import lookback
from nqflow.errors import DataError
from nqflow.market import hours as cal
from nqflow.market.frames import (
    TRADE_COLUMNS,
    ClassifiedFills,
    DataSource,
    classify_fills,
    empty_frame,
    tidy_trades,
    window_from,
)

log = logging.getLogger(__name__)

#: The kinds a flash alert can be: events complete at one print. Surges need their whole window.
FLASH_KINDS = frozenset({Kind.LARGE_ORDER, Kind.SWEEP, Kind.STRATEGY, Kind.WORKED_ORDER})


@dataclass
class _Chunk:
    """Consecutive windows featured in one call: their starts, features and expected volumes."""

    starts: list[pd.Timestamp]
    features: Features
    expected: list[pd.DataFrame]


class FlashMonitor:
    """One session at a time: its chain, open interest and spread legs from `source` (the
    Databento cache, pulled once a day like the notebook's), the fills so far, and what was
    judged. `say` gets the lines a user should read (no history yet, a new session)."""

    def __init__(
        self, config: Config, source: DataSource, baseline: BaselineStore, say: Callable[[str], None] = log.info
    ):
        self.config = config
        self.source = source
        self.baseline = baseline
        self.say = say
        self.span = pd.Timedelta(milliseconds=config.thresholds.sweep_span_ms)
        self.interval = pd.Timedelta(minutes=config.schedule.interval_minutes)
        self.trade_date: dt.date | None = None
        self.judged_until: pd.Timestamp | None = None
        self._fills: list[pd.DataFrame] = []
        self._judged: set[str] = set()
        self._chunks: list[_Chunk] = []  # complete windows' features, kept: no print can still land in them
        # (ts_event ns, is an option, premium, instrument-and-side code) of every fill so far, for the gate
        self._prints: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    # -- the session ----------------------------------------------------------------------
    def begin(self, trade_date: dt.date, since: pd.Timestamp) -> None:
        """Start `trade_date`'s session with the stream resuming at `since`: the fills of the
        lookback before it are read from the source (the cache the stream recorded, else
        Historical), so a restart judges worked orders as an unbroken stream would."""
        open_, close = cal.sessions(trade_date, trade_date).iloc[0][["market_open", "market_close"]]
        self.trade_date, self.market_open, self.market_close = trade_date, open_, close
        self.chain = self.source.chain(trade_date)
        self._chain_by_id = self.chain.set_index("instrument_id")
        self.open_interest = self.source.open_interest(trade_date)
        self.legs = self.source.spread_legs(trade_date)
        self._fills, self._judged, self._chunks, self._prints = [], set(), [], []
        self.judged_until = max(since, open_)
        earliest = max(open_, self._window_start(self.judged_until) - lookback(self.config.thresholds))
        if earliest < self.judged_until:
            try:
                self._keep(self.source.trades(earliest, self.judged_until))
            except DataError as exc:
                self.say(
                    f"live: the session's fills before {self.judged_until:%H:%M}Z cannot be read ({exc}); "
                    f"a worked order begun before it is judged on its children from then on"
                )
        history = self.baseline.expected(trade_date, [0], self.config.thresholds.baseline_sessions)[0]
        sessions = int(history["history_sessions"].max()) if len(history) else 0
        self.say(
            f"live: session {trade_date} from {self.judged_until:%Y-%m-%d %H:%M:%S}Z"
            + (
                ""
                if sessions
                else "; no volume history yet: flash alerts flow with their surprise not scored, and volume "
                "surges wait for history (the window notebooks build it)"
            )
        )

    def refresh_definitions(self) -> None:
        """Re-read the chain after new definitions reached the cache (an option listed intraday)."""
        if self.trade_date is not None:
            self.chain = self.source.chain(self.trade_date)
            self._chain_by_id = self.chain.set_index("instrument_id")
            self.legs = self.source.spread_legs(self.trade_date)

    def add(self, raw_trades: pd.DataFrame) -> pd.DataFrame:
        """Take streamed trade records (ts_event, instrument_id, price, size, side) of this
        session; returns them tidy (`nqflow.market.frames.tidy_trades`)."""
        tidy = tidy_trades(raw_trades, self._chain_by_id) if len(raw_trades) else empty_frame(TRADE_COLUMNS)
        self._keep(tidy)
        return tidy

    def _keep(self, tidy: pd.DataFrame) -> None:
        if len(tidy):
            self._fills.append(tidy)
            side = tidy["side"].to_numpy(dtype=object)
            self._prints.append(
                (
                    tidy["ts_event"].to_numpy(dtype="datetime64[ns]").astype("int64"),
                    tidy["put_call"].isin(["C", "P"]).to_numpy(dtype=bool),
                    tidy["premium_usd"].to_numpy(dtype=float, na_value=0.0),
                    tidy["instrument_id"].to_numpy(dtype="int64") * 4 + (side == "B") + 2 * (side == "A"),
                )
            )

    def forget_after(self, ts: pd.Timestamp) -> None:
        """Drop fills at or after `ts`: the stream is about to replay them (a reconnect)."""
        fills = self.fills()
        self._fills, self._prints = [], []
        self._keep(fills[fills["ts_event"] < ts].reset_index(drop=True))

    def fills(self) -> pd.DataFrame:
        if len(self._fills) > 1:
            fills = pd.concat(self._fills, ignore_index=True)
            self._fills = [fills.sort_values(["ts_event", "instrument_id"], kind="stable", ignore_index=True)]
        return self._fills[0].reset_index(drop=True) if self._fills else empty_frame(TRADE_COLUMNS)

    # -- judging ------------------------------------------------------------------------
    def judge(self, until: pd.Timestamp) -> list[Alert]:
        """The event alerts complete at `until` (the latest ts_event received) not given before,
        each exactly as the window notebook will give it."""
        if self.trade_date is None or self.judged_until is None or until <= self.judged_until:
            return []
        until = min(until, self.market_close)
        if not self._could_complete(until):
            self.judged_until = until
            self.warm(until)
            return []
        # Events completing in (judged_until, until] start in (judged_until - span, until - span].
        first = self._window_start(max(self.judged_until - self.span, self.market_open))
        last = self._window_start(until - pd.Timedelta(1))
        since = max(self.market_open, first - lookback(self.config.thresholds))
        batch = [
            (s, e)
            for s, e in cal.session_windows(self.trade_date, self.config.schedule.interval_minutes)
            if since <= s <= last
        ]
        fills = classify_fills(self.fills(), self.config.universe.products)
        cached = {start for chunk in self._chunks for start in chunk.starts}
        todo = [(s, e) for s, e in batch if s not in cached and e + self.span <= until]
        if todo:  # complete windows not featured yet: in one call (a fast replay brings many), then kept
            self._chunks.append(self._featured(todo, until, fills))
        self._chunks = sorted((c for c in self._chunks if c.starts[-1] >= since), key=lambda c: c.starts[0])
        pieces = [c for c in self._chunks if c.starts[0] <= last]
        in_progress = [(s, e) for s, e in batch if s not in cached and e + self.span > until]
        if in_progress:
            pieces.append(self._featured(in_progress, until, fills))
        starts = [start for piece in pieces for start in piece.starts]
        if starts != sorted(starts):  # chunks interleaved (never so far): feature the batch afresh, in order
            complete = [(s, e) for s, e in batch if e + self.span <= until]
            self._chunks = [self._featured(complete, until, fills)] if complete else []
            pieces = [*self._chunks, *pieces[-1:]] if in_progress else list(self._chunks)
            starts = [start for piece in pieces for start in piece.starts]
        lookback_windows = sum(start < first for start in starts)  # read for worked orders, not judged
        expected = [
            slot_expected if start >= first else None
            for piece in pieces
            for start, slot_expected in zip(piece.starts, piece.expected)
        ]
        parts = [piece.features for piece in pieces]
        # The window notebook's two stages (`detect_windows`), the features of windows that
        # can no longer change kept from the last call: only the window so far is featured again.
        features = with_expected(concat_features(parts), expected)
        evaluation = evaluate(features, self.config)
        self.judged_until = until
        alerts = []
        for record, window in zip(evaluation.records, evaluation.alerts[WINDOW].to_numpy()):
            if window < lookback_windows or record["kind"] not in FLASH_KINDS:
                continue
            complete = pd.Timestamp(record["event_time"]) + self.span <= until
            if complete and record["alert_id"] not in self._judged:
                self._judged.add(record["alert_id"])
                alerts.append(Alert.from_json(record))
        return alerts

    def _featured(
        self, bounds: list[tuple[pd.Timestamp, pd.Timestamp]], until: pd.Timestamp, fills: ClassifiedFills
    ) -> _Chunk:
        """Windows' features as of `until` in one feature-stage call, with each window's slot
        expected volume for the keys it has traded (one baseline query)."""
        walls = session_walls(self.source, self.trade_date)  # type: ignore[arg-type]  # set by begin
        windows = [
            window_from(
                start,
                end,
                self.trade_date,  # type: ignore[arg-type]  # set by begin
                fills.between(start, min(end, until + pd.Timedelta(1))),
                self.chain,
                self.open_interest,
                self.legs,
                walls=walls,
            )
            for start, end in bounds
        ]
        slots = [cal.slot_of(start, self.market_open) for start, _ in bounds]
        by_slot = self.baseline.expected(
            self.trade_date,  # type: ignore[arg-type]
            sorted(set(slots)),
            self.config.thresholds.baseline_sessions,
            {slot: window_keys(w.trades) for slot, w in zip(slots, windows)},
        )
        return _Chunk(
            [start for start, _ in bounds], market_features(windows, self.config), [by_slot[s] for s in slots]
        )

    def _could_complete(self, until: pd.Timestamp) -> bool:
        """Whether any event can complete in (judged_until, until]: a sound bound, so most calls
        skip the two stages. Such an event's prints lie in (judged_until - span, until] and hold
        ``large_premium_usd`` between them (an order, sweep or package), or it is a worked order
        whose side of one option holds that much over the worked span before its crossing child."""
        t = self.config.thresholds
        if not self._prints or self.judged_until is None:
            return False
        if len(self._prints) > 1:
            parts = [np.concatenate(column) for column in zip(*self._prints)]
            order = np.argsort(parts[0], kind="stable")
            self._prints = [(parts[0][order], parts[1][order], parts[2][order], parts[3][order])]
        ts, options, premium, keys = self._prints[0]
        reach = self.span + pd.Timedelta(minutes=t.worked_max_span_minutes)
        lo, mid, hi = np.searchsorted(
            ts, [(self.judged_until - reach).value, (self.judged_until - self.span).value, until.value], side="right"
        )
        recent = np.flatnonzero(options[mid:hi]) + mid
        if not len(recent):
            return False
        # an order, sweep or package: its prints within one span hold the threshold
        opt_ts, opt_premium = ts[recent], premium[recent]
        cum = np.concatenate([[0.0], np.cumsum(opt_premium)])
        ends = np.searchsorted(opt_ts, opt_ts + self.span.value, side="right")
        if float((cum[ends] - cum[:-1]).max()) >= t.large_premium_usd:
            return True
        # a worked order: one option's side holds it over the worked span before a recent print
        rows = np.flatnonzero(options[lo:hi] & np.isin(keys[lo:hi], np.unique(keys[recent]))) + lo
        order = np.lexsort((ts[rows], keys[rows]))
        rows = rows[order]
        at = ts[rows] - ts[rows].min()
        if len(rows) and int(at.max()) >= 1 << 46:
            return True  # too long a stretch to code below: judge it
        rank = np.unique(keys[rows], return_inverse=True)[1].astype("int64")
        codes = (rank << 46) + at  # rows sorted by key, then time: one sortable code
        cum = np.concatenate([[0.0], np.cumsum(premium[rows])])
        span_ns = pd.Timedelta(minutes=t.worked_max_span_minutes).value
        first = np.searchsorted(codes, (rank << 46) + np.maximum(at - span_ns, 0), side="left")
        return bool(((cum[1:] - cum[first]) >= t.large_premium_usd).any())

    def warm(self, until: pd.Timestamp) -> None:
        """Feature the complete windows of the lookback not featured yet (a quiet moment's work),
        so the judging that follows a large print pays for the window so far only."""
        if self.trade_date is None:
            return
        since = max(self.market_open, self._window_start(until) - lookback(self.config.thresholds))
        cached = {start for chunk in self._chunks for start in chunk.starts}
        todo = [
            (s, e)
            for s, e in cal.session_windows(self.trade_date, self.config.schedule.interval_minutes)
            if since <= s and e + self.span <= until and s not in cached
        ]
        if todo:
            self._chunks.append(
                self._featured(todo, until, classify_fills(self.fills(), self.config.universe.products))
            )

    def _window_start(self, ts: pd.Timestamp) -> pd.Timestamp:
        return self.market_open + ((ts - self.market_open) // self.interval) * self.interval
