"""The whole workflow (preprocess → kd_gat → evaluation, and calibration) through sbatch with profiles/slurm on the
real local SLURM, checked in sacct; then a training job cancelled with scancel mid-run and resumed.

One pipeline run (tiny config: two synthetic datasets, a few epochs) is shared by the assertions. Only what these
tests check must go through sbatch: every training rule, a preprocess, the synthetic_can and evaluation group jobs,
the calibration. So one dataset (tiny_cantt) is generated, preprocessed and trained there, and the other is the
shared tiny pipeline's (evaluation/pipeline_run.py, trained once per session for the evaluation, report, notebook,
CLI and tracking tests): its graphs and models are copied in and only its evaluation group job runs on SLURM.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from evaluation.pipeline_run import CONFIG as SHARED_CONFIG
from evaluation.pipeline_run import DATASET as SHARED_DATASET
from evaluation.pipeline_run import SEED, shared_run
from slurm.slurmkit import (
    ACCOUNT,
    LOCAL,
    profile_env,
    require_slurm,
    rule_of,
    run_on_slurm,
    sacct,
    snakemake_args,
    submitted_job_ids,
    wait_until,
)
from testkit import REPO, venv_bin

pytestmark = [pytest.mark.integration, pytest.mark.slurm]

WORKFLOW = REPO / "workflow" / "Snakefile"
# Layered over SHARED_CONFIG, whose dataset, preprocess and kd_gat settings and seed it takes.
CONFIG = LOCAL / "pipeline.yaml"
CONFIGS = ("--configfile", str(SHARED_CONFIG), str(CONFIG))
TRAINED_HERE = "tiny_cantt"
DATASETS = (TRAINED_HERE, SHARED_DATASET)
# What the shared run made for its dataset: the synthetic logs, the graphs, the trained models.
SHARED_FOLDERS = ("resources/preprocess", "results/preprocess", "results/kd_gat")
VARIANTS = ("teacher", "student_kd", "student")
STAGES = ("vgae", "gat", "dqn")
# The rules profiles/slurm gives a GPU (a V100) unless the config runs them on the CPU.
GPU_RULES = {f"kd_gat_train_{stage}_{variant}" for stage in STAGES for variant in VARIANTS}


class PipelineRun:
    def __init__(self, workdir: Path, output: str):
        self.workdir = workdir
        self.output = output
        self.job_ids = submitted_job_ids(output)
        self.rows = sacct(self.job_ids)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> PipelineRun:
    require_slurm()
    trained = shared_run(tmp_path_factory)
    workdir = tmp_path_factory.mktemp("slurm_pipeline")
    # copytree keeps the files' times, so Snakemake sees these outputs as up to date with their inputs.
    for folder in SHARED_FOLDERS:
        shutil.copytree(trained / folder / SHARED_DATASET, workdir / folder / SHARED_DATASET)
    run = run_on_slurm(workdir, WORKFLOW, *CONFIGS, timeout=1500)
    return PipelineRun(workdir, run.stdout)


def test_whole_pipeline_completes_through_sbatch(pipeline):
    for dataset in DATASETS:
        assert (pipeline.workdir / f"results/evaluation/{dataset}/summary.csv").is_file()
        for variant in VARIANTS:
            assert (
                pipeline.workdir / f"results/evaluation/{dataset}/seed_{SEED}/{variant}/metrics.json"
            ).is_file()
    assert (pipeline.workdir / "results/calibration/sir/calibration.html").is_file()
    # Every rule except the target-only `all` ran as a SLURM job, charged to the account from OSC_PROJECT.
    assert "Finished jobid: 0 (Rule: all)" in pipeline.output
    assert all(row["Account"] == ACCOUNT for row in pipeline.rows), pipeline.rows
    completed = {rule_of(row) for row in pipeline.rows if row["State"] == "COMPLETED"}
    assert GPU_RULES <= completed
    assert {"preprocess_build_graphs", "calibration_simulate", "calibration_calibrate"} <= completed
    # The shared dataset's graphs and models were used as they were: SLURM only evaluated them.
    made_here = [row["Comment"] for row in pipeline.rows if not rule_of(row).startswith("evaluation_")]
    assert not [comment for comment in made_here if SHARED_DATASET in comment], made_here
    trained_here = {rule_of(row) for row in pipeline.rows if TRAINED_HERE in row["Comment"]}
    assert GPU_RULES | {"preprocess_build_graphs"} <= trained_here, trained_here


def test_training_on_the_cpu_by_the_config_holds_no_gpu_on_slurm(pipeline):
    """kd_gat.device: cpu (this pipeline's, as the CPU torch cannot use the cluster's fake GPUs): the training rules,
    which profiles/slurm gives a V100 by name, ask for no GPU, so sbatch puts them on the cpu partition without a
    gres; they once held a GPU they never used. A rule that asks for a GPU gets the gpu partition and one GPU:
    test_slurm_profile.py's test_cpu_and_gpu_jobs_get_partition_account_and_gpus."""
    rules = {rule_of(row) for row in pipeline.rows}
    assert GPU_RULES <= rules, rules  # the training jobs ran through sbatch, or the loop passes vacuously
    for row in pipeline.rows:
        assert row["Partition"] == "cpu", row
        assert "gres/gpu" not in row["AllocTRES"], row


def group_submissions(output: str, group: str = "evaluation") -> dict[str, Path]:
    """SLURM job id → SLURM log of every job of this group (the plugin names group logs group_<group>_<rules>)."""
    found = re.findall(rf"submitted with SLURM jobid (\d+) \(log: (\S+/group_{group}_\S*/\d+\.log)\)", output)
    return {job_id: Path(log) for job_id, log in found}


def target_jobs(log: Path) -> list[tuple[str, frozenset]]:
    """The (rule, wildcards) of every member the group job ran, from the command line in its SLURM log."""
    targets = re.search(r"--target-jobs (.*?) --allowed-rules", log.read_text()).group(1)
    return [
        (rule, frozenset(pair for pair in wildcards.split(",") if pair))
        for rule, wildcards in re.findall(r"'?(\w+):([^'\s]*)'?", targets)
    ]


def member_resources(output: str) -> dict[tuple[str, frozenset], dict[str, int]]:
    """Threads, mem_mb and runtime of every job, as Snakemake printed them when it scheduled the job."""
    jobs, current = {}, None
    for line in output.splitlines():
        if match := re.fullmatch(r"\s*(?:local)?rule (\w+):", line):
            current = {"rule": match.group(1), "wildcards": frozenset(), "threads": 1}
        elif current is not None and (match := re.fullmatch(r"\s+(wildcards|threads|resources): (.*)", line)):
            key, value = match.groups()
            if key == "wildcards":
                current["wildcards"] = frozenset(value.split(", "))
            elif key == "threads":
                current["threads"] = int(value)
            else:
                pairs = dict(item.split("=", 1) for item in value.split(", "))
                current |= {"mem_mb": int(pairs["mem_mb"]), "runtime": int(pairs["runtime"])}
                jobs[(current["rule"], current["wildcards"])] = current
    return jobs


@pytest.mark.parametrize("group", ["evaluation", "synthetic_can"])
def test_group_jobs_ask_for_their_largest_member_not_the_sum(pipeline, group):
    """Members of a group job run one after another inside the allocation: the request must be the largest
    member's CPUs and memory, for the sum of the members' runtimes (profiles/slurm/profile.yaml, group_slot)."""
    jobs = member_resources(pipeline.output)
    groups = group_submissions(pipeline.output, group)
    assert groups, f"no {group} group job in the run"
    rows = {row["JobID"]: row for row in pipeline.rows}
    for job_id, log in groups.items():
        members = [jobs[target] for target in target_jobs(log)]
        assert len(members) > 1, members
        # Summing would ask for more: the test tells the two apart.
        assert sum(m["mem_mb"] for m in members) > max(m["mem_mb"] for m in members)
        asked = subprocess.run(
            ["sacct", "-X", "-P", "-n", "-j", job_id, "-o", "AllocCPUS,ReqMem,TimelimitRaw"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.split("|")
        assert rows[job_id]["State"] == "COMPLETED", rows[job_id]
        assert int(asked[0]) == max(m["threads"] for m in members), (job_id, asked, members)
        assert asked[1] == f"{max(m['mem_mb'] for m in members)}M", (job_id, asked, members)
        assert int(asked[2]) == sum(m["runtime"] for m in members), (job_id, asked, members)


def test_evaluation_group_is_one_slurm_job_per_dataset(pipeline):
    groups = group_submissions(pipeline.output)
    assert len(groups) == len(DATASETS), groups
    datasets_seen = []
    for log in groups.values():
        targets = re.search(r"--target-jobs (.*?) --allowed-rules", log.read_text()).group(1)
        members = re.findall(r"'?(\w+):dataset=(\w+)'?", targets)
        assert sorted(rule for rule, _ in members) == sorted(
            [f"evaluation_evaluate_{variant}" for variant in VARIANTS]
            + ["evaluation_baselines", "evaluation_summarize_dataset"]
        ), members
        assert len({dataset for _, dataset in members}) == 1, members
        datasets_seen.append(members[0][1])
    assert sorted(datasets_seen) == sorted(DATASETS)
    # No evaluation rule was submitted on its own.
    rows = {row["JobID"]: row for row in pipeline.rows}
    solo = [row for job_id, row in rows.items() if job_id not in groups and "evaluate" in row["Comment"]]
    assert not solo, solo
    # The evaluation group runs on CPUs (see profiles/slurm/profile.yaml); its size: the test above.
    for job_id in groups:
        row = rows[job_id]
        assert row["Partition"] == "cpu" and "gres/gpu" not in row["AllocTRES"], row


def test_scancelled_training_job_is_detected_and_resumes_from_its_checkpoint(pipeline):
    """Cancel the teacher's VGAE training mid-run: Snakemake sees the job as failed, resubmits it (the rule's
    retries), and the new attempt resumes from the per-epoch checkpoint instead of starting over."""
    workdir = pipeline.workdir
    dataset = DATASETS[0]
    target = f"results/kd_gat/{dataset}/seed_{SEED}/teacher/vgae/model.pt"
    log = workdir / f"logs/kd_gat/{dataset}/seed_{SEED}/teacher/vgae.log"
    log.unlink(missing_ok=True)
    # More epochs than the pipeline run: a different training configuration, so the old checkpoint is not used.
    longer = workdir / "longer-vgae.yaml"
    longer.write_text("kd_gat:\n  training:\n    vgae: {epochs: 300, patience: 300, batch_size: 32}\n")
    console = workdir / "cancel-run.txt"
    with console.open("w") as out:
        run = subprocess.Popen(
            [
                venv_bin("snakemake"),
                *snakemake_args(workdir, WORKFLOW, *CONFIGS, str(longer)),
                "--forcerun",
                "kd_gat_train_vgae_teacher",
                "--",
                target,
            ],  # fmt: skip
            cwd=workdir,
            env={**os.environ, **profile_env(workdir)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: submitted_job_ids(console.read_text()), 180, "the training job submission")
        job_id = submitted_job_ids(console.read_text())[0]
        epochs_logged = lambda: len(re.findall(r"epoch\s+\d+", log.read_text())) if log.exists() else 0  # noqa: E731
        wait_until(lambda: epochs_logged() >= 3, 300, "three training epochs")
        subprocess.run(["scancel", job_id], check=True, timeout=30)
        assert run.wait(timeout=600) == 0, console.read_text()[-4000:]
    finally:
        if run.poll() is None:
            run.kill()
    output = console.read_text()
    assert f"SLURM-job '{job_id}' failed, SLURM status is: 'CANCELLED'" in output
    assert len(submitted_job_ids(output)) == 2, output
    assert re.search(r"resumed from \S+last\.pt after epoch \d+", log.read_text()), log.read_text()[-3000:]
    assert (workdir / target).is_file()
