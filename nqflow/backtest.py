"""Multi-session backtests: every window of many sessions through the monitor, in parallel with Dask.

A backtest runs the monitor's detection over every window (`nqflow.monitor.run_session`,
which reads each session's data and baseline once and gives exactly what the notebook's
`run_window` gives window by window; the tests hold it to that), so its alerts are the
alerts the live monitor would have raised with the same thresholds. Work is split by session:

1. the volume baseline of every session the range needs (the range and the
   ``baseline_sessions`` before it) is computed in parallel and written once to one SQLite
   baseline file, so no task ever writes to it;
2. each session's windows then run in one task that reads that file.

Dask runs the tasks: a `distributed.LocalCluster` of ``workers`` processes by default, or
the cluster whose scheduler is at ``scheduler_address``. Workers open the replay folder and
the baseline file by path, so on a cluster both must be on storage every worker can read.
"""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from nqflow.alerts import ALERT_FIELDS, to_records
from nqflow.baseline import BaselineStore, session_slot_volumes
from nqflow.config import Config
from nqflow.errors import NqflowError
from nqflow.monitor import run_session
from nqflow.sources.replay import ReplaySource

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


# --------------------------------------------------------------------------- tasks (run on workers)
def session_volumes(data_dir: str, trade_date: dt.date) -> tuple[list[int], pd.DataFrame]:
    """A whole session's slots and volumes, computed on a worker; the driver records them."""
    return session_slot_volumes(_source(data_dir), trade_date)


def session_alerts(config: Config, data_dir: str, baseline_path: str, trade_date: dt.date,
                   available: list[dt.date], window_filter: WindowFilter | None = None) -> tuple[list[dict], pd.DataFrame]:
    """Every (selected) window of one session through `run_session` (what `run_window` gives, window by
    window), against a read-only baseline."""
    source, baseline = _source(data_dir), BaselineStore(baseline_path)
    alerts, windows = [], []
    for result in run_session(config, trade_date, source, baseline, available, window_filter):
        start, end, summary = result.window.start, result.window.end, result.summary
        alerts.extend(to_records(result.alerts))
        windows.append({"trade_date": str(trade_date), "window_start": start.isoformat(), "window_end": end.isoformat(),
                        "option_trades": summary["option_trades"], "contracts": summary["contracts"],
                        "premium_usd": summary["premium_usd"], "alerts": len(result.alerts)})
    return [{"trade_date": str(trade_date), **a} for a in alerts], pd.DataFrame(windows, columns=WINDOW_COLUMNS)


_SOURCES: dict[str, ReplaySource] = {}


def _source(data_dir: str) -> ReplaySource:
    # One replay source per worker process: its decoded-file cache then serves every task there.
    if data_dir not in _SOURCES:
        _SOURCES[data_dir] = ReplaySource(data_dir)
    return _SOURCES[data_dir]


# --------------------------------------------------------------------------- driver
@contextmanager
def dask_client(workers: int, scheduler_address: str | None):
    """A client on the given cluster, or on a LocalCluster of `workers` single-threaded processes."""
    from dask.distributed import Client, LocalCluster
    logging.getLogger("distributed").setLevel(logging.WARNING)  # its INFO lines drown the progress bar
    if scheduler_address:
        with Client(scheduler_address) as client:
            yield client
        return
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        yield client


@contextmanager
def _client_or(client, workers: int, scheduler_address: str | None):
    if client is not None:
        yield client
        return
    with dask_client(workers, scheduler_address) as made:
        yield made


def _gather(client, futures, label: str, progress: bool) -> list:
    from dask.distributed import as_completed
    from tqdm import tqdm
    results = {}
    with tqdm(total=len(futures), desc=label, unit="session", disable=not progress) as bar:
        for future, value in as_completed(futures, with_results=True):
            results[future.key] = value
            bar.update()
    return [results[f.key] for f in futures]


def backtest(config: Config, first: dt.date, last: dt.date, data_dir: str | Path, workers: int = 2,
             scheduler_address: str | None = None, window_filter: WindowFilter | None = None,
             baseline_path: str | Path | None = None, progress: bool = True, client=None) -> BacktestResult:
    """Alerts of every window of the sessions from `first` to `last` (inclusive) in a replay folder.

    `client` reuses a running dask.distributed Client (the threshold lab runs several backtests
    on one cluster); otherwise one is made from `workers` / `scheduler_address` and closed after.
    """
    data_dir = str(Path(data_dir).resolve())
    available = ReplaySource(data_dir).sessions_available()
    sessions = [d for d in available if first <= d <= last]
    if not sessions:
        raise NqflowError(f"no sessions between {first} and {last} in {data_dir} "
                          f"(it holds {available[0] if available else '-'} to {available[-1] if available else '-'}); "
                          f"pick dates inside that range")
    n = config.thresholds.baseline_sessions
    needed = [d for d in available if d < sessions[-1]][-(n + len(sessions)):]
    with tempfile.TemporaryDirectory() as tmp, _client_or(client, workers, scheduler_address) as client:
        baseline_path = str(baseline_path or Path(tmp) / "baseline.sqlite")
        store = BaselineStore(baseline_path)
        todo = [d for d in needed if str(d) not in store.complete_sessions()]
        volumes = _gather(client, [client.submit(session_volumes, data_dir, d, pure=False) for d in todo],
                          "baseline", progress)
        for day, (slots, frame) in zip(todo, volumes):
            store.record(day, slots, frame)
        tasks = [client.submit(session_alerts, config, data_dir, baseline_path, d, available, window_filter, pure=False)
                 for d in sessions]
        results = _gather(client, tasks, "sessions", progress)
    alerts = pd.DataFrame([a for r in results for a in r[0]], columns=["trade_date", *ALERT_FIELDS])
    windows = pd.concat([r[1] for r in results], ignore_index=True)
    return BacktestResult(alerts.sort_values(["window_start", "alert_id"], ignore_index=True), windows, sessions)
