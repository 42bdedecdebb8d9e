"""What a request to the simulation service may ask for: the service's configuration (ServiceConfig), the
model references it allows, and a request checked and planned into a job (plan_request) or refused naming
the field (RequestRefused). Split from ``simcal.service.jobs``, from which every public name here is still
importable."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from simcal.contract import ContractError, check_model_signature, resolve_callable
from simcal.runner import planned_parameter_sets
from simcal.settings import SimulationSettings
from simcal.space import check_fixed, check_parameter_sets
from simcal.tasks import plan_tasks

# Simulation settings a request may set; the others belong to the service (progress, worker watchdog) or make no
# sense for a new job (rerun_failed). ``replicates`` comes from ``n_replicates``.
REQUEST_SETTINGS = (
    "seed", "common_random_numbers", "timeout_s", "allowed_failures", "batch_size", "target_task_seconds",
    "probe_seconds", "max_batch_size", "max_failed_fraction",
)  # fmt: skip


FN_REF = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z]\w*")


MODULE = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")


class RequestRefused(Exception):
    """A request the service will not run: HTTP ``status`` and a message naming the field and what was expected."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class ServiceConfig:
    state_dir: Path
    allow_models: tuple[str, ...] = ("simcal.models",)
    max_concurrent_jobs: int = (
        8  # a job thread mostly waits on the scheduler: more jobs than cores keep workers busy
    )
    max_job_attempts: int = 2
    max_simulations: int = 1_000_000
    sync_max_simulations: int = 1_000
    sync_timeout_s: float = 300.0
    progress_seconds: float = 1.0
    no_worker_timeout_s: float = 1800.0
    request_max_bytes: int = 16 << 20
    rate: float = 20.0
    burst: int = 100

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir)
        at_least_one = (
            "max_concurrent_jobs", "max_job_attempts", "max_simulations", "sync_max_simulations", "burst",
            "request_max_bytes",
        )  # fmt: skip
        for name in at_least_one:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"--{name.replace('_', '-')} {value!r}: expected an integer >= 1")
        for name in ("sync_timeout_s", "progress_seconds", "no_worker_timeout_s", "rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"--{name.replace('_', '-')} {value!r}: expected a number > 0")
        if not self.allow_models:  # a service that refuses every model is a mistake, not a configuration
            raise ValueError("--allow-models: expected at least one module prefix (e.g. simcal.models)")
        for prefix in self.allow_models:
            if not MODULE.fullmatch(prefix):
                raise ValueError(f"--allow-models: {prefix!r} is not a module name (e.g. simcal.models)")


@dataclass
class PlannedJob:
    fn_ref: str
    parameter_sets: list[dict[str, Any]]
    n_replicates: int
    settings: dict[str, Any]
    fixed: dict[str, Any]
    simulations: int
    request: dict[str, Any] = field(default_factory=dict)


def _allowed(module: str, prefixes: Sequence[str]) -> bool:
    return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)


def check_fn_ref(fn_ref: Any, prefixes: Sequence[str]) -> None:
    """Refuse a malformed reference, one outside the allowed module prefixes (before anything is imported), one
    that resolves to a function defined elsewhere (a name a model module imported), and one that cannot be called
    as ``model(params, seed)``."""
    if not isinstance(fn_ref, str) or not FN_REF.fullmatch(fn_ref):
        raise RequestRefused(422, f"fn_ref {fn_ref!r}: expected 'package.module:function'")
    module = fn_ref.split(":", 1)[0]
    if not _allowed(module, prefixes):
        raise RequestRefused(
            403,
            f"fn_ref {fn_ref!r} is not allowed: this service runs only models under {', '.join(prefixes)} "
            "(its --allow-models)",
        )
    try:
        function = resolve_callable(fn_ref, what="fn_ref")
    except ContractError as error:
        raise RequestRefused(422, f"fn_ref {fn_ref!r}: {error}") from error
    defined_in = getattr(function, "__module__", None) or "an unknown module"
    if not _allowed(defined_in, prefixes):
        raise RequestRefused(
            403,
            f"fn_ref {fn_ref!r} is not allowed: it is defined in {defined_in}, not under {', '.join(prefixes)}",
        )
    try:  # as the sweep checks its model: before the job is accepted, not as a failure once it runs
        check_model_signature(function, fn_ref)
    except ContractError as error:
        raise RequestRefused(422, f"fn_ref {fn_ref!r}: {error}") from error


def plan_request(body: Mapping[str, Any], config: ServiceConfig, sync: bool = False) -> PlannedJob:
    """Check a request completely before it is accepted; raises RequestRefused naming the field."""
    if body.get("bundle_ref") is not None:
        raise RequestRefused(
            422,
            "bundle_ref is not supported by this service: the model must be importable on its workers "
            "(installed in the image); leave bundle_ref out",
        )
    if body.get("targets") is not None:
        raise RequestRefused(
            422,
            "targets are not computed by this service: fetch the results and compute losses where the observed "
            "data are (simcal.calibrate.losses_for, or calibration.backend.kind: service); leave targets out",
        )
    fn_ref = body.get("fn_ref")
    check_fn_ref(fn_ref, config.allow_models)
    settings = _object(body, "settings")
    unknown = sorted(set(settings) - set(REQUEST_SETTINGS))
    if unknown:
        raise RequestRefused(
            422, f"settings {unknown} cannot be set in a request; allowed: {list(REQUEST_SETTINGS)}"
        )
    replicates = body.get("n_replicates", 1)
    try:
        simulation = SimulationSettings.from_config({**settings, "replicates": replicates})
    except (ContractError, TypeError) as error:
        raise RequestRefused(422, f"settings / n_replicates: {error}") from error
    sets = body.get("parameter_sets")
    if not isinstance(sets, list) or not sets or not all(isinstance(s, Mapping) for s in sets):
        raise RequestRefused(422, "parameter_sets: expected a non-empty list of {name: value} objects")
    names = set(sets[0])
    if not names:  # every set is then empty: the parameter table they make has no columns
        raise RequestRefused(
            422,
            "parameter_sets[0]: an empty parameter set; every parameter set needs at least one {name: value} "
            "(for replicates of one set of values, send it as parameter_sets: [{...}] with n_replicates)",
        )
    for index, params in enumerate(sets):  # named by its place in the request, not as a table's row
        if set(params) != names:
            raise RequestRefused(
                422,
                f"parameter_sets[{index}]: names {sorted(params)}, but parameter_sets[0] names {sorted(names)}; "
                "every parameter set needs the same names (a value shared by all goes in fixed)",
            )
    fixed = _object(body, "fixed")
    # A synchronous request is a job too: --max-simulations below --sync-max-simulations limits it as well.
    limit, per = config.max_simulations, "job"
    if sync and config.sync_max_simulations < limit:
        limit, per = config.sync_max_simulations, "synchronous request"
    # Counted before any table is built: an oversized request costs nothing more than its parsing.
    upper_bound = len(sets) * simulation.replicates
    if upper_bound > limit:
        raise RequestRefused(
            413,
            f"{len(sets)} parameter_sets x {simulation.replicates} n_replicates = {upper_bound} simulations; "
            f"this service takes at most {limit} per {per}"
            + ("; submit it as a job (POST /v1/simulate)" if per == "synchronous request" else ""),
        )
    try:
        # A bad value is named by its place in the request, not as a row of the table the sets become.
        planned = planned_parameter_sets(
            pd.DataFrame(sets), fixed, where="request", row_name=lambda index: f"parameter_sets[{index}]"
        )
        check_fixed(fn_ref, fixed, "fixed")
        check_parameter_sets(
            fn_ref, planned, "parameter_sets", [f"parameter_sets[{i}]" for i in range(len(planned))]
        )
    except ContractError as error:
        raise RequestRefused(422, str(error)) from error
    simulations = len(
        plan_tasks(planned, simulation.replicates, simulation.seed, simulation.common_random_numbers)
    )
    request = {
        "fn_ref": fn_ref,
        "parameter_sets": [dict(s) for s in sets],
        "n_replicates": simulation.replicates,
        "settings": settings,
        "fixed": fixed,
    }
    return PlannedJob(
        fn_ref, request["parameter_sets"], simulation.replicates, settings, fixed, simulations, request
    )


def _object(body: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The request's field ``name``: a JSON object, or {} when left out or null."""
    value = body.get(name)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise RequestRefused(
            422,
            f"{name}: expected a JSON object of {{name: value}}, got {type(value).__name__} {value!r:.80}",
        )
    return dict(value)
