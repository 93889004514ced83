"""When to try again: the one backoff rule for the scheduler's windows, the outbox's channels
and the Databento client, and what HTTP services (Databento, Slack) say about retrying."""

from __future__ import annotations

import random

#: Doublings stop here: a channel down for a day is retried about every base * 2**10 s, not never.
MAX_DOUBLINGS = 10


def backoff_seconds(
    base_seconds: float, retries_so_far: int, cap_seconds: float | None = None, jitter: bool = False
) -> float:
    """Exponential backoff: `base_seconds` doubled per earlier retry (at most `MAX_DOUBLINGS`
    times), capped at `cap_seconds`. With `jitter`, a uniform draw below that ("full jitter"),
    so that many clients failing together do not retry together."""
    wait = base_seconds * 2 ** min(max(retries_so_far, 0), MAX_DOUBLINGS)
    if cap_seconds is not None:
        wait = min(wait, cap_seconds)
    return random.uniform(0, wait) if jitter else wait


def honour_retry_after(backoff: float, retry_after: float | None, cap_seconds: float | None = None) -> float:
    """The server's Retry-After wins over our own backoff when it asks for longer (capped)."""
    if retry_after is None:
        return backoff
    wait = max(retry_after, backoff)
    return min(wait, cap_seconds) if cap_seconds is not None else wait


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds from a Retry-After header in its delta-seconds form; None when absent, or in the
    HTTP-date form, which leaves the wait to the caller's own backoff."""
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None
