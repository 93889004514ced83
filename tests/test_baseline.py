"""The baseline stores' expected volumes equal the module's definition, computed from raw fills,
and the columnar store (`ParquetBaseline`) gives the SQLite store's numbers, also once migrated."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest

from nqflow.engine.baseline import (
    BaselineStore,
    ParquetBaseline,
    expected_volume,
    record_session,
    slot_volumes,
    window_keys,
)
from nqflow.market import hours as cal
from nqflow.market.frames import option_fills

MAX_SESSIONS = 4
PARTIAL_SLOTS = list(range(10))  # the latest session is recorded only this far (a live day cut short)


def oracle(source, recorded: dict, session, slot: int, max_sessions: int) -> pd.DataFrame:
    """The definition, from fills: the slot's volume in up to N earlier sessions where the slot was
    recorded and the key had already traded (in any recorded slot), zeros filled."""
    volumes = {}
    for day, slots in recorded.items():
        row = cal.sessions(day, day).iloc[0]
        fills = option_fills(source.trades(row.market_open, row.market_close))
        by_slot = slot_volumes(fills, row.market_open)
        volumes[day] = by_slot[by_slot["slot"].isin(slots)]
    first_seen: dict[tuple[str, str], object] = {}
    for day in sorted(volumes):
        for key in volumes[day][["level", "key"]].itertuples(index=False, name=None):
            first_seen.setdefault(key, day)
    sessions = sorted((d for d, slots in recorded.items() if slot in slots and d < session), reverse=True)[
        :max_sessions
    ]
    in_slot = {
        day: frame[frame["slot"] == slot].groupby(["level", "key"], observed=True)["volume"].sum().to_dict()
        for day, frame in volumes.items()
    }
    rows = []
    for key, first in first_seen.items():
        for day in sessions:
            if day >= first:
                volume = int(in_slot[day].get(key, 0))
                rows.append({"level": key[0], "key": key[1], "session": str(day), "volume": volume})
    return expected_volume(pd.DataFrame(rows, columns=["level", "key", "session", "volume"]), max_sessions)


@pytest.fixture(scope="module")
def both_stores(source, tmp_path_factory):
    """The SQLite and the Parquet store, recorded alike: five whole sessions, then the sixth
    only partly (its first slots, window by window, as the monitor records a day cut short)."""
    days = source.sessions_available()[:7]
    folder = tmp_path_factory.mktemp("baseline")
    stores = {"sqlite": BaselineStore(folder / "baseline.sqlite"), "parquet": ParquetBaseline(folder / "columnar")}
    recorded = {}
    for day in days[:5]:
        for store in stores.values():
            record_session(store, source, day)
        recorded[day] = list(range(len(cal.session_windows(day))))
    row = cal.sessions(days[5], days[5]).iloc[0]
    partial = slot_volumes(option_fills(source.trades(row.market_open, row.market_close)), row.market_open)
    for store in stores.values():
        for slot in PARTIAL_SLOTS:
            store.record(days[5], [slot], partial)
    recorded[days[5]] = PARTIAL_SLOTS
    return stores, recorded, days[6]


@pytest.fixture(scope="module", params=["sqlite", "parquet"])
def store_and_record(both_stores, request):
    stores, recorded, session = both_stores
    return stores[request.param], recorded, session


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.astype({"level": str, "key": str}).sort_values(["level", "key"], ignore_index=True)


@pytest.mark.parametrize("slot", [PARTIAL_SLOTS[-1], 40])
@pytest.mark.slow
def test_store_expected_volume_equals_the_definition_from_raw_fills(source, both_stores, slot):
    # Against the SQLite store: the Parquet one gives its numbers in every slot (tested below),
    # and the oracle reads every session's fills, so it runs once per slot.
    stores, recorded, session = both_stores
    store = stores["sqlite"]
    got = store.expected(session, [slot], MAX_SESSIONS)[slot]
    want = oracle(source, recorded, session, slot, MAX_SESSIONS)
    assert len(want) > 100 and (want["expected"] > 0).any()
    assert set(want["history_sessions"]) <= set(range(1, MAX_SESSIONS + 1))
    pdt.assert_frame_equal(_sorted(got), _sorted(want), check_dtype=False)


def test_store_limits_to_the_keys_a_window_trades_and_always_has_the_product(source, store_and_record):
    store, recorded, session = store_and_record
    row = cal.sessions(session, session).iloc[0]
    slot = 40
    start = row.market_open + pd.Timedelta(minutes=cal.SLOT_MINUTES * slot)
    fills = option_fills(source.trades(start, start + pd.Timedelta(minutes=cal.SLOT_MINUTES)))
    keys = window_keys(fills)
    got = store.expected(session, [slot, 41], MAX_SESSIONS, {slot: keys})
    everything = _sorted(store.expected(session, [slot], MAX_SESSIONS)[slot])
    wanted = pd.concat([keys, pd.DataFrame({"level": ["product"], "key": ["NQ"]})]).astype(str)
    limited = _sorted(got[slot])
    assert set(zip(limited["level"], limited["key"])) <= set(zip(wanted["level"], wanted["key"]))
    assert ("product", "NQ") in set(zip(limited["level"], limited["key"]))
    pdt.assert_frame_equal(limited, everything.merge(limited[["level", "key"]], on=["level", "key"]), check_dtype=False)
    assert len(got[41]) > len(limited)  # a slot without keys gets every key seen before
    # every slot asked with its keys: the store reads only those keys' first sessions, same numbers
    alone = _sorted(store.expected(session, [slot], MAX_SESSIONS, {slot: keys})[slot])
    pdt.assert_frame_equal(alone, limited)


def test_store_with_no_earlier_session_expects_nothing(source, store_and_record):
    store, recorded, _ = store_and_record
    first = min(recorded)
    got = store.expected(first, [0, 1], MAX_SESSIONS)
    assert list(got) == [0, 1] and all(frame.empty for frame in got.values())


def _every_slot(store, session, keys=None) -> tuple[list[int], pd.DataFrame]:
    """The slots a store answers for, and its expected volumes in all of them as one frame with a
    `slot` column (compared in one go: a comparison per slot was most of this module's time)."""
    slots = list(range(len(cal.session_windows(session))))
    expected = store.expected(session, slots, MAX_SESSIONS, keys)
    frame = pd.concat([frame.assign(slot=slot) for slot, frame in expected.items()], ignore_index=True)
    frame = frame.astype({"level": str, "key": str}).sort_values(["slot", "level", "key"], ignore_index=True)
    return list(expected), frame


def _assert_same(got: tuple[list[int], pd.DataFrame], want: tuple[list[int], pd.DataFrame]) -> None:
    assert got[0] == want[0]
    assert len(want[1]) > 1000
    pdt.assert_frame_equal(got[1], want[1], check_dtype=False)


def test_the_columnar_store_gives_the_sqlite_numbers_in_every_slot(source, both_stores):
    stores, recorded, session = both_stores
    assert stores["parquet"].complete_sessions() == stores["sqlite"].complete_sessions()
    assert len(stores["sqlite"].complete_sessions()) == 5
    day = max(recorded)
    assert stores["parquet"].recorded_slots(day) == stores["sqlite"].recorded_slots(day) == set(PARTIAL_SLOTS)
    # every key seen before, then a whole session's keys as one frame (the backtest's way)
    _assert_same(_every_slot(stores["parquet"], session), _every_slot(stores["sqlite"], session))
    row = cal.sessions(session, session).iloc[0]
    fills = option_fills(source.trades(row.market_open, row.market_close))
    keys = slot_volumes(fills, row.market_open)[["slot", "level", "key"]]
    keys = keys[keys["level"] != "product"]
    _assert_same(_every_slot(stores["parquet"], session, keys), _every_slot(stores["sqlite"], session, keys))
    # read again from the folder by a new process's store: the index names what was written
    reopened = ParquetBaseline(stores["parquet"].folder)
    _assert_same(_every_slot(reopened, session), _every_slot(stores["sqlite"], session))
    # a session with later sessions recorded (a backtest's alerts stage): only the keys traded
    # before it count, though the index (numbered once, `seen_keys`) also holds the later ones
    earlier = sorted(recorded)[3]
    assert len(stores["parquet"].expected_table(earlier, [40], MAX_SESSIONS)) < len(
        stores["parquet"].expected_table(session, [40], MAX_SESSIONS)
    )
    _assert_same(_every_slot(reopened, earlier), _every_slot(stores["sqlite"], earlier))
    _assert_same(_every_slot(reopened, earlier, keys), _every_slot(stores["sqlite"], earlier, keys))


def test_a_sqlite_baseline_is_copied_once_and_left_as_it_was(source, both_stores, tmp_path):
    from nqflow.research.backtest import baseline_folder

    stores, recorded, session = both_stores
    sqlite_file = tmp_path / "baseline.sqlite"
    sqlite_file.write_bytes(stores["sqlite"].path.read_bytes())
    before = sqlite_file.read_bytes()
    folder = baseline_folder(sqlite_file)
    assert folder == tmp_path / "baseline.parquet"
    migrated = ParquetBaseline(folder)
    assert migrated.complete_sessions() == stores["sqlite"].complete_sessions()
    assert migrated.recorded_slots(max(recorded)) == set(PARTIAL_SLOTS)
    _assert_same(_every_slot(migrated, session), _every_slot(stores["sqlite"], session))
    stamp = (folder / ParquetBaseline.SLOTS).stat().st_mtime_ns
    assert baseline_folder(sqlite_file) == folder  # once: the second call finds the copy
    assert (folder / ParquetBaseline.SLOTS).stat().st_mtime_ns == stamp
    assert sqlite_file.read_bytes() == before


def test_slot_volumes_by_hand():
    """Contracts per level, key and 15-minute slot, keys in text order (instrument 10 before 9),
    an expiry at most SHORT_DATED_DAYS away keyed by its days to expiry."""
    opens = pd.Timestamp("2026-11-15 23:00", tz="UTC")  # 17:00 Chicago: trade date Nov 16
    far, near = pd.Timestamp("2026-12-18 21:00", tz="UTC"), pd.Timestamp("2026-11-17 21:00", tz="UTC")
    fills = pd.DataFrame(
        {
            "ts_event": opens + pd.to_timedelta([1, 14, 16, 20, 31], unit="min"),
            "instrument_id": [9, 10, 9, 10, 42],
            "symbol": ["Q1AZ6 C21000", "Q1AZ6 P20000", "Q1AZ6 C21000", "Q1AZ6 P20000", "Q1AX6 C21000"],
            "expiration": [far, far, far, far, near],
            "size": [5, 7, 11, 2, 3],
        }
    )
    got = slot_volumes(fills, opens)
    want = pd.DataFrame(
        [
            ("instrument", "10", 0, 7),
            ("instrument", "10", 1, 2),
            ("instrument", "42", 2, 3),
            ("instrument", "9", 0, 5),
            ("instrument", "9", 1, 11),
            ("expiry", "1DTE", 2, 3),
            ("expiry", "Q1AZ6", 0, 12),
            ("expiry", "Q1AZ6", 1, 13),
            ("product", "NQ", 0, 12),
            ("product", "NQ", 1, 13),
            ("product", "NQ", 2, 3),
        ],
        columns=["level", "key", "slot", "volume"],
    )
    pdt.assert_frame_equal(got, want.astype({"level": str, "key": str}))


def test_a_window_records_every_product_as_the_history_does_whatever_the_universe_watches(source, tmp_path):
    """The monitor's window records its slot from every product's fills, as `ensure_history` and
    a backtest record whole sessions: a universe that leaves a product out detects without it but
    never writes a slot of history that means something else than the slots around it."""
    import dataclasses

    from nqflow.config import Config
    from nqflow.engine.monitor import run_window
    from nqflow.sqlite import connect

    day = source.sessions_available()[1]
    row = cal.sessions(day, day).iloc[0]
    start = row.market_open + pd.Timedelta(hours=16)
    end = start + pd.Timedelta(minutes=cal.SLOT_MINUTES)
    fills = option_fills(source.trades(start, end))
    busiest = fills.groupby("product")["size"].sum().idxmax()  # left out: the product trading most here
    base = Config()
    watched = tuple(p for p in base.universe.option_parents if p != f"{busiest}.OPT")
    config = dataclasses.replace(base, universe=dataclasses.replace(base.universe, option_parents=watched))
    store = BaselineStore(tmp_path / "baseline.sqlite")
    result = run_window(config, start, end, source, store)
    assert busiest not in set(result.window.trades["product"]) and len(result.window.trades)
    slot = cal.slot_of(start, row.market_open)
    with connect(store.path) as conn:
        recorded = pd.read_sql_query(
            "SELECT level, key, slot, volume FROM baseline_volume WHERE session = ? AND slot = ?",
            conn,
            params=(str(day), slot),
        )
    whole = slot_volumes(fills, row.market_open)
    pdt.assert_frame_equal(_sorted(recorded), _sorted(whole[whole["slot"] == slot]), check_dtype=False)
    product = recorded.loc[recorded["level"] == "product", "volume"].item()
    assert product == int(fills["size"].sum()) > int(result.window.trades["size"].sum())


def test_a_file_asked_for_again_and_again_stays_read_while_others_come_and_go(tmp_path, monkeypatch):
    """The read cache lets go of the least recently used file: a backtest worker asks for the
    index every session while each session's history is read once, and the index read first
    must not be read (and its keys numbered) again when 40 histories have come after it."""
    from nqflow.engine import baseline

    monkeypatch.setattr(baseline, "_READ", {})
    monkeypatch.setattr(baseline, "_READ_KEPT", 3)
    reads: list[str] = []

    def read(path):
        reads.append(path.name)
        return path.read_text()

    files = []
    for name in ("index", "a", "b", "c", "d", "e"):
        (tmp_path / name).write_text(name)
        files.append(tmp_path / name)
    index, histories = files[0], files[1:]
    for history in histories:
        assert baseline._read_once(index, read) == "index"
        assert baseline._read_once(history, read) == history.name
    assert reads == ["index", "a", "b", "c", "d", "e"]  # the index once, though 5 others passed a cache of 3
    assert baseline._read_once(tmp_path / "a", read) == "a"  # the oldest history had to go
    assert reads[-1] == "a" and len(baseline._READ) == 3
    index.write_text("index, rewritten")  # a changed file is read again
    assert baseline._read_once(index, read) == "index, rewritten"
    assert baseline._read_once(tmp_path / "missing", read) is None


def test_expected_of_rows_gives_the_expected_table_row_for_row(source, both_stores):
    """The backtest's way (`ParquetBaseline.expected_of_rows`: every asked row by key number)
    gives what `expected_table` gives the same keys, and the SQLite store too: slots recorded in
    every session and slots recorded in fewer (the last session was cut short), a session with
    later sessions recorded (keys first traded after it have no history), rows asked twice (two
    windows of one slot) and keys never recorded (no history: 0 sessions, NaN)."""
    stores, recorded, session = both_stores
    row = cal.sessions(session, session).iloc[0]
    asked = slot_volumes(option_fills(source.trades(row.market_open, row.market_close)), row.market_open)
    asked = asked[asked["slot"].isin([0, PARTIAL_SLOTS[-1], 40, 41])][["slot", "level", "key"]]
    never = pd.DataFrame({"slot": [40, 40], "level": ["instrument", "expiry"], "key": ["999999999", "Q9ZZ9"]})
    asked = pd.concat([asked, never, asked.head(50)], ignore_index=True).astype({"level": "str", "key": "str"})
    for day in (session, sorted(recorded)[3]):
        rows = stores["parquet"].expected_of_rows(
            day, asked["slot"].to_numpy(), asked["level"], asked["key"], MAX_SESSIONS
        )
        slots = sorted(set(asked["slot"]))
        keys = asked[asked["level"] != "product"]
        for store in stores.values():
            table = store.expected_table(day, slots, MAX_SESSIONS, keys).astype({"level": str, "key": str})
            merged = asked.merge(table, on=["slot", "level", "key"], how="left")
            assert (rows["history_sessions"] == merged["history_sessions"].fillna(0).to_numpy(dtype="int64")).all()
            for column in ("expected", "mean", "variance"):
                np.testing.assert_array_equal(rows[column], merged[column].to_numpy(dtype=float))
        assert (rows["history_sessions"] > 0).sum() > 100  # most keys have history
        assert (rows["history_sessions"][len(asked) - 52 : len(asked) - 50] == 0).all()  # the keys never recorded
