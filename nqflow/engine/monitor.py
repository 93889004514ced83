"""One monitoring window, end to end inside the process: load data, baseline, detect, record.

This is what the monitoring notebook calls; the scheduler never recomputes alerts outside
the notebook, it reads them back from the notebook's scraps.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from nqflow.config import Config
from nqflow.engine.baseline import (
    NO_KEYS,
    BaselineStore,
    ensure_history,
    keys_by,
    slot_volumes,
    window_keys,
)
from nqflow.engine.detect import Detection, detect_windows
from nqflow.engine.features import WindowBatch, batch_of_session, batch_of_windows
from nqflow.engine.gex import session_walls
from nqflow.engine.worked import lookback
from nqflow.errors import DataError
from nqflow.market import hours as cal
from nqflow.market.frames import (
    ClassifiedFills,
    DataSource,
    WindowData,
    classify_fills,
    front_futures,
    load_window,
    option_fills,
    window_from,
)
from nqflow.paths import REPO_ROOT, resolve  # noqa: F401  (re-exported for notebooks)
from nqflow.products import NQ_OPTION_PRODUCTS
from nqflow.sources import make_source  # noqa: F401  (re-exported for notebooks)


@dataclass
class WindowResult:
    window: WindowData
    detection: Detection

    @property
    def alerts(self) -> pd.DataFrame:
        return self.detection.alerts

    @property
    def summary(self) -> dict:
        return self.detection.summary


def run_window(
    config: Config,
    start,
    end,
    source: DataSource,
    baseline: BaselineStore | None = None,
    record_baseline: bool = True,
    available: list[dt.date] | None = None,
) -> WindowResult:
    """Detect one window. The window's own volumes are recorded into the baseline afterwards
    (idempotently), so the next session's baseline is kept up to date without re-downloading.

    A window of open market with no option trades raises DataError: on CME Globex that is a data
    problem (a missing file, an entitlement, a wrong universe), never a quiet market, so the
    window fails and is retried instead of being recorded as done and seen.

    The session's windows in the worked-order lookback before it are detected with it (their
    own alerts dropped), so a worked order crossing in this window is seen as a backtest sees it."""
    window = load_window(source, start, end, config.universe.products)
    if window.trade_date is not None and window.empty:
        raise DataError(
            f"no NQ option trades in {window.start:%Y-%m-%d %H:%M}Z-{window.end:%H:%M}Z while CME Globex "
            f"was open ({len(window.futures)} futures trades): a data problem, not a quiet market; check "
            f"that the data source covers this window and universe.option_parents"
        )
    if baseline is None:
        baseline = BaselineStore(resolve(config.data.state_db))
    expected = None
    if window.trade_date is not None:
        row = cal.sessions(window.trade_date, window.trade_date).iloc[0]
        slot = cal.slot_of(window.start, row.market_open)
        ensure_history(baseline, source, window.trade_date, config.thresholds.baseline_sessions, available)
        # after the history: the walls read the previous session's close, which it has just cached
        window.walls = session_walls(source, window.trade_date)
        expected = baseline.expected(
            window.trade_date, [slot], config.thresholds.baseline_sessions, {slot: window_keys(window.trades)}
        )[slot]
    earlier = earlier_windows(config, source, window)
    detection = detect_windows([*earlier, window], [None] * len(earlier) + [expected], config, keep=[len(earlier)])[0]
    if record_baseline and window.trade_date is not None and not window.empty:
        whole_slot = (window.end - window.start) == pd.Timedelta(minutes=cal.SLOT_MINUTES)
        if whole_slot:
            recorded = slot_volumes(recorded_fills(config, source, window), row.market_open)
            baseline.record(window.trade_date, [slot], recorded)
    return WindowResult(window, detection)


def watches_every_product(config: Config) -> bool:
    """Whether the universe watches every NQ option product (the default): the watched option
    fills are then every product's, which is what the baseline records (`recorded_fills`)."""
    return set(NQ_OPTION_PRODUCTS) <= set(config.universe.products)


def recorded_fills(config: Config, source: DataSource, window: WindowData) -> pd.DataFrame:
    """The option fills a window records into the baseline: every product's, as the history
    (`ensure_history`) and a backtest record whole sessions, so one slot's history never mixes
    two definitions. With every NQ option product watched those are the window's own fills; a
    universe that leaves products out reads the window's trades again, unfiltered."""
    if watches_every_product(config):
        return window.trades
    return option_fills(source.trades(window.start, window.end))


def earlier_windows(config: Config, source: DataSource, window: WindowData) -> list[WindowData]:
    """The windows of `window`'s session in the `nqflow.engine.worked.lookback` before it: a worked
    order's children in them count toward its total. Read from the source in one request (a
    Databento source pulls only what its cache lacks), never from an earlier process's memory,
    so a restarted monitor and a backtest see the same orders."""
    if window.trade_date is None:
        return []
    row = cal.sessions(window.trade_date, window.trade_date).iloc[0]
    since = max(window.start - lookback(config.thresholds), row.market_open)
    bounds = [
        (start, end)
        for start, end in cal.session_windows(window.trade_date, config.schedule.interval_minutes)
        if start >= since and end <= window.start
    ]
    if not bounds:
        return []
    fills = classify_fills(source.trades(bounds[0][0], bounds[-1][1]), config.universe.products)
    return [
        window_from(
            start,
            end,
            window.trade_date,
            fills.between(start, end),
            window.chain,
            window.open_interest,
            window.legs,
            walls=window.walls,
        )
        for start, end in bounds
    ]


@dataclass
class SessionWindows:
    """A session's windows from one read of its data, with each window's baseline slot: its
    classified fills (`fills`), the windows' bounds and the session's chain, open interest,
    spread legs and walls. `windows` cuts a frame per window on first use (what `load_window`
    gives, window by window); `batch` hands the feature stage the session without them."""

    trade_date: dt.date
    bounds: list[tuple[pd.Timestamp, pd.Timestamp]]
    slots: list[int]
    fills: ClassifiedFills | None = None
    chain: pd.DataFrame | None = None
    open_interest: pd.DataFrame | None = None
    legs: pd.DataFrame | None = None
    walls: dict[str, float] = field(default_factory=dict)
    #: the whole session's tidy fills (every product: what the baseline records), when loaded whole
    trades: pd.DataFrame | None = None

    @property
    def options(self) -> pd.DataFrame | None:
        """The session's watched option fills, from which `expected` takes the keys each window wants."""
        return self.fills.options if self.fills is not None else None

    @cached_property
    def windows(self) -> list[WindowData]:
        if self.fills is None or not self.bounds:
            return []
        cut = self.fills.split(self.bounds)
        return [
            window_from(
                start,
                end,
                self.trade_date,
                fills,
                self.chain,
                self.open_interest,
                self.legs,
                walls=self.walls,
                underlying=front,
            )
            for (start, end), fills, front in zip(self.bounds, cut, front_futures(cut))
        ]

    def batch(self) -> WindowBatch:
        """The session's windows for `nqflow.engine.features.market_features`, with no frame per
        window (`batch_of_session`): the features `windows` give, field for field."""
        if self.fills is None or not self.bounds:
            return batch_of_windows(self.windows)
        return batch_of_session(
            self.fills, self.bounds, self.trade_date, self.chain, self.open_interest, self.legs, self.walls
        )

    def expected(self, baseline: BaselineStore, max_sessions: int) -> pd.DataFrame:
        """Every window's expected volume from `baseline` (one query for the session), as one frame
        with ``window`` (`BaselineStore.expected_by_window`): the keys are mapped only here, so a
        backtest that loads a session for its features never pays for them."""
        bounds = self.bounds
        if self.options is None or not bounds:
            keys = NO_KEYS.assign(slot=pd.Series(dtype="int64"))
        else:
            keys = keys_by(self.options, _window_of(self.options, bounds, self.slots)).rename(columns={"group": "slot"})
        return baseline.expected_by_window(self.trade_date, self.slots, max_sessions, keys)


def _selected_windows(
    config: Config, trade_date: dt.date, window_filter=None
) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    return [
        (s, e)
        for s, e in cal.session_windows(trade_date, config.schedule.interval_minutes)
        if window_filter is None or window_filter(s, e)
    ]


def load_session(config: Config, trade_date: dt.date, source: DataSource) -> SessionWindows:
    """Every window of one session from one read of its data: the frames `load_window` gives,
    window by window (`SessionWindows.windows`, cut on first use). All of them: a window's
    worked orders read the windows before it."""
    row = cal.sessions(trade_date, trade_date).iloc[0]
    bounds = _selected_windows(config, trade_date)
    if not bounds:
        return SessionWindows(trade_date, [], [])
    # Classified once for the session, then cut per window: the same frames `load_window` gives.
    trades = source.trades(row.market_open, row.market_close)
    return SessionWindows(
        trade_date,
        bounds,
        [cal.slot_of(start, row.market_open) for start, _ in bounds],
        classify_fills(trades, config.universe.products),
        source.chain(trade_date),
        source.open_interest(trade_date),
        source.spread_legs(trade_date),
        session_walls(source, trade_date),
        trades,
    )


def run_session(
    config: Config,
    trade_date: dt.date,
    source: DataSource,
    baseline: BaselineStore,
    available: list[dt.date] | None = None,
    window_filter=None,
) -> list[WindowResult]:
    """Every window of one session, with the session's data and baseline read once.

    It gives exactly what `run_window(..., record_baseline=False)` gives window by window
    (tests compare them), without re-reading the data and the baseline for each of the
    session's ~92 windows. `window_filter(start, end)` picks the windows returned; every window
    is detected, as `run_window` detects the windows before its own: a worked order's children
    in windows left out still count toward its total.
    """
    if not _selected_windows(config, trade_date, window_filter):
        return []
    n = config.thresholds.baseline_sessions
    # The history first: it reads the previous sessions, whose close the session's walls need
    # (`session_walls`), so a Databento source pulls that close once, not twice.
    ensure_history(baseline, source, trade_date, n, available)
    session = load_session(config, trade_date, source)
    keep = [i for i, w in enumerate(session.windows) if window_filter is None or window_filter(w.start, w.end)]
    # Only the windows returned are cut from the batch (the cut is ~14 ms a window).
    detections = detect_windows(session.windows, session.expected(baseline, n), config, keep)
    return [WindowResult(session.windows[i], d) for i, d in zip(keep, detections)]


def _window_of(fills: pd.DataFrame, windows: list[tuple[pd.Timestamp, pd.Timestamp]], labels: list[int]) -> np.ndarray:
    """The label of the window each fill falls in (windows sorted, not overlapping), -1 for none."""
    starts = np.array([s.tz_convert(None) for s, _ in windows], dtype="datetime64[ns]")
    ends = np.array([e.tz_convert(None) for _, e in windows], dtype="datetime64[ns]")
    ts = fills["ts_event"].to_numpy(dtype="datetime64[ns]")
    index = starts.searchsorted(ts, side="right") - 1
    inside = (index >= 0) & (ts < ends[np.maximum(index, 0)])
    return np.where(inside, np.asarray(labels)[np.maximum(index, 0)], -1)
