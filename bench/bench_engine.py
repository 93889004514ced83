"""Engine speed and memory: one 15-minute window, one full session, 20 sessions.

Reports rows (option fills) per second and peak memory; numbers, never assertions. Memory is
the process's peak resident set (ru_maxrss) after each scenario; scenarios run smallest first,
so each figure is the peak of that scenario and those before it. (tracemalloc is not used: it
slows pandas-heavy code about twofold and would distort the timings.)
Run: make bench   (or .venv/bin/python bench/bench_engine.py)
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nqflow.config import load_config
from nqflow.engine.baseline import BaselineStore, window_keys
from nqflow.engine.detect import detect_window
from nqflow.engine.monitor import REPO_ROOT
from nqflow.market import hours as cal
from nqflow.market.frames import load_window
from nqflow.research.sample.generator import generate_sample_market
from nqflow.sources.replay import ReplaySource


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure(label: str, windows, source, store, config) -> None:
    """The per-window path (what each scheduled notebook runs): load, baseline history, detect."""
    rows, engine_s, load_s = 0, 0.0, 0.0
    for start, end, session in windows:
        t0 = time.perf_counter()
        data = load_window(source, start, end)
        row = cal.sessions(session, session).iloc[0]
        slot = cal.slot_of(start, row.market_open)
        expected = store.expected(
            session, [slot], config.thresholds.baseline_sessions, {slot: window_keys(data.trades)}
        )
        t1 = time.perf_counter()
        detect_window(data, expected[slot], config)
        engine_s += time.perf_counter() - t1
        load_s += t1 - t0
        rows += len(data.trades)
    print(
        f"{label:<12} window path:  {len(windows):>5} windows  fills {rows:>9,}  engine {engine_s:7.2f}s "
        f"({rows / max(engine_s, 1e-9):>9,.0f} fills/s, {engine_s / len(windows) * 1000:6.1f} ms/window)  "
        f"load+baseline {load_s:7.2f}s  peak RSS {peak_mb():7.1f} MB"
    )


def measure_sessions(label: str, days, source, store, config, available) -> None:
    """The whole-session path (`run_session`, what backtests use): data and baseline read once per session."""
    from nqflow.engine.monitor import run_session

    t0 = time.perf_counter()
    rows = windows = 0
    for day in days:  # keep only counts: a backtest keeps alerts, not every window's frames
        results = run_session(config, day, source, store, available)
        rows += sum(len(r.window.trades) for r in results)
        windows += len(results)
    elapsed = time.perf_counter() - t0
    print(
        f"{label:<12} session path: {windows:>5} windows  fills {rows:>9,}  {elapsed:7.2f}s "
        f"({rows / elapsed:>9,.0f} fills/s, {elapsed / len(days):5.2f} s/session, load and baseline included)  "
        f"peak RSS {peak_mb():7.1f} MB"
    )


def main() -> None:
    config = load_config()
    source = ReplaySource(generate_sample_market(REPO_ROOT / "data" / "sample"))
    sessions = source.sessions_available()
    with tempfile.TemporaryDirectory() as tmp:
        store = BaselineStore(Path(tmp) / "baseline.sqlite")
        from nqflow.engine.baseline import ensure_history

        ensure_history(store, source, sessions[-1], config.thresholds.baseline_sessions, sessions)
        last = sessions[-1]

        def windows(days):
            return [(s, e, d) for d in days for s, e in cal.session_windows(d)]

        one = [w for w in windows([last]) if w[0].hour == 15][:1]
        measure("1 window", one, source, store, config)
        measure("1 session", windows([last]), source, store, config)
        measure_sessions("1 session", [last], source, store, config, sessions)
        measure_sessions("20 sessions", sessions[-20:], source, store, config, sessions)
        if "--all" in sys.argv:  # the per-window path over 20 sessions takes a few minutes more
            measure("20 sessions", windows(sessions[-20:]), source, store, config)


if __name__ == "__main__":
    main()
