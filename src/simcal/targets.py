"""Calibration targets: loss functions comparing simulated outputs with observed data.

A target is any ``"package.module:function"`` called as ``function(simulated, observed, **options) -> float``,
where ``simulated`` holds the successful replicates of one parameter set (column ``replicate`` tells them apart).
Lower is better.

Built-ins:

- ``replicate_mean_mse``: MSE between the observed series and the replicate mean.
- ``mean_replicate_mse``: mean over replicates of each replicate's MSE (penalises replicate spread).
- ``poisson_nll`` and ``negbin_nll``: negative log-likelihood of observed *counts* given the replicate mean as
  their expected value (a plug-in likelihood: the mean of the replicates stands for the model's expectation).

The likelihoods need a simulated value in every replicate at every observed key: a replicate whose series stops
early, or is NaN there, gives the parameter set the loss NaN (a failed trial) rather than a sum over fewer keys.
The MSEs, being means, take each replicate over the keys it has. Simulated keys without an observation are left
out. Observed keys without a simulated row (observed for 150 days, simulated for 100; an observed day 0.5) are left
out of the MSEs too, and give the likelihoods NaN: a calibration warns of them once per target, naming how many and
the first few (:func:`unmatched_keys`), and stops when no observed key matches any simulated row.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import pandas as pd
from scipy.special import gammaln, xlogy

from simcal.space import reads_as_number


def _keys(on: str | list[str]) -> list[str]:
    return [on] if isinstance(on, str) else list(on)


def _check_columns(
    simulated: pd.DataFrame, observed: pd.DataFrame, column: str, keys: list[str], replicate: bool = False
) -> None:
    for name, frame, needed in (
        ("simulated", simulated, [*(["replicate"] if replicate else []), *keys, column]),
        ("observed", observed, [*keys, column]),
    ):
        missing = [c for c in needed if c not in frame.columns]
        if missing:
            raise KeyError(f"{name} data has no column(s) {missing}; it has {list(frame.columns)}")


def _without_blank_rows(observed: pd.DataFrame, column: str, keys: list[str]) -> pd.DataFrame:
    """The observed rows less those with an empty key and no value (a CSV's trailing ``,`` lines): they match no
    simulated row and say nothing, so any number of them is left out alike, not read as a repeated key."""
    blank = observed[keys].isna().any(axis=1) & observed[column].isna()
    return observed[~blank] if blank.any() else observed


def _observed_series(observed: pd.DataFrame, column: str, keys: list[str]) -> pd.Series:
    observed = _without_blank_rows(observed, column, keys)
    series = observed.set_index(keys)[column].rename("observed")
    if series.index.has_duplicates:
        _refuse_repeated_keys(observed, keys)
    return series


def _key_text(observed: pd.DataFrame, keys: list[str], position: int) -> str:
    """How messages name an observed row: by its key, e.g. ``day 3`` (what the targets align on)."""
    values = [observed[key].iloc[position] for key in keys]
    values = [v.item() if isinstance(v, np.generic) else v for v in values]
    return f"{keys[0]} {values[0]!r}" if len(keys) == 1 else f"{keys} {values}"


def _refuse_repeated(frame: pd.DataFrame, keys: list[str], what: str, wanted: str) -> None:
    """Refuse rows of ``frame`` that share their ``keys``, naming the first and saying what is ``wanted``."""
    repeated = frame.duplicated(keys, keep=False).to_numpy()
    if repeated.any():
        first = int(np.flatnonzero(repeated)[0])
        raise ValueError(
            f"{what} have {int(repeated.sum())} rows that share their {' and '.join(keys)} (first at "
            f"{_key_text(frame, keys, first)}); {wanted}"
        )


def _refuse_repeated_keys(observed: pd.DataFrame, keys: list[str]) -> None:
    _refuse_repeated(observed, keys, "observed data", f"each {' and '.join(keys)} needs one observed value")


def check_observed(
    observed: pd.DataFrame, column: str, on: str | list[str] = "day", counts: bool = False
) -> None:
    """What the built-in targets need of the observed data, checked before any simulation runs: ``column``
    holds finite numbers, each value has a key (``on``, other columns than ``column``) and each key one row, and
    (``counts``: for a count likelihood) counts >= 0. Rows with an empty key and no value (lines of empty fields)
    are left out, by this check and by the targets."""
    keys = _keys(on)
    missing = [c for c in [*keys, column] if c not in observed.columns]
    if missing:
        raise KeyError(f"observed data has no column(s) {missing}; it has {list(observed.columns)}")
    if not keys or column in keys:  # failed with a bare KeyError or 'not enough values to unpack'
        raise ValueError(
            f"on must name the key column(s) that the simulated and observed rows are matched on (e.g. day), "
            f"other than the compared column {column!r}; got {on!r}"
        )
    values = observed[column]
    if not values.notna().any():  # every loss would be NaN, for every parameter set
        raise ValueError(
            f"observed column {column!r} has no values to compare with: "
            + ("the observed data have no rows" if observed.empty else f"all {len(observed)} are missing")
        )
    if values.dtype.kind not in "biuf":
        # An object column of numbers (a DataFrame built by hand) is fine; text, even '1', is not. A word is named
        # before a number stored as text: one word makes a CSV column text throughout.
        plain = values.dtype == object
        wrong = values.notna().to_numpy() & ~np.array([plain and isinstance(v, numbers.Real) for v in values])
        if wrong.any():
            word = wrong & ~np.array([reads_as_number(v) for v in values], dtype=bool)
            first = int(np.flatnonzero(word if word.any() else wrong)[0])
            raise ValueError(
                f"observed column {column!r} must hold numbers; found {values.iloc[first]!r} at "
                f"{_key_text(observed, keys, first)}"
            )
    number = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    if np.isinf(number).any():  # every loss would be infinite, hence NaN, blamed on the key columns
        first = int(np.flatnonzero(np.isinf(number))[0])
        raise ValueError(
            f"observed column {column!r} must hold finite numbers; found {number[first]} at "
            f"{_key_text(observed, keys, first)}"
        )
    keyless = observed[keys].isna().any(axis=1).to_numpy() & values.notna().to_numpy()
    if keyless.any():  # such an observation matches no simulated row: it was left out without a word
        first = int(np.flatnonzero(keyless)[0])
        raise ValueError(
            f"{int(keyless.sum())} observed value(s) of {column!r} have an empty key column ({' or '.join(keys)}), "
            f"so they match no simulated row; the first is row {first + 1} of the data (from 1, the header not "
            f"counted), {column} = {number[first]:g}"
        )
    observed = _without_blank_rows(observed, column, keys)
    _refuse_repeated_keys(observed, keys)
    if counts:
        _counts(_observed_series(observed, column, keys), column)


def unmatched_keys(
    simulated: pd.DataFrame, observed: pd.DataFrame, column: str, on: str | list[str]
) -> tuple[pd.Index, np.ndarray] | None:
    """The observed keys with a value in ``column`` (NaN ones are left out anyway), and which of them no row of
    ``simulated`` has, matched as the targets match them; None when no simulated row has every key (empty tables:
    "no events") or the data lack a key column."""
    keys = _keys(on)
    if any(key not in simulated.columns for key in keys) or any(key not in observed.columns for key in keys):
        return None
    keyed = simulated[keys].dropna()
    if keyed.empty:
        return None
    series = _observed_series(observed, column, keys)
    wanted = series.index[series.notna().to_numpy()]
    present = keyed.set_index(keys).index.unique()
    return wanted, ~np.asarray(wanted.isin(present), dtype=bool)


def _per_replicate(simulated: pd.DataFrame, keys: list[str]) -> list[str]:
    """The columns that identify one simulated value: the replicate (when the rows have one) and the keys."""
    return ["replicate", *keys] if "replicate" in simulated.columns else keys


def _covers(simulated: pd.DataFrame, observed: pd.Series, column: str, keys: list[str]) -> bool:
    """Whether every replicate has a simulated value (not NaN) at every key with an observed value.

    The likelihoods need it: a sum over the few days of a series that stopped early (or turned NaN) is smaller
    than the true fit's over all of them.
    """
    wanted = observed.index[observed.notna().to_numpy()]
    by = _per_replicate(simulated, keys)
    present = simulated.loc[simulated[column].notna(), by].drop_duplicates()
    replicates = simulated["replicate"].nunique() if "replicate" in simulated.columns else 1
    return bool((present.groupby(keys).size().reindex(wanted).fillna(0) >= replicates).all())


def _refuse_repeated_simulated(simulated: pd.DataFrame, keys: list[str]) -> None:
    """One simulated row per replicate and key: repeated rows (a model that returns a row per age group or region
    under the same day) were averaged, or counted as more days, without a word."""
    by = _per_replicate(simulated, keys)
    _refuse_repeated(
        simulated, by, "simulated data",
        f"a target needs one simulated value per {' and '.join(by)}: add the column that tells them apart to on "
        "(and to the observed data), or sum them in the model",
    )  # fmt: skip


def _aligned(
    simulated: pd.DataFrame, observed: pd.DataFrame, column: str, on: str | list[str]
) -> pd.DataFrame:
    """Every simulated row (with its replicate) next to the observed value at the same key; unmatched rows dropped."""
    keys = _keys(on)
    _check_columns(simulated, observed, column, keys, replicate=True)
    _refuse_repeated_simulated(simulated, keys)
    sim = simulated[["replicate", *keys, column]].rename(columns={column: "simulated"})
    return sim.join(_observed_series(observed, column, keys), on=keys, how="inner")


def _replicate_mean(
    simulated: pd.DataFrame, observed: pd.DataFrame, column: str, on: str | list[str]
) -> tuple[pd.DataFrame, pd.Series]:
    """Per key present in both: the mean over replicates of the simulated column, and the observed value; and
    the whole observed series (indexed by the keys), for a target that needs more of it."""
    keys = _keys(on)
    _check_columns(simulated, observed, column, keys)
    _refuse_repeated_simulated(simulated, keys)
    mean = simulated.groupby(keys, sort=False)[column].mean().rename("simulated")
    series = _observed_series(observed, column, keys)
    return pd.concat([mean, series], axis=1, join="inner"), series


def replicate_mean_mse(
    simulated: pd.DataFrame, observed: pd.DataFrame, column: str, on: str | list[str] = "day"
) -> float:
    """MSE between the observed series and the mean over replicates (no penalty for replicate spread). A key
    whose observed value is missing (NaN) is left out, as in ``mean_replicate_mse``; the count likelihoods
    refuse it."""
    mean, _ = _replicate_mean(simulated, observed, column, on)
    if mean.empty:
        return float("nan")
    return float(np.mean((mean["simulated"] - mean["observed"]) ** 2))


def mean_replicate_mse(
    simulated: pd.DataFrame, observed: pd.DataFrame, column: str, on: str | list[str] = "day"
) -> float:
    """Mean over replicates of each replicate's MSE (penalises replicate spread); a key whose observed value is
    missing (NaN) is left out."""
    joined = _aligned(simulated, observed, column, on)
    if joined.empty:
        return float("nan")
    squared = (joined["simulated"] - joined["observed"]) ** 2
    return float(squared.groupby(joined["replicate"]).mean().mean())


def _counts(values: pd.Series, column: str) -> np.ndarray:
    counts = values.to_numpy(dtype=float)
    bad = ~np.isfinite(counts) | (counts < 0) | (counts != np.round(counts))
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"observed column {column!r} must hold counts (whole numbers >= 0) for a count likelihood; found "
            f"{counts[first]:g} at {values.index.names[0] if len(values.index.names) == 1 else values.index.names} "
            f"{values.index[first]}"
        )
    return counts


def check_count_options(dispersion: float = 10.0, min_mean: float = 1e-3) -> None:
    """The numeric options of the count likelihoods: ``dispersion`` a finite number > 0, ``min_mean`` a finite
    number >= 0 (a NaN would make every loss NaN, an infinite dispersion too, silently)."""
    for name, value, least in (("dispersion", dispersion, "> 0"), ("min_mean", min_mean, ">= 0")):
        number = value if isinstance(value, numbers.Real) and not isinstance(value, bool) else math.nan
        if not (math.isfinite(number) and (number > 0 if least == "> 0" else number >= 0)):
            raise ValueError(f"{name} must be a finite number {least}, got {value!r}")


def poisson_log_likelihood(counts: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """log P(counts | Poisson(mean)) elementwise; ``xlogy`` gives 0 log 0 = 0, so a zero mean is exact."""
    return xlogy(counts, mean) - mean - gammaln(counts + 1.0)


def _log_rising_ratio(counts: np.ndarray, k: float) -> np.ndarray:
    """log(Γ(counts + k) / Γ(k)) - counts·log(k), accurate for every k > 0.

    Past k = 1e5 the difference of two huge ``gammaln`` values would lose digits, so it uses Stirling's series
    instead (the first omitted term is below 1/(360 k³) < 3e-18).
    """
    if k < 1e5:
        return gammaln(counts + k) - gammaln(k) - counts * np.log(k)
    return (counts + k - 0.5) * np.log1p(counts / k) - counts + (1.0 / (counts + k) - 1.0 / k) / 12.0


def negbin_log_likelihood(counts: np.ndarray, mean: np.ndarray, dispersion: float) -> np.ndarray:
    """log P(counts | NB(mean, dispersion)) elementwise: variance mean + mean²/dispersion.

    Arranged so that no two large terms cancel: accurate for small and huge dispersion (where it tends to the
    Poisson) and for means near zero.
    """
    k = float(dispersion)
    return (
        _log_rising_ratio(counts, k)
        - gammaln(counts + 1.0)
        - (k + counts) * np.log1p(mean / k)
        + xlogy(counts, mean)
    )


def _count_nll(
    simulated: pd.DataFrame,
    observed: pd.DataFrame,
    column: str,
    on: str | list[str],
    min_mean: float,
    log_likelihood,
) -> float:
    check_count_options(min_mean=min_mean)
    mean, series = _replicate_mean(simulated, observed, column, on)
    if mean.empty or not _covers(simulated, series, column, _keys(on)):
        return float("nan")
    counts = _counts(mean["observed"], column)
    # A replicate mean of 0 where something was observed has likelihood 0; the floor keeps that loss finite (and
    # very large), so the sampler learns the region is bad instead of seeing a failure.
    expected = np.maximum(mean["simulated"].to_numpy(dtype=float), float(min_mean))
    return float(-np.sum(log_likelihood(counts, expected)))


def poisson_nll(
    simulated: pd.DataFrame,
    observed: pd.DataFrame,
    column: str,
    on: str | list[str] = "day",
    min_mean: float = 1e-3,
) -> float:
    """Poisson negative log-likelihood of the observed counts, with the replicate mean as the expected count.

    ``min_mean`` floors the expected count so that a simulated 0 against an observed count gives a large finite
    loss rather than infinity.
    """
    return _count_nll(simulated, observed, column, on, min_mean, poisson_log_likelihood)


def negbin_nll(
    simulated: pd.DataFrame,
    observed: pd.DataFrame,
    column: str,
    on: str | list[str] = "day",
    dispersion: float = 10.0,
    min_mean: float = 1e-3,
) -> float:
    """Negative-binomial negative log-likelihood of the observed counts (variance mean + mean²/dispersion),
    with the replicate mean as the expected count. For over-dispersed reporting; tends to ``poisson_nll`` as
    ``dispersion`` grows."""
    try:
        check_count_options(dispersion=dispersion)
    except ValueError as error:
        raise ValueError(f"negbin_nll: {error}") from None
    return _count_nll(
        simulated, observed, column, on, min_mean, lambda c, m: negbin_log_likelihood(c, m, dispersion)
    )
