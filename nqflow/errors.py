"""Errors nqflow raises for bad input: each message is one line naming the problem and the fix.

Each class carries the exit code `scheduler.py` ends with when it is raised (`ExitCode`), so a
health probe or a script tells a broken config from a blind monitor from data not out yet.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """`scheduler.py`'s exit codes (listed in `scheduler.py -h` and the README)."""

    OK = 0  # done; `status`: healthy
    FAILED = 1  # a window, a daily job or a doctor check ran and failed (its error is recorded)
    USAGE = 2  # a bad command line: unknown option, bad time, reversed range, closed market
    CONFIG = 3  # a bad config key or value, a missing secret, an unwritable folder, over budget
    DATA = 4  # market data missing, corrupt or of the wrong kind
    NOT_YET = 5  # the data is not published yet: try again later (nothing was recorded)
    DEGRADED = 6  # `status`: a window failed for good or a channel is down
    BLIND = 7  # `status`: the monitor is not seeing the market


class NqflowError(Exception):
    """Base class: the message is a single line meant for a human at a terminal."""

    exit_code = ExitCode.FAILED


class UsageError(NqflowError):
    """A command-line value is wrong (window bounds, a range, a date, a count)."""

    exit_code = ExitCode.USAGE


class ConfigError(NqflowError):
    """A config file or override is wrong (unknown key, wrong type, out-of-range value)."""

    exit_code = ExitCode.CONFIG


class StorageError(ConfigError):
    """A folder or file nqflow must write (outputs, state, logs, cache) cannot be written."""


class DataError(NqflowError):
    """Market data is missing, corrupt or of the wrong kind."""

    exit_code = ExitCode.DATA


class DataNotYetAvailable(DataError):
    """Not published yet: the requested window is past what the source holds (the provider's
    available end, the replay folder's last file, or the clock). Retry later, never treat as
    empty, never record as done."""

    exit_code = ExitCode.NOT_YET


class CredentialsError(ConfigError):
    """A secret that must come from the environment is missing or rejected."""


class BudgetExceeded(ConfigError):
    """A data pull's estimated cost is above the configured budget."""


class MarketClosed(UsageError):
    """The requested window lies entirely outside CME Globex equity-options trading hours."""
