"""Charts for the notebooks: monitoring charts take a WindowResult, threshold-lab charts take
backtest tables. Charts only draw: what they show (the surge gate, the watch list) comes from
the engine. Each returns a `Chart`: the matplotlib Figure plus a description in words,
which HTML reports carry as the image's alternative text."""

from __future__ import annotations

import base64
import io
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg") if matplotlib.get_backend().lower() in ("", "agg") else None
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402
from pandas.io.formats.style import Styler  # noqa: E402

from nqflow.alerts import Kind, usd  # noqa: E402
from nqflow.config import Config  # noqa: E402
from nqflow.engine.detect import BELOW_FIRST_TIER  # noqa: E402
from nqflow.reports.tables import readable  # noqa: E402

if TYPE_CHECKING:
    from nqflow.engine.gex import DealerPositioning
    from nqflow.engine.monitor import WindowResult
    from nqflow.engine.offbook import OffBookDay
    from nqflow.engine.positions import Confirmations
    from nqflow.engine.session_flow import SessionFlow

# Okabe-Ito (colour-blind safe): blue for bought / calls, vermillion for sold / puts.
BUY, SELL, NEUTRAL = "#0072B2", "#D55E00", "#8c959f"
CALLS, PUTS = BUY, SELL


class Chart:
    """A drawn chart and what it shows, in words. Displayed as a PNG whose metadata carries
    the description as alternative text (the report template puts it on the <img>); the
    Figure stays available as `.figure` for further work."""

    def __init__(self, figure, alt: str):
        self.figure, self.alt = figure, alt
        plt.close(figure)  # displayed once, through _repr_mimebundle_, not again by the inline backend

    def _repr_mimebundle_(self, include=None, exclude=None):
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png", bbox_inches="tight")
        png = base64.b64encode(buffer.getvalue()).decode("ascii")
        return {"image/png": png, "text/plain": self.alt}, {"image/png": {"alt": self.alt}}

    def savefig(self, *args, **kwargs) -> None:
        self.figure.savefig(*args, **kwargs)

    def __repr__(self) -> str:  # outside Jupyter (a terminal, a log), the description stands in
        return f"<Chart: {self.alt}>"


def _empty(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="#57606a")
    ax.set_xticks([])
    ax.set_yticks([])


def volume_by_strike(result: WindowResult, strikes_each_side: int = 30) -> Chart:
    """Contracts by strike for calls and puts, around the underlying price."""
    fig, ax = plt.subplots(figsize=(11, 4))
    trades = result.window.trades
    if trades.empty:
        _empty(ax, "no option trades in this window")
        return Chart(fig, "Volume by strike: no option trades in this window.")
    by = trades.groupby(["strike", "put_call"])["size"].sum().unstack(fill_value=0)
    underlying = result.summary.get("underlying_last") or float(np.average(by.index, weights=by.sum(axis=1)))
    near = by.index[np.argsort(np.abs(by.index - underlying))[: 2 * strikes_each_side]]
    by = by.loc[sorted(near)]
    width = (by.index[1] - by.index[0]) * 0.4 if len(by) > 1 else 10
    ax.bar(by.index - width / 2, by.get("C", 0), width=width, color=BUY, label="calls")
    ax.bar(by.index + width / 2, by.get("P", 0), width=width, color=SELL, label="puts")
    ax.axvline(underlying, color="black", linestyle="--", linewidth=1, label=f"NQ {underlying:,.2f}")
    ax.set_xlabel("strike (index points)")
    ax.set_ylabel("contracts")
    ax.set_title("Volume by strike, all expiries")
    ax.legend()
    fig.tight_layout()
    busiest = by.stack().idxmax()
    return Chart(
        fig,
        f"Bar chart of contracts traded by strike, calls and puts, for the {len(by)} strikes nearest "
        f"NQ {underlying:,.2f}: {int(by.get('C', pd.Series(0)).sum()):,} call and "
        f"{int(by.get('P', pd.Series(0)).sum()):,} put contracts; busiest the {busiest[0]:g} "
        f"{'calls' if busiest[1] == 'C' else 'puts'} with {int(by.loc[busiest]):,}.",
    )


def premium_timeline(result: WindowResult, config: Config) -> Chart:
    """Each aggressor order's premium over the window, large orders marked."""
    fig, ax = plt.subplots(figsize=(11, 4))
    orders = result.detection.orders
    if orders.empty:
        _empty(ax, "no orders in this window")
        return Chart(fig, "Order premium over time: no orders in this window.")
    colors = orders["side"].map({"B": BUY, "A": SELL}).fillna(NEUTRAL)
    ax.scatter(orders["ts_event"], orders["premium_usd"], s=np.clip(orders["size"], 4, 300), c=colors, alpha=0.6)
    large = orders[orders["premium_usd"] >= config.thresholds.large_premium_usd]
    ax.scatter(
        large["ts_event"],
        large["premium_usd"],
        s=260,
        facecolors="none",
        edgecolors="black",
        linewidths=1.5,
        label="large order",
    )
    for _, order in large.iterrows():
        ax.annotate(
            order["symbol"],
            (order["ts_event"], order["premium_usd"]),
            textcoords="offset points",
            xytext=(6, 6),
            fontsize=8,
        )
    ax.axhline(
        config.thresholds.large_premium_usd,
        color="black",
        linestyle=":",
        linewidth=1,
        label=f"threshold ${config.thresholds.large_premium_usd / 1e6:g}M",
    )
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(_money_tick))
    ax.set_ylabel("premium per order (log scale)")
    ax.set_title("Order premium over time (blue: buyer-initiated, vermillion: seller-initiated)")
    for side, colour in (("buyer-initiated", BUY), ("seller-initiated", SELL)):
        ax.scatter([], [], s=30, color=colour, label=side)
    ax.legend(loc="lower right")
    fig.autofmt_xdate()
    fig.tight_layout()
    top = orders.loc[orders["premium_usd"].idxmax()]
    return Chart(
        fig,
        f"Scatter of the premium of {len(orders):,} aggressor orders over the window, log scale, against "
        f"the {usd(config.thresholds.large_premium_usd)} threshold: {len(large)} at or above it; the "
        f"largest {usd(top['premium_usd'])} on {top['symbol']}.",
    )


def surge_ratios(result: WindowResult, config: Config, top: int = 15) -> Chart:
    """The highest volume / expected ratios at each level, against the surge tiers."""
    fig, ax = plt.subplots(figsize=(11, 4.5))
    volumes = result.detection.volumes
    if volumes.empty or "ratio" not in volumes:
        _empty(ax, "no volume to compare with the baseline")
        return Chart(fig, "Volume surges: no volume to compare with the baseline.")
    ranked = volumes[volumes["history_sessions"] > 0].sort_values("ratio", ascending=False).head(top)
    if ranked.empty:
        _empty(ax, "no baseline history yet for this slot")
        return Chart(fig, "Volume surges: no baseline history yet for this slot.")
    gate = ranked["gate"].to_numpy()
    held = (gate != "") & (gate != BELOW_FIRST_TIER)  # past a tier, yet no surge alert: say why
    labels = [f"{lvl}: {sym}" for lvl, sym in zip(ranked["level"], ranked["symbol"])]
    ratios = ranked["ratio"].to_numpy()
    ax.barh(labels[::-1], ratios[::-1], color=np.where(gate == "", "#0969da", NEUTRAL)[::-1])
    for position, ratio, why, said in zip(range(len(ratios)), ratios[::-1], gate[::-1], held[::-1]):
        if said:
            ax.text(ratio, position, f"  {why}", va="center", fontsize=8, color="#57606a")
    for tier in config.thresholds.surge_tiers:
        ax.axvline(tier, color="#bf8700", linestyle="--", linewidth=1)
        ax.text(tier, len(ranked) - 0.5, f"{tier:g}x", color="#bf8700", fontsize=8)
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlabel("window volume / expected volume for this time of day (grey: cannot alert, reason at the bar's end)")
    ax.set_title("Volume surges against the baseline")
    fig.tight_layout()
    first = ranked.iloc[0]
    held_words = [f"{sym} ({why})" for sym, why in zip(ranked["symbol"][held], gate[held])]
    return Chart(
        fig,
        f"Horizontal bars of the {len(ranked)} highest ratios of window volume to the expected volume "
        f"for this time of day, against tiers {', '.join(f'{t:g}x' for t in config.thresholds.surge_tiers)}: "
        f"highest {first['level']} {first['symbol']} at {first['ratio']:,.1f}x"
        + (f"; past a tier but unable to alert: {', '.join(held_words)}" if held_words else "")
        + ".",
    )


def aggression(result: WindowResult) -> Chart:
    """Buyer- vs seller-initiated premium for calls and puts."""
    fig, ax = plt.subplots(figsize=(7, 3.5))
    trades = result.window.trades
    if trades.empty:
        _empty(ax, "no option trades in this window")
        return Chart(fig, "Aggressor premium: no option trades in this window.")
    table = trades.groupby(["put_call", "side"])["premium_usd"].sum().unstack(fill_value=0.0) / 1e6
    rights = [r for r in ("C", "P") if r in table.index]
    x = np.arange(len(rights))
    ax.bar(x - 0.2, [table.loc[r].get("B", 0.0) for r in rights], width=0.4, color=BUY, label="buyer-initiated")
    ax.bar(x + 0.2, [table.loc[r].get("A", 0.0) for r in rights], width=0.4, color=SELL, label="seller-initiated")
    ax.set_xticks(x, ["calls" if r == "C" else "puts" for r in rights])
    ax.set_ylabel("premium ($M)")
    ax.set_title("Aggressor premium")
    ax.legend()
    fig.tight_layout()
    words = [
        f"{'calls' if r == 'C' else 'puts'} {usd(table.loc[r].get('B', 0.0) * 1e6)} bought and "
        f"{usd(table.loc[r].get('A', 0.0) * 1e6)} sold"
        for r in rights
    ]
    return Chart(fig, "Bars of buyer- and seller-initiated premium: " + "; ".join(words) + ".")


def alerts_table(result: WindowResult) -> Styler:
    """The window's alerts as a readable table (strongest first)."""
    alerts = result.alerts
    if alerts.empty:
        return readable(alerts.iloc[:0, :0], "No alert in this window.")
    table = alerts[
        [
            "event_time",
            "label",
            "confidence",
            "kind",
            "symbol",
            "direction",
            "sentiment",
            "volume",
            "ratio",
            "tier",
            "premium_usd",
            "reasons",
        ]
    ].copy()
    table["ratio"] = table["ratio"].map(lambda r: "" if pd.isna(r) else f"{r:,.1f}x")
    table["tier"] = table["tier"].map(lambda t: "" if pd.isna(t) or not t else f"{t:g}x")
    return readable(table)


def watch_table(result: WindowResult, config: Config) -> Styler:
    """Orders and sweeps between the watch level and the alert level (`detect.watch_list`)."""
    watch = config.thresholds.watch_premium_usd
    if watch <= 0:
        return readable(pd.DataFrame(), "The watch list is off (thresholds.watch_premium_usd = 0).")
    table = result.detection.watch
    if table.empty:
        return readable(
            table, f"No order between {usd(watch)} and {usd(config.thresholds.large_premium_usd)} in this window."
        )
    return readable(table)


def _money_tick(value: float, _position: int) -> str:
    """An axis tick in money: $1M, $250k, $5."""
    return usd(value).replace(".00M", "M")


# --------------------------------------------------------------------------- threshold lab
# Okabe-Ito colours (colour-blind safe), one per alert kind.
KIND_COLOURS = {
    Kind.LARGE_ORDER: "#0072B2",
    Kind.SWEEP: "#CC79A7",
    Kind.STRATEGY: "#009E73",
    Kind.VOLUME_SURGE: "#E69F00",
    Kind.OFF_BOOK: "#56B4E9",
    Kind.WORKED_ORDER: "#D55E00",
    Kind.CONFIRMATION: "#F0E442",
    Kind.HEALTH: "#000000",
}
assert set(KIND_COLOURS) == set(Kind), "every alert kind needs a colour"


def alerts_per_session(counts: pd.DataFrame) -> Chart:
    """Stacked bars: alerts per session by kind (a BacktestResult.counts() table)."""
    fig, ax = plt.subplots(figsize=(10, 3.5))
    if counts.empty or counts.to_numpy().sum() == 0:
        _empty(ax, "no alerts in these sessions")
        return Chart(fig, "Alerts per session: none in these sessions.")
    bottom = np.zeros(len(counts))
    for kind in counts.columns:
        ax.bar(counts.index.astype(str), counts[kind], bottom=bottom, label=kind, color=KIND_COLOURS.get(kind))
        bottom += counts[kind].to_numpy()
    ax.set_ylabel("alerts")
    ax.set_title("Alerts per session")
    ax.tick_params(axis="x", rotation=60)
    ax.legend(frameon=False)
    fig.tight_layout()
    by_kind = ", ".join(f"{kind} {int(counts[kind].sum())}" for kind in counts.columns)
    busiest = counts.sum(axis=1)
    return Chart(
        fig,
        f"Stacked bars of alerts per session by kind over {len(counts)} sessions: {by_kind}; "
        f"most on {busiest.idxmax()} ({int(busiest.max())}).",
    )


def threshold_curves(curves: pd.DataFrame, current: dict[str, float]) -> Chart:
    """One panel per threshold: alerts (and true alerts) against its value; precision and recall
    on the right axis when ground truth exists; the configured value as a dashed line."""
    names = list(dict.fromkeys(curves["curve"]))
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        curve = curves[curves["curve"] == name]
        ax.plot(curve["value"], curve["alerts"], marker="o", color="#0969da", label="alerts")
        if "true_alerts" in curve:
            ax.plot(curve["value"], curve["true_alerts"], marker="o", color=BUY, label="true alerts")
            right = ax.twinx()
            right.plot(curve["value"], curve["precision"], linestyle=":", color="#57606a", label="precision")
            right.plot(curve["value"], curve["recall"], linestyle="--", color="#cf222e", label="recall")
            right.set_ylim(0, 1.05)
            right.legend(loc="center right", frameon=False, fontsize=8)
        if name in current:
            ax.axvline(current[name], color="black", linestyle="--", linewidth=1)
        if name == "large_premium_usd":
            ax.set_xscale("log")
        ax.set_title(name)
        ax.set_ylabel("alerts")
        ax.legend(loc="upper right", frameon=False, fontsize=8)
    fig.tight_layout()
    return Chart(
        fig,
        f"Line charts of the alerts each threshold would raise across its values ({', '.join(names)}), "
        f"with true alerts, precision and recall where ground truth exists; a dashed line marks "
        f"each configured value.",
    )


def off_book_by_strike(day: OffBookDay) -> Chart:
    """Off-book premium at settlement by strike (calls beside puts) and by expiry (`nqflow.engine.offbook`)."""
    fig, (by_strike_ax, by_expiry_ax) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    off = day.volumes[day.volumes["off_book_volume"] > 0]
    if off.empty:
        for ax in (by_strike_ax, by_expiry_ax):
            _empty(ax, f"no off-book volume in session {day.trade_date}")
        return Chart(fig, f"Off-book premium: none in session {day.trade_date} (cleared volume equals screen volume).")
    millions = off.assign(premium_musd=off["premium_usd"] / 1e6, expiry=off["symbol"].str.split(" ").str[0])
    by_strike = millions.groupby(["strike", "put_call"])["premium_musd"].sum().unstack(fill_value=0.0)
    strikes = np.arange(len(by_strike))  # evenly spaced: off-book strikes can lie thousands of points apart
    for offset, right, colour, name in ((-0.2, "C", BUY, "calls"), (0.2, "P", SELL, "puts")):
        if right in by_strike:
            by_strike_ax.bar(strikes + offset, by_strike[right], width=0.4, color=colour, label=name)
    by_strike_ax.set_xticks(strikes, [f"{k:,.0f}" for k in by_strike.index], rotation=45 if len(strikes) > 8 else 0)
    by_strike_ax.set_xlabel("strike (index points)")
    by_strike_ax.set_ylabel("off-book premium at settlement ($M)")
    by_strike_ax.set_title("By strike, all expiries")
    by_strike_ax.legend()
    order = millions.sort_values("expiration").drop_duplicates("expiry")["expiry"].tolist()
    by_expiry = millions.groupby(["expiry", "put_call"])["premium_musd"].sum().unstack(fill_value=0.0).reindex(order)
    bottom = np.zeros(len(by_expiry))
    for right, colour in (("C", BUY), ("P", SELL)):
        if right in by_expiry:
            by_expiry_ax.bar(by_expiry.index, by_expiry[right], bottom=bottom, color=colour)
            bottom += by_expiry[right].to_numpy()
    contracts = millions.groupby("expiry")["off_book_volume"].sum().reindex(order)
    for position, (total, volume) in enumerate(zip(bottom, contracts)):
        by_expiry_ax.annotate(f"{volume:,.0f} contracts", (position, total), ha="center", va="bottom", fontsize=8)
    by_expiry_ax.set_xlabel("expiry (nearest first)")
    by_expiry_ax.set_title("By expiry, calls and puts stacked")
    fig.suptitle(f"Traded off the order book in session {day.trade_date} (next-day cleared volume minus screen volume)")
    fig.tight_layout()
    largest = off.nlargest(5, "premium_usd")
    words = "; ".join(
        f"{s} {v:,.0f} contracts {usd(p)}"
        for s, v, p in zip(largest["symbol"], largest["off_book_volume"], largest["premium_usd"])
    )
    return Chart(
        fig,
        f"Bar charts of off-book premium at settlement in session {day.trade_date}, by strike (calls "
        f"beside puts) and by expiry ({', '.join(order)}); the largest: {words}.",
    )


# --------------------------------------------------------------------------- session report
def _bought_sold_bars(ax, table: pd.DataFrame, labels: list[str]) -> None:
    """Bought premium up, sold premium down ($M), calls beside puts, one group per label."""
    x = np.arange(len(table))
    for offset, right, colour, name in ((-0.2, "calls", CALLS, "calls"), (0.2, "puts", PUTS, "puts")):
        ax.bar(x + offset, table[f"{right}_bought"] / 1e6, width=0.4, color=colour, label=f"{name} bought")
        ax.bar(
            x + offset,
            -table[f"{right}_sold"] / 1e6,
            width=0.4,
            color=colour,
            alpha=0.45,
            hatch="//",
            label=f"{name} sold",
        )
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x, labels, rotation=60 if len(x) > 12 else 0, fontsize=8)
    ax.set_ylabel("premium by the aggressor ($M): bought up, sold down")
    ax.legend(fontsize=8, ncols=2)


def session_premium_by_strike(
    flow: SessionFlow, strikes: int = 30, walls: dict[str, float | None] | None = None
) -> Chart:
    """Premium bought and sold by the aggressor at the session's busiest strikes, calls beside puts;
    `walls` (name -> strike, from `nqflow.engine.gex`) are marked where they fall among them."""
    fig, ax = plt.subplots(figsize=(12, 4.5))
    table = flow.by_strike()
    if table.empty:
        _empty(ax, f"no option trades in session {flow.trade_date}")
        return Chart(fig, f"Premium by strike: no option trades in session {flow.trade_date}.")
    busiest = table.sum(axis=1).nlargest(strikes).index
    table = table.loc[sorted(busiest)]
    _bought_sold_bars(ax, table, [f"{k:,.0f}" for k in table.index])
    marked = []
    for name, strike in (walls or {}).items():
        if strike is not None and table.index.min() <= strike <= table.index.max():
            position = float(np.interp(strike, table.index.to_numpy(dtype=float), np.arange(len(table))))
            ax.axvline(position, color="#57606a", linestyle=":", linewidth=1.4, label=f"{name} {strike:,.0f}")
            marked.append(f"{name} {strike:,.0f}")
    if marked:
        ax.legend(loc="upper right", fontsize=8)
    ax.set_xlabel("strike (index points), all expiries")
    ax.set_title(f"Session {flow.trade_date}: premium by strike, the {len(table)} busiest strikes")
    fig.tight_layout()
    net = (table["calls_bought"] - table["calls_sold"]) + (table["puts_bought"] - table["puts_sold"])
    return Chart(
        fig,
        f"Bar chart of option premium bought (up) and sold (down) by the aggressor at the {len(table)} "
        f"busiest strikes of session {flow.trade_date}, calls beside puts; the most net bought is "
        f"{net.idxmax():,.0f} ({usd(net.max())}), the most net sold {net.idxmin():,.0f} "
        f"({usd(net.min())})" + (f"; dealer walls marked: {', '.join(marked)}" if marked else "") + ".",
    )


def session_premium_by_expiry(flow: SessionFlow, expiries: int = 14) -> Chart:
    """Premium bought and sold by the aggressor per expiry, nearest first, calls beside puts."""
    fig, ax = plt.subplots(figsize=(12, 4.5))
    table = flow.by_expiry().head(expiries)
    if table.empty:
        _empty(ax, f"no option trades in session {flow.trade_date}")
        return Chart(fig, f"Premium by expiry: no option trades in session {flow.trade_date}.")
    _bought_sold_bars(ax, table, list(table.index))
    ax.set_xlabel("expiry (nearest first)")
    ax.set_title(f"Session {flow.trade_date}: premium by expiry, the {len(table)} nearest")
    fig.tight_layout()
    total = table.sum(axis=1)
    return Chart(
        fig,
        f"Bar chart of option premium bought (up) and sold (down) by the aggressor for the {len(table)} "
        f"nearest expiries of session {flow.trade_date}, calls beside puts; the busiest is "
        f"{total.idxmax()} with {usd(total.max())}.",
    )


def session_cumulative_premium(flow: SessionFlow) -> Chart:
    """Net call and net put premium summed through the session, against the NQ future's price."""
    fig, ax = plt.subplots(figsize=(12, 4.5))
    series = flow.cumulative()
    if series.empty:
        _empty(ax, f"no option trades in session {flow.trade_date}")
        return Chart(fig, f"Cumulative premium: no option trades in session {flow.trade_date}.")
    ax.plot(series.index, series["net_call_premium_usd"] / 1e6, color=CALLS, label="net call premium (bought - sold)")
    ax.plot(
        series.index,
        series["net_put_premium_usd"] / 1e6,
        color=PUTS,
        linestyle="--",
        label="net put premium (bought - sold)",
    )
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel("cumulative net premium ($M)")
    ax.set_xlabel("time (UTC)")
    future = ax.twinx()
    future.plot(series.index, series["future_price"], color=NEUTRAL, linewidth=1, label="NQ future (right axis)")
    future.set_ylabel("NQ future price (index points)")
    lines = ax.get_legend_handles_labels()
    more = future.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="upper left")
    ax.set_title(f"Session {flow.trade_date}: net premium through the session against the NQ future")
    fig.autofmt_xdate()
    fig.tight_layout()
    last = series.iloc[-1]
    price = "" if pd.isna(last["future_price"]) else f"; the NQ future ended at {last['future_price']:,.2f}"
    return Chart(
        fig,
        f"Line chart of net call and net put premium (bought minus sold by the aggressor) summed through "
        f"session {flow.trade_date}, ending at {usd(last['net_call_premium_usd'])} for calls and "
        f"{usd(last['net_put_premium_usd'])} for puts{price}.",
    )


def session_headline(summary: dict) -> str:
    """The session report's first lines (Markdown): volume, premium, put/call, 0DTE, alerts."""
    ratio = summary["put_call_premium_ratio"]
    off = summary["previous_off_book_contracts"]
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(summary["alerts_by_kind"].items())) or "none"
    return (
        f"**Session** {summary['trade_date']} | **contracts** {summary['contracts']:,} | **premium** "
        f"{usd(summary['premium_usd'])} (calls {usd(summary['call_premium_usd'])}, puts "
        f"{usd(summary['put_premium_usd'])}) | **put/call premium ratio** "
        f"{'n/a' if ratio is None else f'{ratio:.2f}'} | **0DTE share of contracts** "
        f"{summary['zero_dte_share']:.0%} | **packages** {summary['packages']:,}\n\n"
        f"**Net premium by the aggressor** calls {usd(summary['net_call_premium_usd'])}, puts "
        f"{usd(summary['net_put_premium_usd'])} | **alerts recorded** {summary['alerts']} ({kinds}) | "
        f"**previous session off the book** "
        f"{'not published yet' if off is None else f'{off:,} contracts'}"
        + "".join(f"\n\n> {note}" for note in summary["notes"])
    )


def session_alerts_table(flow: SessionFlow, verdicts: dict[str, dict] | None = None) -> Styler:
    """Every alert recorded for the session, in time order, readable; with `verdicts` (the next
    morning's confirmations by alert id, once recorded) whether each opened or closed positions."""
    alerts = flow.alerts
    if alerts.empty:
        return readable(alerts.iloc[:0, :0], f"No alert was recorded for session {flow.trade_date}.")
    alerts = alerts.sort_values("event_time", kind="stable")
    columns = [
        "event_time",
        "label",
        "confidence",
        "kind",
        "symbol",
        "direction",
        "sentiment",
        "days_to_expiry",
        "volume",
        "premium_usd",
    ]
    table = alerts[[*columns, "reasons"]]
    if verdicts:
        table = table.assign(opened_or_closed=[(verdicts.get(i) or {}).get("verdict", "") for i in alerts["alert_id"]])[
            [*columns, "opened_or_closed", "reasons"]
        ]
    return readable(table)


def worked_finals_table(finals: pd.DataFrame) -> Styler:
    """Each worked order of the session as it ended: its child orders, contracts and premium
    when its alert went out, and in all (more children often follow the alert)."""
    if finals.empty:
        return readable(finals.iloc[:0, :0], "No worked order reached the alert level in this session.")
    table = finals[
        ["symbol", "side", "first_time", "last_time", "alert_children", "alert_premium_usd", "children", "premium_usd"]
    ]
    return readable(table)


def off_book_alerts_table(day: OffBookDay) -> Styler:
    """The session's off-book alerts, readable (no aggressor is published: UNKNOWN)."""
    if day.alerts.empty:
        return readable(
            day.alerts.iloc[:0, :0], f"No off-book trade of session {day.trade_date} reached the alert level."
        )
    return readable(day.alerts[["label", "confidence", "symbol", "direction", "volume", "premium_usd", "reasons"]])


def off_book_volumes_table(day: OffBookDay) -> Styler:
    """Every option with off-book volume: what cleared, what printed on the screen, the rest, and
    the open interest before and after, in columns that fit the page."""
    rows = day.volumes[day.volumes["off_book_volume"] > 0]
    table = rows[
        [
            "symbol",
            "cleared_volume",
            "screen_volume",
            "off_book_volume",
            "settlement",
            "premium_usd",
            "oi_before",
            "oi_after",
            "oi_change",
        ]
    ].rename(
        columns={
            "cleared_volume": "cleared",
            "screen_volume": "on screen",
            "off_book_volume": "off book",
            "oi_before": "OI before",
            "oi_after": "OI after",
            "oi_change": "OI change",
        }
    )
    return readable(table, f"No option of session {day.trade_date} traded off the book.")


def confirmations_table(confirmations: Confirmations) -> Styler:
    """Each of a session's alerts against the next morning's open interest: opened, closed,
    mixed, or unknown (an option that expired has no next-morning open interest)."""
    table = confirmations.table
    if table.empty:
        return readable(table.iloc[:0, :0], f"No alert of session {confirmations.trade_date} to confirm.")
    order = {"opening": 0, "closing": 1, "mixed": 2, "unknown": 3}
    table = table.assign(_order=table["verdict"].map(order)).sort_values(["_order", "volume"], ascending=[True, False])
    return readable(table[["verdict", "kind", "symbol", "event_time", "volume", "oi_before", "oi_after", "oi_change"]])


def previous_off_book(flow: SessionFlow):
    """The session report's off-book section: the previous session's chart, or why there is none."""
    from IPython.display import Markdown

    day = flow.previous_off_book
    if day is None:
        return Markdown("The previous session's statistics are not published yet (or not in this data).")
    if not (day.volumes["off_book_volume"] > 0).any():
        return Markdown(
            f"Nothing traded off the order book in session {day.trade_date}: its cleared volume "
            f"equals what printed on the screen."
        )
    return off_book_by_strike(day)


# --------------------------------------------------------------------------- dealer positioning
def gex_headline(positioning: DealerPositioning, before: DealerPositioning | None = None) -> str:
    """The GEX page's first lines (Markdown): the future, walls and flip, and their change since the day before."""

    def strike(value: float | None) -> str:
        return "none" if value is None else f"{value:,.0f}"

    def change(now: float | None, then: float | None) -> str:
        if before is None or now is None or then is None:
            return ""
        return f" ({now - then:+,.0f} since {before.session})"

    def then(name: str) -> float | None:
        return None if before is None else getattr(before, name)

    p = positioning
    flips = p.crossings
    several = f" (crossings at {', '.join(f'{c:,.0f}' for c in flips)}: the nearest is shown)" if len(flips) > 1 else ""
    skipped = "; ".join(f"{n:,} {why}" for why, n in p.skipped.items()) or "none"
    return (
        f"**Session** {p.session} | **{p.future}** {p.future_price:,.2f} | **total GEX** {usd(p.total_gex_usd)} "
        f"per 1% | **call wall** {strike(p.call_wall)}{change(p.call_wall, then('call_wall'))} | "
        f"**put wall** {strike(p.put_wall)}{change(p.put_wall, then('put_wall'))} | "
        f"**absolute-gamma strike** {strike(p.abs_gamma_strike)} | **zero gamma** {strike(p.zero_gamma)}"
        f"{change(p.zero_gamma, then('zero_gamma'))}{several}\n\n"
        f"{len(p.options):,} options counted; left out (no implied volatility from their settlement): {skipped}."
    )


def _strikes_near(table: pd.DataFrame, price: float, each_side: int) -> pd.DataFrame:
    """The rows of a by-strike table at the 2 x `each_side` strikes nearest `price`, ascending."""
    return table.iloc[(table["strike"] - price).abs().argsort()[: 2 * each_side]].sort_values("strike")


def gex_by_strike(positioning: DealerPositioning, strikes_each_side: int = 40) -> Chart:
    """Call GEX up, put GEX down, by strike near the future, with the walls, the flip and the price marked."""
    table = positioning.by_strike
    fig, ax = plt.subplots(figsize=(11, 4.5))
    if table.empty:
        _empty(ax, "no option with open interest and a settlement")
        return Chart(fig, f"GEX by strike for session {positioning.session}: no option to count.")
    price = positioning.future_price
    near = _strikes_near(table, price, strikes_each_side)
    width = float(np.diff(near["strike"]).min()) * 0.8 if len(near) > 1 else 10.0
    ax.bar(near["strike"], near["call_gex_usd"] / 1e6, width=width, color=CALLS, label="calls (+)")
    ax.bar(near["strike"], near["put_gex_usd"] / 1e6, width=width, color=PUTS, label="puts (-)")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.axvline(price, color="black", linestyle="--", linewidth=1, label=f"{positioning.future} {price:,.2f}")
    for name, value, style in (
        ("call wall", positioning.call_wall, ":"),
        ("put wall", positioning.put_wall, ":"),
        ("zero gamma", positioning.zero_gamma, "-."),
    ):
        if value is not None and near["strike"].min() <= value <= near["strike"].max():
            ax.axvline(value, color="#57606a", linestyle=style, linewidth=1.2, label=f"{name} {value:,.0f}")
    ax.set_xlabel("strike (index points), all expiries")
    ax.set_ylabel("GEX ($M per 1% move)")
    ax.set_title(f"Session {positioning.session}: dealer gamma by strike (calls up, puts down)")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return Chart(
        fig,
        f"Bars of dealer gamma exposure by strike for session {positioning.session}, calls up and puts "
        f"down, in $M per 1% move: call wall {positioning.call_wall}, put wall {positioning.put_wall}, "
        f"zero gamma {positioning.zero_gamma}, {positioning.future} at {price:,.2f}.",
    )


def gex_settled_and_flow(settled: DealerPositioning, adjusted: DealerPositioning, strikes_each_side: int = 30) -> Chart:
    """Net GEX by strike, settled beside the flow-adjusted estimate (`nqflow.engine.gex.flow_adjusted`),
    with each view's walls and flip named in the title and the alt text."""
    fig, ax = plt.subplots(figsize=(11, 4.5))
    table = settled.by_strike.merge(
        adjusted.by_strike[["strike", "net_gex_usd"]], on="strike", how="outer", suffixes=("", "_flow")
    ).fillna(0.0)
    if table.empty:
        _empty(ax, "no option with open interest and a settlement")
        return Chart(fig, f"Settled and flow-adjusted GEX for session {settled.session}: no option to count.")
    price = settled.future_price
    near = _strikes_near(table, price, strikes_each_side)
    width = float(np.diff(near["strike"]).min()) * 0.4 if len(near) > 1 else 5.0
    ax.bar(
        near["strike"] - width / 2,
        near["net_gex_usd"] / 1e6,
        width=width,
        color="#8c959f",
        label="settled (morning OI)",
    )
    ax.bar(
        near["strike"] + width / 2,
        near["net_gex_usd_flow"] / 1e6,
        width=width,
        color=CALLS,
        label="flow-adjusted (estimate)",
    )
    ax.axhline(0, color="black", linewidth=0.8)
    ax.axvline(price, color="black", linestyle="--", linewidth=1, label=f"{settled.future} {price:,.2f}")
    ax.set_xlabel("strike (index points), all expiries")
    ax.set_ylabel("net GEX ($M per 1% move)")

    def walls(p: DealerPositioning) -> str:
        return ", ".join(
            f"{name} {value:,.0f}" if value is not None else f"{name} none"
            for name, value in (("call wall", p.call_wall), ("put wall", p.put_wall), ("zero gamma", p.zero_gamma))
        )

    ax.set_title(f"Session {settled.session}: net dealer gamma by strike, settled and moved by the session's flow")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return Chart(
        fig,
        f"Paired bars of net dealer gamma by strike for session {settled.session} in $M per 1% move: grey the "
        f"settled view from the morning's open interest ({walls(settled)}), blue an estimate moved by the "
        f"session's screen flow ({walls(adjusted)}).",
    )


def gex_profile_chart(positioning: DealerPositioning) -> Chart:
    """Total GEX against a hypothetical futures price: where it crosses zero is the flip."""
    profile = positioning.profile
    fig, ax = plt.subplots(figsize=(11, 4))
    ax.plot(profile["future_price"], profile["total_gex_usd"] / 1e6, color=CALLS, label="total GEX")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.axvline(
        positioning.future_price,
        color="black",
        linestyle="--",
        linewidth=1,
        label=f"{positioning.future} {positioning.future_price:,.2f}",
    )
    for crossing in positioning.crossings:
        ax.axvline(crossing, color=PUTS, linestyle="-.", linewidth=1.2, label=f"zero gamma {crossing:,.0f}")
    ax.set_xlabel(f"{positioning.future} price (index points); every option repriced there, volatility kept")
    ax.set_ylabel("total GEX ($M per 1% move)")
    ax.set_title(f"Session {positioning.session}: total dealer gamma against the futures price")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    crossings = ", ".join(f"{c:,.0f}" for c in positioning.crossings) or "none within 10%"
    return Chart(
        fig,
        f"Line of total dealer gamma exposure as the {positioning.future} moves 10% either way from "
        f"{positioning.future_price:,.2f}: it crosses zero at {crossings}.",
    )


def gex_by_expiry_table(positioning: DealerPositioning) -> Styler:
    """Call, put and net GEX per expiry, nearest first."""
    return readable(positioning.by_expiry, "No option to count.")
