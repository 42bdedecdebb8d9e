"""The simulation service with results in Azure Blob (the Azurite emulator on 127.0.0.1), and the calibration module
sending its sweep and its calibration rounds to it (``calibration.backend.kind: service``) in a real Snakemake run.

One LocalCluster (two worker processes on 127.0.0.1) in the test process, one ``simcal serve`` subprocess on it.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pandas as pd
import pytest
from distributed import Client, LocalCluster
from testkit import run_snakemake

sys.path.insert(0, str(Path(__file__).resolve().parent / "k8s"))
from harness import assert_no_secrets_in_tree, azurite, find_secrets, unique_container  # noqa: E402, F401, F811
from test_calibration_module import SMALL_CONFIG, downstream  # noqa: E402

from simcal.runner import read_results, simulate  # noqa: E402
from simcal.service.client import SimulationClient  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.azurite]

SIR = "simcal.models.sir:simulate"


@pytest.fixture(scope="module")
def client():
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0"
    ) as cluster:
        with Client(cluster) as connected:
            yield connected


@pytest.fixture(scope="module")
def container():
    return unique_container("service")


@pytest.fixture(scope="module")
def service(client, azurite, container, service_factory):  # noqa: F811  # the cluster first: it outlives the service
    return service_factory(
        "--scheduler", client.scheduler.address, "--results", f"az://{container}/results",
        env={"AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string},
    )  # fmt: skip


def account_secrets(emulator) -> tuple[str, str]:
    return emulator.connection_string, emulator.connection_string.split("AccountKey=")[1].split(";")[0]


def test_results_are_parquet_blobs_under_the_prefix_and_equal_the_library_path(
    service,
    client,
    azurite,  # noqa: F811
    container,
    tmp_path,
):
    table = pd.DataFrame({"beta": [0.25, 0.5], "gamma": [0.1, 0.2]})
    with SimulationClient(service.url, service.keys["alice"]) as api:
        job = api.submit(SIR, table, n_replicates=2, settings={"seed": 9}, fixed={"days": 25})
        info = job.wait(timeout=120, poll_interval=0.1)
        served = job.to_pandas()
    assert info["results_path"] == f"az://{container}/results/{job.id}.parquet"
    assert f"results/{job.id}.parquet" in azurite.blob_names(container, "results/")
    stored = pd.read_parquet(io.BytesIO(azurite.read(container, f"results/{job.id}.parquet")))
    pd.testing.assert_frame_equal(served, stored)
    assert not (service.state_dir / "results").exists() and not any((service.state_dir / "jobs").iterdir())

    simulate(SIR, table, tmp_path / "library.parquet", {"seed": 9, "replicates": 2}, client=client,
             fixed_params={"days": 25})  # fmt: skip
    keys = ["param_id", "replicate"]
    library = read_results(tmp_path / "library.parquet").drop(columns="duration_s")
    assert (
        served.sort_values(keys, kind="stable")
        .reset_index(drop=True)
        .drop(columns="duration_s")
        .equals(library)
    )
    assert not find_secrets(service.log_text(), account_secrets(azurite))


def test_calibration_module_sends_its_sweep_and_rounds_to_the_service(service, tmp_path):
    key = service.keys["alice"]
    config = {
        "calibration": {
            **SMALL_CONFIG["calibration"],
            "backend": {"kind": "service", "service": {"poll_interval_s": 0.2}},
        }
    }
    snakefile = downstream(tmp_path, config)
    with SimulationClient(service.url, key) as api:
        before = {job["job_id"] for job in api.jobs(limit=1000)}
        run = run_snakemake(  # the two rules that simulate; the others only read their outputs
            "--snakefile", str(snakefile), "--directory", str(tmp_path), "--cores", "2",
            "results/calibration/sir_small/trials.parquet", "results/calibration/sir_small/sweep/simulations.parquet",
            cwd=tmp_path, env={"SIMCAL_SERVICE_URL": service.url, "SIMCAL_API_KEY": key}, timeout=900,
        )  # fmt: skip
        new = [job for job in api.jobs(limit=1000) if job["job_id"] not in before]
    # The sweep (4 sets x 2 replicates) and the rounds: design (8 x 2), search (4 x 2), refine (2 x 4).
    assert sorted(job["progress"]["total"] for job in new) == [8, 8, 8, 16]
    assert {job["status"] for job in new} == {"succeeded"}
    results = tmp_path / "results/calibration/sir_small"
    trials = pd.read_parquet(results / "trials.parquet")
    assert list(trials["phase"]) == ["design"] * 8 + ["search"] * 4 + ["refine"] * 2
    assert trials["loss"].notna().all()
    sweep = pd.read_parquet(results / "sweep/simulations.parquet")
    assert sweep.drop_duplicates(["param_id", "replicate"]).shape[0] == 8 and (sweep["status"] == "ok").all()
    log = (tmp_path / "logs/calibration/sir_small/simulate.log").read_text()
    assert "to the simulation service" in log and service.url in log
    # The key lives in the environment only: nothing the run wrote holds it.
    assert key not in run.stdout
    assert_no_secrets_in_tree(tmp_path, (key,))
