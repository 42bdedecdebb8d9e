"""submit/gather for notebooks and scripts: the same contract, seeds and failure rows as a sweep, on a real
LocalCluster started by the service and on an existing scheduler (the ``service`` backend, over HTTP to a running
simulation service: test_service_jobs.py)."""

from __future__ import annotations

import pandas as pd
import pytest
from distributed import Client, LocalCluster

from simcal.api import SimulationService, gather, submit
from simcal.contract import ContractError
from simcal.runner import read_results, simulate


def test_service_rows_match_the_sweep_and_every_outcome_is_a_row(tmp_path):
    settings = {"seed": 11, "timeout_s": 0.5, "replicates": 2}
    with SimulationService(backend="local", threads=2, settings=settings) as service:
        futures = [
            service.submit("simcal_models:noisy_line", {"a": a}, replicate=r)
            for a in (1.0, 2.0)
            for r in (0, 1)
        ]
        rows = service.gather(futures)
        assert len(rows) == 4 and (rows["status"] == "ok").all()

        # The same simulations as a sweep with the same settings: same seeds, same outputs.
        simulate("simcal_models:noisy_line", pd.DataFrame({"a": [1.0, 2.0]}), tmp_path / "sweep", settings,
                 client=service.client)  # fmt: skip
        sweep = read_results(tmp_path / "sweep")
        columns = ["param_id", "replicate", "seed", "a", "y"]
        ordered = rows.sort_values(["param_id", "replicate"]).reset_index(drop=True)
        pd.testing.assert_frame_equal(ordered[columns], sweep[columns])

        # With common random numbers too: every parameter set gets replicate r's seed, in submit as in a sweep.
        common = {**settings, "common_random_numbers": True}
        shared = gather(
            [
                submit(
                    "simcal_models:noisy_line", {"a": a}, replicate=r, client=service.client, settings=common
                )
                for a in (1.0, 2.0)
                for r in (0, 1)
            ]
        )
        simulate("simcal_models:noisy_line", pd.DataFrame({"a": [1.0, 2.0]}), tmp_path / "common", common,
                 client=service.client)  # fmt: skip
        common_sweep = read_results(tmp_path / "common")
        ordered = shared.sort_values(["param_id", "replicate"]).reset_index(drop=True)
        pd.testing.assert_frame_equal(ordered[columns], common_sweep[columns])
        assert (shared.groupby("replicate")["seed"].nunique() == 1).all()

        outcomes = service.gather(
            [
                service.submit("simcal_models:fails_for_negative", {"a": -1.0}),
                service.submit("simcal_models:crashes_for_three", {"a": 3}),
                service.submit("simcal_models:sleeps_for_two", {"a": 2}),
                service.submit("simcal_models:empty_for_odd", {"a": 1}, seed=7),
            ]
        )
    assert list(outcomes["status"]) == ["failed", "crashed", "timeout", "ok"]
    assert outcomes["error"].iloc[0] == "ValueError: a must be >= 0, got -1.0"
    assert "simulation.allowed_failures = 0" in outcomes["error"].iloc[1]
    assert "timeout_s = 0.5 s" in outcomes["error"].iloc[2]
    assert outcomes["seed"].iloc[3] == 7 and outcomes["a"].tolist() == [-1.0, 3, 2, 1]


def test_functions_work_on_an_existing_client_and_refuse_bad_input():
    with LocalCluster(n_workers=1, processes=True, dashboard_address=":0") as cluster, Client(cluster):
        future = submit("simcal_models:series", {"a": 1.5}, seed=3)
        rows = gather([future])
        assert len(rows) == 3 and (rows["seed"] == 3).all() and (rows["status"] == "ok").all()
        pd.testing.assert_frame_equal(future.result(), rows)
        # The scheduler backend: the service connects to the running scheduler and leaves it running.
        with SimulationService(
            backend="scheduler", backend_options={"address": cluster.scheduler_address}
        ) as service:
            again = service.gather([service.submit("simcal_models:series", {"a": 1.5}, seed=3)])
        pd.testing.assert_frame_equal(again.drop(columns="duration_s"), rows.drop(columns="duration_s"))
        assert cluster.status.name == "running"
        with pytest.raises(ContractError, match=r"submit\(params\): parameter names \['seed'\] are reserved"):
            submit("simcal_models:series", {"seed": 1})
        with pytest.raises(ContractError, match="has no attribute 'nope'"):
            submit("simcal_models:nope", {"a": 1})
        # A model that declares its parameters refuses a typo before anything is sent, as a sweep does.
        with pytest.raises(
            ContractError, match=r"submit\(params\), param_id \w+: 'betta' is not a parameter"
        ):
            submit("simcal.models.sir:simulate", {"betta": 0.3, "gamma": 0.1})
    with pytest.raises(ContractError, match=r"calibration.backend.service: unknown keys \['urll'\]"):
        SimulationService(backend="service", backend_options={"urll": "http://127.0.0.1:1"})


@pytest.mark.parametrize("params", [[1, 2], None, "beta=0.3"])
def test_params_that_are_no_mapping_are_refused_naming_params(params):
    with pytest.raises(
        ContractError, match=r"submit\(params\) must be a mapping of parameter names to values"
    ):
        submit("simcal.models.sir:simulate", params, client=object())  # refused before the client is used


def test_gather_of_one_future_or_of_something_else_says_what_it_takes():
    service = SimulationService(backend="service", backend_options={"url": "http://127.0.0.1:1"})
    future = service.submit("simcal.models.sir:simulate", {"beta": 0.3, "gamma": 0.1})  # queued, not sent
    with pytest.raises(ContractError, match=r"gather takes a list of futures, got one: gather\(\[future\]\)"):
        gather(future)  # 'object is not iterable' before
    with pytest.raises(ContractError, match="gather takes the futures submit.. returns, got int 1"):
        gather([future, 1])  # AttributeError: 'int' object has no attribute 'cancelled' before


def test_a_cancelled_simulation_is_a_row_and_a_closed_service_says_so():
    """As on the service backend: cancel() gives a failed row saying so, and the others' rows still come back."""
    with SimulationService(backend="local", threads=1) as service:
        kept = service.submit("simcal_models:counted_sleep", {"a": 1.0, "sleep_s": 0.2})
        dropped = service.submit("simcal_models:counted_sleep", {"a": 2.0, "sleep_s": 5.0})
        dropped.cancel()
        rows = service.gather([kept, dropped])
        late = service.submit("simcal_models:noisy_line", {"a": 1.0})
    assert rows["a"].tolist() == [1.0, 2.0] and rows["status"].tolist() == ["ok", "failed"]
    assert rows["error"].iloc[1].startswith("Cancelled: SimulationFuture.cancel() was called")
    with pytest.raises(ContractError, match="cannot be gathered: its Dask client is closed"):
        late.result()


def test_submit_after_the_service_closed_its_cluster_says_so_and_names_the_with_block():
    """A later notebook cell's submit on a SimulationService whose `with` block had ended raised Dask's
    ClosedClientError ("Client is closed. Can't send update-graph message"), naming neither the service nor the
    `with` block, where gather of the same service's futures says both."""
    with SimulationService(backend="local", backend_options={"processes": False}) as service:
        rows = service.gather([service.submit("simcal_models:noisy_line", {"a": 1.0})])
    assert rows["status"].tolist() == ["ok"]
    closed = (
        r"^submit\(\): its Dask client is closed \(a SimulationService closes the cluster it started on leaving "
        r"its `with` block; submit inside it\)$"
    )
    with pytest.raises(ContractError, match=closed):
        service.submit("simcal_models:noisy_line", {"a": 2.0})
    with pytest.raises(ContractError, match=closed):
        submit("simcal_models:noisy_line", {"a": 2.0}, client=service.client)


@pytest.mark.timeout(60)
def test_a_future_gathered_twice_gives_its_rows_twice():
    """gather([f, f]) waited until it had an outcome per list entry but kept one per future: it never returned."""
    with SimulationService(backend="local", threads=1) as service:
        future = service.submit("simcal_models:noisy_line", {"a": 1.0})
        other = service.submit("simcal_models:noisy_line", {"a": 2.0})
        rows = service.gather([future, other, future])
    assert rows["a"].tolist() == [1.0, 2.0, 1.0] and (rows["status"] == "ok").all()
    pd.testing.assert_frame_equal(
        rows.iloc[[2]].reset_index(drop=True), rows.iloc[[0]].reset_index(drop=True)
    )


def test_gather_fetches_the_rows_of_finished_simulations_together_in_their_order(monkeypatch):
    """gather fetched each simulation's rows with a round trip of its own (future.result(): 9.3 s for 1,000
    finished simulations, 1.0 s now); the rows of all that are done now come in one fetch, in the order
    of the futures, with the failure row in its place and the seeds a sweep gives."""
    from distributed import wait

    from simcal.seeds import replicate_seed

    settings = {"seed": 3}
    with SimulationService(backend="local", threads=2, settings=settings) as service:
        futures = [service.submit("simcal_models:fails_for_negative", {"a": float(a)}) for a in range(-2, 10)]
        wait([future.future for future in futures])
        fetched: list[int] = []  # how many results each fetch from the workers asked for
        fetch = Client._gather

        async def counted(client, wanted, *args, **kwargs):
            fetched.append(len(wanted))
            return await fetch(client, wanted, *args, **kwargs)

        monkeypatch.setattr(Client, "_gather", counted)
        rows = service.gather(futures)
    # [1, 1, ..., 1] before: a round trip per simulation. Now one fetch for all that ended by then (Dask's
    # as_completed may hand them over in two or three passes)
    assert sum(fetched) == 12 and len(fetched) <= 3, fetched
    assert rows["a"].tolist() == [float(a) for a in range(-2, 10)]
    assert rows["status"].tolist() == ["failed"] * 2 + ["ok"] * 10
    assert rows["error"].iloc[0] == "ValueError: a must be >= 0, got -2.0"
    expected = [replicate_seed(future.task.param_id, 0, 3) for future in futures]
    assert rows["seed"].tolist() == expected


def test_thread_workers_run_but_warn_what_they_give_up(caplog):
    with caplog.at_level("WARNING", logger="simcal.backends"):
        with SimulationService(backend="local", backend_options={"processes": False}) as service:
            rows = service.gather([service.submit("simcal_models:noisy_line", {"a": 1.0})])
    assert rows["status"].tolist() == ["ok"]
    assert "backend.local.processes is false: the workers are threads of this process" in caplog.text


def test_the_service_counts_worker_deaths_itself_like_a_sweep(tmp_path, monkeypatch):
    """With allowed_failures 1 a simulation that kills its worker every time is recorded as crashed after
    1 + 1 + 1 deaths, as in a sweep: its worker's (which only makes it a suspect), then two of the process it runs
    alone in. Dask's own allowed-failures is 0, so the two limits do not multiply."""
    count = tmp_path / "deaths"
    monkeypatch.setenv("SIMCAL_TEST_COUNT", str(count))  # the service's worker processes inherit it
    with SimulationService(backend="local", threads=1, settings={"allowed_failures": 1}) as service:
        rows = service.gather([service.submit("simcal_models:counted_crash", {"a": 1})])
    assert list(rows["status"]) == ["crashed"]
    error = rows["error"].iloc[0]
    assert "the process running it alone, after its worker died, exited with exit code 11" in error
    assert "that process died 2 time(s) (limit: simulation.allowed_failures = 1;" in error
    assert "the death of the worker it shared, which only made it a suspect, is not counted" in error
    assert "distributed.scheduler.allowed-failures" not in error
    assert len(count.read_text().split()) == 3


def test_a_simulation_the_worker_cannot_run_alone_is_a_failed_row_as_in_a_sweep(tmp_path):
    """Its worker dies, so it runs alone, where the process running it cannot write its rows (a directory in their
    place): the isolation failed, not the model, so it is run alone again, ISOLATION_FAILURES times in all, then
    its row is failed saying so (gather gave up at the first such failure; before, it recorded a crash)."""
    from simcal.outcomes import ISOLATION_FAILURES

    count = tmp_path / "alone"
    with SimulationService(backend="local", threads=1) as service:
        params = {"a": 3, "count_file": str(count)}
        rows = service.gather([service.submit("simcal_models:blocks_its_rows_for_three", params)])
    assert list(rows["status"]) == ["failed"]
    error = rows["error"].iloc[0]
    assert error.startswith(
        "IsolationFailed: could not run it alone in a process of its own on worker host "
    ), error
    assert "IsADirectoryError" in error and f"so {ISOLATION_FAILURES} time(s), the limit" in error, error
    assert "The model itself was not seen to fail" in error, error
    assert count.read_text().split() == ["alone"] * ISOLATION_FAILURES


def test_a_model_that_cannot_take_params_and_seed_is_refused_by_submit_on_every_backend():
    """submit() resolved the reference but not its signature: a model without the seed argument went to a
    worker (or to the simulation service) and came back as a failed row with a TypeError. It is refused at
    submit, as a sweep refuses it, before any client or service is used."""
    expected = (
        r"simcal_models:params_only.: params_only\(params\) cannot be called as params_only\(params, seed\)"
    )
    with pytest.raises(ContractError, match=expected):
        submit("simcal_models:params_only", {"a": 1}, client=object())
    with SimulationService(backend="service", backend_options={"url": "http://127.0.0.1:1"}) as service:
        with pytest.raises(ContractError, match=expected):
            service.submit("simcal_models:params_only", {"a": 1})


@pytest.mark.parametrize(
    "given, message",
    [
        (
            {"seed": 2**32},
            r"submit: seed must be below 2\*\*32 \(as every seed of a sweep is\), got 4294967296",
        ),
        ({"seed": -1}, r"submit: seed must be a whole number >= 0, got -1"),
        ({"seed": 0.5}, r"submit: seed must be a whole number >= 0, got 0.5"),
        ({"replicate": -1}, r"submit: replicate must be a whole number >= 0, got -1"),
        ({"replicate": 1.5}, r"submit: replicate must be a whole number >= 0, got 1.5"),
    ],
)
def test_submit_refuses_a_seed_of_2_32_or_more_and_a_negative_or_fractional_seed_or_replicate(given, message):
    """docs/simulation.md: "a negative or fractional `seed` or `replicate` is refused there too, and so is a `seed`
    of 2**32 or more (every seed of a sweep lies below it)": refused before the client is used."""
    with pytest.raises(ContractError, match=message):
        submit("simcal_models:series", {"a": 1.0}, client=object(), **given)


def test_submit_runs_the_largest_seed_a_sweep_can_have():
    """The other side of the bound above: 2**32 - 1 reaches the model and the row."""
    with (
        LocalCluster(n_workers=1, processes=False, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        rows = gather(
            [submit("simcal_models:series", {"a": 1.0}, seed=2**32 - 1, replicate=2, client=client)]
        )
    assert (
        (rows["seed"] == 2**32 - 1).all()
        and (rows["replicate"] == 2).all()
        and (rows["status"] == "ok").all()
    )


def test_the_example_of_docs_simulation_md_runs_and_gives_a_sweeps_rows(tmp_path):
    """docs/simulation.md, "From notebooks and scripts": its code block, run as written, gives "the same rows, seeds
    and statuses as a sweep" of the same parameter sets and settings."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs/simulation.md").read_text()
    section = text.split("## From notebooks and scripts", 1)[1]
    (block,) = re.findall(r"^```python\n(.*?)^```", section.split("\n## ", 1)[0], re.M | re.S)
    names: dict = {}
    exec(compile(block, "docs/simulation.md", "exec"), names)  # noqa: S102 - the doc's own example
    table = names["table"]
    assert set(table["beta"]) == {0.2, 0.3} and (table["status"] == "ok").all()
    simulate("simcal.models.sir:simulate", pd.DataFrame({"beta": [0.2, 0.3], "gamma": 0.1}), tmp_path / "sweep",
             {"seed": 1, "timeout_s": 60, "replicates": 1}, backend="local", threads=2)  # fmt: skip
    sweep = read_results(tmp_path / "sweep")
    columns = [column for column in sweep.columns if column != "duration_s"]
    ordered = table.sort_values(["param_id", "replicate", "day"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(
        ordered[columns],
        sweep.sort_values(["param_id", "replicate", "day"]).reset_index(drop=True)[columns],
        check_dtype=False,  # values: a sweep file reads text back as str with NaN, gather gives str with NA
    )


@pytest.mark.parametrize(
    "model, parameters",
    [
        ("simcal_models:fails_for_negative", {"a": [-1.0, 1.0, 2.0]}),  # error text beside missing errors
        ("simcal_models:type_changes", {"a": [1, 2]}),  # a number in one simulation, text in the other
        (
            "simcal_models:whole_beyond_2_53",
            {"kind": ["dict", "missing", "fails", "table"]},
        ),  # Int64 with gaps
        ("simcal_models:whole_beyond_2_53", {"kind": ["dict", "half", "fails"]}),  # beside a fraction: text
    ],
)
def test_gather_gives_the_dtypes_and_missing_values_read_results_gives_for_the_same_rows(
    tmp_path, model, parameters
):
    """gather gave text columns (status, error) as pandas' nullable "string" with <NA> where read_results gives
    "str" with NaN, kept a column mixing numbers and text as objects (the sweep stores it as text), rounded whole
    numbers beyond 2**53 beside a failed row to floats, and put outputs of a later simulation after the status
    columns: the same rows, built both ways, are now equal, dtypes and column order included."""
    table = pd.DataFrame(parameters)
    settings = {"seed": 5, "max_failed_fraction": 1.0}
    with (
        LocalCluster(n_workers=1, processes=False, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        gathered = gather(
            [submit(model, row, client=client, settings=settings) for row in table.to_dict("records")]
        )
        simulate(model, table, tmp_path / "sweep.parquet", settings, client=client)
    swept = read_results(tmp_path / "sweep.parquet")
    ordered = gathered.sort_values(["param_id", "replicate"], kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(ordered.drop(columns="duration_s"), swept.drop(columns="duration_s"))


class TakesEveryJob:
    """A simulation service's HTTP client that takes every job and tells a limit of 2 simulations per job."""

    url, closed = "http://service.invalid", False

    def __init__(self):
        self.sent: list[int] = []  # the parameter sets of each job

    def limits(self):
        return {"max_simulations": 2, "request_max_bytes": None}

    def submit(self, model_ref, parameter_sets, replicates, settings, idempotency_key=None):
        from types import SimpleNamespace

        self.sent.append(len(parameter_sets))
        return SimpleNamespace(
            id=f"job-{len(self.sent)}", replayed=False, info={"status": "queued"}, client=self
        )


def test_flush_looks_up_each_queued_simulation_a_few_times_whatever_the_size_of_the_queue(monkeypatch):
    """SimulationService.flush (the service backend) found the futures of each job by scanning every queued
    future of its model: queue x jobs lookups of a simulation's key, quadratic where the service's
    --max-simulations is small. Counted here: the reads of a simulation's key, at most two per queued future (one
    to index it, one to find it for its job) for a queue of 20 and of 200 (before: about 12 and 102 per future), each
    future in the job that holds its simulation, a duplicate beside it."""
    from simcal.tasks import SimTask

    key = SimTask.key
    reads: list[int] = []
    monkeypatch.setattr(SimTask, "key", property(lambda task: reads.append(1) or key.fget(task)))

    def reads_per_future(queued: int) -> float:
        with SimulationService(backend="service", client=TakesEveryJob()) as service:
            sets = [{"beta": 0.2 + i / 1000, "gamma": 0.1} for i in range(queued)]
            futures = [service.submit("simcal.models.sir:simulate", params) for params in sets]
            again = service.submit("simcal.models.sir:simulate", sets[0])  # the same simulation twice
            reads.clear()
            service.flush()
            counted = len(reads)
            assert service.client.sent == [2] * (queued // 2)  # jobs of 2 sets, as the service's limit says
            assert all(f.task in f.job.tasks and f in f.job.futures for f in [*futures, again])
            assert again.job is futures[0].job
        return counted / (queued + 1)

    assert reads_per_future(20) <= 2 and reads_per_future(200) <= 2


def test_gather_sleeps_until_a_simulation_ends_instead_of_polling(monkeypatch):
    """gather looked for simulations that ended every 1 to 50 ms (a second's simulation: some 30 looks, each a
    look at the clock); it now sleeps on the futures' ends (and, while a simulation has a timeout_s, wakes every
    POLL_S to read the timeouts). Counted as gather's looks at the clock: a pass of its loop takes one to three."""
    import time
    import types

    import simcal.api as api

    looks = []

    def monotonic() -> float:
        looks.append(1)
        return time.monotonic()

    monkeypatch.setattr(api, "time", types.SimpleNamespace(monotonic=monotonic, sleep=time.sleep))
    with SimulationService(backend="local", threads=1, settings={"seed": 1, "timeout_s": None}) as service:
        future = service.submit("simcal_models:counted_sleep", {"a": 1.0, "sleep_s": 1.0})
        started = time.monotonic()
        rows = service.gather([future])
        waited = time.monotonic() - started
    assert waited >= 0.9 and rows["status"].tolist() == ["ok"] and rows["y"].tolist() == [1.0]
    assert len(looks) <= 6, f"{len(looks)} looks at the clock in {waited:.2f} s"
