"""A calibration's targets and losses: the targets parsed and checked against the observed data, and the loss
of every parameter set. Split from ``simcal.calibrate``, from which every public name here is still
importable."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from simcal.contract import ContractError, check_options, resolve_callable, target_options
from simcal.design import Bound
from simcal.result_rows import KEY_COLUMNS, STATUS_COLUMNS
from simcal.targets import (
    check_count_options,
    check_observed,
    mean_replicate_mse,
    negbin_nll,
    poisson_nll,
    replicate_mean_mse,
)

# The built-in targets, and whether they need counts in the observed column (checked before anything runs).
BUILT_IN_TARGETS = {
    replicate_mean_mse: False,
    mean_replicate_mse: False,
    poisson_nll: True,
    negbin_nll: True,
}


# The trials table's own columns: a calibrated parameter of the same name would be overwritten in its rows (a
# parameter 'loss' by the loss), and the refine step, reading the best sets back from them, would run the model there.
TRIAL_COLUMNS = (
    "trial",
    "round",
    "phase",
    "method",
    "replicates",
    "replicates_ok",
    "replicates_failed",
    "loss",
)


@dataclass
class Target:
    name: str
    reference: str
    function: Any
    options: dict[str, Any]
    weight: float = 1.0


def parse_targets(targets: Sequence[Mapping[str, Any]]) -> list[Target]:
    # one target written without its list would otherwise be read key by key (or letter by letter)
    if isinstance(targets, str | Mapping) or not isinstance(targets, Sequence):
        raise ContractError(
            f"calibration.targets: expected a list of {{function: 'module:function', ...}}, got {targets!r}"
        )
    if not targets:
        raise ContractError("calibration.targets: at least one target is needed")
    parsed = []
    for index, spec in enumerate(targets):
        where = f"calibration.targets[{index}]"
        if not isinstance(spec, Mapping) or "function" not in spec:
            raise ContractError(f"{where}: expected {{function: 'module:function', ...}}, got {spec!r}")
        reference = spec["function"]
        function = resolve_callable(reference, what=f"{where}.function")
        name = str(spec.get("name") or f"target_{index}")
        weight = spec.get("weight", 1.0)
        # a negative weight would reward a worse fit to that target: the total is minimised
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 <= weight < math.inf:
            raise ContractError(f"{where}.weight: expected a finite number >= 0, got {weight!r}")
        parsed.append(Target(name, reference, function, target_options(spec), float(weight)))
    if not any(
        t.weight for t in parsed
    ):  # a weight-0 target is recorded only: the total would be 0 everywhere
        raise ContractError(
            "calibration.targets: every weight is 0; at least one target needs a weight > 0 (a target of weight 0 "
            "is recorded in the trials table but not part of the loss)"
        )
    names = [t.name for t in parsed]
    if len(set(names)) != len(names):
        raise ContractError(f"calibration.targets: names must differ (column loss_<name>), got {names}")
    for index, target in enumerate(parsed):  # a misspelt or missing option fails now, not after round 0
        check_options(target.function, target.options, f"calibration.targets[{index}]", target.reference)
    return parsed


def reject_trial_columns(bounds: Sequence[Bound], targets: Sequence[Target]) -> None:
    """Calibrated parameters must not share a name with a column of the trials table (``loss_<target>`` too)."""
    taken = {*TRIAL_COLUMNS, *(f"loss_{t.name}" for t in targets)}
    clash = [b.name for b in bounds if b.name in taken]
    if clash:
        raise ContractError(
            f"calibration.parameters: {clash} would share a column of the trials table with the calibration's own "
            f"(taken: {sorted(taken)}); rename the parameter in the model and the config"
        )


def check_observed_columns(
    observed: pd.DataFrame, targets: list[Target], source: str = "observed data"
) -> None:
    """Targets that name their columns (options ``column`` and ``on``) find them in the observed data; for the
    built-in targets the observed column also holds numbers (counts for a likelihood), one row per key."""
    for target in targets:
        counts = BUILT_IN_TARGETS.get(target.function)
        on = _on(target)
        missing = [c for c in _named_columns(target) if c not in observed.columns]
        if missing:
            raise ContractError(
                f"calibration target {target.name!r}: {source} have no column(s) {missing}; they have "
                f"{list(observed.columns)}"
            )
        if counts is not None and "column" in target.options:
            try:
                if counts:  # dispersion and min_mean: a bad value would fail, or give NaN, after round 0
                    check_count_options(
                        **{k: target.options[k] for k in ("dispersion", "min_mean") if k in target.options}
                    )
                check_observed(observed, target.options["column"], on, counts)
            except ValueError as error:
                raise ContractError(f"calibration target {target.name!r}: {source}: {error}") from error


def _on(target: Target) -> Any:
    # "day": the built-ins' default
    return target.options.get("on", "day" if target.function in BUILT_IN_TARGETS else [])


def _named_columns(target: Target) -> list[str]:
    """The columns a target names in its options ``column`` and ``on``."""
    on = _on(target)
    return ([target.options["column"]] if "column" in target.options else []) + (
        [on] if isinstance(on, str) else list(on)
    )


def check_simulated_columns(
    frame: pd.DataFrame, targets: Sequence[Target], model_ref: str, parameters: Collection[str] = ()
) -> bool:
    """Targets that name their columns (options ``column`` and ``on``) find them in the rows of the simulations
    that succeeded in ``frame`` (one batch: a typo stops the calibration after its first batch, not after a
    round); False when nothing can be checked yet: no simulation of ``frame`` succeeded, or every one that did
    returned an empty table ("no events" is an output, and its row holds no output column to check)."""
    if "status" not in frame or not (frame["status"] == "ok").any():
        return False
    outputs = [c for c in frame.columns if c not in (*KEY_COLUMNS, *STATUS_COLUMNS, *parameters)]
    if frame.loc[frame["status"] == "ok", outputs].isna().all(axis=None):
        return False
    for target in targets:
        missing = [c for c in _named_columns(target) if c not in frame.columns]
        if missing:
            raise ContractError(
                f"calibration target {target.name!r} (calibration.targets, options column and on): the rows model "
                f"{model_ref} returned have no column(s) {missing}; they have {outputs}"
            )
    return True


def losses_for(frames: list[pd.DataFrame], observed: pd.DataFrame, targets: list[Target]) -> pd.DataFrame:
    """One row per param_id: each target's loss, the weighted total, and replicate counts."""
    if not frames:
        return pd.DataFrame(columns=["param_id", "loss", "replicates_ok", "replicates_failed"])
    sims = pd.concat(frames, ignore_index=True)
    rows = []
    for pid, group in sims.groupby("param_id", sort=False):
        ok = group[group["status"] == "ok"]
        replicate_status = group.drop_duplicates("replicate")["status"]
        row: dict[str, Any] = {
            "param_id": pid,
            "replicates_ok": int((replicate_status == "ok").sum()),
            "replicates_failed": int((replicate_status != "ok").sum()),
        }
        total = 0.0
        for target in targets:
            try:
                value = float(target.function(ok, observed, **target.options)) if len(ok) else float("nan")
            except Exception as error:
                raise ContractError(
                    f"calibration target {target.name!r} ({target.reference}) failed on parameter set {pid}: "
                    f"{type(error).__name__}: {error}"
                ) from error
            row[f"loss_{target.name}"] = value
            if target.weight:  # a weight-0 target is recorded, not scored: 0 x inf or 0 x NaN would be NaN
                total += target.weight * value
        row["loss"] = total if math.isfinite(total) else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)
