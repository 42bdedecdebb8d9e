"""How a calibration is configured: the calibrate section (sampler, design, rounds, refine) read and checked.
Split from ``simcal.calibrate``, from which every public name here is still importable."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from simcal.contract import ContractError, reject_unknown_keys
from simcal.runner import SimulationSettings
from simcal.tasks import check_plan_fits

SAMPLERS = ("tpe", "sobol", "lhs", "random")


WHERE = "calibration.calibrate"


RENAMED = {"batch_size": "proposals_per_round"}


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


@dataclass
class RefineSettings:
    """Re-simulate the ``top_k`` best parameter sets with ``replicates`` replicates (top_k 0: no refine step), then
    ``rounds`` rounds of local search at those replicates (simcal.local_search; 1 + 2 x parameters sets each), then
    ``scan`` parameter sets along the valley floor around the best (simcal.local_search.floor_scan; 0: none)."""

    top_k: int = 8
    replicates: int = 32
    rounds: int = 0
    scan: int = 0


@dataclass
class CalibrationSettings:
    initial_design: str = "sobol"
    initial_points: int = 32
    sampler: str = "tpe"
    rounds: int = 6
    proposals_per_round: int = 16
    seed: int = 1
    refine: RefineSettings = field(default_factory=RefineSettings)

    @classmethod
    def from_config(cls, options: Mapping[str, Any] | None) -> CalibrationSettings:
        if options is not None and not isinstance(options, Mapping):
            raise ContractError(f"{WHERE}: expected a mapping of settings, got {options!r}")
        options = dict(options or {})
        for old, new in RENAMED.items():
            if old in options:
                raise ContractError(
                    f"{WHERE}.{old} was renamed {new} (the number of parameter sets proposed in each round after "
                    f"the design); rename the key in your config"
                )
        reject_unknown_keys(options, {f.name for f in fields(cls)}, WHERE)
        refine = options.pop("refine", None)
        refine = {} if refine is None else refine
        if not isinstance(refine, Mapping):  # refine: false would otherwise mean the defaults, refine on
            raise ContractError(
                f"{WHERE}.refine: expected {{top_k, replicates, rounds, scan}} (top_k: 0 turns the step off), got "
                f"{refine!r}"
            )
        reject_unknown_keys(refine, {f.name for f in fields(RefineSettings)}, f"{WHERE}.refine")
        settings = cls(**options, refine=RefineSettings(**refine))
        settings.check()
        return settings

    def check(self) -> None:
        def need(ok: bool, key: str, value: Any, expected: str) -> None:
            if not ok:
                raise ContractError(f"{WHERE}.{key} must be {expected}, got {value!r}")

        need(self.initial_design in ("sobol", "lhs", "random"), "initial_design", self.initial_design,
             "one of ['sobol', 'lhs', 'random']")  # fmt: skip
        need(self.sampler in SAMPLERS, "sampler", self.sampler, f"one of {list(SAMPLERS)}")
        for key in ("initial_points", "proposals_per_round"):
            value = getattr(self, key)
            need(_is_int(value) and value >= 1, key, value, "an integer >= 1")
        need(_is_int(self.rounds) and self.rounds >= 0, "rounds", self.rounds, "an integer >= 0")
        need(_is_int(self.seed) and 0 <= self.seed < 2**32, "seed", self.seed, "an integer in [0, 2**32 - 1]")
        top_k, replicates = self.refine.top_k, self.refine.replicates
        need(_is_int(top_k) and top_k >= 0, "refine.top_k", top_k, "an integer >= 0 (0: no refine step)")
        # >= 2 whether or not the step runs, as the schema says: it must exceed simulation.replicates (>= 1)
        need(_is_int(replicates) and replicates >= 2, "refine.replicates", replicates, "an integer >= 2")
        local = self.refine.rounds
        need(_is_int(local) and local >= 0, "refine.rounds", local, "an integer >= 0 (0: no local search)")
        need(
            not local or top_k,
            "refine.rounds",
            local,
            "0 when refine.top_k is 0 (the search starts from them)",
        )
        scan = self.refine.scan
        need(_is_int(scan) and scan >= 0, "refine.scan", scan, "an integer >= 0 (0: no floor scan)")
        need(not scan or top_k, "refine.scan", scan, "0 when refine.top_k is 0 (the scan starts from them)")


def check_refine_replicates(settings: CalibrationSettings, simulation: SimulationSettings) -> None:
    """The refine step's replicates exceed the rounds' (``simulation.replicates``), or it would add nothing: checked
    by ``calibrate`` and, while the workflow is parsed, by the calibration module (before the sweep's jobs run)."""
    refine = settings.refine
    if refine.top_k and refine.replicates <= simulation.replicates:
        raise ContractError(
            f"{WHERE}.refine.replicates ({refine.replicates}) must exceed simulation.replicates "
            f"({simulation.replicates}) for the refine step to add anything (or set refine.top_k: 0)"
        )


def check_round_plans(settings: CalibrationSettings, simulation: SimulationSettings) -> None:
    """The largest round (the design's initial_points or proposals_per_round, x simulation.replicates) and the
    refine step (refine.top_k x refine.replicates) fit in memory as plans (``tasks.check_plan_fits``): checked by
    ``calibrate`` before its cluster starts, not when the round comes, hours in."""
    largest = max(settings.initial_points, settings.proposals_per_round)
    check_plan_fits(largest, simulation.replicates, "simulation.replicates")
    if settings.refine.top_k:
        check_plan_fits(settings.refine.top_k, settings.refine.replicates, f"{WHERE}.refine.replicates")
