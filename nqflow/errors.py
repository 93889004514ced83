"""Errors nqflow raises for bad input: each message is one line naming the problem and the fix."""

from __future__ import annotations


class NqflowError(Exception):
    """Base class: the message is a single line meant for a human at a terminal."""


class ConfigError(NqflowError):
    """A config file or override is wrong (unknown key, wrong type, out-of-range value)."""


class DataError(NqflowError):
    """Market data is missing, corrupt or of the wrong kind."""


class DataNotYetAvailable(DataError):
    """The requested window is past the data provider's available end: retry later, never treat as empty."""


class CredentialsError(NqflowError):
    """A secret that must come from the environment is missing or rejected."""


class BudgetExceeded(NqflowError):
    """A data pull's estimated cost is above the configured budget."""


class MarketClosed(NqflowError):
    """The requested window lies entirely outside CME Globex equity-options trading hours."""
