"""One session's options flow, for the session report (notebooks/session.ipynb).

Every option fill of the session is read with its aggressor and signed premium: ``+`` bought
by the aggressor, ``-`` sold, ``0`` unknown (side ``N``). A package's leg prints usually carry
no aggressor of their own; they take the package's (`nqflow.engine.strategies.find_packages`): a leg
bought when the package is bought is bought, a leg sold is sold. So a call spread bought reads
as calls bought at one strike and sold at the other, as a desk would book it.

The frames here are what the report draws; the numbers are premium in US dollars (price x
size x the definition's multiplier).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from nqflow.engine.levels import days_to_expiry
from nqflow.engine.strategies import find_packages, package_headline
from nqflow.engine.worked import final_total
from nqflow.market import hours as cal
from nqflow.market.frames import DataSource, classify_fills, front_future, session_bounds

if TYPE_CHECKING:
    from nqflow.engine.offbook import OffBookDay

SIGN_OF_SIDE = {"B": 1, "A": -1}
OPPOSITE = {"B": "A", "A": "B"}


@dataclass
class SessionFlow:
    """One session's option fills read for flow (see the module doc), its packages, the front
    future's prints, the alerts recorded for it and the previous session's off-book reading."""

    trade_date: dt.date
    prints: pd.DataFrame  # option fills + aggressor, signed_premium_usd, days_to_expiry, package_id
    packages: pd.DataFrame  # nqflow.engine.strategies.PACKAGE_COLUMNS
    underlying: pd.DataFrame  # the front future's fills
    alerts: pd.DataFrame  # ALERT_FIELDS columns, as recorded
    # the session before's off-book reading, when its statistics are published
    previous_off_book: OffBookDay | None = None

    def by_strike(self) -> pd.DataFrame:
        """Premium by strike: calls and puts, bought and sold by the aggressor (USD)."""
        return _bought_sold(self.prints, "strike")

    def by_expiry(self) -> pd.DataFrame:
        """Premium by expiry (nearest first): calls and puts, bought and sold by the aggressor (USD)."""
        table = _bought_sold(self.prints, "expiry")
        order = self.prints.groupby("expiry")["expiration"].min().sort_values().index
        return table.reindex([e for e in order if e in table.index])

    def cumulative(self, freq: str = "1min") -> pd.DataFrame:
        """Net call and net put premium (bought minus sold) summed through the session, with the
        front future's last price, per `freq`."""
        prints = self.prints.set_index("ts_event")
        net = (
            pd.DataFrame(
                {
                    "net_call_premium_usd": prints["signed_premium_usd"].where(prints["put_call"] == "C", 0.0),
                    "net_put_premium_usd": prints["signed_premium_usd"].where(prints["put_call"] == "P", 0.0),
                }
            )
            .resample(freq)
            .sum()
            .cumsum()
        )
        if len(self.underlying):
            future = self.underlying.set_index("ts_event")["price"].resample(freq).last().ffill()
            net["future_price"] = future.reindex(net.index, method="ffill")
        else:
            net["future_price"] = np.nan
        return net

    def largest_prints(self, n: int = 10) -> pd.DataFrame:
        """The `n` largest orders of the session by premium: fills of one instrument, instant and
        aggressor side summed, each with its package's strategy when it is a leg."""
        orders = (
            self.prints.groupby(["ts_event", "instrument_id", "aggressor"], sort=False)
            .agg(
                symbol=("symbol", "first"),
                size=("size", "sum"),
                price=("price", "mean"),
                premium_usd=("premium_usd", "sum"),
                days_to_expiry=("days_to_expiry", "first"),
                package_id=("package_id", "first"),
            )
            .reset_index()
            .nlargest(n, "premium_usd")
        )
        strategy = self.packages.set_index("package_id")["strategy"] if len(self.packages) else pd.Series(dtype=str)
        orders["package"] = orders["package_id"].map(strategy).fillna("")
        return orders.drop(columns=["package_id", "instrument_id"]).reset_index(drop=True)

    def largest_packages(self, n: int = 10) -> pd.DataFrame:
        """The `n` largest strategy packages by gross premium."""
        if self.packages.empty:
            return pd.DataFrame(
                columns=[
                    "ts_event",
                    "package",
                    "side",
                    "packages",
                    "leg_contracts",
                    "gross_premium_usd",
                    "net_premium_usd",
                    "exchange_code",
                ]
            )
        top = self.packages.nlargest(n, "gross_premium_usd")
        return pd.DataFrame(
            {
                "ts_event": pd.to_datetime(top["ts_event"], utc=True),
                "package": [package_headline(s, legs) for s, legs in zip(top["strategy"], top["legs"])],
                "side": top["side"],
                "packages": top["quantity"],
                "leg_contracts": [sum(leg["size"] for leg in legs if leg["put_call"] != "F") for legs in top["legs"]],
                "gross_premium_usd": top["gross_premium_usd"],
                "net_premium_usd": top["net_premium_usd"],
                "exchange_code": top["spread_symbol"].fillna("") if "spread_symbol" in top else "",
            }
        ).reset_index(drop=True)

    def worked_finals(self, gap_s: float, large_premium_usd: float) -> pd.DataFrame:
        """Each recorded worked order's final total (`nqflow.engine.worked.final_total`) beside what
        its alert carried: one row per ``worked_order`` alert, ``more_children`` when more followed."""
        columns = ["alert_id", "symbol", "side", "first_time", "last_time", "children", "contracts", "premium_usd"]
        worked = self.alerts[self.alerts["kind"] == "worked_order"] if len(self.alerts) else self.alerts
        if worked.empty:
            return pd.DataFrame(columns=[*columns, "alert_children", "alert_premium_usd", "more_children"])
        prints = self.prints[(self.prints["package_id"] < 0) & self.prints["side"].isin(["B", "A"])]
        orders = (
            prints.groupby(["instrument_id", "side", "ts_event"], sort=False)[["size", "premium_usd"]]
            .sum()
            .reset_index()
        )
        orders = orders[orders["premium_usd"] < large_premium_usd]  # an alert of its own is no child
        rows = []
        for alert in worked.to_dict("records"):
            side = "B" if alert["direction"] == "BUY" else "A"
            mine = orders[(orders["instrument_id"] == alert["instrument_ids"][0]) & (orders["side"] == side)]
            total = final_total(mine, pd.Timestamp(alert["first_time"]), gap_s)
            rows.append(
                {
                    "alert_id": alert["alert_id"],
                    "symbol": alert["symbol"],
                    "side": side,
                    "first_time": alert["first_time"],
                    **total,
                    "alert_children": int(alert["child_orders"]),
                    "alert_premium_usd": float(alert["premium_usd"]),
                    "more_children": total["children"] > int(alert["child_orders"]),
                }
            )
        return pd.DataFrame(rows)

    @property
    def summary(self) -> dict:
        """The session in figures (JSON-safe), for the report's header, the index and the scraps."""
        prints = self.prints
        calls = prints.loc[prints["put_call"] == "C", "premium_usd"].sum()
        puts = prints.loc[prints["put_call"] == "P", "premium_usd"].sum()
        contracts = int(prints["size"].sum())
        zero_dte = int(prints.loc[prints["days_to_expiry"] == 0, "size"].sum())
        by_kind = self.alerts["kind"].value_counts().to_dict() if len(self.alerts) else {}
        market_open, market_close = session_bounds(self.trade_date)
        return {  # a window summary's keys (`nqflow.alerts.WindowSummary`), then the session's own
            "window_start": market_open.isoformat(),
            "window_end": market_close.isoformat(),
            "option_trades": int(len(prints)),
            "empty": bool(prints.empty),
            "notes": [] if len(prints) else [f"no option trades in session {self.trade_date}"],
            "max_confidence": float(self.alerts["confidence"].max()) if len(self.alerts) else 0.0,
            "trade_date": str(self.trade_date),
            "option_prints": int(len(prints)),
            "contracts": contracts,
            "premium_usd": float(prints["premium_usd"].sum()),
            "call_premium_usd": float(calls),
            "put_premium_usd": float(puts),
            "put_call_premium_ratio": float(puts / calls) if calls else None,
            "net_call_premium_usd": float(prints.loc[prints["put_call"] == "C", "signed_premium_usd"].sum()),
            "net_put_premium_usd": float(prints.loc[prints["put_call"] == "P", "signed_premium_usd"].sum()),
            "zero_dte_contracts": zero_dte,
            "zero_dte_share": zero_dte / contracts if contracts else 0.0,
            "packages": int(len(self.packages)),
            "alerts": int(len(self.alerts)),
            "alerts_by_kind": {str(k): int(v) for k, v in by_kind.items()},
            "previous_off_book_contracts": int(self.previous_off_book.summary["off_book_contracts"])
            if self.previous_off_book is not None
            else None,
        }


def _bought_sold(prints: pd.DataFrame, by: str) -> pd.DataFrame:
    """Premium by `by`, in columns calls_bought, calls_sold, puts_bought, puts_sold, calls_unknown,
    puts_unknown (USD, all >= 0)."""
    right = prints["put_call"].map({"C": "calls", "P": "puts"})
    what = prints["aggressor"].map({"B": "bought", "A": "sold"}).fillna("unknown")
    table = prints.assign(column=right + "_" + what).pivot_table(
        index=by, columns="column", values="premium_usd", aggfunc="sum", fill_value=0.0
    )
    columns = [f"{r}_{w}" for r in ("calls", "puts") for w in ("bought", "sold", "unknown")]
    return table.reindex(columns=columns, fill_value=0.0).rename_axis(columns=None)


def leg_aggressors(options: pd.DataFrame, packages: pd.DataFrame, package_of: np.ndarray) -> np.ndarray:
    """Each fill's aggressor: its own side, or for a package leg printed without one (side N),
    the package's side turned by the leg's sign."""
    sides = options["side"].astype(str).to_numpy().copy()
    if packages.empty:
        return sides
    sign = {
        (int(p), leg["instrument_id"]): leg["sign"]
        for p, legs in zip(packages["package_id"], packages["legs"])
        for leg in legs
    }
    package_side = dict(zip(packages["package_id"].astype(int), packages["side"].astype(str)))
    iids = options["instrument_id"].to_numpy(dtype=np.int64)
    for row in np.flatnonzero((package_of >= 0) & (sides == "N")):
        side = package_side.get(int(package_of[row]), "N")
        leg_sign = sign.get((int(package_of[row]), int(iids[row])), 1)
        if side in OPPOSITE:
            sides[row] = side if leg_sign > 0 else OPPOSITE[side]
    return sides


def read_session_flow(
    source: DataSource, trade_date: dt.date, config, alerts: pd.DataFrame | None = None, previous_off_book: bool = True
) -> SessionFlow:
    """Session `trade_date`'s flow from `source`. `alerts`: what the monitor recorded for it
    (`StateStore.alerts`); `previous_off_book`: read the session before's off-book volume when
    its statistics are out."""
    from nqflow.alerts import ALERT_FIELDS

    row = cal.sessions(trade_date, trade_date)
    if row.empty:
        raise ValueError(f"{trade_date} is not a CME Globex trading day; pick a session date")
    row = row.iloc[0]
    fills = classify_fills(source.trades(row.market_open, row.market_close), config.universe.products)
    options, futures = fills.options, fills.futures
    front = front_future(futures)
    packages, package_of = find_packages(options, futures, fills.spreads, source.spread_legs(trade_date), front)
    prints = options.assign(
        aggressor=leg_aggressors(options, packages, package_of),
        package_id=package_of,
        days_to_expiry=days_to_expiry(options["ts_event"], options["expiration"]).to_numpy(),
        expiry=options["symbol"].astype(str).str.split(" ", n=1).str[0],
    )
    prints["signed_premium_usd"] = prints["premium_usd"] * prints["aggressor"].map(SIGN_OF_SIDE).fillna(0.0)
    previous = None
    if previous_off_book:
        from nqflow.engine.offbook import read_off_book
        from nqflow.errors import DataNotYetAvailable

        try:
            previous = read_off_book(source, cal.previous_trading_day(trade_date), config)
        except DataNotYetAvailable:
            previous = None
    alerts = alerts if alerts is not None else pd.DataFrame(columns=ALERT_FIELDS)
    return SessionFlow(trade_date, prints, packages, front, alerts, previous)
