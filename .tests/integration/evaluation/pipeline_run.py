"""One real pipeline run (preprocess → kd_gat → evaluation via pipeline.smk, then --report) shared by the tests.

Readers of its artifacts: test_evaluation_module.py, test_report.py, test_notebook.py, test_kdgat_cli_pipeline.py,
test_tracking_workflow.py (same xdist group), and test_slurm_pipeline.py, which evaluates this run's trained
dataset under sbatch beside one it trains there. Each wraps :func:`shared_run` in a fixture of its own. The run
happens once per pytest session: within a process a module-level cache holds it; across pytest-xdist workers the
first worker to ask builds it while holding a file lock in the session's temporary root, and writes where it lies
(or why it failed) next to the lock, so that the others read it instead of training again (testkit.once_per_session).
A test that changes artifacts must work on a copy, as the group-job and sweep tests do: the others read them.
"""

from __future__ import annotations

import os
from pathlib import Path

from testkit import once_per_session, run_snakemake, venv_bin

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "config.yaml"
DATASET = "tiny_eval"
SEED = 7  # config.yaml's one kd_gat seed
VARIANTS = ("teacher", "student_kd", "student")
_RUNS: dict[str, Path] = {}


def tool_env() -> dict[str, str]:
    """PATH with the venv's bin first: the notebook rule shells out to papermill / jupyter-nbconvert."""
    return {"PATH": f"{Path(venv_bin('snakemake')).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def _run(workdir: Path) -> Path:
    common = ("--snakefile", str(HERE / "pipeline.smk"), "--directory", str(workdir),
              "--configfile", str(CONFIG))  # fmt: skip
    run_snakemake(*common, "--cores", "2", cwd=workdir, env=tool_env())
    run_snakemake(*common, "--report", str(workdir / "report.html"), cwd=workdir, env=tool_env())
    return workdir


def shared_run(tmp_path_factory) -> Path:
    if "run" not in _RUNS:
        _RUNS["run"] = once_per_session(tmp_path_factory, "evaluation_pipeline", _run)
    return _RUNS["run"]
