"""The TOML config and the typed defaults agree; bad keys and values are one-line errors."""

from __future__ import annotations

import pytest

from nqflow.config import Config, load_config, parse_override
from nqflow.errors import ConfigError


def test_toml_matches_the_typed_defaults():
    assert load_config().to_dict() == Config().to_dict()


@pytest.mark.parametrize(
    "override, message",
    [
        (
            {"thresholds.large_premium": 1},
            "unknown config key thresholds.large_premium; did you mean thresholds.large_premium_usd",
        ),
        ({"thresholds.sweep_span_ms": "fast"}, "thresholds.sweep_span_ms must be a whole number"),
        ({"thresholds.surge_tiers": [30, 10]}, "surge_tiers must be increasing"),
        ({"notify.email.port": "25"}, "notify.email.port must be a whole number"),
        ({"nonsense.key": 1}, "unknown config key nonsense"),
    ],
)
def test_bad_config_is_a_one_line_error_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config(overrides=override)
    assert "\n" not in str(info.value)


def test_an_unknown_data_source_is_refused_when_the_source_is_made_in_one_line():
    from nqflow.sources import make_source

    with pytest.raises(ConfigError, match="data.source must be one of replay, databento, not 'ftp'") as info:
        make_source(load_config(overrides={"data.source": "ftp"}))
    assert "\n" not in str(info.value)


def test_overrides_apply_and_cli_values_parse_as_toml():
    config = load_config(
        overrides=dict(
            [parse_override("thresholds.large_premium_usd=5e6"), parse_override("thresholds.surge_tiers=[5, 20, 40]")]
        )
    )
    assert config.thresholds.large_premium_usd == 5e6 and config.thresholds.surge_tiers == (5.0, 20.0, 40.0)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[thresholds\nlarge_premium_usd = 1")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(bad)


def test_default_universe_is_the_26_nq_option_products():
    universe = load_config().universe
    assert len(universe.option_parents) == 26 and universe.micro_option_parents == ()
    assert {"NQ", "QNE", "QN1", "QN4", "Q1A", "Q5A", "Q3B", "Q2D", "Q5D"} <= universe.products
    assert not any(p.startswith(("Q1N", "Q5N")) for p in universe.option_parents)  # no such CME product


@pytest.mark.parametrize(
    "override, names, valid",
    [
        ({"universe.option_parents": ["NQ.OPT", "Q1N.OPT"]}, "Q1N.OPT", "Q1A"),
        ({"universe.option_parents": ["ES.OPT"]}, "ES.OPT", "QN4"),
        ({"universe.option_parents": ["Q2D"]}, "Q2D", "Q5D"),
        ({"universe.micro_option_parents": ["NQ.OPT"]}, "NQ.OPT", "MNQ"),
    ],
)
def test_a_parent_that_is_not_an_nq_option_product_is_refused_with_the_valid_codes(override, names, valid):
    with pytest.raises(ConfigError, match=f"lists {names}, not NQ option products") as info:
        load_config(overrides=override)
    assert valid in str(info.value) and "\n" not in str(info.value)


def test_micro_products_are_opt_in():
    universe = load_config(overrides={"universe.micro_option_parents": ["MNQ.OPT", "MQ2.OPT"]}).universe
    assert universe.parents[-2:] == ("MNQ.OPT", "MQ2.OPT") and "MQ2" in universe.products
