"""Market data sources: one interface, tidy typed DataFrames out.

Backends:
- `ReplaySource`: a folder of DBN files (any names, ``.dbn`` or ``.dbn.zst``) read with
  ``databento.DBNStore``; schema and time range come from each file's own metadata, symbols
  from the definition records (fills of an instrument without one are left out, and said). Only
  the files that overlap a requested range are decoded, and decoded files are cached in
  memory, so a 15-minute window never decodes the whole folder.
- `nqflow.databento_source.DatabentoSource`: the Historical API, which caches what it
  fetches as DBN files that a `ReplaySource` reads directly.

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
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import databento as db
import numpy as np
import pandas as pd
import zstandard

from nqflow import calendar as cal
from nqflow.contracts import (
    MICRO_NQ_OPTION_PRODUCTS,
    MICRO_NQ_POINT_VALUE_USD,
    NQ_OPTION_PRODUCTS,
    NQ_POINT_VALUE_USD,
)
from nqflow.errors import DataError

log = logging.getLogger(__name__)

#: DBN's sentinel for an undefined 32-bit integer field (e.g. contract_multiplier).
UNDEF_INT32 = 2_147_483_647
SCHEMAS = ("trades", "definition", "statistics")
OPEN_INTEREST_STAT_TYPE = 9  # databento_dbn.StatType.OPEN_INTEREST

TRADE_COLUMNS = {
    "ts_event": "datetime64[ns, UTC]", "instrument_id": "int64", "symbol": "string", "product": "string",
    "instrument_class": "string", "expiration": "datetime64[ns, UTC]", "strike": "float64", "put_call": "string", "price": "float64",
    "size": "int64", "side": "string", "multiplier": "float64", "premium_usd": "float64",
}
CHAIN_COLUMNS = {
    "instrument_id": "int64", "symbol": "string", "product": "string", "instrument_class": "string",
    "put_call": "string", "strike": "float64", "expiration": "datetime64[ns, UTC]", "underlying": "string",
    "underlying_id": "int64", "multiplier": "float64", "multiplier_source": "string",
}
LEG_COLUMNS = {
    "spread_id": "int64", "leg_index": "int64", "leg_instrument_id": "int64", "leg_sign": "int64",
    "leg_ratio": "int64", "leg_price": "float64", "leg_delta": "float64",
}
SPREAD_CLASSES = ("T", "M")
#: Known dollar-per-point values by product code, used only when a definition defines none.
KNOWN_MULTIPLIERS = {**{code: NQ_POINT_VALUE_USD for code in NQ_OPTION_PRODUCTS},
                     **{code: MICRO_NQ_POINT_VALUE_USD for code in MICRO_NQ_OPTION_PRODUCTS}, "ES": 50.0}


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
    def sessions_available(self) -> list[dt.date]: ...


UNDERLYING_COLUMNS = ["ts_event", "instrument_id", "symbol", "price", "size", "side"]


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

    @property
    def empty(self) -> bool:
        """True when the window holds no option trades (the notes say why)."""
        return self.trades.empty


@dataclass(frozen=True)
class DbnFile:
    path: Path
    schema: str
    start: pd.Timestamp
    end: pd.Timestamp


def _quiet_to_df(store: db.DBNStore) -> pd.DataFrame:
    # databento's to_df emits a Pandas4Warning under pandas 3 from inside the client.
    # Symbols come from the definitions (raw_symbol), so the symbology mapping, which costs
    # four fifths of decoding a trades file, is skipped.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return store.to_df(map_symbols=False)


def open_dbn(path: Path, expected_schema: str | None = None) -> db.DBNStore:
    """Open a DBN file, turning every decoding failure into one clear line naming the file."""
    try:
        store = db.DBNStore.from_file(path)
        schema = str(store.schema) if store.schema is not None else None
    except FileNotFoundError:
        raise DataError(f"DBN file {path} does not exist; check the replay folder path") from None
    except Exception as exc:  # the decoder raises several types for bad bytes
        raise DataError(f"corrupt or truncated DBN file {path} ({type(exc).__name__}: {exc}); "
                        f"delete it and re-download or regenerate it") from None
    if expected_schema and schema != expected_schema:
        raise DataError(f"DBN file {path} holds schema {schema!r}, expected {expected_schema!r}; "
                        f"move it out of the folder or pass the right file")
    return store


def _check_complete(path: Path) -> None:
    """A truncated zstd DBN file decodes silently to fewer records: refuse it instead."""
    if not path.name.endswith(".zst"):
        return
    decompressor = zstandard.ZstdDecompressor().decompressobj()
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                decompressor.decompress(chunk)
    except zstandard.ZstdError as exc:
        raise DataError(f"corrupt DBN file {path} (zstd: {exc}); delete it and re-download or regenerate it") from None
    if not decompressor.eof:
        raise DataError(f"truncated DBN file {path} (the zstd stream ends early); "
                        f"delete it and re-download or regenerate it")


def read_dbn(path: Path, expected_schema: str | None = None) -> pd.DataFrame:
    """Decode a whole DBN file to a DataFrame (index reset, ts_recv a column)."""
    store = open_dbn(path, expected_schema)
    _check_complete(path)
    try:
        frame = _quiet_to_df(store)
    except Exception as exc:
        raise DataError(f"corrupt or truncated DBN file {path} ({type(exc).__name__}: {exc}); "
                        f"delete it and re-download or regenerate it") from None
    return frame.reset_index()


def chain_from_definitions(definitions: pd.DataFrame) -> pd.DataFrame:
    """Tidy option chain from raw definition records: the latest definition per instrument.

    The dollar multiplier comes from ``unit_of_measure_qty`` (dollars per index point on CME
    equity-index products), else ``contract_multiplier``, else the product's known value with
    a warning: never a silent constant.
    """
    if definitions.empty:
        return empty_frame(CHAIN_COLUMNS)
    # A spread has one record per leg: any of them gives the spread's own fields.
    latest = definitions.sort_values("ts_recv").drop_duplicates("instrument_id", keep="last")
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
            raise DataError(f"definitions give no contract multiplier for products {unknown} and none is known; "
                            f"add them to nqflow.data.KNOWN_MULTIPLIERS")
        log.warning("%d definitions define no multiplier; using the product's known value (e.g. NQ $20/pt)",
                    int(missing.sum()))
    klass = latest["instrument_class"].astype("string")
    strike = pd.to_numeric(latest["strike_price"], errors="coerce")
    chain = pd.DataFrame({
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
    })
    return chain.sort_values("instrument_id").reset_index(drop=True)


def legs_from_definitions(definitions: pd.DataFrame) -> pd.DataFrame:
    """The legs of every spread whose definition lists them (``leg_count`` > 0): one row per leg
    with the leg's instrument, its sign when the spread is bought (+1 bought, -1 sold; from
    ``leg_side``), its ratio, and the price and delta the definition carries. Spreads whose
    definitions carry no legs are absent: their legs are inferred from the prints."""
    if definitions.empty or "leg_count" not in definitions:
        return empty_frame(LEG_COLUMNS)
    rows = definitions[pd.to_numeric(definitions["leg_count"], errors="coerce").fillna(0) > 0]
    rows = rows.sort_values("ts_recv").drop_duplicates(["instrument_id", "leg_index"], keep="last")
    if rows.empty:
        return empty_frame(LEG_COLUMNS)
    ratio = pd.to_numeric(rows["leg_ratio_qty_numerator"], errors="coerce").fillna(1)
    denominator = pd.to_numeric(rows["leg_ratio_qty_denominator"], errors="coerce").fillna(1).replace(0, 1)
    legs = pd.DataFrame({
        "spread_id": rows["instrument_id"].astype("int64"), "leg_index": rows["leg_index"].astype("int64"),
        "leg_instrument_id": rows["leg_instrument_id"].astype("int64"),
        "leg_sign": np.where(rows["leg_side"].astype(str) == "A", -1, 1).astype("int64"),
        "leg_ratio": np.maximum((ratio / denominator).round(), 1).astype("int64"),
        "leg_price": pd.to_numeric(rows["leg_price"], errors="coerce").astype("float64"),
        "leg_delta": pd.to_numeric(rows["leg_delta"], errors="coerce").astype("float64"),
    })
    return legs.sort_values(["spread_id", "leg_index"]).reset_index(drop=True)


def tidy_trades(raw: pd.DataFrame, chain: pd.DataFrame) -> pd.DataFrame:
    """Join raw trade records with the chain: one typed row per fill, premium in USD."""
    if raw.empty:
        return empty_frame(TRADE_COLUMNS)
    info = chain.set_index("instrument_id")
    joined = raw[["ts_event", "instrument_id", "price", "size", "side"]].join(
        info[["symbol", "product", "instrument_class", "expiration", "strike", "put_call", "multiplier"]], on="instrument_id")
    trades = pd.DataFrame({
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
    })
    trades["premium_usd"] = trades["price"] * trades["size"] * trades["multiplier"]
    return trades.sort_values(["ts_event", "instrument_id"], kind="stable").reset_index(drop=True)


class ReplaySource:
    """A folder of DBN files, read with databento.DBNStore exactly as live data is."""

    name = "replay"

    def __init__(self, folder: str | Path, cache_files: int = 12, allow_empty: bool = False):
        self.folder = Path(folder)
        if allow_empty:
            self.folder.mkdir(parents=True, exist_ok=True)
        if not self.folder.is_dir():
            raise DataError(f"replay folder {self.folder} does not exist; generate the sample with "
                            f"`make demo` or point data.replay_dir at a folder of Databento DBN files")
        self.files = self._scan()
        if not self.files and not allow_empty:
            raise DataError(f"replay folder {self.folder} holds no .dbn or .dbn.zst files of schemas "
                            f"{', '.join(SCHEMAS)}; download them from Databento or run `make demo`")
        self._cache: OrderedDict[Path, pd.DataFrame] = OrderedDict()
        self._cache_files = cache_files
        # Built chains are kept for the few latest days only: a backtest walks forward in time.
        self._chains: OrderedDict[tuple[Path, ...], tuple[pd.DataFrame, pd.DataFrame]] = OrderedDict()
        self._chain_days = 4

    def _scan(self) -> list[DbnFile]:
        paths = sorted(p for p in self.folder.rglob("*") if p.name.endswith((".dbn", ".dbn.zst")))
        return [entry for entry in map(_describe, paths) if entry is not None]

    def add(self, path: Path) -> None:
        """Take in a file written after the folder was scanned (the Databento cache does this)."""
        entry = _describe(Path(path))
        if entry is not None and entry not in self.files:
            self.files.append(entry)

    def _decoded(self, entry: DbnFile) -> pd.DataFrame:
        if entry.path in self._cache:
            self._cache.move_to_end(entry.path)
            return self._cache[entry.path]
        frame = read_dbn(entry.path, entry.schema)
        self._cache[entry.path] = frame
        if len(self._cache) > self._cache_files:
            self._cache.popitem(last=False)
        return frame

    def _overlapping(self, schema: str, start: pd.Timestamp, end: pd.Timestamp) -> list[DbnFile]:
        return [f for f in self.files if f.schema == schema and f.start < end and f.end > start]

    def _chain(self, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        """Chain from the definition files overlapping [start, end), built once per set of files."""
        return self._chain_and_legs(start, end)[0]

    def _chain_and_legs(self, start: pd.Timestamp, end: pd.Timestamp) -> tuple[pd.DataFrame, pd.DataFrame]:
        key = tuple(f.path for f in self._overlapping("definition", start, end))
        if key in self._chains:
            self._chains.move_to_end(key)
            return self._chains[key]
        definitions = self._records("definition", start, end)
        self._chains[key] = (chain_from_definitions(definitions), legs_from_definitions(definitions))
        if len(self._chains) > self._chain_days:
            self._chains.popitem(last=False)
        return self._chains[key]

    def _records(self, schema: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        pairs = [(f, self._decoded(f)) for f in self._overlapping(schema, start, end)]
        pairs = [(f, frame) for f, frame in pairs if not frame.empty]
        if not pairs:
            return pd.DataFrame()
        if len(pairs) == 1:
            return pairs[0][1]
        if schema == "trades":
            pairs = _without_overlap(pairs)
        return pd.concat([frame for _, frame in pairs], ignore_index=True)

    # -- the DataSource interface -------------------------------------------------
    def chain(self, trade_date: dt.date) -> pd.DataFrame:
        start, end = _session_bounds(trade_date)
        return self._chain(start, end)

    def spread_legs(self, trade_date: dt.date) -> pd.DataFrame:
        """Leg definitions of the session's spreads (`legs_from_definitions`)."""
        start, end = _session_bounds(trade_date)
        return self._chain_and_legs(start, end)[1]

    def trades(self, start, end) -> pd.DataFrame:
        """All trades (options and futures) in [start, end), joined with their definitions."""
        start, end = _range(start, end)
        raw = self._records("trades", start, end)
        if raw.empty:
            return empty_frame(TRADE_COLUMNS)
        ts = pd.to_datetime(raw["ts_event"], utc=True)
        raw = raw[(ts >= start) & (ts < end)]
        return tidy_trades(raw, self._chain(start - pd.Timedelta(days=1), end))

    def option_trades(self, start, end) -> pd.DataFrame:
        return option_fills(self.trades(start, end))

    def underlying(self, start, end) -> pd.DataFrame:
        return future_fills(self.trades(start, end))

    def open_interest(self, trade_date: dt.date) -> pd.DataFrame:
        start, end = _session_bounds(trade_date)
        raw = self._records("statistics", start, end)
        columns = {"instrument_id": "int64", "open_interest": "int64", "ts_event": "datetime64[ns, UTC]"}
        if raw.empty:
            return empty_frame(columns)
        oi = raw[raw["stat_type"] == OPEN_INTEREST_STAT_TYPE].sort_values("ts_recv")
        oi = oi.drop_duplicates("instrument_id", keep="last")
        return pd.DataFrame({"instrument_id": oi["instrument_id"].astype("int64"),
                             "open_interest": oi["quantity"].astype("int64"),
                             "ts_event": pd.to_datetime(oi["ts_event"], utc=True)}).reset_index(drop=True)

    def sessions_available(self) -> list[dt.date]:
        """Trade dates whose session overlaps at least one trades file, oldest first."""
        trade_files = [f for f in self.files if f.schema == "trades"]
        if not trade_files:
            return []
        first = min(f.start for f in trade_files).date()
        last = max(f.end for f in trade_files)
        if last > pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=366):  # an open-ended file: up to now
            last = pd.Timestamp.now(tz="UTC")
        last = last.date() + dt.timedelta(days=1)
        dates = []
        for day, row in cal.sessions(first, last).iterrows():
            if any(f.start < row.market_close and f.end > row.market_open for f in trade_files):
                dates.append(day)
        return dates


def _without_overlap(pairs: list[tuple[DbnFile, pd.DataFrame]]) -> list[tuple[DbnFile, pd.DataFrame]]:
    """Trade files may overlap in time (a cached whole session beside cached windows): keep each
    instant from the earliest-starting file that covers it, so every fill counts once. By time
    range, not by record content: two genuine fills can be identical field for field."""
    kept, covered = [], None
    for entry, frame in sorted(pairs, key=lambda pair: (pair[0].start, -pair[0].end.value)):
        if covered is not None and entry.end <= covered:
            continue
        if covered is not None and entry.start < covered:
            frame = frame[pd.to_datetime(frame["ts_recv"], utc=True) >= covered]
        kept.append((entry, frame))
        covered = entry.end if covered is None else max(covered, entry.end)
    return kept


def _describe(path: Path) -> DbnFile | None:
    """Schema and time range of a DBN file from its metadata (no records decoded)."""
    store = open_dbn(path)
    schema = str(store.schema) if store.schema is not None else "mixed"
    if schema not in SCHEMAS:
        log.warning("ignoring %s: schema %s is not one of %s", path, schema, ", ".join(SCHEMAS))
        return None
    meta = store.metadata
    end = pd.Timestamp(meta.end, tz="UTC") if meta.end else pd.Timestamp.max.tz_localize("UTC")
    return DbnFile(path, schema, pd.Timestamp(meta.start, tz="UTC"), end)


def _range(start, end) -> tuple[pd.Timestamp, pd.Timestamp]:
    start, end = cal.to_utc(start), cal.to_utc(end)
    if end <= start:
        raise DataError(f"time range end {end.isoformat()} is not after start {start.isoformat()}; swap them")
    return start, end


def _session_bounds(trade_date: dt.date) -> tuple[pd.Timestamp, pd.Timestamp]:
    frame = cal.sessions(trade_date, trade_date)
    if frame.empty:
        raise DataError(f"{trade_date} is not a CME Globex trading day; pick a weekday that is not an exchange holiday")
    return frame.iloc[0].market_open, frame.iloc[0].market_close


def load_window(source: DataSource, start, end, watched: frozenset[str] | None = None) -> WindowData:
    """Load everything one window needs. An empty window is flagged with a reason, never an exception.
    `watched` product codes (the universe) filter the options; None keeps every product."""
    start, end = _range(start, end)
    session = cal.session_of(start)
    notes: list[str] = []
    if session is None:
        notes.append(f"market closed for {start:%Y-%m-%d %H:%M}Z-{end:%H:%M}Z (CME Globex equity options halt, weekend or holiday)")
        empty = empty_frame(TRADE_COLUMNS)
        return WindowData(start, end, None, empty, empty_frame(CHAIN_COLUMNS),
                          empty_frame({"instrument_id": "int64", "open_interest": "int64"}),
                          empty.iloc[:, :0], notes)
    trade_date = session[0]
    return window_from(start, end, trade_date, source.trades(start, end), source.chain(trade_date),
                       source.open_interest(trade_date), source.spread_legs(trade_date), watched)


_reported_unwatched: set[str] = set()


def unwatched_products(fills: pd.DataFrame, watched: frozenset[str]) -> list[str]:
    """Products of option fills (on NQ futures) that the universe does not watch."""
    options = fills[fills["put_call"].isin(["C", "P"])]
    return sorted(set(options["product"].dropna().unique()) - set(watched))


@dataclass
class ClassifiedFills:
    """A stretch of tidy fills split by what they are (`classify_fills`); each part keeps time order."""

    options: pd.DataFrame
    spreads: pd.DataFrame
    futures: pd.DataFrame
    undefined: pd.DataFrame

    def between(self, start: pd.Timestamp, end: pd.Timestamp) -> "ClassifiedFills":
        """The fills in [start, end): a binary search per part, no copy of the rest."""
        bounds = np.array([start.tz_convert(None), end.tz_convert(None)], dtype="datetime64[ns]")

        def cut(frame: pd.DataFrame) -> pd.DataFrame:
            lo, hi = frame["ts_event"].to_numpy(dtype="datetime64[ns]").searchsorted(bounds)
            return frame.iloc[lo:hi].reset_index(drop=True)
        return ClassifiedFills(cut(self.options), cut(self.spreads), cut(self.futures), cut(self.undefined))


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
                log.warning("options of %s on NQ futures trade but are not watched; add %s to "
                            "universe.option_parents in config/monitoring.toml to watch them",
                            ", ".join(new), ", ".join(f'"{p}.OPT"' for p in new))
    return ClassifiedFills(option_fills(fills), spread_fills(fills), future_fills(fills),
                           undefined_fills(fills).reset_index(drop=True))


def window_from(start: pd.Timestamp, end: pd.Timestamp, trade_date: dt.date, fills: pd.DataFrame | ClassifiedFills,
                chain: pd.DataFrame, oi: pd.DataFrame, legs: pd.DataFrame | None = None,
                watched: frozenset[str] | None = None) -> WindowData:
    """One open-market window from its fills (options, spreads and futures, [start, end) only)
    and the session's chain, open interest and spread legs; `load_window` and the whole-session
    path share it. `fills` may come classified already (the session path classifies a whole
    session once and cuts it per window); `watched` applies to unclassified fills."""
    parts = fills if isinstance(fills, ClassifiedFills) else classify_fills(fills, watched)
    notes: list[str] = []
    unknown = parts.undefined
    if len(unknown):
        ids = sorted(unknown["instrument_id"].unique())
        notes.append(f"{len(unknown):,} fills on {len(ids)} instrument(s) without a definition were left out "
                     f"(instrument_id {', '.join(map(str, ids[:5]))}{' ...' if len(ids) > 5 else ''}); "
                     f"add the definition records for session {trade_date} to the data folder")
    if parts.options.empty:
        notes.append(f"no option trades in {start:%Y-%m-%d %H:%M}Z-{end:%H:%M}Z while the market was open; "
                      f"check that the data source covers this window")
    if chain.empty:
        notes.append(f"no instrument definitions for session {trade_date}")
    return WindowData(start, end, trade_date, parts.options, chain, oi, _front_future(parts.futures), notes,
                      parts.spreads, legs if legs is not None else empty_frame(LEG_COLUMNS), parts.futures)


def _front_future(futures: pd.DataFrame) -> pd.DataFrame:
    """Fills of the most traded future in the window: the one whose price the options track."""
    if futures.empty:
        return futures
    front = futures.groupby("instrument_id")["size"].sum().idxmax()
    return futures[futures["instrument_id"] == front].reset_index(drop=True)
