"""The ``service`` backend: a sweep's or a calibration round's simulations run as a job of a simulation service.

``Simulator.run`` (``simcal.runner``) sends its remaining simulations here when ``backend: service``: their
parameter sets go to the service with the replicates and the seed settings, so the service plans the very same
(param_id, replicate, seed) and runs them with the same runner. Only the rows of the simulations asked for are
kept; they go into the local parts like any batch, job by job (a large sweep is sent as several jobs, each within
the simulations per job the service takes and with a request body within the bytes it reads: its
``--max-simulations`` and ``--request-max-bytes``, read from ``GET /v1/limits``), so resume,
the failure threshold and the final file are the local runner's. The service's URL and key come from the environment (``SIMCAL_SERVICE_URL``, ``SIMCAL_API_KEY``),
never from the config; options (``calibration.backend.service``): ``url`` (overrides the variable),
``poll_interval_s``, ``wait_timeout_s`` (per job). An interrupted driver (Ctrl-C, SIGTERM from Snakemake) cancels
its running jobs; the rows of the finished ones are in its parts.

A driver killed outright (SIGKILL, a lost node) cancels nothing: its jobs run on. Each job is sent with an
idempotency key derived from the output file and the job's request (``job_key``), and the jobs are cut from the
whole plan, not from what is left, so the rerun sends the very same requests: the service answers each with the
job still queued or running from the killed run, and the rerun waits for that job instead of running its
simulations again. A job of the same key that has ended (succeeded, failed or cancelled) is never reused: its rows
may predate a fix on the service, so the rerun sends the request again under the next key of a chain
(``job_key(..., after=job id)``), the same chain for every rerun.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import operator
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from simcal.contract import ContractError, is_whole_number, reject_unknown_keys
from simcal.tasks import SimTask
from simcal.worker import failure_rows

log = logging.getLogger(__name__)

WHERE = "calibration.backend.service"
OPTIONS = ("url", "poll_interval_s", "wait_timeout_s")
# A sweep goes as up to MAX_JOBS jobs (more where the service's --max-simulations needs them), JOBS_IN_FLIGHT at a
# time: each finished job's rows reach the local parts at once (what an interruption keeps), while the next job
# already keeps the service's workers busy.
MAX_JOBS = 10
MIN_JOB_SIMULATIONS = 100
JOBS_IN_FLIGHT = 2
# Each link of a job's key chain is one earlier run, killed, whose job then ended; far more than any rerun history,
# so that a service that answers every new key with an ended job stops the sweep instead of looping.
MAX_ENDED_JOBS = 100
# Settings the service's runner needs to plan and run the same simulations; max_failed_fraction is left to the
# local run (the service job must return every row, failed ones too).
FORWARDED = (
    "seed", "common_random_numbers", "timeout_s", "allowed_failures", "batch_size", "target_task_seconds",
    "probe_seconds", "max_batch_size",
)  # fmt: skip


class ServiceLimits(NamedTuple):
    """What a job of the service may hold (``GET /v1/limits``); None where the service gave no usable number."""

    max_simulations: int | None = None
    request_max_bytes: int | None = None


NO_LIMITS = ServiceLimits()  # told, but none usable (a 413 is then not put down to an old service)


class RequestSize:
    """The bytes of a job's request body (``simcal.service.client.request_body``) from its parts: the body without
    parameter sets, plus each set's JSON and a comma between two, so that a sweep's cut adds sizes instead of
    encoding every candidate job again."""

    def __init__(self, model_ref: str, settings: Any):
        self.model_ref, self.settings = model_ref, request_settings(settings)
        self._empty: dict[int, int] = {}

    def empty(self, replicates: int) -> int:
        """The body of a job of no parameter set and ``replicates`` replicates."""
        from simcal.service.client import request_body

        if replicates not in self._empty:
            self._empty[replicates] = len(request_body(self.model_ref, [], replicates, self.settings))
        return self._empty[replicates]

    def of_set(self, params: dict[str, Any], where: str = "parameter set") -> int:
        """One parameter set's JSON; a ValueError naming ``where`` for a value JSON cannot carry."""
        from simcal.service.client import json_bytes, json_values

        return len(json_bytes(json_values(params, where)))

    def of_sets(self, sets: dict[str, dict[str, Any]]) -> dict[str, int]:
        """``of_set`` of each set (``{param_id: params}``), a ValueError naming its param_id for a value JSON cannot
        carry. Sets that share their names and hold plain values (a sweep's, as ``plan_tasks`` gives them) are
        weighed column by column from each value's JSON text, without encoding a set; any other goes set by set."""
        by_columns = _json_sizes_by_columns(list(sets.values()))
        if by_columns is not None:
            return dict(zip(sets, by_columns, strict=True))
        return {
            param_id: self.of_set(params, f"parameter set param_id={param_id}")
            for param_id, params in sets.items()
        }

    def of_job(self, tasks: Sequence[SimTask]) -> int:
        """The body ``send_tasks`` sends for ``tasks``."""
        sets = {task.param_id: task.params for task in tasks}
        replicates = max(task.replicate for task in tasks) + 1
        return self.empty(replicates) + sum(self.of_set(params) for params in sets.values()) + len(sets) - 1


# The JSON text of a value of each plain type but text, as the client's encoder writes it: ASCII, so its length is
# its bytes. A float only where finite, as the encoder refuses the others (json_values names them).
_ASCII_JSON: dict[type, Callable[[Any], str]] = {
    float: float.__repr__,
    int: int.__repr__,
    bool: lambda value: "true" if value else "false",
    type(None): lambda value: "null",
}
_encode_string = json.encoder.encode_basestring  # the client's encoder's, ensure_ascii=False


def _json_size(value: Any) -> int:
    """The bytes of a plain value's JSON text; text is sent as UTF-8."""
    if type(value) is str:
        return len(_encode_string(value).encode())
    return len(_ASCII_JSON[type(value)](value))


def _json_sizes_by_columns(sets: list[dict[str, Any]]) -> list[int] | None:
    """The bytes of each set's compact JSON (``json_bytes``), or None unless every set is a dict of the same
    names (text) holding values of a plain type, floats finite: the caller then weighs each set as it is
    encoded, which also names a value JSON cannot carry."""
    if not sets or type(sets[0]) is not dict or not sets[0]:
        return None
    names = sets[0].keys()
    if any(type(name) is not str for name in names):
        return None
    if not all(type(params) is dict and params.keys() == names for params in sets):
        return None
    # "{" and "}", a comma between two values, and each name's JSON text and colon
    sizes = np.full(len(sets), 1 + len(names) + sum(_json_size(name) + 1 for name in names), np.int64)
    for name in names:
        values = list(map(operator.itemgetter(name), sets))
        kinds = set(map(type, values))
        if not kinds <= {*_ASCII_JSON, str} or (float in kinds and not _all_finite(values)):
            return None
        if kinds == {str}:
            lengths = map(len, map(str.encode, map(_encode_string, values)))
        elif len(kinds) == 1:
            lengths = map(len, map(_ASCII_JSON[kinds.pop()], values))
        else:
            lengths = map(_json_size, values)
        sizes += np.fromiter(lengths, np.int64, len(values))
    return sizes.tolist()


def _all_finite(values: list[Any]) -> bool:
    return bool(np.isfinite(np.array([value for value in values if type(value) is float], np.float64)).all())


class ServiceJobFailed(RuntimeError):
    """The service's job ended failed or cancelled; the message names the job and its error."""


def request_settings(settings: Any) -> dict[str, Any]:
    forwarded = {key: getattr(settings, key) for key in FORWARDED if getattr(settings, key) is not None}
    return {**forwarded, "max_failed_fraction": 1.0}


def run_on_service(
    simulator: Any,
    planned: Sequence[SimTask],
    remaining: Sequence[SimTask],
    progress: Any,
    record: Callable[[Sequence[SimTask], pd.DataFrame], None],
    output: str | None = None,
) -> None:
    """Run ``remaining`` (of the run's ``planned`` simulations) as jobs of the service, handing each job's rows (a
    row per simulation at least) to ``record`` as soon as that job has finished.

    A large sweep goes as several jobs (``service_chunks`` of the whole plan and the service's simulations per job,
    so that a rerun cuts the same jobs), at most ``JOBS_IN_FLIGHT`` at a time, so an interrupted or failed run has
    recorded every finished job's rows in its parts and the rerun sends only the rest; the jobs still running are
    cancelled. ``output`` (the sweep's
    file) scopes the jobs' idempotency keys (see the module's docstring); without it each job gets a fresh key.
    """
    from simcal.service.client import SimulationClient

    options = checked_options(simulator.backend_options)
    left = {task.key for task in remaining}
    running: list[tuple[Any, list[SimTask]]] = []

    def between_polls() -> None:
        simulator.check_cancelled()
        progress.report()

    with SimulationClient(options.get("url")) as client:
        limits = job_limits(client)
        per_job, max_bytes = limits or ServiceLimits()
        chunks = service_chunks(
            planned, per_job, f"the simulation service {client.url}",
            max_bytes=max_bytes, size=RequestSize(simulator.model_ref, simulator.settings),
        )  # fmt: skip
        if limits is not None and len(chunks) > 1:
            log.info(
                "the simulation service %s takes at most %s simulations and %s bytes per job: the sweep goes as "
                "%d jobs",
                client.url, limits.max_simulations, limits.request_max_bytes, len(chunks),
            )  # fmt: skip
        pending = [kept for chunk in chunks if (kept := [t for t in chunk if t.key in left])]
        try:
            while pending or running:
                while pending and len(running) < JOBS_IN_FLIGHT:
                    chunk = pending.pop(0)
                    job = send_tasks(client, simulator.model_ref, chunk, simulator.settings, output, limits)
                    running.append((job, chunk))
                    progress.dashboard = f"{client.url}/v1/jobs/{job.id}"
                    progress.submitted()
                job, chunk = running[0]
                rows = finish_job(job, chunk, options, between_polls)
                running.pop(0)
                record(chunk, rows)
        except BaseException:
            for job, _ in running:
                with contextlib.suppress(Exception):
                    job.cancel()
            raise


def job_limits(client: Any) -> ServiceLimits | None:
    """What a job of the service may hold: simulations (its ``--max-simulations``) and request bytes (its
    ``--request-max-bytes``); None from a service too old to say (no ``GET /v1/limits``), whose 413 is then
    explained by ``too_large``."""
    from simcal.service.client import NotFound

    try:
        told = client.limits()
    except NotFound:
        return None
    return ServiceLimits(
        *(value if is_whole_number(value := told.get(name), 1) else None for name in ServiceLimits._fields)
    )


def service_chunks(
    tasks: Sequence[SimTask],
    max_simulations: int | None = None,
    service: str = "the simulation service",
    fewer_replicates: str = "lower simulation.replicates to {limit} or fewer",
    max_bytes: int | None = None,
    size: RequestSize | None = None,
) -> list[list[SimTask]]:
    """``tasks`` as one part per ``MIN_JOB_SIMULATIONS`` simulations (at most ``MAX_JOBS``, at most one per
    parameter set), each of whole parameter sets (a job asks for every replicate of its sets up to the highest
    one), in shares as even as the sets' sizes allow: 10 sets of 30 go as 120, 90 and 90. With
    ``max_simulations`` (the service's per job), as many more parts as it takes for each job to hold at most that
    many (sets x replicates, as the service counts); the same tasks and limit always give the same parts. A
    ContractError naming ``service`` when one parameter set's replicates alone are more, whose advice is
    ``fewer_replicates`` (``{limit}``: the limit, ``{highest}``: the highest replicate that fits; a sweep's by
    default, ``submit``'s from ``simcal.api``).

    With ``max_bytes`` (the service's request body limit) and ``size`` (the request's bytes), also as many parts
    as it takes for each job's request body to hold at most that many bytes: a ContractError naming the parameter
    set whose request alone is larger, and both sizes."""
    by_set: dict[str, list[SimTask]] = {}
    for task in tasks:
        by_set.setdefault(task.param_id, []).append(task)
    asked = {param_id: max(task.replicate for task in group) + 1 for param_id, group in by_set.items()}
    jobs = max(1, min(MAX_JOBS, len(tasks) // MIN_JOB_SIMULATIONS, len(by_set)))
    weighed = max_bytes is not None and size is not None and bool(by_set)
    if weighed:  # each set's JSON and the comma before it (none before a job's first set: see RequestSize)
        weights = size.of_sets({param_id: group[0].params for param_id, group in by_set.items()})
        set_bytes = {param_id: weight + 1 for param_id, weight in weights.items()}
        empty = {replicates: size.empty(replicates) for replicates in set(asked.values())}
        for param_id in by_set:
            alone = empty[asked[param_id]] + set_bytes[param_id] - 1
            if alone > max_bytes:
                raise ContractError(
                    f"{service} reads request bodies of at most {max_bytes} bytes (its --request-max-bytes), "
                    f"fewer than the {alone} bytes of a request of parameter set param_id={param_id} alone "
                    f"({set_bytes[param_id] - 1} bytes of them its values), and a job holds whole parameter sets: "
                    "start the service with a higher --request-max-bytes, or shorten that set's values; nothing "
                    "was sent"
                )
        room = max_bytes - empty[max(asked.values())] + 1
        jobs = min(len(by_set), max(jobs, math.ceil(sum(set_bytes.values()) / max(1, room))))
    if max_simulations is not None and asked:
        widest = max(asked.values())
        if widest > max_simulations:
            raise ContractError(
                f"{service} takes at most {max_simulations} simulations per job (its --max-simulations), fewer "
                f"than the {widest} replicates of one parameter set, and a job holds every replicate of its "
                f"sets: {fewer_replicates.format(limit=max_simulations, highest=max_simulations - 1)}, or start "
                "the service with a higher --max-simulations; nothing was sent"
            )
        jobs = min(len(by_set), max(jobs, math.ceil(sum(asked.values()) / max_simulations)))
    chunks: list[list[SimTask]] = [[]]
    done = sets = replicates = body = 0
    for param_id, group in by_set.items():
        wider = max(replicates, asked[param_id])
        over = max_simulations is not None and (sets + 1) * wider > max_simulations
        if weighed:
            over = over or empty[wider] + body + set_bytes[param_id] - 1 > max_bytes
        if chunks[-1] and (over or (len(chunks) < jobs and done >= len(tasks) * len(chunks) / jobs)):
            chunks.append([])
            sets, wider, body = 0, asked[param_id], 0
        chunks[-1].extend(group)
        done += len(group)
        sets, replicates = sets + 1, wider
        body += set_bytes[param_id] if weighed else 0
    return chunks


# Where the service's advice begins in its 413 for a body over --request-max-bytes (simcal.service.app.BodyLimit)
SERVICE_BODY_ADVICE = ": send the parameter sets as several jobs"


def too_large(
    url: str, tasks: Sequence[SimTask], limits: ServiceLimits | None, detail: Any, sweep: bool
) -> str:
    """What a 413 to one of the jobs of a sweep (``sweep``) or of submitted simulations means and what to do (the
    researcher cut none of these jobs); ``limits`` None: the service did not tell them. The service's own advice
    on an oversized body (send the sets as several jobs, values shared by all in ``fixed``) is for a client that
    builds its requests, and is left out: this backend cuts the jobs itself and sends no ``fixed`` (a sweep's fixed
    values are merged into every parameter set, and each submitted simulation carries its own)."""
    sets = len({task.param_id for task in tasks})
    replicates = max(task.replicate for task in tasks) + 1
    if isinstance(detail, str):
        detail = detail.partition(SERVICE_BODY_ADVICE)[0]
    whose, so = ("this sweep", "the sweep") if sweep else ("the submitted simulations",) * 2
    what = (
        f"it does not tell its limits (no GET /v1/limits: a simcal serve older than this client), so {so} "
        "could not be cut into jobs that fit: update the service, or start it with a higher limit than the one "
        "named"
        if limits is None
        else "start the service with a higher limit than the one named"
    )
    kept = " The rows of the jobs that had finished are kept for the rerun" if sweep else ""
    return (
        f"the simulation service {url} refused a job of {whose} ({sets} parameter set{'s' * (sets != 1)} x "
        f"{replicates} replicate{'s' * (replicates != 1)}) as too large: {detail}; {what}.{kept}"
    )


def checked_options(backend_options: Any) -> dict[str, Any]:
    """The options, checked before anything is sent (the workflow's schema checks them too, a script's
    ``backend_options`` only here): a bad value failed once a job was queued ('sleep length must be
    non-negative'), and ``poll_interval_s: 0`` was taken as 1 s."""
    options = dict(backend_options or {})
    reject_unknown_keys(options, OPTIONS, WHERE)
    url = options.get("url")
    if url is not None and not isinstance(url, str):
        raise ContractError(f"{WHERE}.url: expected a URL such as http://host:8000 or null, got {url!r}")
    for name in ("poll_interval_s", "wait_timeout_s"):
        value = options.get(name)
        if name in options and not (value is None and name == "wait_timeout_s"):
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
                raise ContractError(
                    f"{WHERE}.{name}: expected a number of seconds > 0"
                    + (" or null (no limit)" if name == "wait_timeout_s" else "")
                    + f", got {value!r}"
                )
    return options


def send_tasks(
    client: Any,
    model_ref: str,
    tasks: Sequence[SimTask],
    settings: Any,
    output: str | None = None,
    limits: ServiceLimits | None = NO_LIMITS,
    sweep: bool = True,
) -> Any:
    """Queue ``tasks`` as one job of the service (a ``simcal.service.client.Job``). With ``output`` (a sweep's
    file), take up instead the job still queued or running that an earlier run (killed) sent with the same key;
    without it (``submit``/``gather``) the job is always new. A 413 is a ContractError saying what it means for
    the jobs of a sweep (``sweep``) or of submitted simulations (``too_large``; ``limits``: what the service told
    of them, the jobs were cut by; None: it told nothing, having no ``GET /v1/limits``).

    The job asks for every parameter set of ``tasks`` x (their highest replicate + 1), with the seed settings, so
    the service plans the same (param_id, replicate, seed) as this side; ``rows_of`` keeps the ones asked for.
    """
    from simcal.service.client import FINAL, RequestRejected

    parameter_sets = list({task.param_id: task.params for task in tasks}.values())
    replicates = max(task.replicate for task in tasks) + 1
    request = (model_ref, parameter_sets, replicates, request_settings(settings))
    key = None if output is None else job_key(output, *request)
    ended = []
    while True:
        try:
            job = client.submit(*request, idempotency_key=key)
        except RequestRejected as error:
            if error.status != 413:
                raise
            raise ContractError(too_large(client.url, tasks, limits, error.detail, sweep)) from None
        if not (job.replayed and job.info.get("status") in FINAL):
            break
        ended.append(f"{job.id} ({job.info['status']})")
        if len(ended) >= MAX_ENDED_JOBS:
            raise ContractError(
                f"the simulation service {client.url} answered {len(ended)} new keys of one request in a row with "
                f"an ended job (last: {ended[-1]}); a service replays a job only for the key that made it, so this "
                "one is broken or shares its job registry with another; no new job was made"
            )
        key = job_key(output, *request, after=job.id)  # an ended job is never reused: the chain's next key
    if job.replayed:
        log.info(
            "the simulation service %s is still running job %s for these %d parameter sets x %d replicates, sent "
            "by an earlier run that was killed; waiting for it instead of sending them again",
            client.url, job.id, len(parameter_sets), replicates,
        )  # fmt: skip
    else:
        log.info(
            "sent %d parameter sets x %d replicates to the simulation service %s as job %s%s",
            len(parameter_sets), replicates, client.url, job.id,
            f" (earlier runs' jobs of this request, not reused: {', '.join(ended)})" if ended else "",
        )  # fmt: skip
    return job


def job_key(
    output: str, model_ref: str, parameter_sets: list, replicates: int, settings: dict, after: str = ""
) -> str:
    """The idempotency key of a job: a digest of the sweep's output file and the job's request (and, in a chain,
    of the ended job it follows), the same in every run that sends this request for this output."""
    request = [output, model_ref, parameter_sets, replicates, settings, after]
    digest = hashlib.sha256(json.dumps(request, sort_keys=True, default=repr).encode()).hexdigest()
    return f"simcal-job-{digest[:48]}"


def finish_job(
    job: Any, tasks: Sequence[SimTask], options: dict[str, Any], between_polls: Any = None
) -> pd.DataFrame:
    """Wait for ``job`` and return the rows of ``tasks``; ``between_polls`` runs after each status check.

    Raises ``ServiceJobFailed`` when the job ended failed or cancelled, ``TimeoutError`` after
    ``wait_timeout_s``; whatever ends the wait early (those, Ctrl-C, an error of ``between_polls``) cancels the job.
    """
    from simcal.service.client import FINAL, ended_unsuccessfully

    poll_s = float(options.get("poll_interval_s", 1.0))
    wait_timeout_s = options.get("wait_timeout_s")
    began = time.monotonic()
    try:
        while True:
            info = job.status()
            if info["status"] in FINAL:
                break
            if wait_timeout_s is not None and time.monotonic() - began > float(wait_timeout_s):
                raise TimeoutError(
                    f"service job {job.id} still {info['status']} after {WHERE}.wait_timeout_s = "
                    f"{wait_timeout_s} s ({info.get('progress')}); it was cancelled"
                )
            if between_polls is not None:
                between_polls()
            time.sleep(poll_s)
        if info["status"] != "succeeded":  # the status just read is final: no second request
            raise ServiceJobFailed(
                f"simulation service {job.client.url}: {ended_unsuccessfully(job.id, info)}"
            )
        frame = job.to_pandas()
    except BaseException:
        with contextlib.suppress(Exception):
            job.cancel()
        raise
    return rows_of(frame, tasks, job.id)


def rows_of(frame: pd.DataFrame, tasks: Sequence[SimTask], job_id: str) -> pd.DataFrame:
    """The rows of ``tasks`` among the job's; a task without rows gets a failure row saying so."""
    wanted = {task.key for task in tasks}
    keys = list(
        zip(frame["param_id"].tolist(), frame["replicate"].tolist(), frame["seed"].tolist(), strict=True)
    )
    if keys and not wanted.intersection(keys):
        raise ContractError(
            f"service job {job_id} planned other seeds than this run for the same parameter sets (different simcal "
            "versions on the two sides?); no row can be used"
        )
    kept = frame[[key in wanted for key in keys]].reset_index(drop=True)
    found = set(keys)
    missing = [task for task in tasks if task.key not in found]
    if missing:
        lost = failure_rows(missing, "failed", f"InternalError: service job {job_id} returned no rows for it")
        kept = pd.concat([kept, lost], ignore_index=True)
    return kept
