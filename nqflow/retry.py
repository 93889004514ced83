"""What the HTTP services nqflow talks to (Databento, Slack) say about retrying."""

from __future__ import annotations


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds from a Retry-After header in its delta-seconds form; None when absent, or in the
    HTTP-date form, which leaves the wait to the caller's own backoff."""
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None
