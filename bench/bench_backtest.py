"""Backtest and threshold-lab speed (#26's figures, beside their targets), in one run; prints
figures, never asserts.

Run: make bench   (the bundled 26 sessions: a quick look)
     make bench-year   (or .venv/bin/python bench/bench_backtest.py --year: 250 generated sessions)
     .venv/bin/python bench/bench_backtest.py SESSIONS

1. one live window through the engine (`nqflow.engine.detect.detect_window` on a loaded window
   and its expected volumes: what every scheduled notebook runs), median over an afternoon;
2. features for one session: the feature stage alone (`nqflow.engine.features.compute_features`
   on a session's batch, as a backtest gives it: no frame per window), and loading the session
   (decode, join, classify, walls) and its expected volumes beside it;
3. re-thresholding 20 sessions: their stored features in memory, `nqflow.engine.detect.evaluate` at
   the configured and at loose thresholds (the lab's work per slider move);
4. a first-run backtest of the range with 2 workers: a fresh feature folder and baseline and no
   instrument tables kept beside the data, so every session is decoded, featured and evaluated,
   every day's instrument table built, and the history built; then the same
   range again with the features kept (a re-threshold through the backtest);
5. the same DBN files decoded in one process to arrays (`DBNStore.to_ndarray`, the issue's
   measure, to which the backtest's ratio is taken), to the arrays and columns the engine reads
   (`nqflow.sources.dbn.read_dbn`: the records found past the symbology, which it never decodes)
   and to DataFrames (`DBNStore.to_df`);
6. peak memory (resident set) and CPU seconds of each worker after the first run;
7. one worker's work on 30 sessions in one process, in CPU seconds a session: a figure a busy
   machine disturbs less than the wall clock of the run.

The generated market (``scheduler.py sample --sessions N``) is written once to data/sample-N;
a year takes several minutes to generate the first time.
"""

from __future__ import annotations

import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nqflow.config import load_config
from nqflow.engine.baseline import BaselineStore, ensure_history
from nqflow.engine.detect import evaluate
from nqflow.engine.features import compute_features
from nqflow.engine.monitor import REPO_ROOT, load_session
from nqflow.research.backtest import backtest, dask_client
from nqflow.research.lab import LOOSE, Lab
from nqflow.research.sample.generator import SampleSpec, generate_sample_market, load_ground_truth, sample_folder
from nqflow.sources.replay import ReplaySource


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def decode_seconds(folder: Path, sessions) -> tuple[float, float, float]:
    """Seconds to decode every DBN file of `sessions` (one process): to `DBNStore.to_ndarray`'s
    arrays, to the arrays and columns the engine reads (`read_dbn`), and to `DBNStore.to_df`'s
    DataFrames."""
    import warnings

    from nqflow.sources.dbn import open_dbn, read_dbn

    paths = [p for day in sessions for p in sorted(folder.glob(f"glbx-mdp3-{day:%Y%m%d}.*.dbn.zst"))]
    t0 = time.perf_counter()
    for path in paths:
        open_dbn(path).to_ndarray()
    arrays = time.perf_counter() - t0
    t0 = time.perf_counter()
    for path in paths:
        read_dbn(path)
    engine = time.perf_counter() - t0
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # to_df's own pandas deprecation warnings
        for path in paths:
            open_dbn(path).to_df(map_symbols=False)
    return arrays, engine, time.perf_counter() - t0


def live_window(config, folder: Path) -> None:
    """One window through the engine, as a scheduled notebook runs it (its data loaded first)."""
    from nqflow.engine.baseline import window_keys
    from nqflow.engine.detect import detect_window
    from nqflow.market import hours as cal
    from nqflow.market.frames import load_window

    source = ReplaySource(folder)
    days = source.sessions_available()
    store = BaselineStore(Path(tempfile.mkdtemp()) / "baseline.sqlite")
    day = days[-1]
    ensure_history(store, source, day, config.thresholds.baseline_sessions, days)
    market_open = cal.sessions(day, day).iloc[0].market_open
    runs, fills = [], []
    for start, end in [w for w in cal.session_windows(day) if 14 <= w[0].hour < 18]:
        data = load_window(source, start, end)
        slot = cal.slot_of(start, market_open)
        expected = store.expected(day, [slot], config.thresholds.baseline_sessions, {slot: window_keys(data.trades)})
        t0 = time.perf_counter()
        detect_window(data, expected[slot], config)
        runs.append(time.perf_counter() - t0)
        fills.append(len(data.trades))
    print(
        f"one live window through the engine: median {statistics.median(runs) * 1000:.0f} ms over {len(runs)} "
        f"afternoon windows (median {statistics.median(fills):,.0f} fills; target <= 30 ms)"
    )


def features_per_session(config, folder: Path, count: int = 6) -> None:
    source = ReplaySource(folder)
    days = source.sessions_available()[-count:]
    store = BaselineStore(Path(tempfile.mkdtemp()) / "baseline.sqlite")
    load_s, feature_s = [], []
    for day in days:
        ensure_history(store, source, day, config.thresholds.baseline_sessions)
        t0 = time.perf_counter()
        session = load_session(config, day, source)
        expected = session.expected(store, config.thresholds.baseline_sessions)
        t1 = time.perf_counter()
        compute_features(session.batch(), expected, config)
        feature_s.append(time.perf_counter() - t1)
        load_s.append(t1 - t0)
    print(
        f"features, one session:   median {statistics.median(feature_s):.3f}s (range {min(feature_s):.3f}-"
        f"{max(feature_s):.3f}s over {len(days)} sessions; target <= 0.1 s); loading the session and its "
        f"expected volumes beside it: median {statistics.median(load_s):.3f}s"
    )


def rethreshold(config, folder: Path, client, count: int = 20) -> None:
    days = ReplaySource(folder).sessions_available()[-count:]
    truth = load_ground_truth(folder) if (folder / "ground_truth.json").exists() else None
    with tempfile.TemporaryDirectory() as tmp:
        lab = Lab.load(config, days[0], days[-1], folder, truth, client=client, features_dir=tmp)
    loose = load_config(None, LOOSE)
    for label, cfg in (("configured", config), ("loose", loose)):
        runs = []
        for _ in range(5):
            t0 = time.perf_counter()
            alerts = evaluate(lab.features, cfg).alerts
            runs.append(time.perf_counter() - t0)
        print(
            f"re-threshold {count} sessions ({label}): median {statistics.median(runs):.3f}s, best {min(runs):.3f}s "
            f"({len(lab.features):,} windows, {len(lab.features.orders):,} orders, {len(alerts)} alerts; "
            f"target <= 0.5 s)"
        )
    if truth is not None:
        runs = []
        for _ in range(4):
            t0 = time.perf_counter()
            lab.point()
            runs.append(time.perf_counter() - t0)
        print(
            f"  a lab point with precision and recall against ground truth: first {runs[0]:.3f}s, then median "
            f"{statistics.median(runs[1:]):.3f}s"
        )
    frames = (
        sum(
            getattr(lab.features, name).memory_usage(deep=True).sum()
            for name in ("windows", "orders", "packages", "volumes", "underlying")
        )
        / 1e6
    )
    print(
        f"  {count} sessions' features take {frames:.0f} MB in memory; this process's peak RSS so far "
        f"(the per-session measurement above included): {peak_mb():.0f} MB"
    )


def first_run(config, folder: Path, client, sessions) -> None:
    import shutil

    from nqflow.sources.replay import INSTRUMENTS_DIR

    arrays, engine, frames = decode_seconds(folder, sessions)
    with tempfile.TemporaryDirectory() as tmp:
        for label in ("first run: features, history and alerts", "features kept: re-threshold only"):
            if label.startswith("first"):  # as on data never read before: every day's instrument table built
                shutil.rmtree(folder / INSTRUMENTS_DIR, ignore_errors=True)
            before = client.run(_peak_mb_and_cpu_seconds)  # the workers ran the re-threshold's sessions before
            t0 = time.perf_counter()
            result = backtest(
                config,
                sessions[0],
                sessions[-1],
                folder,
                client=client,
                progress=False,
                features_dir=Path(tmp) / "features",
                baseline_path=Path(tmp) / "baseline",
            )
            elapsed = time.perf_counter() - t0
            first = label.startswith("first")
            target = f"; target <= {60 * len(sessions) / 250:.0f} s, <= 3x the array decode" if first else ""
            print(
                f"backtest {len(sessions)} sessions, 2 workers ({label}): {elapsed:6.1f}s  ->  "
                f"{len(sessions) / elapsed:.2f} sessions/s, {len(result.windows):,} windows, "
                f"{len(result.alerts):,} alerts, {elapsed / arrays:.1f}x the array decode{target}"
            )
            if first:
                workers = client.run(_peak_mb_and_cpu_seconds)
                cpu = [workers[w][1] - before.get(w, (0.0, 0.0))[1] for w in workers]
                print(
                    f"  peak RSS per worker: {', '.join(f'{mb:.0f} MB' for mb, _ in workers.values())} "
                    f"(target <= 600 MB); CPU per worker in the run: {', '.join(f'{c:.0f} s' for c in cpu)} "
                    f"({sum(cpu) / len(sessions) * 1000:.0f} ms a session)"
                )
    print(
        f"decode only, the same {len(sessions)} sessions' DBN files in one process: to arrays "
        f"(DBNStore.to_ndarray) {arrays:6.1f}s ({len(sessions) / arrays:.1f} sessions/s), to the engine's "
        f"arrays and columns (read_dbn) {engine:6.1f}s, to DataFrames (DBNStore.to_df) {frames:6.1f}s "
        f"({frames / arrays:.1f}x the arrays)"
    )


def _peak_mb_and_cpu_seconds() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


def one_worker_in_process(config, folder: Path, sessions, count: int = 30) -> None:
    """One worker's work on `count` consecutive sessions in this process, in CPU seconds (what a
    busy machine's neighbours disturb least): each session decoded, featured and stored with its
    slot volumes (`session_market`), then evaluated with its expected volumes (`session_alerts`),
    from no instrument tables, with the workers' garbage-collector thresholds."""
    import gc
    import shutil

    from nqflow.engine.baseline import ParquetBaseline
    from nqflow.research import backtest as bt
    from nqflow.research.worker import BATCH_GC_THRESHOLDS
    from nqflow.sources.replay import INSTRUMENTS_DIR

    source = ReplaySource(folder)
    available = source.sessions_available()
    days = sessions[len(sessions) // 2 : len(sessions) // 2 + count]  # past the baseline's first sessions
    digests = {d: bt.data_digest(source, d) for d in available}
    wanted = {d: bt.wanted_params(config, digests, available, d) for d in days}
    shutil.rmtree(folder / INSTRUMENTS_DIR, ignore_errors=True)
    thresholds = gc.get_threshold()
    gc.set_threshold(*BATCH_GC_THRESHOLDS)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root, baseline = str(Path(tmp) / "features"), str(Path(tmp) / "baseline")
            store = ParquetBaseline(baseline)
            c0 = time.process_time()
            for day in days:  # indexed as the backtest's driver does: all at once after the sessions
                store.index_session(
                    day, *bt.session_market(config, str(folder), root, day, wanted[day][0], baseline), flush=False
                )
            c1 = time.process_time()
            store.flush()  # the driver's part, not the worker's
            c1b = time.process_time()
            for day in days:
                bt.session_alerts(config, root, baseline, day, wanted[day][1])
            c2 = time.process_time()
    finally:
        gc.set_threshold(*thresholds)
    print(
        f"one worker's work in one process, {len(days)} sessions from {days[0]} (CPU): "
        f"{(c1 - c0) / len(days) * 1000:.0f} ms a session to decode, feature and store, "
        f"{(c2 - c1b) / len(days) * 1000:.0f} ms to evaluate with its expected volumes"
    )


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    count = 250 if "--year" in sys.argv else int(args[0]) if args else SampleSpec().n_sessions
    config = load_config()
    sample = generate_sample_market(REPO_ROOT / "data" / "sample")
    live_window(config, sample)
    features_per_session(config, sample)
    spec = SampleSpec(n_sessions=count)
    year = generate_sample_market(sample_folder(REPO_ROOT / "data" / "sample", spec), spec)
    with dask_client(2, None) as client:
        rethreshold(config, sample, client)
        first_run(config, year, client, ReplaySource(year).sessions_available())
    one_worker_in_process(config, year, ReplaySource(year).sessions_available())


if __name__ == "__main__":
    main()
