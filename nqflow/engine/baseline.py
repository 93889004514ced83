"""Expected volume by time-of-day slot: a SQLite store kept up to date window by window.

Volumes are recorded per (level, key, session, slot) where level is ``instrument`` (key:
instrument_id), ``expiry`` or ``product`` (key: ``NQ``). A slot is a 15-minute bucket counted
from the session open (`nqflow.market.hours.slot_of`), so baselines survive daylight-saving
changes and half days (a half day simply has fewer slots).

The expiry key is the option symbol root (e.g. ``NQZ6``, ``Q2DX6``) while the expiry is more
than `SHORT_DATED_DAYS` calendar days away, and the days to expiry (``0DTE`` .. ``4DTE``)
from then on. An option's volume grows several-fold in its last days, so against its own
history every expiring weekly would "surge" each day; the usual volume of *the day's expiry*
(0DTE) at this time of day is what a desk compares with. Options that close to expiry are
not judged against their own instrument history either (`nqflow.engine.detect.surge_gate`).

Baseline definition (what a "10x" is measured against): for a key and slot, take the
slot's volume in up to N previous sessions in which that slot was recorded and the key had
already traded (zeros where it did not trade in the slot); drop the single busiest session
when there are at least 5 (one earlier spike must not lift the baseline); the mean of what
is left is the expected volume, and the spread feeds the count model in `nqflow.engine.detect`.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar, cast

import numpy as np
import pandas as pd

from nqflow import sqlite
from nqflow.engine.levels import (  # noqa: F401  (re-exported: the store's keys)
    EXPECTED_COLUMNS,
    LEVELS,
    NO_KEYS,
    PRODUCT_KEY,
    SHORT_DATED_DAYS,
    keys_by,
    level_keys,
    no_expected_volumes,
    slot_volumes,
    window_keys,
    window_keys_by,
)
from nqflow.errors import DataError
from nqflow.market import hours as cal
from nqflow.market.frames import option_fills
from nqflow.parquet import write_parquet

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS baseline_volume (
    level TEXT NOT NULL, key TEXT NOT NULL, session TEXT NOT NULL, slot INTEGER NOT NULL,
    volume INTEGER NOT NULL, PRIMARY KEY (level, key, session, slot));
CREATE INDEX IF NOT EXISTS baseline_volume_slot ON baseline_volume (slot, session);
CREATE INDEX IF NOT EXISTS baseline_volume_slot_key ON baseline_volume (slot, level, key, session);
CREATE TABLE IF NOT EXISTS baseline_slot (
    session TEXT NOT NULL, slot INTEGER NOT NULL, PRIMARY KEY (session, slot));
CREATE TABLE IF NOT EXISTS baseline_first_seen (
    level TEXT NOT NULL, key TEXT NOT NULL, session TEXT NOT NULL, PRIMARY KEY (level, key));
"""


def expected_volume(history: pd.DataFrame, max_sessions: int) -> pd.DataFrame:
    """Summarise per-session slot volumes into the expected volume per (level, key).

    `history` has columns level, key, session, volume (zeros included: one row per session
    the key counts in). Uses each key's latest `max_sessions` sessions. Returns
    EXPECTED_COLUMNS (`summarise`).
    """
    if history.empty:
        return summarise(pd.DataFrame(columns=["level", "key", "n", "total", "total2", "top"]))
    recent = history.sort_values("session", kind="stable").groupby(["level", "key"], sort=False).tail(max_sessions)
    volume = recent["volume"].astype(float)
    grouped = pd.DataFrame({"level": recent["level"], "key": recent["key"], "v": volume, "v2": volume**2}).groupby(
        ["level", "key"], sort=False
    )
    return summarise(
        grouped.agg(n=("v", "size"), total=("v", "sum"), total2=("v2", "sum"), top=("v", "max")).reset_index()
    )


def summarise(moments: pd.DataFrame) -> pd.DataFrame:
    """Expected volume from a key's slot-volume moments over its n sessions of history.

    `moments`: level, key, n (sessions, zeros included), total, total2 (sum of squares) and top
    (largest). Returns level, key, history_sessions (n), expected (trimmed mean: the busiest
    session dropped when n >= 5), mean, and variance of the kept sessions. The one definition
    of the baseline: `expected_volume` (from rows) and `BaselineStore.expected` (sums taken in
    SQLite) both end here.
    """
    if moments.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in EXPECTED_COLUMNS})
    n = moments["n"].to_numpy(dtype=float)
    expected, mean, variance = _summarised(n, *(moments[c].to_numpy(dtype=float) for c in ("total", "total2", "top")))
    return pd.DataFrame(
        {
            "level": moments["level"].to_numpy(),
            "key": moments["key"].to_numpy(),
            "history_sessions": n.astype(int),
            "expected": expected,
            "mean": mean,
            "variance": variance,
        }
    )


def _summarised(
    n: np.ndarray, total: np.ndarray, total2: np.ndarray, top: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`summarise`'s expected, mean and variance from the moments as float arrays."""
    trim = n >= 5
    kept_n = n - trim
    kept_sum = total - np.where(trim, top, 0.0)
    kept_sum2 = total2 - np.where(trim, top**2, 0.0)
    expected = kept_sum / kept_n
    variance = np.where(kept_n > 1, (kept_sum2 - kept_n * expected**2) / np.maximum(kept_n - 1, 1), expected)
    return expected, total / n, np.maximum(variance, 0.0)


class _SlotHistory:
    """What both baseline stores answer alike, from their `expected_table` and the number of
    slots each session recorded (`_slot_counts`)."""

    def expected_table(
        self,
        session: dt.date,
        slots: list[int],
        max_sessions: int,
        keys: dict[int, pd.DataFrame] | pd.DataFrame | None = None,
    ) -> pd.DataFrame:
        raise NotImplementedError

    def _slot_counts(self) -> dict[str, int]:
        raise NotImplementedError

    def expected(
        self,
        session: dt.date,
        slots: list[int],
        max_sessions: int,
        keys: dict[int, pd.DataFrame] | pd.DataFrame | None = None,
    ) -> dict[int, pd.DataFrame]:
        """`expected_table` split by slot: each slot's EXPECTED_COLUMNS frame."""
        return split_by_slot(self.expected_table(session, slots, max_sessions, keys), slots)

    def expected_by_window(
        self, session: dt.date, window_slots: Sequence[int] | np.ndarray, max_sessions: int, keys: pd.DataFrame
    ) -> pd.DataFrame:
        """Every window's expected volumes as one frame (``window``, its position in
        `window_slots`, and EXPECTED_COLUMNS): one `expected_table` for the windows' slots, with
        `keys` one frame of slot, level and key, joined to each window by its slot. What
        `nqflow.engine.features.with_expected` takes whole, never split into per-window frames."""
        slots = np.asarray(window_slots, dtype="int64")
        if not len(slots):
            return no_expected_volumes()
        table = self.expected_table(session, sorted(set(slots.tolist())), max_sessions, keys)
        windows = pd.DataFrame({"window": np.arange(len(slots), dtype="int64"), "slot": slots})
        return windows.merge(table, on="slot")[["window", *EXPECTED_COLUMNS]]

    def complete_sessions(self) -> set[str]:
        """Sessions whose every slot is recorded."""
        return {
            day for day, n in self._slot_counts().items() if n >= len(cal.session_windows(dt.date.fromisoformat(day)))
        }


class BaselineStore(_SlotHistory):
    """Per-slot volume history in SQLite (the same file as the scheduler's state by default)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with sqlite.connect(self.path) as conn:
            conn.executescript(_SCHEMA)

    def record(self, session: dt.date, slots: list[int], volumes: pd.DataFrame, flush: bool = True) -> None:
        """Record the volumes of whole slots of a session. Idempotent: re-recording replaces.
        Rows of `volumes` outside `slots` are ignored, also for when a key was first seen.
        (`flush` is for `ParquetBaseline`'s sake: here every record is committed.)"""
        day = str(session)
        volumes = volumes[volumes["slot"].isin(slots)]
        level, key = volumes["level"].astype(str).tolist(), volumes["key"].astype(str).tolist()
        with sqlite.connect(self.path) as conn:
            conn.executemany("DELETE FROM baseline_volume WHERE session = ? AND slot = ?", [(day, s) for s in slots])
            conn.executemany(
                "INSERT INTO baseline_volume (level, key, session, slot, volume) VALUES (?, ?, ?, ?, ?)",
                zip(
                    level,
                    key,
                    [day] * len(level),
                    volumes["slot"].astype(int).tolist(),
                    volumes["volume"].astype(int).tolist(),
                ),
            )
            conn.executemany(
                "INSERT OR IGNORE INTO baseline_slot (session, slot) VALUES (?, ?)", [(day, s) for s in slots]
            )
            conn.executemany(
                "INSERT INTO baseline_first_seen (level, key, session) VALUES (?, ?, ?) "
                "ON CONFLICT (level, key) DO UPDATE SET session = excluded.session WHERE excluded.session < session",
                [(lv, k, day) for lv, k in dict.fromkeys(zip(level, key))],
            )

    def flush(self) -> None:
        """Nothing to do: every record is committed (`ParquetBaseline.flush` writes its index)."""

    def _slot_counts(self) -> dict[str, int]:
        with sqlite.connect(self.path) as conn:
            return dict(conn.execute("SELECT session, COUNT(*) FROM baseline_slot GROUP BY session").fetchall())

    def recorded_slots(self, session: dt.date) -> set[int]:
        with sqlite.connect(self.path) as conn:
            rows = conn.execute("SELECT slot FROM baseline_slot WHERE session = ?", (str(session),)).fetchall()
        return {r[0] for r in rows}

    def expected_table(
        self,
        session: dt.date,
        slots: list[int],
        max_sessions: int,
        keys: dict[int, pd.DataFrame] | pd.DataFrame | None = None,
    ) -> pd.DataFrame:
        """Expected volume (EXPECTED_COLUMNS) per slot of `session`, from up to `max_sessions`
        earlier sessions in which the slot was recorded (the module doc's definition).

        `keys` maps a slot to the (level, key) pairs wanted there (product is always added); a
        slot it leaves out gets every key seen before. `keys` may also be one frame of slot, level
        and key (a whole session's), where a slot it lacks wants the product only. A key counts
        the sessions from the one it first traded in, zeros included. The sums are taken in
        SQLite over the wanted keys only, so a whole session's slots cost one query and little memory.
        """
        day = str(session)
        with sqlite.connect(self.path) as conn:
            recorded = pd.read_sql_query(
                "SELECT slot, session FROM baseline_slot WHERE session < ?", conn, params=[day]
            )
            pairs = asked_pairs(slots, keys)
            if pairs is None:  # a slot wants every key seen before
                first_seen = pd.read_sql_query(
                    "SELECT level, key, session AS first_session FROM baseline_first_seen WHERE session < ?",
                    conn,
                    params=[day],
                )
            else:  # a window's few hundred keys, not every key ever seen (22,000 after 20 sessions)
                conn.execute("CREATE TEMP TABLE asked (level TEXT, key TEXT)")
                conn.executemany("INSERT INTO asked VALUES (?, ?)", zip(pairs["level"].tolist(), pairs["key"].tolist()))
                first_seen = pd.read_sql_query(
                    "SELECT f.level, f.key, f.session AS first_session FROM asked a JOIN baseline_first_seen f "
                    "ON f.level = a.level AND f.key = a.key WHERE f.session < ?",
                    conn,
                    params=[day],
                )
            wanted = wanted_keys(recorded, first_seen, slots, max_sessions, keys)
            conn.execute(
                "CREATE TEMP TABLE wanted (row INTEGER PRIMARY KEY, slot INTEGER, level TEXT, key TEXT, since TEXT)"
            )
            # Plain lists: iterating Arrow-backed columns row by row is slow.
            conn.executemany(
                "INSERT INTO wanted VALUES (?, ?, ?, ?, ?)",
                zip(
                    range(len(wanted)),
                    wanted["slot"].tolist(),
                    wanted["level"].tolist(),
                    wanted["key"].tolist(),
                    wanted["since"].tolist(),
                ),
            )
            # CROSS JOIN keeps the planner scanning `wanted` and seeking the index for each row.
            sums = pd.read_sql_query(
                "SELECT w.row, SUM(v.volume) AS total, SUM(v.volume * v.volume) AS total2, MAX(v.volume) AS top "
                "FROM wanted w CROSS JOIN baseline_volume v INDEXED BY baseline_volume_slot_key "
                "WHERE v.slot = w.slot AND v.level = w.level AND v.key = w.key AND v.session >= w.since "
                "AND v.session < ? GROUP BY w.row",
                conn,
                params=[day],
            ).set_index("row")
        return expected_rows(wanted, sums)


class ParquetBaseline(_SlotHistory):
    """The same per-slot volume history as `BaselineStore`, in a folder of Parquet files: one per
    session (``session=YYYY-MM-DD.parquet``: level, key, slot, volume) and an index of the slots
    each session recorded and the session each key first traded in (``index-slots.parquet``,
    ``index-first-seen.parquet``). A backtest writes a session's 20,000 slot volumes in one file
    instead of 20,000 rows, and reads a session's history in one pass over the files it needs
    (kept in memory, as a backtest walks forward); the expected volumes are the same numbers
    (`wanted_keys` and `summarise` serve both stores, and a test compares them).

    Files are written beside and renamed into place, a session's file before the index that
    names it, so a reader never sees half a session. A session's file has one writer (in a
    backtest, the worker task that decoded the session: `write_session_volumes`), the index
    one writer at a time (the backtest's driver, which names each session once its file is in).
    """

    SLOTS, FIRST_SEEN = "index-slots.parquet", "index-first-seen.parquet"

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._slots = _read_or(self.folder / self.SLOTS, {"session": str, "slot": "int64"})
        self._first_seen = _read_or(self.folder / self.FIRST_SEEN, {"level": str, "key": str, "first_session": str})
        self._pending: list[tuple[str, list[int], pd.DataFrame]] = []

    def record(self, session: dt.date, slots: list[int], volumes: pd.DataFrame, flush: bool = True) -> None:
        """Record the volumes of whole slots of a session (replacing what it held for them);
        `flush=False` leaves the index to `flush` (a backtest records many sessions, then flushes)."""
        self.index_session(session, *write_session_volumes(self.folder, session, slots, volumes), flush=flush)

    def index_session(self, session: dt.date, slots: list[int], seen: pd.DataFrame, flush: bool = True) -> None:
        """Name in the index a session whose file `write_session_volumes` wrote (a backtest's
        worker writes it, the driver indexes it): its slots and the (level, key) pairs it traded.
        Taken in at the next read or `flush`, all at once (one sort, not one per session)."""
        self._pending.append((str(session), list(slots), seen))
        if flush:
            self.flush()

    def _take_pending(self) -> None:
        # The same frames as taking each session in as it came: rows in arrival order, each
        # slot once, each key with its earliest session (stable sort, first kept).
        if not self._pending:
            return
        slots = [pd.DataFrame({"session": day, "slot": pd.Series(s, dtype="int64")}) for day, s, _ in self._pending]
        self._slots = pd.concat([self._slots, *slots], ignore_index=True).drop_duplicates(ignore_index=True)
        seen = [keys[["level", "key"]].assign(first_session=day) for day, _, keys in self._pending]
        self._first_seen = (
            pd.concat([self._first_seen, *seen], ignore_index=True)
            .sort_values("first_session", kind="stable")
            .drop_duplicates(["level", "key"], ignore_index=True)
        )
        self._pending = []

    def flush(self) -> None:
        """Write the index (after the session files it names)."""
        self._take_pending()
        _write_beside(self._slots, self.folder / self.SLOTS)
        _write_beside(self._first_seen, self.folder / self.FIRST_SEEN)

    def _slot_counts(self) -> dict[str, int]:
        self._take_pending()
        return {str(day): int(n) for day, n in self._slots.groupby("session").size().items()}

    def recorded_slots(self, session: dt.date) -> set[int]:
        self._take_pending()
        return set(self._slots.loc[self._slots["session"] == str(session), "slot"].tolist())

    def expected_table(
        self,
        session: dt.date,
        slots: list[int],
        max_sessions: int,
        keys: dict[int, pd.DataFrame] | pd.DataFrame | None = None,
    ) -> pd.DataFrame:
        """`BaselineStore.expected`, summed in memory over the chosen sessions' files."""
        self._take_pending()
        day = str(session)
        recorded = self._slots[self._slots["session"] < day]
        wanted = wanted_keys(recorded, seen_keys(self._first_seen), slots, max_sessions, keys, before=day)
        sums = pd.DataFrame(columns=["total", "total2", "top"])
        if len(wanted):
            days = sorted(set(recorded.loc[recorded["session"] >= wanted["since"].min(), "session"]))
            history = [self._recorded(d) for d in days]
            # Joined on one integer per (level, key, slot): a merge on two text columns over
            # 20 sessions' rows costs ten times more.
            joint = np.concatenate([h[0] for h in history])
            day_number = np.repeat([_day_number(d) for d in days], [len(h[0]) for h in history])
            volume = np.concatenate([h[1] for h in history])
            sums = _sums_by_row(
                wanted["number"].to_numpy(dtype="int64") * _SLOTS_PER_KEY + wanted["slot"].to_numpy(dtype="int64"),
                _day_numbers(wanted["since"]),
                joint,
                day_number,
                volume,
            )
        return expected_rows(wanted, sums)

    def expected_of_rows(
        self, session: dt.date, slot: np.ndarray, level: pd.Series, key: pd.Series, max_sessions: int
    ) -> dict[str, np.ndarray]:
        """The expected volume of each asked (slot, level, key), row for row: ``history_sessions``
        (0 without history) and ``expected``, ``mean`` and ``variance`` (NaN without): what
        `expected_table` gives those keys (a test holds them equal), found by key number instead
        of through frames of text. A backtest asks it for every volume row of a session's
        features (`nqflow.engine.features.with_expected_rows`)."""
        self._take_pending()
        day = str(session)
        rows = len(slot)
        found = {"history_sessions": np.zeros(rows, dtype="int64")}
        found.update({c: np.full(rows, np.nan) for c in ("expected", "mean", "variance")})
        if not rows:
            return found
        slot = np.asarray(slot, dtype="int64")
        recorded = self._slots[self._slots["session"] < day]
        chosen = _chosen_sessions(recorded, sorted(set(slot.tolist())), max_sessions)
        # Each distinct (key, slot) once: windows shorter than a slot ask for it twice.
        asked, joint = pd.factorize(_key_numbers(level, key) * _SLOTS_PER_KEY + slot)
        joint = np.asarray(joint, dtype="int64")
        asked_slot = joint % _SLOTS_PER_KEY
        seen = seen_keys(self._first_seen)
        first = seen.first_rows(joint // _SLOTS_PER_KEY, day)  # traded before this session only
        count = np.zeros(len(joint), dtype="int64")
        has_first = first >= 0
        count[has_first] = _sessions_since(chosen, asked_slot[has_first], seen.first_days(first[has_first]))
        oldest = _oldest_chosen(chosen)
        kept = np.flatnonzero(count > 0)  # no chosen session of its slot counts it: no history
        if not len(kept):
            return found
        since_text = oldest.reindex(asked_slot[kept]).to_numpy(dtype=object)  # each key's slot's oldest session
        days = sorted(set(recorded.loc[recorded["session"] >= min(since_text), "session"]))
        since = _day_numbers(pd.Series(since_text, dtype=object))
        history = [self._recorded(d) for d in days]
        sums = _sums_by_row(
            joint[kept],
            since,
            np.concatenate([h[0] for h in history]),
            np.repeat([_day_number(d) for d in days], [len(h[0]) for h in history]),
            np.concatenate([h[1] for h in history]),
        )
        n = count[kept].astype(float)
        moments = _summarised(n, *(sums[c].to_numpy(dtype=float) for c in ("total", "total2", "top")))
        at = np.full(len(joint), -1, dtype="int64")
        at[kept] = np.arange(len(kept))
        hit = np.flatnonzero(at[asked] >= 0)
        found["history_sessions"][hit] = count[kept].astype("int64")[at[asked[hit]]]
        for name, values in zip(("expected", "mean", "variance"), moments):
            found[name][hit] = values[at[asked[hit]]]
        return found

    @classmethod
    def from_sqlite(cls, sqlite_path: str | Path, folder: str | Path) -> ParquetBaseline:
        """Copy a SQLite baseline (`BaselineStore`) into a new Parquet folder, once: every session's
        volumes and slots and every key's first session; the SQLite file is left as it was."""
        store = cls(folder)
        with sqlite.connect(sqlite_path) as conn:
            volumes = pd.read_sql_query("SELECT level, key, session, slot, volume FROM baseline_volume", conn)
            slots = pd.read_sql_query("SELECT session, slot FROM baseline_slot", conn)
            first_seen = pd.read_sql_query("SELECT level, key, session AS first_session FROM baseline_first_seen", conn)
        by_day = volumes.groupby("session")
        for day, day_slots in slots.groupby("session"):
            rows = by_day.get_group(day) if day in by_day.groups else volumes.iloc[:0]
            store.record(dt.date.fromisoformat(str(day)), day_slots["slot"].tolist(), rows, flush=False)
        store._take_pending()
        store._first_seen = first_seen.astype(str).sort_values("first_session", kind="stable", ignore_index=True)
        store.flush()
        return store

    def _session_path(self, day: str) -> Path:
        return _session_file(self.folder, day)

    def _recorded(self, day: str) -> tuple[np.ndarray, np.ndarray]:
        frame = _session_history(self._session_path(day))
        if frame is None:
            raise DataError(
                f"the baseline folder {self.folder} lists session {day} but its file is gone; "
                f"delete the folder to rebuild the history"
            )
        return frame


#: Files read in this process, by path, with the stamp (size, mtime) they were read at, so a
#: rewritten file is read again: a session's history (a backtest worker reads each one for the
#: 20 sessions after it) and the index (every backtest task opens the store). The least recently
#: used goes first: the index, asked by every session, stays while the histories come and go
#: (let go in the order they came, a year's index of 300,000 keys was read and numbered again
#: every 40 sessions, and each worker kept the old copies numbered in `_SEEN`).
_READ: dict[Path, tuple[tuple[int, int], object]] = {}
_READ_KEPT = 40


def _read_once(path: Path, read: Callable[[Path], T]) -> T | None:
    """`read(path)`, or what it gave while the file is unchanged; None when there is no file."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    stamp = (stat.st_size, stat.st_mtime_ns)
    cached = _READ.pop(path, None)
    if cached is not None and cached[0] == stamp:
        _READ[path] = cached  # now the most recently used
        return cast(T, cached[1])
    value = read(path)
    while len(_READ) >= _READ_KEPT:
        _READ.pop(next(iter(_READ)))
    _READ[path] = (stamp, value)
    return value


def _session_history(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """A session file as (joint key, volume) arrays: the text keys are not kept (they were most
    of a backtest worker's memory)."""

    def read(path: Path) -> tuple[np.ndarray, np.ndarray]:
        frame = pd.read_parquet(path)
        return _joint(frame["level"], frame["key"], frame["slot"]), frame["volume"].to_numpy(dtype=float)

    return _read_once(path, read)


#: A number for each (level, key) this process has met, by level and key, so keys join as integers.
_KEY_NUMBERS: dict[str, dict[str, int]] = {}
_NEXT_KEY_NUMBER = itertools.count()
_SLOTS_PER_KEY = 1 << 12  # more than any session's 15-minute slots


def _joint(level: pd.Series, key: pd.Series, slot: pd.Series) -> np.ndarray:
    """One integer per (level, key, slot): the key's number (`_key_numbers`) times
    `_SLOTS_PER_KEY` plus the slot."""
    return _key_numbers(level, key) * _SLOTS_PER_KEY + slot.to_numpy(dtype="int64")


def _key_numbers(level: pd.Series, key: pd.Series) -> np.ndarray:
    """This process's number of each (level, key). Each distinct key of a level is looked up
    once, in a plain dict (the numbers of a session's 20,000 rows are mostly known already)."""
    if not len(key):
        return np.empty(0, dtype="int64")
    numbers = np.empty(len(key), dtype="int64")
    level_codes, levels = pd.factorize(level.array)
    key_values = key.array
    for code, name in enumerate(levels):
        rows = np.flatnonzero(level_codes == code) if len(levels) > 1 else slice(None)
        key_codes, distinct = pd.factorize(key_values[rows])
        known = _KEY_NUMBERS.setdefault(str(name), {})
        texts = [str(k) for k in distinct.tolist()]
        found = [known.get(text, -1) for text in texts]
        for i in [i for i, number in enumerate(found) if number < 0]:  # keys never met: numbered now
            found[i] = known[texts[i]] = next(_NEXT_KEY_NUMBER)
        numbers[rows] = np.asarray(found, dtype="int64")[key_codes]
    return numbers


class SeenKeys:
    """Every (level, key) a baseline recorded and the session it first traded in (`frame`:
    level, key, first_session; one row per key), looked up by key number (`_key_numbers`). A
    year records 300,000 keys: they are numbered once per index read (`seen_keys`), and a
    session's 13,000 wanted keys are found in a hash table of the numbers, where a merge on the
    two text columns hashed every recorded key again for every session."""

    def __init__(self, frame: pd.DataFrame):
        self.frame = frame
        self._numbers = pd.Index(_key_numbers(frame["level"], frame["key"]))
        self._first_day = _day_numbers(frame["first_session"])
        self._first_session = frame["first_session"].to_numpy(dtype=object)

    def first_rows(self, numbers: np.ndarray, before: str | None = None) -> np.ndarray:
        """For each key number, its row of `frame` (-1: not recorded, or first traded on or
        after the session `before`)."""
        rows = self._numbers.get_indexer(numbers)
        if before is not None:
            rows[(rows >= 0) & (self._first_day[np.maximum(rows, 0)] >= _day_number(before))] = -1
        return rows

    def before(self, day: str | None) -> pd.DataFrame:
        """`frame`'s keys first traded before the session `day` (all of them without one)."""
        return self.frame if day is None else self.frame[self._first_day < _day_number(day)]

    def first_days(self, rows: np.ndarray) -> np.ndarray:
        """The first session (a day number, `_day_number`) of each of `frame`'s `rows`."""
        return self._first_day[rows]

    def first_sessions(self, rows: np.ndarray) -> np.ndarray:
        """The first session (ISO text) of each of `frame`'s `rows`."""
        return self._first_session[rows]


#: The `SeenKeys` of the index frames this process read last, by the frame's identity: every
#: task of a backtest opens the store, and the index read once (`_read_once`) is numbered once.
#: Two are kept (a year's is 300,000 keys): the index now and the one before it, or two stores'.
_SEEN: dict[int, SeenKeys] = {}
_SEEN_KEPT = 2


def seen_keys(first_seen: pd.DataFrame) -> SeenKeys:
    """The `SeenKeys` of a first-seen frame, numbered once while the frame is the one read."""
    cached = _SEEN.pop(id(first_seen), None)
    if cached is not None and cached.frame is first_seen:
        _SEEN[id(first_seen)] = cached  # now the most recently used
        return cached
    made = SeenKeys(first_seen)
    while len(_SEEN) >= _SEEN_KEPT:
        _SEEN.pop(next(iter(_SEEN)))
    _SEEN[id(first_seen)] = made  # it holds the frame, so the identity is not reused meanwhile
    return made


def _sums_by_row(
    wanted_joint: np.ndarray, since: np.ndarray, joint: np.ndarray, day: np.ndarray, volume: np.ndarray
) -> pd.DataFrame:
    """Each wanted row's total, sum of squares and largest volume (columns total, total2, top,
    indexed by row) over the history rows of its (level, key, slot) from its `since` day on.
    The wanted keys are unique, so a history row finds its wanted row in a hash table of them
    (a binary search of 20 sessions' 400,000 rows cost twice the rest), and the sums are
    bincounts: slot volumes are whole numbers, so every sum is exact in any order. A row with
    no history sums to 0 (volumes are never negative)."""
    at = pd.Index(wanted_joint).get_indexer(joint)
    hit = at >= 0
    row = at[hit]
    counted = day[hit] >= since[row]
    row, volume = row[counted], volume[hit][counted]
    top = np.zeros(len(wanted_joint))
    np.maximum.at(top, row, volume)
    return pd.DataFrame(
        {
            "total": np.bincount(row, weights=volume, minlength=len(wanted_joint)),
            "total2": np.bincount(row, weights=volume * volume, minlength=len(wanted_joint)),
            "top": top,
        }
    )


def _day_number(day: str) -> int:
    return (dt.date.fromisoformat(day) - dt.date(1970, 1, 1)).days


def _day_numbers(days: pd.Series) -> np.ndarray:
    """Days since 1970 of ISO date texts, each distinct text parsed once (a session's 20,000
    wanted keys name a few dozen days)."""
    codes, distinct = pd.factorize(days.array)
    numbers = np.array([_day_number(str(day)) for day in distinct], dtype="int64")
    return numbers[codes] if len(codes) else np.empty(0, dtype="int64")


def _read_or(path: Path, columns: dict[str, object]) -> pd.DataFrame:
    """An index file, or an empty frame of its columns."""
    dtypes = {c: (object if t is str else t) for c, t in columns.items()}
    frame = _read_once(path, lambda path: pd.read_parquet(path).astype(dtypes))
    return frame if frame is not None else pd.DataFrame({c: pd.Series(dtype=t) for c, t in dtypes.items()})


def _session_file(folder: Path, day: str) -> Path:
    return folder / f"session={day}.parquet"


def write_session_volumes(
    folder: str | Path, session: dt.date, slots: list[int], volumes: pd.DataFrame
) -> tuple[list[int], pd.DataFrame]:
    """Write a session's file of a Parquet baseline folder (`ParquetBaseline`): the volumes of
    whole slots, replacing what the file held for them. Returns what the index is to name
    (`ParquetBaseline.index_session`): the slots and the (level, key) pairs of the file. Safe
    on any process: a session's file has one writer, the task that decoded the session."""
    path = _session_file(Path(folder), str(session))
    volumes = volumes[volumes["slot"].isin(slots)]
    kept = pd.read_parquet(path).astype({"level": "str", "key": "str"}) if path.exists() else None
    kept = kept[~kept["slot"].isin(slots)] if kept is not None else None
    # The text stays Arrow text (`slot_volumes` makes it so): made into Python strings and back,
    # a session's 60,000 rows cost more than the rest of the write.
    frame = pd.DataFrame(
        {
            "level": volumes["level"].astype("str").array,
            "key": volumes["key"].astype("str").array,
            "slot": volumes["slot"].to_numpy(dtype="int64"),
            "volume": volumes["volume"].to_numpy(dtype="int64"),
        }
    )
    if kept is not None and len(kept):
        frame = pd.concat([kept, frame], ignore_index=True)
    _write_beside(frame, path)
    return list(slots), frame[["level", "key"]].drop_duplicates(ignore_index=True)


def _write_beside(frame: pd.DataFrame, path: Path) -> None:
    write_parquet(frame, path)


SQLITE_SUFFIXES = (".sqlite", ".sqlite3", ".db")


def asked_pairs(slots: list[int], keys: dict[int, pd.DataFrame] | pd.DataFrame | None) -> pd.DataFrame | None:
    """The distinct (level, key) pairs `keys` asks for in `slots`, the product's included (as
    `wanted_keys` reads them, `_asked`); None when a slot wants every key seen before."""
    asked, every_key = _asked(slots, keys)
    return None if every_key else pd.concat(asked, ignore_index=True)[["level", "key"]].drop_duplicates()


def _asked(
    slots: list[int], keys: dict[int, pd.DataFrame] | pd.DataFrame | None
) -> tuple[list[pd.DataFrame], list[int]]:
    """What `keys` asks for in `slots` (`wanted_keys`): frames of (level, key, slot), the product in
    every slot it keys, and the slots it leaves out, which want every key seen before."""
    if isinstance(keys, pd.DataFrame):  # one frame of (slot, level, key); a slot it lacks wants none
        keyed = set(slots)
        asked = [keys[["level", "key", "slot"]].astype({"level": str, "key": str})]
    else:
        keys = keys or {}
        keyed = set(keys)
        present = [slot for slot in slots if slot in keys]
        asked = []
        if present:  # one frame for all slots, converted once
            frame = pd.concat([keys[slot][["level", "key"]] for slot in present], ignore_index=True)
            frame["slot"] = np.repeat(present, [len(keys[slot]) for slot in present]).astype("int64")
            asked.append(frame.astype({"level": str, "key": str}))
    asked.append(pd.DataFrame({"level": "product", "key": PRODUCT_KEY, "slot": [s for s in slots if s in keyed]}))
    return asked, [slot for slot in slots if slot not in keyed]


def wanted_keys(
    recorded: pd.DataFrame,
    first_seen: pd.DataFrame | SeenKeys,
    slots: list[int],
    max_sessions: int,
    keys: dict[int, pd.DataFrame] | pd.DataFrame | None,
    before: str | None = None,
) -> pd.DataFrame:
    """The (slot, level, key) pairs whose history is summed, each with ``first_session``, ``n``
    (sessions it counts, zeros included), ``since`` (the oldest session summed for its slot) and
    ``number`` (`_key_numbers`), from the earlier sessions' recorded slots (columns slot, session)
    and each key's first session (level, key, first_session: a frame or its `SeenKeys`; with
    `before`, keys first traded on or after that session are left out). Every baseline store
    chooses its history here (`BaselineStore.expected`)."""
    chosen = _chosen_sessions(recorded, slots, max_sessions)
    wanted, every_key = _asked(slots, keys)
    if every_key:
        earlier = first_seen.before(before) if isinstance(first_seen, SeenKeys) else first_seen
        wanted.append(earlier[["level", "key"]].merge(pd.DataFrame({"slot": every_key}), how="cross"))
    frame = pd.concat(wanted, ignore_index=True).drop_duplicates()
    frame = frame[frame["slot"].isin(chosen["slot"])]
    numbers = _key_numbers(frame["level"], frame["key"])
    # Only keys traded before, in the wanted order (what an inner merge keeps): a store's kept
    # index is looked up by number; a frame read for this call alone (SQLite's) is merged, not
    # numbered whole.
    if isinstance(first_seen, SeenKeys):
        rows = first_seen.first_rows(numbers, before)
        found = rows >= 0
        frame = frame[found].reset_index(drop=True)
        frame["first_session"] = first_seen.first_sessions(rows[found])
        numbers = numbers[found]
    else:
        if before is not None:
            first_seen = first_seen[first_seen["first_session"] < before]
        frame = frame.assign(number=numbers).merge(first_seen[["level", "key", "first_session"]], on=["level", "key"])
        numbers = frame.pop("number").to_numpy(dtype="int64")
    frame["n"] = _sessions_since(chosen, frame["slot"].to_numpy(dtype="int64"), _day_numbers(frame["first_session"]))
    frame["number"] = numbers
    frame = frame[frame["n"] > 0].reset_index(drop=True)
    frame["since"] = frame["slot"].map(_oldest_chosen(chosen))
    return frame


def _chosen_sessions(recorded: pd.DataFrame, slots: Sequence[int], max_sessions: int) -> pd.DataFrame:
    """Each slot's latest `max_sessions` recorded sessions (rows of `recorded`: slot, session),
    newest first."""
    return (
        recorded[recorded["slot"].isin(slots)]
        .sort_values("session", ascending=False)
        .groupby("slot")
        .head(max_sessions)
    )


def _oldest_chosen(chosen: pd.DataFrame) -> pd.Series:
    """Each slot's oldest chosen session (ISO text), by slot. A slot's chosen sessions are its
    latest recorded ones, so they are exactly the recorded sessions from that one on: one range
    per wanted key. `chosen` is newest first, so a slot's last row is its oldest (a groupby's min
    over the text of the sessions cost a tenth of a backtest session's expected volumes)."""
    oldest = chosen.drop_duplicates("slot", keep="last")
    return pd.Series(oldest["session"].to_numpy(), index=oldest["slot"].to_numpy())


def expected_rows(wanted: pd.DataFrame, sums: pd.DataFrame) -> pd.DataFrame:
    """The expected volumes (``slot`` and EXPECTED_COLUMNS) from the wanted keys (`wanted_keys`)
    and their sums (total, total2, top by wanted row; a key with no row traded zero in every session)."""
    moments = wanted.join(sums).fillna({"total": 0, "total2": 0, "top": 0})
    return summarise(moments).assign(slot=moments["slot"].to_numpy(dtype="int64"))


def split_by_slot(table: pd.DataFrame, slots: list[int]) -> dict[int, pd.DataFrame]:
    """One EXPECTED_COLUMNS frame per slot of an `expected_table`."""
    rows = table.groupby("slot").indices if len(table) else {}
    return {slot: table.take(rows.get(slot, []))[EXPECTED_COLUMNS].reset_index(drop=True) for slot in slots}


def _sessions_since(chosen: pd.DataFrame, slot: np.ndarray, first_day: np.ndarray) -> np.ndarray:
    """For each wanted key's slot and first session (a day number): how many of the slot's
    chosen sessions are on or after it."""

    span = 1_000_000  # > any day number, so slot * span + day orders by slot, then day
    marks = np.sort(chosen["slot"].to_numpy(dtype="int64") * span + _day_numbers(chosen["session"]))
    return np.searchsorted(marks, slot * span + span - 1, side="right") - np.searchsorted(
        marks, slot * span + first_day, side="left"
    )


def session_slot_volumes(
    source, trade_date: dt.date, options: pd.DataFrame | None = None
) -> tuple[list[int], pd.DataFrame]:
    """Every slot of one whole session and its volumes (`slot_volumes`), read from a data source
    (or from the session's option fills, when they are at hand already)."""
    row = cal.sessions(trade_date, trade_date).iloc[0]
    if options is None:
        options = option_fills(source.trades(row.market_open, row.market_close))
    return list(range(len(cal.session_windows(trade_date)))), slot_volumes(options, row.market_open)


def record_session(store: BaselineStore, source, trade_date: dt.date) -> None:
    """Record every slot of one whole session from a data source (used to build or rebuild history)."""
    store.record(trade_date, *session_slot_volumes(source, trade_date))


def ensure_history(
    store: BaselineStore, source, trade_date: dt.date, max_sessions: int, available: list[dt.date] | None = None
) -> list[dt.date]:
    """Make sure the `max_sessions` sessions before `trade_date` that the source has are recorded.

    Sessions already recorded are not read again, so after the first call this costs one
    SQLite query. Returns the sessions it had to read.
    """
    if available is None:
        available = (
            source.sessions_available()
            if hasattr(source, "sessions_available")
            else cal.trading_days(trade_date - dt.timedelta(days=max_sessions * 2), trade_date)
        )
    previous = [d for d in available if d < trade_date][-max_sessions:]
    complete = store.complete_sessions() if previous else set()
    missing = [day for day in previous if str(day) not in complete]
    if missing and hasattr(source, "prepare_sessions"):
        source.prepare_sessions(missing)  # a paid source prices the whole build first, and may refuse it
    for day in missing:
        record_session(store, source, day)
    return missing
