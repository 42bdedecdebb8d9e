"""Jobs of the simulation service on a real Dask cluster: the same rows as the library, cancel, restarts, load.

The module starts one LocalCluster (two worker processes on 127.0.0.1) in the test process and a ``simcal serve``
subprocess connected to it with ``--scheduler``, as in a deployment next to a Dask scheduler. The test sees the
scheduler the service uses, runs the library path on the very same workers, and can kill the service (SIGKILL)
while the cluster lives on.
"""

from __future__ import annotations

import itertools
import logging
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import pandas as pd
import pytest
from distributed import Client
from simcal_calibration_models import BOUNDS, POISSON
from testkit import dask_client, wait_for

from simcal.calibrate import calibrate
from simcal.contract import ContractError
from simcal.models.sir import observe
from simcal.runner import read_results, simulate
from simcal.service.client import SimulationClient
from simcal.tasks import plan_tasks

SIR = "simcal.models.sir:simulate"
SLEEP = "simcal_models:counted_sleep"
KEYS = ["param_id", "replicate"]


@pytest.fixture(scope="module")
def count_file(tmp_path_factory) -> Path:
    """Every counted_sleep simulation appends a line here (the workers inherit the variable)."""
    path = tmp_path_factory.mktemp("count") / "executions.txt"
    path.touch()
    return path


@pytest.fixture(scope="module")
def client(count_file):
    previous = os.environ.get("SIMCAL_TEST_COUNT")
    os.environ["SIMCAL_TEST_COUNT"] = str(count_file)
    try:
        with dask_client(2) as connected:
            yield connected
    finally:
        if previous is None:
            os.environ.pop("SIMCAL_TEST_COUNT", None)
        else:
            os.environ["SIMCAL_TEST_COUNT"] = previous


@pytest.fixture(scope="module")
def service(client, service_factory):  # the cluster first: it must outlive the services
    return service_factory(
        "--scheduler", client.scheduler.address, "--allow-models", "simcal.models,simcal_models",
        "--max-concurrent-jobs", "4", "--rate", "1000", "--burst", "1000",
        keys=("alice", *[f"load-{i}" for i in range(20)]),
    )  # fmt: skip


@pytest.fixture
def remote(service, monkeypatch):
    """The environment a workflow sets for the ``service`` backend."""
    monkeypatch.setenv("SIMCAL_SERVICE_URL", service.url)
    monkeypatch.setenv("SIMCAL_API_KEY", service.keys["alice"])
    return {"poll_interval_s": 0.1}


def rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Comparable rows: sorted by simulation, without the timing column."""
    return frame.sort_values(KEYS, kind="stable").reset_index(drop=True).drop(columns="duration_s")


def executions(count_file: Path, low: float = float("-inf"), high: float = float("inf")) -> int:
    """counted_sleep simulations run so far with low <= a < high."""
    return sum(low <= float(line) < high for line in count_file.read_text().split())


def simcal_tasks(client: Client) -> dict[str, str]:
    """State of every runner batch the scheduler still knows (keys simcal-batch-*)."""

    def states(dask_scheduler):
        return {
            str(k): ts.state for k, ts in dask_scheduler.tasks.items() if str(k).startswith("simcal-batch-")
        }

    return client.run_on_scheduler(states)


# -- the same rows as the library -------------------------------------------------------------------------------------


def test_job_results_equal_the_simulate_wrappers_for_the_same_inputs(service, client, tmp_path, remote):
    table = pd.DataFrame({"beta": [0.2, 0.3, 0.45, 0.6], "gamma": [0.1, 0.1, 0.15, 0.2]})
    settings = {"seed": 11, "replicates": 3}
    fixed = {"days": 30}
    simulate(SIR, table, tmp_path / "library.parquet", settings, client=client, fixed_params=fixed)
    library = read_results(tmp_path / "library.parquet")

    with SimulationClient(service.url, service.keys["alice"]) as api:
        job = api.submit(SIR, table, n_replicates=3, settings={"seed": 11}, fixed=fixed)
        info = job.wait(timeout=120, poll_interval=0.1)
        assert info["progress"] == {"done": 12, "total": 12, "failed": 0}
        assert info["results_path"].endswith(f"{job.id}.parquet") and Path(info["results_path"]).is_file()
        job.to_parquet(tmp_path / "service.parquet")
    pd.testing.assert_frame_equal(rows(read_results(tmp_path / "service.parquet")), rows(library))

    # The simulate wrapper with backend: service writes the same file through its own PartStore.
    simulate(SIR, table, tmp_path / "backend.parquet", settings, backend="service", backend_options=remote,
             fixed_params=fixed)  # fmt: skip
    pd.testing.assert_frame_equal(rows(read_results(tmp_path / "backend.parquet")), rows(library))


def test_failure_rows_and_the_threshold_are_the_same_through_the_service_backend(
    service, client, tmp_path, remote
):
    from simcal.runner import TooManyFailures

    table = pd.DataFrame({"a": [-2.0, -1.0, 1.0, 2.0]})
    lenient = {"seed": 2, "replicates": 2, "max_failed_fraction": 0.5}
    simulate("simcal_models:fails_for_negative", table, tmp_path / "library.parquet", lenient, client=client)
    simulate("simcal_models:fails_for_negative", table, tmp_path / "backend.parquet", lenient, backend="service",
             backend_options=remote)  # fmt: skip
    library, backend = (
        rows(read_results(tmp_path / "library.parquet")),
        rows(read_results(tmp_path / "backend.parquet")),
    )
    pd.testing.assert_frame_equal(backend, library)
    assert (backend["status"] == "failed").sum() == 4
    with pytest.raises(
        TooManyFailures, match="4 of 8 simulations failed"
    ):  # the local threshold still applies
        simulate("simcal_models:fails_for_negative", table, tmp_path / "strict.parquet", {**lenient,
                 "max_failed_fraction": 0.0}, backend="service", backend_options=remote)  # fmt: skip


def test_a_sweep_through_the_service_backend_says_the_service_chose_its_batches(tmp_path, remote, caplog):
    """The driver never batches a service sweep (the service does): its last line says so, not "batch size 0"."""
    caplog.set_level(logging.INFO, logger="simcal.runner")
    table = pd.DataFrame({"beta": [0.2, 0.3], "gamma": [0.1, 0.1]})
    simulate(SIR, table, tmp_path / "out.parquet", {"seed": 1}, backend="service", backend_options=remote)
    (wrote,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("wrote ")]
    assert wrote.endswith("s, batches chosen by the service") and "batch size" not in wrote, wrote


def test_a_failed_jobs_error_says_what_a_rerun_is_for_a_job_and_names_no_path_on_the_server(service):
    """A job's error is read by its client: "finished simulations are kept in <the service's directory> for the
    rerun" would name a path on the server and a rerun that never comes. It says what resubmitting does."""
    from simcal.service.client import JobFailed
    from simcal.service.jobs import RERUN

    threshold = [{"a": -1.0}, {"a": 1.0}, {"a": 2.0}, {"a": 3.0}]
    with SimulationClient(service.url, service.keys["alice"]) as api:
        for model, sets, settings, words in (
            ("simcal_models:fails_for_negative", threshold, {"batch_size": 2, "max_failed_fraction": 0.2},
             "1 of 4 simulations failed"),
            ("simcal_models:always_fails", [{"a": 1.0}, {"a": 2.0}], {"max_failed_fraction": 0.5},
             "all 2 simulations of the timing probe failed"),
        ):  # fmt: skip
            job = api.submit(model, sets, settings=settings)
            with pytest.raises(JobFailed):
                job.wait(timeout=120, poll_interval=0.1)
            error = job.status()["error"]
            assert words in error and error.endswith(f". {RERUN}"), error
            assert ".partial" not in error and str(service.state_dir) not in error, error


def test_a_service_job_cancelled_on_the_service_fails_the_sweep_naming_the_job_and_keeps_no_output(
    service, tmp_path, remote
):
    """A job cancelled on the service's side (by another client, an operator) ends the waiting sweep with the
    service's address, the job's id and the service's reason, and finalizes no output."""
    from simcal.service.remote import ServiceJobFailed

    table = pd.DataFrame({"a": [2000.0 + i for i in range(20)], "sleep_s": 0.5})
    output = tmp_path / "backend.parquet"
    failed: list[BaseException] = []

    def sweep() -> None:
        try:
            simulate(SLEEP, table, output, {"batch_size": 1}, backend="service", backend_options=remote)
        except BaseException as error:  # handed to the test's thread
            failed.append(error)

    with SimulationClient(service.url, service.keys["alice"]) as api:
        before = {job["job_id"] for job in api.jobs(limit=1000)}
        waiting = threading.Thread(target=sweep)
        waiting.start()
        new = wait_for(
            lambda: [j for j in api.jobs(limit=1000) if j["job_id"] not in before], 60, "the sweep's job"
        )
        api.job(new[0]["job_id"]).cancel()
        waiting.join(60)
    assert not waiting.is_alive() and len(failed) == 1, failed
    assert isinstance(failed[0], ServiceJobFailed), failed
    assert str(failed[0]) == (
        f"simulation service {service.url}: job {new[0]['job_id']} cancelled: cancelled by request"
    ), failed
    assert not output.exists()


def test_calibration_through_the_service_backend_equals_the_local_one(service, client, tmp_path, remote):
    observed = observe({"beta": 0.3, "gamma": 0.1, "days": 30}, 7)
    bounds, targets = BOUNDS, POISSON
    settings = {
        "initial_points": 4,
        "rounds": 1,
        "proposals_per_round": 2,
        "refine": {"top_k": 2, "replicates": 3},
    }
    simulation = {"replicates": 2, "seed": 5}

    def run(where: Path, **backend) -> pd.DataFrame:
        where.mkdir()
        return calibrate(SIR, observed, bounds, targets, where / "sims.parquet", where / "trials.parquet", settings,
                         simulation, fixed_params={"days": 30}, **backend)  # fmt: skip

    local = run(tmp_path / "local", client=client)
    with SimulationClient(service.url, service.keys["alice"]) as api:
        jobs_before = len(api.jobs(limit=1000))
        remote_trials = run(tmp_path / "remote", backend="service", backend_options=remote)
        assert len(api.jobs(limit=1000)) == jobs_before + 3  # one job per round: design, search, refine
    pd.testing.assert_frame_equal(remote_trials, local)
    assert set(local["phase"]) == {"design", "search", "refine"}
    pd.testing.assert_frame_equal(
        rows(read_results(tmp_path / "remote" / "sims.parquet")),
        rows(read_results(tmp_path / "local" / "sims.parquet")),
    )


# -- cancel ---------------------------------------------------------------------------------------------------------


def test_a_large_sweep_goes_as_several_jobs_whose_rows_an_interruption_keeps(
    service, client, tmp_path, remote, count_file
):
    """300 simulations go as 3 jobs, 2 at a time. Interrupted once the first job's rows are in the parts, the rerun
    sends only what no finished job ran, and the output equals an uninterrupted sweep's."""
    from simcal.runner import Cancelled
    from simcal.service.remote import service_chunks
    from simcal.tasks import plan_tasks

    table = pd.DataFrame({"a": [1000.0 + i for i in range(300)], "sleep_s": 0.02})
    chunks = service_chunks(plan_tasks(table.to_dict("records"), 1))
    assert [len(c) for c in chunks] == [100, 100, 100]
    with SimulationClient(service.url, service.keys["alice"]) as api:
        jobs_before = {job["job_id"] for job in api.jobs(limit=1000)}

    output, cancel = tmp_path / "sweep.parquet", threading.Event()
    parts = tmp_path / "sweep.parquet.partial"

    def interrupt_after_the_first_job():
        wait_for(lambda: parts.is_dir() and any(parts.glob("[!.]*.parquet")), 60, "a part")
        cancel.set()

    watcher = threading.Thread(target=interrupt_after_the_first_job, daemon=True)
    watcher.start()
    settings = {"seed": 3}
    with pytest.raises(Cancelled):
        simulate(SLEEP, table, output, settings, backend="service", backend_options=remote, cancel=cancel)
    watcher.join()
    kept = len(read_results_of_parts(parts))
    assert kept in (100, 200)  # one or both of the first two jobs had finished
    before = settled_executions(client, count_file, 1000, 1300)  # cancelled jobs' running batches end first
    simulate(SLEEP, table, output, settings, backend="service", backend_options=remote)
    assert executions(count_file, 1000, 1300) - before <= 300 - kept  # the finished jobs were not sent again
    swept = read_results(output)
    assert len(swept) == 300 and (swept["status"] == "ok").all()
    settled_executions(client, count_file)  # nothing of this test runs on into the next one
    simulate(SLEEP, table, tmp_path / "library.parquet", settings, client=client)
    pd.testing.assert_frame_equal(rows(swept), rows(read_results(tmp_path / "library.parquet")))
    # Two jobs at a time, in both runs: a job is sent only after the service recorded an earlier one as finished.
    with SimulationClient(service.url, service.keys["alice"]) as api:
        sent = [job for job in api.jobs(limit=1000) if job["job_id"] not in jobs_before]
    assert 3 <= len(sent) <= 5, sent
    events = sorted([(job["submitted"], 1) for job in sent] + [(job["finished"], -1) for job in sent])
    assert max(itertools.accumulate(change for _, change in events)) == 2, events


@pytest.fixture(scope="module")
def small_jobs(client, service_factory):
    """A service on the same cluster that takes at most 40 simulations per job (fewer than a sweep's job of 100)."""
    return service_factory(
        "--scheduler", client.scheduler.address, "--allow-models", "simcal.models,simcal_models",
        "--max-simulations", "40", "--rate", "1000", "--burst", "1000",
    )  # fmt: skip


def test_a_sweep_is_cut_into_jobs_within_the_services_max_simulations(
    small_jobs, client, tmp_path, monkeypatch
):
    """100 sets x 3 replicates went as 3 jobs of about 100 simulations whatever the service's --max-simulations:
    one started with 40 answered each with 413, which the researcher could not act on. The client reads the
    service's limit and sends jobs that fit, still two at a time, with the same rows as the library."""
    from simcal.service.remote import service_chunks

    monkeypatch.setenv("SIMCAL_SERVICE_URL", small_jobs.url)
    monkeypatch.setenv("SIMCAL_API_KEY", small_jobs.keys["alice"])
    table = pd.DataFrame({"beta": [0.2 + i / 1000 for i in range(100)], "gamma": 0.1})
    settings, fixed = {"seed": 5, "replicates": 3}, {"days": 5}
    with SimulationClient(small_jobs.url, small_jobs.keys["alice"]) as api:
        before = {job["job_id"] for job in api.jobs(limit=1000)}
    simulate(SIR, table, tmp_path / "remote.parquet", settings, backend="service",
             backend_options={"poll_interval_s": 0.1}, fixed_params=fixed)  # fmt: skip
    simulate(SIR, table, tmp_path / "library.parquet", settings, client=client, fixed_params=fixed)
    pd.testing.assert_frame_equal(
        rows(read_results(tmp_path / "remote.parquet")), rows(read_results(tmp_path / "library.parquet"))
    )
    limits = {"max_simulations": 40, "sync_max_simulations": 40, "request_max_bytes": 16 << 20}
    with SimulationClient(small_jobs.url, small_jobs.keys["alice"]) as api:
        assert api.limits() == limits
        sent = api.jobs(limit=1000)
    # In the order sent (the list is newest first); only this sweep's (the module's other tests send none here).
    totals = [job["progress"]["total"] for job in reversed(sent) if job["job_id"] not in before]
    assert totals == [39, 36] * 4
    sent = [job for job in sent if job["job_id"] not in before]
    events = sorted([(job["submitted"], 1) for job in sent] + [(job["finished"], -1) for job in sent])
    assert max(itertools.accumulate(change for _, change in events)) <= 2, events
    # The same sweep and limit always cut the same jobs, whose keys derive from them: a killed sweep's rerun sends
    # the same requests.
    plan = plan_tasks(table.to_dict("records"), 3, seed=5)
    first, again = service_chunks(plan, 40), service_chunks(list(plan), 40)
    assert [[t.key for t in c] for c in first] == [[t.key for t in c] for c in again]
    assert [len(chunk) for chunk in first] == [39, 36] * 4


def test_a_gather_of_more_simulations_than_the_services_max_simulations_goes_as_jobs_that_fit(
    small_jobs, client, monkeypatch
):
    """submit/gather sent its queue as one job per model whatever the service's --max-simulations: 60 simulations
    to a service that takes 40 were a bare 413. The queue is cut as a sweep's, with a Dask backend's rows."""
    from simcal.api import SimulationService

    monkeypatch.setenv("SIMCAL_SERVICE_URL", small_jobs.url)
    monkeypatch.setenv("SIMCAL_API_KEY", small_jobs.keys["alice"])
    calls = [({"beta": 0.4 + i / 1000, "gamma": 0.1, "days": 5}, r) for i in range(30) for r in (0, 1)]
    settings = {"seed": 7}
    with SimulationClient(small_jobs.url, small_jobs.keys["alice"]) as api:
        before = {job["job_id"] for job in api.jobs(limit=1000)}
    with SimulationService(
        backend="service", backend_options={"poll_interval_s": 0.1}, settings=settings
    ) as http:
        served = http.gather([http.submit(SIR, params, replicate=r) for params, r in calls])
    with SimulationClient(small_jobs.url, small_jobs.keys["alice"]) as api:
        sent = [job for job in reversed(api.jobs(limit=1000)) if job["job_id"] not in before]
    assert [job["progress"]["total"] for job in sent] == [30, 30]
    with SimulationService(
        backend="scheduler", backend_options={"address": client.scheduler.address}, settings=settings
    ) as on_dask:
        direct = on_dask.gather([on_dask.submit(SIR, params, replicate=r) for params, r in calls])
    assert len(served[KEYS].drop_duplicates()) == 60  # every simulation's rows (a row per day of each)
    columns = [c for c in direct.columns if c not in ("duration_s", "pid")]
    pd.testing.assert_frame_equal(served[columns], direct[columns])


def test_a_submitted_replicate_at_or_above_the_services_max_simulations_is_refused_before_sending(
    small_jobs, monkeypatch
):
    """A job asks for every replicate up to the highest one submitted: replicate 40 of a set cannot fit in a job
    of 40. The gather is refused naming the limit (the service's 413 said nothing the user could act on)."""
    from simcal.api import SimulationService

    monkeypatch.setenv("SIMCAL_SERVICE_URL", small_jobs.url)
    monkeypatch.setenv("SIMCAL_API_KEY", small_jobs.keys["alice"])
    with SimulationClient(small_jobs.url, small_jobs.keys["alice"]) as api:
        before = len(api.jobs(limit=1000))
    with SimulationService(backend="service") as http:
        fits = http.submit(SIR, {"beta": 0.2, "gamma": 0.1}, replicate=39)
        too_high = http.submit(SIR, {"beta": 0.3, "gamma": 0.1}, replicate=40)
        with pytest.raises(ContractError) as refused:
            http.gather([fits, too_high])
        assert str(refused.value) == (
            f"the simulation service {small_jobs.url} takes at most 40 simulations per job (its --max-simulations), "
            "fewer than the 41 replicates of one parameter set, and a job holds every replicate of its sets: "
            "submit no replicate above 39, or start the service with a higher --max-simulations; nothing was sent"
        )
        with pytest.raises(ContractError, match="submit no replicate above 39"):
            fits.result()  # the model's queue goes as jobs cut together: none of it was sent
    with SimulationClient(small_jobs.url, small_jobs.keys["alice"]) as api:
        assert len(api.jobs(limit=1000)) == before


def test_a_parameter_set_with_more_replicates_than_the_services_max_simulations_is_refused_before_sending(
    small_jobs, tmp_path, monkeypatch
):
    """A job holds every replicate of its sets: 50 replicates cannot fit in a job of 40, whatever the cut."""
    monkeypatch.setenv("SIMCAL_SERVICE_URL", small_jobs.url)
    monkeypatch.setenv("SIMCAL_API_KEY", small_jobs.keys["alice"])
    with SimulationClient(small_jobs.url, small_jobs.keys["alice"]) as api:
        before = len(api.jobs(limit=1000))
    with pytest.raises(ContractError) as refused:
        simulate(SIR, pd.DataFrame({"beta": [0.2], "gamma": [0.1]}), tmp_path / "o.parquet",
                 {"seed": 1, "replicates": 50}, backend="service", backend_options={"poll_interval_s": 0.1})  # fmt: skip
    assert str(refused.value) == (
        f"the simulation service {small_jobs.url} takes at most 40 simulations per job (its --max-simulations), "
        "fewer than the 50 replicates of one parameter set, and a job holds every replicate of its sets: lower "
        "simulation.replicates to 40 or fewer, or start the service with a higher --max-simulations; nothing was "
        "sent"
    )
    with SimulationClient(small_jobs.url, small_jobs.keys["alice"]) as api:
        assert len(api.jobs(limit=1000)) == before


def test_a_413_from_a_service_that_does_not_tell_its_limits_is_explained(small_jobs, tmp_path, monkeypatch):
    """A service older than the client has no GET /v1/limits (404): the sweep is cut as before, and the 413 it then
    answers names the limit and what to do, not a bare RequestRejected."""
    from simcal.service.client import NotFound

    def no_limits(self):
        raise NotFound(f"GET {self.url}/v1/limits: 404 Not Found", 404, "Not Found")

    monkeypatch.setattr(SimulationClient, "limits", no_limits, raising=False)  # the old client had none
    monkeypatch.setenv("SIMCAL_SERVICE_URL", small_jobs.url)
    monkeypatch.setenv("SIMCAL_API_KEY", small_jobs.keys["alice"])
    table = pd.DataFrame({"beta": [0.3 + i / 1000 for i in range(100)], "gamma": 0.1})
    with pytest.raises(ContractError) as refused:
        simulate(SIR, table, tmp_path / "o.parquet", {"seed": 1, "replicates": 3}, backend="service",
                 backend_options={"poll_interval_s": 0.1}, fixed_params={"days": 5})  # fmt: skip
    assert str(refused.value) == (
        f"the simulation service {small_jobs.url} refused a job of this sweep (34 parameter sets x 3 replicates) "
        "as too large: 34 parameter_sets x 3 n_replicates = 102 simulations; this service takes at most 40 per "
        "job; it does not tell its limits (no GET /v1/limits: a simcal serve older than this client), so the "
        "sweep could not be cut into jobs that fit: update the service, or start it with a higher limit than the "
        "one named. The rows of the jobs that had finished are kept for the rerun"
    )


def test_a_413_to_a_gather_from_a_service_that_does_not_tell_its_limits_is_explained_as_a_sweeps(
    small_jobs, monkeypatch
):
    """submit/gather against a service without GET /v1/limits sends its queue as one job; the 413 that job gets was
    a bare RequestRejected, while a sweep's was explained: the same explanation now, for the submitted
    simulations."""
    from simcal.api import SimulationService
    from simcal.service.client import NotFound

    def no_limits(self):
        raise NotFound(f"GET {self.url}/v1/limits: 404 Not Found", 404, "Not Found")

    monkeypatch.setattr(SimulationClient, "limits", no_limits, raising=False)  # the old client had none
    monkeypatch.setenv("SIMCAL_SERVICE_URL", small_jobs.url)
    monkeypatch.setenv("SIMCAL_API_KEY", small_jobs.keys["alice"])
    with SimulationService(backend="service", settings={"seed": 7}) as http:
        futures = [http.submit(SIR, {"beta": 0.5 + i / 1000, "gamma": 0.1, "days": 5}) for i in range(60)]
        with pytest.raises(ContractError) as refused:
            http.gather(futures)
    assert str(refused.value) == (
        f"the simulation service {small_jobs.url} refused a job of the submitted simulations (60 parameter sets x "
        "1 replicate) as too large: 60 parameter_sets x 1 n_replicates = 60 simulations; this service takes at "
        "most 40 per job; it does not tell its limits (no GET /v1/limits: a simcal serve older than this "
        "client), so the submitted simulations could not be cut into jobs that fit: update the service, or start "
        "it with a higher limit than the one named."
    )


@pytest.fixture(scope="module")
def small_bodies(client, service_factory):
    """A service on the same cluster that reads request bodies of at most 2000 bytes (a job of 100 SIR parameter
    sets is about 4400)."""
    return service_factory(
        "--scheduler", client.scheduler.address, "--allow-models", "simcal.models,simcal_models",
        "--request-max-bytes", "2000", "--rate", "1000", "--burst", "1000",
    )  # fmt: skip


def test_a_sweep_is_cut_into_jobs_whose_request_bodies_fit_the_services_request_max_bytes(
    small_bodies, client, tmp_path, monkeypatch
):
    """100 sets x 2 replicates went as one job whatever the service's --request-max-bytes: its body of about 4400
    bytes got a 413, explained but not avoided. The client reads the limit and cuts jobs whose bodies fit, the same
    jobs for the same sweep and limits (their keys derive from them), with the library's rows."""
    from simcal.runner import planned_parameter_sets
    from simcal.service.client import request_body
    from simcal.service.remote import RequestSize, request_settings, service_chunks
    from simcal.settings import SimulationSettings

    monkeypatch.setenv("SIMCAL_SERVICE_URL", small_bodies.url)
    monkeypatch.setenv("SIMCAL_API_KEY", small_bodies.keys["alice"])
    table = pd.DataFrame({"beta": [0.2 + i / 1000 for i in range(100)], "gamma": 0.1})
    settings, fixed = {"seed": 5, "replicates": 2}, {"days": 5}
    with SimulationClient(small_bodies.url, small_bodies.keys["alice"]) as api:
        before = {job["job_id"] for job in api.jobs(limit=1000)}
    simulate(SIR, table, tmp_path / "remote.parquet", settings, backend="service",
             backend_options={"poll_interval_s": 0.1}, fixed_params=fixed)  # fmt: skip
    simulate(SIR, table, tmp_path / "library.parquet", settings, client=client, fixed_params=fixed)
    pd.testing.assert_frame_equal(
        rows(read_results(tmp_path / "remote.parquet")), rows(read_results(tmp_path / "library.parquet"))
    )
    with SimulationClient(small_bodies.url, small_bodies.keys["alice"]) as api:
        sent = [job for job in reversed(api.jobs(limit=1000)) if job["job_id"] not in before]
    # The cut the sweep made, from its plan: each body as the client sends it is within the limit, and is what
    # RequestSize adds up (the cut never encodes a whole job).
    simulation = SimulationSettings.from_config(settings)
    plan = plan_tasks(planned_parameter_sets(table, fixed), 2, seed=5)
    chunks = service_chunks(plan, max_bytes=2000, size=RequestSize(SIR, simulation))
    again = service_chunks(list(plan), max_bytes=2000, size=RequestSize(SIR, simulation))
    assert [[t.key for t in c] for c in chunks] == [[t.key for t in c] for c in again]
    assert [job["progress"]["total"] for job in sent] == [len(chunk) for chunk in chunks] == [68, 66, 66]
    for chunk in chunks:
        sets = list({task.param_id: task.params for task in chunk}.values())
        body = request_body(SIR, sets, 2, request_settings(simulation))
        assert len(body) == RequestSize(SIR, simulation).of_job(chunk) <= 2000


def test_a_gather_whose_request_would_exceed_the_services_request_max_bytes_goes_as_jobs_that_fit(
    small_bodies, monkeypatch
):
    """submit/gather cuts its queue as a sweep's: 100 simulations to a service reading 2000 bytes per request were
    a bare 413; now every simulation's rows come back."""
    from simcal.api import SimulationService

    monkeypatch.setenv("SIMCAL_SERVICE_URL", small_bodies.url)
    monkeypatch.setenv("SIMCAL_API_KEY", small_bodies.keys["alice"])
    with SimulationClient(small_bodies.url, small_bodies.keys["alice"]) as api:
        before = {job["job_id"] for job in api.jobs(limit=1000)}
    with SimulationService(
        backend="service", backend_options={"poll_interval_s": 0.1}, settings={"seed": 7}
    ) as http:
        served = http.gather(
            [http.submit(SIR, {"beta": 0.4 + i / 1000, "gamma": 0.1, "days": 5}) for i in range(100)]
        )
    assert len(served[KEYS].drop_duplicates()) == 100 and (served["status"] == "ok").all()
    with SimulationClient(small_bodies.url, small_bodies.keys["alice"]) as api:
        sent = [job for job in reversed(api.jobs(limit=1000)) if job["job_id"] not in before]
    assert [job["progress"]["total"] for job in sent] == [34, 33, 33]


def test_a_parameter_set_whose_request_alone_is_over_the_services_request_max_bytes_is_refused_naming_it(
    small_bodies, tmp_path, monkeypatch
):
    """A job holds whole parameter sets: one whose request alone is larger than the service reads cannot be sent
    however the sweep is cut. Refused before anything is sent, naming the set and both sizes."""
    monkeypatch.setenv("SIMCAL_SERVICE_URL", small_bodies.url)
    monkeypatch.setenv("SIMCAL_API_KEY", small_bodies.keys["alice"])
    with SimulationClient(small_bodies.url, small_bodies.keys["alice"]) as api:
        before = len(api.jobs(limit=1000))
    table = pd.DataFrame({"id": ["short", "x" * 2000]})
    with pytest.raises(ContractError) as refused:
        simulate("simcal_models:echo_id", table, tmp_path / "o.parquet", {"seed": 1, "replicates": 3},
                 backend="service", backend_options={"poll_interval_s": 0.1})  # fmt: skip
    assert str(refused.value) == (
        f"the simulation service {small_bodies.url} reads request bodies of at most 2000 bytes (its "
        "--request-max-bytes), fewer than the 2250 bytes of a request of parameter set param_id=0b301c9b8d1e8aa4 "
        "alone (2009 bytes of them its values), and a job holds whole parameter sets: start the service with a "
        "higher --request-max-bytes, or shorten that set's values; nothing was sent"
    )
    with SimulationClient(small_bodies.url, small_bodies.keys["alice"]) as api:
        assert len(api.jobs(limit=1000)) == before


KILLED_SWEEP = """
import sys
import pandas as pd
from simcal.runner import simulate
table = pd.DataFrame({"a": [5000.0 + i for i in range(40)], "sleep_s": 0.25})
simulate("simcal_models:counted_sleep", table, sys.argv[1], {"seed": 4}, backend="service",
         backend_options={"poll_interval_s": 0.1})
"""


def test_a_sweep_killed_outright_is_taken_up_by_its_rerun_which_waits_for_the_job_still_running(
    service, client, tmp_path, remote, count_file, caplog
):
    """SIGKILL cancels nothing: the job runs on. The rerun sends the same request with the same key (output file
    and request), the service answers with the running job, and the rerun waits for it: every simulation runs once.
    Run again once that job has ended, the same request makes a new job (an ended job is never reused)."""
    table = pd.DataFrame({"a": [5000.0 + i for i in range(40)], "sleep_s": 0.25})
    output = tmp_path / "sweep.parquet"
    with SimulationClient(service.url, service.keys["alice"]) as api:
        before = {job["job_id"] for job in api.jobs(limit=1000)}
        driver = subprocess.Popen(
            [sys.executable, "-c", KILLED_SWEEP, str(output)],
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        try:
            first = wait_for(
                lambda: [j["job_id"] for j in api.jobs(limit=1000) if j["job_id"] not in before],
                60,
                "its job",
            )
            wait_for(lambda: executions(count_file, 5000, 5040) >= 2, 60, "the job to run simulations")
        finally:
            driver.kill()
            driver.wait()
        assert api.job(first[0]).status()["status"] in ("queued", "running")
        caplog.set_level(logging.INFO, logger="simcal")
        simulate(SLEEP, table, output, {"seed": 4}, backend="service", backend_options=remote)
        assert [j["job_id"] for j in api.jobs(limit=1000) if j["job_id"] not in before] == first
        assert f"still running job {first[0]}" in caplog.text
        assert settled_executions(client, count_file, 5000, 5040) == 40  # each simulation once
        swept = read_results(output)
        assert len(swept) == 40 and (swept["status"] == "ok").all()

        output.unlink()  # a deliberate rerun: the ended job's rows are not reused
        simulate(SLEEP, table, output, {"seed": 4}, backend="service", backend_options=remote)
        new = [
            j["job_id"] for j in api.jobs(limit=1000) if j["job_id"] not in before and j["job_id"] != first[0]
        ]
        assert len(new) == 1 and f"not reused: {first[0]} (succeeded)" in caplog.text
        assert settled_executions(client, count_file, 5000, 5040) == 80
        pd.testing.assert_frame_equal(rows(read_results(output)), rows(swept))


@pytest.mark.parametrize(
    ("parameter_sets", "replicates", "sizes"),
    [
        (199, 1, [199]),  # under two jobs' worth: one job
        (200, 1, [100, 100]),
        (2000, 1, [200] * 10),
        (5000, 1, [500] * 10),  # never more than 10 jobs
        (10, 30, [120, 90, 90]),  # whole parameter sets: shares as even as 30-simulation sets allow
        (3, 100, [100, 100, 100]),
        (1, 1000, [1000]),  # a parameter set is never split
    ],
)
def test_a_sweep_goes_as_one_job_per_hundred_simulations_of_whole_sets_at_most_ten(
    parameter_sets, replicates, sizes
):
    from simcal.service.remote import service_chunks
    from simcal.tasks import plan_tasks

    tasks = plan_tasks([{"a": float(i)} for i in range(parameter_sets)], replicates)
    chunks = service_chunks(tasks)
    assert [len(chunk) for chunk in chunks] == sizes
    assert [task for chunk in chunks for task in chunk] == list(tasks)  # every task once, in order
    owners = [{task.param_id for task in chunk} for chunk in chunks]
    assert sum(len(ids) for ids in owners) == parameter_sets  # no parameter set in two jobs


def settled_executions(
    client: Client, count_file: Path, low: float = float("-inf"), high: float = float("inf")
):
    """``executions`` once no runner batch is running or waiting on the cluster and the count has stopped moving
    (a cancelled job's batch that had started is interrupted only once its model's native sleep returns)."""

    def settled():
        first = executions(count_file, low, high)
        busy = any(state in ("processing", "waiting", "queued") for state in simcal_tasks(client).values())
        time.sleep(0.3)
        return None if busy or executions(count_file, low, high) != first else (first,)

    return wait_for(settled, 60, "the cluster to finish the cancelled batches")[0]


def read_results_of_parts(parts: Path) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(p) for p in sorted(parts.glob("[!.]*.parquet"))], ignore_index=True)


def test_submit_and_gather_on_the_service_backend_give_a_dask_backends_rows(service, client, remote):
    """The notebook API over HTTP: queued until gathered, one job per model (a few simulations), the same rows, seeds and failure
    rows as the same calls on the service's own scheduler."""
    from simcal.api import SimulationService
    from simcal.contract import ContractError

    settings = {"seed": 11}
    calls = [
        *[("simcal_models:noisy_line", {"a": a}, r) for a in (1.0, 2.0) for r in (0, 1)],
        ("simcal_models:fails_for_negative", {"a": -1.0}, 0),
        ("simcal_models:empty_for_odd", {"a": 1}, 2),
        ("simcal_models:series", {"a": 1.5}, 1),
    ]
    with SimulationClient(service.url, service.keys["alice"]) as api:
        jobs_before = len(api.jobs(limit=1000))
    with SimulationService(backend="service", backend_options=remote, settings=settings) as over_http:
        futures = [over_http.submit(ref, params, replicate=r) for ref, params, r in calls]
        dropped = over_http.submit("simcal_models:noisy_line", {"a": 9.0})
        dropped.cancel()
        assert all(f.job is None for f in futures)  # nothing sent before the first gather
        served = over_http.gather([*futures, dropped])
        assert futures[0].job is futures[3].job and futures[4].job is not futures[0].job
        # An explicit seed is the service's own or refused, naming the fix.
        again = over_http.submit("simcal_models:noisy_line", {"a": 1.0}, seed=int(served["seed"].iloc[0]))
        rerun = again.result().drop(columns=["duration_s", "pid"])
        first = served.iloc[[0]][rerun.columns].reset_index(drop=True)
        pd.testing.assert_frame_equal(
            rerun, first, check_dtype=False
        )  # the cancelled row made strings nullable
        with pytest.raises(
            ContractError, match=r"submit\(seed=5\): the simulation service derives each seed"
        ):
            over_http.submit("simcal_models:noisy_line", {"a": 1.0}, seed=5)
        late = over_http.submit("simcal_models:noisy_line", {"a": 3.0})
    with pytest.raises(ContractError, match="was never sent: its SimulationService was closed first"):
        late.result()
    with SimulationClient(service.url, service.keys["alice"]) as api:
        assert len(api.jobs(limit=1000)) - jobs_before == 5  # 4 models, then the one resubmitted call

    with SimulationService(
        backend="scheduler", backend_options={"address": client.scheduler.address}, settings=settings
    ) as on_dask:
        direct = on_dask.gather([on_dask.submit(ref, params, replicate=r) for ref, params, r in calls])
    columns = [c for c in direct.columns if c not in ("duration_s", "pid")]
    pd.testing.assert_frame_equal(
        served.iloc[:-1][columns].reset_index(drop=True), direct[columns], check_dtype=False
    )
    assert served["status"].tolist() == ["ok"] * 4 + ["failed", "ok", *["ok"] * 3, "failed"]
    assert served["error"].iloc[4] == "ValueError: a must be >= 0, got -1.0"
    assert served["error"].iloc[-1].startswith("Cancelled: SimulationFuture.cancel()")


def test_cancel_stops_the_job_and_cancels_its_dask_tasks(service, client, count_file):
    sets = [{"a": float(i), "sleep_s": 0.5} for i in range(40)]
    with SimulationClient(service.url, service.keys["alice"]) as api:
        job = api.submit(SLEEP, sets, settings={"batch_size": 1})
        wait_for(lambda: job.status()["progress"]["done"] >= 2, 60, "two simulations of the slow job")
        assert len(simcal_tasks(client)) > 4  # batches queued on the scheduler
        began = time.monotonic()
        cancelled = job.cancel()
        assert cancelled["status"] == "cancelled" and time.monotonic() - began < 10
        assert cancelled["error"] == "cancelled by request"
        assert not (service.state_dir / "jobs" / job.id).exists()  # its parts: nothing would ever read them
        at_cancel = executions(count_file, 0, 40)  # this job's values of a only
        # Nothing of the job is left on the scheduler: queued batches never start, running ones are forgotten.
        wait_for(lambda: not simcal_tasks(client), 10, "the job's tasks to leave the scheduler")
        time.sleep(1.5)
        ran = executions(count_file, 0, 40)
        assert ran <= at_cancel + 2  # at most the two batches running at the cancel finished
        assert ran < 12, ran  # of 40 simulations
        with pytest.raises(Exception, match="409"):
            job.to_pandas()
        # The workers are free at once for the next job.
        quick = api.submit(SLEEP, [{"a": 1.0, "sleep_s": 0.01}])
        assert quick.wait(timeout=30, poll_interval=0.1)["status"] == "succeeded"
        assert api.cancel(quick.id)["status"] == "succeeded"  # a finished job stays as it was


# -- restarts -------------------------------------------------------------------------------------------------------


def test_a_killed_service_resumes_running_jobs_from_their_parts_or_fails_them_with_the_reason(
    client,
    count_file,
    service_factory,
    tmp_path,
):
    restarting = service_factory(
        "--scheduler", client.scheduler.address, "--allow-models", "simcal_models", "--max-concurrent-jobs", "1"
    )  # fmt: skip
    settings = {"seed": 4, "batch_size": 2}
    first_sets = [{"a": 1000.0 + i, "sleep_s": 0.25} for i in range(24)]
    with SimulationClient(restarting.url, restarting.keys["alice"]) as api:
        first = api.submit(SLEEP, first_sets, n_replicates=1, settings=settings)
        # The second and fourth jobs run long enough (15 s, 10 s) to be seen running, and still run at the kill: at
        # 3 s the second ended, under CI's load, before the test had read the first job's rows and began to look.
        second = api.submit(SLEEP, [{"a": 2000.0 + i, "sleep_s": 1.0} for i in range(30)], settings=settings)
        wait_for(lambda: first.status()["progress"]["done"] >= 6, 60, "six simulations of the first job")
        assert second.status()["status"] == "queued"
        # A client waiting for the job through the crash and the restart: its refused connections are retried.
        waited: list[dict] = []
        waiter = threading.Thread(target=lambda: waited.append(first.wait(timeout=120, poll_interval=0.2)))
        waiter.start()
        restarting.kill()  # SIGKILL: no clean-up runs
        time.sleep(3.0)  # batches running at the kill finish on the workers (their results are lost)
        ran_before_restart = executions(count_file, 1000, 1024)

        restarting.start()  # same state directory, same keys
        waiter.join(130)
        assert waited and waited[0]["status"] == "succeeded"
        info = first.status()
        assert info["resumed"] >= 6 and info["progress"] == {"done": 24, "total": 24, "failed": 0}
        # Resumed, not redone: after the restart exactly the simulations not in the parts ran.
        assert executions(count_file, 1000, 1024) == ran_before_restart + 24 - info["resumed"]
        resumed_rows = first.to_pandas()

        wait_for(lambda: second.status()["status"] == "running" and second.info["progress"]["done"] >= 2, 60,
                 "the second job to run")  # fmt: skip
        third = api.submit(SLEEP, [{"a": 3000.0, "sleep_s": 0.01}])
        restarting.kill()
        restarting.start("--max-job-attempts", "1")
        failed = second.status()
        assert failed["status"] == "failed"
        assert "the service stopped 1 time(s) while this job was running" in failed["error"]
        assert "--max-job-attempts 1" in failed["error"]
        assert third.wait(timeout=60, poll_interval=0.1)["status"] == "succeeded"  # queued jobs survive too
        assert {j["job_id"] for j in api.jobs(status="running")} == set()  # never left running

        # A succeeded job's work directory is removed; a failed one's is kept (its parts hold the failure rows).
        assert not (restarting.state_dir / "jobs" / first.id).exists()
        assert (restarting.state_dir / "jobs" / second.id).is_dir()

        # A graceful stop (SIGTERM) queues a running job again without counting the interruption as an attempt:
        # after a stop and then a crash it has used one attempt of two, and resumes.
        fourth = api.submit(SLEEP, [{"a": 4000.0 + i, "sleep_s": 0.5} for i in range(40)], settings=settings)
        wait_for(lambda: fourth.status()["status"] == "running" and fourth.info["progress"]["done"] >= 2, 60,
                 "the fourth job to run")  # fmt: skip
        restarting.stop()
        restarting.start("--max-job-attempts", "2")
        done_at_stop = fourth.status()["progress"]["done"]
        wait_for(lambda: fourth.status()["status"] == "running" and fourth.info["progress"]["done"] >= done_at_stop + 4,
                 60, "the fourth job to run again")  # fmt: skip
        restarting.kill()
        restarting.start("--max-job-attempts", "2")  # counted, the stop would make this the second crash
        assert fourth.wait(timeout=120, poll_interval=0.2)["status"] == "succeeded", fourth.info["error"]
        assert fourth.status()["resumed"] >= 2
    library = tmp_path / "library.parquet"
    simulate(SLEEP, pd.DataFrame(first_sets), library, {**settings, "replicates": 1}, client=client)
    pd.testing.assert_frame_equal(rows(resumed_rows), rows(read_results(library)))


# -- load -----------------------------------------------------------------------------------------------------------


def test_two_hundred_jobs_from_twenty_clients_lose_no_job_and_no_row(service):
    per_client, clients, budget_s = 10, 20, 60.0
    deadline = time.monotonic() + budget_s
    stop = threading.Event()

    def one_client(index: int) -> list[tuple[str, pd.DataFrame]]:
        with SimulationClient(service.url, service.keys[f"load-{index}"]) as api:
            jobs = [
                api.submit(
                    "simcal_models:noisy_line",
                    [{"a": float(index)}, {"a": 100.0 + n}],
                    n_replicates=2,
                    settings={"seed": n},
                )  # fmt: skip
                for n in range(per_client)
            ]
            results = []
            for n, job in enumerate(jobs):
                if stop.is_set():
                    break
                job.wait(timeout=max(0.0, deadline - time.monotonic()), poll_interval=0.2)
                results.append((job.id, job.to_pandas(), index, n))
            return results

    began = time.monotonic()
    collected = []
    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(one_client, index) for index in range(clients)]
        try:
            for future in as_completed(futures, timeout=budget_s + 5):
                collected.extend(future.result())
        finally:
            stop.set()  # a client that overran stops polling, so the test ends by itself
    elapsed = time.monotonic() - began
    assert len(collected) == per_client * clients and len({job_id for job_id, *_ in collected}) == len(
        collected
    )
    for job_id, frame, index, n in collected:
        assert len(frame) == 4 and set(frame["status"]) == {"ok"}, job_id
        assert frame[KEYS].drop_duplicates().shape[0] == 4
        # Its own simulations, not another job's: its parameter values and the seeds its settings plan.
        planned = plan_tasks([{"a": float(index)}, {"a": 100.0 + n}], 2, seed=n)
        assert sorted(zip(frame["param_id"], frame["replicate"], frame["seed"], strict=True)) == sorted(
            task.key for task in planned
        ), job_id
    # One job per client submission, all succeeded: nothing lost, nothing doubled by retries.
    with SimulationClient(service.url, service.keys["load-0"]) as api:
        assert [j["status"] for j in api.jobs(limit=1000)] == ["succeeded"] * per_client
    print(
        f"load: {len(collected)} jobs from {clients} clients in {elapsed:.1f} s ({len(collected) / elapsed:.1f} jobs/s)"
    )
