"""The plan of a sweep: every parameter set × replicate with its stable id and seed, and batches of it."""

from __future__ import annotations

import functools
import gc
import logging
import operator
import os
import socket
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

from simcal.contract import ContractError, canonical_param_sets, replicate_seeds
from wrapper_rules.memory import memory_limit

log = logging.getLogger(__name__)


class SimTask(NamedTuple):
    param_id: str
    replicate: int
    seed: int
    params: dict[str, Any]

    @property
    def key(self) -> tuple[str, int, int]:
        """What identifies a simulation's result: same parameters, replicate and seed give the same rows."""
        return self[:3]  # (param_id, replicate, seed), by a slice: this runs for every simulation, often


simulation_key = operator.itemgetter(0, 1, 2)  # SimTask.key as a C function, for maps over many tasks
_new_task = functools.partial(tuple.__new__, SimTask)  # SimTask(*fields) without its Python-level __new__
# plan_tasks calls its check between chunks of this many parameter sets (or simulations, with many replicates).
PLAN_CHUNK = 10_000
# What a planned simulation holds at the least (a SimTask with its seed and parameters: about 120 bytes measured,
# more with the manifest): a plan past the memory the process can have is refused before it is built.
PLAN_BYTES_PER_SIMULATION = 100


def check_plan_fits(
    parameter_sets: int, replicates: int, what: str = "simulation settings: replicates"
) -> None:
    """Refuse, naming ``what``, a plan of ``parameter_sets`` x ``replicates`` simulations whose tasks alone
    (PLAN_BYTES_PER_SIMULATION each) exceed the memory the process can have (``memory_limit``): replicates
    10**12 planned seeds for hours and then died of a MemoryError naming no setting."""
    simulations = parameter_sets * replicates
    need, limit = simulations * PLAN_BYTES_PER_SIMULATION, memory_limit()
    if limit is not None and need > limit:
        raise ContractError(
            f"{what} = {replicates} x {parameter_sets} parameter set(s) is {simulations} simulations, whose plan "
            f"alone holds about {need / 2**30:.3g} GiB ({PLAN_BYTES_PER_SIMULATION} bytes a simulation), more than "
            f"the {limit / 2**30:.3g} GiB this process can have (the machine's memory, its cgroup's limit or "
            "`ulimit -v`); give fewer replicates or parameter sets"
        )


def plan_tasks(
    param_sets: Iterable[Mapping[str, Any]],
    replicates: int,
    seed: int | None = None,
    common_random_numbers: bool = False,
    check: Callable[[], None] | None = None,
) -> list[SimTask]:
    """Every parameter set × replicate, with its stable id and seed. Duplicate parameter sets (the same param_id)
    are merged into the first, with one log line saying how many rows went into which param_id.

    ``seed`` and ``common_random_numbers`` choose how seeds derive (see ``contract.replicate_seed``). ``check``
    (e.g. a cancel check that raises) is called between chunks of ``PLAN_CHUNK`` parameter sets.
    """
    check = check or _no_check
    with collector_paused():
        param_sets = param_sets if isinstance(param_sets, list) else list(param_sets)
        identified: list[tuple[str, dict[str, Any]]] = []
        # The same ids chunk by chunk (canonical_param_sets).
        for start in range(0, len(param_sets), PLAN_CHUNK):
            check()
            identified.extend(canonical_param_sets(param_sets[start : start + PLAN_CHUNK]))
        sets = dict(identified)
        if len(sets) == len(identified):  # the usual case: no duplicates, the sets in their given order
            items = identified
        else:
            sets = {}
            for pid, plain in identified:
                sets.setdefault(pid, plain)  # a duplicate set keeps its first place
            _log_merged(identified, len(identified) - len(sets))
            items = list(sets.items())
        check_plan_fits(len(items), replicates)
        per_chunk = max(1, PLAN_CHUNK // max(1, replicates))
        tasks: list[SimTask] = []
        for start in range(0, len(items), per_chunk):  # a set's seeds depend on its param_id alone
            check()
            chunk = items[start : start + per_chunk]
            seeds = replicate_seeds([pid for pid, _ in chunk], range(replicates), seed, common_random_numbers)
            tasks += [
                _new_task((pid, rep, rep_seed, plain))
                for (pid, plain), set_seeds in zip(chunk, seeds, strict=True)
                for rep, rep_seed in enumerate(set_seeds)
            ]
    return tasks


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused (and restored as it was) while a plan is built. Planning allocates
    a few objects per simulation, none of them in a reference cycle, and the collections it would set off walk
    every object planned so far, again and again as the plan grows."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _no_check() -> None:
    pass


def _log_merged(identified: list[tuple[str, dict[str, Any]]], merged: int, shown: int = 5) -> None:
    """One line: how many rows were duplicates and which param_id each group was merged into."""
    repeated = [(pid, n) for pid, n in Counter(pid for pid, _ in identified).items() if n > 1]
    groups = ", ".join(f"param_id {pid} ({n} rows)" for pid, n in repeated[:shown])
    more = f", and {len(repeated) - shown} more" if len(repeated) > shown else ""
    log.info("%d duplicate parameter set(s) merged into the first of each: %s%s", merged, groups, more)


# Where the driver runs: a worker in this very process (threads of a LocalCluster without processes) must never
# be killed by the timeout watchdog.
DRIVER = (socket.gethostname(), os.getpid())


class Batch:
    """Simulations shipped as one opaque task argument.

    Dask walks lists, tuples and dicts in task arguments looking for keys; on thousands of small tuples that
    walk costs more than the simulations. An object of this class is passed through untouched. ``key`` names
    the batch in timeout events; ``driver`` is (host, pid) of the process that planned it; a non-empty
    ``start_topic`` asks the worker to confirm to the scheduler that it started the batch (for batches suspected
    of killing their worker, so a death can be blamed on the batch that was really running); ``isolated`` asks
    the worker to run the batch in a child process of its own (``simcal.isolate``).
    """

    __slots__ = ("_columns", "_tasks", "driver", "isolated", "key", "start_topic")

    def __init__(
        self,
        tasks: Sequence[SimTask],
        key: str = "",
        driver: tuple[str, int] | None = DRIVER,
        start_topic: str = "",
        isolated: bool = False,
    ):
        self._tasks: list[SimTask] | None = list(tasks)
        self._columns: tuple[list, list, list, list] | None = None
        self.key = key
        self.driver = driver
        self.start_topic = start_topic
        self.isolated = isolated

    @property
    def tasks(self) -> list[SimTask]:
        if self._tasks is None:
            self._tasks = list(map(_new_task, zip(*self.columns(), strict=True)))
        return self._tasks

    def columns(self) -> tuple[list[str], list[int], list[int], list[dict[str, Any]]]:
        """(param_ids, replicates, seeds, params) of the simulations, in order."""
        if self._columns is None:
            tasks = self._tasks or []
            self._columns = tuple(map(list, zip(*tasks, strict=True))) if tasks else ([], [], [], [])
        return self._columns

    def __len__(self) -> int:
        return len(self.columns()[0]) if self._tasks is None else len(self._tasks)

    def __reduce__(self):
        # Sent as four columns and used as such on the worker: pickling and rebuilding a named tuple per
        # simulation costs more than the cheapest simulations.
        return _rebuild_batch, (self.columns(), self.key, self.driver, self.start_topic, self.isolated)


def _rebuild_batch(
    columns, key: str, driver: tuple[str, int] | None, start_topic: str, isolated: bool = False
) -> Batch:
    batch = Batch((), key, None if driver is None else tuple(driver), start_topic, isolated)
    batch._tasks, batch._columns = None, tuple(columns)
    return batch
