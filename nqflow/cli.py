"""Command line: run | live | once | window | backfill | backtest | cost | demo | status | ... (`scheduler.py -h`).

Every failure is one line on stderr (with --json, a JSON error object on stdout as well) and
an exit code of its own (`nqflow.errors.ExitCode`, listed in `scheduler.py -h`)."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from pathlib import Path

from nqflow.alerts import KINDS
from nqflow.config import load_config, parse_override
from nqflow.errors import DataNotYetAvailable, ExitCode, NqflowError, UsageError
from nqflow.market import hours as cal
from nqflow.ops.scheduling import Scheduler
from nqflow.paths import resolve
from nqflow.sources import SOURCE_NAMES


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scheduler.py",
        description="nqflow: NQ options institutional-flow monitor",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="exit codes:\n" + "\n".join(f"  {code.value}  {EXIT_MEANINGS[code]}" for code in ExitCode),
    )
    parser.add_argument("--config", help="config file (default config/monitoring.toml)")
    parser.add_argument("--source", choices=list(SOURCE_NAMES), help="data source (default: the config's)")
    parser.add_argument("--data-dir", help="replay folder or Databento cache (default: the config's)")
    parser.add_argument("--outputs", help="outputs folder (default: the config's)")
    parser.add_argument("--state-db", help="SQLite state database (default: the config's)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key for this run, e.g. thresholds.large_premium_usd=5e6",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    _window_commands(sub)
    _backtest_command(sub)
    _daily_commands(sub)
    _tool_commands(sub)
    return parser


def _window_commands(sub) -> None:
    """run, live, once, window, backfill: the windows, as they come or chosen."""
    sub.add_parser("run", help="every interval, aligned to the clock, until SIGINT/SIGTERM")
    live = sub.add_parser(
        "live", help="stream Databento Live until SIGINT/SIGTERM: alerts within a second, recorded for the windows"
    )
    live.add_argument(
        "--start",
        help="replay from this time, ISO 8601 with a zone (default: the end of the last window recorded, "
        "else the current session's open)",
    )
    once = sub.add_parser("once", help="the latest complete window")
    once.add_argument("--json", action="store_true", help="print the window's alerts as JSON")
    window = sub.add_parser("window", help="one chosen window")
    window.add_argument("start", help="window start, ISO 8601 with a zone, e.g. 2026-10-30T14:30Z")
    window.add_argument("end", nargs="?", help="window end (default: start + interval)")
    window.add_argument("--json", action="store_true", help="print the window's alerts as JSON")
    backfill = sub.add_parser("backfill", help="every open-market window in a range, with a progress bar")
    backfill.add_argument("start", help="first window start, ISO 8601 with a zone")
    backfill.add_argument("end", help="end of the range (after the start)")
    backfill.add_argument("--json", action="store_true", help="print the range's alerts as JSON")


def _backtest_command(sub) -> None:
    """backtest: sessions in parallel with Dask, Parquet out."""
    bt = sub.add_parser("backtest", help="every window of sessions FROM..TO (dates) in parallel with Dask; Parquet out")
    bt.add_argument("start", help="first trade date, e.g. 2026-10-05")
    bt.add_argument("end", help="last trade date (inclusive)")
    bt.add_argument(
        "--workers",
        type=_positive,
        default=2,
        help="LocalCluster worker processes, at least 1 (ignored with --dask-scheduler)",
    )
    bt.add_argument(
        "--dask-scheduler", help="address of a running dask.distributed scheduler, e.g. tcp://10.0.0.5:8786"
    )
    bt.add_argument(
        "--baseline",
        help="folder for the range's volume baseline (Parquet, one file per session; a SQLite "
        "baseline file named here is copied once into a .parquet folder beside it); on a remote "
        "cluster put it on storage every worker reads (default: a temporary folder)",
    )
    bt.add_argument("--out", help="folder for alerts.parquet and windows.parquet (default outputs/backtests/FROM_TO)")
    bt.add_argument("--features-dir", help="where session features are stored and reused (default <data>/features)")
    bt.add_argument("--refresh-features", action="store_true", help="recompute stored features even when they match")
    bt.add_argument("--json", action="store_true", help="print counts and output paths as JSON")


def _daily_commands(sub) -> None:
    """offbook, confirm, session, gex: one session's daily jobs."""
    offbook = sub.add_parser(
        "offbook",
        help="one session's blocks and other off-book trades, from the next day's "
        "statistics (runs notebooks/offbook.ipynb; alerts go out once)",
    )
    offbook.add_argument("date", help="the session's trade date, e.g. 2026-11-05")
    offbook.add_argument("--json", action="store_true", help="print only the session's off-book alerts as JSON")
    confirm = sub.add_parser(
        "confirm",
        help="whether each of a session's recorded alerts opened or closed positions, from the next "
        "morning's open interest (runs notebooks/offbook.ipynb; the follow-up goes out once)",
    )
    confirm.add_argument("date", help="the session's trade date, e.g. 2026-11-05")
    confirm.add_argument(
        "--json",
        action="store_true",
        help="print one object per alert: alert_id, kind, symbol, volume, oi_before, oi_after, oi_change, verdict",
    )
    session = sub.add_parser(
        "session", help="one session's flow report (runs notebooks/session.ipynb; outputs/YYYY-MM-DD/session.html)"
    )
    session.add_argument("date", help="the session's trade date, e.g. 2026-11-05")
    session.add_argument("--json", action="store_true", help="print only the session's figures as JSON")
    gex = sub.add_parser(
        "gex",
        help="one session's dealer positioning: gamma exposure by strike, walls and zero "
        "gamma from that morning's open interest (runs notebooks/gex.ipynb)",
    )
    gex.add_argument("date", help="the session's trade date, e.g. 2026-11-25")
    gex.add_argument("--json", action="store_true", help="print the session's positioning as one JSON object")


def _tool_commands(sub) -> None:
    """cost, sample, demo, doctor, status, alerts."""
    cost = sub.add_parser("cost", help="what Databento would bill to pull a range (asks metadata.get_cost)")
    cost.add_argument("start")
    cost.add_argument("end")
    cost.add_argument("--json", action="store_true", help="print the prices as JSON")
    sample = sub.add_parser("sample", help="generate the sample market (data.replay_dir) if it is missing or stale")
    sample.add_argument(
        "--sessions",
        type=_positive,
        help="how many sessions (deterministic; default: the bundled 26); "
        "e.g. 250 to benchmark a year without checking it in",
    )
    sample.add_argument(
        "--out",
        help="folder to write (default: --data-dir or data.replay_dir; with --sessions N other than "
        "the bundled count, that folder's name with -N, e.g. data/sample-250)",
    )
    demo = sub.add_parser("demo", help="replay the bundled sample market through several windows")
    demo.add_argument("--windows", type=int, default=6, help="how many windows to replay")
    doctor = sub.add_parser(
        "doctor",
        help="check the set-up: key, data lag, parents, cost, SMTP, Slack, disk "
        "(one line per check with its fix; exit code 1 when one failed)",
    )
    doctor.add_argument("--send-test", action="store_true", help="also send a test message on email and Slack")
    doctor.add_argument("--json", action="store_true", help="print the checks as JSON")
    status = sub.add_parser(
        "status",
        help="health verdict, recent windows and deliveries; exit code 0 healthy, "
        "6 degraded, 7 blind (for cron or systemd)",
    )
    status.add_argument("--json", action="store_true", help="print only the verdict and its details as JSON")
    alerts = sub.add_parser("alerts", help="alert history")
    alerts.add_argument("--since", help="window start at or after this (ISO 8601 with a zone or offset)")
    alerts.add_argument("--kind", choices=list(KINDS))
    alerts.add_argument("--min-confidence", type=float, default=0.0)
    alerts.add_argument("--json", action="store_true")


#: What each exit code means (`scheduler.py -h`, the README).
EXIT_MEANINGS = {
    ExitCode.OK: "done; status: healthy",
    ExitCode.FAILED: "a window, daily job or doctor check ran and failed (its error is recorded)",
    ExitCode.USAGE: "bad command line: unknown option, bad time or date, reversed range, closed market",
    ExitCode.CONFIG: "bad config key or value, missing API key or secret, unwritable folder, over budget",
    ExitCode.DATA: "market data missing, corrupt or of the wrong kind",
    ExitCode.NOT_YET: "not published yet: try again later (nothing was recorded)",
    ExitCode.DEGRADED: "status: degraded (a window failed for good, a channel is down)",
    ExitCode.BLIND: "status: blind (no window done, data not published, or lagging)",
}


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _time(text: str):
    """A command-line time: ISO 8601 with its zone or offset (a bad or naive one is a usage error)."""
    try:
        return cal.to_utc(text)
    except NqflowError as exc:
        raise UsageError(str(exc)) from None


def _scheduler(args, config, **extra) -> Scheduler:
    overrides = dict(parse_override(o) for o in args.set)
    return Scheduler(
        config,
        source=args.source,
        data_dir=args.data_dir,
        overrides=overrides,
        outputs_dir=Path(args.outputs) if args.outputs else resolve(config.data.outputs_dir),
        state_db=Path(args.state_db) if args.state_db else resolve(config.data.state_db),
        **{"say": _say, **extra},
    )


def _say(line: str) -> None:
    print(line, flush=True)


def _print_runs(scheduler: Scheduler, runs, args) -> int:
    """The windows' outcome (each window said its own line as it finished); a failed window
    is an error (a JSON error object with --json), never an empty list."""
    alerts = [a for run in runs for a in run.alerts]
    failed = [r for r in runs if not r.ok]
    if len(runs) > 1:
        print(
            f"{len(runs)} windows: {len(runs) - len(failed)} ok, {len(failed)} failed, {len(alerts)} alert(s); "
            f"index {scheduler.outputs_dir / 'index.html'}"
        )
    if failed:
        first = failed[0]
        raise NqflowError(
            f"{len(failed)} of {len(runs)} window(s) failed (recorded, retried by `run`); first: "
            f"{first.error} (notebook: {first.notebook_path})"
        )
    if getattr(args, "json", False):
        args.emit_json([a.to_json() for a in alerts])
    return 0


def run_backtest(args, config) -> int:
    import datetime as dt

    from nqflow.research.backtest import backtest

    try:
        first, last = dt.date.fromisoformat(args.start), dt.date.fromisoformat(args.end)
    except ValueError:
        raise UsageError(f"backtest takes trade dates like 2026-10-05, not {args.start!r} / {args.end!r}") from None
    if last < first:
        raise UsageError(f"backtest range {first} to {last} is reversed; give the first trade date, then the last")
    data_dir = resolve(args.data_dir or config.data.replay_dir)
    if (args.source or config.data.source) == "databento":
        data_dir = resolve(args.data_dir or config.data.cache_dir) / config.universe.dataset  # what was fetched
    result = backtest(
        config,
        first,
        last,
        data_dir,
        workers=args.workers,
        scheduler_address=args.dask_scheduler,
        baseline_path=args.baseline,
        features_dir=args.features_dir,
        refresh=args.refresh_features,
    )
    outputs = Path(args.outputs) if args.outputs else resolve(config.data.outputs_dir)
    out = Path(args.out) if args.out else outputs / "backtests" / f"{first}_{last}"
    alerts_path, windows_path = result.to_parquet(out)
    if args.json:
        counts = result.alerts["kind"].value_counts() if len(result.alerts) else {}
        args.emit_json(
            {
                "first": str(first),
                "last": str(last),
                "sessions": len(result.sessions),
                "windows": len(result.windows),
                "alerts": len(result.alerts),
                "alerts_by_kind": {str(k): int(v) for k, v in dict(counts).items()},
                "alerts_path": str(alerts_path),
                "windows_path": str(windows_path),
            }
        )
    print(result.counts().to_string())
    print(f"\n{len(result.alerts)} alert(s) in {len(result.windows)} windows of {len(result.sessions)} sessions")
    print(f"{alerts_path}\n{windows_path}")
    return 0


def cost(args, config) -> int:
    from nqflow.sources import make_source
    from nqflow.sources.databento_historical import DatabentoSource

    source = make_source(config, "databento", args.data_dir)
    assert isinstance(source, DatabentoSource)  # the registry's "databento" entry builds one
    start, end = _time(args.start), _time(args.end)
    if end <= start:
        raise UsageError(
            f"cost range {start:%Y-%m-%d %H:%M}Z to {end:%Y-%m-%d %H:%M}Z is reversed or empty; "
            f"give the start, then the end"
        )
    total, prices = 0.0, {}
    for schema in ("trades", "definition", "statistics"):
        dollars = source.estimate_cost(schema, start, end)
        total += dollars
        prices[schema] = dollars
        print(f"{schema:<11} ${dollars:,.2f}")
    if args.json:
        args.emit_json(
            {
                "start": start.isoformat(),
                "end": end.isoformat(),
                "usd": prices,
                "total_usd": total,
                "budget_usd": config.databento.budget_usd,
            }
        )
    print(
        f"{'total':<11} ${total:,.2f}  ({config.universe.dataset}, {', '.join(source.symbols)}; "
        f"{start:%Y-%m-%d %H:%M}Z-{end:%Y-%m-%d %H:%M}Z; budget per pull ${config.databento.budget_usd:,.2f})"
    )
    return 0


def status(args, config) -> int:
    from nqflow.ops import health

    scheduler = _scheduler(args, config)
    now = scheduler.clock.now()
    conditions = scheduler.health_conditions()
    verdict = health.verdict(conditions)
    windows = scheduler.store.windows(limit=config.schedule.max_catchup_windows)
    deliveries = scheduler.store.deliveries()
    basis = scheduler.health_basis()
    if args.json:
        done = windows[windows["status"] == "ok"]
        args.emit_json(
            {
                "verdict": verdict.name.lower(),
                "exit_code": int(verdict.exit_code),
                "now": now.isoformat(),
                **basis,
                "conditions": [c.to_json() for c in conditions],
                "last_ok_window": done["window_start"].max() if len(done) else None,
                "windows": {str(k): int(v) for k, v in windows["status"].value_counts().items()},
                "deliveries": {
                    f"{channel}:{status}": int(n)
                    for (channel, status), n in deliveries.groupby(["channel", "status"]).size().items()
                }
                if len(deliveries)
                else {},
            }
        )
        return int(verdict.exit_code)
    against = (
        f"the data source's end, {basis['data_end'][:16]}Z"
        if basis["measured_against"] == "data_end" and basis["data_end"]
        else "the clock"
    )
    print(f"health: {verdict.name.lower()} (open-market windows measured against {against})")
    for condition in conditions:
        print(f"  {condition.verdict.name.lower()}: {condition.detail}")
    if windows.empty:
        print("no windows recorded yet")
        return int(verdict.exit_code)
    print(
        windows.head(20)[["window_start", "status", "attempts", "alerts", "duration_s", "last_error"]].to_string(
            index=False
        )
    )
    if len(deliveries):
        print("\ndeliveries:\n" + deliveries.groupby(["channel", "status"]).size().to_string())
    return int(verdict.exit_code)


def doctor(args, config) -> int:
    from nqflow.ops.doctor import Check, run_doctor

    try:
        scheduler = _scheduler(args, config)
    except NqflowError as exc:  # e.g. an unwritable state folder: the first check, failed
        checks = [Check("state", "FAIL", str(exc))]
    else:
        checks = run_doctor(scheduler, send_test=args.send_test)
    failed = sum(c.status == "FAIL" for c in checks)
    if args.json:
        args.emit_json(
            {
                "ready": not failed,
                "failed": failed,
                "checks": [{"name": c.name, "status": c.status, "detail": c.detail} for c in checks],
            }
        )
    for check in checks:
        print(check.line())
    print(f"{len(checks)} checks, {failed} failed" + ("" if failed else ": ready"))
    return int(ExitCode.FAILED if failed else ExitCode.OK)


def alerts_history(args, config) -> int:
    since = _time(args.since).isoformat() if args.since else None  # stored window starts are UTC ISO text
    scheduler = _scheduler(args, config)
    rows = scheduler.store.alerts(since=since, kind=args.kind, min_confidence=args.min_confidence)
    if args.json:
        args.emit_json([a.to_json() for a in rows])
    else:
        from nqflow.alerts import one_line

        for alert in rows:
            print(one_line(alert))
        print(f"{len(rows)} alert(s)")
    return 0


def once(args, config) -> int:
    scheduler = _scheduler(args, config)
    start, end = scheduler.latest_complete_window(scheduler.clock.now())
    if not cal.window_is_open(start, end):
        print(f"market closed for the latest window {start:%Y-%m-%d %H:%M}Z; nothing to do", file=sys.stderr)
        if args.json:
            args.emit_json([])  # a quiet answer: the market is closed, nothing failed
        return 0
    scheduler.check_window(start, end)
    return _print_runs(scheduler, scheduler.process_windows([(start, end)]), args)


def window(args, config) -> int:
    start = _time(args.start)
    scheduler = _scheduler(args, config)
    end = _time(args.end) if args.end else start + scheduler.interval
    scheduler.check_window(start, end)
    return _print_runs(scheduler, scheduler.process_windows([(start, end)]), args)


def backfill(args, config) -> int:
    start, end = _time(args.start), _time(args.end)
    if end <= start:
        raise UsageError(
            f"backfill range {start:%Y-%m-%d %H:%M}Z to {end:%Y-%m-%d %H:%M}Z is reversed or empty; "
            f"give the first window's start, then the end"
        )
    scheduler = _scheduler(args, config)
    windows = cal.windows_between(start, end, config.schedule.interval_minutes)
    if not any(cal.window_is_open(*w) for w in windows):
        raise UsageError(
            f"no open-market window in {start:%Y-%m-%d %H:%M}Z to {end:%Y-%m-%d %H:%M}Z "
            f"(CME Globex equity options halt, weekend or holiday); pick a range with open market"
        )
    return _print_runs(scheduler, scheduler.process_windows(windows, progress=True), args)


def _trade_date(text: str, command: str):
    import datetime as dt

    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{command} takes a trade date like 2026-11-05, not {text!r}") from None
    if not cal.trading_days(day, day):
        raise UsageError(f"{day} is not a CME Globex trading day; pick a session date")
    return day


def _daily(args, config, job: str, done, payload=None, command: str | None = None) -> int:
    """Run one session's `job` notebook now, deliver what it found, and report in one line
    (`done(run)`); with --json, stdout holds only the JSON (`payload(run)`: by default the
    off-book alerts, or the job's summary)."""
    day = _trade_date(args.date, command or {"off_book": "offbook"}.get(job, job))
    scheduler = _scheduler(args, config)
    scheduler.preflight()
    run = scheduler.process_daily(job, day)
    scheduler.deliver()
    scheduler.refresh_index()
    if run.waiting:
        raise DataNotYetAvailable(f"{job} {day} is not published yet: {(run.error or '').split(': ', 1)[-1]}")
    if not run.ok:
        raise NqflowError(f"{job} {day} failed: {run.error} (notebook: {run.notebook_path})")
    if args.json:
        args.emit_json(
            payload(run) if payload else [a.to_json() for a in run.alerts] if job == "off_book" else run.summary
        )
    print(f"session {day}: {done(run)}; report {run.html_path}")
    return 0


def offbook(args, config) -> int:
    return _daily(
        args,
        config,
        "off_book",
        lambda run: f"{run.summary.get('off_book_contracts', 0):,} contracts off the book, {len(run.alerts)} alert(s)",
    )


def confirm(args, config) -> int:
    """Next-morning confirmation of a session's recorded alerts: the off-book notebook reads the
    next day's statistics once for both (`nqflow.engine.positions`), records the verdicts beside
    the alerts and sends the follow-up once; --json prints one object per alert."""
    from nqflow.engine.positions import VERDICTS

    def done(run) -> str:
        rows = run.notes.get("confirmation", [])
        counts = {v: sum(r["verdict"] == v for r in rows) for v in VERDICTS}
        return f"{len(rows)} alert(s) confirmed: " + ", ".join(f"{n} {v}" for v, n in counts.items())

    return _daily(args, config, "off_book", done, lambda run: run.notes.get("confirmation", []), "confirm")


def gex(args, config) -> int:
    """The page through its notebook (like every daily job); with --json the whole positioning the
    notebook glued (`DealerPositioning.summary`), without the window-summary fields it carries."""
    from nqflow.alerts import SUMMARY_REQUIRED

    emit = args.emit_json
    args.emit_json = lambda summary: emit({k: v for k, v in summary.items() if k not in SUMMARY_REQUIRED})
    return _daily(
        args,
        config,
        "gex",
        lambda run: (
            f"call wall {run.summary.get('call_wall')}, put wall "
            f"{run.summary.get('put_wall')}, zero gamma "
            f"{run.summary.get('zero_gamma')}"
        ),
    )


def session(args, config) -> int:
    return _daily(
        args,
        config,
        "session",
        lambda run: f"{run.summary.get('contracts', 0):,} contracts, {run.summary.get('alerts', 0)} alert(s) recorded",
    )


def run(args, config) -> int:
    _scheduler(args, config).run_forever()  # says what it does, a line per window and daily job
    return 0


def live(args, config) -> int:
    from nqflow.ops.live import run_live

    start = _time(args.start) if args.start else None
    run_live(config, Path(args.state_db) if args.state_db else None, start, say=_say)
    return 0


def demo(args, config) -> int:
    from nqflow.research.demo import demo as run_demo

    return run_demo(args, config, _scheduler)


def sample(args, config) -> int:
    from nqflow.research.sample.generator import SampleSpec, generate_sample_market, sample_folder

    if args.sessions is not None and args.sessions < 2:
        raise UsageError(
            f"--sessions must be at least 2 (a session and the next day's statistics), not {args.sessions}"
        )
    spec = SampleSpec(n_sessions=args.sessions) if args.sessions else SampleSpec()
    # Another session count never lands in the replay folder: it would replace the bundled sample.
    folder = resolve(args.out) if args.out else sample_folder(resolve(args.data_dir or config.data.replay_dir), spec)
    folder = generate_sample_market(folder, spec)
    print(f"sample market ready in {folder}")
    return 0


#: Subcommand -> handler(args, config) -> exit code.
COMMANDS = {
    "run": run,
    "live": live,
    "once": once,
    "window": window,
    "backfill": backfill,
    "backtest": run_backtest,
    "cost": cost,
    "gex": gex,
    "confirm": confirm,
    "offbook": offbook,
    "session": session,
    "demo": demo,
    "sample": sample,
    "status": status,
    "doctor": doctor,
    "alerts": alerts_history,
}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # With --json, stdout holds only the JSON: every human line (the console channel's
    # alerts, progress, what was done) goes to stderr, and the JSON through args.emit_json.
    json_stdout = sys.stdout
    args.emit_json = lambda value: print(json.dumps(value, indent=2), file=json_stdout, flush=True)
    try:
        overrides = dict(parse_override(o) for o in args.set)
        config = load_config(args.config, overrides)
        human = contextlib.redirect_stdout(sys.stderr) if getattr(args, "json", False) else contextlib.nullcontext()
        with human:
            return COMMANDS[args.command](args, config)
    except NqflowError as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        if getattr(args, "json", False):
            args.emit_json({"error": message, "kind": type(exc).__name__, "exit_code": int(exc.exit_code)})
        return int(exc.exit_code)


if __name__ == "__main__":
    sys.exit(main())
