"""Claims of README.md, CONTRIBUTING.md, docs/models.md, evaluation.md, simulation.md, service.md and the wrappers'
meta.yaml that no other test pinned: the modules' conventions, read from the parsed workflow, and numbers, defaults,
names and commands the text states, read from the code that sets them."""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
from pathlib import Path

import pytest
import yaml
from testkit import REPO, flat_text, import_required, parsed_workflow, run_snakemake

from kdgat.tracking.settings import TrackingSettings
from resource_history.estimate import SIZE_FACTOR, SIZE_FLOOR_MB
from resource_history.settings import LearnedResourceSettings

README = REPO / "README.md"
CONTRIBUTING = REPO / "CONTRIBUTING.md"
MODULES = REPO / "workflow" / "modules"
MODULE_NAMES = sorted(path.parent.name for path in MODULES.glob("*/Snakefile"))

# Each rule's conda environment, log, benchmark, retries, mem_mb at attempts 1 and 2 (for one dataset and seed), inputs
# and outputs.
RULES = r"""
wildcards = {"dataset": "synth_hcrl", "seed": "42"}
job = SimpleNamespace(**wildcards, items=wildcards.items)

def mem_mb(rule):
    if "mem_mb" not in rule.resources:
        return None
    resource = rule.resources["mem_mb"]
    if not resource.is_evaluable():
        return [resource.value, resource.value]
    return [resource.evaluate(job, input=[], threads=1, attempt=attempt, rulename=rule.name).value
            for attempt in (1, 2)]

print(json.dumps({
    rule.name: {
        "conda": rule.conda_env and str(rule.conda_env),
        "log": [str(path) for path in rule.log],
        "benchmark": rule.benchmark and str(rule.benchmark),
        "retries": rule._restart_times,
        "mem_mb": mem_mb(rule),
        "input": [str(path) for path in rule.input],
        "output": [str(path) for path in rule.output],
    }
    for rule in workflow.rules
}))
"""


@pytest.fixture(scope="module")
def rules(tmp_path_factory) -> dict:
    """The main workflow's rules with the demo config and the GAT sweep switched on (every rule there is)."""
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config["kd_gat"]["sweep"] |= {"enabled": True, "table": str(REPO / "config/params.tsv")}
    return parsed_workflow(tmp_path_factory.mktemp("rules"), config, RULES, cores=64)


def module_of(name: str) -> str:
    return next(module for module in MODULE_NAMES if name.startswith(f"{module}_"))


def test_every_module_rule_has_conda_log_and_attempt_scaled_memory_under_its_modules_paths(rules) -> None:
    """CONTRIBUTING.md: every rule has `conda: "../../envs/<env>.yaml"` and `log:`; `mem_mb` as a function of
    `attempt`; paths `logs/<module>/...`, `benchmarks/<module>/...`."""
    jobs = {name: rule for name, rule in rules.items() if name != "all" and not name.endswith("_all")}
    assert len(jobs) >= 25 and {module_of(name) for name in jobs} == set(MODULE_NAMES), sorted(jobs)
    problems = []
    for name, rule in jobs.items():
        module = module_of(name)
        env = re.fullmatch(r"\.\./\.\./envs/(\w+)\.yaml", rule["conda"] or "")
        if not env or not (REPO / "workflow" / "envs" / f"{env.group(1)}.yaml").is_file():
            problems.append(f"{name}: conda {rule['conda']!r}")
        # a notebook rule's `log: notebook=` is the executed notebook, a result beside the rule's outputs
        logs = [
            path
            for path in rule["log"]
            if not (path.startswith(f"results/{module}/") and path.endswith(".ipynb"))
        ]
        if not rule["log"] or not all(path.startswith(f"logs/{module}/") for path in logs):
            problems.append(f"{name}: log {rule['log']}")
        if rule["benchmark"] and not rule["benchmark"].startswith(f"benchmarks/{module}/"):
            problems.append(f"{name}: benchmark {rule['benchmark']}")
        if rule["mem_mb"] is None or not rule["mem_mb"][1] > rule["mem_mb"][0]:
            problems.append(f"{name}: mem_mb at attempts 1 and 2 {rule['mem_mb']}")
    assert not problems, problems


def test_the_rules_with_a_benchmark_file_are_the_ones_the_readme_lists(rules) -> None:
    """README.md, learned resources: "every rule with a `benchmark:` file (kd_gat training, evaluation, the synthetic
    CAN generator, calibration's `simulate` and `calibrate`)"."""
    text = flat_text(README)
    assert (
        "every rule with a `benchmark:` file (kd_gat training, evaluation, the synthetic CAN generator, "
        "calibration's `simulate` and `calibrate`)"
    ) in text
    benchmarked = {name for name, rule in rules.items() if rule["benchmark"]}
    # "evaluation": the heavy jobs of a dataset's group job, its evaluations and its baselines
    listed = {name for name in rules if name.startswith(("kd_gat_train_", "evaluation_evaluate_"))} | {
        "evaluation_baselines",
        "preprocess_generate_can",
        "calibration_simulate",
        "calibration_calibrate",
    }
    assert benchmarked == listed


RETRIED = """
rule all:
    input: "bad.txt"

rule bad:
    output: "bad.txt"
    log: "bad.log"
    retries: 2
    shell: "echo 'train_gat failed: a bad setting' >> {log}; exit 1"
"""

RESOURCE_RAISES = """
def mem_mb(wildcards, attempt):
    if wildcards.name == "bad":
        raise ValueError("an input error an earlier attempt recorded")
    return 100

rule all:
    input: expand("{name}.txt", name=["bad", "good"])

rule make:
    output: "{name}.txt"
    resources: mem_mb=mem_mb
    shell: "echo {wildcards.name} > {output}"
"""


def test_a_bad_input_is_retried_and_snakemake_9_has_no_sound_way_to_skip_it(tmp_path) -> None:
    """README.md, Snakemake's own flags: a training job that fails on a bad input is retried all the same, and why
    no rule, wrapper or resources function can tell such a failure and skip the retries in Snakemake 9."""
    from snakemake.script import Snakemake

    from kdgat.runtime import GPUUnusableError
    from output_locks import OutputInUse
    from wrapper_rules import InputError

    text = flat_text(README)
    assert (
        "fails three times with the same one line (`train_<stage> failed: <message>`, on stderr each time and in "
        "the job's log, which Snakemake empties before each attempt)" in text
    )
    # a rule's retries are a number that --retries does not lower; the log holds the last attempt's line
    (tmp_path / "retried").mkdir()
    (tmp_path / "retried" / "Snakefile").write_text(RETRIED)
    run = run_snakemake("--cores", "1", "--retries", "0", cwd=tmp_path / "retried", timeout=300, check=False)
    assert run.returncode != 0
    assert run.stdout.count("Error in rule bad:") == 3 and run.stdout.count("Trying to restart job") == 2
    assert (tmp_path / "retried" / "bad.log").read_text().splitlines() == ["train_gat failed: a bad setting"]
    assert "which `--retries` cannot lower" in text
    # a wrapper is given no attempt number
    assert "attempt" not in inspect.signature(Snakemake.__init__).parameters
    assert "(a wrapper's `snakemake` object has no `attempt`)" in text
    # a resources function that raises stops the whole run, the other job (good.txt) included
    (tmp_path / "raises").mkdir()
    (tmp_path / "raises" / "Snakefile").write_text(RESOURCE_RAISES)
    run = run_snakemake("--cores", "1", "--keep-going", cwd=tmp_path / "raises", timeout=300, check=False)
    said = run.stdout[-3000:]
    assert run.returncode != 0 and "an input error an earlier attempt recorded" in run.stdout, said
    assert not (tmp_path / "raises" / "good.txt").exists(), said
    assert (
        "`resources` function that raises stops the whole run, `--keep-going` or not, not the one job" in text
    )
    # the one-line failures include ones a retry on another node, or later, can cure
    assert issubclass(GPUUnusableError, InputError) and issubclass(OutputInUse, InputError)
    assert "(`GPUUnusableError`), an output another job is writing (`OutputInUse`)" in text


def test_the_kd_gat_training_rules_retry_twice_with_a_benchmark(rules) -> None:
    """README.md: the kd_gat training rules each have attempt-scaled memory, `retries: 2` and `benchmark:`."""
    assert "attempt-scaled memory, `retries: 2`, `benchmark:`" in flat_text(README)
    training = {name: rule for name, rule in rules.items() if name.startswith("kd_gat_train_")}
    assert len(training) == 10, sorted(training)  # nine of the chain and the sweep's GAT
    for name, rule in training.items():
        assert rule["retries"] == 2 and rule["benchmark"], (name, rule)
        assert rule["mem_mb"][1] == 2 * rule["mem_mb"][0], (name, rule)


@pytest.mark.parametrize("module", MODULE_NAMES)
def test_each_module_starts_with_rule_all_validates_its_schema_and_includes_the_wrappers(module: str) -> None:
    """CONTRIBUTING.md: the first rule of a module is `rule all`; each module validates its part of the config
    against `workflow/modules/<name>/schemas/config.schema.yaml`; every module has `include: "../wrappers.smk"`."""
    text = (MODULES / module / "Snakefile").read_text()
    assert re.findall(r"^(?:use )?rule (\w+)", text, re.MULTILINE)[0] == "all"
    # through workflow/modules/config_check.smk, which names a refused key by its dotted name and file first
    assert re.search(r'^include: "\.\./config_check\.smk"$', text, re.MULTILINE)
    assert re.search(r'^validate_config\("schemas/config\.schema\.yaml"\)$', text, re.MULTILINE)
    assert (MODULES / module / "schemas" / "config.schema.yaml").is_file()
    assert re.search(r'^include: "\.\./wrappers\.smk"$', text, re.MULTILINE)


def test_the_input_size_limit_of_learned_resources_is_the_codes() -> None:
    """README.md: a job whose input is more than 2 times (`SIZE_FACTOR`) the largest recorded input (1 MB if less)
    does not learn from those runs."""
    text = flat_text(README)
    assert f"more than {SIZE_FACTOR:g} times (`SIZE_FACTOR`) the largest input" in text
    assert f"({SIZE_FLOOR_MB:g} MB if less)" in text
    assert f"is more than {SIZE_FACTOR:g} x the largest input" in text  # the log line it quotes


def test_the_gpu_overhead_the_readme_states_is_the_default() -> None:
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    default = schema["properties"]["learned_resources"]["properties"]["gpu_overhead_mb"]["default"]
    assert default == LearnedResourceSettings().gpu_overhead_mb
    assert f"`gpu_overhead_mb` ({default}, for the CUDA context" in flat_text(README)


def test_tracking_is_off_by_default_into_the_experiment_and_store_the_readme_names() -> None:
    """README.md, experiment tracking: "Off by default", the experiment `kd_gat`, the default store
    `results/mlruns`, `model.pt` by reference unless `tracking.model: copy`."""
    text = flat_text(README)
    settings = TrackingSettings.from_config(None)
    schema = yaml.safe_load((MODULES / "kd_gat/schemas/config.schema.yaml").read_text())
    defaults = {
        key: value["default"]
        for key, value in schema["properties"]["kd_gat"]["properties"]["tracking"]["properties"].items()
        if key in ("backend", "uri", "experiment", "model")
    }
    assert defaults == {
        "backend": "none",
        "uri": "results/mlruns",
        "experiment": "kd_gat",
        "model": "reference",
    }
    assert (settings.backend, settings.uri, settings.experiment, settings.model) == tuple(
        defaults[key] for key in ("backend", "uri", "experiment", "model")
    )
    assert "### Experiment tracking (MLflow) Off by default." in text
    assert f"in the experiment `{settings.experiment}` (`tracking.experiment`)" in text
    assert f"The default store is a directory, `{settings.uri}`" in text
    assert "`model.pt` by reference (path and SHA-256 as tags; `tracking.model: copy` uploads it)" in text


@pytest.mark.parametrize("backend", ["mlflow", "none"])
def test_the_kd_gat_module_declares_the_set_mlflow_credentials_as_envvars(
    backend, tmp_path, monkeypatch
) -> None:
    """README.md, "A shared MLflow server": "The kd_gat module declares those of them that are set as `envvars:`,
    so every executor hands them to the jobs": the workflow Snakemake parses (which executors read) declares the
    credential variable that is set, not the one set empty, beside the invocation key and commit that let a job
    find its parent run; without tracking it declares none (a job then needs none of them)."""
    from kdgat.tracking import COMMIT_ENV, INVOCATION_ENV
    from kdgat.tracking.settings import CREDENTIAL_ENVS

    assert "The kd_gat module declares those of them that are set as `envvars:`" in flat_text(README)
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config["kd_gat"]["tracking"] = {"backend": backend}
    for name in CREDENTIAL_ENVS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "not-a-token")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "")  # set empty: not handed on
    declared = parsed_workflow(tmp_path, config, "print(json.dumps(sorted(workflow.envvars)))")
    expected = {INVOCATION_ENV, COMMIT_ENV, "MLFLOW_TRACKING_TOKEN"} if backend == "mlflow" else set()
    assert set(declared) == expected


def test_the_bench_time_goal_is_the_makefiles() -> None:
    """README.md: `make bench` prints the total and holds it to a goal of 15 minutes (scripts/bench_all.sh, which
    the Makefile's bench target runs)."""
    assert "bash scripts/bench_all.sh" in (REPO / "Makefile").read_text()
    seconds = int(re.search(r"\(goal: (\d+) s\)", (REPO / "scripts" / "bench_all.sh").read_text()).group(1))
    assert f"(goal: all of them within {seconds // 60} minutes on 2 cores)" in flat_text(README)
    assert seconds % 60 == 0


def test_every_folder_of_the_readme_layout_exists() -> None:
    block = README.read_text().split("## Layout\n```\n", 1)[1].split("```", 1)[0]
    folders = [line.split()[0] for line in block.splitlines() if line.strip()]
    assert len(folders) >= 9, folders
    assert [folder for folder in folders if not (REPO / folder.rstrip("/").split("<")[0]).is_dir()] == []


def test_mlflows_http_retries_are_bounded_unless_the_user_exported_them(monkeypatch) -> None:
    """README.md: "MLflow's HTTP retries are bounded, `kdgat.tracking.HTTP_DEFAULTS`, unless you export its
    `MLFLOW_HTTP_REQUEST_*` variables" (a job waits seconds, not MLflow's 7 retries of 120 s, for a dead server)."""
    import_required("mlflow", "pip install 'snakemake-gpu-catalog[tracking]'")
    from kdgat.tracking.settings import HTTP_DEFAULTS, mlflow_client

    assert (
        "`kdgat.tracking.HTTP_DEFAULTS`, unless you export its `MLFLOW_HTTP_REQUEST_*` variables"
        in flat_text(README)
    )
    assert all(name.startswith("MLFLOW_HTTP_REQUEST_") for name in HTTP_DEFAULTS)
    assert int(HTTP_DEFAULTS["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]) <= 3
    assert int(HTTP_DEFAULTS["MLFLOW_HTTP_REQUEST_TIMEOUT"]) <= 30
    for name in HTTP_DEFAULTS:  # set, then removed: monkeypatch restores what the test found
        monkeypatch.setenv(name, "unset")
        monkeypatch.delenv(name)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "7")  # exported by the user: kept
    mlflow_client(TrackingSettings.from_config({"backend": "mlflow", "uri": "http://127.0.0.1:9"}))
    assert {name: os.environ[name] for name in HTTP_DEFAULTS} == HTTP_DEFAULTS | {
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "7"
    }


# Code that CONTRIBUTING.md and README.md name as `module.attribute` or `path.py::name`, beyond file names (which
# test_every_repository_file_named_in_docs_and_code_exists checks): a rename leaves the recipe pointing nowhere.
NAMED_CODE = [
    "kdgat.logs:configure_wrapper",
    "kdgat.logs:failure_logged",
    "simcal.logs:configure_wrapper",
    "simcal.logs:failure_logged",
    "kdgat.synthetic:generate_file",
    "resource_history:mark_if_resumed",
    "resource_history:mark_resumed",
    "resource_history:clear_mark",
    "kdgat.chain:STAGES",
    "kdgat.training.settings:StageSettings.from_config",
    "kdgat.training.loop:LoopSettings.callbacks",
    "kdgat.can.formats:REGISTRY",
    "kdgat.can.messages:PROBLEMS",
    "kdgat.can.messages:CanFormat",
    "kdgat.can.hcrl_csv:sniff",
    "kdgat.can.hcrl_csv:header",
    "kdgat.can.hcrl_csv:parse",
    "kdgat.can.hcrl_csv:FORMAT",
    "simcal.backends:BACKENDS",
    "simcal.backends:slurm_cluster",
    "simcal.backends:slurm_cluster_kwargs",
    "simcal.backends:slurm_scaling",
    "simcal.backends:dask_client",
    "kdgat.tracking:MlflowTracker",
    "kdgat.tracking:HTTP_DEFAULTS",
    "testkit:once_per_session",
    "testkit:require",
]


def resolve(name: str) -> object:
    import dataclasses
    import importlib

    module, _, attributes = name.partition(":")
    value = importlib.import_module(module)
    for attribute in attributes.split("."):
        fields = (
            {field.name for field in dataclasses.fields(value)} if dataclasses.is_dataclass(value) else set()
        )
        if attribute in fields:
            return value
        value = getattr(value, attribute)
    return value


@pytest.mark.parametrize("name", NAMED_CODE)
def test_the_code_the_docs_name_exists(name: str) -> None:
    attribute = name.partition(":")[2].split(".")[-1]
    text = CONTRIBUTING.read_text() + README.read_text()
    assert f"{attribute}" in text, f"{name} is no longer named in the docs: drop it from NAMED_CODE"
    resolve(name)


def test_every_path_and_name_pair_contributing_gives_exists() -> None:
    """`training/loop.py::EpochCallback`, `kdgat/inference.py::fusion_inputs`, ... (a `<stage>` stands for each
    stage of kdgat.chain.STAGES)."""
    from kdgat.chain import STAGES

    pairs = re.findall(r"`(?:src/)?(?:kdgat/)?([\w/<>]+)\.py::(\w+)`", CONTRIBUTING.read_text())
    assert len(pairs) >= 4, pairs
    for path, attribute in pairs:
        for stage in STAGES if "<stage>" in path else [None]:
            module = "kdgat." + path.replace("<stage>", stage or "").replace("/", ".")
            resolve(f"{module}:{attribute}")


def test_the_backend_kinds_of_the_calibration_schema_are_the_libraries() -> None:
    """CONTRIBUTING.md, "Add a simulation backend": the name in `BACKENDS` and in `backend.kind`'s enum."""
    from simcal.backends import BACKENDS, SERVICE_BACKEND

    schema = yaml.safe_load((MODULES / "calibration/schemas/config.schema.yaml").read_text())
    backend = schema["properties"]["calibration"]["properties"]["backend"]["properties"]
    assert backend["kind"]["enum"] == [*BACKENDS, SERVICE_BACKEND]
    assert set(BACKENDS) <= set(backend)  # an options object under backend.<name>


def makefile_recipe(target: str) -> str:
    """The recipe lines of `target` in the Makefile, with $(VAR) replaced by the variables' defaults (?=, :=)."""
    text = (REPO / "Makefile").read_text()
    defaults = dict(re.findall(r"^(\w+) [?:]= (.+)$", text, re.M))
    recipe = re.search(rf"^{target}:[^\n]*\n((?:\t[^\n]*\n)+)", text, re.M).group(1)
    for _ in range(3):
        recipe = re.sub(r"\$\((\w+)\)", lambda m: defaults.get(m.group(1), m.group(0)), recipe)
    return recipe


def test_the_make_targets_run_what_the_readme_says() -> None:
    """README.md: `make demo` runs `.venv/bin/snakemake --cores 2`; `make test` runs pytest on two workers
    ("across `make test`'s two workers"); `make venv` installs the exact versions of `constraints.txt`."""
    text = flat_text(README)
    demo = makefile_recipe("demo").strip()
    assert f"(`{demo}`, what `make demo` runs" in text, demo
    test = makefile_recipe("test")
    workers = int(re.search(r"-n (\d+)", test).group(1))
    number = {1: "one", 2: "two", 3: "three", 4: "four"}.get(workers, str(workers))
    assert "python -m pytest" in test and f"across `make test`'s {number} workers" in text
    assert "-c constraints.txt" in makefile_recipe(r"\$\(STAMP\)")
    assert "`make venv` installs the exact versions in `constraints.txt`" in text


def test_the_floor_counts_the_readme_states_are_the_floor_tests():
    """README.md: "60 of 231 engineering floors are missed, each listed with its reason (61 listed: one cell passes
    there ...)", over "seeds 42-44": 231 is the number of floor cases test_floor checks on the shipped config, 61 its
    listed expected misses, and 42-44 the shipped seeds. (That 60 miss is the measured run's, docs/science.md; the
    integration test, which trains the shipped datasets, checks each cell.) docs/science.md's count of the strict
    ones among the listed misses is the module test's too."""
    import importlib.util

    path = REPO / ".tests/integration/test_kd_gat_module.py"
    spec = importlib.util.spec_from_file_location("kd_gat_module_floors", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = flat_text(README)
    missed, checked, listed = map(
        int,
        re.search(
            r"(\d+) of (\d+) engineering floors are missed, .*?\((\d+) listed: one cell", text
        ).groups(),
    )
    assert checked == len(module.floor_cases())
    assert listed == len(module.EXPECTED_MISSES) == missed + 1
    seeds = yaml.safe_load((REPO / "config/config.yaml").read_text())["kd_gat"]["seeds"]
    assert f"Those are seeds {seeds[0]}-{seeds[-1]};" in text and seeds == list(
        range(seeds[0], seeds[-1] + 1)
    )
    # docs/science.md: "a miss further below is strict, so it fails CI if it starts passing (24 of the 61 listed)"
    strict = sum(miss.floor - miss.value > module.STRICT_MARGIN for miss in module.EXPECTED_MISSES.values())
    assert (
        f"so it fails CI if it starts passing ({strict} of the {len(module.EXPECTED_MISSES)} listed)"
        in flat_text(REPO / "docs/science.md")
    )


def test_the_floor_misses_docs_science_md_counts_by_reason_are_the_listed_ones() -> None:
    """docs/science.md, "Engineering floors": the 60 misses of the measured run by reason (replay_unseen 18,
    masquerade 18, fusion where neither input detects 6, threshold not carrying 9, fuzzy_unseen 3, fusion policy
    not carrying 6; "12 fusion checks missed in all") are the expected misses the kd_gat module test lists with
    those reasons, the one more of "On another machine" aside; and the epoch caps "Training longer" names (VGAE 8,
    GAT 30) are the shipped config's."""
    import collections
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "kd_gat_module_reasons", REPO / ".tests/integration/test_kd_gat_module.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = flat_text(REPO / "docs/science.md")
    by_reason = collections.Counter(miss.reason for miss in module.EXPECTED_MISSES.values())
    stated = {
        module.REPLAY: r"with its reason: replay_unseen \((\d+), a held-out family",
        module.MASQUERADE: r"genuine frames\), masquerade \((\d+), payload-only",
        module.NO_INPUT_DETECTS: r"where neither input detects the family \((\d+): replay and masquerade",
        module.THRESHOLD_DOES_NOT_CARRY: r"although ROC-AUC passes \((\d+), among them",
        module.RANDOM_IDS_UNSEEN: r"fuzzy_unseen on synth_cantt \((\d+): ROC-AUC",
        module.FUSION_CHOSEN_ON_VALIDATION: r"does not carry to the test capture \((\d+); (\d+) fusion checks missed",
    }
    counts = {}
    for reason, pattern in stated.items():
        found = re.search(pattern, text)
        assert found, pattern
        counts[reason] = int(found.group(1))
    assert counts == {reason: by_reason[reason] for reason in stated}
    missed = int(re.search(r"Engineering floors: (\d+) of \d+ checks are missed", text).group(1))
    assert (
        sum(counts.values())
        == missed
        == len(module.EXPECTED_MISSES) - by_reason[module.NEAR_FLOOR_ONE_SEED_COLLAPSED]
    )
    assert by_reason[module.NEAR_FLOOR_ONE_SEED_COLLAPSED] == 1 and "(61 listed)" in text
    fusion_checks = sum(key[-1] == "fusion_vs_inputs" for key in module.EXPECTED_MISSES)
    assert int(re.search(stated[module.FUSION_CHOSEN_ON_VALIDATION], text).group(2)) == fusion_checks
    training = yaml.safe_load((REPO / "config/config.yaml").read_text())["kd_gat"]["training"]
    assert f"The demo's VGAE stops at its epoch cap ({training['vgae']['epochs']}) in all 18 runs" in text
    assert f"the GAT at its cap ({training['gat']['epochs']}) in 10 of 18" in text


# Measured figures README.md restates from the record that holds their runs: (README's words, the record, its
# words). A rerun that changes the record must change the README too.
RESTATED = [
    ("within 5% in 283 of 300 runs on seeds 7-106", "bench/RESULTS.md", "283 of 300 (94%) within 5% of it"),
    ("within 5% in 283 of 300 runs on seeds 7-106", "bench/RESULTS.md", "On every seed measured (7-106, 300 TPE"),
    ("(29 of 30 on its default seeds;", "bench/RESULTS.md", "29 of 30 and 84 of 90"),
    ("worst 13.7% in gamma", "bench/RESULTS.md", "gamma median 0.6%, worst 13.7%"),
    ("every run within 1.92 NLL of the grid's best (worst 1.85)", "bench/RESULTS.md",
     "within 1.92 NLL of the grid's best (worst 1.85)"),
    ("still leave 4 of 120 runs 5-15% away", "bench/RESULTS.md", "still 4-5 of 120 end 5-15% away"),
    ("pooled F1 0.860", "docs/science.md", "0.860"),
    ("60 of 231 engineering floors are missed", "docs/science.md", "60 of 231 checks are missed"),
    ("there every training job wrote a real peak, 68-342 MB", "profiles/slurm/README.md",
     "68-94 MB at the demo's sizes, 94-342 MB at the original sizes"),
]  # fmt: skip


@pytest.mark.parametrize("ours, record, theirs", RESTATED, ids=[f"{r}:{t[:30]}" for _, r, t in RESTATED])
def test_a_figure_the_readme_restates_is_the_records(ours: str, record: str, theirs: str) -> None:
    assert ours in flat_text(README)
    assert theirs in flat_text(REPO / record)


def test_a_missing_component_skips_on_a_laptop_and_fails_in_ci(monkeypatch) -> None:
    """CONTRIBUTING.md: tests that need a component CI installs use `testkit.require(...)`: they skip on a laptop and
    fail in CI; README.md: skipped "with a message saying which script starts them"."""
    import testkit

    how = "scripts/slurm-up.sh starts it"

    def outcome() -> BaseException | None:
        # caught here, whatever it is: a skip raised where a failure belongs must fail this test, not skip it
        try:
            testkit.require(False, "SLURM", how)
        except BaseException as raised:  # noqa: BLE001 - pytest's outcomes are BaseExceptions
            return raised
        return None

    testkit.require(True, "SLURM", how)  # present: nothing happens
    monkeypatch.setattr(testkit, "IN_CI", False)
    on_a_laptop = outcome()
    monkeypatch.setattr(testkit, "IN_CI", True)
    in_ci = outcome()
    assert isinstance(on_a_laptop, pytest.skip.Exception), on_a_laptop
    assert "scripts/slurm-up.sh starts it" in str(on_a_laptop)
    assert isinstance(in_ci, pytest.fail.Exception), in_ci
    assert "CI must provide it: SLURM" in str(in_ci) and "scripts/slurm-up.sh starts it" in str(in_ci)


def test_only_the_service_clients_tests_answer_with_a_mock_transport() -> None:
    """README.md, "Testing": the simulation service runs for real; "only its client's own tests answer from httpx's
    MockTransport (`.tests/unit/test_service_client.py`)"."""
    assert (
        "only its client's own tests answer from httpx's MockTransport (`.tests/unit/test_service_client.py`)"
        in flat_text(README)
    )
    this = Path(__file__).resolve()
    users = sorted(
        path.relative_to(REPO).as_posix()
        for path in (REPO / ".tests").rglob("*.py")
        if path.resolve() != this and "MockTransport" in path.read_text()
    )
    assert users == [".tests/unit/test_service_client.py"]


def test_the_shipped_config_is_the_one_the_readme_describes() -> None:
    """README.md: `make demo` runs the SIR calibration on a LocalCluster; "the demo uses `demo_teacher`/
    `demo_student`"; "the shipped config holds out `fusion.pt` for it" (`kd_gat.dqn.fit_split`); the GAT sweep "is
    switched on with `kd_gat.sweep.enabled`" (off in the demo); learned resources are "Opt-in"."""
    text = flat_text(README)
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    kd_gat = config["kd_gat"]
    assert (kd_gat["teacher_preset"], kd_gat["student_preset"]) == ("demo_teacher", "demo_student")
    assert "the demo uses `demo_teacher`/`demo_student`" in text
    assert kd_gat["dqn"]["fit_split"] == "fusion"
    assert "(`kd_gat.dqn.fit_split`; the shipped config holds out `fusion.pt` for it" in text
    assert kd_gat["sweep"]["enabled"] is False and "is switched on with `kd_gat.sweep.enabled`" in text
    assert config["calibration"]["backend"]["kind"] == "local"
    assert "(synthetic CAN data + SIR calibration on a LocalCluster)" in text
    assert config["calibration"]["model"] == "simcal.models.sir:simulate"
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    learned = schema["properties"]["learned_resources"]["properties"]["enabled"]["default"]
    assert learned is False is LearnedResourceSettings().enabled
    assert not config.get("learned_resources", {}).get("enabled", False)
    assert "Opt-in (`learned_resources: {enabled: true}`" in text


def test_the_overhead_benchmarks_hold_the_fixed_budget_the_readme_names() -> None:
    """README.md, "Benchmarks": "the overhead lines of the simulate and service benchmarks are held against the
    issue's fixed 5 s budget instead; simulate also prints its measured bare-Dask baseline beside them"."""
    import ast

    text = flat_text(README)
    budgets = {}
    for name in ("bench_simulate", "bench_service"):
        tree = ast.parse((REPO / "bench" / f"{name}.py").read_text())
        (budget,) = [
            node.value.value
            for node in tree.body
            if isinstance(node, ast.Assign) and [target.id for target in node.targets] == ["BUDGET_S"]
        ]
        budgets[name] = budget
    (budget,) = set(budgets.values())
    assert f"held against the issue's fixed {budget:g} s budget instead" in text
    assert "simulate also prints its measured bare-Dask baseline beside them" in text
    assert "_vs_bare_dask" in (REPO / "bench/bench_simulate.py").read_text()


# -- docs/*.md and the wrappers' meta.yaml -------------------------------------------------------------------------
# Figures, defaults and names the other docs state that no test of their area compared with the code.


def meta_description(wrapper: str, key: str = "description") -> str:
    meta = yaml.safe_load((REPO / "wrappers" / wrapper / "meta.yaml").read_text())
    return " ".join(str(meta.get(key) or "").split())


def test_the_numbers_and_choices_the_wrappers_meta_yaml_state_are_the_libraries() -> None:
    """The descriptions and notes of wrappers/*/meta.yaml: generate_can's 25-60 IDs, its DoS / fuzzy intervals and
    its attacks, build_graphs' 11 node features and one edge feature, train_dqn's α grid, analyze_sweep's
    statistics, the design kinds of sample_design and calibrate, train_vgae's default device and calibrate's renamed
    key."""
    from kdgat.chain import EDGE_FEATURES, NODE_FEATURES
    from kdgat.models.dqn import alphas
    from kdgat.synthetic import ATTACKS, DEFAULTS, VEHICLE_ID_ATTACKS, Vehicle
    from kdgat.training.settings import StageSettings
    from simcal.analyze import STATISTICS
    from simcal.calibrate import CalibrationSettings
    from simcal.contract import ContractError
    from simcal.design import DESIGNS

    generate_can = meta_description("generate_can")
    low, high = map(int, re.search(r"(\d+)-(\d+) periodic IDs", generate_can).groups())
    for num_ids in (low, high):
        Vehicle(0, num_ids)
    for num_ids in (low - 1, high + 1):
        with pytest.raises(ValueError, match="num_ids must be between"):
            Vehicle(0, num_ids)
    dos, fuzzy = map(float, re.search(r"DoS ID 0x000 every ([\d.]+) ms, fuzzy random IDs every ([\d.]+) ms",
                                      generate_can).groups())  # fmt: skip
    assert (dos, fuzzy) == (DEFAULTS["dos_interval_ms"], DEFAULTS["fuzzy_interval_ms"])
    own = re.search(r"all carry the vehicle's own IDs \(([\w, ]+)\)", generate_can).group(1).split(", ")
    assert (*VEHICLE_ID_ATTACKS, "none") == ("gear", "rpm", *own, "none")
    assert set(ATTACKS) == {"none", "dos", "fuzzy", "gear", "rpm", *own}

    graphs = meta_description("build_graphs")
    words = {"one": 1, "two": 2}
    nodes, edges = re.search(
        r"nodes = CAN IDs with (\w+) features, edges = [^,]+ with (\w+) feature", graphs
    ).groups()
    assert (int(words.get(nodes, nodes)), int(words.get(edges, edges))) == (NODE_FEATURES, EDGE_FEATURES)

    grid = re.search(r"α ∈ \{0, ([\d.]+), …, 1\}", meta_description("train_dqn")).group(1)
    values = alphas().tolist()
    assert values[0] == 0.0 and values[-1] == 1.0 and values[1] == pytest.approx(float(grid))

    statistics = re.search(r"reduced by ([\w, ]+) or (\w+)\)", meta_description("analyze_sweep")).groups()
    assert [*statistics[0].split(", "), statistics[1]] == list(STATISTICS)

    kinds = {"Sobol": "sobol", "Latin hypercube": "lhs", "random": "random"}
    assert "scipy.stats.qmc Sobol or Latin hypercube, or random" in meta_description("sample_design")
    assert "(Sobol, Latin hypercube or random, scipy.stats.qmc)" in meta_description("calibrate")
    assert tuple(kinds.values()) == DESIGNS

    assert "(settings.device auto)" in meta_description("train_vgae", "notes")
    assert StageSettings.from_config({}, "vgae", "teacher").device == "auto"

    renamed = re.search(
        r"`settings\.(\w+)` was renamed `(\w+)`", meta_description("calibrate", "notes")
    ).groups()
    with pytest.raises(ContractError, match=rf"{renamed[0]} was renamed {renamed[1]}"):
        CalibrationSettings.from_config({renamed[0]: 8})
    assert renamed[1] in {field.name for field in dataclasses.fields(CalibrationSettings)}


def evaluation_doc_paths() -> set[str]:
    """The files of docs/evaluation.md's "What it writes" table: each row's first path in full, the others beside it,
    `{a,b}` expanded; a folder ends in /."""
    table = (
        EVALUATION_DOC.read_text().split("## What it writes", 1)[1].split("\n\n", 1)[1].split("\n\n", 1)[0]
    )
    paths = set()
    for row in table.splitlines()[2:]:
        names = re.findall(r"`([^`]+)`", row.split("|")[1])
        folder = names[0].rsplit("/", 1)[0]
        for name in [names[0], *(f"{folder}/{name}" for name in names[1:])]:
            braces = re.search(r"\{(\w+(?:,\w+)+)\}", name)
            paths |= (
                {name.replace(braces.group(0), part) for part in braces.group(1).split(",")}
                if braces
                else {name}
            )
    return paths


EVALUATION_DOC = REPO / "docs/evaluation.md"


def test_the_files_docs_evaluation_md_lists_are_the_evaluation_modules_outputs(rules) -> None:
    """docs/evaluation.md, "What it writes": every output of the evaluation module's rules, and nothing else (the
    variant of a rule's path written as `{variant}`, a folder standing for the files under it)."""
    from kdgat.chain import VARIANTS

    written = set()
    for name, rule in rules.items():
        if name.startswith("evaluation_"):
            for path in rule["output"]:
                path = re.sub(r"\{(\w+),[^}]*\}", r"{\1}", path)  # drop the wildcards' constraints
                written.add(re.sub(rf"/({'|'.join(VARIANTS)})/", "/{variant}/", path))
    listed = evaluation_doc_paths()
    folders = {path for path in listed if path.endswith("/")}
    assert len(listed) >= 15, listed
    assert {path for path in written if not path.startswith(tuple(folders))} == listed - folders
    assert all(any(path.startswith(folder) for path in written) for folder in folders), folders


def test_the_group_job_and_the_floors_docs_evaluation_md_states_are_the_codes() -> None:
    """docs/evaluation.md: the evaluations, baselines and dataset summary run as one submission (`group:
    "evaluation"`), the summary over all datasets outside it; the floors are ROC-AUC ≥ 0.65 and fusion F1 ≥ the better
    input's mean − 0.005 (kdgat.evaluation.summary), and a listed miss within 0.15 of its floor is not strict
    (STRICT_MARGIN of the kd_gat module test)."""
    import importlib.util

    from kdgat.evaluation.summary import AUC_FLOOR, FUSION_TOLERANCE

    text = flat_text(EVALUATION_DOC)
    snakefile = (MODULES / "evaluation/Snakefile").read_text()
    groups = {}
    for block in re.split(r"\n(?=\s*(?:use )?rule\b)", snakefile)[1:]:
        name = re.match(r"\s*(?:use )?rule (\w+)", block)  # the variants' rules are named in a loop: evaluate
        group = re.search(r"^\s+group:\s*\n\s+\"(\w+)\"", block, re.M)
        groups[name.group(1) if name else "evaluate"] = group and group.group(1)
    assert 'run as one submission (`group: "evaluation"`;' in text
    in_group = {name for name, group in groups.items() if group == "evaluation"}
    assert in_group == {"evaluate", "baselines", "summarize_dataset"}, groups
    assert groups.get("summarize") is None and groups.get("all") is None, groups

    assert f"ROC-AUC ≥ {AUC_FLOOR:g} and F1 above that of flagging every window" in text
    assert f"fusion F1 ≥ the better of the inputs' means − {FUSION_TOLERANCE:g}." in text
    spec = importlib.util.spec_from_file_location(
        "kd_gat_module_margin", REPO / ".tests/integration/test_kd_gat_module.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert f"A miss within {module.STRICT_MARGIN:g} of its floor is not strict" in text


SIMULATION_DOC = REPO / "docs/simulation.md"
SERVICE_DOC = REPO / "docs/service.md"


def test_the_names_docs_simulation_md_says_are_refused_are_the_ones_refused() -> None:
    """docs/simulation.md: "Parameters named like the key or status columns (`param_id`, ...) are refused in every
    input", and a calibrated parameter may not share a name with a column of the trials table (`trial`, ...,
    `loss_<target>`, ...)."""
    from simcal.calibrate import TRIAL_COLUMNS, parse_targets, reject_trial_columns
    from simcal.contract import ContractError
    from simcal.design import Bound
    from simcal.tables import RESERVED_COLUMNS, reject_reserved

    text = flat_text(SIMULATION_DOC)
    reserved = re.search(
        r"Parameters named like the key or status columns \(([^)]+)\) are refused", text
    ).group(1)
    reserved = re.findall(r"`(\w+)`", reserved)
    assert set(reserved) == RESERVED_COLUMNS and len(reserved) == len(RESERVED_COLUMNS)
    for name in reserved:
        with pytest.raises(ContractError, match=rf"parameter names \['{name}'\] are reserved"):
            reject_reserved([name, "beta"], "fixed")
    reject_reserved(["beta", "output_seed"], "fixed")  # nothing else

    trials = re.search(r"a column of the trials table either \(([^)]+)\)", text).group(1)
    trials = re.findall(r"`([\w<>]+)`", trials)
    assert "loss_<target>" in trials
    assert {name for name in trials if "<" not in name} == set(TRIAL_COLUMNS)
    poisson = {
        "name": "incidence",
        "function": "simcal.targets:poisson_nll",
        "column": "incidence",
        "on": "day",
    }
    targets = parse_targets([poisson])
    for name in [*TRIAL_COLUMNS, "loss_incidence"]:
        with pytest.raises(ContractError, match="would share a column of the trials table"):
            reject_trial_columns([Bound(name=name, low=0.0, high=1.0)], targets)
    reject_trial_columns([Bound(name="loss_other", low=0.0, high=1.0)], targets)


def test_the_defaults_and_limits_docs_simulation_md_states_are_the_codes() -> None:
    """docs/simulation.md: SLURM workers retire "by default 15% of the walltime, 20 s to 10 min, plus a stagger of
    5% of it, at most 5 min, before its end"; a cancel is heard "between chunks of 10,000 parameter sets or
    simulations"; the service backend sends "a large sweep as up to 10 jobs, two at a time"; a simulation is
    crashed once its process died more than `allowed_failures` times "(default 0)"."""
    from simcal import runner, tasks
    from simcal.backends import worker_lifetime
    from simcal.service import remote
    from simcal.settings import SimulationSettings

    text = flat_text(SIMULATION_DOC)
    margin, low, high, stagger, most = map(
        float,
        re.search(
            r"by default (\d+)% of the walltime, (\d+) s to (\d+) min, plus a stagger of (\d+)% of it, at most (\d+) "
            r"min, before its end",
            text,
        ).groups(),
    )
    for walltime in (60, 600, 3600, 4 * 3600, 24 * 3600):
        hours, rest = divmod(walltime, 3600)
        spread = min(most * 60, stagger / 100 * walltime)
        before = min(high * 60, max(low, margin / 100 * walltime))
        expected = (int(walltime - before - spread), int(spread))
        assert worker_lifetime({"walltime": f"{hours:02d}:{rest // 60:02d}:00"}) == expected, walltime

    chunk = int(
        re.search(r"between chunks of ([\d,]+) parameter sets or simulations", text).group(1).replace(",", "")
    )
    assert chunk == tasks.PLAN_CHUNK == runner.CANCEL_CHUNK
    words = {"two": 2, "three": 3}
    jobs, at_once = re.search(r"a large sweep as up to (\d+) jobs, (\w+) at a time", text).groups()
    assert (int(jobs), words[at_once]) == (remote.MAX_JOBS, remote.JOBS_IN_FLIGHT)

    assert "more than `allowed_failures` times (default 0)" in text
    schema = yaml.safe_load((MODULES / "calibration/schemas/config.schema.yaml").read_text())
    assert (
        SimulationSettings().allowed_failures
        == 0
        == schema["$defs"]["simulation"]["properties"]["allowed_failures"]["default"]
    )


def test_the_defaults_limits_and_names_docs_service_md_states_are_the_codes() -> None:
    """docs/service.md: the Dask client gives up "after 10 s"; a DELETE answers "after 10 s with the job still
    `running`"; "Kubernetes' liveness probe (5 s)"; the `settings` a request may set; the `/metrics` families;
    `simcal keys add` prints "(sc_...)"; the client's `sync_timeout_s` (300), `timeout` (60 s) and `max_backoff_s`
    (30 s); a sweep through the service goes "as one job per 100 simulations (at most 10 jobs ...) ..., two jobs at a
    time"; the job states of `GET /v1/jobs/{job_id}`."""
    import inspect

    import_required("fastapi", "pip install 'snakemake-gpu-catalog[service]'")
    from dask.utils import parse_timedelta
    from prometheus_client import CollectorRegistry, generate_latest

    from simcal.service import remote
    from simcal.service.app import ServiceMetrics
    from simcal.service.client import SimulationClient
    from simcal.service.cluster import CONNECT_TIMEOUT
    from simcal.service.jobs import REQUEST_SETTINGS, JobManager
    from simcal.service.keys import KEY_PREFIX
    from simcal.service.registry import STATUSES

    text = flat_text(SERVICE_DOC)
    assert f"once the Dask client gives up (after {parse_timedelta(CONNECT_TIMEOUT):g} s)" in text
    wait_s = inspect.signature(JobManager.cancel).parameters["wait_s"].default
    assert f"or after {wait_s:g} s with the job still `running`" in text

    deployment = yaml.safe_load((REPO / "profiles/k8s/service/deployment.yaml").read_text())
    (container,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if "livenessProbe" in c]
    assert f"Kubernetes' liveness probe ({container['livenessProbe']['timeoutSeconds']} s)" in text

    settings = re.search(r"`settings` may set ([^(]+) \(the `simulation` settings", text).group(1)
    assert re.findall(r"`(\w+)`", settings) == list(REQUEST_SETTINGS)

    class Stand:  # what the collector reads of a manager and a cluster: numbers, so only the names matter here
        def counts_and_simulations(self):
            return dict.fromkeys(STATUSES, 0), 0

        def running_rate(self):
            return 0.0

        def readiness(self):
            return True, "ready", 1

    registry = CollectorRegistry()
    registry.register(ServiceMetrics(Stand(), Stand()))
    names = set(re.findall(r"^([a-z_]+)[{ ]", generate_latest(registry).decode(), re.M))  # the samples' names
    listed = re.search(r"\| `GET /metrics` \| Prometheus text: ([^|]+)\|", SERVICE_DOC.read_text()).group(1)
    assert {name.split("{")[0] for name in re.findall(r"`([\w{}]+)`", listed)} == names
    assert "`simcal_jobs{status}`" in listed

    assert f"prints the key once ({KEY_PREFIX}...)" in text
    client = inspect.signature(SimulationClient).parameters
    assert (
        f"the client's `sync_timeout_s` ({client['sync_timeout_s'].default:g}, the service's default" in text
    )
    assert f"waits that long plus its `timeout` ({client['timeout'].default:g} s)" in text
    assert f"at most the client's `max_backoff_s`, {client['max_backoff_s'].default:g} s, later" in text

    per, most, at_once = re.search(
        r"as one job per (\d+) simulations \(at most (\d+) jobs,.*?, (\w+) jobs at a time", text
    ).groups()
    assert (int(per), int(most), {"two": 2, "three": 3}[at_once]) == (
        remote.MIN_JOB_SIMULATIONS,
        remote.MAX_JOBS,
        remote.JOBS_IN_FLIGHT,
    )
    states = re.search(r"\{status: ([\w\\|]+), progress", SERVICE_DOC.read_text()).group(1).split("\\|")
    assert tuple(states) == STATUSES


def test_the_full_disk_retry_waits_docs_service_md_states_are_the_services(tmp_path) -> None:
    """docs/service.md, "Jobs, restarts and cancelling": a job's end, start or return to the queue that the registry's
    disk cannot take is tried again "every 5 s"; a job paused by its own full disk is "tried again after 5 s, the wait
    doubling with each try to at most a minute". Both from the registry the service opens (its default retry_s) and
    job_interruptions.FULL_DISK_RETRY_MAX_S."""
    import_required("fastapi", "pip install 'snakemake-gpu-catalog[service]'")
    from simcal.service.job_interruptions import FULL_DISK_RETRY_MAX_S
    from simcal.service.registry import JobRegistry

    registry = JobRegistry(tmp_path / "jobs.sqlite")  # as server.Service opens it
    retry_s = registry.retry_s
    registry.close()
    text = flat_text(SERVICE_DOC)
    assert text.count(f"every {retry_s:g} s") == 3, retry_s  # an end, a start, a return to the queue
    assert FULL_DISK_RETRY_MAX_S == 60.0
    assert f"(tried again after {retry_s:g} s, the wait doubling with each try to at most a minute" in text


# A command line's placeholders, as the docs write them, and a value the parser takes in their place.
PLACEHOLDERS = {"S": "queued", "N": "10", "ID": "0123abcd", "DIR": "results"}


def documented_command_lines(command: str, comments: bool = False) -> list[tuple[str, list[str]]]:
    """Each `command ...` line of the code blocks of docs/*.md (not docs/science.md's), README.md and the profiles'
    READMEs, continuation lines joined, the comment cut, each `[--opt VALUE | ...]` taken with its first value and
    each placeholder replaced. With ``comments``, (the line, its comment) instead, for lines with one."""
    lines = []
    docs = [path for path in sorted((REPO / "docs").glob("*.md")) if path.name != "science.md"]
    for path in [*docs, README, *sorted((REPO / "profiles").glob("*/README.md"))]:
        for block in re.findall(r"^ *```\w*\n(.*?)^ *```", path.read_text(), re.M | re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.strip()
                if not line.startswith(f"{command} "):
                    continue
                line, _, comment = line.partition(" #")
                line = re.sub(r"\[([^]|]+?)(?: \| [^]]*)?\]", r"\1", line.strip())
                words = [PLACEHOLDERS.get(word, word) for word in line.split()[1:]]
                where = f"{path.relative_to(REPO)}: {line}"
                if not comments:
                    lines.append((where, words))
                elif comment.strip():
                    lines.append((where, comment.strip()))
    return lines


def test_every_simcal_command_line_of_the_docs_is_one_the_simcal_command_takes() -> None:
    """docs/service.md's `simcal keys add`, `simcal serve`, `simcal jobs list|show|cancel` and docs/simulation.md's
    `simcal status` lines, parsed by the parser the `simcal` command runs: a renamed or dropped option fails."""
    from simcal.cli import parser

    lines = documented_command_lines("simcal")
    assert {words[0] for _, words in lines} >= {"keys", "serve", "jobs", "status"}, lines
    for line, words in lines:
        try:
            parser().parse_args(words)
        except SystemExit as exit:
            pytest.fail(f"{line}: the simcal command refuses it (exit {exit.code})")


def test_every_kdgat_command_line_of_the_docs_is_one_the_kdgat_command_takes() -> None:
    """README.md's `kdgat train gat ...` and `kdgat evaluate ...` for an interactive GPU node, parsed by the parser
    the `kdgat` command runs: a renamed or dropped option fails."""
    from kdgat.cli import parser

    lines = documented_command_lines("kdgat")
    assert {tuple(words[:2]) for _, words in lines} >= {("train", "gat"), ("evaluate", "--config")}, lines
    for line, words in lines:
        try:
            parser().parse_args(words)
        except SystemExit as exit:
            pytest.fail(f"{line}: the kdgat command refuses it (exit {exit.code})")


def test_the_columns_a_docs_comment_gives_for_simcal_jobs_list_are_its_tables() -> None:
    """docs/service.md's and profiles/k8s/README.md's `simcal jobs list   # id, status, ...`: the columns the
    comment names are the header of the table the command prints (the k8s README named `progress` for
    DONE/TOTAL and left out FAILED and FN_REF)."""
    from simcal.service.commands import format_jobs

    header = format_jobs([]).split()
    columns = ["id" if name == "JOB" else name.lower() for name in header]
    comments = documented_command_lines("simcal", comments=True)
    listed = [(line, comment) for line, comment in comments if ": simcal jobs list" in line]
    assert len(listed) >= 2, comments
    for line, comment in listed:
        named = comment.split(" (")[0].split(", ")
        assert named == columns, (line, named, columns)


def test_the_targets_and_options_docs_models_md_names_in_its_commands_exist(rules) -> None:
    """docs/models.md: "`snakemake --cores 2 preprocess_all` on the data branch, then `snakemake --cores 2 kd_gat_all`"
    (rules of the main workflow) and "`kdgat train dqn --fit`" (an option of the `kdgat` command)."""
    import argparse

    from kdgat.cli import parser

    text = flat_text(REPO / "docs/models.md")
    targets = re.findall(r"`snakemake --cores \d+ (\w+)`", text)
    assert targets == ["preprocess_all", "kd_gat_all"] and set(targets) <= set(rules)
    ((command, option),) = re.findall(r"`kdgat ([a-z ]+?) (--[a-z-]+)`", text)
    action = parser()
    for word in command.split():
        (subcommands,) = (a for a in action._actions if isinstance(a, argparse._SubParsersAction))
        action = subcommands.choices[word]
    assert option in {name for a in action._actions for name in a.option_strings}, (command, option)


# The metric names of docs/evaluation.md and evaluate_detector's meta.yaml, and the keys binary_metrics writes.
METRIC_KEYS = {
    "accuracy": "accuracy",
    "precision": "precision",
    "recall": "recall",
    "F1": "f1",
    "specificity": "specificity",
    "balanced accuracy": "balanced_accuracy",
    "MCC": "mcc",
    "FPR": "fpr",
    "FNR": "fnr",
    "ROC-AUC": "roc_auc",
    "PR-AUC": "pr_auc",
    "the confusion matrix": "confusion_matrix",
}


def listed_metrics(sentence: str) -> tuple[list[str], list[float]]:
    """The metric keys a sentence lists ("accuracy, ..., detection rate ... at FPR 5 % / 1 % and the confusion
    matrix") and the FPR targets of its detection rates, as fractions."""
    names, rates = re.fullmatch(
        r"(.+), detection rate(?: \(TPR\))? at FPR ([\d.% /]+) and the confusion matrix", sentence
    ).groups()
    words = [re.sub(r" \(.*\)$", "", word) for word in names.split(", ")]
    targets = [float(rate.strip(" %")) / 100 for rate in rates.split("/")]
    return [METRIC_KEYS[word] for word in words] + ["confusion_matrix"], targets


def test_the_metrics_docs_evaluation_md_and_evaluate_detector_list_are_the_ones_computed() -> None:
    """docs/evaluation.md, "Metrics": "accuracy, precision, recall, F1, ..., detection rate (TPR) at FPR 5 % / 1 % /
    0.1 % and the confusion matrix", and "a metric that is undefined on a split (ROC-AUC on a scenario with only
    normal windows ...) is `null`, and `undefined.<metric>` says why"; evaluate_detector's meta.yaml lists the same."""
    from kdgat.evaluation.metrics import binary_metrics

    schema = yaml.safe_load((MODULES / "evaluation/schemas/config.schema.yaml").read_text())
    default_targets = schema["properties"]["evaluation"]["properties"]["fpr_targets"]["default"]
    computed = binary_metrics([0, 1, 0, 1, 1], [0.1, 0.8, 0.4, 0.6, 0.3], [0, 1, 0, 1, 0], default_targets)
    rates = {key for key in computed if key.startswith("detection_rate_at_fpr_")}
    counts = {"n", "n_attack", "n_normal", "undefined"}

    doc = re.search(
        r"all test scenarios pooled: (.+? and the confusion matrix) \(attack = positive;",
        flat_text(EVALUATION_DOC),
    )
    meta = re.search(
        r"every test scenario: (.+? and the confusion matrix) per model",
        meta_description("evaluate_detector"),
    )
    for sentence in (doc.group(1), meta.group(1)):
        keys, targets = listed_metrics(sentence)
        assert len(keys) == len(set(keys)) and set(keys) == set(computed) - rates - counts, sentence
        assert targets == pytest.approx(default_targets)
        assert rates == {f"detection_rate_at_fpr_{target:g}" for target in targets}

    one_class = binary_metrics([0, 0, 0], [0.1, 0.2, 0.3], [0, 0, 1], default_targets)
    assert one_class["roc_auc"] is None and "roc_auc" in one_class["undefined"]
    nothing_flagged = binary_metrics([0, 1, 0], [0.1, 0.2, 0.3], [0, 0, 0], default_targets)
    assert nothing_flagged["precision"] is None and "precision" in nothing_flagged["undefined"]


def expanded(path: str) -> set[str]:
    """`a/{b,c}/{d,e}.x` as its four paths (a `{name}` without a comma is a wildcard and stays)."""
    braces = re.search(r"\{(\w+(?:\.\w+)*(?:,\w+(?:\.\w+)*)+)\}", path)
    if not braces:
        return {path}
    return set().union(
        *(expanded(path.replace(braces.group(0), part, 1)) for part in braces.group(1).split(","))
    )


def test_the_inputs_docs_evaluation_md_says_the_module_needs_are_the_ones_it_reads(rules) -> None:
    """docs/evaluation.md, "Using it from your own workflow": "It needs `{kd_gat.data_prefix}/{dataset}/{train,val,
    test}.pt` and `metadata.json` (default prefix `results/preprocess`) and `results/kd_gat/{dataset}/seed_{seed}/
    {variant}/{vgae,gat,dqn}/{model.pt,history.csv}`": every input of its rules that no rule of it makes."""
    from kdgat.chain import VARIANTS

    text = flat_text(EVALUATION_DOC)
    graphs, metadata, models = re.search(
        r"It needs `([^`]+)` and `([^`]+)` \(default prefix `results/preprocess`\) and `([^`]+)`", text
    ).groups()
    folder = graphs.rsplit("/", 1)[0]
    needed = expanded(graphs) | {f"{folder}/{metadata}"} | expanded(models)
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    read = set()
    for name, rule in rules.items():
        if name.startswith("evaluation_"):
            for path in rule["input"]:
                if path.startswith("results/evaluation/"):
                    continue  # made by the module itself
                path = path.replace(
                    config["kd_gat"].get("data_prefix", "results/preprocess"), "{kd_gat.data_prefix}"
                )
                path = re.sub(r"/seed_\d+/", "/seed_{seed}/", path)
                read.add(re.sub(rf"/({'|'.join(VARIANTS)})/", "/{variant}/", path))
    assert read == needed and len(needed) >= 10


def test_the_models_docs_evaluation_md_lists_are_the_ones_the_summary_reports() -> None:
    """docs/evaluation.md, "Models and baselines": "`model` in `scenario_metrics.csv` is one of" its bullets' names,
    in the summary's order (kdgat.evaluation.summary.REPORTED_MODELS: the chain's, the fixed-α fusions, the
    baselines); the floors apply to "VGAE, GAT and fusion"."""
    from kdgat.chain import MODELS
    from kdgat.evaluation.summary import FLOOR_MODELS, REPORTED_MODELS

    section = EVALUATION_DOC.read_text().split("## Models and baselines", 1)[1].split("\n## ", 1)[0]
    bullets = re.findall(r"^- (.+)$", section, re.M)  # each bullet's first line, its names before a colon
    named = [name for bullet in bullets for name in re.findall(r"`(\w+(?:\.\d)?)`", bullet.split(":")[0])]
    assert named == list(REPORTED_MODELS), named
    assert (
        FLOOR_MODELS == MODELS
        and "F1 above that of flagging every window for VGAE, GAT and fusion" in flat_text(EVALUATION_DOC)
    )


def test_the_per_dataset_summary_draws_the_training_histories_of_the_first_seed(rules) -> None:
    """docs/evaluation.md, "What it writes": the per-dataset summary is "the same per dataset, with the training
    histories of the first seed" (`kd_gat.seeds`' first), of every variant and stage."""
    from kdgat.chain import STAGES, VARIANTS

    assert "| the same per dataset, with the training histories of the first seed |" in flat_text(
        EVALUATION_DOC
    )
    seeds = yaml.safe_load((REPO / "config/config.yaml").read_text())["kd_gat"]["seeds"]
    histories = [
        path for path in rules["evaluation_summarize_dataset"]["input"] if path.endswith("history.csv")
    ]
    assert len(seeds) > 1 and sorted(histories) == sorted(
        f"results/kd_gat/{{dataset}}/seed_{seeds[0]}/{variant}/{stage}/history.csv"
        for variant in VARIANTS
        for stage in STAGES
    )


def test_the_cache_keys_build_graphs_meta_yaml_says_the_preprocess_module_passes_are_passed() -> None:
    """build_graphs' meta.yaml notes: "Suitable for `cache: True`"; "the preprocess module passes `roles_of_logs`,
    kdgat.layout.log_roles" and "`library_code` (kdgat.layout.preprocess_code_digests)", params the wrapper does not
    read; "(Snakemake refuses `benchmark:` on cached rules)": the cached rule has none."""
    import ast

    notes = meta_description("build_graphs", "notes")
    passed = re.findall(r"`(\w+)`,? \(?(kdgat\.layout\.\w+)\)?", notes)
    assert [name for name, _ in passed] == ["roles_of_logs", "library_code"], passed
    snakefile = (MODULES / "preprocess/Snakefile").read_text()
    block = snakefile.split("\nrule build_graphs:\n", 1)[1].split("\nrule ", 1)[0]
    assert re.search(r"^    cache: True$", block, re.M) and "benchmark:" not in block
    for name, function in passed:
        resolve(function.replace("kdgat.layout.", "kdgat.layout:"))
        assert re.search(rf"^        {name}=", block, re.M), name
    # params the wrapper takes (TAKES: not warned of) but does not read: its library call never names them
    wrapper = ast.parse((REPO / "wrappers/build_graphs/wrapper.py").read_text())
    (body,) = [node for node in wrapper.body if isinstance(node, ast.With)]
    read = {node.value for node in ast.walk(body) if isinstance(node, ast.Constant)}
    read |= {node.attr for node in ast.walk(body) if isinstance(node, ast.Attribute)}
    assert "dataset" in read and not {name for name, _ in passed} & read


@pytest.mark.parametrize(
    "variable, endpoint, exported_to",
    [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces"),
        (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://127.0.0.1:4319/v1/traces",
            "http://127.0.0.1:4319/v1/traces",
        ),
    ],
)
def test_either_otlp_endpoint_variable_docs_service_md_names_turns_tracing_on(
    monkeypatch, variable, endpoint, exported_to
):
    """docs/service.md, "Traces": "With `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set,
    ... exported over OTLP/HTTP ... Without an endpoint, no tracer exists": each variable alone, from the
    environment the service reads, makes an OTLP/HTTP exporter to that endpoint; neither makes nothing."""
    import_required("opentelemetry.sdk", "pip install 'snakemake-gpu-catalog[service]'")
    from simcal.service.telemetry import ENDPOINT_VARIABLES, Telemetry

    text = flat_text(SERVICE_DOC)
    assert "With `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set" in text
    assert set(ENDPOINT_VARIABLES) == {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"}
    for name in ENDPOINT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    off = Telemetry.from_environment()
    assert not off.enabled and off.provider is None
    monkeypatch.setenv(variable, endpoint)
    on = Telemetry.from_environment()
    try:
        (processor,) = on.provider._active_span_processor._span_processors
        exporter = processor.span_exporter
        assert on.enabled and type(exporter).__module__.startswith("opentelemetry.exporter.otlp.proto.http")
        assert exporter._endpoint == exported_to
    finally:
        on.shutdown()


# Measured figures docs/models.md restates from docs/science.md's runs: (models.md's words, science.md's words). A
# rerun recorded there that changes them must change models.md too.
MODELS_RESTATED = [
    ("(0.496 for the student)", "VGAE ROC-AUC on `replay_unseen` 0.496, 0.514, 0.522"),
    ("3 of the 18 agents keep their learnt policy (all on synth_cantt;",
     "3 kept their learnt policy (all on synth_cantt), 12 use a constant mid α (0.3-0.9) and 3 copy the GAT"),
    ("within 0.005 of each seed's better input or above in 16 (docs/science.md's run of 2026-12-02 evening)",
     "fusion within 0.005 of each seed's better input 16 → 17 of 33"),
    ("gave 17 for the 16 and 13 (7 where an input ranks the attacks) for the α-transfer check's 12 (6)",
     "misses the floor in 13 of 33 cells (7 of the 27 where an input ranks the attacks), one more than the shipped "
     "choice's 12 (6)"),
    ("on model seeds 45-47, never run before, 16 against the blocks-only config's 21",
     "blocks only 21 fusion misses (15 where an input ranks the attacks), whole captures 16 (10)"),
]  # fmt: skip


@pytest.mark.parametrize("ours, theirs", MODELS_RESTATED, ids=[theirs[:30] for _, theirs in MODELS_RESTATED])
def test_a_figure_docs_models_md_restates_is_docs_science_mds(ours: str, theirs: str) -> None:
    assert ours in flat_text(REPO / "docs/models.md")
    assert theirs in flat_text(REPO / "docs/science.md")


# Named on purpose although absent: docs/service.md's example of a module name that `--allow-models simcal.models`
# does not admit.
NOT_CODE = {"simcal.modelsx"}


def test_every_kdgat_and_simcal_name_of_the_docs_and_the_wrappers_meta_yaml_exists() -> None:
    """Each `kdgat.<...>` / `simcal.<...>` name (a module, an attribute, a `module:function` reference) in
    docs/models.md, evaluation.md, simulation.md, service.md and the wrappers' descriptions and notes: a rename leaves
    no doc pointing nowhere."""
    import importlib

    texts = {
        path.name: path.read_text() for path in (REPO / "docs").glob("*.md") if path.name != "science.md"
    }
    for meta in (REPO / "wrappers").glob("*/meta.yaml"):
        texts[meta.parent.name] = (
            f"{meta_description(meta.parent.name)} {meta_description(meta.parent.name, 'notes')}"
        )
    pattern = re.compile(r"(?<![\w./-])((?:kdgat|simcal)(?:\.[A-Za-z_]\w*)+(?::[A-Za-z_]\w*)?)")
    named = {(where, name) for where, text in texts.items() for name in pattern.findall(text)}
    assert len(named) >= 25, named
    missing = []
    for where, name in sorted(named):
        if name in NOT_CODE:
            continue
        module, _, attribute = name.partition(":")
        parts = module.split(".")
        for found in range(len(parts), 0, -1):  # the longest prefix that is a module
            try:
                value = importlib.import_module(".".join(parts[:found]))
                break
            except ModuleNotFoundError:
                continue
        for part in [*parts[found:], *([attribute] if attribute else [])]:
            if not hasattr(value, part):
                missing.append(f"{where}: {name}")
                break
            value = getattr(value, part)
    assert not missing, missing


# Where a config key named in a doc lives: its top-level section's schema. Keys the docs name relative to their
# section (`backend.local.processes` in docs/simulation.md) get the section's path in front.
SCHEMA_OF = {
    "kd_gat": MODULES / "kd_gat/schemas/config.schema.yaml",
    "evaluation": MODULES / "evaluation/schemas/config.schema.yaml",
    "calibration": MODULES / "calibration/schemas/config.schema.yaml",
    "preprocess": MODULES / "preprocess/schemas/config.schema.yaml",
    "learned_resources": REPO / "workflow/schemas/config.schema.yaml",
}
RELATIVE_KEYS = {
    "evaluation.md": {"speed": "evaluation.speed"},
    "simulation.md": {
        "backend": "calibration.backend",
        "observed": "calibration.observed",
        "refine": "calibration.calibrate.refine",
    },
}


def schema_node(schema: dict, node: dict, key: str) -> dict | None:
    """The schema of `key` under `node`, following a `$ref` into the file's `$defs`."""
    while "$ref" in node:
        node = schema["$defs"][node["$ref"].rsplit("/", 1)[1]]
    return (node.get("properties") or {}).get(key)


def test_every_config_key_the_docs_name_is_in_its_schema() -> None:
    """A dotted config key in backticks in docs/models.md, evaluation.md, simulation.md and service.md
    (`kd_gat.dqn.keep_folds`, `calibration.backend.service.url`, `backend.local.processes`, ...) is a key of its
    section's schema: a renamed key leaves no doc naming the old one."""
    named, missing = 0, []
    for path in sorted((REPO / "docs").glob("*.md")):
        if path.name == "science.md":
            continue
        relative = RELATIVE_KEYS.get(path.name, {})
        sections = "|".join([*SCHEMA_OF, *relative])
        for key in re.findall(rf"`((?:{sections})(?:\.\w+)+)", path.read_text()):
            first, _, rest = key.partition(".")
            if first in relative:
                key = f"{relative[first]}.{rest}"
            parts = key.split(".")
            schema = yaml.safe_load(SCHEMA_OF[parts[0]].read_text())
            node = schema
            for part in parts:
                node = schema_node(schema, node, part)
                if node is None:
                    missing.append(f"{path.name}: {key}")
                    break
            named += 1
    assert named >= 20, named
    assert not missing, missing


def test_the_settings_the_wrappers_meta_yaml_name_are_settings_of_the_library() -> None:
    """simulate's notes name `settings.max_failed_fraction` and `settings.no_worker_timeout_s`, calibrate's
    `simulation.max_failed_fraction` (simcal.settings.SimulationSettings), generate_can's `options.seed`
    (kdgat.synthetic's options) and train_dqn's `kd_gat.dqn.keep_folds` (the kd_gat schema)."""
    from kdgat.synthetic import DEFAULTS
    from simcal.settings import SimulationSettings

    simulation = {field.name for field in dataclasses.fields(SimulationSettings)}
    pattern = r"(?<![\w/])({}\.\w+)"
    for wrapper, prefix in (("simulate", "settings"), ("calibrate", "simulation")):
        text = f"{meta_description(wrapper)} {meta_description(wrapper, 'notes')}"
        names = {name.split(".")[1] for name in re.findall(pattern.format(prefix), text)}
        assert names and names <= simulation, (wrapper, names - simulation)
    text = f"{meta_description('generate_can')} {meta_description('generate_can', 'notes')}"
    options = {name.split(".")[1] for name in re.findall(pattern.format("options"), text)}
    assert options == {"seed"} and options <= set(DEFAULTS)
    assert "kd_gat.dqn.keep_folds folds" in meta_description("train_dqn")
    schema = yaml.safe_load((MODULES / "kd_gat/schemas/config.schema.yaml").read_text())
    assert "keep_folds" in schema["properties"]["kd_gat"]["properties"]["dqn"]["properties"]


def test_the_folders_benchmark_roots_says_are_read_are_every_folder_the_history_is_read_from() -> None:
    """config/README.md (from the schema) said of an earlier run's working directory "only their benchmarks/ folder
    is read", but gpu_mem_mb is learned from the kd_gat training rules' GPU records, their metrics.json outputs
    under results/kd_gat/, looked up in the same roots: a copy of benchmarks/ alone, as the docs asked, taught
    no GPU memory (gpu_mem_mb stayed 0)."""
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    roots = " ".join(
        schema["properties"]["learned_resources"]["properties"]["benchmark_roots"]["description"].split()
    )
    kd_gat = (MODULES / "kd_gat/common.smk").read_text()
    assert (
        'GPU_MEMORY = learned_gpu_memory("metrics")' in kd_gat
    )  # the GPU record: the rules' `metrics` output
    assert '"metrics": "json"' in kd_gat and "results/kd_gat/" in (MODULES / "kd_gat/Snakefile").read_text()
    assert "only their benchmarks/ folder" not in roots
    assert "results/kd_gat/.../metrics.json" in roots and "results/kd_gat/ for gpu_mem_mb" in roots
    assert roots in flat_text(REPO / "config/README.md")


def test_generate_cans_meta_yaml_states_the_default_of_every_key_of_its_options() -> None:
    """A user of the generate_can wrapper alone writes params.options from its meta.yaml: every key was listed
    without the default the library takes when it is left out (seed 0, num_ids 30, ...), so an options block
    without seed wrote seed 0's vehicle without a word."""
    from kdgat.synthetic import DEFAULTS

    meta = yaml.safe_load((REPO / "wrappers/generate_can/meta.yaml").read_text())
    text = " ".join(meta["params"]["options"]["description"].split())
    missing = [f"{key} ({value}" for key, value in DEFAULTS.items() if f"{key} ({value}" not in text]
    assert not missing, missing


# What a `snakemake` command the docs give may leave to the reader, and what the test puts in its place.
SNAKEMAKE_PLACEHOLDERS = {"<catalog>": str(REPO), "<dataset>": "synth_hcrl", "=1/N": "=1/2"}
# Options after which Snakemake runs no job (it lints, lists, draws, reports, unlocks, summarises...), as its
# cli.args_to_api branches: only a command that runs jobs needs to say on how many cores.
RUNS_NO_JOB = (
    "dryrun", "touch", "lint", "list_target_rules", "list_rules", "print_compilation", "generate_unit_tests",
    "dag", "rulegraph", "filegraph", "d3dag", "unlock", "cleanup_metadata", "conda_cleanup_envs",
    "conda_create_envs_only", "list_conda_envs", "cleanup_shadow", "container_cleanup_images", "list_changes",
    "list_input_changes", "list_params_changes", "list_untracked", "summary", "detailed_summary", "archive",
    "delete_all_output", "delete_temp_output",
)  # fmt: skip
SNAKEMAKE_COMMAND = re.compile(r"^(?:\w+=\S+ )*(?:\.venv/bin/)?snakemake .+$")


def documented_snakemake_commands() -> list[tuple[str, list[str]]]:
    """Each `snakemake ...` command of README.md, CONTRIBUTING.md, config/README.md, docs/*.md and the profiles'
    READMEs, in a code block (continuation lines joined) or in backticks in the text: its words after
    `snakemake`, the comment and a pipe cut, placeholders filled."""
    paths = [README, CONTRIBUTING, REPO / "config/README.md", *sorted((REPO / "docs").glob("*.md"))]
    commands = []
    for path in [*paths, *sorted((REPO / "profiles").glob("*/README.md"))]:
        text = path.read_text()
        blocks = re.findall(r"^ *```\w*\n(.*?)^ *```", text, re.M | re.S)
        lines = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
        prose = re.sub(r"^ *```\w*\n.*?^ *```", "", text, flags=re.M | re.S)
        lines += [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", prose)]
        for line in lines:
            line = re.sub(r"\s+#.*$", "", line.strip()).split(" | ")[0].strip()
            if not SNAKEMAKE_COMMAND.match(line):
                continue
            words = line.split()
            words = words[next(i for i, word in enumerate(words) if word.endswith("snakemake")) + 1 :]
            for placeholder, value in SNAKEMAKE_PLACEHOLDERS.items():
                words = [word.replace(placeholder, value) for word in words]
            commands.append((f"{path.relative_to(REPO)}: {line}", words))
    return commands


def test_every_snakemake_command_of_the_docs_runs_as_written(rules) -> None:
    """A reader copies a command as the docs write it. Each `snakemake ...` command is one Snakemake's own parser
    takes, the rules it names (`--forcerun`, `--until`, `--omit-from`, `--batch`, a target that is a name, not a
    path) are rules of the main workflow, and one that runs jobs says on how many cores (or takes a profile):
    `snakemake --forcerun calibration_simulate calibration_calibrate` (docs/simulation.md), `snakemake
    preprocess_all` (docs/models.md) and `snakemake --batch evaluation_summarize=1/N results/evaluation/summary.md`
    (README.md) stopped at once, as written, with Snakemake's "cores have to be specified for local execution"."""
    from snakemake.cli import get_argument_parser

    commands = documented_snakemake_commands()
    assert len(commands) >= 15, commands
    problems = []
    for where, words in commands:
        try:
            args = get_argument_parser().parse_args(words)
        except SystemExit as exit:
            if exit.code != 0:  # `--version` exits 0
                problems.append(f"{where}: Snakemake refuses it (exit {exit.code})")
            continue
        named = {*args.forcerun, *args.until, *args.omit_from, *([args.batch.rulename] if args.batch else [])}
        named |= {target for target in args.targets if re.fullmatch(r"\w+", target)}
        problems += [f"{where}: no rule {name!r} in the main workflow" for name in sorted(named - set(rules))]
        runs_jobs = not any(getattr(args, name) for name in RUNS_NO_JOB) and not (
            args.report is not None and not args.report_after_run
        )
        if not runs_jobs or args.profile:  # the repository's profiles give `jobs`
            continue
        if args.executor in (None, "local") and args.cores is None and args.jobs is None:
            problems.append(
                f"{where}: runs jobs but gives no --cores (Snakemake stops: cores have to be specified)"
            )
        elif args.executor not in (None, "local") and args.jobs is None:
            problems.append(
                f"{where}: runs jobs on {args.executor} but gives no --jobs (Snakemake stops at once)"
            )
    assert not problems, "\n".join(problems)


def test_simulates_meta_yaml_states_the_default_of_every_setting_the_library_takes() -> None:
    """The simulate wrapper's settings were listed without defaults and pointed to the calibration module's schema,
    whose defaults (config/README.md: 4 replicates, max_failed_fraction 0.05) are the module's, not the wrapper's:
    a rule of one's own without them ran 1 replicate per set and failed on one failed simulation. Every key of
    simcal's SimulationSettings is listed with the library's default, and the module defaults that differ are
    named as the module's; docs/service.md says the same of a job's settings."""
    from simcal.settings import SimulationSettings

    def shown(key: str, value: object) -> str:
        if value is None:
            return "auto" if key == "batch_size" else "null"
        return str(value).lower() if isinstance(value, bool) else str(value)

    meta = yaml.safe_load((REPO / "wrappers/simulate/meta.yaml").read_text())
    text = " ".join(meta["params"]["settings"]["description"].split())
    library = SimulationSettings()
    missing = [
        f"{field.name} ({shown(field.name, getattr(library, field.name))}"
        for field in dataclasses.fields(SimulationSettings)
        if f"{field.name} ({shown(field.name, getattr(library, field.name))}" not in text
    ]
    assert not missing, missing
    schema = yaml.safe_load((MODULES / "calibration/schemas/config.schema.yaml").read_text())
    module = schema_node(schema, schema_node(schema, schema, "calibration"), "simulation")
    while "$ref" in module:
        module = schema["$defs"][module["$ref"].rsplit("/", 1)[1]]
    module = module["properties"]
    differ = {
        key: node["default"]
        for key, node in module.items()
        if "default" in node
        and getattr(library, key) != (None if node["default"] == "auto" else node["default"])
    }
    assert differ, "the calibration module's defaults are the library's: drop the sentence naming them"
    named = text.rsplit("not these: ", 1)[1]
    assert named.rstrip(".") == " and ".join(f"{key} {value}" for key, value in differ.items()), (
        named,
        differ,
    )
    service = flat_text(SERVICE_DOC)
    assert "One left out takes the library's default, as the `simulate` wrapper does" in service
    assert f"`max_failed_fraction` is {library.max_failed_fraction:g}," in service
    # docs/simulation.md, "From notebooks and scripts": SimulationService(settings=...) takes the same library
    # defaults, and names the default of every setting submit reads (those simcal.api reads off its settings)
    from simcal.api import SimulationService

    section = flat_text(SIMULATION_DOC).split("## From notebooks and scripts", 1)[1].split(" ## ", 1)[0]
    assert "takes the library's default (`simcal.settings.SimulationSettings`" in section, section[:400]
    assert "not the calibration module's" in section
    read = sorted(set(re.findall(r"\bsettings\.([a-z_]+)\b", (REPO / "src/simcal/api.py").read_text())))
    assert read, "simcal.api reads no setting: the sentence naming the defaults submit reads must go"
    stated = re.findall(
        r"`([a-z_]+)` (null|true|false|[0-9.]+)", section.split("not the calibration module's", 1)[1]
    )
    assert sorted(key for key, _ in stated) == read, (stated, read)
    for settings in (None, {"seed": 1}):
        service = SimulationService(settings=settings)
        for key, value in stated:
            if settings is None or key not in settings:
                assert shown(key, getattr(service.settings, key)) == value, (key, value, settings)
