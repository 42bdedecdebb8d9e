"""The simulations a sweep runs first: the timing probe on the workers and the batch size it chooses, and the
fail-fast probe that stops a sweep whose first simulations all failed. A base class of ``simcal.runner.Simulator``
(split from it), whose attributes these methods read: ``settings``, ``backend``, ``backend_options``, ``threads``,
``batch_size``, ``_client``, ``_seconds_per_simulation``, ``rerun`` and ``_unit``."""

from __future__ import annotations

import itertools
import logging
import math
from typing import TYPE_CHECKING

from simcal.sweep_failures import TooManyFailures, describe_params

if TYPE_CHECKING:
    from simcal.batch_execution import Execution, RunSummary, Unit
    from simcal.store import PartStore
    from simcal.tasks import SimTask

log = logging.getLogger("simcal.runner")  # the records keep the name they had in simcal.runner

PROBE_TASKS = 1000  # at most this many simulations in the timing probe (it stops after probe_seconds anyway)


class SweepProbe:
    """The probes of ``Simulator.run`` (see the module's docstring); not used on its own."""

    def _probe(
        self,
        execution: Execution,
        remaining: list[SimTask],
        store: PartStore,
        summary: RunSummary,
        fail_fast: bool,
    ) -> list[SimTask]:
        """Time simulations on the workers (one probe per worker thread, each stopping probe_seconds after its
        first simulation, whose one-time costs are not timed where others were), keep their results, and choose
        the batch size for the rest. Returns the simulations still to run."""
        probe_tasks = remaining[:PROBE_TASKS]
        spread = max(1, min(8, self._worker_threads(), len(probe_tasks)))
        chunk = math.ceil(len(probe_tasks) / spread)
        execution.run(
            [
                self._unit(probe_tasks[i : i + chunk], self.settings.probe_seconds)
                for i in range(0, len(probe_tasks), chunk)
            ]
        )
        probed = [t for t in probe_tasks if store.is_done(t)]
        remaining = [t for t in probe_tasks if not store.is_done(t)] + remaining[PROBE_TASKS:]
        if fail_fast and probed:
            probed, remaining = self._probe_another_set(execution, probed, remaining, store)
            self._stop_if_the_probe_failed(probed, remaining, store, "the timing probe")
        durations = [d for d in execution.probe_durations if d == d]  # NaN: crashed or timed out
        per_sim = sum(durations) / len(durations) if durations else math.inf
        if durations:
            self._seconds_per_simulation = per_sim
        log.info(
            "timing probe: %d simulations in %d task(s) on the workers, %.2g s per simulation",
            len(probed), math.ceil(len(probe_tasks) / chunk), per_sim,
        )  # fmt: skip
        if not remaining:  # the probe did all the work; the next run probes again
            summary.batch_size = execution.progress.batch_size = len(probed)
            return []
        self.batch_size = self._auto_batch_size(len(remaining))
        log.info("batch size %d for the other %d simulations", self.batch_size, len(remaining))
        return remaining

    def _auto_batch_size(self, simulations: int) -> int:
        """About ``target_task_seconds`` of work per task, and at least two tasks per worker thread (no idling at
        the end); one simulation per task when the probe timed none."""
        per_sim = self._seconds_per_simulation
        by_time = max(1, round(self.settings.target_task_seconds / max(per_sim, 1e-7))) if per_sim else 1
        by_spread = max(1, math.ceil(simulations / (2 * max(1, self._worker_threads()))))
        return min(by_time, by_spread, self.settings.max_batch_size)

    def _probe_another_set(
        self, execution: Execution, probed: list[SimTask], remaining: list[SimTask], store: PartStore
    ) -> tuple[list[SimTask], list[SimTask]]:
        """When every probed simulation failed but they all belong to one parameter set (one worker thread and a
        model slower than probe_seconds probe a single simulation), run the first simulation of another set too,
        so that the fail-fast rule can decide. Returns the probed and the remaining simulations."""
        if any(store.error_of(t) is None for t in probed):
            return probed, remaining
        sets_probed = {t.param_id for t in probed}
        another = next((t for t in remaining if t.param_id not in sets_probed), None)
        if len(sets_probed) >= 2 or another is None:
            return probed, remaining
        execution.run([self._unit([another], self.settings.probe_seconds)])
        if not store.is_done(another):  # cancelled: nothing more to learn here
            return probed, remaining
        return [*probed, another], [t for t in remaining if t is not another]

    def _run_first_batches(self, execution: Execution, units: list[Unit], store: PartStore) -> list[Unit]:
        """With a fixed batch size there is no timing probe: the batches holding the first simulation of the first
        two parameter sets run first, as a fail-fast probe (their timing is not used, the batches are the same).
        Returns the other batches."""
        if len(units) < 2:
            return units  # nothing would be saved by waiting
        first = units[0].tasks[0].param_id
        second = next((i for i, u in enumerate(units) if any(t.param_id != first for t in u.tasks)), 0)
        first_batches = [units[0]] if second == 0 else [units[0], units[second]]
        others = [u for u in units if all(u is not b for b in first_batches)]
        execution.run(first_batches)
        probed = [t for u in first_batches for t in u.tasks if store.is_done(t)]
        if probed:
            what = "the first batch" if len(first_batches) == 1 else "the first batches"
            waiting = [t for u in others for t in u.tasks]
            self._stop_if_the_probe_failed(probed, waiting, store, f"{what} (run first as a fail-fast probe)")
        return others

    def _stop_if_the_probe_failed(
        self, probed: list[SimTask], remaining: list[SimTask], store: PartStore, probe: str
    ) -> None:
        """The fail-fast rule: every simulation of the probe failed and they cover at least two parameter sets (or
        the only one planned)."""
        if self.settings.max_failed_fraction >= 1 or any(store.error_of(t) is None for t in probed):
            return
        sets_probed = {t.param_id for t in probed}
        sets_planned = {t.param_id for t in itertools.chain(probed, remaining)}
        if len(sets_probed) < min(2, len(sets_planned)):
            return  # one parameter set failing says little about the others
        examples = "; ".join(
            f"param_id {t.param_id} replicate {t.replicate} ({describe_params(t.params)}): {store.error_of(t)}"
            for t in probed[:3]
        )
        raise TooManyFailures(
            f"all {len(probed)} simulations of {probe} failed, so the other {len(remaining)} were not "
            f"started. First errors: {examples}. "
            + (self.rerun or f"Finished simulations are kept in {store.partial} for the rerun.")
        )

    def _worker_threads(self) -> int:
        client = self._client
        if client is not None:
            try:
                threads = sum(client.nthreads().values())
            except Exception:  # noqa: BLE001
                threads = 0
            if threads:
                return threads
        if self.backend == "slurm":
            options = self.backend_options
            jobs = (options.get("adaptive") or {}).get("maximum_jobs") or options.get("jobs") or 1
            return int(jobs) * int(options.get("processes", 1))
        return int(self.backend_options.get("workers") or self.threads)
