"""Why a sweep stops early: too many failed simulations, a cancel, no worker, with messages naming the
simulations at fault. Split from ``simcal.runner``, from which every public name here is still importable."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from simcal.store import PartStore

log = logging.getLogger("simcal.runner")  # the records keep the name they had in simcal.runner


class TooManyFailures(RuntimeError):
    """More simulations failed than the configured threshold allows (or every simulation of the probe did)."""


class Cancelled(RuntimeError):
    """The run was cancelled (``Simulator.cancel``): its Dask tasks were cancelled and nothing more is submitted.
    Finished simulations stay in the parts, so a later run with the same plan resumes from them."""


class NoWorkers(RuntimeError):
    """No Dask worker has been connected for longer than ``no_worker_timeout_s`` while work was waiting."""


def describe_params(params: Mapping[str, Any], limit: int = 200) -> str:
    """A parameter set as messages name it, ``beta=0.3, gamma=0.1``, cut to ``limit`` characters."""
    text = ", ".join(f"{k}={v!r}" for k, v in params.items())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_failures(store: PartStore, max_failed_fraction: float, rerun: str | None = None) -> tuple[int, int]:
    """Raise TooManyFailures naming the count, the most common errors and a failing parameter set when the
    threshold is exceeded. Its last sentence says what becomes of the finished simulations: by default that they
    are kept in the parts and a rerun skips them; ``rerun`` replaces it for a caller whose reruns are not that
    (the simulation service: a failed job is not run again from its parts)."""
    total, errors = store.status_counts()
    failed = sum(errors.values())
    if total and failed / total > max_failed_fraction:
        common = "; ".join(f"{count}x {text}" for text, count in errors.most_common(3))
        example = store.failures(limit=1)
        first = ""
        if example:
            task, error = example[0]
            first = f" First failure: param_id {task.param_id} replicate {task.replicate} ({describe_params(task.params)})."
        raise TooManyFailures(
            f"{failed} of {total} simulations failed ({failed / total:.1%} > max_failed_fraction "
            f"{max_failed_fraction:.1%}). Most common errors: {common}.{first} "
            + (
                rerun
                or f"Finished simulations are kept in {store.partial}; a rerun skips them (set "
                "simulation.rerun_failed to run the failed ones again)."
            )
        )
    if failed:
        log.warning(
            "%d of %d simulations failed (within max_failed_fraction %.1f%%)",
            failed,
            total,
            100 * max_failed_fraction,
        )
    return total, failed


def raise_if_cancelled(cancel: threading.Event | None, model_ref: str) -> None:
    """Raise ``Cancelled`` for ``model_ref``'s simulations once ``cancel`` is set (None: never)."""
    if cancel is not None and cancel.is_set():
        raise Cancelled(f"the simulations of {model_ref} were cancelled")
