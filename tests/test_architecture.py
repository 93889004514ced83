"""The module boundaries the README's "How it works" promises, and the typed alert record."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import alert_json as shared_alert_json

from nqflow.alerts import (
    ALERT_FIELDS,
    KINDS,
    LABELS,
    LEVELS,
    Alert,
    Direction,
    Kind,
    Level,
    to_records,
    validate,
)
from nqflow.errors import DataError


def test_the_scheduler_process_loads_neither_the_engine_nor_scipy():
    code = (
        "import sys, nqflow.ops.scheduling, nqflow.cli; "
        "print(sorted(m for m in sys.modules if m in "
        "('scipy', 'nqflow.engine.detect', 'nqflow.engine.strategies', 'nqflow.engine.monitor')))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"


def test_a_window_notebooks_imports_leave_scipy_stats_unloaded():
    """scipy.stats took 0.8 s of every window kernel's start for two survival functions; the
    engine builds them from scipy.special (`detect.tail_probability`)."""
    code = (
        "import sys, nqflow.engine.monitor, nqflow.reports.charts, nqflow.engine.gex; "
        "print(sorted(m for m in sys.modules if m.startswith('scipy.stats')))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"


def alert_json(**changes) -> dict:
    """The shared factory's alert with the values these tests read back."""
    fixed = {
        "alert_id": "a1",
        "window_end": "2026-11-02T15:15:00+00:00",
        "event_time": "2026-11-02T15:03:00+00:00",
        "symbol": "NQZ6 C21000",
        "volume": 400,
        "premium_usd": 3.2e6,
        "label": "HIGH",
        "reasons": ["why"],
        "instrument_ids": [42],
        "open_interest": 1500.0,
    }
    record = shared_alert_json(0, "2026-11-02T15:00:00+00:00", confidence=72.5)
    record.update(fixed)
    record.update(changes)  # after the factory: a field set to None here stays None
    return record


def test_alert_json_round_trip_normalises_types_and_enums():
    alert = Alert.from_json(alert_json())
    assert alert.kind is Kind.LARGE_ORDER and alert.level is Level.INSTRUMENT and alert.direction is Direction.BUY
    assert alert.open_interest == 1500 and isinstance(alert.open_interest, int)  # a count through a float column
    again = Alert.from_json(json.loads(json.dumps(alert.to_json())))
    assert again == alert
    assert list(alert.to_json()) == ALERT_FIELDS and alert.to_json()["kind"] == "large_order"


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"kind": "block"}, "unknown kind 'block'"),
        ({"label": "URGENT"}, "unknown label"),
        ({"volume": "400"}, "field volume should be int"),
        ({"volume": 400.5}, "field volume should be int"),
        ({"confidence": 140.0}, "outside [0, 100]"),
        ({"symbol": None}, "field symbol is missing"),
        ({"extra": 1}, "unknown fields ['extra']"),
    ],
)
def test_a_malformed_alert_is_a_one_line_error_naming_the_field(changes, message):
    with pytest.raises(DataError) as error:
        validate(alert_json(**changes))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_missing_fields_are_named():
    record = alert_json()
    del record["reasons"], record["tier"]
    with pytest.raises(DataError, match=r"lacks fields \['tier', 'reasons'\]"):
        Alert.from_json(record)


def test_every_list_of_kinds_and_levels_derives_from_the_enums():
    from nqflow import cli
    from nqflow.reports.charts import KIND_COLOURS
    from nqflow.research import lab

    assert KINDS == tuple(Kind) and LEVELS == tuple(Level) and LABELS == ("LOW", "MEDIUM", "HIGH")
    kind_option = next(
        a for a in cli._parser()._subparsers._group_actions[0].choices["alerts"]._actions if a.dest == "kind"
    )
    assert tuple(kind_option.choices) == KINDS
    assert set(KIND_COLOURS) == set(Kind)
    assert set(lab.CURVES["large_premium_usd"][1]) == {Kind.LARGE_ORDER, Kind.SWEEP, Kind.STRATEGY, Kind.WORKED_ORDER}


def test_to_records_checks_what_the_notebook_glues():
    import pandas as pd

    frame = pd.DataFrame([alert_json(open_interest=float("nan"), tier=None)], columns=ALERT_FIELDS)
    (record,) = to_records(frame)
    assert record["open_interest"] is None and record["kind"] == "large_order"
    with pytest.raises(DataError, match="unknown direction"):
        to_records(pd.DataFrame([alert_json(direction="UP")], columns=ALERT_FIELDS))


def test_a_window_summary_is_checked_where_it_is_read_back():
    from nqflow.alerts import check_summary

    good = {
        "window_start": "2026-11-02T15:00:00+00:00",
        "window_end": "2026-11-02T15:15:00+00:00",
        "option_trades": 10,
        "contracts": 50,
        "premium_usd": 1.5e5,
        "empty": False,
        "notes": [],
        "alerts": 0,
        "max_confidence": 0.0,
    }
    assert check_summary(good) is good
    with pytest.raises(DataError, match="lacks 'alerts'"):
        check_summary({k: v for k, v in good.items() if k != "alerts"})
    with pytest.raises(DataError, match="contracts should be int"):
        check_summary({**good, "contracts": True})


#: The layers, top first: a package may import only from its own layer and the layers above it.
LAYERS = [
    {
        "nqflow.alerts",
        "nqflow.config",
        "nqflow.errors",
        "nqflow.paths",
        "nqflow.sqlite",
        "nqflow.parquet",
        "nqflow.retry",
        "nqflow._exports",
        "nqflow._deferred",
        "nqflow",
    },
    {"nqflow.market"},
    {"nqflow.sources"},
    {"nqflow.engine"},
    {"nqflow.reports"},
    {"nqflow.ops"},
    {"nqflow.research"},
    {"nqflow.cli"},
]


def _layer_of(module: str) -> int:
    parts = module.split(".")
    for depth in (2, 1):
        name = ".".join(parts[:depth])
        for index, layer in enumerate(LAYERS):
            if name in layer:
                return index
    raise AssertionError(f"{module} is in no layer")


def _imports(path) -> set[str]:
    """Every nqflow module `path` imports, at module level or inside a function."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("nqflow"):
            found.add(node.module if node.module != "nqflow" else "nqflow")
            if node.module == "nqflow":
                found.update(f"nqflow.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("nqflow"))
    return found


def test_a_package_imports_only_from_the_layers_above_it():
    from nqflow.paths import REPO_ROOT

    upward = []
    for path in sorted((REPO_ROOT / "nqflow").rglob("*.py")):
        module = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts).removesuffix(".__init__")
        mine = _layer_of(module)
        upward += [f"{module} -> {imported}" for imported in sorted(_imports(path)) if _layer_of(imported) > mine]
    assert upward == []


def test_no_import_circle():
    from nqflow.paths import REPO_ROOT

    graph = {}
    for path in sorted((REPO_ROOT / "nqflow").rglob("*.py")):
        module = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts).removesuffix(".__init__")
        graph[module] = {m for m in _imports(path) if m != module}
    graph = {module: {m for m in imports if m in graph} for module, imports in graph.items()}
    circles, state = [], {}

    def visit(module, trail):
        state[module] = "open"
        for imported in sorted(graph[module]):
            if state.get(imported) == "open":
                circles.append(" -> ".join(trail[trail.index(imported) :] + [imported]))
            elif imported not in state:
                visit(imported, trail + [imported])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert circles == []


@pytest.mark.xdist_group("architecture")
def test_xdist_groups_reach_the_scheduler(request):
    """`make test` keeps each costly module fixture on one worker with ``--dist loadgroup``;
    pytest 9.2 made the group mark a silent no-op (pytest-xdist#1386) and every such fixture
    was built on both workers. This fails if that happens again."""
    if not request.config.getoption("loadgroup", False):
        pytest.skip("not run under --dist loadgroup")
    assert request.node.nodeid.endswith("@architecture")


IRI_PROBE = """
import sys, jsonschema
check = jsonschema.Draft7Validator({"format": "iri"}, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
print([check.is_valid(text) for text in ("http://example.com/\\u00fc", "no scheme", "http://[::1", "urn:isbn:0451")])
"""


def test_nqflow_defers_the_iri_grammars_and_the_iri_check_still_answers_alike():
    plain = subprocess.run([sys.executable, "-c", IRI_PROBE], capture_output=True, text=True, check=True).stdout
    started = "import nqflow, scrapbook, sys\nassert 'lark' not in sys.modules, 'the grammars were compiled'\n"
    deferred = subprocess.run(
        [sys.executable, "-c", started + IRI_PROBE], capture_output=True, text=True, check=True
    ).stdout
    assert deferred == plain and "True" in plain and "False" in plain


def test_every_notebook_imports_nqflow_before_scrapbook():
    from nqflow.paths import REPO_ROOT

    for path in sorted((REPO_ROOT / "notebooks").glob("*.ipynb")):
        code = "".join(
            "".join(c["source"]) + "\n" for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"
        )
        assert code.index("import nqflow") < code.index("import scrapbook"), path.name
