"""Market data as tidy typed DataFrames: the DataSource interface, the frames every source
gives, and one window's data (`WindowData`) assembled from them.

The sources themselves live in `nqflow.sources` (a registry): `nqflow.sources.replay` reads a
folder of DBN files, `nqflow.sources.databento_historical` pulls the Historical API and caches
what it fetches as DBN files that the replay source reads.

Frames (all timestamps tz-aware UTC; prices in index points):
- option trades: ts_event, instrument_id, symbol, product, instrument_class, expiration,
  strike, put_call, price, size, side (B/A/N aggressor), multiplier, premium_usd
- spread trades: the same columns, for spread instruments (instrument_class T option spread,
  M mixed such as options against futures); a spread's price is its net price and may be negative
- chain: one row per instrument (options, futures and spreads) with its definition fields
- spread legs: one row per leg of each spread whose definition lists them (`spread_legs`)
- open interest: instrument_id, open_interest, ts_event
- underlying: ts_event, instrument_id, symbol, price, size, side
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Protocol

import numpy as np
import pandas as pd

from nqflow.errors import DataError
from nqflow.market import hours as cal
from nqflow.market.contracts import MICRO_NQ_POINT_VALUE_USD, NQ_POINT_VALUE_USD
from nqflow.products import MICRO_NQ_OPTION_PRODUCTS, NQ_OPTION_PRODUCTS

log = logging.getLogger(__name__)

#: DBN's sentinel for an undefined 32-bit integer field (e.g. contract_multiplier).
UNDEF_INT32 = 2_147_483_647
OPEN_INTEREST_STAT_TYPE = 9  # databento_dbn.StatType.OPEN_INTEREST
SETTLEMENT_STAT_TYPE = 3  # databento_dbn.StatType.SETTLEMENT_PRICE
SETTLEMENT_FINAL = 1  # stat_flags bit 0 of a settlement: final (else preliminary)


def final_settlements(statistics: pd.DataFrame) -> pd.DataFrame:
    """The settlement records of `statistics` that are final: a preliminary one is revised."""
    settlements = statistics[statistics["stat_type"] == SETTLEMENT_STAT_TYPE]
    return settlements[(settlements["stat_flags"] & SETTLEMENT_FINAL) != 0]


STATISTICS_COLUMNS = {
    "instrument_id": "int64",
    "stat_type": "int64",
    "price": "float64",
    "quantity": "float64",
    "stat_flags": "int64",
    "ts_event": "datetime64[ns, UTC]",
    "ts_ref": "datetime64[ns, UTC]",
}

TRADE_COLUMNS = {
    "ts_event": "datetime64[ns, UTC]",
    "instrument_id": "int64",
    "symbol": "string",
    "product": "string",
    "instrument_class": "string",
    "expiration": "datetime64[ns, UTC]",
    "strike": "float64",
    "put_call": "string",
    "price": "float64",
    "size": "int64",
    "side": "string",
    "multiplier": "float64",
    "premium_usd": "float64",
}
CHAIN_COLUMNS = {
    "instrument_id": "int64",
    "symbol": "string",
    "product": "string",
    "instrument_class": "string",
    "put_call": "string",
    "strike": "float64",
    "expiration": "datetime64[ns, UTC]",
    "underlying": "string",
    "underlying_id": "int64",
    "multiplier": "float64",
    "multiplier_source": "string",
}
LEG_COLUMNS = {
    "spread_id": "int64",
    "leg_index": "int64",
    "leg_instrument_id": "int64",
    "leg_sign": "int64",
    "leg_ratio": "int64",
    "leg_price": "float64",
    "leg_delta": "float64",
}
SPREAD_CLASSES = ("T", "M")
#: Known dollar-per-point values by product code, used only when a definition defines none.
KNOWN_MULTIPLIERS = {
    **{code: NQ_POINT_VALUE_USD for code in NQ_OPTION_PRODUCTS},
    **{code: MICRO_NQ_POINT_VALUE_USD for code in MICRO_NQ_OPTION_PRODUCTS},
    "ES": 50.0,
}


def empty_frame(columns: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in columns.items()})


class DataSource(Protocol):
    """What the monitor needs from any market-data backend."""

    name: str

    def trades(self, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        """Option and future fills in [start, end), joined with their definitions (TRADE_COLUMNS)."""

    def chain(self, trade_date: dt.date) -> pd.DataFrame: ...
    def spread_legs(self, trade_date: dt.date) -> pd.DataFrame: ...
    def open_interest(self, trade_date: dt.date) -> pd.DataFrame: ...
    def statistics(self, trade_date: dt.date) -> pd.DataFrame:
        """Every statistics record published during the session (STATISTICS_COLUMNS): its own open
        interest, and the previous session's settlement and cleared volume (``ts_ref``)."""

    def sessions_available(self) -> list[dt.date]: ...
    def published(self, end: pd.Timestamp) -> bool:
        """Whether the source holds everything before `end` (a later window waits, never empty)."""

    def available_end(self, schema: str) -> pd.Timestamp | None:
        """Where the source's `schema` data ends now (None: it holds none)."""

    def describe_end(self) -> str:
        """Where the data ends, in words (for a window refused as not published yet)."""

    def check_budget(self, pulls: list[tuple[str, pd.Timestamp, pd.Timestamp]]) -> float:
        """The price of these (schema, start, end) pulls; raises BudgetExceeded over the budget."""

    def estimate_cost(self, schema: str, start: pd.Timestamp, end: pd.Timestamp) -> float:
        """Dollars one pull would cost (0 where reading costs nothing)."""


UNDERLYING_COLUMNS = ["ts_event", "instrument_id", "symbol", "price", "size", "side"]


def tidy_statistics(raw: pd.DataFrame) -> pd.DataFrame:
    """Statistics records as STATISTICS_COLUMNS; undefined prices and quantities become NaN."""
    if raw.empty:
        return empty_frame(STATISTICS_COLUMNS)
    quantity = raw["quantity"].astype("float64")
    quantity[raw["quantity"] >= 2_147_483_647] = np.nan  # DBN's undefined quantity (32- or 64-bit max)
    return (
        pd.DataFrame(
            {
                "instrument_id": raw["instrument_id"].astype("int64"),
                "stat_type": raw["stat_type"].astype("int64"),
                "price": raw["price"].astype("float64"),
                "quantity": quantity,
                "stat_flags": raw["stat_flags"].astype("int64"),
                "ts_event": pd.to_datetime(raw["ts_event"], utc=True),
                "ts_ref": pd.to_datetime(raw["ts_ref"], utc=True),
            }
        )
        .sort_values("ts_event", kind="stable")
        .reset_index(drop=True)
    )


def option_fills(trades: pd.DataFrame) -> pd.DataFrame:
    """The option rows of a tidy trades frame (leg prints of spreads included: their contracts traded)."""
    return trades[trades["put_call"].isin(["C", "P"])].reset_index(drop=True)


def spread_fills(trades: pd.DataFrame) -> pd.DataFrame:
    """The prints on spread instruments (T, M) of a tidy trades frame: one per spread trade."""
    return trades[trades["instrument_class"].isin(SPREAD_CLASSES)].reset_index(drop=True)


def future_fills(trades: pd.DataFrame) -> pd.DataFrame:
    """The futures rows of a tidy trades frame, in the underlying frame's columns."""
    return trades.loc[trades["instrument_class"] == "F", UNDERLYING_COLUMNS].reset_index(drop=True)


def undefined_fills(trades: pd.DataFrame) -> pd.DataFrame:
    """Rows of a tidy trades frame whose instrument has no definition: neither option nor future
    is known, nor a multiplier, so they cannot be priced or counted."""
    return trades[trades["product"].isna()]


@dataclass
class WindowData:
    """Everything one window's detection needs, plus what was wrong with it.

    `trades` are option fills (spread legs included), `spreads` the prints on spread
    instruments, `legs` the leg definitions of the session's spreads, `futures` every futures
    fill (covered packages have a futures leg) and `underlying` the front future's fills."""

    start: pd.Timestamp
    end: pd.Timestamp
    trade_date: dt.date | None
    trades: pd.DataFrame
    chain: pd.DataFrame
    open_interest: pd.DataFrame
    underlying: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    spreads: pd.DataFrame = field(default_factory=lambda: empty_frame(TRADE_COLUMNS))
    legs: pd.DataFrame = field(default_factory=lambda: empty_frame(LEG_COLUMNS))
    futures: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=UNDERLYING_COLUMNS))
    #: the session's settled dealer-positioning walls, name -> strike (`nqflow.engine.gex.session_walls`);
    #: empty while the session's statistics are not published
    walls: dict[str, float] = field(default_factory=dict)
    #: where `trades`, `spreads` and `futures` were cut from, when cut from a longer stretch
    #: (`ClassifiedFills.between`): a batch of windows cut from one stretch is stacked with one take
    origin: FillsOrigin | None = field(default=None, repr=False, compare=False)

    @property
    def empty(self) -> bool:
        """True when the window holds no option trades (the notes say why)."""
        return self.trades.empty


#: A tidy instrument table row's definition time (`chain_from_definitions` and
#: `legs_from_definitions` with ``received``): what several files' tables combine by.
RECEIVED, RECEIVED_DTYPE = "ts_recv", "datetime64[ns, UTC]"


def chain_from_definitions(definitions: pd.DataFrame, received: bool = False) -> pd.DataFrame:
    """Tidy option chain from raw definition records: the latest definition per instrument
    (with `received`, its time in a last column, `RECEIVED`).

    The dollar multiplier comes from ``unit_of_measure_qty`` (dollars per index point on CME
    equity-index products), else ``contract_multiplier``, else the product's known value with
    a warning: never a silent constant.
    """
    columns = {**CHAIN_COLUMNS, RECEIVED: RECEIVED_DTYPE} if received else CHAIN_COLUMNS
    if definitions.empty:
        return empty_frame(columns)
    # A spread has one record per leg: any of them gives the spread's own fields.
    latest = definitions.take(latest_rows(definitions, ["instrument_id"]))
    uom = pd.to_numeric(latest["unit_of_measure_qty"], errors="coerce")
    cm = pd.to_numeric(latest["contract_multiplier"], errors="coerce")
    uom_ok = uom.notna() & (uom > 0) & (uom < 1e9)
    cm_ok = cm.notna() & (cm > 0) & (cm != UNDEF_INT32)
    product = latest["asset"].astype("string")
    known = product.map(KNOWN_MULTIPLIERS).astype("float64")
    multiplier = np.where(uom_ok, uom, np.where(cm_ok, cm, known))
    source = np.where(uom_ok, "unit_of_measure_qty", np.where(cm_ok, "contract_multiplier", "known_product"))
    missing = ~uom_ok & ~cm_ok
    if missing.any():
        unknown = sorted(set(product[missing & known.isna()].dropna()))
        if unknown:
            raise DataError(
                f"definitions give no contract multiplier for products {unknown} and none is known; "
                f"add them to nqflow.market.frames.KNOWN_MULTIPLIERS"
            )
        log.warning(
            "%d definitions define no multiplier; using the product's known value (e.g. NQ $20/pt)", int(missing.sum())
        )
    klass = latest["instrument_class"].astype("string")
    strike = pd.to_numeric(latest["strike_price"], errors="coerce")
    chain = pd.DataFrame(
        {
            "instrument_id": latest["instrument_id"].astype("int64"),
            "symbol": latest["raw_symbol"].astype("string"),
            "product": product,
            "instrument_class": klass,
            "put_call": klass.where(klass.isin(["C", "P"])),
            "strike": strike.where(klass.isin(["C", "P"])).astype("float64"),
            "expiration": pd.to_datetime(latest["expiration"], utc=True),
            "underlying": latest["underlying"].astype("string"),
            "underlying_id": latest["underlying_id"].astype("int64"),
            "multiplier": multiplier.astype("float64"),
            "multiplier_source": pd.array(source, dtype="string"),
        }
    )
    if received:
        chain[RECEIVED] = pd.to_datetime(latest[RECEIVED], utc=True)
    return chain.reset_index(drop=True)  # in instrument_id order already (`latest_rows`)


def legs_from_definitions(definitions: pd.DataFrame, received: bool = False) -> pd.DataFrame:
    """The legs of every spread whose definition lists them (``leg_count`` > 0): one row per leg
    with the leg's instrument, its sign when the spread is bought (+1 bought, -1 sold; from
    ``leg_side``), its ratio, and the price and delta the definition carries (with `received`,
    the definition's time in a last column, `RECEIVED`). Spreads whose definitions carry no legs
    are absent: their legs are inferred from the prints."""
    columns = {**LEG_COLUMNS, RECEIVED: RECEIVED_DTYPE} if received else LEG_COLUMNS
    if definitions.empty or "leg_count" not in definitions:
        return empty_frame(columns)
    rows = definitions[pd.to_numeric(definitions["leg_count"], errors="coerce").fillna(0) > 0]
    rows = rows.take(latest_rows(rows, ["instrument_id", "leg_index"]))
    if rows.empty:
        return empty_frame(columns)
    ratio = pd.to_numeric(rows["leg_ratio_qty_numerator"], errors="coerce").fillna(1)
    denominator = pd.to_numeric(rows["leg_ratio_qty_denominator"], errors="coerce").fillna(1).replace(0, 1)
    legs = pd.DataFrame(
        {
            "spread_id": rows["instrument_id"].astype("int64"),
            "leg_index": rows["leg_index"].astype("int64"),
            "leg_instrument_id": rows["leg_instrument_id"].astype("int64"),
            "leg_sign": np.where(rows["leg_side"].astype(str) == "A", -1, 1).astype("int64"),
            "leg_ratio": np.maximum((ratio / denominator).round(), 1).astype("int64"),
            "leg_price": pd.to_numeric(rows["leg_price"], errors="coerce").astype("float64"),
            "leg_delta": pd.to_numeric(rows["leg_delta"], errors="coerce").astype("float64"),
        }
    )
    if received:
        legs[RECEIVED] = pd.to_datetime(rows[RECEIVED], utc=True)
    return legs.reset_index(drop=True)  # in (spread_id, leg_index) order already (`latest_rows`)


def latest_rows(definitions: pd.DataFrame, keys: list[str]) -> np.ndarray:
    """The position of each key's latest record (the greatest ``ts_recv``, undefined counting as
    latest; the later record on a tie), in key order: what a sort on ``ts_recv``, a
    ``drop_duplicates(keys, keep="last")`` and a sort on the keys give, with one NumPy sort of
    integers instead of three sorts and takes of every field (a day defines ~13,000 instruments).
    For definition records and the instrument tables built from them alike."""
    if definitions.empty:
        return np.empty(0, dtype="int64")
    received = definitions["ts_recv"].to_numpy(dtype="datetime64[ns]").astype("int64")
    received = np.where(received == np.iinfo("int64").min, np.iinfo("int64").max, received)  # NaT sorts last
    return latest_positions(received, [definitions[k].to_numpy(dtype="int64") for k in keys])


def latest_positions(received: np.ndarray, columns: list[np.ndarray]) -> np.ndarray:
    """`latest_rows` of arrays: each key's (`columns`) latest position by `received` (integers,
    an undefined time already the greatest), the later position on a tie, in key order."""
    if not len(received):
        return np.empty(0, dtype="int64")
    order = np.lexsort((np.arange(len(received)), received, *reversed(columns)))
    last = np.ones(len(order), dtype=bool)
    last[:-1] = np.logical_or.reduce([c[order][1:] != c[order][:-1] for c in columns])
    return order[last]


def tidy_trades(raw: pd.DataFrame, chain: pd.DataFrame) -> pd.DataFrame:
    """Join raw trade records with the chain: one typed row per fill, premium in USD. `chain` may
    come indexed by instrument_id already (a caller joining many small batches to one chain)."""
    if raw.empty:
        return empty_frame(TRADE_COLUMNS)
    info = chain if chain.index.name == "instrument_id" else chain.set_index("instrument_id")
    joined = raw[["ts_event", "instrument_id", "price", "size", "side"]].join(
        info[["symbol", "product", "instrument_class", "expiration", "strike", "put_call", "multiplier"]],
        on="instrument_id",
    )
    trades = pd.DataFrame(
        {
            "ts_event": pd.to_datetime(joined["ts_event"], utc=True),
            "instrument_id": joined["instrument_id"].astype("int64"),
            "symbol": joined["symbol"].astype("string"),
            "product": joined["product"].astype("string"),
            "instrument_class": joined["instrument_class"].astype("string"),
            "expiration": pd.to_datetime(joined["expiration"], utc=True),
            "strike": joined["strike"].astype("float64"),
            "put_call": joined["put_call"].astype("string"),
            "price": joined["price"].astype("float64"),
            "size": joined["size"].astype("int64"),
            "side": joined["side"].astype("string"),
            "multiplier": joined["multiplier"].astype("float64"),
        }
    )
    trades["premium_usd"] = trades["price"] * trades["size"] * trades["multiplier"]
    order = _time_order(trades["ts_event"].to_numpy("datetime64[ns]").view("int64"), trades["instrument_id"].to_numpy())
    if order is not None:
        trades = trades.take(order)
    return trades.reset_index(drop=True)


def _time_order(ts_ns: np.ndarray, instrument_ids: np.ndarray) -> np.ndarray | None:
    """The stable order by time, then instrument, or None when the rows already have it (a DBN
    file's records come in time order, so a sort would only cost)."""
    if len(ts_ns) < 2:
        return None
    later = ts_ns[1:] > ts_ns[:-1]
    same_time = ts_ns[1:] == ts_ns[:-1]
    if bool(np.all(later | (same_time & (instrument_ids[1:] >= instrument_ids[:-1])))):
        return None
    return np.lexsort((instrument_ids, ts_ns))


def time_range(start, end) -> tuple[pd.Timestamp, pd.Timestamp]:
    start, end = cal.to_utc(start), cal.to_utc(end)
    if end <= start:
        raise DataError(f"time range end {end.isoformat()} is not after start {start.isoformat()}; swap them")
    return start, end


@lru_cache(maxsize=512)
def session_bounds(trade_date: dt.date) -> tuple[pd.Timestamp, pd.Timestamp]:
    """A session's (open, close) in UTC. Kept per date: the calendar's answer never changes, and a
    session's load asks for its own and its neighbours' bounds a dozen times."""
    frame = cal.sessions(trade_date, trade_date)
    if frame.empty:
        raise DataError(f"{trade_date} is not a CME Globex trading day; pick a weekday that is not an exchange holiday")
    return frame.iloc[0].market_open, frame.iloc[0].market_close


def load_window(source: DataSource, start, end, watched: frozenset[str] | None = None) -> WindowData:
    """Load everything one window needs. An empty window is flagged with a reason, never an exception.
    `watched` product codes (the universe) filter the options; None keeps every product."""
    start, end = time_range(start, end)
    session = cal.session_of(start)
    notes: list[str] = []
    if session is None:
        notes.append(
            f"market closed for {start:%Y-%m-%d %H:%M}Z-{end:%H:%M}Z "
            f"(CME Globex equity options halt, weekend or holiday)"
        )
        empty = empty_frame(TRADE_COLUMNS)
        return WindowData(
            start,
            end,
            None,
            empty,
            empty_frame(CHAIN_COLUMNS),
            empty_frame({"instrument_id": "int64", "open_interest": "int64"}),
            empty.iloc[:, :0],
            notes,
        )
    trade_date = session[0]
    return window_from(
        start,
        end,
        trade_date,
        source.trades(start, end),
        source.chain(trade_date),
        source.open_interest(trade_date),
        source.spread_legs(trade_date),
        watched,
    )


_reported_unwatched: set[str] = set()


def unwatched_products(fills: pd.DataFrame, watched: frozenset[str]) -> list[str]:
    """Products of option fills (on NQ futures) that the universe does not watch. Found by the
    product column's codes: a session's option rows taken whole only to name a few products cost
    more than the rest of the split."""
    codes, products = pd.factorize(fills["product"])
    options = codes[fills["put_call"].isin(["C", "P"]).to_numpy(dtype=bool) & (codes >= 0)]
    return sorted({str(p) for p in np.asarray(products, dtype=object)[np.unique(options)]} - set(watched))


def unwatched_message(products: list[str], what: str) -> str:
    """One line naming NQ option products seen but not watched, with the fix."""
    micro = [p for p in products if p in MICRO_NQ_OPTION_PRODUCTS]
    quoted = [f'"{p}.OPT"' for p in products]
    keys = " / ".join(
        key
        for key, listed in (
            ("universe.option_parents", len(micro) < len(products)),
            ("universe.micro_option_parents", bool(micro)),
        )
        if listed
    )
    return (
        f"options of {', '.join(products)} on NQ futures {what} but are not watched; add "
        f"{', '.join(quoted)} to {keys} in config/monitoring.toml "
        f"to watch them"
    )


@dataclass
class ClassifiedFills:
    """A stretch of tidy fills split by what they are (`classify_fills`); each part keeps time order."""

    options: pd.DataFrame
    spreads: pd.DataFrame
    futures: pd.DataFrame
    undefined: pd.DataFrame
    #: set on a part cut by `between`: the stretch it was cut from and its rows there
    origin: FillsOrigin | None = field(default=None, repr=False, compare=False)

    def between(self, start: pd.Timestamp, end: pd.Timestamp) -> ClassifiedFills:
        """The fills in [start, end): a binary search per part, no copy of the rest."""
        return self.split([(start, end)])[0]

    def ranges(self, bounds: Sequence[tuple[pd.Timestamp, pd.Timestamp]]) -> dict[str, np.ndarray]:
        """Each part's rows [lo, hi) in each of many windows ([start, end) each, in time order):
        per part, an array of one (lo, hi) row per window, from one binary search for them all."""
        edges = np.array([t.tz_convert(None) for window in bounds for t in window], dtype="datetime64[ns]")
        return {
            name: getattr(self, name)["ts_event"].to_numpy(dtype="datetime64[ns]").searchsorted(edges).reshape(-1, 2)
            for name in _PARTS
        }

    def split(self, bounds: Sequence[tuple[pd.Timestamp, pd.Timestamp]]) -> list[ClassifiedFills]:
        """`between` for each of many windows ([start, end) each), with one binary search per
        part for all of them: a session's 92 windows each paid the search's own set-up."""
        rows = {name: [(lo, hi) for lo, hi in at.tolist()] for name, at in self.ranges(bounds).items()}
        return [
            ClassifiedFills(
                _rows(self.options, *rows["options"][i]),
                _rows(self.spreads, *rows["spreads"][i]),
                _rows(self.futures, *rows["futures"][i]),
                _rows(self.undefined, *rows["undefined"][i]),
                origin=FillsOrigin(self, {name: rows[name][i] for name in _PARTS}),
            )
            for i in range(len(bounds))
        ]


_PARTS = ("options", "spreads", "futures", "undefined")


def _rows(frame: pd.DataFrame, lo: int, hi: int) -> pd.DataFrame:
    """Rows [lo, hi) of `frame` on a new index: no copy of its data."""
    if lo == hi and frame.empty:  # most windows have no spread or undefined prints
        return frame
    part = frame.iloc[lo:hi]
    part.index = pd.RangeIndex(hi - lo)
    return part


@dataclass(frozen=True)
class FillsOrigin:
    """Where a window's fills were cut from: the stretch and each part's rows [lo, hi) in it."""

    stretch: ClassifiedFills
    rows: dict[str, tuple[int, int]]


def stack_cut(parts: Sequence[tuple[FillsOrigin | None, pd.DataFrame]], name: str) -> pd.DataFrame | None:
    """The frames of part `name` of many windows stacked in order (as ``pd.concat`` with
    ``ignore_index`` gives them), taken from their stretch in one take when every one was cut
    from the same stretch and still holds its rows; None when they were not (concatenate them).
    A session's windows each pay pandas' per-frame cost in a concat of 92 small frames."""
    origins = [origin for origin, _ in parts if origin is not None]
    if not parts or len(origins) < len(parts):
        return None
    stretch = origins[0].stretch
    ranges = []
    for origin, (_, frame) in zip(origins, parts):
        lo, hi = origin.rows[name]
        if origin.stretch is not stretch or hi - lo != len(frame):  # another stretch, or changed since
            return None
        ranges.append(np.arange(lo, hi))
    return getattr(stretch, name).take(np.concatenate(ranges)).reset_index(drop=True)


def classify_fills(fills: pd.DataFrame, watched: frozenset[str] | None = None) -> ClassifiedFills:
    """Split tidy fills into options, spread prints, futures and fills with no definition.
    Options of products outside `watched` are left out, and said once per process."""
    if watched is not None:
        unwatched = unwatched_products(fills, watched)
        if unwatched:
            fills = fills[~(fills["put_call"].isin(["C", "P"]) & fills["product"].isin(unwatched))]
            new = [p for p in unwatched if p not in _reported_unwatched]
            if new:
                _reported_unwatched.update(new)
                log.warning("%s", unwatched_message(new, "trade"))
    return ClassifiedFills(
        option_fills(fills), spread_fills(fills), future_fills(fills), undefined_fills(fills).reset_index(drop=True)
    )


def window_from(
    start: pd.Timestamp,
    end: pd.Timestamp,
    trade_date: dt.date,
    fills: pd.DataFrame | ClassifiedFills,
    chain: pd.DataFrame,
    oi: pd.DataFrame,
    legs: pd.DataFrame | None = None,
    watched: frozenset[str] | None = None,
    walls: dict[str, float] | None = None,
    underlying: pd.DataFrame | None = None,
) -> WindowData:
    """One open-market window from its fills (options, spreads and futures, [start, end) only)
    and the session's chain, open interest, spread legs and walls; `load_window` and the
    whole-session path share it. `fills` may come classified already (the session path classifies a whole
    session once and cuts it per window); `watched` applies to unclassified fills. `underlying`
    is the front future's fills when known already (`front_futures` of a session's windows)."""
    parts = fills if isinstance(fills, ClassifiedFills) else classify_fills(fills, watched)
    return WindowData(
        start,
        end,
        trade_date,
        parts.options,
        chain,
        oi,
        front_future(parts.futures) if underlying is None else underlying,
        window_notes(start, end, trade_date, parts.undefined, parts.options.empty, chain.empty),
        parts.spreads,
        legs if legs is not None else empty_frame(LEG_COLUMNS),
        parts.futures,
        dict(walls or {}),
        parts.origin,
    )


def window_notes(
    start: pd.Timestamp,
    end: pd.Timestamp,
    trade_date: dt.date,
    undefined: pd.DataFrame,
    no_options: bool,
    no_definitions: bool,
) -> list[str]:
    """What was wrong with an open-market window: fills without a definition (`undefined`, left
    out), no option trades, no instrument definitions for its session."""
    notes: list[str] = []
    if len(undefined):
        ids = sorted(undefined["instrument_id"].unique())
        notes.append(
            f"{len(undefined):,} fills on {len(ids)} instrument(s) without a definition were left out "
            f"(instrument_id {', '.join(map(str, ids[:5]))}{' ...' if len(ids) > 5 else ''}); "
            f"add the definition records for session {trade_date} to the data folder"
        )
    if no_options:
        notes.append(
            f"no option trades in {start:%Y-%m-%d %H:%M}Z-{end:%H:%M}Z while the market was open; "
            f"check that the data source covers this window"
        )
    if no_definitions:
        notes.append(f"no instrument definitions for session {trade_date}")
    return notes


def front_future(futures: pd.DataFrame) -> pd.DataFrame:
    """Fills of the most traded future in the window: the one whose price the options track."""
    if futures.empty:
        return futures
    mine = front_rows(futures, np.zeros(len(futures), dtype=np.int64))
    if mine.all():
        return futures
    return futures[mine].reset_index(drop=True)


def front_futures(windows: Sequence[ClassifiedFills]) -> list[pd.DataFrame]:
    """`front_future` of each window's futures, with one `front_rows` for them all."""
    sizes = [len(w.futures) for w in windows]
    if not sum(sizes):
        return [w.futures for w in windows]
    stacked = pd.DataFrame(
        {
            column: np.concatenate([w.futures[column].to_numpy(dtype=dtype) for w in windows])
            for column, dtype in (("instrument_id", "int64"), ("size", float))
        }
    )
    mine = front_rows(stacked, np.repeat(np.arange(len(windows), dtype=np.int64), sizes))
    ends = np.cumsum(sizes).tolist()
    fronts = []
    for w, lo, hi in zip(windows, [0, *ends[:-1]], ends):
        rows = mine[lo:hi]
        fronts.append(w.futures if rows.all() else w.futures[rows].reset_index(drop=True))
    return fronts


def front_rows(futures: pd.DataFrame, window: np.ndarray) -> np.ndarray:
    """Which futures fills are of their window's front future: the most traded (summed size) in
    the window, the lowest id on a tie. One rule for a window (`front_future`) and for a batch of
    windows (`window` numbers each fill's window), summed with NumPy on sorted codes: a session's
    92 windows each pay pandas' groupby overhead otherwise."""
    ids = futures["instrument_id"].to_numpy(dtype="int64")
    span = int(ids.max()) + 1
    pair, distinct = pd.factorize(window * span + ids, sort=True)  # by window, then id
    volume = np.bincount(pair, weights=futures["size"].to_numpy(dtype=float))
    pair_window, pair_id = distinct // span, distinct % span
    best = np.lexsort((pair_id, -volume, pair_window))  # per window: most traded, then lowest id
    first = best[np.r_[True, pair_window[best][1:] != pair_window[best][:-1]]]
    front = dict(zip(pair_window[first].tolist(), pair_id[first].tolist()))
    return ids == np.array([front[w] for w in window.tolist()], dtype="int64")
