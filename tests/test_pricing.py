"""Black-76 implied volatility: the solver gives back the volatility a price was made with, across
the chain's strikes and expiries, and settles the prices no volatility inside its bracket makes."""

from __future__ import annotations

import numpy as np
from scipy.optimize import brentq

from nqflow.market.pricing import black76, implied_vol, smile_vol


def _chain(n: int = 4000, seed: int = 7):
    rng = np.random.default_rng(seed)
    forward = rng.uniform(15_000, 22_000, n)
    strike = np.round(forward * rng.uniform(0.7, 1.3, n) / 5) * 5
    years = rng.choice([0.5 / 365, 1 / 365, 3 / 365, 10 / 365, 45 / 365, 0.25, 1.0], n)
    is_call = rng.random(n) < 0.5
    return forward, strike, years, is_call


def test_implied_vol_gives_back_the_volatility_each_price_was_made_with():
    forward, strike, years, is_call = _chain()
    vol = smile_vol(forward, strike, years)
    price = black76(forward, strike, years, vol, is_call)
    intrinsic = np.where(is_call, np.maximum(forward - strike, 0), np.maximum(strike - forward, 0))
    # Where the time value is a few ulps of the price, no solver can tell volatilities apart.
    readable = price - intrinsic > 1e-6 * np.maximum(price, 1.0)
    assert readable.sum() > 2000
    solved = implied_vol(price, forward, strike, years, is_call)
    np.testing.assert_allclose(solved[readable], vol[readable], rtol=1e-7)
    repriced = black76(forward, strike, years, solved, is_call)
    np.testing.assert_allclose(repriced[readable], price[readable], rtol=1e-9, atol=1e-9)


def test_implied_vol_agrees_with_a_scalar_root_finder_on_tick_prices():
    forward, strike, years, is_call = _chain(300, seed=11)
    price = np.round(black76(forward, strike, years, smile_vol(forward, strike, years), is_call) * 4) / 4
    solved = implied_vol(price, forward, strike, years, is_call)
    checked = 0
    for f, k, t, c, p, v in zip(forward, strike, years, is_call, price, solved):
        if not black76(f, k, t, 0.005, c) < p < black76(f, k, t, 5.0, c):
            continue
        root = brentq(lambda vol, f=f, k=k, t=t, c=c, p=p: black76(f, k, t, vol, c) - p, 0.005, 5.0, xtol=1e-14)
        assert abs(v - root) < 1e-8 * max(root, 1.0), (f, k, t, c, p, v, root)
        checked += 1
    assert checked > 150


def test_prices_outside_the_bracket_settle_at_its_ends_and_unknown_prices_give_nan():
    forward = np.full(5, 20_000.0)
    strike = np.array([19_000.0, 21_000.0, 20_000.0, 20_000.0, 20_000.0])
    years = np.full(5, 0.1)
    is_call = np.array([True, False, True, True, False])
    # At intrinsic (and a deep out-of-the-money put worth nothing); above the price at 500%
    # volatility (more than the future itself); unknown.
    price = np.array([1_000.0, 1_000.0, 0.0, 25_000.0, np.nan])
    solved = implied_vol(price, forward, strike, years, is_call)
    assert solved[:3].tolist() == [0.005, 0.005, 0.005]
    assert solved[3] == 5.0
    assert np.isnan(solved[4])
    assert implied_vol(np.empty(0), np.empty(0), np.empty(0), np.empty(0), np.empty(0, dtype=bool)).shape == (0,)
