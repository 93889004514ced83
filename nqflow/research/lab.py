"""Threshold lab: how many alerts a threshold would raise, and how many of them were real.

The lab loads a range's stored features once (`nqflow.research.backtest.load_features`, built on Dask
workers where missing) and then re-applies the thresholds in memory (`nqflow.engine.detect.evaluate`,
the live monitor's own threshold stage) for every setting it is asked about. Each point is
therefore exact: the alerts a backtest or the live monitor would raise at that setting, folding
included, not a filter of one loose run.

The knobs (`KNOBS`): the large-premium level, the first surge tier, the three minimum volumes
of a surge, and a confidence cut (alerts below it are dropped, as a channel's
``min_confidence`` drops them). Against ground truth (the sample market) each point also gets
the true alerts (matching a planted event), precision, and recall of the planted events that
setting should catch. `lab_widget` puts sliders on the knobs for JupyterLab.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from nqflow.alerts import EVENT_KINDS, Kind, Level
from nqflow.config import Config
from nqflow.engine.features import WINDOW, Features
from nqflow.research.quality import evaluate, events_by_window, expected_events, matches

#: Overrides for a deliberately loose run (each below its default): tests and the bench use it.
LOOSE = {
    "thresholds.large_premium_usd": 1_000_000.0,
    "thresholds.surge_tiers": [5.0, 30.0, 50.0],
    "thresholds.instrument_min_volume": 25,
}

#: Knob -> what it sets. ``confidence_cut`` is not a threshold of detection but a cut on its output.
KNOBS = {
    "large_premium_usd": "thresholds.large_premium_usd",
    "first_surge_tier": "thresholds.surge_tiers[0]",
    "instrument_min_volume": "thresholds.instrument_min_volume",
    "expiry_min_volume": "thresholds.expiry_min_volume",
    "product_min_volume": "thresholds.product_min_volume",
    "worked_min_orders": "thresholds.worked_min_orders",
    "worked_max_gap_s": "thresholds.worked_max_gap_s",
    "worked_max_span_minutes": "thresholds.worked_max_span_minutes",
    "confidence_cut": "alerts below this confidence are dropped",
}

#: Curve name -> (the knob it moves, the alert kinds it governs, the level it governs or None).
CURVES = {
    "large_premium_usd": ("large_premium_usd", EVENT_KINDS, None),
    "surge_ratio": ("first_surge_tier", (Kind.VOLUME_SURGE,), None),
    "instrument_min_volume": ("instrument_min_volume", (Kind.VOLUME_SURGE,), Level.INSTRUMENT),
    "worked_min_orders": ("worked_min_orders", (Kind.WORKED_ORDER,), None),
    "worked_max_gap_s": ("worked_max_gap_s", (Kind.WORKED_ORDER,), None),
    "confidence": ("confidence_cut", None, None),
}


def mark_planted(alerts: pd.DataFrame, truth: dict) -> pd.DataFrame:
    """Add ``planted``: True when an alert matches a planted event of the ground truth."""
    by_window = events_by_window(pd.DataFrame(truth["events"]))
    planted = [
        any(matches(a, e) and e["kind"] != "two_sided" for e in by_window.get(a["window_start"], ()))
        for a in alerts.to_dict("records")
    ]
    return alerts.assign(planted=pd.Series(planted, index=alerts.index, dtype=bool))


def current_values(config: Config) -> dict[str, float]:
    """Where each knob stands in `config` (confidence: no cut)."""
    t = config.thresholds
    return {
        "large_premium_usd": t.large_premium_usd,
        "first_surge_tier": t.surge_tiers[0],
        "instrument_min_volume": float(t.instrument_min_volume),
        "expiry_min_volume": float(t.expiry_min_volume),
        "product_min_volume": float(t.product_min_volume),
        "worked_min_orders": float(t.worked_min_orders),
        "worked_max_gap_s": t.worked_max_gap_s,
        "worked_max_span_minutes": t.worked_max_span_minutes,
        "confidence_cut": 0.0,
    }


def config_at(config: Config, values: dict[str, float]) -> Config:
    """`config` with the knobs in `values` set (the others as they are); a bad knob is named."""
    unknown = sorted(set(values) - set(KNOBS))
    if unknown:
        raise ValueError(f"unknown lab knob(s) {', '.join(unknown)}; pick from {', '.join(KNOBS)}")
    t = config.thresholds
    changes: dict = {}
    if "large_premium_usd" in values:
        changes["large_premium_usd"] = float(values["large_premium_usd"])
    if "first_surge_tier" in values:
        changes["surge_tiers"] = (float(values["first_surge_tier"]), *t.surge_tiers[1:])
    for name in ("instrument_min_volume", "expiry_min_volume", "product_min_volume", "worked_min_orders"):
        if name in values:
            changes[name] = int(values[name])
    for name in ("worked_max_gap_s", "worked_max_span_minutes"):
        if name in values:
            changes[name] = float(values[name])
    return dataclasses.replace(config, thresholds=dataclasses.replace(t, **changes))


@dataclass
class Lab:
    """A range's features in memory and the setting they are judged against."""

    config: Config
    features: Features
    sessions: list[str]
    truth: dict | None = None

    @classmethod
    def load(
        cls, config: Config, first: dt.date, last: dt.date, data_dir: str | Path, truth: dict | None = None, **build
    ) -> Lab:
        """Features of the sessions from `first` to `last` (built where missing: `build` goes to
        `nqflow.research.backtest.build_features`, e.g. ``client`` or ``workers``)."""
        from nqflow.research.backtest import load_features

        sessions, features = load_features(config, first, last, data_dir, **build)
        return cls(config, features, [str(d) for d in sessions], truth)

    def alerts(self, **values: float) -> pd.DataFrame:
        """Every alert of the range at this setting (ALERT_FIELDS plus trade_date, and ``planted``
        with ground truth), ordered by window and alert id like a backtest's."""
        alerts = evaluate_alerts(self.features, config_at(self.config, _thresholds(values)))
        cut = float(values.get("confidence_cut", 0.0))
        alerts = alerts[alerts["confidence"] >= cut].reset_index(drop=True)
        return mark_planted(alerts, self.truth) if self.truth is not None else alerts

    def point(self, **values: float) -> dict:
        """Headline figures at one setting: alerts, by kind, and with ground truth true and false
        alerts, precision and recall (`nqflow.research.quality.evaluate`), and how long evaluating took."""
        started = time.perf_counter()
        alerts = self.alerts(**values)
        seconds = time.perf_counter() - started
        return {
            **summary_table(alerts, self.truth, config_at(self.config, _thresholds(values)), self.sessions),
            "seconds": round(seconds, 3),
        }

    def curve(self, name: str, grid: Iterable[float], **values: float) -> pd.DataFrame:
        """One curve: the point at each value of its knob, the other knobs at `values`."""
        if name not in CURVES:
            raise ValueError(f"unknown curve {name!r}; pick one of {', '.join(CURVES)}")
        knob = CURVES[name][0]
        rows = []
        for value in grid:
            point = self.point(**{**values, knob: value})
            row = {"curve": name, "value": value, "alerts": point["alerts"]}
            if self.truth is not None:
                row.update(
                    true_alerts=point["true_alerts"],
                    false_alerts=point["alerts"] - point["true_alerts"],
                    precision=point["precision"],
                    recall=point["recall"],
                )
            rows.append(row)
        return pd.DataFrame(rows)

    def curves(self, grids: dict[str, Iterable[float]], **values: float) -> pd.DataFrame:
        return pd.concat([self.curve(name, grid, **values) for name, grid in grids.items()], ignore_index=True)


def _thresholds(values: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in values.items() if k != "confidence_cut"}


def evaluate_alerts(features: Features, config: Config) -> pd.DataFrame:
    """`nqflow.engine.detect.evaluate` over a batch of sessions, as a backtest's alert table."""
    from nqflow.alerts import ALERT_FIELDS
    from nqflow.engine.detect import evaluate as apply_thresholds

    alerts = apply_thresholds(features, config).alerts
    dates = features.windows["trade_date"].to_numpy()[alerts[WINDOW].to_numpy(dtype="int64")]
    alerts = alerts.drop(columns=WINDOW)
    alerts.insert(0, "trade_date", dates)
    return alerts[["trade_date", *ALERT_FIELDS]].sort_values(["window_start", "alert_id"], ignore_index=True)


def summary_table(alerts: pd.DataFrame, truth: dict | None, config: Config, sessions: list[str]) -> dict:
    """Headline figures of one run: alerts per kind and, with ground truth, recall and precision."""
    out = {"sessions": len(sessions), "alerts": len(alerts), "by_kind": alerts["kind"].value_counts().to_dict()}
    if truth is not None:
        result = evaluate(alerts, truth, config, sessions)
        planted = alerts["planted"] if "planted" in alerts else mark_planted(alerts, truth)["planted"]
        out.update(
            recall=result["recall"],
            recall_by_kind=result["recall_by_kind"],
            true_alerts=int(planted.sum()),
            precision=round(float(planted.mean()), 3) if len(alerts) else None,
            false_alerts_per_session=result["false_alerts_per_session"],
            expected_events=int(expected_events(truth, config, sessions)["should_alert"].sum()),
        )
    return out


# --------------------------------------------------------------------------- sliders
#: Slider ranges: (min, max, step); the large premium moves on a log scale (base 10 exponents).
SLIDERS = {
    "large_premium_usd": (5.5, 7.5, 0.05),
    "first_surge_tier": (3.0, 29.0, 0.5),
    "instrument_min_volume": (0, 500, 5),
    "expiry_min_volume": (0, 2000, 25),
    "product_min_volume": (0, 5000, 50),
    "confidence_cut": (0.0, 100.0, 1.0),
}


def lab_widget(lab: Lab, grids: dict[str, Iterable[float]], draw_curves=None):
    """Sliders on every knob; each move (on release) re-evaluates every window of the loaded range
    and redraws the figures, the per-kind counts and the curves. `draw_curves(curves, values)`
    draws the curves (default `nqflow.reports.charts.threshold_curves`). Returns the widget box; its
    ``sliders`` (name -> slider) and ``refresh()`` are there for scripts and tests."""
    import ipywidgets as widgets
    from IPython.display import display

    if draw_curves is None:
        from nqflow.reports.charts import threshold_curves as draw_curves
    start = current_values(lab.config)
    sliders = {}
    for name, (low, high, step) in SLIDERS.items():
        common = dict(
            min=low,
            max=high,
            step=step,
            description=name,
            continuous_update=False,
            style={"description_width": "170px"},
            layout=widgets.Layout(width="560px"),
        )
        if name == "large_premium_usd":
            sliders[name] = widgets.FloatLogSlider(value=start[name], base=10, readout_format=".3s", **common)
        elif name.endswith("_min_volume"):
            sliders[name] = widgets.IntSlider(value=int(start[name]), **common)
        else:
            sliders[name] = widgets.FloatSlider(value=start[name], **common)
    figures, table, chart = widgets.HTML(), widgets.Output(), widgets.Output()

    def refresh(_change=None) -> dict:
        values = {name: slider.value for name, slider in sliders.items()}
        point = lab.point(**values)
        figures.value = _figures_html(point)
        table.clear_output(wait=True)
        with table:
            display(pd.DataFrame([point["by_kind"]], index=["alerts"]))
        curves = lab.curves(grids, **values)
        chart.clear_output(wait=True)
        with chart:
            display(draw_curves(curves, {curve: values[CURVES[curve][0]] for curve in grids}))
        box.last_point, box.last_curves = point, curves
        return point

    for slider in sliders.values():
        slider.observe(refresh, names="value")
    box = widgets.VBox(
        [
            widgets.HTML("<b>Thresholds</b> (released sliders re-evaluate every window of the range)"),
            *sliders.values(),
            figures,
            table,
            chart,
        ]
    )
    box.sliders, box.refresh = sliders, refresh
    refresh()
    return box


def _figures_html(point: dict) -> str:
    parts = [
        f"<b>{point['alerts']}</b> alerts in {point['sessions']} sessions "
        f"(evaluated in {point['seconds'] * 1000:.0f} ms)"
    ]
    if "precision" in point:
        parts.append(
            f"precision <b>{point['precision']}</b>, recall <b>{point['recall']}</b> of "
            f"{point['expected_events']} planted events, {point['false_alerts_per_session']} false alerts per session"
        )
    return "<p class='lab-figures'>" + "; ".join(parts) + "</p>"
