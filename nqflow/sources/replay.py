"""The replay source: a folder of DBN files (any names, ``.dbn`` or ``.dbn.zst``) read as
``databento.DBNStore`` reads them, exactly as live data is (`nqflow.sources.dbn`: the records in
databento's own layouts, the symbology mappings left undecoded).

Schema and time range come from each file's own metadata, symbols from the definition records
(fills of an instrument without one are left out, and said). Only the files that overlap a
requested range are decoded, and decoded files are cached in memory, so a 15-minute window
never decodes the whole folder. The Databento source writes its cache in this form.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import shutil
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from nqflow.errors import DataError
from nqflow.market import hours as cal
from nqflow.market.frames import (
    CHAIN_COLUMNS,
    LEG_COLUMNS,
    OPEN_INTEREST_STAT_TYPE,
    RECEIVED,
    RECEIVED_DTYPE,
    TRADE_COLUMNS,
    chain_from_definitions,
    empty_frame,
    future_fills,
    latest_positions,
    latest_rows,
    legs_from_definitions,
    option_fills,
    session_bounds,
    tidy_statistics,
    tidy_trades,
    time_range,
)
from nqflow.parquet import write_parquet
from nqflow.sources.dbn import (
    DECODED_FIELDS,
    SCHEMAS,
    UNDEF_TIMESTAMP,
    DbnFile,
    describe_dbn,
    frame_from_records,
    read_dbn,
    read_dbn_records,
)

log = logging.getLogger(__name__)

#: What the folder scan learned of each file (see `ReplaySource._scan`).
INDEX_NAME = ".nqflow-dbn-index.json"
#: Instrument tables built from each definition file, kept beside the data (`ReplaySource._instrument_tables`).
INSTRUMENTS_DIR = ".nqflow-instruments"
#: The newest tables kept: a year of daily definition files (about 250 KB each), so a backtest
#: of a year builds each day's once; the live path wants today's and yesterday's.
KEPT_INSTRUMENT_TABLES = 300


class ReplaySource:
    """A folder of DBN files, read as databento.DBNStore reads them, exactly as live data is."""

    name = "replay"

    def __init__(self, folder: str | Path, cache_files: int = 12, allow_empty: bool = False):
        self.folder = Path(folder)
        if allow_empty:
            self.folder.mkdir(parents=True, exist_ok=True)
        if not self.folder.is_dir():
            raise DataError(
                f"replay folder {self.folder} does not exist; generate the sample with "
                f"`make demo` or point data.replay_dir at a folder of Databento DBN files"
            )
        self.files = self._scan()
        if not self.files and not allow_empty:
            raise DataError(
                f"replay folder {self.folder} holds no .dbn or .dbn.zst files of schemas "
                f"{', '.join(SCHEMAS)}; download them from Databento or run `make demo`"
            )
        self._cache: OrderedDict[Path, pd.DataFrame] = OrderedDict()
        self._cache_files = cache_files
        # Built chains are kept for the few latest days only: a backtest walks forward in time,
        # and a session reads three sets of files (its trades' two days, its own for the walls,
        # the two days before for the futures' close), the last of which the session before read.
        self._chains: OrderedDict[tuple[Path, ...], tuple[pd.DataFrame, pd.DataFrame]] = OrderedDict()
        self._tables: OrderedDict[Path, tuple[pd.DataFrame, pd.DataFrame]] = OrderedDict()
        self._chain_days = 6
        self._last_built: BuiltTables | None = None  # what the next definition file's tables reuse

    def _scan(self) -> list[DbnFile]:
        """Every DBN file's schema and time range. Reading a file's metadata means opening its zstd
        stream (about 20 ms), and every window's notebook is a new process, so what was read is
        kept in `INDEX_NAME` beside the files, keyed by name, size and modification time: a
        changed or new file is read again, and an unwritable folder just goes without."""
        paths = sorted(_dbn_paths(self.folder))
        index_path = self.folder / INDEX_NAME
        try:
            known = json.loads(index_path.read_text()) if index_path.exists() else {}
        except (OSError, ValueError):
            known = {}
        entries, index = [], {}
        for path in paths:
            stat = path.stat()
            key = path.relative_to(self.folder).as_posix()
            stamp = [stat.st_size, stat.st_mtime_ns]
            cached = known.get(key)
            if cached and cached["stamp"] == stamp:
                entry = (
                    DbnFile(path, cached["schema"], pd.Timestamp(cached["start"]), pd.Timestamp(cached["end"]))
                    if cached["schema"]
                    else None
                )
            else:
                entry = describe_dbn(path)
            index[key] = {
                "stamp": stamp,
                "schema": entry.schema if entry else None,
                "start": entry.start.isoformat() if entry else None,
                "end": entry.end.isoformat() if entry else None,
            }
            if entry is not None:
                entries.append(entry)
        if index != known:
            try:
                partial = index_path.with_suffix(f".{os.getpid()}.partial")
                partial.write_text(json.dumps(index))
                partial.replace(index_path)  # atomic: a reader never sees half an index
            except OSError:
                pass
        return entries

    def rescan(self) -> None:
        """Read the folder again: files another process wrote since (the live stream's)."""
        self.files = self._scan()

    def forget_decoded(self) -> None:
        """Drop the decoded files and chains kept in memory (a long-running reader that took
        what it needs: the live stream keeps its session's chain itself)."""
        self._cache.clear()
        self._chains.clear()
        self._tables.clear()
        self._last_built = None

    def add(self, path: Path) -> None:
        """Take in a file written after the folder was scanned (the Databento cache does this)."""
        entry = describe_dbn(Path(path))
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
        """Chain and spread legs from the definition files overlapping [start, end): each file's
        table (`_file_tables`: built once, kept beside the data), combined as their records would
        be (the latest definition of each instrument wins), kept for the last few sets of files."""
        files = self._overlapping("definition", start, end)
        key = tuple(f.path for f in files)
        if key in self._chains:
            self._chains.move_to_end(key)
            return self._chains[key]
        self._chains[key] = combine_instrument_tables([self._file_tables(f) for f in files])
        if len(self._chains) > self._chain_days:
            self._chains.popitem(last=False)
        return self._chains[key]

    def _file_tables(self, entry: DbnFile) -> tuple[pd.DataFrame, pd.DataFrame]:
        """One definition file's instrument table (chain and legs, each row with the time of the
        definition it came from: `instrument_tables`): read back when a process built it before
        (every window's notebook is a new process; a backtest reads each day for two sessions),
        else built from the decoded records and kept."""
        if entry.path in self._tables:
            self._tables.move_to_end(entry.path)
            return self._tables[entry.path]
        tables = self._instrument_tables(entry)
        if tables is None:
            # The last file built in this process is usually the day before (a backtest's worker
            # walks its days in order; the live path builds today's after yesterday's).
            self._last_built = instrument_tables_from_records(
                read_dbn_records(entry.path, "definition")[0], self._last_built
            )
            tables = self._last_built.tables
            self._keep_instrument_tables(entry, tables)
        self._tables[entry.path] = tables
        if len(self._tables) > self._chain_days:
            self._tables.popitem(last=False)
        return tables

    def _instrument_table_path(self, entry: DbnFile) -> Path:
        """Where the instrument table built from a definition file is kept: named by the file's
        name, size and modification time, so a changed file (the live stream's, a top-up) names
        another table."""
        return self.folder / INSTRUMENTS_DIR / files_digest([entry])

    def _instrument_tables(self, entry: DbnFile) -> tuple[pd.DataFrame, pd.DataFrame] | None:
        """The instrument table a process built before from this file, or None. Read back in the
        tidy frames' own dtypes; a table of an older layout (no definition times) is built again."""
        folder = self._instrument_table_path(entry)
        try:
            chain = pd.read_parquet(folder / "chain.parquet")
            legs = pd.read_parquet(folder / "legs.parquet")
            chain = chain.astype({**CHAIN_COLUMNS, RECEIVED: RECEIVED_DTYPE})[[*CHAIN_COLUMNS, RECEIVED]]
            legs = legs.astype({**LEG_COLUMNS, RECEIVED: RECEIVED_DTYPE})[[*LEG_COLUMNS, RECEIVED]]
        except (OSError, ValueError, KeyError):  # never written, half gone, unreadable or older: built again
            return None
        return chain, legs

    def _keep_instrument_tables(self, entry: DbnFile, tables: tuple[pd.DataFrame, pd.DataFrame]) -> None:
        folder = self._instrument_table_path(entry)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for name, frame in (("legs", tables[1]), ("chain", tables[0])):  # chain last: read first
                write_parquet(frame, folder / f"{name}.parquet")
        except OSError:  # an unwritable folder just goes without
            return
        _prune(folder.parent, KEPT_INSTRUMENT_TABLES)

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
        start, end = session_bounds(trade_date)
        return self._chain(start, end)

    def spread_legs(self, trade_date: dt.date) -> pd.DataFrame:
        """Leg definitions of the session's spreads (`legs_from_definitions`)."""
        start, end = session_bounds(trade_date)
        return self._chain_and_legs(start, end)[1]

    def trades(self, start, end) -> pd.DataFrame:
        """All trades (options and futures) in [start, end), joined with their definitions."""
        start, end = time_range(start, end)
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
        start, end = session_bounds(trade_date)
        raw = self._records("statistics", start, end)
        columns = {"instrument_id": "int64", "open_interest": "int64", "ts_event": "datetime64[ns, UTC]"}
        if raw.empty:
            return empty_frame(columns)
        # Several messages for one option in a morning (a preliminary figure, then the final): the
        # last received counts. Ordered by instrument, so every source gives the same frame.
        oi = raw[raw["stat_type"] == OPEN_INTEREST_STAT_TYPE].sort_values("ts_recv", kind="stable")
        oi = oi.drop_duplicates("instrument_id", keep="last").sort_values("instrument_id", kind="stable")
        return pd.DataFrame(
            {
                "instrument_id": oi["instrument_id"].astype("int64"),
                "open_interest": oi["quantity"].astype("int64"),
                "ts_event": pd.to_datetime(oi["ts_event"], utc=True),
            }
        ).reset_index(drop=True)

    def statistics(self, trade_date: dt.date) -> pd.DataFrame:
        start, end = session_bounds(trade_date)
        raw = self._records("statistics", start, end)
        if not raw.empty:
            ts = pd.to_datetime(raw["ts_event"], utc=True)
            raw = raw[(ts >= start) & (ts < end)]
        return tidy_statistics(raw)

    def available_end(self, schema: str = "trades") -> pd.Timestamp | None:
        """Where the folder's `schema` files end (None: it holds none): files on disk are all
        there is, so a window past this is not published, and never read as a quiet market."""
        ends = [f.end for f in self.files if f.schema == schema]
        return max(ends) if ends else None

    def published(self, end: pd.Timestamp) -> bool:
        data_end = self.available_end("trades")
        return data_end is not None and end <= data_end

    def describe_end(self) -> str:
        """Where the data ends, in words, for a window refused as not published yet."""
        data_end = self.available_end("trades")
        if data_end is None:
            return f"the replay folder {self.folder} holds no trades files"
        return f"the replay folder {self.folder} ends at {data_end:%Y-%m-%d %H:%M}Z"

    def check_budget(self, pulls) -> float:
        """Reading files costs nothing."""
        return 0.0

    def estimate_cost(self, schema: str, start: pd.Timestamp, end: pd.Timestamp) -> float:
        return 0.0

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
        sessions = cal.sessions(first, last)
        # Every session against every file at once: a year's 250 sessions and files row by row
        # took 0.45 s, before a backtest's first task.
        starts = np.array([f.start.value for f in trade_files], dtype="int64")
        ends = np.array([f.end.value for f in trade_files], dtype="int64")
        opens = sessions["market_open"].to_numpy(dtype="datetime64[ns]").astype("int64")
        closes = sessions["market_close"].to_numpy(dtype="datetime64[ns]").astype("int64")
        covered = ((starts[None, :] < closes[:, None]) & (ends[None, :] > opens[:, None])).any(axis=1)
        return [day for day, hit in zip(sessions.index, covered.tolist()) if hit]


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


def instrument_tables(definitions: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One definition file's chain and spread legs, each row with the time (`RECEIVED`) of the
    definition it was taken from (`chain_from_definitions`, `legs_from_definitions`): the
    definition that `instrument_tables_from_records`, which builds them, is held to."""
    return chain_from_definitions(definitions, received=True), legs_from_definitions(definitions, received=True)


#: A definition record's fields that say when it was sent, not what it defines: a day's file
#: sends every instrument again, with new times.
_SENT_AT = ("ts_recv", "ts_event")
_DEFINITION_FIELDS = DECODED_FIELDS["definition"]


@dataclass(frozen=True)
class BuiltTables:
    """A definition file's instrument tables (`instrument_tables`) and, row for row, the key and
    the contents (`_contents`) of the record each row was built from (the latest of its key): what
    another day's file reuses (`instrument_tables_from_records`). `reused` counts the rows taken
    from another day's tables."""

    chain: pd.DataFrame
    legs: pd.DataFrame
    chain_keys: np.ndarray
    chain_contents: np.ndarray
    leg_keys: np.ndarray
    leg_contents: np.ndarray
    reused: int = 0

    @property
    def tables(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        return self.chain, self.legs


def instrument_tables_from_records(records: np.ndarray, previous: BuiltTables | None = None) -> BuiltTables:
    """`instrument_tables` of a definition file's records (`read_dbn_records`), with every row whose
    record defines what its row in `previous` (another day's file) was built from taken from
    there, its time renewed: a day's file sends the day before's 13,000 definitions again, a few
    new or changed. Equal to the tables built from every record (tests/test_data.py). Records
    are picked by position and only the fields compared are copied (taking whole 520-byte
    records cost more than building the rows)."""
    names = records.dtype.names or ()
    received = _received(records)
    ids = records["instrument_id"].astype("int64")
    contents = _contents(records)
    chain_at = latest_positions(received, [ids])
    chain_keys, chain_contents = ids[chain_at], contents[chain_at]
    chain, chain_reused = _reusing(
        records,
        chain_at,
        chain_keys,
        chain_contents,
        None if previous is None else (previous.chain, previous.chain_keys, previous.chain_contents),
        lambda chosen: chain_from_definitions(_definitions(chosen), received=True),
    )
    if "leg_count" in names:
        spreads = np.flatnonzero(records["leg_count"] > 0)
        leg_index = records["leg_index"].astype("int64")
        leg_at = spreads[latest_positions(received[spreads], [ids[spreads], leg_index[spreads]])]
        leg_keys = (ids[leg_at] << 8) + leg_index[leg_at]  # a leg index is one byte: keys in (id, leg) order
    else:  # an older DBN version's definitions list no legs
        leg_at = leg_keys = np.empty(0, dtype="int64")
    leg_contents = contents[leg_at]
    legs, legs_reused = _reusing(
        records,
        leg_at,
        leg_keys,
        leg_contents,
        None if previous is None else (previous.legs, previous.leg_keys, previous.leg_contents),
        lambda chosen: legs_from_definitions(_definitions(chosen), received=True),
    )
    return BuiltTables(chain, legs, chain_keys, chain_contents, leg_keys, leg_contents, chain_reused + legs_reused)


def _received(records: np.ndarray) -> np.ndarray:
    """Records' ``ts_recv`` as `latest_positions` orders them: an undefined time the greatest."""
    stamps = records["ts_recv"]
    return np.where(stamps == UNDEF_TIMESTAMP, np.iinfo("int64").max, stamps.astype("int64"))


def _definitions(records: np.ndarray) -> pd.DataFrame:
    return frame_from_records(records, _DEFINITION_FIELDS)


def _contents(records: np.ndarray) -> np.ndarray:
    """What each record defines, as a row of 64-bit words: its decoded fields but the times it was
    sent (`_SENT_AT`), packed, so two records compare in one pass of integers."""
    names = [n for n in _DEFINITION_FIELDS if n not in _SENT_AT and n in (records.dtype.names or ())]
    words = -(-sum(records.dtype[n].itemsize for n in names) // 8)
    packed = np.zeros(
        len(records),
        dtype=np.dtype({"names": names, "formats": [records.dtype[n] for n in names], "itemsize": words * 8}),
    )
    for name in names:
        packed[name] = records[name]
    return packed.view("uint64").reshape(len(records), words)  # (a file of no records: no rows)


def _reusing(
    records: np.ndarray,
    at: np.ndarray,
    keys: np.ndarray,
    contents: np.ndarray,
    previous: tuple[pd.DataFrame, np.ndarray, np.ndarray] | None,
    build: Callable[[np.ndarray], pd.DataFrame],
) -> tuple[pd.DataFrame, int]:
    """A table of the `records` `at` (one per key, in key order; `keys` and `contents` theirs): the
    rows of `previous` (a table and, row for row, its records' keys and contents) whose records
    define the same, their times renewed, and the rest built (`build`), in key order. With the
    number of rows reused."""
    if previous is None or not len(previous[1]) or not len(at):
        return build(records[at]), 0
    table, known, known_contents = previous
    found = np.minimum(np.searchsorted(known, keys), len(known) - 1)
    same = (known[found] == keys) & (known_contents[found] == contents).all(axis=1)
    if not same.any():
        return build(records[at]), 0
    reused = table.take(found[same]).reset_index(drop=True)
    times = frame_from_records(records["ts_recv"][at[same]].view([("ts_recv", "uint64")]), {RECEIVED: "time"})
    reused[RECEIVED] = times[RECEIVED].array
    if same.all():
        return reused, len(reused)
    built = build(records[at[~same]])
    order = np.argsort(np.concatenate([keys[same], keys[~same]]), kind="stable")
    return pd.concat([reused, built], ignore_index=True).take(order).reset_index(drop=True), int(same.sum())


def combine_instrument_tables(tables: list[tuple[pd.DataFrame, pd.DataFrame]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The chain and legs of several definition files from each file's table (`instrument_tables`):
    what `chain_from_definitions` and `legs_from_definitions` give for all their records at once,
    the latest definition of each instrument (each spread leg) winning, without the times."""
    if not tables:
        return empty_frame(CHAIN_COLUMNS), empty_frame(LEG_COLUMNS)
    if len(tables) == 1:
        chain, legs = tables[0]
        return chain.drop(columns=RECEIVED), legs.drop(columns=RECEIVED)

    def latest(frames: list[pd.DataFrame], key: list[str]) -> pd.DataFrame:
        frames = [f for f in frames if len(f)] or frames[:1]
        stacked = pd.concat(frames, ignore_index=True)  # the files in time order: the later wins a tie
        return stacked.take(latest_rows(stacked, key)).drop(columns=RECEIVED).reset_index(drop=True)

    return latest([c for c, _ in tables], ["instrument_id"]), latest([g for _, g in tables], ["spread_id", "leg_index"])


def _prune(folder: Path, keep: int) -> None:
    """Remove all but the `keep` newest tables; another process pruning at once is no error."""
    try:
        tables = sorted(folder.iterdir(), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    except OSError:
        return
    for old in tables[keep:]:
        shutil.rmtree(old, ignore_errors=True)


def _dbn_paths(folder: Path) -> list[Path]:
    """Every DBN file under `folder`, in any sub-folder but the hidden ones (nqflow's own
    indexes and tables, which other processes write and prune while this one walks)."""
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):  # a folder removed mid-walk is skipped, not an error
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found.extend(Path(root) / name for name in files if name.endswith((".dbn", ".dbn.zst")))
    return found


def files_digest(files: list[DbnFile]) -> str:
    """A short digest of some DBN files by name, size and modification time: a regenerated,
    re-downloaded or topped-up file changes it (what stored features and instrument tables
    were built from)."""
    stamps = sorted(f"{f.path.name}:{f.path.stat().st_size}:{f.path.stat().st_mtime_ns}" for f in files)
    return hashlib.sha256("|".join(stamps).encode()).hexdigest()[:16]
