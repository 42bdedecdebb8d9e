"""The in-cluster Dask cluster of profiles/k8s/dask speaks TLS only, and simcal's `scheduler` backend connects
to it with nothing but the pod environment the profile sets (kubernetes-kueue-env) and DASK_SCHEDULER_ADDRESS.

The scheduler and a worker run on loopback from the manifests' own commands, arguments and environment, with
throwaway certificates in place of the Secret dask-tls (harness.dask_from_manifests). simcal is not told
about TLS at all: dask reads the DASK_DISTRIBUTED__COMM__TLS__* variables (distributed.security).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "k8s"))
from harness import dask_from_manifests  # noqa: E402, F401 - fixture

SIMULATE = """
import logging, sys
import pandas as pd
from simcal.runner import read_results, simulate
logging.basicConfig(level=logging.INFO, stream=sys.stdout)
table = pd.DataFrame({"slope": [0.5, 1.0, 2.0, 3.0], "x": [1.0, 2.0, 3.0, 4.0]})
summary = simulate("simcal.models.toy:noisy_linear", table, sys.argv[1], {"replicates": 2, "batch_size": 2},
                   backend="scheduler")
print("SIMULATED", summary.total, len(read_results(sys.argv[1])))
"""


def _clean_environment() -> dict[str, str]:
    # Nothing Dask-related leaks in from the test process: only what the profile gives a pod.
    return {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}


@pytest.mark.integration
def test_simcal_scheduler_backend_connects_over_tls_with_the_profiles_pod_environment(
    tmp_path,
    dask_from_manifests,  # noqa: F811
):
    env = {
        **_clean_environment(),
        **dask_from_manifests.client_env(),
        "DASK_SCHEDULER_ADDRESS": dask_from_manifests.address,
    }
    output = tmp_path / "simulations.parquet"
    proc = subprocess.run(
        [sys.executable, "-c", SIMULATE, str(output)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"connected to the existing Dask scheduler at {dask_from_manifests.address}" in proc.stdout
    assert "SIMULATED 8 8" in proc.stdout, proc.stdout[-2000:]
    results = pd.read_parquet(output)
    assert sorted(results["slope"].unique()) == [0.5, 1.0, 2.0, 3.0]


CONNECT = """
import sys
from distributed import Client
try:
    with Client(sys.argv[1], timeout="5s") as client:
        client.submit(sum, [1, 2]).result(timeout=5)
except Exception as error:
    print("REFUSED", type(error).__name__, error)
else:
    print("CONNECTED")
"""


@pytest.mark.integration
@pytest.mark.parametrize(
    "case, expected",
    [
        ("the profile's pod environment", "CONNECTED"),
        ("plain tcp", "REFUSED"),
        ("plain tcp with the profile's pod environment", "REFUSED"),
        ("tls without a client certificate", "REFUSED"),
        ("tls without the environment", "REFUSED"),
    ],
)
def test_only_clients_with_the_profiles_tls_settings_connect(case, expected, dask_from_manifests):  # noqa: F811
    address, env, profile_env = (
        dask_from_manifests.address,
        _clean_environment(),
        dask_from_manifests.client_env(),
    )
    if "plain tcp" in case:
        address = address.replace("tls://", "tcp://")
    if "profile's pod environment" in case:
        env.update(profile_env)
    elif case == "tls without a client certificate":
        env.update({k: v for k, v in profile_env.items() if "CLIENT" not in k})
    proc = subprocess.run(
        [sys.executable, "-c", CONNECT, address], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.stdout.startswith(expected), proc.stdout + proc.stderr[-2000:]
