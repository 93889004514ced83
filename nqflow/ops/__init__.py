"""Running it for weeks: the window loop and its clocks, the Databento Live stream, papermill
runs, the state store and outbox, notification channels, the surge cooldown, health, retention
and the set-up doctor.
"""

from __future__ import annotations

from nqflow import _exports

_EXPORTS: dict[str, tuple[str, ...]] = {
    "scheduling": ("Clock", "Scheduler", "SimulatedClock", "SystemClock"),
    "live": ("LiveRunner", "LiveStats", "run_live"),
    "runner": ("DAILY_NOTEBOOKS", "KERNEL_NAME", "NotebookRun", "execute_daily", "execute_window", "write_html"),
    "store": ("RunOutcome", "StateStore", "recorded_alerts"),
    "notify": ("CHANNELS", "Channel", "DeliveryError", "deliver_pending", "enabled_channels"),
    "suppression": ("repeats_to_suppress",),
    "health": ("Condition", "Verdict", "assess", "health_alert", "verdict"),
    "retention": ("Removed", "apply_retention"),
    "doctor": ("Check", "run_doctor"),
}
__all__ = _exports.names_of(_EXPORTS)


def __getattr__(name: str) -> object:
    return _exports.load(__name__, _EXPORTS, name)


def __dir__() -> list[str]:
    return __all__
