"""Shared fixtures: the generated sample market (built once, reused across runs), configs, the test
CA, the Slack webhook and the stand-in Databento gateway (their classes live in helpers.py)."""

from __future__ import annotations

import json
import os
import ssl
import warnings
from pathlib import Path

import pytest
import trustme
from helpers import KEY, Webhook
from standin_gateway import StandInGateway

from nqflow.config import load_config
from nqflow.engine.monitor import REPO_ROOT
from nqflow.research.sample.generator import generate_sample_market

warnings.filterwarnings("ignore", message=".*inplace keyword.*")

SHARED_SAMPLES = REPO_ROOT.parent / "shared" / "databento-samples"


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The default sample market (data/sample), generated on first use; idempotent afterwards."""
    return generate_sample_market(REPO_ROOT / "data" / "sample")


@pytest.fixture(scope="session")
def truth(sample_dir) -> dict:
    return json.loads((sample_dir / "ground_truth.json").read_text())


@pytest.fixture(scope="session")
def source(sample_dir):
    from nqflow.sources.replay import ReplaySource

    return ReplaySource(sample_dir)


@pytest.fixture()
def config():
    return load_config()


@pytest.fixture()
def shared_samples() -> Path:
    if not (SHARED_SAMPLES / "GLBX.MDP3").is_dir():
        pytest.skip(f"{SHARED_SAMPLES} is not beside the checkout")
    return SHARED_SAMPLES


@pytest.fixture(scope="session")
def feature_store(tmp_path_factory):
    """One Dask cluster, one feature folder and one volume baseline for the tests that backtest the
    sample (test_backtest, test_features, test_lab): the first builds the features and history
    that the later ones re-read, as a quant's second backtest of a range does."""
    from nqflow.research.backtest import dask_client

    with dask_client(2, None) as client:
        yield client, tmp_path_factory.mktemp("features"), tmp_path_factory.mktemp("baseline") / "baseline"


# --------------------------------------------------------------------------- stand-in servers on loopback
@pytest.fixture(scope="session")
def tls(tmp_path_factory):
    ca = trustme.CA()
    bundle = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return bundle, context


@pytest.fixture()
def webhook():
    hook = Webhook()
    yield hook
    hook.close()


@pytest.fixture(scope="module")
def gateway(sample_dir, tmp_path_factory):
    ca = trustme.CA()
    bundle = tmp_path_factory.mktemp("tls") / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    saved = os.environ.get("REQUESTS_CA_BUNDLE")
    os.environ["REQUESTS_CA_BUNDLE"] = str(bundle)  # requests trusts the test CA, and only for this module
    try:
        with StandInGateway(sample_dir, KEY, ca.issue_cert("127.0.0.1")) as gw:
            yield gw
    finally:
        os.environ.pop("REQUESTS_CA_BUNDLE") if saved is None else os.environ.__setitem__("REQUESTS_CA_BUNDLE", saved)


@pytest.fixture()
def gw(gateway, monkeypatch):
    """The shared gateway, reset: no queued faults, an empty request log, the full range available."""
    gateway.faults.clear()
    gateway.log.clear()
    gateway.available_end = gateway.market.end
    gateway.cost_multiplier = 1.0
    monkeypatch.setenv("DATABENTO_API_KEY", KEY)
    return gateway
