"""The demo: replay the bundled sample market's planted events through the whole monitor.

It keeps to files of its own unless told otherwise: the state database `DEMO_STATE_DB`, the
outputs under `DEMO_OUTPUTS` and the alert log `DEMO_ALERT_LOG`. Each demo starts afresh, but
it deletes a state database only when an earlier demo created it (``meta.created_by``); one it
is pointed at that holds anything else is used as it is and never deleted."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from nqflow.alerts import Direction, usd
from nqflow.config import Config, load_config
from nqflow.market import hours as cal
from nqflow.ops.followups import confirmation_line
from nqflow.ops.scheduling import SimulatedClock
from nqflow.ops.store import StateStore
from nqflow.paths import resolve

DEMO_STATE_DB = "data/demo/state.sqlite"
DEMO_OUTPUTS = "outputs/demo"
DEMO_ALERT_LOG = "logs/demo/institutional_alerts.log"
CREATED_BY = "demo"


def fresh_state(state_db: Path) -> str:
    """Make `state_db` ready for a demo, in words: a new database (marked as the demo's), an
    earlier demo's database replaced, or somebody else's kept as it is (nothing deleted)."""
    if state_db.exists():
        if StateStore(state_db).meta("created_by") != CREATED_BY:
            return (
                f"using the state database {state_db} as it is (not created by a demo, so nothing in it is "
                f"deleted); alerts already recorded there are not sent again"
            )
        for made in [state_db, *(state_db.with_name(state_db.name + suffix) for suffix in ("-wal", "-shm", ".lock"))]:
            made.unlink(missing_ok=True)
        said = f"a fresh demo state database in {state_db} (the last demo's was replaced)"
    else:
        said = f"a new demo state database in {state_db}"
    StateStore(state_db).set_meta("created_by", CREATED_BY)
    return said


def demo(args, config: Config, make_scheduler) -> int:
    """`scheduler.py demo`: the sample market's planted events, one window each, through the real
    scheduler (papermill, reports, the outbox) on a simulated clock; `make_scheduler(args, config,
    clock=...)` builds the scheduler the CLI would."""
    from nqflow.research.quality import expected_events
    from nqflow.research.sample.generator import generate_sample_market, load_ground_truth

    sample = generate_sample_market(resolve(args.data_dir or config.data.replay_dir))
    truth = load_ground_truth(sample)
    state_db = Path(args.state_db) if args.state_db else resolve(DEMO_STATE_DB)
    state_said = fresh_state(state_db)
    args.outputs = args.outputs or str(resolve(DEMO_OUTPUTS))
    if not any(setting.startswith("notify.log.path=") for setting in args.set):
        config = load_config(config.path or None, {**dict(_overrides(args)), "notify.log.path": DEMO_ALERT_LOG})
    last = truth["sessions"][-3:]
    every = expected_events(truth, config)
    off_book = every[(every["kind"] == "off_book") & every["should_alert"]]
    planted = expected_events(truth, config, last)
    planted = planted[planted["kind"] != "off_book"]  # session-wide, read from the next day: shown last
    windows = _pick_windows(planted, args.windows, config.schedule.interval_minutes)
    clock = SimulatedClock(windows[0][1])
    args.state_db = str(state_db)
    args.source, args.data_dir = "replay", str(sample)
    scheduler = make_scheduler(args, config, clock=clock, say=lambda line: None)  # the demo says its own lines
    print(
        f"nqflow demo: replaying {len(windows)} windows of the sample market in {sample}; each shows the event "
        f"planted in it (ground truth), then what the monitor found; {state_said}; outputs in {scheduler.outputs_dir}"
    )
    _replay_windows(scheduler, clock, windows, planted, config)
    days = sorted({found[0] for start, _ in windows if (found := cal.session_of(start)) is not None})
    published = [d for d in days if str(cal.next_trading_day(d)) in truth["sessions"]]
    _next_mornings(scheduler, clock, off_book, planted, published, config)
    _session_pages(scheduler, clock, days)
    index = scheduler.refresh_index()
    print(f"\nReport index (sessions, every alert, sortable and filterable): {index}")
    return 0


def _pick_windows(planted: pd.DataFrame, n: int, interval_minutes: int) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """`n` windows holding planted events: one per kind first (a strategy package and a 0DTE order
    lead), then the rest, latest first; returned in time order."""
    priority = {
        "strategy": 0,
        "worked": 1,
        "block_0dte": 2,
        "block": 3,
        "sweep": 4,
        "surge_expiry": 5,
        "surge_instrument": 6,
        "surge_product": 7,
    }
    kinds = planted["kind"] + np.where(planted.get("zero_dte", False).fillna(False).astype(bool), "_0dte", "")
    order = planted.assign(rank=kinds.map(priority).fillna(9), seen=kinds.duplicated())
    order = order.sort_values(["seen", "rank", "window_start"], ascending=[True, True, False])
    picks = list(dict.fromkeys(order["window_start"]))[:n]
    return sorted((pd.Timestamp(s), pd.Timestamp(s) + pd.Timedelta(minutes=interval_minutes)) for s in picks)


def _replay_windows(scheduler, clock, windows, planted: pd.DataFrame, config: Config) -> None:
    """Each window through the scheduler, after what was planted in it."""
    for start, end in windows:
        clock.current = end + pd.Timedelta(minutes=config.schedule.availability_delay_minutes)
        print(f"\n== window {start:%Y-%m-%d %H:%M}-{end:%H:%M}Z (simulated clock {clock.current:%H:%M}Z)")
        for event in planted[planted["window_start"] == start.isoformat()].itertuples(index=False):
            print(f"   planted: {_planted(event, config)}")
        sys.stdout.flush()
        run = scheduler.process(start, end)
        scheduler.deliver()
        print(
            f"   {len(run.alerts)} alert(s) in {run.duration_s:.1f}s; report {run.html_path}"
            + (f"; FAILED: {run.error}" if not run.ok else "")
        )


def _next_mornings(scheduler, clock, off_book: pd.DataFrame, planted: pd.DataFrame, published, config: Config) -> None:
    """The next-day statistics: a planted off-book block, then each replayed session's confirmations."""
    if len(off_book):
        event = off_book.iloc[-1]  # the latest session whose next-day statistics the sample holds
        day = dt.date.fromisoformat(event["session"])
        if day not in published:
            print(f"\n== session {day}: off the order book (blocks), read from the next day's statistics")
            print(f"   planted: {_planted(event, config)}")
            sys.stdout.flush()
            clock.current = pd.Timestamp(event["published"]) + pd.Timedelta(minutes=5)
            run = scheduler.process_daily("off_book", day)
            scheduler.deliver()
            print(
                f"   {len(run.alerts)} alert(s) in {run.duration_s:.1f}s; report {run.html_path}"
                + (f"; FAILED: {run.error}" if not run.ok else "")
            )
    for day in published:
        print(
            f"\n== session {day}: the next morning's statistics: blocks off the order book, and whether each "
            f"alert opened or closed positions (open interest)"
        )
        sys.stdout.flush()
        following = cal.next_trading_day(day)
        clock.current = max(
            clock.current, cal.sessions(following, following).iloc[0].market_open + pd.Timedelta(hours=1)
        )
        run = scheduler.process_daily("off_book", day)
        scheduler.deliver()  # the follow-up message goes out once, on the channels that carried the alerts
        for row in run.notes.get("confirmation", []):
            truth_says = _planted_position(planted, row)
            print(f"   {confirmation_line(row)}" + (f" (planted: {truth_says})" if truth_says else ""))
        print(
            f"   {len(run.alerts)} off-book alert(s); report {run.html_path}"
            + (f"; FAILED: {run.error}" if not run.ok else "")
        )


def _session_pages(scheduler, clock, days) -> None:
    """Each replayed session's report, then the last one's dealer positioning."""
    for day in days:
        print(
            f"\n== session {day}: the session report (every alert and whether it opened or closed positions, "
            f"worked orders as they ended, premium by strike and expiry, largest prints)"
        )
        sys.stdout.flush()
        clock.current = max(clock.current, scheduler.ready_at("session", day))
        run = scheduler.process_daily("session", day)
        finals = [f for f in run.notes.get("worked_final", []) if f.get("more_children")]
        print(
            f"   {run.summary.get('alerts', 0) if run.summary else 0} alert(s) recorded in the session; "
            + "".join(
                f"worked order {f['symbol']}: {f['alert_children']} children at the alert, {f['children']} "
                f"({usd(f['premium_usd'])}) in all; "
                for f in finals
            )
            + f"report {run.html_path}"
            + (f"; FAILED: {run.error}" if not run.ok else "")
        )
    last_day = days[-1]
    print(
        f"\n== session {last_day}: dealer positioning (gamma by strike, walls, zero gamma from that morning's "
        f"open interest)"
    )
    sys.stdout.flush()
    clock.current = max(clock.current, scheduler.ready_at("gex", last_day) + pd.Timedelta(hours=1))
    run = scheduler.process_daily("gex", last_day)
    print(
        f"   call wall {run.summary.get('call_wall')}, put wall {run.summary.get('put_wall')}, zero gamma "
        f"{run.summary.get('zero_gamma')}; report {run.html_path}" + (f"; FAILED: {run.error}" if not run.ok else "")
    )


def _planted_position(planted: pd.DataFrame, row: dict) -> str:
    """What the ground truth says the planted order behind a confirmed alert on one option did."""
    if "position" not in planted:
        return ""
    for event in planted[planted["position"].notna()].itertuples(index=False):
        if event.kind in ("block", "worked") and [row["symbol"]] == list(event.symbols):
            if str(event.window_start)[:10] <= row["event_time"][:10]:
                return str(event.position)
    return ""


def _overrides(args) -> list[tuple[str, object]]:
    from nqflow.config import parse_override

    return [parse_override(setting) for setting in args.set]


def _planted(event, config: Config) -> str:
    """One planted event in words, and whether the configured thresholds should alert on it."""
    side = Direction.of_side(getattr(event, "side", None)).verb
    if event.kind == "off_book":
        legs = " + ".join(f"{size:,} {symbol}" for size, symbol in zip(event.sizes, event.symbols))
        name = event.strategy if isinstance(event.strategy, str) else "block"
        what = f"off-book {name} of {legs}, {usd(event.premium_usd)} at settlement, never on the screen"
    elif event.kind == "strategy":
        what = (
            f"{event.strategy.replace('_', ' ')} package of {event.size:,} {side}, {usd(event.premium_usd)} "
            f"gross premium, reads {event.sentiment.lower()}"
        )
    elif event.kind == "worked":
        what = (
            f"worked order: {int(event.children)} child orders {side} over "
            f"{(pd.Timestamp(event.last_time) - pd.Timestamp(event.first_time)).total_seconds() / 60:.0f} min "
            f"from {pd.Timestamp(event.first_time):%H:%M}Z, {event.size:,} contracts, {usd(event.premium_usd)} in all "
            f"(each child far below any threshold)"
        )
    elif event.kind in ("block", "sweep"):
        zero = " 0DTE" if getattr(event, "zero_dte", False) is True else ""
        what = f"{event.kind}{zero} of {event.size:,} contracts {side}, {usd(event.premium_usd)} premium"
    else:
        what = f"{event.kind.replace('_', ' ')} of {event.size:,} contracts, {event.ratio:,.1f}x the usual volume"
    if event.should_alert:
        article = "an" if str(event.expected_kind)[0] in "aeiou" else "a"
        return f"{what}: expect {article} {event.expected_kind} alert"
    return f"{what}: below the thresholds, no alert expected"
