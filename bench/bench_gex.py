"""Dealer positioning speed (#25): one session's GEX from its statistics, decoding apart.

Figures, never assertions: the computation (implied volatility, gamma, by strike and expiry, the
zero-gamma profile over 401 prices) for one session's ~12,000 options, against the target of
0.5 s, and the reading of its statistics and chain beside it.
Run: .venv/bin/python bench/bench_gex.py   (make bench runs it)
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nqflow.engine import gex
from nqflow.paths import REPO_ROOT
from nqflow.research.sample.generator import generate_sample_market
from nqflow.sources.replay import ReplaySource


class Loaded:
    """A source whose session reads are already in memory: what is left is the computation."""

    def __init__(self, source: ReplaySource, day):
        self.source, self.day = source, day
        self.statistics_frame, self.chain_frame = source.statistics(day), source.chain(day)
        self.trades_cache: dict = {}

    def statistics(self, day):
        return self.statistics_frame

    def chain(self, day):
        return self.chain_frame

    def trades(self, start, end):
        key = (start, end)
        if key not in self.trades_cache:
            self.trades_cache[key] = self.source.trades(start, end)
        return self.trades_cache[key]


def main() -> None:
    source = ReplaySource(generate_sample_market(REPO_ROOT / "data" / "sample"))
    day = source.sessions_available()[-2]
    began = time.perf_counter()
    loaded = Loaded(source, day)
    gex.dealer_positioning(loaded, day)  # warms the trades read too
    read_s = time.perf_counter() - began
    runs = []
    for _ in range(5):
        began = time.perf_counter()
        positioning = gex.dealer_positioning(loaded, day)
        runs.append(time.perf_counter() - began)
    print(
        f"dealer positioning, session {day}: {len(positioning.options):,} options counted, "
        f"{sum(positioning.skipped.values()):,} left out"
    )
    print(
        f"  computation  median {statistics.median(runs):.3f} s (min {min(runs):.3f}, max {max(runs):.3f}) "
        f"over 5 runs; target <= 0.5 s"
    )
    print(f"  first call with the session's statistics, chain and closing futures read: {read_s:.2f} s")


if __name__ == "__main__":
    main()
