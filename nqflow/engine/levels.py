"""Level keys: what each fill, order or volume counts under, at each level of the baseline.

A fill counts at three levels: its ``instrument`` (key: instrument_id), its ``expiry`` (key:
the option symbol root such as ``Q2DX6``, or ``<n>DTE`` when the expiry is at most
`SHORT_DATED_DAYS` away: see `nqflow.engine.baseline`) and the ``product`` (key ``NQ``). The
baseline store records volumes under these keys and the detector compares a window's volumes
under the same keys, so both take them from here; this module is pure pandas, with no store.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from nqflow.market import hours as cal
from nqflow.market.contracts import CHICAGO

LEVELS = ("instrument", "expiry", "product")
PRODUCT_KEY = "NQ"
#: Calendar days to expiry at or below which an expiry is keyed by its days to expiry (see the
#: module doc). Part of the baseline's definition, so not a per-run threshold: changing it
#: changes the keys recorded history is stored under.
SHORT_DATED_DAYS = 4

EXPECTED_COLUMNS = ["level", "key", "history_sessions", "expected", "mean", "variance"]


def no_expected_volumes() -> pd.DataFrame:
    """An expected-volume frame of no windows (``window`` and EXPECTED_COLUMNS)."""
    return pd.DataFrame({"window": pd.Series(dtype="int64"), **{c: pd.Series(dtype=object) for c in EXPECTED_COLUMNS}})


def expiry_key(symbol: pd.Series) -> pd.Series:
    """Option symbol root, e.g. 'Q2NV6 C21000' -> 'Q2NV6' (one product + expiration), as Python
    strings (NaN for a missing symbol)."""
    # Each distinct symbol split once (a session repeats a few thousand symbols over ~40k fills),
    # found on the column's own array, and split by Arrow in one pass, not symbol by symbol.
    codes, distinct = pd.factorize(symbol.array, use_na_sentinel=False)
    if not len(distinct):
        return pd.Series(np.empty(0, dtype=object), index=symbol.index, dtype=object)
    arrow = hasattr(distinct, "__arrow_array__")  # Arrow-backed text: handed over as it is, no copy
    text = pa.array(distinct if arrow else np.asarray(distinct, dtype=object), type=pa.string(), from_pandas=True)
    roots = pc.list_element(pc.split_pattern(text, " ", max_splits=1), 0).to_numpy(zero_copy_only=False)
    roots = np.asarray(roots, dtype=object)
    roots[pd.isna(roots)] = np.nan  # a missing symbol has no root
    return pd.Series(roots[codes], index=symbol.index, dtype=object)


def days_to_expiry(ts_event: pd.Series, expiration: pd.Series) -> pd.Series:
    """Calendar days from each fill's trade date to its option's expiry date (both in Chicago).

    A Globex session opens at 17:00 CT the evening before its trade date, so the trade date is
    the Chicago date 7 hours after the fill."""
    trade = (ts_event.dt.tz_convert(CHICAGO) + pd.Timedelta(hours=7)).dt.tz_localize(None).dt.normalize()
    expiry = expiration.dt.tz_convert(CHICAGO).dt.tz_localize(None).dt.normalize()
    return (expiry - trade).dt.days


def expiry_level_key(fills: pd.DataFrame) -> pd.Series:
    """The expiry-level baseline key of each fill or order: its symbol root, or ``<n>DTE`` when
    the expiry is at most `SHORT_DATED_DAYS` away. Uses ``days_to_expiry`` / ``expiry`` columns
    when the frame has them."""
    root = fills["expiry"] if "expiry" in fills else expiry_key(fills["symbol"])
    dte = (
        fills["days_to_expiry"] if "days_to_expiry" in fills else days_to_expiry(fills["ts_event"], fills["expiration"])
    )
    dte_values = dte.to_numpy()
    short = dte_values <= SHORT_DATED_DAYS
    # The roots are text already: taken as they are, not through astype(str)'s Arrow text and back.
    keys = root.to_numpy(dtype=object, copy=True)
    if pd.api.types.infer_dtype(keys, skipna=True) != "string":
        keys = root.astype(str).to_numpy(dtype=object)
    if short.any():  # each distinct day count formatted once, not once per fill
        codes, distinct = pd.factorize(dte_values[short])
        keys[short] = (pd.Series(distinct).astype(str).to_numpy(dtype=object) + "DTE")[codes]
    return pd.Series(keys, index=fills.index, dtype=object)


def instrument_keys(instrument_ids: np.ndarray) -> np.ndarray:
    """The instrument-level keys of instrument ids: their decimal text, as an object array of
    Python strings. Cast by Arrow (a session's 20,000 instrument rows: 2 ms, where NumPy's
    ``astype(str).astype(object)`` makes fixed-width text first, then strings: 7.5 ms)."""
    if not len(instrument_ids):
        return np.empty(0, dtype=object)
    return np.asarray(instrument_key_text(instrument_ids).to_numpy(zero_copy_only=False), dtype=object)


def instrument_key_text(instrument_ids: np.ndarray) -> pa.Array:
    """`instrument_keys` as Arrow text, for a frame's column (no Python string per row)."""
    return pc.cast(pa.array(np.asarray(instrument_ids, dtype="int64")), pa.string())


def level_keys(fills: pd.DataFrame) -> dict[str, pd.Series]:
    """The baseline key of every fill (or order) at each level, as text: the one place a fill is
    mapped to what the baseline store and the detector count it under (`expiry_level_key`)."""
    return {
        "instrument": fills["instrument_id"].astype(str),
        "expiry": expiry_level_key(fills).astype(str),
        "product": pd.Series(PRODUCT_KEY, index=fills.index, dtype=str),
    }


def level_codes(fills: pd.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """`level_keys` as integer codes: per level, each fill's code and the distinct keys' text
    (an object array, in text order, so codes order as the keys do). Fills are counted by the
    codes; only the distinct keys are turned into text (a session has ~40,000 fills and a few
    thousand keys)."""
    ids, distinct_ids = pd.factorize(fills["instrument_id"].to_numpy(dtype="int64"))
    expiry_codes, expiries = pd.factorize(expiry_level_key(fills).to_numpy(dtype=object), sort=True)
    return {
        "instrument": _text_ordered(ids, instrument_keys(distinct_ids)),
        "expiry": (expiry_codes, np.asarray(expiries, dtype=object).astype(str).astype(object)),
        "product": (np.zeros(len(fills), dtype="int64"), np.array([PRODUCT_KEY], dtype=object)),
    }


def _text_ordered(codes: np.ndarray, names: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes and names renumbered so the names come in text order."""
    order = np.argsort(names, kind="stable")
    rank = np.empty(len(order), dtype="int64")
    rank[order] = np.arange(len(order))
    return rank[codes], names[order]


def slot_volumes(trades: pd.DataFrame, session_open: pd.Timestamp) -> pd.DataFrame:
    """Contracts traded per level, key and slot: columns level, key, slot, volume; by level
    (`LEVELS` order), then key in text order, then slot. Summed on integer codes
    (`level_codes`): a groupby on text keys cost twice as much."""
    if trades.empty:
        return pd.DataFrame(
            {
                "level": pd.Series(dtype=str),
                "key": pd.Series(dtype=str),
                "slot": pd.Series(dtype="int64"),
                "volume": pd.Series(dtype="int64"),
            }
        )
    since_open = trades["ts_event"].to_numpy(dtype="datetime64[ns]") - session_open.tz_convert(None).to_datetime64()
    slot = since_open // np.timedelta64(cal.SLOT_MINUTES, "m")
    slot = slot.astype("int64")
    first_slot = int(slot.min())
    span = int(slot.max()) - first_slot + 1
    size = trades["size"].to_numpy(dtype="float64")
    levels: list[np.ndarray] = []
    names: list[np.ndarray] = []
    keys: list[np.ndarray] = []
    slots: list[np.ndarray] = []
    volumes: list[np.ndarray] = []
    coded, offset = level_codes(trades), 0
    for number, level in enumerate(LEVELS):
        codes, level_names = coded[level]
        pairs, inverse = np.unique(codes * span + (slot - first_slot), return_inverse=True)  # key, then slot
        levels.append(np.full(len(pairs), number))
        keys.append(pairs // span + offset)
        names.append(level_names)
        offset += len(level_names)
        slots.append(pairs % span + first_slot)
        volumes.append(np.bincount(inverse, weights=size, minlength=len(pairs)))  # whole numbers: exact
    # Text columns taken from their few distinct values, not built from 20,000 Python strings.
    return pd.DataFrame(
        {
            "level": pd.array(list(LEVELS), dtype=str).take(np.concatenate(levels)),
            "key": pd.array(np.concatenate(names), dtype=str).take(np.concatenate(keys)),
            "slot": np.concatenate(slots),
            "volume": np.concatenate(volumes).astype("int64"),
        }
    )


NO_KEYS = pd.DataFrame({"level": pd.Series(dtype=object), "key": pd.Series(dtype=object)})


def window_keys(trades: pd.DataFrame) -> pd.DataFrame:
    """The (level, key) pairs some fills touch: all a window's detection needs from the baseline."""
    return window_keys_by(trades, np.zeros(len(trades), dtype=np.int64)).get(0, NO_KEYS)


def window_keys_by(trades: pd.DataFrame, group: np.ndarray) -> dict[int, pd.DataFrame]:
    """`window_keys` of every group of fills at once (a session's windows); fills in group -1 are
    ignored. Keys are mapped once for all fills, instead of once per window."""
    pairs = keys_by(trades, group)
    return {int(g): frame[["level", "key"]].reset_index(drop=True) for g, frame in pairs.groupby("group", sort=False)}


def keys_by(trades: pd.DataFrame, group: np.ndarray) -> pd.DataFrame:
    """The (group, level, key) triples some fills touch, once each, as one frame (what
    `window_keys_by` splits by group); fills in group -1 are ignored."""
    keep = np.asarray(group) >= 0
    trades, group = trades[keep], np.asarray(group)[keep]
    keys = level_keys(trades)
    return pd.concat(
        [
            pd.DataFrame({"group": group, "level": level, "key": keys[level].to_numpy(dtype=object)})
            for level in ("instrument", "expiry")
        ],
        ignore_index=True,
    ).drop_duplicates(ignore_index=True)
