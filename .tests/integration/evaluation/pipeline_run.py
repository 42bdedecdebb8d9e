"""One real pipeline run (preprocess → kd_gat → evaluation via pipeline.smk, then --report) shared by the tests.

Test modules wrap :func:`shared_run` in their own session fixture; the module-level cache makes the run happen
once per pytest session however many modules ask for it.
"""

from __future__ import annotations

import os
from pathlib import Path

from testkit import run_snakemake, venv_bin

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "config.yaml"
DATASET = "tiny_eval"
SEED = 7  # config.yaml's one kd_gat seed
VARIANTS = ("teacher", "student_kd", "student")
_RUNS: dict[str, Path] = {}


def tool_env() -> dict[str, str]:
    """PATH with the venv's bin first: the notebook rule shells out to papermill / jupyter-nbconvert."""
    return {"PATH": f"{Path(venv_bin('snakemake')).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def shared_run(tmp_path_factory) -> Path:
    if "run" not in _RUNS:
        workdir = tmp_path_factory.mktemp("evaluation_pipeline")
        common = ("--snakefile", str(HERE / "pipeline.smk"), "--directory", str(workdir),
                  "--configfile", str(CONFIG))  # fmt: skip
        run_snakemake(*common, "--cores", "2", cwd=workdir, env=tool_env())
        run_snakemake(*common, "--report", str(workdir / "report.html"), cwd=workdir, env=tool_env())
        _RUNS["run"] = workdir
    return _RUNS["run"]
