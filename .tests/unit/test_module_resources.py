"""The resources the config's schema describes reach the rules' jobs: read from the parsed main workflow.

Snakemake's API parses the workflow without running it; a resource is evaluated for a job's wildcards at attempts 1
and 2 (the schema says which ones grow with the attempt)."""

from __future__ import annotations

from pathlib import Path

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
