"""A calibration's targets and losses: the targets parsed and checked against the observed data, and the loss
of every parameter set. Split from ``simcal.calibrate``, from which every public name here is still
importable."""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from simcal.contract import (
    ContractError,
    check_options,
    resolve_callable,
    target_names_and_weights,
    target_options,
)
from simcal.design import Bound
from simcal.result_rows import KEY_COLUMNS, STATUS_COLUMNS
from simcal.targets import (
    check_count_options,
    check_observed,
    mean_replicate_mse,
    negbin_nll,
    poisson_nll,
    replicate_mean_mse,
    unmatched_keys,
)

log = logging.getLogger("simcal.calibrate")  # the records keep the name they had in simcal.calibrate

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
    resolved = []
    for index, spec in enumerate(targets):
        where = f"calibration.targets[{index}]"
        if not isinstance(spec, Mapping) or "function" not in spec:
            raise ContractError(f"{where}: expected {{function: 'module:function', ...}}, got {spec!r}")
        reference = spec["function"]
        resolved.append(
            (reference, resolve_callable(reference, what=f"{where}.function"), target_options(spec))
        )
    names, weights = target_names_and_weights(targets)
    parsed = [
        Target(name, reference, function, options, weight)
        for name, weight, (reference, function, options) in zip(names, weights, resolved, strict=True)
    ]
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
        _check_column_options(target, on)
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


def _check_column_options(target: Target, on: Any) -> None:
    """A target's options ``column`` (one name) and ``on`` (a name or a list of them, each once), or fail naming the
    target: a list as column was 'unhashable type: list', null as on 'NoneType object is not iterable', and
    on: [day, day] was taken."""
    where = f"calibration target {target.name!r}"
    column = target.options.get("column")
    if "column" in target.options and not (isinstance(column, str) and column):
        raise ContractError(
            f"{where}: option column must name one column (a non-empty string), got {column!r}"
        )
    names = [on] if isinstance(on, str) else on
    if not (isinstance(names, list | tuple) and all(isinstance(name, str) and name for name in names)):
        raise ContractError(
            f"{where}: option on must name a key column or a list of them (non-empty strings), got {on!r}"
        )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ContractError(f"{where}: option on names {repeated} more than once; give each key column once")


def _on(target: Target) -> Any:
    # "day": the built-ins' default
    return target.options.get("on", "day" if target.function in BUILT_IN_TARGETS else [])


def _named_columns(target: Target) -> list[str]:
    """The columns a target names in its options ``column`` and ``on``."""
    on = _on(target)
    return ([target.options["column"]] if "column" in target.options else []) + (
        [on] if isinstance(on, str) else list(on)
    )


def _outputs(rows: pd.DataFrame, parameters: Collection[str]) -> list[str]:
    """The columns of a model's ``rows`` that it returned: neither a key, a status nor a parameter."""
    return [c for c in rows.columns if c not in (*KEY_COLUMNS, *STATUS_COLUMNS, *parameters)]


class TargetColumns:
    """The columns the targets name (options ``column`` and ``on``), looked for in the model's rows (``add``, round
    by round: the rows a round ran and those read back from an earlier run's parts). A model declares no
    outputs, and may return a column for some parameter sets only (one present once an event happened): a set
    without it cannot be scored and gets the loss NaN (``losses_for``). A column that no set has returned by the end
    of a round whose simulations returned rows is refused (``refuse_unseen``): most often a typo, and no set could
    be scored on it. Rows of empty tables ("no events") hold no output column, and are not counted."""

    def __init__(self, targets: Sequence[Target], model_ref: str, parameters: Collection[str] = ()):
        self.targets, self.model_ref, self.parameters = targets, model_ref, set(parameters)
        self.named = {column for target in targets for column in _named_columns(target)}
        self.seen: set[str] = set()  # the named columns that held a value in a successful simulation's rows
        self.outputs: dict[str, None] = {}  # the output columns that did, in the order they came

    def add(self, frame: pd.DataFrame) -> bool:
        """Note the columns that hold a value in the rows of ``frame``'s successful simulations; True once every
        named column has (nothing is left to look for)."""
        if "status" in frame and not self.named <= self.seen:
            ok = frame[frame["status"] == "ok"]
            outputs = _outputs(ok, self.parameters)
            held = [c for c in outputs if ok[c].notna().any()]
            self.outputs.update(dict.fromkeys(held))
            self.seen.update(self.named.intersection(held))
        return self.named <= self.seen

    def refuse_unseen(self) -> None:
        """Raise for a target whose column no parameter set has returned (a value in it), once some set returned
        rows; before that (every simulation failed or returned an empty table) nothing can be told yet."""
        if not self.outputs:
            return
        for target in self.targets:
            missing = [c for c in _named_columns(target) if c not in self.seen]
            if missing:
                raise ContractError(
                    f"calibration target {target.name!r} (calibration.targets, options column and on): the rows "
                    f"model {self.model_ref} returned, for every parameter set so far, have no column(s) {missing}; "
                    f"they have {list(self.outputs)}"
                )


class ObservedKeys:
    """The observed keys (a built-in target's ``on``) that a round's simulated rows lack (``check``). The targets
    align on them: such a key is left out of an MSE without a word, and gives a count likelihood NaN. So a target
    warns of them once per calibration (not per parameter set), naming how many and the first few; and a round in
    which no observed key matches any simulated row, while none has in an earlier round, gets the refusal that
    ``check`` returns (every loss would be NaN or meaningless), which the calibration raises once the round's
    trials are kept."""

    SHOWN = 5  # keys named in a message

    def __init__(self, targets: Sequence[Target], observed: pd.DataFrame):
        self.targets = [t for t in targets if t.function in BUILT_IN_TARGETS and "column" in t.options]
        self.observed = observed
        self.told: set[str] = set()  # the targets warned of already
        self.matched: set[str] = set()  # the targets that have matched an observed key in some round

    def check(self, frames: list[pd.DataFrame]) -> str | None:
        """Warn of the observed keys the successful rows of ``frames`` lack; the refusal when none matches."""
        if not self.targets or not frames:
            return None
        sims = pd.concat(frames, ignore_index=True)
        ok = sims[sims["status"] == "ok"] if "status" in sims else sims
        for target in self.targets:
            on, column = _on(target), target.options["column"]
            keys = [on] if isinstance(on, str) else list(on)
            found = [
                (pid, unmatched_keys(rows, self.observed, column, on)) for pid, rows in ok.groupby("param_id")
            ]
            found = [(pid, result) for pid, result in found if result is not None]
            if not found:
                continue
            wanted = found[0][1][0]
            if not len(wanted):
                continue
            missing = np.logical_or.reduce([lacks for _, (_, lacks) in found])
            if all(lacks.all() for _, (_, lacks) in found):
                if target.name in self.matched:
                    continue
                simulated = ok[keys].dropna().drop_duplicates()
                return (
                    f"calibration target {target.name!r}: none of the {len(wanted)} observed keys ({_key_names(keys)}) "
                    f"matches a simulated row of the {len(found)} parameter set(s) of this round, so no loss means "
                    f"anything: observed {_shown(wanted, self.SHOWN)}; simulated "
                    f"{_shown(simulated.set_index(keys).index, self.SHOWN)}. The targets match rows on {keys}: the "
                    "observed data and the model's rows need the same values of the same type (numbers, not text)"
                )
            self.matched.add(target.name)
            if missing.any() and target.name not in self.told:
                self.told.add(target.name)
                sets = sum(bool(lacks.any()) for _, (_, lacks) in found)
                effect = (
                    "so those sets' loss is NaN (a count likelihood needs a simulated value at every observed key)"
                    if BUILT_IN_TARGETS[target.function]
                    else "so they are left out of those sets' loss"
                )
                log.warning(
                    "calibration target %r: %d of the %d observed keys (%s) have no simulated row in %d of the %d "
                    "parameter set(s) of this round, %s: %s (told once per calibration)",
                    target.name, int(missing.sum()), len(wanted), _key_names(keys), sets, len(found), effect,
                    _shown(wanted[missing], self.SHOWN),
                )  # fmt: skip
        return None


def _key_names(keys: list[str]) -> str:
    return keys[0] if len(keys) == 1 else ", ".join(keys)


def _shown(index: pd.Index, count: int) -> str:
    """The first ``count`` keys of ``index``, as values (tuples for several key columns)."""
    values = [_plain_key(v) for v in index[:count]]
    return ", ".join(map(repr, values)) + (f" ... ({len(index) - count} more)" if len(index) > count else "")


def _plain_key(value: Any) -> Any:
    if isinstance(value, tuple):
        return tuple(_plain_key(v) for v in value)
    return value.item() if isinstance(value, np.generic) else value


def _unscorable(ok: pd.DataFrame, target: Target, parameters: Collection[str]) -> list[str]:
    """The columns ``target`` names that a parameter set's successful rows ``ok`` hold no value in, when they hold
    some output: the set cannot be scored on them. Rows that are all empty tables ("no events", no output at all)
    are left to the target, as before, when the columns are there (NaN in every row)."""
    if not len(ok):  # no simulation succeeded: NaN as ever, nothing to warn of
        return []
    named = _named_columns(target)
    empty = [c for c in named if c not in ok.columns or not ok[c].notna().any()]
    if not empty or any(
        c not in ok.columns for c in named
    ):  # a column absent from every row: nothing to score
        return empty
    outputs = _outputs(ok, parameters)
    return empty if ok[outputs].notna().any(axis=None) else []


def losses_for(
    frames: list[pd.DataFrame],
    observed: pd.DataFrame,
    targets: list[Target],
    parameters: Collection[str] = (),
) -> pd.DataFrame:
    """One row per param_id: each target's loss, the weighted total, and replicate counts. A set whose successful
    rows hold no value in a column a target names, while they hold other outputs (the model returns the column for
    some sets only), gets that target's loss NaN, hence the loss NaN (told to the sampler as failed), with one
    warning per target and column naming the sets; ``parameters``: the columns of the rows that are no output."""
    if not frames:
        return pd.DataFrame(columns=["param_id", "loss", "replicates_ok", "replicates_failed"])
    sims = pd.concat(frames, ignore_index=True)
    rows = []
    unscored: dict[tuple[str, tuple[str, ...]], list[Any]] = {}  # (target, columns) -> the sets without them
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
            if missing := _unscorable(ok, target, parameters):
                unscored.setdefault((target.name, tuple(missing)), []).append(pid)
                value = float("nan")
            else:
                try:
                    value = (
                        float(target.function(ok, observed, **target.options)) if len(ok) else float("nan")
                    )
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
    for (name, columns), pids in unscored.items():
        log.warning(
            "calibration target %r: %d parameter set(s) returned no value in column(s) %s, so they cannot be scored "
            "on it: their loss is NaN (told to the sampler as failed): %s%s",
            name, len(pids), list(columns), ", ".join(map(str, pids[:10])), " ..." if len(pids) > 10 else "",
        )  # fmt: skip
    return pd.DataFrame(rows)
