"""The resources the config's schema describes reach the rules' jobs: read from the parsed main workflow.

Snakemake's API parses the workflow without running it; a resource is evaluated for a job's wildcards at attempts 1
and 2 (the schema says which ones grow with the attempt)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from testkit import REPO, parsed_workflow

# Each rule's threads and its mem_mb, runtime and gpu at attempts 1 and 2, for one dataset and seed.
RESOURCES = r"""
wildcards = {"dataset": "synth_hcrl", "seed": "42"}
job = SimpleNamespace(**wildcards, items=wildcards.items)

def value(resource, attempt, name):
    if not resource.is_evaluable():
        return resource.value
    return resource.evaluate(job, input=[], threads=1, attempt=attempt, rulename=name).value

print(json.dumps({
    rule.name: {
        "threads": rule.resources["_cores"].value,
        **{name: [value(rule.resources[name], attempt, rule.name) for attempt in (1, 2)]
           for name in ("mem_mb", "runtime", "gpu") if name in rule.resources},
    }
    for rule in workflow.rules
    if rule.name.startswith(("evaluation_evaluate_", "evaluation_baselines", "preprocess_build", "kd_gat_train_"))
}))
"""


def declared(tmp_path: Path, config: dict) -> dict:
    return parsed_workflow(tmp_path, config, RESOURCES, cores=64)


def test_evaluation_and_preprocess_jobs_ask_for_what_the_config_says(tmp_path: Path) -> None:
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config["evaluation"] |= {"threads": 3, "mem_mb": 4100, "runtime": 17, "gpu": 1}
    config["preprocess"] |= {"mem_mb": 3100, "runtime": 23}
    config["kd_gat"]["resources"] |= {"threads": 5}
    rules = declared(tmp_path, config)
    evaluations = [name for name in rules if name.startswith("evaluation_evaluate_")]
    assert len(evaluations) == 3, sorted(rules)
    for name in evaluations:
        # threads, GPUs; memory multiplied by the attempt, the wall-time limit not
        assert rules[name] == {"threads": 3, "mem_mb": [4100, 8200], "runtime": [17, 17], "gpu": [1, 1]}, name
    # the baselines, in the same group job, share the evaluation's memory and wall time
    assert rules["evaluation_baselines"]["mem_mb"] == [4100, 8200]
    assert rules["evaluation_baselines"]["runtime"] == [17, 17]
    # a graph-building job's memory and run time both grow with the attempt
    assert rules["preprocess_build_graphs"]["mem_mb"] == [3100, 6200]
    assert rules["preprocess_build_graphs"]["runtime"] == [23, 46]
    training = [name for name in rules if name.startswith("kd_gat_train_")]
    assert len(training) == 9 and all(rules[name]["threads"] == 5 for name in training), sorted(training)


LEARNED = r"""
wildcards = {"dataset": "synth_hcrl", "seed": "42"}
job = SimpleNamespace(**wildcards, items=wildcards.items)
print(json.dumps({
    name: workflow.get_rule(name).resources["mem_mb"].evaluate(
        job, input=[], threads=1, attempt=1, rulename=name
    ).value
    for name in ("evaluation_baselines", "kd_gat_train_dqn_teacher")
}))
"""


def test_every_module_learns_from_the_history_of_a_dataset_its_config_no_longer_lists(tmp_path: Path) -> None:
    """README: a job without history of its own dataset learns from "all of the rule's files (other datasets)" in
    the benchmark roots. The evaluation (and preprocess) modules constrain {dataset} to the datasets their config
    lists, so a dataset's earlier runs in a root were no history of theirs ("no benchmark history in ...", the
    configured value), where kd_gat learned from the same root."""
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    run = "300.00\t0:05:00\t3000.00\t1\t1\t1\t0\t0\t0\t1\n"
    for path in (
        "benchmarks/evaluation/can_old/baselines.tsv",
        "benchmarks/kd_gat/can_old/seed_0/teacher/dqn.tsv",
    ):
        (tmp_path / path).parent.mkdir(parents=True)
        (tmp_path / path).write_text(header + run)
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config["learned_resources"] = {"enabled": True}
    learned = math.ceil((3000 + 900) * 1.3)
    assert parsed_workflow(tmp_path, config, LEARNED) == {
        "evaluation_baselines": learned,
        "kd_gat_train_dqn_teacher": learned,
    }


def test_the_evaluation_module_puts_the_running_interpreters_bin_on_path(tmp_path: Path, monkeypatch) -> None:
    """The notebook rule shells out to papermill; `.venv/bin/snakemake` run without activating the venv must still
    find it: parsing the evaluation module puts the interpreter's bin folder first on PATH (a refactoring once
    dropped those lines unnoticed)."""
    import os
    import sys

    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    first = parsed_workflow(
        tmp_path, config, 'import os; print(json.dumps(os.environ["PATH"].split(os.pathsep)[0]))'
    )
    assert (
        first == str(Path(sys.executable).parent)
        and str(Path(sys.executable).parent) not in os.environ["PATH"]
    )


# The GPU request of every training and evaluation rule: what a job asks for (a resource of None is none).
GPU_REQUESTS = r"""
print(json.dumps({
    rule.name: {
        name: "<function>" if rule.resources[name].is_evaluable() else rule.resources[name].value
        for name in ("gpu", "gpu_model", "gpu_mem_mb")
        if name in rule.resources
        and (rule.resources[name].is_evaluable() or rule.resources[name].value is not None)
    }
    for rule in workflow.rules
    if rule.name.startswith(("evaluation_evaluate_", "kd_gat_train_"))
}))
"""
# What profiles/slurm gives the training rules (for the GPU type) and profiles/k8s the evaluations, over the rules'
# own requests.
PROFILE_GPUS = {
    "kd_gat_train_vgae_teacher": {"gpu": 1, "gpu_model": "v100"},
    "kd_gat_train_dqn_student": {"gpu": 1, "gpu_model": "v100"},
    "evaluation_evaluate_teacher": {"gpu": 1, "gpu_manufacturer": "nvidia"},
}


@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_jobs_that_run_on_the_cpu_by_the_config_ask_for_no_gpu(tmp_path: Path, device: str) -> None:
    """kd_gat.device cpu: the training jobs asked for gpu=1 all the same (and, under profiles/slurm, for a V100),
    so on SLURM they held a GPU they never used and waited in the GPU queue for it. Now a job that runs on the CPU
    by the config asks for no GPU, also where a profile's set-resources gives its rule one."""
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config["kd_gat"]["device"] = device
    config["evaluation"]["device"] = device
    config["learned_resources"] = {"enabled": True}  # would add gpu_mem_mb to GPU jobs
    asked = parsed_workflow(tmp_path, config, GPU_REQUESTS, set_resources=PROFILE_GPUS)
    training = [name for name in asked if name.startswith("kd_gat_train_")]
    evaluations = [name for name in asked if name.startswith("evaluation_evaluate_")]
    assert len(training) == 9 and len(evaluations) == 3, sorted(asked)
    if device == "cpu":
        assert all(asked[name] == {"gpu": 0} for name in training + evaluations), asked
    else:  # each rule's own request, or the profile's where it gives one
        for name in training:
            assert asked[name]["gpu"] == 1 and "gpu_mem_mb" in asked[name], (name, asked[name])
            assert ("gpu_model" in asked[name]) == (name in PROFILE_GPUS), (name, asked[name])
        assert asked["evaluation_evaluate_teacher"] == {"gpu": 1}
        assert asked["evaluation_evaluate_student"] == {"gpu": 0}  # evaluation.gpu of the shipped config


def test_gpus_for_an_evaluation_on_the_cpu_are_refused_naming_both_keys(tmp_path: Path) -> None:
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config["evaluation"] |= {"device": "cpu", "gpu": 1}
    with pytest.raises(AssertionError, match="evaluation.gpu is 1, but evaluation.device is cpu"):
        parsed_workflow(tmp_path, config, GPU_REQUESTS)
