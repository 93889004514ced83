"""The set-up of a backtest's own Dask workers, run by each worker at its start (Dask's
``distributed.worker.preload``, named by `nqflow.research.backtest.dask_client`; a cluster
named by ``--scheduler`` is left as its owner set it up)."""

from __future__ import annotations

import gc

#: The cyclic garbage collector's thresholds on a backtest's workers (Python's are 700, 10, 10).
#: A session's frames allocate containers by the hundred thousand; at 700 the collector ran so
#: often, walking every live object of the worker's caches, that a session took 11-16% longer
#: than with it off (one process, 30 sessions of the year: 336 against 282-300 ms to decode,
#: feature and store a session, 118 against 103-106 ms to evaluate it; these thresholds gave
#: 282 and 103). Cyclic garbage is still collected, a little later; peak memory is measured by
#: bench/bench_backtest.py.
BATCH_GC_THRESHOLDS = (10_000, 10, 10)


def dask_setup(worker) -> None:
    """Called by Dask with the worker once it starts."""
    gc.set_threshold(*BATCH_GC_THRESHOLDS)
