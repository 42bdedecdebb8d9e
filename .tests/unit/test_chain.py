"""The chain's vocabulary (kdgat.chain) is the one the schemas, the modules and the profiles use."""

from __future__ import annotations

import re

import pytest
import yaml
from testkit import REPO, run_snakemake

from kdgat.can.formats import FORMATS, WRITE_FORMATS
from kdgat.chain import (
    DEFAULT_SEEDS,
    GPU_TRAINING_RULES,
    STAGES,
    SWEEP_VARIANTS,
    TRAINING_RULES,
    VARIANTS,
    evaluation_rule,
    training_rule,
)

MODULES = REPO / "workflow" / "modules"


def schema(module: str) -> dict:
    return yaml.safe_load((MODULES / module / "schemas" / "config.schema.yaml").read_text())


def test_kd_gat_schema_enums_are_the_chains():
    kd_gat = schema("kd_gat")["properties"]["kd_gat"]["properties"]
    assert kd_gat["variants"]["items"]["enum"] == list(VARIANTS)
    assert kd_gat["variants"]["default"] == list(VARIANTS)
    assert kd_gat["sweep"]["properties"]["variant"]["enum"] == list(SWEEP_VARIANTS)
    assert kd_gat["presets"]["additionalProperties"]["required"] == list(STAGES)
    assert list(kd_gat["presets"]["additionalProperties"]["properties"]) == list(STAGES)
    assert list(kd_gat["training"]["properties"]) == list(STAGES)


def test_default_seeds_are_the_chains():
    kd_gat = schema("kd_gat")["properties"]["kd_gat"]["properties"]
    assert kd_gat["seeds"]["default"] == list(DEFAULT_SEEDS)
    # The evaluation module's seeds come from kdgat.evaluation.targets, whose default is the chain's.
    from kdgat.evaluation.targets import configured_seeds

    assert "SEEDS = configured_seeds(config)" in (MODULES / "evaluation" / "common.smk").read_text()
    assert configured_seeds({}) == list(DEFAULT_SEEDS)


def test_the_evaluation_seeds_stop_at_the_schemas_maximum_naming_the_key():
    """The evaluation module used alone has no kd_gat schema: configured_seeds took 2**32, which the schema refuses
    and numpy's generators too, once a job runs."""
    from kdgat.evaluation.targets import MAX_SEED, configured_seeds

    seeds = schema("kd_gat")["properties"]["kd_gat"]["properties"]["seeds"]["items"]
    assert (seeds["minimum"], seeds["maximum"]) == (0, MAX_SEED)
    assert configured_seeds({"kd_gat": {"seeds": [0, MAX_SEED]}}) == [0, MAX_SEED]
    with pytest.raises(
        ValueError,
        match=rf"^config key 'kd_gat.seeds' must be .* up to {MAX_SEED}; \[{MAX_SEED + 1}\] are above$",
    ):
        configured_seeds({"kd_gat": {"seeds": [3, MAX_SEED + 1]}})


def test_preprocess_schema_formats_are_the_registered_ones():
    dataset = schema("preprocess")["$defs"]["dataset"]["properties"]
    assert dataset["format"]["enum"] == ["auto", *FORMATS]
    assert dataset["synthetic"]["properties"]["format"]["enum"] == list(WRITE_FORMATS)


def test_rule_names_follow_the_vocabulary():
    assert len(TRAINING_RULES) == len(STAGES) * len(VARIANTS) == 9
    assert training_rule("gat", "student_kd") == "train_gat_student_kd"
    assert GPU_TRAINING_RULES[-1] == "train_gat_sweep"


@pytest.fixture(scope="module")
def sweep_config(tmp_path_factory):
    """The demo config with the CAN-IDS targets and the Paramspace sweep switched on."""
    path = tmp_path_factory.mktemp("chain") / "sweep.yaml"
    overrides = {
        "targets": {"can_ids": True, "calibration": False},
        "kd_gat": {"sweep": {"enabled": True, "table": str(REPO / "config" / "params.tsv")}},
    }
    path.write_text(yaml.safe_dump(overrides))
    return path


@pytest.fixture(scope="module")
def listed_rules(sweep_config, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("list_rules")
    args = ("--configfile", str(REPO / "config" / "config.yaml"), str(sweep_config), "-d", str(workdir))
    output = run_snakemake("--list-rules", *args, cwd=REPO).stdout
    return {
        line.strip() for line in output.splitlines() if re.fullmatch(r"\s*[A-Za-z_][A-Za-z_0-9]*\s*", line)
    }


@pytest.fixture(scope="module")
def gpu_rules(sweep_config, tmp_path_factory):
    """Rules whose jobs ask for a GPU in the demo DAG with the sweep: from Snakemake's own dry run."""
    workdir = tmp_path_factory.mktemp("dry_run")
    args = ("--configfile", str(REPO / "config" / "config.yaml"), str(sweep_config), "-d", str(workdir))
    output = run_snakemake("-n", "--forceall", *args, "all", "kd_gat_all", cwd=REPO).stdout
    rules = set()
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", output):
        name = re.match(r"(?:local)?rule (\w+):", block)
        gpu = re.search(r"^\s+resources:.*\bgpu=(\d+)", block, flags=re.M)
        if name and gpu and int(gpu.group(1)) > 0:
            rules.add(name.group(1))
    return rules


def test_module_rules_are_the_chains(listed_rules):
    kd_gat = {rule for rule in listed_rules if rule.startswith("kd_gat_")}
    assert kd_gat == {"kd_gat_all"} | {f"kd_gat_{rule}" for rule in GPU_TRAINING_RULES}
    evaluation = {f"evaluation_{evaluation_rule(variant)}" for variant in VARIANTS}
    assert evaluation <= listed_rules


def test_gpu_rules_of_the_dag_are_the_chains_training_rules(gpu_rules):
    assert gpu_rules == {f"kd_gat_{rule}" for rule in GPU_TRAINING_RULES}


def profile_gpu_rules(profile: str) -> set[str]:
    path = {"slurm": REPO / "profiles/slurm/profile.yaml", "k8s": REPO / "profiles/k8s/config.yaml"}[profile]
    settings = yaml.safe_load(path.read_text())["set-resources"]
    if profile == "slurm":  # a YTE template: `?gpu` is the GPU request computed from the environment
        return {rule for rule, value in settings.items() if value == "?gpu"}
    return {rule for rule, value in settings.items() if isinstance(value, dict) and value.get("gpu", 0) >= 1}


@pytest.mark.parametrize("profile", ["slurm", "k8s"])
def test_profiles_give_every_gpu_rule_its_gpu_settings(profile, gpu_rules, listed_rules):
    configured = profile_gpu_rules(profile)
    assert gpu_rules <= configured, f"{profile} misses GPU settings for {sorted(gpu_rules - configured)}"
    assert configured <= listed_rules, (
        f"{profile} names rules that do not exist: {sorted(configured - listed_rules)}"
    )
