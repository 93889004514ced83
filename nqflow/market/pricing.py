"""Black-76 pricing of options on futures: prices, deltas and implied volatilities (scipy).

Kept apart from `nqflow.market.contracts` (product facts) so that code which only needs to know the
products, such as the config and the scheduler, does not load scipy.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr


def black76(
    forward: np.ndarray, strike: np.ndarray, years: np.ndarray, vol: np.ndarray, is_call: np.ndarray, rate: float = 0.0
) -> np.ndarray:
    """Black-76 price of European options on a future, in the future's price units."""
    return np.where(
        is_call, _black76(forward, strike, years, vol, True, rate), _black76(forward, strike, years, vol, False, rate)
    )


def _black76(forward, strike, years, vol, call: bool, rate: float = 0.0) -> np.ndarray:
    """Black-76 price of calls (`call`) or of puts."""
    forward, strike, years, vol = map(np.asarray, (forward, strike, years, vol))
    return _priced(forward, strike, *_volatility_free(forward, strike, years, rate), vol, call)


def _volatility_free(forward, strike, years, rate: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The parts of a Black-76 price that do not depend on the volatility: log-moneyness, the
    root of the time to expiry (at least a microsecond of a year) and the discount factor."""
    years = np.maximum(years, 1e-6)
    return np.log(forward / strike), np.sqrt(years), np.exp(-rate * years)


def _priced(forward, strike, log_moneyness, root_years, discount, vol, call: bool) -> np.ndarray:
    """`_black76` from the parts that do not depend on the volatility (a bisection computes them once)."""
    sd = vol * root_years
    d1 = (log_moneyness + 0.5 * sd * sd) / sd
    d2 = d1 - sd
    if call:
        return discount * (forward * ndtr(d1) - strike * ndtr(d2))
    return discount * (strike * ndtr(-d2) - forward * ndtr(-d1))


def smile_vol(forward: np.ndarray, strike: np.ndarray, years: np.ndarray) -> np.ndarray:
    """A simple equity-index smile: downside skew plus curvature, higher for short dates."""
    k = np.log(np.asarray(strike) / np.asarray(forward))
    atm = 0.19 + 0.04 * np.exp(-np.asarray(years) * 24.0)
    scale = 1.0 / np.sqrt(np.maximum(years, 1.0 / 365.0) * 12.0)  # skew steepens near expiry
    return np.clip(atm - 0.55 * k * np.minimum(scale, 3.0) + 1.8 * k * k * scale, 0.08, 1.2)


def black76_delta(forward, strike, years, vol, is_call) -> np.ndarray:
    """Black-76 delta (undiscounted) of European options on a future: dV/dF per unit of the future."""
    forward, strike, vol = map(np.asarray, (forward, strike, vol))
    sd = np.maximum(vol * np.sqrt(np.maximum(np.asarray(years), 1e-6)), 1e-9)
    d1 = (np.log(forward / strike) + 0.5 * sd * sd) / sd
    return np.where(is_call, ndtr(d1), ndtr(d1) - 1.0)


def implied_vol(
    price, forward, strike, years, is_call, low: float = 0.005, high: float = 5.0, iterations: int = 60
) -> np.ndarray:
    """Black-76 implied volatility by bisection, vectorised. A price at or below intrinsic value
    gives `low` (the option is all intrinsic: its delta is then about 1 or 0, which is right)."""
    price, forward, strike, years = (np.asarray(x, dtype=float) for x in (price, forward, strike, years))
    price, forward, strike, years, is_call = np.broadcast_arrays(
        price, forward, strike, years, np.asarray(is_call, dtype=bool)
    )
    lo = np.full(price.shape, low)
    hi = np.full_like(lo, high)
    # Calls and puts bisected apart: each step prices one side only, half the normal CDFs of
    # pricing both and choosing (the same arithmetic, so the same volatilities).
    for call in (True, False):
        at = is_call == call
        if not at.any():
            continue
        side_lo, side_hi = lo[at], hi[at]
        side_price, side_forward, side_strike = price[at], forward[at], strike[at]
        parts = _volatility_free(side_forward, side_strike, years[at])
        for _ in range(iterations):
            mid = 0.5 * (side_lo + side_hi)
            too_high = _priced(side_forward, side_strike, *parts, mid, call) > side_price
            side_hi = np.where(too_high, mid, side_hi)
            side_lo = np.where(too_high, side_lo, mid)
        lo[at], hi[at] = side_lo, side_hi
    return 0.5 * (lo + hi)
