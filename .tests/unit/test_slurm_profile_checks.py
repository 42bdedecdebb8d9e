"""profiles/slurm without a cluster: the shipped partition file as snakemake-executor-plugin-slurm reads it, the
MinJobAge guard against the status-check delay in effect, and the torch version in the documented install lines.

The SLURM tests (.tests/integration/test_slurm_*.py) use a partition file of their own for the local cluster, so
the shipped one is read here with the plugin's own parser (PartitionLimits(**entry): a misspelt key is a
TypeError) and partition choice (Executor.get_partition_arg). MinJobAge is read by the plugin's own
get_min_job_age from a fake `scontrol` on PATH.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest
import snakemake_executor_plugin_slurm as plugin
import yaml
import yte
from snakemake_executor_plugin_slurm.partitions import PartitionLimits, read_partition_file
from snakemake_interface_common.exceptions import WorkflowError
from testkit import REPO, SlurmJobResources, flat_text

from kdgat import runtime

PROFILE = REPO / "profiles" / "slurm"
PARTITION_FILE = PROFILE / "partitions.yaml"
README = PROFILE / "README.md"


def load_preflight():
    spec = importlib.util.spec_from_file_location("slurm_preflight", REPO / "scripts" / "slurm_preflight.py")
    module = sys.modules["slurm_preflight"] = importlib.util.module_from_spec(spec)  # as the profile loads it
    spec.loader.exec_module(module)
    return module


preflight = load_preflight()

# ---------------------------------------------------------------------------------------------------------------
# The shipped partition file
# ---------------------------------------------------------------------------------------------------------------

# What profiles/slurm/README.md ("What the profile sets": Partitions) promises, as the plugin reads the file.
PROMISED = {
    "cpu": {"max_threads": 40, "max_gpu": 0},
    "cpu-exp": {"max_threads": 48, "max_gpu": 0},
    "gpu": {"max_threads": 40, "max_gpu": 2, "available_gpu_models": ["v100"], "available_constraints": None},
    "gpu-exp": {
        "max_threads": 48,
        "max_gpu": 2,
        "available_gpu_models": ["v100"],
        "available_constraints": ["v100-32g"],
    },
    "gpu-quad": {"max_threads": 48, "max_gpu": 4, "available_gpu_models": ["v100"]},
    "largemem": {"max_gpu": 0},
}
# Listed for jobs that name them, never chosen by the plugin (it reads `partitions:` only).
NOT_AUTO_SELECTED = {"gpudebug", "gpudebug-exp", "gpubackfill", "gpubackfill-exp", "debug-cpu"}


def test_the_plugin_reads_the_shipped_partition_file_as_the_readme_describes():
    partitions = {partition.name: partition.limits for partition in read_partition_file(PARTITION_FILE)}
    assert list(partitions) == list(PROMISED)
    for name, promised in PROMISED.items():
        assert {key: getattr(partitions[name], key) for key in promised} == promised, name
    readme = flat_text(README)
    for name, limits in PROMISED.items():
        if limits["max_gpu"]:
            assert f"`{name}` ({limits['max_gpu']} x V100" in readme, name
        elif "max_threads" in limits:
            assert f"`{name}` ({limits['max_threads']}-core)" in readme, name
        else:
            assert f"`{name}`" in readme, name


def test_partitions_never_chosen_automatically_use_the_plugins_keys():
    document = yaml.safe_load(PARTITION_FILE.read_text())
    listed = document["not_auto_selected"]
    assert set(listed) == NOT_AUTO_SELECTED
    for name, entry in listed.items():
        # The same keys as a partition the plugin reads, plus what it is for: a misspelt key fails here.
        PartitionLimits(**{key: value for key, value in entry.items() if key != "purpose"})
        assert entry["purpose"], name
    assert document["preflight"]["gpu_check_partition"] in NOT_AUTO_SELECTED
    readme = flat_text(README)
    assert "`gpudebug`" in readme and "`gpubackfill`" in readme


def test_a_misspelt_key_in_a_partition_file_stops_the_plugin(tmp_path):
    broken = tmp_path / "partitions.yaml"
    broken.write_text(PARTITION_FILE.read_text().replace("max_gpu: 4", "max_gpus: 4"))
    with pytest.raises(TypeError, match="max_gpus"):
        read_partition_file(broken)


class QuietLogger:
    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def partition_of(threads: int = 1, **resources) -> str:
    """The partition the plugin's Executor.get_partition_arg picks for a job, with the shipped file loaded."""
    executor = SimpleNamespace(
        _partitions=read_partition_file(PARTITION_FILE), logger=QuietLogger(), _fallback_partition=None
    )
    job = SimpleNamespace(
        name="job", threads=threads, resources=SlurmJobResources({"mem_mb": 3700, "runtime": 60, **resources})
    )
    argument = plugin.Executor.get_partition_arg(executor, job)
    match = re.fullmatch(r" -p (\S+)", argument)
    assert match, argument
    return match.group(1)


GPU = {"gpu": 1, "gpu_model": "v100"}


@pytest.mark.parametrize(
    ("threads", "resources", "partition"),
    [
        (1, {}, "cpu"),
        (40, {}, "cpu"),
        (41, {}, "cpu-exp"),
        (48, {}, "cpu-exp"),
        (4, {"mem_mb": 200_000}, "largemem"),
        (4, GPU, "gpu"),
        (41, GPU, "gpu-exp"),
        (4, {**GPU, "gpu": 2}, "gpu"),
        (4, {**GPU, "gpu": 3}, "gpu-quad"),
        (4, {**GPU, "gpu": 4}, "gpu-quad"),
        # A node feature alone does not leave `gpu` (it lists no features, so the plugin accepts any there):
        # why the README's 32 GB recipe names gpu-exp.
        (4, {**GPU, "constraint": "v100-32g"}, "gpu"),
    ],
)
def test_jobs_go_to_the_partition_the_readme_names(threads, resources, partition):
    assert partition_of(threads, **resources) == partition


def test_learned_gpu_memory_is_no_request_to_slurm():
    """README ("Learned GPU memory"): gpu_mem_mb is a figure to read; the plugin neither passes it to sbatch nor
    uses it to choose a partition. 40 GB is more than any V100 here holds, and still changes nothing."""
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    def submission(**resources) -> str:
        job = SimpleNamespace(
            name="job", threads=4, resources=SlurmJobResources({"mem_mb": 3700, "runtime": 60, **resources})
        )
        params = {"run_uuid": "run", "slurm_logfile": "log", "comment_str": "rule", "workdir": "/w"}
        params |= {"account": "-A pas0000", "partition": f"-p {partition_of(4, **resources)}"}
        return f"{get_submit_command(job, params)} {set_gres_string(job)}"

    plain = submission(**GPU)
    assert "-p gpu " in plain and "--gpus=v100:1" in plain and "--mem 3700" in plain
    assert submission(**GPU, gpu_mem_mb=40_000) == plain
    assert "gpu_mem_mb" in flat_text(README) and "neither passes `gpu_mem_mb` to `sbatch`" in flat_text(
        README
    )


def load_resource_names():
    spec = importlib.util.spec_from_file_location("slurm_resource_names", PROFILE / "resource_names.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_misspelt_resource_is_warned_about_once_per_rule_when_its_job_is_submitted(monkeypatch):
    """The plugin ignores resource names it does not read: the README's 32 GB recipe with `slurm_partiton`
    lands on `gpu` (16 GB cards) without a word. The profile's hook on run_job_pre names such a resource; the
    catalog's own (gpu_mem_mb, group_slot) and every name the plugin reads pass."""
    recipe = {"gpu": 1, "gpu_model": "v100", "constraint": "v100-32g"}
    assert partition_of(4, **recipe, slurm_partiton="gpu-exp") == "gpu"  # the typo's silent effect
    monkeypatch.setattr(plugin.Executor, "run_job_pre", plugin.Executor.run_job_pre)  # put back afterwards
    monkeypatch.setattr(plugin, "set_gres_string", plugin.set_gres_string)
    load_resource_names().install()
    warnings, submitted = [], []
    # printjob: the base executor's, which run_job_pre calls
    executor = SimpleNamespace(
        logger=SimpleNamespace(warning=warnings.append), printjob=lambda job: job.log_info()
    )
    resources = {
        **recipe,
        "slurm_partiton": "gpu-exp",
        "gpus": 1,
        "cpus": 4,
        "mem_mb": 3700,
        "runtime": 60,
        "slurm_account": "pas0000",
        "gpu_mem_mb": 300,
        "group_slot": 1,
    }
    for _ in range(2):
        job = SimpleNamespace(name="train", resources=resources, log_info=lambda: submitted.append("train"))
        plugin.Executor.run_job_pre(executor, job)
    assert submitted == ["train", "train"]  # the plugin's own run_job_pre still runs
    said = "is not read by the slurm plugin, so no job asks SLURM for it; did you mean"
    assert warnings == [
        f"profiles/slurm: rule train: resource 'slurm_partiton' {said} 'slurm_partition'?",
        f"profiles/slurm: rule train: resource 'gpus' {said} 'gpu'?",
        f"profiles/slurm: rule train: resource 'cpus' {said} the rule's threads (threads: or --set-threads), "
        "which the plugin asks SLURM for?",
    ]


def test_the_resources_snakemake_gives_every_job_pass_and_a_cpu_word_is_named_whatever_its_case():
    """Snakemake itself gives every job _cores, _nodes, mem_mib and disk_mib (and mem_mb, disk_mb, tmpdir):
    none of them is a misspelt name, however close mem_mib is to mem_mb, or every job of every rule would be
    warned about. A CPU count is named whatever its case (`CPUs: 4`)."""
    module = load_resource_names()
    given = {"_cores": 4, "_nodes": 1, "mem_mb": 3815, "mem_mib": 3638, "disk_mb": 1000, "disk_mib": 954,
             "tmpdir": "/tmp", "mem": "4 GB", "disk": "1 GB"}  # fmt: skip
    assert module.warnings_for("train", given) == []
    assert module.warnings_for("train", {**given, "CPUs": 4}) == [
        "profiles/slurm: rule train: resource 'CPUs' is not read by the slurm plugin, so no job asks SLURM for it; "
        "did you mean the rule's threads (threads: or --set-threads), which the plugin asks SLURM for?"
    ]


def test_a_gpu_job_is_refused_before_submission_when_the_partition_file_has_no_gpu_partition(
    monkeypatch, tmp_path
):
    """A partition file without GPU partitions passes the preflight (it cannot tell at profile load whether the
    workflow's jobs ask for GPUs), and the plugin sends a GPU job that fits none of its partitions to the
    cluster's default partition after one warning. The profile's hook on run_job_pre refuses that job before it
    is submitted, naming the rule, the partition file and what to set; CPU jobs, a job that names its partition
    and GPU jobs with a GPU partition in the file go on to the plugin's own run_job_pre."""
    from snakemake_executor_plugin_slurm.partitions import get_best_partition

    cpu_only = tmp_path / "partitions.yaml"
    cpu_only.write_text(yaml.safe_dump({"partitions": {"cpu": {"max_gpu": 0, "max_threads": 40}}}))
    gpu_job = {"gpu": 1, "gpu_model": "v100", "mem_mb": 3700, "runtime": 60}
    job = SimpleNamespace(name="kd_gat_train_gat_teacher", threads=4, resources=SlurmJobResources(gpu_job))
    assert (
        get_best_partition(read_partition_file(cpu_only), job, QuietLogger()) is None
    )  # the plugin falls back
    monkeypatch.setattr(plugin.Executor, "run_job_pre", plugin.Executor.run_job_pre)  # put back afterwards
    monkeypatch.setattr(plugin, "set_gres_string", plugin.set_gres_string)
    monkeypatch.delenv("SNAKEMAKE_SLURM_PARTITIONS", raising=False)
    load_resource_names().install()
    submitted = []

    def submit(name: str, partition_file: Path, **resources) -> None:
        executor = SimpleNamespace(
            logger=QuietLogger(),
            printjob=lambda job: submitted.append(job.name),
            _partitions=read_partition_file(partition_file),
            workflow=SimpleNamespace(executor_settings=SimpleNamespace(partition_config=partition_file)),
        )
        job = SimpleNamespace(name=name, threads=4, resources=SlurmJobResources(resources))
        job.log_info = lambda: submitted.append(name)
        plugin.Executor.run_job_pre(executor, job)

    for rule, resources in [
        ("kd_gat_train_gat_teacher", gpu_job),
        ("gres_rule", {"gres": "gpu:v100:2", "mem_mb": 3700, "runtime": 60}),
    ]:
        with pytest.raises(WorkflowError) as refused:
            submit(rule, cpu_only, **resources)
        message = str(refused.value)
        assert f"profiles/slurm: rule {rule} asks for " in message
        no_gpu_partition = "has no partition with GPUs (max_gpu > 0 under partitions:; it has cpu)"
        assert f"the partition file {cpu_only} {no_gpu_partition}" in message
        assert (
            "Nothing was submitted for it. Set SNAKEMAKE_SLURM_PARTITIONS to a partition file with a GPU"
            in (message)
        )
        assert f"set-resources: {rule}: {{slurm_partition: <a GPU partition>}}" in message
    assert "asks for 2 GPU(s)" in message and submitted == []
    submit("cpu_rule", cpu_only, mem_mb=3700, runtime=60)
    submit("cpu_rule_given_0_gpus", cpu_only, gpu=0, gpu_model="v100", mem_mb=3700, runtime=60)
    submit("named", cpu_only, **gpu_job, slurm_partition="gpu")
    submit("kd_gat_train_gat_teacher", PARTITION_FILE, **gpu_job)
    assert submitted == ["cpu_rule", "cpu_rule_given_0_gpus", "named", "kd_gat_train_gat_teacher"]


def test_the_gpu_refusal_names_the_partition_file_of_snakemake_slurm_partitions(monkeypatch, tmp_path):
    """The README's way to give the plugin a partition file is `export SNAKEMAKE_SLURM_PARTITIONS=...` (the plugin
    reads it when its slurm-partition-config setting is not given): the refusal of a GPU job names that file,
    the one to fix."""
    cpu_only = tmp_path / "my-partitions.yaml"
    cpu_only.write_text(yaml.safe_dump({"partitions": {"cpu": {"max_gpu": 0, "max_threads": 40}}}))
    monkeypatch.setattr(plugin.Executor, "run_job_pre", plugin.Executor.run_job_pre)  # put back afterwards
    monkeypatch.setattr(plugin, "set_gres_string", plugin.set_gres_string)
    monkeypatch.setenv("SNAKEMAKE_SLURM_PARTITIONS", str(cpu_only))
    load_resource_names().install()
    executor = SimpleNamespace(
        logger=QuietLogger(),
        printjob=lambda job: None,
        _partitions=read_partition_file(cpu_only),
        workflow=SimpleNamespace(executor_settings=SimpleNamespace(partition_config=None)),
    )
    resources = {"gpu": 1, "gpu_model": "v100", "mem_mb": 3700, "runtime": 60}
    job = SimpleNamespace(name="train", threads=4, resources=SlurmJobResources(resources))
    with pytest.raises(
        WorkflowError, match=re.escape(f"the partition file {cpu_only} has no partition with GPUs")
    ):
        plugin.Executor.run_job_pre(executor, job)


def test_a_job_given_0_gpus_is_sent_no_gpu_model(monkeypatch):
    """A rule moved to the CPU with `gpu: 0` that still carries the profile's `gpu_model` goes to a CPU
    partition, but the plugin (2.8.0) sends it `--gpus=v100:0`: SLURM then records a GPU-typed request
    (TresPerJob=gres:gpu:v100:0) and the job's steps see SLURM_GPUS=v100:0, which the jobstep plugin takes for a
    GPU job. With the profile's hook it is sent what `gpu: 0` without a model is sent: no --gpus; GPU jobs and
    a `gres` request are sent as before."""
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    def submission(**resources) -> str:
        job = SimpleNamespace(
            name="job", threads=4, resources=SlurmJobResources({"mem_mb": 3700, "runtime": 60, **resources})
        )
        params = {"run_uuid": "run", "slurm_logfile": "log", "comment_str": "rule", "workdir": "/w"}
        params |= {"account": "-A pas0000", "partition": f"-p {partition_of(4, **resources)}"}
        # plugin.set_gres_string: the name the plugin's run_job and array submission call
        return f"{get_submit_command(job, params)}{plugin.set_gres_string(job)}"

    moved = {**GPU, "gpu": 0}
    assert partition_of(4, **moved) == "cpu"
    assert set_gres_string(SimpleNamespace(resources=SlurmJobResources(moved))) == " --gpus=v100:0"
    monkeypatch.setattr(plugin, "set_gres_string", plugin.set_gres_string)  # put back afterwards
    load_resource_names().install()
    load_resource_names().install()  # a second install wraps nothing twice
    assert submission(**moved) == submission(gpu=0)
    assert "--gpus" not in submission(**moved) and " --ntasks=1 --cpus-per-task=4 " in submission(**moved)
    assert submission(**GPU).endswith(" --gpus=v100:1")
    assert submission(**moved, gres="gpu:1").endswith(" --gres=gpu:1")
    assert plugin.set_gres_string.__wrapped__ is set_gres_string


def test_the_profile_installs_the_resource_name_warning_where_jobs_are_submitted(tmp_path):
    script = (
        "import sys\n"
        "from snakemake.cli import parse_args\n"
        "import snakemake_executor_plugin_slurm as plugin\n"
        "parse_args(sys.argv[1:])\n"
        "print('warns:', getattr(plugin.Executor.run_job_pre, 'warns_about_resource_names', False))\n"
        "print('0 gpus, no model:', getattr(plugin.set_gres_string, 'drops_the_model_of_0_gpus', False))\n"
    )
    env = {
        **os.environ,
        "PATH": fake_slurm_commands(tmp_path / "bin", 300),
        "OSC_PROJECT": "pas0000",
        "SNAKEMAKE_SCRATCH": str(tmp_path / "scratch"),
        "SNAKEMAKE_OUTPUT_CACHE": str(tmp_path / "cache"),
    }
    result = subprocess.run(
        [sys.executable, "-c", script, "--profile", str(PROFILE)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )
    assert "warns: True" in result.stdout, result.stdout + result.stderr[-3000:]
    assert "0 gpus, no model: True" in result.stdout, result.stdout + result.stderr[-3000:]


def readme_recipe_for_32gb_gpus() -> dict:
    """The YAML block of profiles/slurm/README.md that requests the 32 GB V100s."""
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", README.read_text(), re.S) if "v100-32g" in b]
    assert len(blocks) == 1, blocks
    return yaml.safe_load(blocks[0])


def test_the_readmes_32gb_recipe_lands_on_gpu_exp():
    (resources,) = readme_recipe_for_32gb_gpus()["set-resources"].values()
    assert resources["constraint"] == "v100-32g" and resources["gpu"] == 1
    assert partition_of(4, **resources) == "gpu-exp"
    without_partition = {key: value for key, value in resources.items() if key != "slurm_partition"}
    assert partition_of(4, **without_partition) == "gpu"


# ---------------------------------------------------------------------------------------------------------------
# MinJobAge >= 3 x the status-check delay in effect
# ---------------------------------------------------------------------------------------------------------------


def fake_slurm_commands(directory: Path, min_job_age_s: int) -> str:
    """A PATH whose `scontrol show config` reports `min_job_age_s` and whose `sbatch --test-only` accepts all."""
    directory.mkdir(exist_ok=True)
    commands = {
        "scontrol": f'#!/bin/sh\necho "MinJobAge               = {min_job_age_s} sec"\n',
        "sbatch": '#!/bin/sh\necho "sbatch: Job 1 to start at now" >&2\n',
    }
    for name, text in commands.items():
        (directory / name).write_text(text)
        (directory / name).chmod(0o755)
    return f"{directory}{os.pathsep}{os.environ['PATH']}"


@pytest.fixture
def min_job_age_300(tmp_path, monkeypatch):
    """A cluster with MinJobAge 300 s (SLURM's default): enough for the profile's 40 s delay, not for 120 s."""
    monkeypatch.setenv("PATH", fake_slurm_commands(tmp_path / "bin", 300))
    return monkeypatch


def test_min_job_age_is_compared_with_three_times_the_delay_it_is_given(min_job_age_300):
    assert preflight.status_polling_problem(40) is None
    assert preflight.status_polling_problem(100) is None
    problem = preflight.status_polling_problem(120)  # passes 3 x 40 s, not 3 x 120 s
    assert "MinJobAge is 300 s, below 3 x slurm-init-seconds-before-status-checks (120) = 360 s" in problem
    assert "ask the admins for MinJobAge >= 360" in problem
    assert "lower slurm-init-seconds-before-status-checks to 100 or less" in problem
    assert "--slurm-init-seconds-before-status-checks on the command line" in problem


@pytest.fixture
def guarded_settings(min_job_age_300):
    """The plugin's ExecutorSettings with the profile's guard installed (put back as it was afterwards)."""
    min_job_age_300.setattr(plugin.ExecutorSettings, "__post_init__", plugin.ExecutorSettings.__post_init__)
    preflight.install_status_polling_guard()
    return plugin.ExecutorSettings


def test_the_guard_refuses_the_plugins_settings_when_the_delay_in_effect_is_too_long(guarded_settings):
    guarded_settings(status_command="squeue", init_seconds_before_status_checks=40)
    with pytest.raises(WorkflowError) as error:
        guarded_settings(status_command="squeue", init_seconds_before_status_checks=120)
    message = str(error.value)
    assert message.startswith(preflight.REFUSAL)
    assert "MinJobAge is 300 s, below 3 x slurm-init-seconds-before-status-checks (120) = 360 s" in message
    # Polling sacct on purpose: MinJobAge does not matter.
    guarded_settings(status_command="sacct", init_seconds_before_status_checks=120)


def read_settings_with_the_profile(
    tmp_path: Path, *arguments: str, min_job_age_s: int = 300
) -> subprocess.CompletedProcess:
    """Snakemake's own argument parsing with profiles/slurm (plus `arguments`), then the slurm plugin's settings
    built from it as a run builds them; no workflow is read. The profile's checks run against fake commands."""
    script = (
        "import sys\n"
        "from snakemake.cli import parse_args\n"
        "from snakemake_interface_executor_plugins.registry import ExecutorPluginRegistry\n"
        "parser, args = parse_args(sys.argv[1:])\n"
        "settings = ExecutorPluginRegistry().get_plugin(args.executor).get_settings(args)\n"
        "print('delay in effect:', settings.init_seconds_before_status_checks)\n"
    )
    env = {
        **os.environ,
        "PATH": fake_slurm_commands(tmp_path / f"bin-{min_job_age_s}", min_job_age_s),
        "OSC_PROJECT": "pas0000",
        "SNAKEMAKE_SCRATCH": str(tmp_path / "scratch"),
        "SNAKEMAKE_OUTPUT_CACHE": str(tmp_path / "cache"),
    }
    return subprocess.run(
        [sys.executable, "-c", script, "--profile", str(PROFILE), *arguments],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )


def test_the_profile_checks_the_delay_a_later_profile_or_the_command_line_sets(tmp_path):
    later = tmp_path / "later-profile"
    later.mkdir()
    (later / "config.yaml").write_text("slurm-init-seconds-before-status-checks: 120\n")
    accepted = read_settings_with_the_profile(tmp_path)
    assert "delay in effect: 40" in accepted.stdout, accepted.stdout + accepted.stderr
    for arguments in (["--slurm-init-seconds-before-status-checks", "120"], ["--profile", str(later)]):
        refused = read_settings_with_the_profile(tmp_path, *arguments)
        assert refused.returncode != 0, arguments
        assert preflight.REFUSAL in refused.stderr, refused.stderr
        assert "below 3 x slurm-init-seconds-before-status-checks (120) = 360 s" in refused.stderr


def test_a_delay_lowered_on_the_command_line_is_what_the_profile_checks(tmp_path):
    # MinJobAge 100 s: too short for the profile's 40 s, enough for 30 s (the plugin keeps squeue then).
    refused = read_settings_with_the_profile(tmp_path, min_job_age_s=100)
    assert "below 3 x slurm-init-seconds-before-status-checks (40) = 120 s" in refused.stderr, refused.stderr
    arguments = ["--slurm-init-seconds-before-status-checks", "30"]
    accepted = read_settings_with_the_profile(tmp_path, *arguments, min_job_age_s=100)
    assert "delay in effect: 30" in accepted.stdout, accepted.stdout + accepted.stderr


def test_the_preflights_delay_defaults_to_the_profiles_and_can_be_given(min_job_age_300, tmp_path, capsys):
    for name, value in {
        "OSC_PROJECT": "pas0000",
        "SNAKEMAKE_SCRATCH": str(tmp_path),
        "SNAKEMAKE_SLURM_CHECKS": "off",
    }.items():
        min_job_age_300.setenv(name, value)
    min_job_age_300.setenv("SNAKEMAKE_OUTPUT_CACHE", str(tmp_path / "cache"))
    rendered = yte.process_yaml((PROFILE / "profile.yaml").read_text(), require_use_yte=True)
    # Read from the template without rendering it, as Snakemake renders it.
    assert preflight.profile_init_seconds() == rendered["slurm-init-seconds-before-status-checks"] == 40
    arguments = ["--account", "pas0000", "--partitions", str(PARTITION_FILE), "--no-gpu-node"]
    assert preflight.main(arguments) == 0
    assert "ok    MinJobAge >= 3 x 40 s" in capsys.readouterr().out
    assert preflight.main([*arguments, "--init-seconds", "120"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  submission settings" in out
    assert "MinJobAge is 300 s, below 3 x slurm-init-seconds-before-status-checks (120) = 360 s" in out


def test_a_profile_delay_that_is_not_a_number_is_named(tmp_path):
    profile = tmp_path / "profile.yaml"
    profile.write_text("slurm-init-seconds-before-status-checks: ?delay\n")
    with pytest.raises(
        preflight.PreflightError, match="slurm-init-seconds-before-status-checks must be a whole"
    ):
        preflight.profile_init_seconds(profile)


# ---------------------------------------------------------------------------------------------------------------
# torch in the documented install lines
# ---------------------------------------------------------------------------------------------------------------

# Where users read or copy install commands: the READMEs, the profiles and the container build.
INSTALL_DOCS = [
    REPO / "README.md",
    *sorted((REPO / "profiles").glob("*/README.md")),
    *sorted((REPO / "profiles").glob("**/*.yaml")),
    REPO / "profiles" / "k8s" / "Containerfile",
]
PINNED_TORCH = next(
    requirement.split("==")[1]
    for requirement in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    if requirement.startswith("torch==")
)


def torch_versions(text: str) -> dict[str, list[str]]:
    """Exact torch versions (`torch==2.13.0`, `2.13.0+cu126`), and the `torch==2.14.*` of the last cu126 release."""
    return {
        "exact": re.findall(r"torch==(\d+\.\d+\.\d+)(?![\d.*])", text)
        + re.findall(r"(?<![\w.])(\d+\.\d+\.\d+)\+(?:cu\d+|cpu)\b", text),
        "last cu126": re.findall(r"torch==(\d+\.\d+)\.\*", text),
    }


def test_the_version_scan_finds_what_an_install_line_holds():
    line = "pip install torch==2.12.1 --index-url x  # expect 2.12.1+cu126; or 'torch==2.14.*' from cu126"
    assert torch_versions(line) == {"exact": ["2.12.1", "2.12.1"], "last cu126": ["2.14"]}


@pytest.mark.parametrize("path", INSTALL_DOCS, ids=lambda path: str(path.relative_to(REPO)))
def test_install_lines_name_the_torch_pyproject_pins(path):
    found = torch_versions(path.read_text())
    assert set(found["exact"]) <= {PINNED_TORCH}, (
        f"{path}: torch {found['exact']}, pyproject pins {PINNED_TORCH}"
    )
    assert set(found["last cu126"]) <= {runtime.LAST_TORCH_WITH_CU126}, path


def test_the_install_docs_name_the_pin_at_all():
    assert torch_versions((PROFILE / "README.md").read_text())["exact"]


@pytest.mark.parametrize(
    ("partitions", "says"),
    [
        ("cpu: 5", "partitions.cpu must be a mapping of limits (max_gpu: 2, ...), got 5"),
        ("gpu: {max_gpu: two}", "partitions.gpu.max_gpu must be a whole number of GPUs >= 0, got 'two'"),
        ("gpu: {max_gpu: -1}", "partitions.gpu.max_gpu must be a whole number of GPUs >= 0, got -1"),
        (
            "gpu: {max_gpu: 2, available_gpu_models: v100}",
            "partitions.gpu.available_gpu_models must be a list of names, got 'v100'",
        ),
        (
            "gpu: {max_gpu: 2, available_constraints: [1]}",
            "partitions.gpu.available_constraints must be a list of names, got [1]",
        ),
    ],
)
def test_a_malformed_partition_file_is_named_not_a_traceback(
    min_job_age_300, tmp_path, capsys, partitions, says
):
    """The checks read the file before the plugin does: a limit of the wrong type was a bare TypeError or
    AttributeError (inside the profile: "Couldn't parse config file: ... TypeError") that named no file or key."""
    path = tmp_path / "partitions.yaml"
    path.write_text(f"partitions:\n  {partitions}\n")
    with pytest.raises(preflight.PreflightError) as error:
        preflight.check_before_submission("pas0000", path, "v100", init_seconds=None)
    assert str(error.value) == f"partition file {path}: {says}"
    # The command line says so and exits 1, also where the GPU-node check needs the file (it raised there).
    assert preflight.main(["--account", "pas0000", "--partitions", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"FAIL  submission settings:\npartition file {path}: {says}" in out
    assert "FAIL  torch on a GPU node: no partition to run it on" in out


def test_the_torch_check_runs_where_the_readme_says(min_job_age_300, tmp_path, capsys):
    """README: `srun -p gpudebug --gpus=v100:1 python -m kdgat.runtime --check` (`--gpu-partition` to change):
    the partition file's preflight.gpu_check_partition, not the first GPU partition the file lists."""
    srun = tmp_path / "bin" / "srun"
    srun.write_text('#!/bin/sh\necho "srun $*"\n')
    srun.chmod(0o755)
    arguments = ["--account", "pas0000", "--partitions", str(PARTITION_FILE), "--python", "python"]
    assert preflight.main(arguments) == 0
    out = capsys.readouterr().out
    assert "ok    torch on a GPU node of gpudebug:" in out
    assert re.search(
        r"^srun -A pas0000 -p gpudebug .*--gpus=v100:1 python -m kdgat\.runtime --check$", out, re.M
    )
    assert "`srun -p gpudebug --gpus=v100:1 python -m kdgat.runtime --check`" in README.read_text()
    assert preflight.main([*arguments, "--gpu-partition", "gpu-exp"]) == 0
    assert "srun -A pas0000 -p gpu-exp " in capsys.readouterr().out


def test_a_controller_that_does_not_answer_is_named_once_not_blamed_on_every_partition(
    min_job_age_300, tmp_path
):
    """SLURM installed but its controller down (a workstation with the client, a login node in maintenance): every
    `sbatch --test-only` fails alike. That said 'partition ... is refused ... Fix: correct the partition file' for
    each of the six partitions of a correct file; the refusal names the controller and the way past it instead."""
    said = "sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)"
    sbatch = tmp_path / "bin" / "sbatch"
    sbatch.write_text(f'#!/bin/sh\necho "{said}" >&2\nexit 1\n')
    sbatch.chmod(0o755)
    with pytest.raises(preflight.PreflightError) as error:
        preflight.check_before_submission("pas0000", PARTITION_FILE, "v100", init_seconds=None)
    assert str(error.value) == (
        f"- SLURM's controller does not answer, so the account, partitions and GPU request cannot be checked "
        f"(sbatch --test-only: {said}). Fix: run again once `scontrol ping` reports the controller UP, or export "
        f"SNAKEMAKE_SLURM_CHECKS=off to skip the checks (a dry run submits nothing)"
    )
