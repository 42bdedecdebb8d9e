"""The `kdgat` command against the shared tiny pipeline run (preprocess -> kd_gat -> evaluation, made by Snakemake
through the wrappers): with the pipeline's config.yaml and inputs, each command writes what the workflow's job wrote
(model tensors, metrics, history, graphs, tables and figures equal; only timings differ). A training killed after
an epoch resumes from its checkpoint to the same result, under a terminal with a progress bar and in a pipe with
the log's epoch lines, as one tracked run."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import termios
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from evaluation.pipeline_run import CONFIG, DATASET, shared_run
from slurm.slurmkit import ACCOUNT, require_slurm
from testkit import venv_bin

from kdgat.cli import main
from kdgat.tracking.settings import FILE_STORE_OPT_IN
from kdgat.training.loop import KILL_AFTER_EPOCH_ENV

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_torch_thread", "restore_logging")]

# What differs between two runs of the same job: wall times, rates, memory peaks and the resume marker.
TIMING = {
    "train_seconds",
    "seconds",
    "graphs_per_s",
    "wall_time_s",
    "peak_memory_mb",
    "speed",
    "resumed_from_epoch",
}


SEED = yaml.safe_load(CONFIG.read_text())["kd_gat"]["seeds"][0]  # what the commands train without --seed


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Path:
    return shared_run(tmp_path_factory)


def folders(workdir: Path) -> dict[str, Path]:
    return {
        "data": workdir / "results" / "preprocess" / DATASET,
        "chain": workdir / "results" / "kd_gat" / DATASET,
        "evaluation": workdir / "results" / "evaluation" / DATASET,
    }


def kdgat(*args) -> int:
    return main([str(arg) for arg in args])


def same_tensors(a, b, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), where
        for key in a:
            same_tensors(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            same_tensors(x, y, f"{where}[{index}]")
    else:
        assert a == b, where


def same_torch_file(a: Path, b: Path) -> None:
    same_tensors(torch.load(a, weights_only=True), torch.load(b, weights_only=True), a.name)


def same_json(a: Path, b: Path) -> None:
    def load(path):
        return {k: v for k, v in json.loads(path.read_text()).items() if k not in TIMING}

    assert load(a) == load(b), a.name


def same_table(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(
        a.drop(columns=TIMING, errors="ignore"), b.drop(columns=TIMING, errors="ignore")
    )


def same_svg(a: Path, b: Path) -> None:
    """Equal figures: matplotlib names clip paths and glyphs with random ids; they are numbered in order here."""

    def canonical(text: str) -> str:
        names: dict[str, str] = {}
        for name in re.findall(r'id="([^"]+)"', text):
            names.setdefault(name, f"id{len(names)}")
        return re.sub(
            r'(?<=[#"])(' + "|".join(map(re.escape, names)) + r')(?=["\)])', lambda m: names[m[1]], text
        )

    assert canonical(a.read_text()) == canonical(b.read_text()), a.name


def test_preprocess_writes_what_build_graphs_wrote(pipeline, tmp_path, monkeypatch):
    monkeypatch.chdir(pipeline)  # the synthetic logs are where the workflow generated them
    assert kdgat("preprocess", "--config", CONFIG, "--dataset", DATASET, "--out", tmp_path) == 0
    workflow = folders(pipeline)["data"]
    for name in ("train.pt", "val.pt", "test.pt"):
        same_torch_file(tmp_path / name, workflow / name)
    assert (tmp_path / "vocab.json").read_text() == (workflow / "vocab.json").read_text()
    same_json(tmp_path / "metadata.json", workflow / "metadata.json")


@pytest.mark.parametrize(
    ("stage", "variant"), [("vgae", "teacher"), ("gat", "student_kd"), ("dqn", "student_kd")]
)
def test_train_writes_what_the_workflow_job_wrote(pipeline, tmp_path, stage, variant):
    where = folders(pipeline)
    args = ["--config", CONFIG, "--data", where["data"], "--chain", where["chain"], "--variant", variant]
    assert kdgat("train", stage, *args, "--out", tmp_path, "--tracking", "none", "--progress", "lines") == 0
    workflow = where["chain"] / f"seed_{SEED}" / variant / stage
    same_torch_file(tmp_path / "model.pt", workflow / "model.pt")
    same_json(tmp_path / "metrics.json", workflow / "metrics.json")
    same_table(pd.read_csv(tmp_path / "history.csv"), pd.read_csv(workflow / "history.csv"))
    assert not (tmp_path / "last.pt").exists()  # the checkpoint is dropped after success, as in the workflow


def test_evaluate_writes_what_the_workflow_wrote(pipeline, tmp_path, monkeypatch):
    where = folders(pipeline)
    monkeypatch.chdir(tmp_path)
    args = ["--config", CONFIG, "--chain", where["chain"], "--data", where["data"], "--dataset", DATASET]
    assert (
        kdgat("evaluate", *args, "--variant", "student", "--out", tmp_path / "out", "--log", "eval.log") == 0
    )
    assert "measuring inference speed" in (tmp_path / "eval.log").read_text()  # computed, not restored
    workflow = where["evaluation"] / f"seed_{SEED}" / "student"
    same_json(tmp_path / "out" / "metrics.json", workflow / "metrics.json")
    same_table(
        pd.read_parquet(tmp_path / "out" / "scores.parquet"), pd.read_parquet(workflow / "scores.parquet")
    )
    for figure in ("roc.svg", "pr.svg", "confusion.svg"):
        same_svg(tmp_path / "out" / figure, workflow / figure)


def test_baselines_writes_what_the_workflow_wrote(pipeline, tmp_path):
    where = folders(pipeline)
    args = ["--config", CONFIG, "--dataset", DATASET, "--data", where["data"], "--out", tmp_path]
    assert kdgat("baselines", *args) == 0
    same_json(tmp_path / "baselines.json", where["evaluation"] / "baselines.json")
    same_table(
        pd.read_parquet(tmp_path / "baseline_scores.parquet"),
        pd.read_parquet(where["evaluation"] / "baseline_scores.parquet"),
    )


def test_summarize_writes_what_the_workflow_wrote(pipeline, tmp_path):
    """The summarize_dataset rule's inputs: every seed's evaluations, the baselines, the first seed's curves."""
    where = folders(pipeline)
    variants, stages = ("teacher", "student_kd", "student"), ("vgae", "gat", "dqn")
    seeds = yaml.safe_load(CONFIG.read_text())["kd_gat"]["seeds"]
    metrics = [where["evaluation"] / f"seed_{s}" / v / "metrics.json" for s in seeds for v in variants]
    histories = [
        f"{v}/{s}={where['chain'] / f'seed_{SEED}' / v / s / 'history.csv'}" for v in variants for s in stages
    ]
    args = ["--metrics", *metrics, "--baselines", where["evaluation"] / "baselines.json", "--history", *histories,
            "--title", DATASET, "--out", tmp_path]  # fmt: skip
    assert kdgat("summarize", *args) == 0
    for name in ("summary.csv", "summary.md", "scenario_metrics.csv"):
        assert (tmp_path / name).read_text() == (where["evaluation"] / name).read_text(), name
    for figure in ("size_f1.svg", "training_curves.svg"):
        same_svg(tmp_path / figure, where["evaluation"] / figure)


def in_terminal(argv: list[str], env: dict) -> tuple[int, str]:
    """Run a command on a pseudo-terminal of 120 columns (an interactive shell's stdout and stderr)."""
    terminal, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    process = subprocess.Popen(argv, stdin=child, stdout=child, stderr=child, env=env, close_fds=True)
    os.close(child)
    output = []
    while True:
        try:
            chunk = os.read(terminal, 65536)
        except OSError:  # the terminal closes when the command has exited
            break
        if not chunk:
            break
        output.append(chunk)
    os.close(terminal)
    return process.wait(timeout=300), b"".join(output).decode(errors="replace")


@pytest.mark.slurm  # in the SLURM group: an allocation beside the other SLURM tests' jobs delays both past their timeouts
def test_a_training_killed_on_an_interactive_node_resumes_to_the_same_result(pipeline, tmp_path, monkeypatch):
    """README's recipe for an interactive node, `srun --pty kdgat ...` in an allocation (here a step of the local
    SLURM, which gives the command a terminal on the node): a bar of epochs and of batches with rate and ETA.
    Killed after epoch 1 (a node failure), the job resumes from its checkpoint, here in a pipe with the log's
    epoch lines, to the workflow's result, as one tracked run."""
    from mlflow import MlflowClient

    require_slurm()
    where = folders(pipeline)
    store = tmp_path / "mlruns"
    argv = [venv_bin("kdgat"), "train", "vgae", "--config", str(CONFIG), "--data", str(where["data"]),
            "--out", str(tmp_path / "out"), "--tracking-uri", str(store)]  # fmt: skip
    srun = ["srun", "--pty", f"--account={ACCOUNT}", "--job-name=kdgat-cli-pty", "--ntasks=1",
            "--cpus-per-task=1", "--mem=2000", "--time=5"]  # fmt: skip
    env = {**os.environ, "KDGAT_TRACKING_INVOCATION": "cli-resume-test"}
    code, shown = in_terminal([*srun, *argv], env | {KILL_AFTER_EPOCH_ENV: "1"})
    assert code != 0 and (tmp_path / "out" / "last.pt").exists(), shown[-3000:]  # SIGKILL after epoch 1
    assert re.search(r"vgae\[teacher\]: .*\d+/2 \[[0-9:]+<[0-9:?]+, +[0-9.?]+(epoch/s|s/epoch)", shown), shown
    assert re.search(r"batches: .*\d+/\d+ \[[0-9:]+<[0-9:?]+, +[0-9.?]+(batch/s|s/batch)", shown), shown

    resumed = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr and "after epoch 1" in resumed.stderr
    assert "vgae[teacher] epoch 2/2" in resumed.stderr and "\r" not in resumed.stderr  # lines, no bar
    workflow = where["chain"] / f"seed_{SEED}" / "teacher" / "vgae"
    same_torch_file(tmp_path / "out" / "model.pt", workflow / "model.pt")
    same_table(pd.read_csv(tmp_path / "out" / "history.csv"), pd.read_csv(workflow / "history.csv"))
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["resumed_from_epoch"] == 1

    # MLflow 3 opens a file store only when opted in; the kdgat command opted in for itself, not for this process
    # (which had it only when an earlier test in the same worker had tracked to a file store)
    monkeypatch.setenv(FILE_STORE_OPT_IN, "true")
    client = MlflowClient(tracking_uri=store.as_uri())
    experiment = client.get_experiment_by_name("kd_gat")
    (run,) = [r for r in client.search_runs([experiment.experiment_id]) if "kdgat.stage" in r.data.tags]
    assert run.info.status == "FINISHED" and run.data.tags["kdgat.entry"] == "kdgat train vgae"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [1, 2]
