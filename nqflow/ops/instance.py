"""One long-running process per state database, stopped by SIGINT / SIGTERM: what `run` and
`live` share (`nqflow.ops.scheduling.Scheduler.run_forever`, `nqflow.ops.live.run_live`)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from filelock import FileLock, Timeout

from nqflow.errors import NqflowError


@contextmanager
def sole_instance(lock: FileLock, holder: str, unit: str, stop_event: threading.Event) -> Iterator[list[str]]:
    """Hold `lock`, refused in one line when another `holder` holds it (one `unit` at a time),
    and let SIGINT / SIGTERM set `stop_event` while inside; yields the list the received
    signals' names are appended to. Handlers are restored and the lock released on the way out."""
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise NqflowError(f"another {holder} holds {lock.lock_file}; stop it first (one {unit} at a time)") from None
    received: list[str] = []

    def stop(signum, _frame) -> None:
        received.append(signal.Signals(signum).name)
        stop_event.set()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        lock.release()
