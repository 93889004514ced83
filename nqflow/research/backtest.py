"""Multi-session backtests from stored features: every window of many sessions, in parallel with Dask.

Detection runs in two stages (`nqflow.engine.features`, then `nqflow.engine.detect.evaluate`). A backtest
stores each session's features as Parquet beside the data (``<data>/features/session=DATE/``)
and evaluates the thresholds over them, so its alerts are the alerts the live monitor would
have raised with the same thresholds (the tests compare them field for field), and a second
backtest of the same range with other thresholds only re-reads the features:

1. each session of the range is decoded once on a worker: its slot volumes go to the volume
   baseline and its market features (everything but the expected volumes) to Parquet; the
   ``baseline_sessions`` before the range only give slot volumes. The baseline is one Parquet
   file per session (`nqflow.engine.baseline.ParquetBaseline`), written by the task that
   decoded the session, and an index that only the driver writes, naming each session once its
   file is in; a SQLite baseline named instead is copied into one once (`baseline_folder`);
2. each session's task then adds the expected volumes from that file, stores the complete
   features and applies the thresholds.

A session whose stored features match (same data files, history, sweep settings, watched
products and feature version) skips both steps' work and is only evaluated. Dask runs the
tasks: a `distributed.LocalCluster` of ``workers`` processes by default, or the cluster whose
scheduler is at ``scheduler_address``; workers open the data, feature and baseline folders by
path, so on a cluster those must be on storage every worker can read.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import tempfile
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from nqflow.alerts import ALERT_FIELDS
from nqflow.config import Config
from nqflow.engine.baseline import (
    SQLITE_SUFFIXES,
    ParquetBaseline,
    session_slot_volumes,
    write_session_volumes,
)
from nqflow.engine.features import (
    EXPECTED_PART,
    WINDOW,
    Features,
    concat_features,
    feature_params,
    features_root,
    market_features,
    read_features,
    stored_params,
    with_expected_rows,
    write_features,
)
from nqflow.engine.monitor import load_session, watches_every_product
from nqflow.errors import UsageError
from nqflow.market import hours as cal
from nqflow.market.frames import option_fills, session_bounds
from nqflow.sources.replay import ReplaySource, files_digest

log = logging.getLogger(__name__)
WindowFilter = Callable[[pd.Timestamp, pd.Timestamp], bool]
WINDOW_COLUMNS = ["trade_date", "window_start", "window_end", "option_trades", "contracts", "premium_usd", "alerts"]


@dataclass
class BacktestResult:
    """All alerts of a backtest (ALERT_FIELDS plus trade_date) and one row per window run."""

    alerts: pd.DataFrame
    windows: pd.DataFrame
    sessions: list[dt.date]

    def counts(self) -> pd.DataFrame:
        """Alerts per session and kind (sessions without alerts included, as zeros)."""
        table = pd.crosstab(self.alerts["trade_date"], self.alerts["kind"]) if len(self.alerts) else pd.DataFrame()
        table = table.reindex([str(d) for d in self.sessions], fill_value=0)
        table.index.name = "trade_date"
        return table

    def to_parquet(self, folder: str | Path) -> tuple[Path, Path]:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        alerts_path, windows_path = folder / "alerts.parquet", folder / "windows.parquet"
        self.alerts.to_parquet(alerts_path, index=False)
        self.windows.to_parquet(windows_path, index=False)
        return alerts_path, windows_path


# --------------------------------------------------------------------------- what stored features must match
def data_digest(source: ReplaySource, trade_date: dt.date) -> str:
    """A short digest of the DBN files holding one session (name, size, modification time):
    regenerated or re-downloaded data changes it, and with it the stored features' validity."""
    start, end = session_bounds(trade_date)
    return files_digest([f for f in source.files if f.start < end and f.end > start])


def wanted_params(
    config: Config, digests: dict[dt.date, str], available: Sequence[dt.date], trade_date: dt.date
) -> tuple[dict, str]:
    """(what a session's market features must have been computed with, the digest of its history:
    the ``baseline_sessions`` sessions before it that the expected volumes come from)."""
    n = config.thresholds.baseline_sessions
    previous = [d for d in available if d < trade_date][-n:]
    history = hashlib.sha256(f"{n}|{'|'.join(f'{d}:{digests[d]}' for d in previous)}".encode()).hexdigest()[:16]
    return {**feature_params(config), "data": digests[trade_date]}, history


# --------------------------------------------------------------------------- tasks (run on workers)
def session_volumes(data_dir: str, baseline_dir: str, trade_date: dt.date) -> tuple[list[int], pd.DataFrame]:
    """Write a whole session's slot volumes into the baseline folder, on a worker; returns what
    the driver then names in the baseline's index (`ParquetBaseline.index_session`)."""
    return write_session_volumes(baseline_dir, trade_date, *session_slot_volumes(_source(data_dir), trade_date))


def session_market(
    config: Config, data_dir: str, root: str, trade_date: dt.date, params: dict, baseline_dir: str | None
) -> tuple[list[int], pd.DataFrame] | None:
    """Decode one session once: store its market features and, given a baseline folder, its slot
    volumes there (returning what the driver names in the baseline's index, as `session_volumes`)."""
    source = _source(data_dir)
    session = load_session(config, trade_date, source)
    features = market_features(session.batch(), config)
    features.params = {**params, "history": None}  # expected volumes not in yet
    write_features(features, root, trade_date)
    if baseline_dir is None:  # the baseline holds the session already
        return None
    # Every product's option fills, as the live window records them (`recorded_fills`): the
    # session's watched ones already when the universe watches every product.
    every = watches_every_product(config) or session.trades is None
    options = session.options if every else option_fills(session.trades)
    return write_session_volumes(baseline_dir, trade_date, *session_slot_volumes(source, trade_date, options))


def session_alerts(
    config: Config,
    root: str,
    baseline_path: str,
    trade_date: dt.date,
    history: str,
    window_filter: WindowFilter | None = None,
) -> tuple[list[dict], pd.DataFrame]:
    """One session's alerts from its stored features; adds and stores the expected volumes first
    when the stored ones are missing or come from another history."""
    features = read_features(root, trade_date)
    if features.params.get("history") != history:
        features = with_expected_rows(
            features, expected_volumes(config, features, ParquetBaseline(baseline_path), trade_date)
        )
        features.params = {**features.params, "history": history}
        write_features(features, root, trade_date, frames=(EXPECTED_PART,))  # all that changed
    return alerts_of(features, config, trade_date, window_filter)


def expected_volumes(
    config: Config, features: Features, baseline: ParquetBaseline, trade_date: dt.date
) -> dict[str, np.ndarray]:
    """Each volume row's expected volume and count-model moments (`ParquetBaseline.expected_of_rows`):
    what `nqflow.engine.monitor` asks the baseline for, from the features instead of the fills."""
    market_open = cal.sessions(trade_date, trade_date).iloc[0].market_open
    slots = np.array([cal.slot_of(start, market_open) for start in features.windows["window_start"]], dtype="int64")
    volumes = features.volumes
    return baseline.expected_of_rows(
        trade_date,
        slots[volumes[WINDOW].to_numpy(dtype="int64")],
        volumes["level"],
        volumes["key"],
        config.thresholds.baseline_sessions,
    )


def baseline_folder(path: str | Path) -> Path:
    """The Parquet baseline folder a backtest uses for `path`: the folder itself, or for a SQLite
    baseline (``baseline.sqlite``) the folder beside it (``baseline.parquet/``), filled from the
    SQLite file the first time; the SQLite file is never changed."""
    path = Path(path)
    if path.suffix not in SQLITE_SUFFIXES:
        return path
    folder = path.with_suffix(".parquet")
    if path.exists() and not (folder / ParquetBaseline.SLOTS).exists():
        log.info("copying the SQLite baseline %s into %s (once)", path, folder)
        ParquetBaseline.from_sqlite(path, folder)
    return folder


def alerts_of(
    features: Features, config: Config, trade_date: dt.date | None = None, window_filter: WindowFilter | None = None
) -> tuple[list[dict], pd.DataFrame]:
    """The threshold stage over one batch of features: alert records (with trade_date) and the
    window table, for the windows `window_filter` keeps (filtering after evaluating the whole
    batch gives what the monitor gives for those windows: a worked order reads the windows
    before its own, as `nqflow.engine.monitor.run_window` does)."""
    from nqflow.engine.detect import evaluate

    alerts = evaluate(features, config).alerts
    table = features.windows
    keep = (
        pd.Series(True, index=table.index)
        if window_filter is None
        else pd.Series(
            [bool(window_filter(s, e)) for s, e in zip(table["window_start"], table["window_end"])], index=table.index
        )
    )
    alerts = alerts[keep.to_numpy()[alerts[WINDOW].to_numpy(dtype="int64")]] if len(alerts) else alerts
    counts = alerts[WINDOW].value_counts()
    windows = pd.DataFrame(
        {
            "trade_date": table["trade_date"] if trade_date is None else str(trade_date),
            "window_start": [ts.isoformat() for ts in table["window_start"]],
            "window_end": [ts.isoformat() for ts in table["window_end"]],
            "option_trades": table["option_trades"],
            "contracts": table["contracts"],
            "premium_usd": table["premium_usd"],
            "alerts": table[WINDOW].map(counts).fillna(0).astype("int64"),
        }
    )[keep.to_numpy()].reset_index(drop=True)
    records = alerts.drop(columns=WINDOW).to_dict("records")
    dates = table["trade_date"].to_numpy()[alerts[WINDOW].to_numpy(dtype="int64")] if len(alerts) else []
    return (
        [{"trade_date": str(trade_date) if trade_date else d, **a} for a, d in zip(records, dates)],
        windows[WINDOW_COLUMNS],
    )


_SOURCES: dict[str, ReplaySource] = {}


def _source(data_dir: str) -> ReplaySource:
    # One replay source per worker process: its decoded-file cache then serves every task there.
    if data_dir not in _SOURCES:
        _SOURCES[data_dir] = ReplaySource(data_dir)
    return _SOURCES[data_dir]


# --------------------------------------------------------------------------- driver
#: The module each worker of a backtest's own cluster runs at its start (Dask's preload).
WORKER_SETUP = "nqflow.research.worker"


@contextmanager
def dask_client(workers: int, scheduler_address: str | None):
    """A client on the given cluster, or on a LocalCluster of `workers` single-threaded processes."""
    import dask
    from dask.distributed import Client, LocalCluster

    logging.getLogger("distributed").setLevel(logging.WARNING)  # its INFO lines drown the progress bar
    if scheduler_address:
        with Client(scheduler_address) as client:
            yield client
        return
    if workers < 1:  # a LocalCluster of no workers never runs a task: it would wait forever
        raise UsageError(f"a backtest needs at least 1 worker, not {workers}; pass --workers 1 or more")
    # Dask's nannies start each worker with MALLOC_TRIM_THRESHOLD_=65536 (to hand freed memory
    # back to the OS at once); that turns off glibc's adaptive mmap threshold, so every array of
    # a session's frames over 128 KB is a fresh mmap and its page faults: the same tasks ran 20-25%
    # slower than in a plain process here, at the same peak memory. The thread limits are kept.
    # Their statistical profiler (a sample of every thread's stack each 10 ms, for the dashboard
    # this cluster does not serve) cost another 8%. Arrow (the text columns' memory) allocates
    # from glibc, not its own mimalloc pool, which kept freed pages: one process's resident
    # memory after 60 sessions was 357 MB against 454 MB, at the same speed. Each worker runs
    # `nqflow.research.worker.dask_setup` first (the garbage collector's batch thresholds).
    quiet = {
        "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
        "distributed.nanny.pre-spawn-environ.ARROW_DEFAULT_MEMORY_POOL": "system",
        "distributed.worker.profile.enabled": False,
        "distributed.worker.preload": [WORKER_SETUP],  # each worker, a restarted one too
    }
    with (
        dask.config.set(quiet),
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=logging.ERROR
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


@contextmanager
def _client_or(client, workers: int, scheduler_address: str | None):
    if client is not None:
        yield client
        return
    with dask_client(workers, scheduler_address) as made:
        yield made


def _gather(client, futures, label: str, progress: bool, on_result: Callable | None = None) -> list:
    """Every future's result in submission order; `on_result(key, value)` is called as each arrives."""
    from dask.distributed import as_completed
    from tqdm import tqdm

    results = {}
    with tqdm(total=len(futures), desc=label, unit="session", disable=not progress) as bar:
        for future, value in as_completed(futures, with_results=True):
            if on_result is not None:
                on_result(future.key, value)
                value = None  # recorded: not kept (a year of slot volumes is large)
            results[future.key] = value
            future.release()  # a worker holds a result for as long as a future names it
            bar.update()
    return [results[f.key] for f in futures]


def consecutive_runs(client, weights: dict[dt.date, float]) -> dict[dt.date, dict]:
    """Each session's placement (`Client.submit` keywords): the sessions, in date order, cut into
    one run of consecutive days per worker of about equal weight. A worker then reads the days it
    was given one after another, so its decoded-file cache holds the day before each one (a
    session's dealer walls read the previous session's closing futures trades; its expected
    volumes, the baseline files of the days before): dealt out in turn, every other day would be
    decoded twice. Loose (``allow_other_workers``): a worker that finishes early still takes
    another's sessions, and a cluster without workers yet places nothing."""
    workers = sorted(client.scheduler_info().get("workers", {}))
    if not workers:
        return {day: {} for day in weights}
    days = sorted(weights)
    total = sum(weights.values())
    placed, done = {}, 0.0
    for rank, day in enumerate(days):
        run = min(int(done / total * len(workers)), len(workers) - 1)
        # Date order within a run, by priority: left to itself the scheduler orders tasks
        # submitted together by their keys, so every session_market before any session_volumes.
        placed[day] = {"workers": [workers[run]], "allow_other_workers": True, "priority": len(days) - rank}
        done += weights[day]
    return placed


def sessions_between(data_dir: str | Path, first: dt.date, last: dt.date) -> tuple[list[dt.date], list[dt.date]]:
    """(the sessions from `first` to `last` in a data folder, every session it holds); none is a one-line error."""
    available = ReplaySource(data_dir).sessions_available()
    sessions = [d for d in available if first <= d <= last]
    if not sessions:
        raise UsageError(
            f"no sessions between {first} and {last} in {data_dir} "
            f"(it holds {available[0] if available else '-'} to {available[-1] if available else '-'}); "
            f"pick dates inside that range"
        )
    return sessions, available


def build_features(
    config: Config,
    first: dt.date,
    last: dt.date,
    data_dir: str | Path,
    client=None,
    workers: int = 2,
    scheduler_address: str | None = None,
    baseline_path: str | Path | None = None,
    features_dir: str | Path | None = None,
    progress: bool = True,
    refresh: bool = False,
    window_filter: WindowFilter | None = None,
) -> tuple[list[dt.date], list[tuple[list[dict], pd.DataFrame]]]:
    """Make sure every session from `first` to `last` has complete stored features (see the module
    doc), and evaluate each under `config` on the workers. Returns the sessions and, per
    session, its alert records and window table. `refresh` recomputes stored features."""
    data_dir = str(Path(data_dir).resolve())
    sessions, available = sessions_between(data_dir, first, last)
    root = str(Path(features_dir) if features_dir else features_root(data_dir))
    n = config.thresholds.baseline_sessions
    needed = [d for d in available if d < sessions[-1]][-(n + len(sessions)) :]
    source = ReplaySource(data_dir)
    digests = {d: data_digest(source, d) for d in sorted(set(needed) | set(sessions))}
    wanted = {d: wanted_params(config, digests, available, d) for d in sessions}
    stale = [d for d in sessions if refresh or _market_params(stored_params(root, d)) != wanted[d][0]]
    missing_history = [
        d for d in sessions if d not in stale and (stored_params(root, d) or {}).get("history") != wanted[d][1]
    ]
    with tempfile.TemporaryDirectory() as tmp, _client_or(client, workers, scheduler_address) as client:
        baseline_file = str(baseline_folder(baseline_path) if baseline_path else Path(tmp) / "baseline")
        if stale or missing_history:
            store = ParquetBaseline(baseline_file)
            complete = store.complete_sessions()
            todo = [d for d in needed if str(d) not in complete and d not in stale]
            # A history session only gives slot volumes: about a third of a featured session's work.
            weights = {**{d: 0.3 for d in todo}, **{d: 1.0 for d in stale}}
            placed = consecutive_runs(client, weights)
            order = sorted(weights)
            tasks = [
                client.submit(
                    session_market,
                    config,
                    data_dir,
                    root,
                    d,
                    wanted[d][0],
                    None if str(d) in complete else baseline_file,
                    pure=False,
                    **placed[d],
                )
                if d in stale
                else client.submit(session_volumes, data_dir, baseline_file, d, pure=False, **placed[d])
                for d in order
            ]
            days = dict(zip((t.key for t in tasks), order))

            def record(key, value) -> None:  # while the workers go on with the other sessions
                if value is not None:
                    slots, seen = value
                    store.index_session(days[key], slots, seen, flush=False)

            _gather(client, tasks, "features", progress, record)
            store.flush()
        placed = consecutive_runs(client, dict.fromkeys(sessions, 1.0))
        tasks = [
            client.submit(
                session_alerts, config, root, baseline_file, d, wanted[d][1], window_filter, pure=False, **placed[d]
            )
            for d in sessions
        ]
        results = _gather(client, tasks, "sessions", progress)
    return sessions, results


def _market_params(stored: dict | None) -> dict | None:
    return None if stored is None else {k: v for k, v in stored.items() if k != "history"}


def backtest(
    config: Config,
    first: dt.date,
    last: dt.date,
    data_dir: str | Path,
    workers: int = 2,
    scheduler_address: str | None = None,
    window_filter: WindowFilter | None = None,
    baseline_path: str | Path | None = None,
    progress: bool = True,
    client=None,
    features_dir: str | Path | None = None,
    refresh: bool = False,
) -> BacktestResult:
    """Alerts of every window of the sessions from `first` to `last` (inclusive) in a data folder.

    Features are stored under `features_dir` (default ``<data_dir>/features``) and reused by
    the next backtest of the range. `client` reuses a running dask.distributed Client;
    otherwise one is made from `workers` / `scheduler_address` and closed after.
    """
    sessions, results = build_features(
        config,
        first,
        last,
        data_dir,
        client,
        workers,
        scheduler_address,
        baseline_path,
        features_dir,
        progress,
        refresh,
        window_filter,
    )
    alerts = pd.DataFrame([a for r in results for a in r[0]], columns=["trade_date", *ALERT_FIELDS])
    windows = pd.concat([r[1] for r in results], ignore_index=True)
    return BacktestResult(alerts.sort_values(["window_start", "alert_id"], ignore_index=True), windows, sessions)


def load_features(
    config: Config, first: dt.date, last: dt.date, data_dir: str | Path, features_dir: str | Path | None = None, **build
) -> tuple[list[dt.date], Features]:
    """The stored features of a range as one batch in memory (built first where missing or
    stale, with `build_features`' options), for re-thresholding it many times: the lab."""
    sessions, _ = build_features(config, first, last, data_dir, features_dir=features_dir, progress=False, **build)
    root = Path(features_dir) if features_dir else features_root(Path(data_dir).resolve())
    return sessions, concat_features([read_features(root, d) for d in sessions])
