"""profiles/slurm: what its README and comments state, checked without a cluster.

- The evaluation group of the shipped workflow (members, CPUs, memory, time limit), from a dry run through the
  profile. The request is computed by Snakemake's own GroupResources.basic_layered with the profile's global
  resources, as a SLURM run computes it (the SLURM tests compare that with sacct:
  .tests/integration/test_slurm_pipeline.py::test_group_jobs_ask_for_their_largest_member_not_the_sum).
- The dry run has no `sbatch` on PATH and the checks left on: they must be skipped.
- The scratch, cache and GPU-type defaults, from renders of the template with yte (as Snakemake renders it).
- The default mem_mb against OSC's memory per core, and the driver minimums against kdgat.runtime.
"""

from __future__ import annotations

import collections
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
import yte
from snakemake_executor_plugin_slurm.utils import set_gres_string
from testkit import REPO, SlurmJobResources, flat_text

from kdgat import runtime
from kdgat.chain import evaluation_rule

PROFILE = REPO / "profiles" / "slurm"
README = PROFILE / "README.md"
SHIPPED_CONFIG = REPO / "config" / "config.yaml"
SLURM_COMMANDS = {
    "sbatch",
    "srun",
    "salloc",
    "squeue",
    "scontrol",
    "sacct",
    "sacctmgr",
    "scancel",
    "sinfo",
    "sstat",
}
SLURM_ENV = ("OSC_PROJECT", "SNAKEMAKE_SCRATCH", "SNAKEMAKE_OUTPUT_CACHE", "SNAKEMAKE_SLURM_GPU_MODEL")


def path_without_slurm(directory: Path) -> str:
    """This PATH with SLURM's commands taken out: directories holding one are replaced by `directory`, which
    links to everything else they hold (the plugin itself runs `which sacct`)."""
    directory.mkdir(exist_ok=True)
    kept = []
    for entry in os.environ["PATH"].split(os.pathsep):
        folder = Path(entry)
        if not folder.is_dir():
            continue
        names = {path.name for path in folder.iterdir()}
        if not names & SLURM_COMMANDS:
            kept.append(entry)
            continue
        for name in names - SLURM_COMMANDS:
            link = directory / name
            if not link.exists() and not link.is_symlink():
                link.symlink_to(folder / name)
    path = os.pathsep.join([*kept, str(directory)])
    assert not any((Path(entry) / "sbatch").exists() for entry in path.split(os.pathsep))
    return path


# ---------------------------------------------------------------------------------------------------------------
# The evaluation group (README "Group jobs ...": Evaluation group)
# ---------------------------------------------------------------------------------------------------------------

# Runs `snakemake` (arguments from the command line), then prints every group job of the DAG with the request
# Snakemake makes for it on a cluster (run_local=False: what the slurm executor submits; a dry run itself runs
# locally and would sum the toposort levels).
GROUP_PROBE = """
import json, sys
import snakemake.api  # imports Snakemake's modules in their own order
from snakemake import dag as dag_module
from snakemake.resources import GroupResources

dags = []
original_init = dag_module.DAG.__init__


def recording_init(self, *args, **kwargs):
    original_init(self, *args, **kwargs)
    dags.append(self)


dag_module.DAG.__init__ = recording_init


def report():
    groups = {id(group): group for dag in dags for job in dag.jobs if (group := dag.get_job_group(job))}
    found = []
    for group in groups.values():
        asked = GroupResources.basic_layered(
            toposorted_jobs=group.toposorted,
            constraints=group.global_resources,
            run_local=False,
            additive_resources=["runtime"],
            sortby=["runtime"],
        )
        found.append({
            "group": sorted({job.rule.group for job in group.jobs}),
            "datasets": sorted({job.wildcards_dict.get("dataset", "") for job in group.jobs}),
            "members": sorted(job.rule.name for job in group.jobs),
            # and the group job's gres (sbatch --gres), only where its members give one
            "asked": {key: asked.get(key) for key in ("_cores", "mem_mb", "runtime", "gres") if key != "gres" or asked.get(key)},
        })
    print("GROUPS " + json.dumps(found))


try:
    from snakemake.cli import main
    main(sys.argv[1:])
finally:
    report()
"""


def dry_run_with_the_profile(
    workdir: Path,
    *configfiles: Path,
    later_profiles: tuple[Path, ...] = (),
    targets: tuple[str, ...] = (),
    snakefile: Path = REPO / "workflow" / "Snakefile",
) -> subprocess.CompletedProcess:
    """`snakemake -n --profile profiles/slurm` of the main workflow (or `snakefile`) for `targets` (its default
    target when none), no sbatch on PATH, checks not switched off, `later_profiles` layered after it. --cores 64: a
    dry run caps every rule's threads at --cores (1 by default), a SLURM run does not."""
    probe = workdir / "probe.py"
    probe.write_text(GROUP_PROBE)
    env = {name: value for name, value in os.environ.items() if name != "SNAKEMAKE_SLURM_CHECKS"}
    env.update(
        PATH=path_without_slurm(workdir / "bin"),
        OSC_PROJECT="pas1234",
        SNAKEMAKE_SCRATCH=str(workdir / "scratch"),
        SNAKEMAKE_OUTPUT_CACHE=str(workdir / "cache"),
    )
    return subprocess.run(
        [
            sys.executable,
            str(probe),
            "--profile",
            str(PROFILE),
            *(argument for later in later_profiles for argument in ("--profile", str(later))),
            "--snakefile",
            str(snakefile),
            "--configfile",
            str(SHIPPED_CONFIG),
            *map(str, configfiles),
            "--directory",
            str(workdir / "run"),
            "--dry-run",
            "--cores",
            "64",
            *targets,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=workdir,
        env=env,
    )


def evaluation_groups(result: subprocess.CompletedProcess) -> list[dict]:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("GROUPS ")]
    return [group for group in json.loads(line.removeprefix("GROUPS ")) if group["group"] == ["evaluation"]]


def merged_config(*paths: Path) -> dict:
    config: dict = {}
    for path in paths:
        for key, value in yaml.safe_load(path.read_text()).items():
            config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    return config


def readme_formula(config: dict) -> dict:
    """The README's evaluation group for `config`: V x S + 2 members; the larger of evaluation.threads and 1 CPU;
    the larger of evaluation.mem_mb and the summary's 1000 MB; (V x S + 1) x evaluation.runtime + 10 minutes."""
    evaluations = len(config["kd_gat"]["variants"]) * len(config["kd_gat"]["seeds"])
    evaluation = config["evaluation"]
    return {
        "members": evaluations + 2,
        "asked": {
            "_cores": max(evaluation["threads"], 1),
            "mem_mb": max(evaluation["mem_mb"], 1000),
            "runtime": (evaluations + 1) * evaluation["runtime"] + 10,
        },
    }


@pytest.fixture(scope="module")
def shipped_groups(tmp_path_factory) -> list[dict]:
    return evaluation_groups(dry_run_with_the_profile(tmp_path_factory.mktemp("shipped")))


def test_the_readmes_evaluation_group_is_the_shipped_workflows(shipped_groups):
    config = merged_config(SHIPPED_CONFIG)
    expected = readme_formula(config)
    assert sorted(dataset for group in shipped_groups for dataset in group["datasets"]) == sorted(
        config["datasets"]
    ), "one evaluation job per dataset"
    for group in shipped_groups:
        counts = collections.Counter(group["members"])
        assert counts.pop("evaluation_baselines") == 1 and counts.pop("evaluation_summarize_dataset") == 1, (
            counts
        )
        assert counts == {
            f"evaluation_evaluate_{variant}": len(config["kd_gat"]["seeds"])
            for variant in config["kd_gat"]["variants"]
        }
        assert {"members": len(group["members"]), "asked": group["asked"]} == expected, group["datasets"]
    # The README's numbers for the shipped config, and its formula in words.
    variants, seeds = len(config["kd_gat"]["variants"]), len(config["kd_gat"]["seeds"])
    runtime_per_member = config["evaluation"]["runtime"]
    text = flat_text(README)
    assert f"{variants} × {seeds} + 2 = **{expected['members']} members**" in text
    limit = f"{variants * seeds + 1} × {runtime_per_member} + 10 = **{expected['asked']['runtime']} minutes**"
    assert limit in text
    assert f"{expected['asked']['mem_mb']} MB and {expected['asked']['_cores']} CPU" in text
    assert "of V × S + 2 members, for V variants and S seeds" in text
    assert "(V × S + 1) × `evaluation.runtime` + 10 minutes" in text
    assert "larger of `evaluation.threads` and 1 CPU" in text
    assert "larger of `evaluation.mem_mb` and the summary's 1000 MB" in text
    # The shipped values the README names.
    for key in ("runtime", "mem_mb", "threads"):
        assert f"`{key}: {config['evaluation'][key]}`" in text, key
    assert f"({variants} variants, {seeds} seeds," in text


def test_the_readmes_formula_holds_for_other_variants_seeds_and_sizes(tmp_path):
    """Two variants, two seeds, another runtime, more threads, and evaluation.mem_mb below the summary's 1000 MB."""
    other = tmp_path / "other.yaml"
    other.write_text(
        "kd_gat:\n  variants: [teacher, student]\n  seeds: [7, 8]\n"
        "evaluation:\n  runtime: 30\n  mem_mb: 500\n  threads: 2\n"
    )
    groups = evaluation_groups(dry_run_with_the_profile(tmp_path, other))
    expected = readme_formula(merged_config(SHIPPED_CONFIG, other))
    assert expected == {"members": 6, "asked": {"_cores": 2, "mem_mb": 1000, "runtime": 160}}
    assert len(groups) == len(merged_config(SHIPPED_CONFIG)["datasets"])
    for group in groups:
        assert {"members": len(group["members"]), "asked": group["asked"]} == expected, group


def evaluation_gpu_config(directory: Path) -> Path:
    config = directory / "gpu.yaml"
    config.write_text("evaluation:\n  gpu: 1\n")
    return config


def test_evaluation_gpu_is_refused_in_the_dry_run_while_the_evaluations_share_the_group_job(tmp_path):
    """README "Evaluation group": a GPU per member of the evaluation group job fails on SLURM, so the dry run
    stops, naming the key, the group and where the way out is written."""
    result = dry_run_with_the_profile(tmp_path, evaluation_gpu_config(tmp_path))
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0, output[-3000:]
    assert (
        "evaluation.gpu is 1, but under profiles/slurm rule evaluation_evaluate_teacher is in the group job "
        "'evaluation' with evaluation_baselines, evaluation_evaluate_student, evaluation_evaluate_student_kd, "
        "evaluation_summarize_dataset: inside a group job the slurm plugin asks srun for a GPU per member"
    ) in output, output[-3000:]
    assert "Set evaluation.gpu to 0" in output
    assert "(profiles/slurm/README.md, Evaluation group)" in output


def refused_evaluation_gpu(result: subprocess.CompletedProcess, prefix: str) -> None:
    """The dry run stopped on evaluation.gpu in the group job, the rules named as the workflow names them."""
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0, output[-3000:]
    assert (
        f"evaluation.gpu is 1, but under profiles/slurm rule {prefix}evaluate_teacher is in the group job "
        f"'evaluation' with {prefix}baselines, {prefix}evaluate_student, {prefix}evaluate_student_kd, "
        f"{prefix}summarize_dataset: inside a group job the slurm plugin asks srun for a GPU per member"
    ) in output, output[-3000:]


@pytest.mark.parametrize("target", ["evaluation_all", "results/evaluation/summary.csv"])
def test_evaluation_gpu_is_refused_for_a_target_other_than_all_that_needs_an_evaluation(tmp_path, target):
    """The refusal ran in the input of `rule all` only: `snakemake evaluation_all` (or a summary file) under the
    profile passed the dry run and submitted the group jobs that SLURM refuses."""
    refused_evaluation_gpu(
        dry_run_with_the_profile(tmp_path, evaluation_gpu_config(tmp_path), targets=(target,)), "evaluation_"
    )


def test_evaluation_gpu_is_not_refused_for_a_target_that_needs_no_evaluation(tmp_path):
    result = dry_run_with_the_profile(tmp_path, evaluation_gpu_config(tmp_path), targets=("kd_gat_all",))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_evaluation_gpu_is_refused_for_the_evaluation_module_imported_alone(tmp_path):
    """A downstream Snakefile importing only the evaluation module (its rules renamed lab_*) never reached the
    check, which lived in the main workflow's common.smk."""
    snakefile = tmp_path / "Snakefile"
    snakefile.write_text(
        f'module evaluation:\n    snakefile:\n        "{REPO}/workflow/modules/evaluation/Snakefile"\n'
        "    config:\n        config\n\n\nuse rule * from evaluation as lab_*\n"
    )
    result = dry_run_with_the_profile(
        tmp_path, evaluation_gpu_config(tmp_path), targets=("lab_all",), snakefile=snakefile
    )
    refused_evaluation_gpu(result, "lab_")


def test_training_on_the_cpu_by_the_config_asks_slurm_for_no_gpu(tmp_path):
    """The profile's set-resources give every training rule gpu=1 and the GPU type: with kd_gat.device cpu the
    jobs held a V100 they never used (and waited in the GPU queue). The dry run shows each job's request."""
    cpu = tmp_path / "cpu.yaml"
    cpu.write_text("kd_gat:\n  device: cpu\n")
    result = dry_run_with_the_profile(tmp_path, cpu, targets=("kd_gat_all",))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    requests = re.findall(
        r"^rule (kd_gat_train_\w+):\n(?:\s+\w+:.*\n)*?\s+resources: (.*)$", result.stdout, re.M
    )
    config = merged_config(SHIPPED_CONFIG)
    jobs = len(config["datasets"]) * len(config["kd_gat"]["seeds"]) * len(config["kd_gat"]["variants"]) * 3
    assert len(requests) == jobs, requests  # a job per dataset, seed, variant and stage (VGAE, GAT, DQN)
    for rule, resources in requests:
        assert "gpu=0" in resources.split(", ") and "gpu_model" not in resources, (rule, resources)


@pytest.mark.parametrize(("resource", "value"), [("gpu", 1), ("gpus", 2)])
def test_a_profiles_set_resources_giving_a_grouped_evaluation_a_gpu_is_refused_naming_the_setting(
    tmp_path, resource, value
):
    """The refusal keyed on evaluation.gpu only: a later profile whose set-resources gave an evaluation rule a GPU,
    with evaluation.gpu 0, passed the dry run, and the group job's jobstep then asked srun for the members' GPUs
    inside the job (Snakemake passes set-resources on to it), which SLURM refuses, as for evaluation.gpu."""
    overrides = tmp_path / "my-overrides"
    overrides.mkdir()
    (overrides / "profile.yaml").write_text(
        f"set-resources:\n  evaluation_evaluate_teacher:\n    {resource}: {value}\n"
    )
    no_gpu = tmp_path / "no_gpu.yaml"
    no_gpu.write_text("evaluation:\n  gpu: 0\n")
    result = dry_run_with_the_profile(tmp_path, no_gpu, later_profiles=(overrides,))
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0, output[-3000:]
    assert (
        f"set-resources gives rule evaluation_evaluate_teacher {resource}={value} (a profile's set-resources or "
        "--set-resources), but under profiles/slurm the rule is in the group job 'evaluation' with "
        "evaluation_baselines, evaluation_evaluate_student, evaluation_evaluate_student_kd, "
        "evaluation_summarize_dataset: inside a group job the slurm plugin asks srun for a GPU per member, more "
        f"than the job holds, and SLURM refuses the job. Remove {resource} from evaluation_evaluate_teacher's "
        "set-resources (the evaluation runs on CPUs; evaluation.gpu is 0), or give the evaluation rules their own "
        "jobs with a later profile (profiles/slurm/README.md, Evaluation group)"
    ) in output, output[-3000:]


EVALUATION_GROUP = sorted(
    [
        "evaluation_baselines",
        "evaluation_summarize_dataset",
        *(
            f"evaluation_{evaluation_rule(variant)}"
            for variant in merged_config(SHIPPED_CONFIG)["kd_gat"]["variants"]
        ),
    ]
)


def dry_run_with_gres(tmp_path, gres: str, rules: list[str]) -> subprocess.CompletedProcess:
    """The dry run through the profile and a later one whose set-resources give `rules` the gres `gres`."""
    overrides = tmp_path / "my-overrides"
    overrides.mkdir()
    (overrides / "profile.yaml").write_text(
        yaml.safe_dump({"set-resources": {rule: {"gres": gres} for rule in rules}})
    )
    no_gpu = tmp_path / "no_gpu.yaml"
    no_gpu.write_text("evaluation:\n  gpu: 0\n")
    return dry_run_with_the_profile(tmp_path, no_gpu, later_profiles=(overrides,))


@pytest.mark.parametrize("gres", ["gpu:1", "gpu:v100:1"])
def test_a_gpu_gres_the_grouped_evaluations_do_not_share_is_refused_naming_the_rule_and_the_group(
    tmp_path, gres
):
    """set-resources giving one grouped evaluation rule a gres naming a GPU: the srun of each member inside the
    group job passes no gres (the jobstep reads gpus, gpu and nvidia_gpu only), and Snakemake asks for a group job's
    gres only when all members give the same, so it stopped with its own line naming neither the rule nor the
    setting nor what to do ("Resource gres is a string but not all jobs in group require the same value")."""
    result = dry_run_with_gres(tmp_path, gres, ["evaluation_evaluate_teacher"])
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0, output[-3000:]
    others = [rule for rule in EVALUATION_GROUP if rule != "evaluation_evaluate_teacher"]
    assert (
        f"set-resources gives rule evaluation_evaluate_teacher gres={gres} (a profile's set-resources or "
        "--set-resources), but under profiles/slurm the rule is in the group job 'evaluation' with "
        f"{', '.join(others)}, and {', '.join(f'{rule} (no gres)' for rule in others)} do not ask for the same gres."
    ) in output, output[-3000:]
    assert (
        "the slurm jobstep's srun of each member passes no gres (it reads gpus, gpu and nvidia_gpu only)"
        in output
    )
    assert "set-resources is per rule, and a group job has no resources of its own" in output
    assert (
        f"give every rule of the group ({', '.join(EVALUATION_GROUP)}) gres={gres} in your later profile's "
        f"set-resources (the group job then asks sbatch for --gres={gres} once"
    ) in output, output[-3000:]
    assert (
        "remove gres from evaluation_evaluate_teacher's set-resources (the evaluation runs on CPUs)" in output
    )


def test_the_same_gpu_gres_on_every_rule_of_the_evaluation_group_is_the_group_jobs_gres(tmp_path):
    """What the refusal above tells to do: the same gres on every member passes the dry run, the evaluations stay
    one group job per dataset, and that job asks sbatch for the gres once (the plugin's own flag)."""
    result = dry_run_with_gres(tmp_path, "gpu:1", EVALUATION_GROUP)
    groups = evaluation_groups(result)
    assert groups and all(sorted(set(group["members"])) == EVALUATION_GROUP for group in groups), groups
    for group in groups:
        assert group["asked"]["gres"] == "gpu:1", group
        flags = set_gres_string(SimpleNamespace(resources=SlurmJobResources(group["asked"])))
        assert flags.strip() == "--gres=gpu:1", flags


def readme_gpu_evaluation_profile() -> str:
    """The YAML block the README gives for evaluating on GPUs (Evaluation group)."""
    text = README.read_text()
    start = text.index("To evaluate on GPUs anyway")
    block = text[
        text.index("```yaml\n", start) + len("```yaml\n") : text.index(
            "```", text.index("```yaml", start) + 7
        )
    ]
    return "\n".join(line.removeprefix("    ") for line in block.splitlines()) + "\n"


def test_the_readmes_gpu_evaluation_profile_keeps_synthetic_can_and_gives_each_evaluation_its_own_job(
    tmp_path,
):
    """The later profile of the README, with evaluation.gpu: 1: the dry run passes, every synthetic CAN file is
    still in the one synthetic_can job (a later `groups:` replaces the profile's mapping), and every evaluation is
    a job of its own."""
    overrides = tmp_path / "my-overrides"
    overrides.mkdir()
    (overrides / "profile.yaml").write_text(readme_gpu_evaluation_profile())
    assert yaml.safe_load((overrides / "profile.yaml").read_text())["groups"]["preprocess_generate_can"] == (
        "synthetic_can"
    )
    result = dry_run_with_the_profile(tmp_path, evaluation_gpu_config(tmp_path), later_profiles=(overrides,))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("GROUPS ")]
    groups = json.loads(line.removeprefix("GROUPS "))
    config = merged_config(SHIPPED_CONFIG)
    (synthetic,) = [group for group in groups if group["group"] == ["synthetic_can"]]
    assert set(synthetic["members"]) == {"preprocess_generate_can"}
    assert sorted(synthetic["datasets"]) == sorted(config["datasets"])
    evaluations = [group for group in groups if group["group"][0].startswith("eval_")]
    assert len(evaluations) == len(config["datasets"]) * len(config["kd_gat"]["variants"]) * len(
        config["kd_gat"]["seeds"]
    )
    assert {len(group["members"]) for group in evaluations} == {1}


def test_without_sbatch_on_path_the_checks_are_skipped(shipped_groups, tmp_path):
    """README "Preflight": where sbatch is not on PATH the checks are skipped. The dry run above ran without sbatch
    and without SNAKEMAKE_SLURM_CHECKS; the same start with an sbatch that refuses everything is stopped."""
    assert shipped_groups
    refusing = tmp_path / "refusing"
    refusing.mkdir()
    (refusing / "sbatch").write_text("#!/bin/sh\necho 'sbatch: error: refused by the test' >&2\nexit 1\n")
    (refusing / "sbatch").chmod(0o755)
    env = {name: value for name, value in os.environ.items() if name != "SNAKEMAKE_SLURM_CHECKS"}
    env.update(
        PATH=f"{refusing}{os.pathsep}{path_without_slurm(tmp_path / 'bin')}",
        OSC_PROJECT="pas1234",
        SNAKEMAKE_SCRATCH=str(tmp_path / "scratch"),
        SNAKEMAKE_OUTPUT_CACHE=str(tmp_path / "cache"),
    )
    script = "import sys\nfrom snakemake.cli import parse_args\nparse_args(sys.argv[1:])\n"
    refused = subprocess.run(
        [sys.executable, "-c", script, "--profile", str(PROFILE)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )
    assert refused.returncode != 0
    assert "no job submitted, these settings would fail" in refused.stderr, refused.stderr
    assert "refused by the test" in refused.stderr


# ---------------------------------------------------------------------------------------------------------------
# Rendered defaults (README "Parameters")
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def render(tmp_path, monkeypatch):
    """Render profile.yaml with yte, as Snakemake does, with `env` set and the other SLURM variables unset; no
    sbatch on PATH; os.makedirs recorded instead of run (the default cache is under /fs/scratch)."""
    created = []
    monkeypatch.setattr(os, "makedirs", lambda path, exist_ok=False: created.append(str(path)))

    def render_with(**env) -> tuple[dict, list[str]]:
        monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
        for name in SLURM_ENV:
            monkeypatch.setenv(name, "recorded so that the test puts it back")
            monkeypatch.delenv(name)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        created.clear()
        return yte.process_yaml((PROFILE / "profile.yaml").read_text(), require_use_yte=True), created

    return render_with


def readme_row(variable: str) -> str:
    """The README's row for `variable` in the table of parameters."""
    (row,) = [line for line in README.read_text().splitlines() if line.startswith(f"| `{variable}` |")]
    return row


def readme_default(variable: str) -> str:
    return readme_row(variable).split("|")[2].strip()


def test_scratch_and_cache_default_to_osc_project_and_user(render, monkeypatch):
    monkeypatch.setenv("USER", "alice")
    rendered, created = render(OSC_PROJECT="pas1234")
    scratch = (
        readme_default("SNAKEMAKE_SCRATCH")
        .strip("`")
        .replace("<OSC_PROJECT in upper case>", "PAS1234")
        .replace("$USER", "alice")
    )
    assert scratch == "/fs/scratch/PAS1234/alice/snakemake"
    assert rendered["slurm-logdir"] == f"{scratch}/slurm_logs"
    assert rendered["slurm-efficiency-report-path"] == f"{scratch}/efficiency_reports"
    cache = readme_default("SNAKEMAKE_OUTPUT_CACHE").strip("`").replace("$SNAKEMAKE_SCRATCH", scratch)
    assert os.environ["SNAKEMAKE_OUTPUT_CACHE"] == cache == f"{scratch}/cache"
    assert created == [cache]


def test_the_cache_follows_a_scratch_that_is_set(render, tmp_path):
    rendered, created = render(OSC_PROJECT="pas1234", SNAKEMAKE_SCRATCH=str(tmp_path / "mine"))
    assert rendered["slurm-logdir"] == f"{tmp_path / 'mine'}/slurm_logs"
    assert os.environ["SNAKEMAKE_OUTPUT_CACHE"] == created[0] == f"{tmp_path / 'mine'}/cache"


def gres_strings(rendered: dict) -> set[str]:
    """The GPU flags the slurm plugin writes for the profile's set-resources entries."""
    entries = rendered["set-resources"].values()
    return {set_gres_string(SimpleNamespace(resources=SlurmJobResources(entry))).strip() for entry in entries}


def test_an_empty_gpu_model_asks_for_any_gpu(render):
    default_flag, any_flag = re.findall(r"\(`(--gpus=[^`]+)`\)", readme_row("SNAKEMAKE_SLURM_GPU_MODEL"))
    rendered, _ = render(OSC_PROJECT="pas1234")
    assert readme_default("SNAKEMAKE_SLURM_GPU_MODEL") == "`v100`"
    assert gres_strings(rendered) == {default_flag} == {"--gpus=v100:1"}
    rendered, _ = render(OSC_PROJECT="pas1234", SNAKEMAKE_SLURM_GPU_MODEL="")
    assert all(entry == {"gpu": 1} for entry in rendered["set-resources"].values()), rendered["set-resources"]
    assert gres_strings(rendered) == {any_flag} == {"--gpus=1"}


def test_the_profile_renders_without_sbatch_and_with_the_checks_on(render):
    """Outside Snakemake the checks could not even find the profile's directory: a render that passes with
    SNAKEMAKE_SLURM_CHECKS unset shows they were skipped because sbatch is missing."""
    rendered, _ = render(OSC_PROJECT="pas1234", SNAKEMAKE_SLURM_CHECKS="on")
    assert rendered["executor"] == "slurm"


@pytest.mark.parametrize("value", ["false", "0", "no", "disabled"])
def test_a_checks_switch_other_than_on_or_off_is_refused(render, value):
    """README ("Parameters"): `off` skips the checks. A researcher who writes another word for it would
    otherwise get the checks anyway, without a word; `OFF` and ` on ` are read as meant."""
    with pytest.raises(
        yte.exceptions.YteError, match=rf"SNAKEMAKE_SLURM_CHECKS='{value}': expected on or off"
    ):
        render(OSC_PROJECT="pas1234", SNAKEMAKE_SLURM_CHECKS=value)
    for meant in ("OFF", " on ", "Off"):
        rendered, _ = render(OSC_PROJECT="pas1234", SNAKEMAKE_SLURM_CHECKS=meant)
        assert rendered["executor"] == "slurm"


# ---------------------------------------------------------------------------------------------------------------
# Memory per core (README "Memory") and the values the README names
# ---------------------------------------------------------------------------------------------------------------


def test_the_default_mem_mb_is_one_core_on_the_nodes_the_readme_names(render):
    rendered, _ = render(OSC_PROJECT="pas1234")
    mem_mb = rendered["default-resources"]["mem_mb"]
    text = flat_text(README)
    assert f"`mem_mb: {mem_mb}` by default" in text and f"So {mem_mb} MB is one core on both" in text
    # The README's memory per core on the 40- and 48-core nodes, and the partitions it names for them.
    claims = {
        cores: float(gb) for gb, cores in re.findall(r"(\d\.\d{3}) GB (?:per core )?on the (\d\d)-core", text)
    }
    assert list(claims) == ["40", "48"], claims
    nodes = {cores: name for name, cores in re.findall(r"`([\w-]+)` \((\d\d)-core\)", text)}
    assert nodes == {"40": "cpu", "48": "cpu-exp"}, nodes
    # OSC's usable memory per node, as partitions.yaml's comments quote it, and each partition's cores.
    source = (PROFILE / "partitions.yaml").read_text()
    partitions = yaml.safe_load(source)["partitions"]
    for cores, per_core_gb in claims.items():
        (usable_gb,) = re.findall(rf"x {cores}-core [\w ]+?, ([\d.]+) GB usable", source)
        threads = partitions[nodes[cores]]["max_threads"]
        assert threads == int(cores)
        assert round(float(usable_gb) / threads, 3) == per_core_gb, (cores, usable_gb, per_core_gb)
        # The lower reading, 1 GB = 1000 MB (OSC's 1024 MB only adds to it); not max_mem_mb / max_threads,
        # which rounds the node down (partitions.yaml).
        assert mem_mb <= float(usable_gb) * 1000 / threads, (nodes[cores], mem_mb)
    smallest = min(claims.values())
    assert f"so {smallest} GB is {smallest * 1024:.0f} MB" in text


def test_the_readmes_profile_values_are_the_profiles(render):
    rendered, _ = render(OSC_PROJECT="pas1234")
    text = flat_text(README)
    assert f"`retries: {rendered['retries']}`" in text
    assert f"**jobs: {rendered['jobs']}**" in text and f"`latency-wait: {rendered['latency-wait']}`" in text
    assert f"jobs below {round(rendered['slurm-efficiency-threshold'] * 100)} % are flagged" in text
    assert rendered["keep-going"] is rendered["rerun-incomplete"] is rendered["printshellcmds"] is True
    assert f"({rendered['slurm-init-seconds-before-status-checks']} s here" in text


# ---------------------------------------------------------------------------------------------------------------
# NVIDIA driver minimums (README "GPU stack")
# ---------------------------------------------------------------------------------------------------------------

DRIVER = re.compile(r"\b([4-9]\d\d)\b")


def driver_sentences(text: str) -> list[str]:
    """The README's sentences (or ;-separated parts) that speak of a driver and hold a driver-like number."""
    parts = re.split(r"(?<=[.;])\s+", text)
    return [part for part in parts if "driver" in part and DRIVER.search(part)]


def test_every_driver_minimum_in_the_readme_is_runtimes():
    """Each "driver N" the README states is a minimum in kdgat.runtime.MINIMUM_DRIVER (the value select_device
    names in its refusal), for the CUDA major it is stated for, unless the sentence calls it a recommendation."""
    text = flat_text(README)
    sentences = driver_sentences(text)
    assert len(sentences) >= 3, sentences
    for sentence in sentences:
        if "recommend" in sentence:
            continue
        for number in DRIVER.findall(sentence):
            assert int(number) in runtime.MINIMUM_DRIVER.values(), (number, sentence)
    paired = [
        *[(cu[:2], n) for n, cu in re.findall(r"(\d{3}) or newer for cu(\d{3})", text)],
        *[(major, n) for major, n in re.findall(r"CUDA (\d+) builds need driver (\d{3})", text)],
        *[(major, n) for major, n in re.findall(r"older than CUDA (\d+) needs \((\d{3})", text)],
    ]
    assert len(paired) >= 4, paired
    for major, number in paired:
        assert runtime.MINIMUM_DRIVER[int(major)] == int(number), (major, number)


# ---------------------------------------------------------------------------------------------------------------
# Plugin versions, the test cluster's overrides, the memory figures (README introduction, "What the profile
# sets", "Tested how")
# ---------------------------------------------------------------------------------------------------------------


def test_every_plugin_version_the_readme_names_is_pyprojects_pin():
    """ "snakemake-executor-plugin-slurm 2.8.0 (jobstep 0.6.1; both pinned in `pyproject.toml`)", and every later
    "plugin 2.8.0" / "jobstep 0.6.1": a bumped pin leaves no sentence about the old version behind."""
    pins = dict(
        re.findall(
            r'"(snakemake-executor-plugin-slurm(?:-jobstep)?)==([\d.]+)"',
            (REPO / "pyproject.toml").read_text(),
        )
    )
    plugin, jobstep = pins["snakemake-executor-plugin-slurm"], pins["snakemake-executor-plugin-slurm-jobstep"]
    text = flat_text(README)
    assert f"{plugin} (jobstep {jobstep}; both pinned in `pyproject.toml`" in text
    plugins = re.findall(r"plugin ([\d]+\.[\d.]*\d)", text)
    jobsteps = re.findall(r"jobstep ([\d]+\.[\d.]*\d)", text)
    assert len(plugins) >= 3 and set(plugins) == {plugin}, plugins
    assert len(jobsteps) >= 2 and set(jobsteps) == {jobstep}, jobsteps


def test_the_test_clusters_profile_changes_the_three_timing_and_queue_keys_the_readme_names(render):
    """ "`.tests/integration/slurm/profile`, which changes three timing and queue-size keys"."""
    assert "`.tests/integration/slurm/profile`, which changes three timing and queue-size keys" in flat_text(
        README
    )
    overrides = yaml.safe_load((REPO / ".tests/integration/slurm/profile/profile.yaml").read_text())
    assert set(overrides) == {"jobs", "latency-wait", "slurm-init-seconds-before-status-checks"}
    rendered, _ = render(OSC_PROJECT="pas1234")
    assert all(overrides[key] < rendered[key] for key in overrides), (overrides, rendered)


def test_the_memory_figures_the_readme_states_are_the_code_and_partition_files():
    """`learned_resources.mem_overhead_mb`, 900; the `max_mem_mb: 177000` of `partitions.yaml` on both regular
    nodes (40- and 48-core), 177000 / 48 = 3687.5."""
    from resource_history.settings import LearnedResourceSettings

    text = flat_text(README)
    overhead = LearnedResourceSettings().mem_overhead_mb
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    assert schema["properties"]["learned_resources"]["properties"]["mem_overhead_mb"]["default"] == overhead
    assert f"`learned_resources.mem_overhead_mb`, {overhead}, covers them)" in text
    partitions = yaml.safe_load((PROFILE / "partitions.yaml").read_text())["partitions"]
    regular = {partitions[name]["max_mem_mb"] for name in ("cpu", "cpu-exp")}
    (max_mem,) = regular
    assert f"`max_mem_mb: {max_mem}` of `partitions.yaml` rounds both nodes down" in text
    assert f"{max_mem} / 48 = {max_mem / 48:g} MB is not OSC's memory per core" in text
    assert max_mem <= 177.96 * 1000 and max_mem <= 177.98 * 1000


def cuda_evaluation_config(directory: Path) -> Path:
    config = directory / "cuda.yaml"
    config.write_text("evaluation:\n  device: cuda\n  gpu: 0\n")
    return config


def test_cuda_evaluation_without_a_gpu_is_refused_under_the_profile(tmp_path):
    """evaluation.device cuda with evaluation.gpu 0: the profile gives the evaluation rules no GPU, so each job ran
    on a CPU node and stopped where CUDA was missing, after its inputs had been trained for. The dry run stops."""
    result = dry_run_with_the_profile(tmp_path, cuda_evaluation_config(tmp_path))
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0, output[-3000:]
    assert (
        "evaluation.device is cuda, but evaluation.gpu is 0: on slurm (profiles/slurm) rule evaluation_evaluate_"
    ) in output, output[-3000:]
    assert "Set evaluation.device to auto (CUDA where the job holds a GPU, else the CPU) or cpu" in output


def test_cuda_evaluation_with_a_gpu_a_later_profile_gives_is_not_refused(tmp_path):
    """A later profile's set-resources giving the evaluation rules a GPU (their own jobs, README's Evaluation
    group) is what evaluation.device cuda needs: not refused."""
    later = tmp_path / "own-jobs"
    later.mkdir()
    rules = [
        f"evaluation_{evaluation_rule(variant)}"
        for variant in merged_config(SHIPPED_CONFIG)["kd_gat"]["variants"]
    ]
    (later / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "set-resources": {rule: {"gpu": 1} for rule in rules},
                "groups": {"preprocess_generate_can": "synthetic_can", **{rule: rule for rule in rules}},
            }
        )
    )
    result = dry_run_with_the_profile(tmp_path, cuda_evaluation_config(tmp_path), later_profiles=(later,))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_cuda_evaluation_without_a_gpu_is_refused_by_a_cluster_executor_without_the_profile(tmp_path):
    """`--executor slurm` without profiles/slurm (no SNAKEMAKE_SLURM_PROFILE): the executor the run uses counts,
    and the keys are named as the importing workflow's config file names them. No sbatch on PATH: nothing could be
    submitted had the check let the run through."""
    (tmp_path / "lab.yaml").write_text(
        yaml.safe_dump(
            {"lab": {"datasets": {"lab": {}}, "kd_gat": {"seeds": [3]}, "evaluation": {"device": "cuda"}}}
        )
    )
    (tmp_path / "Snakefile").write_text(
        f'configfile: "lab.yaml"\n\n\nmodule evaluation:\n    snakefile:\n        "{REPO}/workflow/modules/evaluation/'
        'Snakefile"\n    config:\n        config["lab"]\n\n\nuse rule * from evaluation as lab_*\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--executor", "slurm", "--jobs", "1"],
        cwd=tmp_path,
        env={**os.environ, "PATH": path_without_slurm(tmp_path / "bin")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0, output[-3000:]
    assert (
        "lab.evaluation.device is cuda, but lab.evaluation.gpu is 0: on the slurm executor rule lab_evaluate_"
    ) in output, output[-3000:]
