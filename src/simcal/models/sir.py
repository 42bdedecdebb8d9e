"""A stochastic SIR epidemic (chain binomial, daily steps), its mean-field twin, and an observed-data generator.

``simulate(params, seed)`` returns one row per day with the new infections (``incidence``) and the number
infected (``prevalence``). ``mean_field`` runs the same daily recursion on expected values (no randomness): a
model whose loss surface has no Monte Carlo noise, for testing optimisers. Their parameters are declared in
``SPACE``: ``beta`` (transmission rate per day) and ``gamma`` (recovery rate per day) are required;
``population``, ``initial_infected`` and ``days`` have defaults.

Random stream. The seed fixes two uniforms per day, one for the day's infections and one for its recoveries, and
each count is the binomial quantile of its uniform (inversion: the smallest k with P(X <= k) >= u). So the same
seed gives every parameter set the same uniforms, and the counts move monotonically and by small steps as a
parameter changes: with common random numbers (``simulation.common_random_numbers``) the loss of a calibration is
then a nearly smooth function of the parameters rather than one reshuffled at every point, as it was when each
count was drawn by numpy's binomial sampler, whose use of the stream depends on the probability. Since that change
a seed gives other epidemics than before. The quantile loop runs compiled when numba is installed (a dependency
of the library) and otherwise as the same arithmetic on numpy arrays; ``.tests/unit/test_simcal_sir.py`` checks
that both give the same counts and that they are the exact binomial quantiles (scipy's).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from simcal.contract_error import ContractError
from simcal.space import Integer, ParameterSpace, Real
from simcal.targets import check_count_options

SPACE = ParameterSpace(
    beta=Real(low=0.0, description="transmission rate per day"),
    gamma=Real(low=0.0, description="recovery rate per day"),
    population=Integer(default=10_000, low=1, description="people"),
    initial_infected=Integer(default=10, low=1, description="infected on day 0"),
    days=Integer(default=100, low=1, description="days simulated"),
)
DEFAULTS = SPACE.defaults
NOISES = ("poisson", "negbin", "none")  # observe's reporting noise
# The quantile search looks this many standard deviations (plus a few counts) either side of the mean: the
# binomial mass beyond is below 1e-30, far under a double's resolution of the cumulative sum.
TAIL_SDS, TAIL_COUNTS = 12.0, 10


def _start(params: Mapping[str, Any]) -> tuple[float, float, int, int, int]:
    p = SPACE.complete(params)
    population, infected = int(p["population"]), int(p["initial_infected"])
    if infected > population:
        raise ValueError(f"initial_infected ({infected}) exceeds population ({population})")
    return float(p["beta"]), float(p["gamma"]), population, infected, int(p["days"])


def quantile_window(n: int, p: float) -> tuple[int, int, int]:
    """(lowest, mode, highest) count the quantile search considers, for 0 < p < 1 and n > 0."""
    mean = n * p
    sd = math.sqrt(mean * (1.0 - p))
    low = max(0, int(math.floor(mean - TAIL_SDS * sd)) - TAIL_COUNTS)
    high = min(n, int(math.ceil(mean + TAIL_SDS * sd)) + TAIL_COUNTS)
    mode = min(max(int(math.floor((n + 1) * p)), low), high)
    return low, mode, high


def binomial_quantile(u: float, n: int, p: float) -> int:
    """The smallest k with P(X <= k) >= u for X ~ Binomial(n, p), by numpy arrays: the probabilities of the
    window's counts relative to the mode's (each from its neighbour's by the pmf ratio), their running sum, and
    the first count whose share of the total reaches u."""
    if n <= 0 or p <= 0.0:
        return 0
    if p >= 1.0:
        return n
    low, mode, high = quantile_window(n, p)
    odds = p / (1.0 - p)
    up = np.arange(mode, high, dtype=np.float64)  # pmf(k + 1) / pmf(k) for k = mode .. high - 1
    down = np.arange(mode, low, -1, dtype=np.float64)  # pmf(k - 1) / pmf(k) for k = mode .. low + 1
    weights = np.concatenate(
        (
            np.cumprod(down / ((n - down + 1.0) * odds))[::-1],
            [1.0],
            np.cumprod((n - up) / (up + 1.0) * odds),
        )
    )
    running = np.cumsum(weights)
    return low + int(np.searchsorted(running, u * running[-1], side="left"))


def _epidemic(beta, gamma, population, infected, uniforms, quantile):
    """The chain binomial: day by day, infections and recoveries as quantiles of that day's two uniforms."""
    days = uniforms.shape[0]
    susceptible = population - infected
    recover_probability = 1.0 - math.exp(-gamma)
    incidence = np.zeros(days, dtype=np.int64)
    prevalence = np.zeros(days, dtype=np.int64)
    for day in range(days):
        infect_probability = 1.0 - math.exp(-beta * infected / population)
        new_infections = quantile(uniforms[day, 0], susceptible, infect_probability)
        recoveries = quantile(uniforms[day, 1], infected, recover_probability)
        susceptible -= new_infections
        infected += new_infections - recoveries
        incidence[day] = new_infections
        prevalence[day] = infected
    return incidence, prevalence


@functools.cache
def _compiled_epidemic():
    """The chain binomial compiled by numba (simcal.models._sir_kernel), or None without numba."""
    try:
        from simcal.models._sir_kernel import epidemic
    except ImportError:  # numba missing: the numpy arrays do the same arithmetic
        return None
    return epidemic


def epidemic_counts(
    beta: float, gamma: float, population: int, infected: int, uniforms: np.ndarray, compiled=None
):
    """(daily new infections, number infected) of the chain binomial for ``uniforms`` of shape (days, 2);
    ``compiled``: True (numba, an ImportError without it), False (numpy), None (numba when it imports)."""
    kernel = _compiled_epidemic() if compiled is not False else None
    if compiled and kernel is None:
        raise ImportError("simcal.models.sir: the compiled chain binomial needs numba (the 'fast' extra)")
    if kernel is not None:
        return kernel(float(beta), float(gamma), int(population), int(infected), uniforms)
    return _epidemic(beta, gamma, population, infected, uniforms, binomial_quantile)


@SPACE.declare
def simulate(params: Mapping[str, Any], seed: int) -> pd.DataFrame:
    beta, gamma, population, infected, days = _start(params)
    uniforms = np.random.default_rng(seed).random((days, 2))
    incidence, prevalence = epidemic_counts(beta, gamma, population, infected, uniforms)
    return pd.DataFrame({"day": np.arange(days), "incidence": incidence, "prevalence": prevalence})


def mean_field_curves(
    beta, gamma, population: int, initial_infected: int, days: int
) -> tuple[np.ndarray, np.ndarray]:
    """(daily new infections, number infected) of the mean-field recursion for arrays of ``beta`` and ``gamma``
    (broadcast together), each of shape ``broadcast(beta, gamma).shape + (days,)``. Vectorised, so a dense grid of
    parameters costs one pass."""
    beta, gamma = np.broadcast_arrays(np.asarray(beta, dtype=float), np.asarray(gamma, dtype=float))
    susceptible = np.full(beta.shape, float(population - initial_infected))
    infected = np.full(beta.shape, float(initial_infected))
    recover_fraction = 1.0 - np.exp(-gamma)
    incidence = np.zeros(beta.shape + (days,))
    prevalence = np.zeros(beta.shape + (days,))
    for day in range(days):
        new_infections = susceptible * (1.0 - np.exp(-beta * infected / population))
        recoveries = infected * recover_fraction
        susceptible = susceptible - new_infections
        infected = infected + new_infections - recoveries
        incidence[..., day] = new_infections
        prevalence[..., day] = infected
    return incidence, prevalence


@SPACE.declare
def mean_field(params: Mapping[str, Any], seed: int) -> pd.DataFrame:
    """The chain binomial's daily recursion on expected values; ``seed`` is ignored (the model is deterministic)."""
    beta, gamma, population, infected, days = _start(params)
    incidence, prevalence = mean_field_curves(beta, gamma, population, infected, days)
    return pd.DataFrame({"day": np.arange(days), "incidence": incidence, "prevalence": prevalence})


@SPACE.declare
def observe(
    params: Mapping[str, Any],
    seed: int,
    noise: str = "poisson",
    dispersion: float = 10.0,
    process: str = "stochastic",
) -> pd.DataFrame:
    """Observed daily incidence: one epidemic at known parameters plus reporting noise.

    ``process`` is ``"stochastic"`` (one run of ``simulate``) or ``"mean_field"``. ``noise`` is ``"poisson"``,
    ``"negbin"`` (negative binomial with the given ``dispersion``) or ``"none"``.
    """
    check_observe_options(noise, dispersion, process)
    truth = {"stochastic": simulate, "mean_field": mean_field}[process](params, seed)
    rng = np.random.default_rng([seed, 1])
    mean = truth["incidence"].to_numpy(dtype=float)
    if noise == "poisson":
        observed = rng.poisson(mean)
    elif noise == "negbin":
        # numpy's parametrisation: n successes, p = n / (n + mean) gives the requested mean
        observed = rng.negative_binomial(dispersion, dispersion / (dispersion + np.maximum(mean, 1e-9)))
    else:
        observed = np.round(mean).astype(np.int64)
    return pd.DataFrame({"day": truth["day"], "incidence": observed})


def check_observe_options(noise: Any, dispersion: Any, process: Any) -> None:
    """``observe``'s options, refused naming them before the epidemic runs (an unknown noise was refused only after
    it, as a ValueError a wrapper took for a bug, and a list as ``process`` was 'unhashable type')."""
    where = "observed.options: simcal.models.sir:observe's option"
    for name, value, known in (("process", process, ("stochastic", "mean_field")), ("noise", noise, NOISES)):
        if not isinstance(value, str) or value not in known:
            raise ContractError(f"{where} {name} = {value!r} is unknown; expected one of {list(known)}")
    if noise == "negbin":  # numpy's own message for a bad n is 'n <= 0', naming no option
        try:
            check_count_options(dispersion=dispersion)
        except ValueError as error:
            raise ContractError(f"{where} {error}") from None
