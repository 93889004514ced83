"""The data sources nqflow can read, as one registry.

`make_source`, the config's ``data.source`` choices and the CLI's ``--source`` all come from
`SOURCES`. A source is built lazily (the Databento client is imported only when asked for),
and answers the scheduler's questions itself (`DataSource.published`, `DataSource.check_budget`),
so no caller branches on a source's name. Adding a backend is one entry here plus a class that
follows `nqflow.market.frames.DataSource`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nqflow.errors import ConfigError, DataError
from nqflow.paths import resolve

if TYPE_CHECKING:
    from nqflow.config import Config
    from nqflow.market.frames import DataSource


@dataclass(frozen=True)
class SourceSpec:
    name: str
    summary: str
    #: (config, data folder override or None) -> a ready source
    build: Callable[[Config, str | None], DataSource]
    #: Data can lag real time: ask `DataSource.published` before running a window.
    publishes_late: bool = False
    #: Pulls cost money: ask `DataSource.check_budget` before a large pull.
    priced: bool = False
    #: Its data ends where its files end (a replay folder): health measures blindness up to
    #: that end, not up to the clock, and says so.
    fixed_end: bool = False


def _replay(config: Config, data_dir: str | None) -> DataSource:
    from nqflow.sources.replay import ReplaySource

    folder = resolve(data_dir or config.data.replay_dir)
    if not folder.is_dir():
        # Generating the sample is an explicit step: it takes a minute and writes ~35 MB.
        raise DataError(
            f"replay folder {folder} does not exist; create the sample market with `make sample` "
            f"(or `scheduler.py sample`), or point data.replay_dir at a folder of Databento DBN files"
        )
    return ReplaySource(folder)


def _databento(config: Config, data_dir: str | None) -> DataSource:
    from nqflow.sources.databento_historical import DatabentoSource

    return DatabentoSource(config, cache_dir=resolve(data_dir or config.data.cache_dir))


SOURCES: dict[str, SourceSpec] = {
    "replay": SourceSpec(
        "replay", "a folder of DBN files (the bundled sample market by default)", _replay, fixed_end=True
    ),
    "databento": SourceSpec(
        "databento",
        "Databento's Historical API, GLBX.MDP3, cached on disk as DBN",
        _databento,
        publishes_late=True,
        priced=True,
    ),
}
SOURCE_NAMES: tuple[str, ...] = tuple(SOURCES)

__all__ = ["SOURCES", "SOURCE_NAMES", "SourceSpec", "make_source", "source_spec"]


def source_spec(name: str) -> SourceSpec:
    if name not in SOURCES:
        raise ConfigError(
            f"data.source must be one of {', '.join(SOURCE_NAMES)}, not {name!r}: "
            f"set it in config/monitoring.toml or pass --source"
        )
    return SOURCES[name]


def make_source(config: Config, source: str | None = None, data_dir: str | Path | None = None) -> DataSource:
    """The configured data source; `source` / `data_dir` override the config for one run."""
    return source_spec(source or config.data.source).build(config, str(data_dir) if data_dir else None)
