"""Worked orders: one party working an order in many child orders, each below any threshold.

Institutions rarely show $3M in one aggressor order on the screen; an execution algorithm
works it in child orders over minutes. `worked_crossings` finds, per session, instrument and
aggressor side, the child order at which such an order becomes an alert:

- children are aggressor orders (side B or A) that are not a package leg and not an alert of
  their own (a large order, or a member of an alerted sweep): `eligible_children`;
- a child's **chain** is the run of children before it, back to the first gap longer than
  ``worked_max_gap_s`` and no further back than ``worked_max_span_minutes``;
- the chain **qualifies** at a child when it holds at least ``worked_min_orders`` children
  worth ``large_premium_usd`` or more together, and that side holds at least
  ``direction_share`` of the instrument's aggressor premium over the chain's span (both
  sides, package legs left out): a market maker trading both sides is no worked order;
- the alert is raised at the first child whose chain qualifies while no earlier child of its
  chain did: one alert per worked order, in the window where its running total crosses.

Everything a crossing depends on lies at most twice the span before it, so one window judged
with the session's preceding ``2 x worked_max_span_minutes`` gives what the whole session
gives (`lookback`): the live notebook and a backtest agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from nqflow.config import Thresholds
from nqflow.engine.features import stable_argsort

CROSSING_COLUMNS = [
    "row",  # the crossing child's position in the orders frame
    "first_row",  # the chain's first child
    "child_rows",  # every child of the chain, in time order
    "children",
    "contracts",
    "premium_usd",
    "side_share",
]


def lookback(thresholds: Thresholds) -> pd.Timedelta:
    """How much of the session before a window its worked orders depend on."""
    return pd.Timedelta(minutes=2 * thresholds.worked_max_span_minutes)


def eligible_children(
    orders: pd.DataFrame, alerted: np.ndarray, sides: tuple[np.ndarray, np.ndarray] | None = None
) -> np.ndarray:
    """Which orders may be a worked order's child: an aggressor order, no package leg, no alert of
    its own. `sides`: the orders' `order_sides`, when known already."""
    return _aggressive(orders, sides) & ~alerted


def order_sides(orders: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(bought, sold) per order, as booleans: compared on the side column's own Arrow text (a
    year's 600,000 orders turned into Python strings first cost three times as much)."""
    side = orders["side"]
    return (side == "B").to_numpy(dtype=bool, na_value=False), (side == "A").to_numpy(dtype=bool, na_value=False)


def _aggressive(orders: pd.DataFrame, sides: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Aggressor orders (side B or A) that are no package leg."""
    bought, sold = sides if sides is not None else order_sides(orders)
    free = orders["package_id"].to_numpy() < 0 if "package_id" in orders else np.ones(len(orders), dtype=bool)
    return (bought | sold) & free


def worked_crossings(
    orders: pd.DataFrame,
    session: np.ndarray,
    eligible: np.ndarray,
    t: Thresholds,
    sides: tuple[np.ndarray, np.ndarray] | None = None,
) -> pd.DataFrame:
    """The crossing child of every worked order in `orders` (one batch, any number of sessions).

    `session` names each order's session (chains never cross sessions: a name or a number per
    session, numbers being the cheaper to group); `eligible` marks the children
    (`eligible_children`); `sides`, the orders' `order_sides` when known already (a threshold pass
    compares 600,000 sides once, not twice). Returns `CROSSING_COLUMNS`, in the order of the
    crossings' rows.
    """
    sides = sides if sides is not None else order_sides(orders)
    aggressive = _aggressive(orders, sides)
    rows = np.flatnonzero(eligible)
    if len(rows) < t.worked_min_orders:
        return pd.DataFrame(columns=CROSSING_COLUMNS)
    ts = orders["ts_event"].to_numpy(dtype="datetime64[ns]").astype("int64")
    premium = orders["premium_usd"].to_numpy(dtype=float)
    size = orders["size"].to_numpy(dtype="int64")
    bought = sides[0]
    instrument = orders["instrument_id"].to_numpy(dtype="int64")
    session_code = pd.factorize(session)[0]

    # Sorted by session, option, side, time and row with NumPy (a lexsort of integer columns is
    # several times a DataFrame sort on a session's 30,000 orders); groups are then contiguous.
    # Session, option and side in one integer key, and no row key: the sort is stable and the
    # rows come in order, so ties in time keep it (the same order, in two keys, not five).
    buyer = bought.astype("int64")
    span = int(instrument.max()) + 1 if len(instrument) else 1
    by_time = in_time(session_code, ts)
    k_rows = _by_key_then_time(
        rows, ((session_code.astype("int64") * span + instrument) * 2 + buyer)[rows], ts, by_time
    )
    k_ts = ts[k_rows]
    new_group = np.ones(len(k_rows), dtype=bool)
    new_group[1:] = (
        (session_code[k_rows][1:] != session_code[k_rows][:-1])
        | (instrument[k_rows][1:] != instrument[k_rows][:-1])
        | (buyer[k_rows][1:] != buyer[k_rows][:-1])
    )
    group = np.cumsum(new_group) - 1
    gap_ns, span_ns = int(t.worked_max_gap_s * 1e9), int(t.worked_max_span_minutes * 60e9)
    breaks = np.ones(len(k_rows), dtype=bool)
    breaks[1:] = (group[1:] != group[:-1]) | (np.diff(k_ts) > gap_ns)
    run = np.cumsum(breaks) - 1
    # Only gap-runs that could ever qualify are examined child by child: few of them.
    run_premium = np.bincount(run, weights=premium[k_rows])
    run_count = np.bincount(run)
    hopeful = np.flatnonzero((run_premium >= t.large_premium_usd) & (run_count >= t.worked_min_orders))
    if not len(hopeful):
        return pd.DataFrame(columns=CROSSING_COLUMNS)
    run_starts = np.flatnonzero(breaks)
    run_ends = np.append(run_starts[1:], len(k_rows))
    book = _SideBook.of(np.flatnonzero(aggressive), session_code, instrument, ts, premium, bought, by_time)
    found = []
    for r in hopeful:
        c_rows, c_ts = k_rows[run_starts[r] : run_ends[r]], k_ts[run_starts[r] : run_ends[r]]
        found.extend(_run_crossings(c_rows, c_ts, premium, size, bought, book, (session_code, instrument), span_ns, t))
    if not found:
        return pd.DataFrame(columns=CROSSING_COLUMNS)
    return pd.DataFrame(found, columns=CROSSING_COLUMNS).sort_values("row", kind="stable").reset_index(drop=True)


def in_time(group: np.ndarray, ts: np.ndarray) -> bool:
    """Whether rows come by group (ascending), then time: a batch of features' orders do, by
    window and time (`nqflow.engine.features.aggregate_orders`), and so by session and time."""
    step = np.diff(group)
    return bool(np.all((step > 0) | ((step == 0) & (np.diff(ts) >= 0))))


def _by_key_then_time(rows: np.ndarray, keys: np.ndarray, ts: np.ndarray, by_time: bool) -> np.ndarray:
    """`rows` (ascending) ordered by their `keys` (each key within one session), then time, then
    row. Orders already in time within each session (`by_time`, `in_time`) need only a stable
    sort on the keys; else a two-key sort (both stable, so ties keep the rows' order)."""
    return rows[stable_argsort(keys) if by_time else np.lexsort((ts[rows], keys))]


@dataclass(frozen=True)
class _SideBook:
    """Both sides' aggressor premium per (session, instrument), in time order, summed: what the
    side share over any stretch of one option is read from."""

    ts: np.ndarray
    keys: np.ndarray  # each row's (session code, instrument) as one sorted integer
    span: int  # instrument numbers are below it: key = session code * span + instrument
    cum_buy: np.ndarray
    cum_sell: np.ndarray

    @classmethod
    def of(
        cls, rows: np.ndarray, session_code: np.ndarray, instrument: np.ndarray, ts, premium, bought, by_time: bool
    ) -> _SideBook:
        span = int(instrument.max()) + 1 if len(instrument) else 1
        keys = session_code.astype("int64") * span + instrument
        b_rows = _by_key_then_time(rows, keys[rows], ts, by_time)
        is_buy = bought[b_rows]
        return cls(
            ts[b_rows],
            keys[b_rows],
            span,
            np.concatenate([[0.0], np.cumsum(premium[b_rows] * is_buy)]),
            np.concatenate([[0.0], np.cumsum(premium[b_rows] * ~is_buy)]),
        )

    def share(self, key: tuple, buyer: bool, since: np.ndarray, until: np.ndarray) -> np.ndarray:
        """The buyers' (or sellers') share of the option's aggressor premium in each [since, until]."""
        code = int(key[0]) * self.span + int(key[1])
        lo = int(np.searchsorted(self.keys, code, side="left"))
        hi = int(np.searchsorted(self.keys, code, side="right")) - 1  # the option's rows: contiguous
        window_ts = self.ts[lo : hi + 1]
        left = lo + np.searchsorted(window_ts, since, side="left")
        right = lo + np.searchsorted(window_ts, until, side="right")
        buy, sell = self.cum_buy[right] - self.cum_buy[left], self.cum_sell[right] - self.cum_sell[left]
        return (buy if buyer else sell) / np.maximum(buy + sell, 1e-9)


def _run_crossings(c_rows, c_ts, premium, size, bought, book: _SideBook, codes, span_ns: int, t: Thresholds) -> list:
    """The crossings in one gap-run of children (`c_rows`, times `c_ts`) of one option and side."""
    session_code, instrument = codes
    cum = np.concatenate([[0.0], np.cumsum(premium[c_rows])])
    start = np.searchsorted(c_ts, c_ts - span_ns, side="left")
    count = np.arange(len(c_rows)) - start + 1
    chain_premium = cum[1:] - cum[start]
    key = (session_code[c_rows[0]], instrument[c_rows[0]])
    share = book.share(key, bool(bought[c_rows[0]]), c_ts[start], c_ts)
    qualifies = (count >= t.worked_min_orders) & (chain_premium >= t.large_premium_usd) & (share >= t.direction_share)
    earlier = np.concatenate([[0], np.cumsum(qualifies)])
    crossing = qualifies & (earlier[np.arange(len(c_rows))] - earlier[start] == 0)
    found = []
    for j in np.flatnonzero(crossing):
        members = c_rows[start[j] : j + 1]
        found.append(
            {
                "row": int(c_rows[j]),
                "first_row": int(c_rows[start[j]]),
                "child_rows": [int(m) for m in members],
                "children": int(count[j]),
                "contracts": int(size[members].sum()),
                "premium_usd": float(chain_premium[j]),
                "side_share": float(share[j]),
            }
        )
    return found


def price_drift(prices: np.ndarray, sizes: np.ndarray, flat_share: float) -> str:
    """How the child orders' prices moved: the second half's VWAP against the first half's,
    "ascending" or "descending" beyond `flat_share` of the whole VWAP, else "flat"."""
    n = len(prices)
    if n < 2:
        return "flat"
    half = n // 2
    first = np.average(prices[:half], weights=sizes[:half])
    last = np.average(prices[half:], weights=sizes[half:])
    whole = np.average(prices, weights=sizes)
    change = (last - first) / whole if whole > 0 else 0.0
    return "ascending" if change > flat_share else "descending" if change < -flat_share else "flat"


def final_total(children: pd.DataFrame, first_time: pd.Timestamp, gap_s: float) -> dict:
    """A worked order's extent once later children followed its alert: its option's and side's
    child orders (`children`, with ``ts_event``, ``size``, ``premium_usd``) from its first child
    on, for as long as none is more than `gap_s` after the one before."""
    later = children[children["ts_event"] >= first_time].sort_values("ts_event", kind="stable")
    gaps = later["ts_event"].diff().dt.total_seconds().fillna(0.0).to_numpy()
    later = later[np.cumsum(gaps > gap_s) == 0]
    return {
        "children": int(len(later)),
        "contracts": int(later["size"].sum()),
        "premium_usd": round(float(later["premium_usd"].sum()), 2),
        "last_time": pd.Timestamp(later["ts_event"].iloc[-1]).isoformat() if len(later) else None,
    }
