"""Where a calibration's next parameter sets come from: the design for round 0, then Optuna's sampler told
every loss. Split from ``simcal.calibrate``, from which every public name here is still importable."""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import optuna

from simcal.calibration_settings import CalibrationSettings
from simcal.contract import param_id
from simcal.design import Bound, Design

log = logging.getLogger("simcal.calibrate")  # the records keep the name they had in simcal.calibrate


def _distribution(bound: Bound) -> optuna.distributions.BaseDistribution:
    if bound.integer:
        return optuna.distributions.IntDistribution(int(bound.low), int(bound.high), log=bound.log)
    return optuna.distributions.FloatDistribution(bound.low, bound.high, log=bound.log)


# TPE splits the trials into good and bad by the rank of their loss only, so a failed set needs a loss that sorts
# after every finite one, including those told later: a finite penalty (say the worst loss so far plus a margin)
# can be overtaken, and Optuna cannot re-tell a finished trial. Optuna accepts +inf (it refuses only NaN).
FAILED_LOSS = math.inf


class Proposer:
    """Where the next parameter sets come from: the design for round 0, then the chosen sampler.

    Every loss is told to Optuna's study, the design points' too (as trials added to its history). TPE models only
    completed trials (FAIL ones are ignored), so a parameter set without a finite loss (all its replicates failed,
    or a target gave NaN) is told as completed with the loss +inf and the user attribute ``failed``: it ranks below
    every finite loss, told before or after it, and TPE learns to avoid the region where simulations fail. Only the
    sampler sees the penalty: the trials table keeps their loss NaN.
    """

    def __init__(self, bounds: list[Bound], settings: CalibrationSettings):
        self.bounds, self.settings = bounds, settings
        self.design = Design(bounds, settings.initial_design, settings.seed)
        if settings.sampler == "tpe":
            self.later = None
        elif settings.sampler == settings.initial_design:
            self.later = self.design  # one sequence: later rounds continue where the design stopped
        else:  # another design kind: its own stream, seeded apart from the first
            apart = int(np.random.SeedSequence([settings.seed, 1]).generate_state(1)[0])
            self.later = Design(bounds, settings.sampler, apart)
        sampler = optuna.samplers.TPESampler(
            seed=settings.seed, n_startup_trials=0, multivariate=True, constant_liar=True
        )
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.study = optuna.create_study(direction="minimize", sampler=sampler)
        self.distributions = {b.name: _distribution(b) for b in bounds}
        self.pending: dict[str, list] = {}

    def ask(self, round_index: int) -> tuple[str, list[dict[str, Any]]]:
        if round_index == 0:
            points = self.design.draw(self.settings.initial_points)
            return self.settings.initial_design, points.to_dict("records")
        count = self.settings.proposals_per_round
        if self.later is not None:
            if not self.later.balanced_block(count):
                log.info(
                    "sobol: %d points after %d drawn is not a balanced block (use powers of two, with "
                    "initial_points a multiple of proposals_per_round, for the best spread)",
                    count, self.later.drawn,
                )  # fmt: skip
            return self.settings.sampler, self.later.draw(count).to_dict("records")
        trials = [self.study.ask(self.distributions) for _ in range(count)]
        proposals = [dict(t.params) for t in trials]
        for trial, params in zip(trials, proposals, strict=True):
            self.pending.setdefault(param_id(params), []).append(trial)
        return "tpe", proposals

    def tell(self, params: dict[str, Any], loss: float) -> None:
        """The loss of one proposal. A parameter set the sampler proposed twice in a round is told once per
        proposal, so each tell completes one of its asked trials (not all of them, and then a further trial)."""
        key = param_id(params)
        asked = self.pending.get(key, [])
        trials = [asked.pop(0)] if asked else None
        if not asked:
            self.pending.pop(key, None)
        if math.isfinite(loss):
            self._tell(params, trials, loss)
        else:
            self._tell(params, trials, FAILED_LOSS, failed=True)

    def _tell(self, params: dict[str, Any], trials: list | None, value: float, failed: bool = False) -> None:
        complete = optuna.trial.TrialState.COMPLETE
        if trials:
            for trial in trials:
                if failed:
                    trial.set_user_attr("failed", True)
                self.study.tell(trial, value, state=complete)
        else:  # design points join the study's history so TPE learns from them
            self.study.add_trial(
                optuna.trial.create_trial(
                    params=params,
                    distributions=self.distributions,
                    value=value,
                    state=complete,
                    user_attrs={"failed": True} if failed else None,
                )
            )
