"""Helpers shared by the tests (importable as ``testkit`` because pytest puts ``.tests/`` on sys.path).

Components that CI installs (SLURM, Azurite, ...) are *required* when ``CI`` is set: a test that
cannot find them fails there instead of silently skipping. On a developer machine it skips with a
message saying which script brings the component up.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require(available: bool, what: str, how: str) -> None:
    """Skip locally, fail in CI, when a component the test needs is missing."""
    if available:
        return
    message = f"{what} is not available ({how})"
    if IN_CI:
        pytest.fail(f"CI must provide it: {message}")
    pytest.skip(message)


def import_required(module: str, how: str):
    """Import a module a test needs: skip locally, fail in CI, when it is missing (see ``require``)."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        if IN_CI:
            raise
        pytest.skip(f"{module} is not available ({how}): {error}", allow_module_level=True)


def pretend_cpu_wheel(monkeypatch, tmp_path: Path) -> None:
    """Make torch look like its CPU wheel on a machine that holds no GPU, whatever this machine has: tests of the
    loud GPU failure ran into the real GPU on the GPU check's machine (a CUDA build) and failed there."""
    import torch

    from kdgat import runtime

    for name in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: [])  # what a CPU build answers
    monkeypatch.setattr(runtime, "NVIDIA_CONTROL_DEVICE", tmp_path / "no-nvidiactl")
    monkeypatch.setattr(runtime, "capability_from_nvidia_smi", lambda: None)
    monkeypatch.setattr(runtime, "driver_from_nvidia_smi", lambda: None)


def venv_bin(name: str) -> str:
    """A console script from the running interpreter's environment (the project venv)."""
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else (shutil.which(name) or name)


def run_snakemake(
    *args: str,
    cwd: Path | str = REPO,
    env: dict | None = None,
    timeout: int = 1200,
    check: bool = True,
    without: Iterable[str] = (),
) -> subprocess.CompletedProcess:
    """Run the real ``snakemake`` CLI in this environment plus ``env``, minus the variables named in ``without``;
    stdout and stderr are merged into ``.stdout``."""
    dropped = set(without)
    proc = subprocess.run(
        [venv_bin("snakemake"), *args],
        cwd=cwd,
        env={k: v for k, v in {**os.environ, **(env or {})}.items() if k not in dropped},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-8000:]}")
    return proc


def once_per_session(tmp_path_factory, name: str, build: Callable[[Path], Path]) -> Path:
    """``build(<a new temporary folder>)`` once per pytest session, its result shared by every module that asks.

    Under pytest-xdist the first worker to ask builds while the others wait on a file lock, then read where the
    result lies (pytest-xdist's recipe for a once-per-session fixture). In a single process the caller's own cache
    must keep the result: the notes would land beside earlier sessions' folders there.
    """
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return build(tmp_path_factory.mktemp(name))
    # Each worker's basetemp is <session root>/popen-gwN: the session root belongs to this session alone.
    return once_across_workers(
        tmp_path_factory.getbasetemp().parent, name, lambda: tmp_path_factory.mktemp(name), build
    )


def once_across_workers(
    root: Path, name: str, new_folder: Callable[[], Path], build: Callable[[Path], Path]
) -> Path:
    """The lock-and-notes protocol of :func:`once_per_session` in the folder ``root`` shared by the workers."""
    from filelock import FileLock

    done, failed = root / f"{name}.path", root / f"{name}.failed"
    with FileLock(root / f"{name}.lock"):
        if done.is_file():
            return Path(done.read_text())
        if failed.is_file():  # not twice: the same build would fail the same way, minutes later
            pytest.fail(f"{name}: building it failed in another worker:\n{failed.read_text()}")
        try:
            result = build(new_folder())
        except BaseException as error:
            failed.write_text(f"{type(error).__name__}: {str(error)[-8000:]}")
            raise
        done.write_text(str(result))
        return result


@contextmanager
def dask_client(n_workers: int, threads_per_worker: int = 1) -> Iterator:
    """A client of a LocalCluster of worker processes on loopback, with Dask's allowed-failures at 0 and the
    lost-worker timeout as in the clusters simcal starts (a worker death reaches simcal's own count at once; a
    worker a test ended is kept while its restart is slow under load, as a module-scoped cluster's next test needs).
    """
    import dask
    from distributed import Client, LocalCluster

    from simcal.backends import LOCAL_LOST_WORKER_TIMEOUT

    settings = {
        "distributed.scheduler.allowed-failures": 0,
        "distributed.deploy.lost-worker-timeout": LOCAL_LOST_WORKER_TIMEOUT,
    }
    with dask.config.set(settings):
        with LocalCluster(
            n_workers=n_workers,
            threads_per_worker=threads_per_worker,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
        ) as cluster:
            with Client(cluster) as connected:
                yield connected


def wait_for(
    check: Callable[[], object], timeout_s: float = 20.0, what: str = "the condition", interval_s: float = 0.1
):
    """``check()``'s first truthy value, polled every ``interval_s``; fails naming ``what`` after ``timeout_s``."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


class SlurmJobResources(dict):
    """A job's resources as snakemake-executor-plugin-slurm reads them: .get(name) and attribute access."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError as error:
            raise AttributeError(name) from error


def count_header_reads(monkeypatch) -> dict[str, int]:
    """``{file name: times read}`` of the graph files' headers (kdgat.graph_store's memory-mapped reads) from now on
    in this test; the reads themselves still happen (errors included)."""
    import kdgat.graph_store as store

    reads: dict[str, int] = {}
    read = store.load_torch

    def counted(path, what, mmap=False):
        if mmap:
            reads[Path(path).name] = reads.get(Path(path).name, 0) + 1
        return read(path, what, mmap=mmap)

    monkeypatch.setattr(store, "load_torch", counted)
    return reads


def flat_text(path: Path) -> str:
    """A document's text with every run of whitespace as one space: a claim reads the same however it is wrapped."""
    return " ".join(Path(path).read_text().split())


def role_grants(role: dict) -> set[tuple[str, str, str]]:
    """Every (API group, resource, verb) a Kubernetes Role's rules grant."""
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


PARSE_WORKFLOW = """
import json, sys
from pathlib import Path
from types import SimpleNamespace

from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings, StorageSettings

with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
    workflow = api.workflow(
        resource_settings=ResourceSettings(cores=int(sys.argv[3]), overwrite_resources=json.loads(sys.argv[4])),
        storage_settings=StorageSettings(),
        config_settings=ConfigSettings(configfiles=[Path(sys.argv[1])]),
        snakefile=Path(sys.argv[2]),
    )._workflow
"""


def parsed_workflow(
    folder: Path,
    config: dict,
    report: str,
    cores: int = 1,
    snakefile: Path | None = None,
    set_resources: dict | None = None,
):
    """What ``report`` prints as its last line, as JSON: Python run after Snakemake's API has parsed the main
    workflow (or ``snakefile``) with ``config`` (written to ``folder``) into ``workflow``, without running
    anything. ``report`` is indented as the body of the API's ``with`` block. ``set_resources``: rule -> resources,
    as a profile's set-resources gives them."""
    import yaml

    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    script = PARSE_WORKFLOW + textwrap.indent(textwrap.dedent(report), "    ")
    snakefile = str(snakefile or REPO / "workflow/Snakefile")
    proc = subprocess.run(
        [sys.executable, "-c", script, "config.yaml", snakefile, str(cores), json.dumps(set_resources or {})],
        cwd=folder, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- the small files of one simulated parameter set, as simcal's pages read them ------------------------------------


def one_simulation_file(folder: Path, params: dict | None = None, outputs: dict | None = None) -> Path:
    """``simulations.parquet``: parameter set p (``params``, beta 0.3 by default) simulated once (replicate 0, seed 1,
    status ok) on days 0 and 1, with ``outputs`` (incidence 1.0 and 2.0 by default)."""
    import pandas as pd

    outputs = {"incidence": [1.0, 2.0]} if outputs is None else outputs
    simulations = pd.DataFrame(
        {"param_id": "p", "replicate": 0, "seed": 1, "status": "ok", "day": [0, 1], **outputs}
    )
    path = folder / "simulations.parquet"
    simulations.assign(**({"beta": 0.3} if params is None else params)).to_parquet(path)
    return path


def one_set_sweep_files(
    folder: Path, params: dict | None = None, outputs: dict | None = None, **table_columns: Any
) -> list[Path]:
    """A sweep of that one simulation, as visualize_sweep reads it: ``one_simulation_file``, its summary table
    ``table.parquet`` (param_id p, ``params``, then ``table_columns``, each one value) and an empty
    ``summary.json``. The three paths, visualize_sweep's inputs."""
    import pandas as pd

    simulations = one_simulation_file(folder, params, outputs)
    params = {"beta": 0.3} if params is None else params
    columns = {**params, **table_columns}
    table = pd.DataFrame({"param_id": ["p"], **{name: [value] for name, value in columns.items()}})
    table.to_parquet(folder / "table.parquet")
    (folder / "summary.json").write_text("{}")
    return [simulations, folder / "table.parquet", folder / "summary.json"]


def one_trial_calibration_files(
    folder: Path,
    params: dict | None = None,
    outputs: dict | None = None,
    observed: dict | None = None,
    phase: str = "design",
) -> list[Path]:
    """A calibration of that one simulation, as visualize reads it: ``one_simulation_file``, ``observed.csv`` on
    days 0 and 1 (``observed``, incidence 1 and 2 by default), ``trials.parquet`` (trial 0 of ``phase``: p with
    ``params``, loss 1), ``best.json`` (p of that phase, beta 0.3 alone) and an empty ``summary.json``. The
    trials, simulations and observed paths, visualize's first three inputs."""
    import pandas as pd

    simulations = one_simulation_file(folder, params, outputs)
    observed = {"incidence": [1, 2]} if observed is None else observed
    pd.DataFrame({"day": [0, 1], **observed}).to_csv(folder / "observed.csv", index=False)
    params = {"beta": 0.3} if params is None else params
    trials = pd.DataFrame({"trial": [0], "round": 0, "phase": phase, "param_id": "p", **params, "loss": 1.0})
    trials.to_parquet(folder / "trials.parquet")
    best = {"param_id": "p", "loss": 1.0, "params": {"beta": 0.3}, "phase": phase}
    (folder / "best.json").write_text(json.dumps(best))
    (folder / "summary.json").write_text("{}")
    return [folder / "trials.parquet", simulations, folder / "observed.csv"]


TRAINING_OUTPUTS = {"model": "model.pt", "metrics": "metrics.json", "history": "history.csv"}


def wrapper_refusal(wrapper: str, tmp_path: Path, capsys, inputs: dict, params: dict, outputs=None) -> str:
    """The message with which ``wrappers/<wrapper>/wrapper.py``, run as Snakemake runs it (a ``snakemake`` global,
    a rule log), refuses a user's mistake: exit status 1, the one ERROR line ``<wrapper> failed: <message>`` in
    the log and the same line alone on stderr, no traceback, nothing written under ``tmp_path/out`` (where the
    ``outputs``, by default a training job's, go)."""
    import runpy
    from types import SimpleNamespace

    from snakemake.iocontainers import Namedlist

    from wrapper_rules import InputRefused

    log = tmp_path / "logs" / f"{wrapper}.log"
    log.unlink(missing_ok=True)  # the log of this run alone (a wrapper's log set-up appends)
    files = TRAINING_OUTPUTS if outputs is None else outputs
    snakemake = SimpleNamespace(
        input=Namedlist(fromdict={name: str(path) for name, path in inputs.items()}),
        output=Namedlist(fromdict={name: str(tmp_path / "out" / file) for name, file in files.items()}),
        params=Namedlist(fromdict=params),
        log=Namedlist([str(log)]),
        threads=1,
        resources=Namedlist(),
        rule=wrapper,
    )
    with pytest.raises(InputRefused) as ended:
        runpy.run_path(str(REPO / "wrappers" / wrapper / "wrapper.py"), {"snakemake": snakemake}, "__main__")
    assert ended.value.code == 1
    text = log.read_text()
    errors = [line for line in text.splitlines() if " ERROR " in line]
    assert "Traceback" not in text and len(errors) == 1, text
    message = errors[0].split(f" {wrapper} failed: ", 1)[1]
    assert capsys.readouterr().err == f"{wrapper} failed: {message}\n"
    assert not (tmp_path / "out").exists()
    return message


def signalled_mid_write(script: str, folder: Path, signum: int) -> int:
    """Run ``script`` (Python, given ``folder`` as its argument) in a process of its own, send it ``signum`` once it
    has made ``folder/writing`` (its sign of a write under way), and return its exit status."""
    import signal
    import time

    job = subprocess.Popen([sys.executable, "-c", script, str(folder)], env={"PYTHONPATH": str(REPO / "src")})
    deadline = time.monotonic() + 60
    while not (folder / "writing").exists():
        assert job.poll() is None and time.monotonic() < deadline, "the job never started writing"
        time.sleep(0.05)
    job.send_signal(signal.Signals(signum))
    return job.wait(timeout=60)
