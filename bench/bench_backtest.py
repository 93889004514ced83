"""Backtest throughput: sessions per second with 1 and 2 Dask workers (every window of each session).

Prints figures, never asserts. Run: make bench   (or .venv/bin/python bench/bench_backtest.py [SESSIONS])
Each worker count runs twice: first building the volume baseline of the range (``baseline_sessions``
whole sessions before it, decoded and summed), then again with that baseline file kept (``--baseline``),
which is what a threshold sweep over the same range pays. Beside them: the time to only decode
the same sessions' DBN files (``DBNStore.to_df``, one process), the floor any backtest pays, and
the ratio of the kept-baseline backtest to it.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nqflow.backtest import backtest, dask_client  # noqa: E402
from nqflow.config import load_config  # noqa: E402
from nqflow.monitor import REPO_ROOT  # noqa: E402
from nqflow.sample import generate_sample_market  # noqa: E402
from nqflow.sources.replay import ReplaySource  # noqa: E402


def decode_seconds(folder: Path, sessions) -> float:
    """Seconds to decode every DBN file of `sessions` to DataFrames, and nothing else."""
    from nqflow.sources.dbn import read_dbn
    paths = [p for day in sessions for p in sorted(folder.glob(f"glbx-mdp3-{day:%Y%m%d}.*.dbn.zst"))]
    t0 = time.perf_counter()
    for path in paths:
        read_dbn(path)
    return time.perf_counter() - t0


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    config = load_config()
    folder = generate_sample_market(REPO_ROOT / "data" / "sample")
    sessions = ReplaySource(folder).sessions_available()[-count:]
    decode = decode_seconds(folder, sessions)
    print(f"decode only: {len(sessions)} sessions' DBN files in {decode:6.1f}s  ->  {len(sessions) / decode:.2f} sessions/s")
    for workers in (1, 2):
        with dask_client(workers, None) as client, tempfile.TemporaryDirectory() as tmp:
            for label in ("baseline build included", "baseline kept"):
                t0 = time.perf_counter()
                result = backtest(config, sessions[0], sessions[-1], folder, client=client, progress=False,
                                  baseline_path=Path(tmp) / "baseline.sqlite")
                elapsed = time.perf_counter() - t0
                print(f"workers {workers}: {len(sessions)} sessions, {len(result.windows)} windows, "
                      f"{len(result.alerts)} alerts in {elapsed:6.1f}s  ->  {len(sessions) / elapsed:.3f} sessions/s "
                      f"({len(result.windows) / elapsed:.1f} windows/s, {label}; {elapsed / decode:.1f}x the decode)")


if __name__ == "__main__":
    main()
