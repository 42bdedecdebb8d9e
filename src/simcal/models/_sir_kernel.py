"""simcal.models.sir's chain binomial compiled by numba (imported only when numba is installed): the same
arithmetic in the same order as the numpy code there (``binomial_quantile``, ``_epidemic``), so both give the same
counts (.tests/unit/test_simcal_sir.py). Compiled code is cached next to this file, or in numba's user cache."""

from __future__ import annotations

import math

import numba
import numpy as np

from simcal.models.sir import TAIL_COUNTS, TAIL_SDS, quantile_window

window = numba.njit(cache=True, nogil=True)(quantile_window)  # the numpy path's own window, compiled


@numba.njit(cache=True, nogil=True)
def quantile(u, n, p, scratch):
    """The smallest k with P(X <= k) >= u for X ~ Binomial(n, p); ``scratch`` holds the window's weights."""
    if n <= 0 or p <= 0.0:
        return 0
    if p >= 1.0:
        return n
    low, mode, high = window(n, p)
    odds = p / (1.0 - p)
    weights = scratch[: high - low + 1]
    weights[mode - low] = 1.0
    for k in range(mode, high):  # the pmf ratio from each count to the next, as numpy's cumprod takes them
        weights[k + 1 - low] = weights[k - low] * ((n - k) / (k + 1.0) * odds)
    for k in range(mode, low, -1):
        weights[k - 1 - low] = weights[k - low] * (k / ((n - k + 1.0) * odds))
    for i in range(1, weights.shape[0]):  # the running sum, in place (numpy's cumsum adds in the same order)
        weights[i] += weights[i - 1]
    target = u * weights[-1]
    for i in range(weights.shape[0]):
        if weights[i] >= target:
            return low + i
    return high


@numba.njit(cache=True, nogil=True)
def epidemic(beta, gamma, population, infected, uniforms):
    days = uniforms.shape[0]
    susceptible = population - infected
    recover_probability = 1.0 - math.exp(-gamma)
    incidence = np.zeros(days, dtype=np.int64)
    prevalence = np.zeros(days, dtype=np.int64)
    # the widest window: n = population, p = 1/2 (standard deviation sqrt(population) / 2)
    scratch = np.empty(min(population, 2 * (int(TAIL_SDS * math.sqrt(population) / 2) + TAIL_COUNTS + 2)) + 1)
    for day in range(days):
        infect_probability = 1.0 - math.exp(-beta * infected / population)
        new_infections = quantile(uniforms[day, 0], susceptible, infect_probability, scratch)
        recoveries = quantile(uniforms[day, 1], infected, recover_probability, scratch)
        susceptible -= new_infections
        infected += new_infections - recoveries
        incidence[day] = new_infections
        prevalence[day] = infected
    return incidence, prevalence
