"""The whole config is validated once; a wrong key or value stops the run naming the key."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from testkit import REPO, run_snakemake, venv_bin


def dry_run_of_module(tmp_path: Path, lab: object, module: str, given: str = "config"):
    """A downstream Snakefile's dry run (the README's "Reuse it"): ``lab`` in its lab.yaml, the catalog's
    ``module`` imported with ``config: <given>`` and its rules used as ``lab_*``."""
    (tmp_path / "lab.yaml").write_text(yaml.safe_dump(lab))
    (tmp_path / "Snakefile").write_text(
        'configfile: "lab.yaml"\n\n\n'
        f'module {module}:\n    snakefile:\n        "{REPO}/workflow/modules/{module}/Snakefile"\n'
        f"    config:\n        {given}\n\n\nuse rule * from {module} as lab_*\n"
    )
    return run_snakemake("-n", "--cores", "1", cwd=tmp_path, check=False, timeout=300)


DEFAULT_CONFIG = yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def _dry_run_with(config: dict, tmp_path: Path, *extra: str, env: dict | None = None):
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    return run_snakemake(
        "-n",
        "--snakefile",
        str(REPO / "workflow" / "Snakefile"),
        "--directory",
        str(tmp_path),
        "--configfile",
        str(configfile),
        "--cores",
        "1",
        *extra,
        check=False,
        timeout=300,
        env=env,
    )


def test_default_config_passes_validation(tmp_path: Path) -> None:
    proc = _dry_run_with(DEFAULT_CONFIG, tmp_path)
    assert proc.returncode == 0, proc.stdout


def test_a_run_from_another_directory_needs_the_configfile_the_readme_says_and_no_directory(
    tmp_path: Path,
) -> None:
    """From another directory the workflow stopped on Snakemake's "Workflow defines configfile config/config.yaml
    but it is not present" (it is looked up in the working directory), which the README did not say: its command
    for that case runs as written, with or without --directory."""
    readme = " ".join((REPO / "README.md").read_text().split())
    found = re.search(
        r"Run from another directory, it needs the Snakefile and the config named: `([^`]+)`", readme
    )
    assert found, "the README says how to run the workflow from another directory"
    command = found.group(1).replace("<catalog>", str(REPO)).split()
    assert command[0] == "snakemake" and "--configfile" in command
    (tmp_path / "run").mkdir()
    for extra in ((), ("--directory", str(tmp_path / "work"))):
        proc = run_snakemake(*command[1:], "-n", *extra, cwd=tmp_path / "run", check=False, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:]
        working = tmp_path / ("work" if extra else "run")
        assert f"Working directory: {working}" in proc.stdout, proc.stdout[:3000]
    at = command.index("--configfile")
    without = command[1:at] + command[at + 2 :]
    proc = run_snakemake(*without, "-n", cwd=tmp_path / "run", check=False, timeout=300)
    assert proc.returncode != 0
    assert "Workflow defines configfile config/config.yaml but it is not present" in proc.stdout, proc.stdout[
        -2000:
    ]


def test_unknown_top_level_section_is_named(tmp_path: Path) -> None:
    proc = _dry_run_with({**DEFAULT_CONFIG, "kdgat_typo": {}}, tmp_path)
    assert proc.returncode != 0
    assert "Error validating config file" in proc.stdout
    assert "kdgat_typo" in proc.stdout


@pytest.mark.parametrize(
    ("section", "override", "expected"),
    [
        ("targets", {"can_idz": True}, "'can_idz' was unexpected"),
        ("targets", {"can_ids": "yes"}, "'yes' is not of type 'boolean'"),
    ],
)
def test_wrong_key_or_value_names_the_key_and_what_was_expected(
    tmp_path: Path, section: str, override: dict, expected: str
) -> None:
    config = {**DEFAULT_CONFIG, section: {**DEFAULT_CONFIG.get(section, {}), **override}}
    proc = _dry_run_with(config, tmp_path)
    assert proc.returncode != 0
    assert expected in proc.stdout, proc.stdout
    assert f"['{section}']" in proc.stdout, proc.stdout


def _with(config: dict, path: tuple[str, ...], value) -> dict:
    """A deep copy of ``config`` with the key at ``path`` set to ``value``."""
    copy = yaml.safe_load(yaml.safe_dump(config))
    parent = copy
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return copy


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        # numpy's generators refuse a negative seed only once a job runs, with no key named
        (("preprocess", "seed"), -1, "-1 is less than the minimum of 0"),
        (("datasets", "synth_hcrl", "synthetic", "seed"), -3, "-3 is less than the minimum of 0"),
        # results/calibration/.. is results/: the calibration's outputs would land among every other module's
        (("calibration", "name"), "..", "'..' does not match"),
        (("calibration", "name"), ".", "'.' does not match"),
        # an empty prefix made the training rules read /<dataset>/train.pt
        (("kd_gat", "data_prefix"), "", "'' should be non-empty"),
        # every path contains the empty word: every log of a dataset read from a folder was left out, and the
        # dry run stopped naming datasets.<name>.path as a folder without logs, not this key
        (("preprocess", "exclude"), ["suppress", ""], "'' should be non-empty"),
        # planned and run: a summary of replicates_ok/failed alone, a page saying "no numeric output to summarise"
        (("calibration", "sweep", "columns"), [], "[] should be non-empty"),
        # torch reads cuda:255 as cuda: the evaluations ran on GPU 0 without a word
        (("evaluation", "device"), "cuda:255", "'cuda:255' does not match"),
        # 0 is no time limit: the SLURM executor sends none, and the partition's default applies; said, not only
        # the bare bound
        (("preprocess", "runtime"), 0, "less than the minimum of 1: a runtime of 0 is no time limit at all"),
    ],
)
def test_a_nested_value_out_of_range_names_its_key(tmp_path: Path, path: tuple, value, expected: str) -> None:
    proc = _dry_run_with(_with(DEFAULT_CONFIG, path, value), tmp_path)
    assert proc.returncode != 0
    assert expected in proc.stdout, proc.stdout
    assert "On instance" + "".join(f"[{key!r}]" for key in path) in proc.stdout, proc.stdout


def _with_dataset(name: str, entry: dict) -> dict:
    return {**DEFAULT_CONFIG, "datasets": {**DEFAULT_CONFIG["datasets"], name: entry}}


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            {**DEFAULT_CONFIG, "kd_gat": {**DEFAULT_CONFIG["kd_gat"], "dqn": {"fit_split": "fusoin"}}},
            "kd_gat.dqn.fit_split: the preprocess module writes no split 'fusoin'; it writes ['val', 'fusion']",
        ),
        (
            _with_dataset(
                "lab", {"path": "data/lab", "files": {"train": ["a.csv"], "test": {"dos": ["b.csv"]}}}
            ),
            "datasets.lab: give its logs in exactly one of synthetic.files, path or files; it has ['path', 'files']",
        ),
        (
            _with_dataset("lab", {"files": {"train": ["a.csv"]}}),
            "datasets.lab: no test scenarios",
        ),
    ],
)
def test_a_setting_the_schema_cannot_judge_is_named_before_any_job_runs(
    tmp_path: Path, config: dict, expected: str
) -> None:
    proc = _dry_run_with(config, tmp_path)
    assert proc.returncode != 0
    assert expected in proc.stdout, proc.stdout


@pytest.mark.parametrize(
    ("path", "value"),
    [
        # passed minimum 0 (exclusive): the generator would write an endless capture
        (("datasets", "synth_hcrl", "synthetic", "files", 0, "duration_s"), float("inf")),
        # a comparison with NaN is false, so NaN passes every bound
        (("calibration", "parameters", "beta", "high"), float("nan")),
    ],
)
def test_a_number_that_is_not_finite_is_refused_naming_its_key(tmp_path: Path, path: tuple, value) -> None:
    proc = _dry_run_with(_with(DEFAULT_CONFIG, path, value), tmp_path)
    dotted = "".join(f"[{key}]" if isinstance(key, int) else f".{key}" for key in path).lstrip(".")
    assert proc.returncode != 0
    assert f"{dotted}: {value} is not a finite number" in proc.stdout, proc.stdout


def test_held_out_shares_that_leave_no_block_for_training_are_refused_before_any_job_runs(
    tmp_path: Path,
) -> None:
    """Each share is within the schema's [0, 1), their sum is not: refused while the workflow is parsed, naming
    the keys and their sum, not by the first build_graphs job."""
    preprocess = {**DEFAULT_CONFIG["preprocess"], "val_fraction": 0.6, "held_out": {"fusion": 0.4}}
    proc = _dry_run_with({**DEFAULT_CONFIG, "preprocess": preprocess}, tmp_path)
    assert proc.returncode != 0
    assert (
        "preprocess.val_fraction=0.6 + preprocess.held_out.fusion=0.4 (sum 1) take 6 + 4 = 10 of "
        "preprocess.time_blocks=10 blocks of every training capture"
    ) in proc.stdout, proc.stdout
    assert "build_graphs" not in proc.stdout, proc.stdout  # no job was planned


@pytest.mark.parametrize(
    ("slurm", "expected"),
    [
        (
            {"adaptive": {"minimum_jobs": 5, "maximum_jobs": 1}},
            # the config file as yaml.safe_dump writes it, keys sorted
            "calibration.backend.slurm.adaptive {'maximum_jobs': 1, 'minimum_jobs': 5}: need 0 <= minimum_jobs <= "
            "maximum_jobs and maximum_jobs >= 1",
        ),
        ({"walltime": "1h"}, "calibration.backend.slurm.walltime '1h': expected HH:MM:SS"),
        (
            {"walltime": "00:10:00", "lifetime": "1h"},
            "calibration.backend.slurm: lifetime (3600 s) + lifetime_stagger (30 s) must be positive and shorter "
            "than the walltime 00:10:00 (600 s)",
        ),
    ],
)
def test_slurm_backend_options_the_jobs_refuse_are_refused_before_any_job_runs(
    tmp_path: Path, slurm: dict, expected: str
) -> None:
    """Each of these is within the schema (integers >= 0 and >= 1, strings), but the simulate and calibrate jobs
    refused them when they started their SLURMCluster, after sample_design and generate_observed had run: the dry
    run planned them. Now it stops naming the key, before any job."""
    calibration = {**DEFAULT_CONFIG["calibration"], "backend": {"kind": "slurm", "slurm": slurm}}
    proc = _dry_run_with({"calibration": calibration}, tmp_path)
    assert proc.returncode != 0, proc.stdout
    assert expected in proc.stdout, proc.stdout
    assert "calibration_sample_design" not in proc.stdout, proc.stdout  # no job was planned


def test_a_config_without_datasets_runs_the_calibration_alone(tmp_path: Path) -> None:
    """Only a calibration section: the CAN-IDS modules, which need datasets, are not loaded (the kd_gat module
    refused the config before), and rule all asks for the calibration."""
    proc = _dry_run_with({"calibration": DEFAULT_CONFIG["calibration"]}, tmp_path)
    assert proc.returncode == 0, proc.stdout
    jobs = set(re.findall(r"^(?:local)?rule (\w+):", proc.stdout, re.MULTILINE))
    assert {"all", "calibration_calibrate", "calibration_analyze"} <= jobs, proc.stdout
    assert all(job == "all" or job.startswith("calibration_") for job in jobs), jobs


def test_a_configfile_without_datasets_runs_the_calibration_alone_beside_the_shipped_config(
    tmp_path: Path,
) -> None:
    """From the repository root the Snakefile's own `configfile: config/config.yaml` is loaded too, and
    `--configfile my.yaml` is merged onto it: the demo's datasets stay, and a calibration-only file planned the
    whole CAN-IDS chain (kd_gat training on GPUs included). The docs said such a config runs the calibration alone
    and that keys left out take the schema's defaults; they now name --replace-workflow-config, which does that."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text((REPO / "config" / "config.yaml").read_text())
    own = tmp_path / "my.yaml"
    own.write_text(yaml.safe_dump({"calibration": DEFAULT_CONFIG["calibration"]}))

    def planned(*extra: str) -> set[str]:
        proc = run_snakemake(
            "-n", "--snakefile", str(REPO / "workflow" / "Snakefile"), "--directory", str(tmp_path),
            "--configfile", str(own), "--cores", "1", *extra, check=False, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout
        return set(re.findall(r"^(?:local)?rule (\w+):", proc.stdout, re.MULTILINE))

    assert "kd_gat_train_gat_teacher" in planned()  # merged onto the shipped config: its datasets stay
    alone = planned("--replace-workflow-config")
    assert {"all", "calibration_calibrate"} <= alone, alone
    assert all(job == "all" or job.startswith("calibration_") for job in alone), alone
    readme = " ".join((REPO / "README.md").read_text().split())
    assert (
        "A config without `datasets` (say, only a `calibration` section, given as `snakemake --cores 8 --configfile my.yaml "
        "--replace-workflow-config`) runs the calibration alone" in readme
    )
    config_readme = " ".join((REPO / "config" / "README.md").read_text().split())
    assert "keys you leave out take the defaults below" not in config_readme
    assert "add `--replace-workflow-config` to start from the defaults below instead" in config_readme


def test_can_ids_asked_for_without_datasets_is_refused_naming_both_keys(tmp_path: Path) -> None:
    config = {"targets": {"can_ids": True}, "calibration": DEFAULT_CONFIG["calibration"]}
    proc = _dry_run_with(config, tmp_path)
    assert proc.returncode != 0
    assert (
        "targets.can_ids is true, but config key 'datasets' is missing or empty: name the datasets to train and "
        "evaluate on, or set targets.can_ids to false (or leave it out) to run the calibration alone"
    ) in proc.stdout, proc.stdout


def test_the_test_scenarios_are_no_dqn_split(tmp_path: Path) -> None:
    # test.pt exists, but an agent that learns or stops on the scenarios it is scored on reports what it learnt:
    # refused by name (the schema), not as a split that does not exist.
    dqn = {**DEFAULT_CONFIG["kd_gat"]["dqn"], "fit_split": "fusion", "stop_split": "test"}
    proc = _dry_run_with({**DEFAULT_CONFIG, "kd_gat": {**DEFAULT_CONFIG["kd_gat"], "dqn": dqn}}, tmp_path)
    assert proc.returncode != 0
    assert "stop_split" in proc.stdout and "writes no split" not in proc.stdout, proc.stdout


def _with_sweep_table(tmp_path: Path, text: str | None) -> dict:
    """The default config with the GAT sweep on over a table holding ``text`` (None: the table is a folder)."""
    table = tmp_path / "sweep_table"
    if text is None:
        table.mkdir()
    else:
        table.write_text(text)
    return _with(DEFAULT_CONFIG, ("kd_gat", "sweep"), {"enabled": True, "table": str(table)})


def test_the_gat_sweep_is_part_of_rule_all_when_enabled(tmp_path: Path) -> None:
    """kd_gat.sweep.enabled: true trained nothing under `snakemake` (rule all asked only for the evaluations,
    which read no sweep model): one GAT per row of params.tsv (3) and dataset (2)."""
    config = _with(
        DEFAULT_CONFIG, ("kd_gat", "sweep"), {"enabled": True, "table": str(REPO / "config/params.tsv")}
    )
    proc = _dry_run_with(config, tmp_path)
    assert proc.returncode == 0, proc.stdout
    assert re.search(r"^kd_gat_train_gat_sweep\s+6$", proc.stdout, re.MULTILINE), proc.stdout


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # pandas took the first of three fields as the index: hidden=2, heads=5, the 8 lost
        ("hidden\theads\n8\t2\t5\n", "line 2: 3 tab-separated fields, but the header (line 1) names 2"),
        ("hidden\theads\n16\t4\n", None),  # the valid table the cases below break
        ("hidden\theads\n8\t2\n16\t4\n8\t2\n", "line 4 repeats line 2 (hidden~8_heads~2)"),
        ("hidden\thidden\n8\t16\n", "line 1: column ['hidden'] named twice"),
        # spaces instead of tabs: one column, refused by name before the first sweep job
        ("hidden heads\n8 2\n", "line 2: sweep column 'hidden heads' is neither a training setting"),
        (None, "is not a file (expected a tab-separated table, one row per GAT)"),
    ],
)
def test_a_sweep_table_that_pandas_would_misread_is_refused_naming_its_line(
    tmp_path: Path, text: str | None, expected: str | None
) -> None:
    proc = _dry_run_with(_with_sweep_table(tmp_path, text), tmp_path)
    if expected is None:
        assert proc.returncode == 0, proc.stdout
        return
    assert proc.returncode != 0
    assert f"kd_gat.sweep.table: {tmp_path / 'sweep_table'}" in proc.stdout, proc.stdout
    assert expected in proc.stdout, proc.stdout


def test_a_sweep_table_in_the_home_folder_is_read_and_a_relative_one_that_is_missing_names_the_working_directory(
    tmp_path: Path,
) -> None:
    """kd_gat.sweep.table ~/params.tsv said "does not exist" where the table was; config/params.tsv (the shipped
    default), run with --directory elsewhere, said so without saying where it was looked up from."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "params.tsv").write_text("hidden\theads\n16\t4\n8\t2\n")
    sweep = {"enabled": True, "table": "~/params.tsv"}
    proc = _dry_run_with(_with(DEFAULT_CONFIG, ("kd_gat", "sweep"), sweep), tmp_path, env={"HOME": str(home)})
    assert re.search(r"^kd_gat_train_gat_sweep\s+4$", proc.stdout, re.MULTILINE), proc.stdout
    sweep = {"enabled": True, "table": "config/params.tsv"}
    proc = _dry_run_with(_with(DEFAULT_CONFIG, ("kd_gat", "sweep"), sweep), tmp_path)
    assert (
        "kd_gat.sweep.table: config/params.tsv does not exist (a tab-separated table) (relative to the working "
        f"directory {tmp_path})"
    ) in proc.stdout, proc.stdout


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("heads > 100", "kd_gat.sweep: no rows of {table} left after query 'heads > 100'"),
        ("head > 1", "kd_gat.sweep.query 'head > 1' failed on {table}: name 'head' is not defined"),
    ],
)
def test_a_sweep_query_that_fails_or_keeps_no_row_is_a_workflow_error_naming_the_key(
    tmp_path: Path, query: str, expected: str
) -> None:
    """Both were ValueErrors, where every other config mistake the modules refuse is a WorkflowError."""
    config = _with_sweep_table(tmp_path, "hidden\theads\n16\t4\n")
    config = _with(config, ("kd_gat", "sweep", "query"), query)
    proc = _dry_run_with(config, tmp_path)
    assert proc.returncode != 0
    first, said = proc.stdout.splitlines()[:2]
    assert re.fullmatch(r'WorkflowError in file .*/kd_gat/common\.smk", line \d+:', first), first
    assert said == expected.format(table=tmp_path / "sweep_table")
    assert "ValueError" not in proc.stdout, proc.stdout


@pytest.mark.parametrize(
    ("config", "extra", "expected"),
    [
        # Snakemake named it On instance['preprocess'] under a dump of the schema, and no file
        (
            _with(DEFAULT_CONFIG, ("preprocess", "windw_size"), 50),
            (),
            "config key preprocess.windw_size (set in {configfile}): an unknown key; preprocess takes "
            "['bad_rows', 'exclude', 'held_out', 'mem_mb', 'runtime', 'seed', 'stride', 'time_blocks', "
            "'val_fraction', 'window_size']",
        ),
        (
            _with_dataset("lab/can", {"path": "data/lab"}),
            (),
            "config key datasets.lab/can (set in {configfile}): 'lab/can' does not match",
        ),
        # --config loads what is inside a mapping as text: the 1 the researcher wrote arrives as '1'
        (
            DEFAULT_CONFIG,
            ("--config", "kd_gat={seeds: [1]}"),
            "config key kd_gat.seeds[0] (set in --config): '1' is not of type 'integer'; --config reads every "
            "value inside a mapping as text",
        ),
    ],
)
def test_a_config_the_schema_refuses_is_named_by_dotted_key_and_the_file_that_set_it(
    tmp_path: Path, config: dict, extra: tuple, expected: str
) -> None:
    proc = _dry_run_with(config, tmp_path, *extra)
    assert proc.returncode != 0
    assert expected.format(configfile=tmp_path / "config.yaml") in proc.stdout, proc.stdout
    assert "Error validating config file" in proc.stdout, proc.stdout  # Snakemake's own message is kept


def test_a_module_reused_alone_names_a_missing_required_key_and_the_file(tmp_path: Path) -> None:
    """The README's "Reuse it": the module's own validation is the only one, so it gives the same first line."""
    proc = dry_run_of_module(
        tmp_path,
        {"datasets": {"lab": {"synthetic": {"files": [{"split": "train_01_normal", "name": "normal"}]}}}},
        "preprocess",
    )
    assert proc.returncode != 0
    assert (
        "config key datasets.lab.synthetic.files[0].duration_s (set in lab.yaml): a required key is missing "
        "from datasets.lab.synthetic.files[0]"
    ) in proc.stdout, proc.stdout


@pytest.mark.parametrize(
    ("module", "first_line", "message"),
    [
        (
            "preprocess",
            r'WorkflowError in file .*/preprocess/Snakefile", line \d+:',
            "config key 'datasets' is missing or empty: preprocess builds the graphs of every dataset named there",
        ),
        (
            "kd_gat",
            r'WorkflowError in file .*/kd_gat/common\.smk", line \d+:',
            "config key 'datasets' is missing or empty: kd_gat trains one chain per dataset named there",
        ),
        (
            "evaluation",
            r'WorkflowError in file .*/evaluation/common\.smk", line \d+:',
            "config key 'datasets' is missing or empty: the evaluation module evaluates every dataset named there",
        ),
    ],
)
def test_a_module_reused_without_datasets_is_refused_naming_the_key(
    tmp_path: Path, module: str, first_line: str, message: str
) -> None:
    """A downstream Snakefile importing kd_gat or evaluation (the README's "Reuse it") with no `datasets` in its
    config got a ValueError (Snakemake prints the error's type and the line that raised it): a WorkflowError
    naming the key now, like every other config mistake the modules refuse at parse time. The preprocess module
    imported alone accepted it silently: a `dataset:` typo built nothing and the run said nothing to do."""
    proc = dry_run_of_module(tmp_path, {"kd_gat": {"seeds": [3]}}, module)
    assert proc.returncode != 0
    first, said = proc.stdout.splitlines()[:2]
    assert re.fullmatch(first_line, first), first
    assert said == message
    assert "ValueError" not in proc.stdout, proc.stdout


def test_one_preprocess_module_feeds_two_kd_gat_modules_the_way_the_data_prefix_docs_say(
    tmp_path: Path,
) -> None:
    """kd_gat.data_prefix's description (config/README.md) said a kd_gat module imported with a `prefix:` reads
    the graphs of an unprefixed preprocess module given an absolute data_prefix: Snakemake matches paths as
    written, so that dry run stopped with a MissingInputException. What it says now: `replace_prefix:` of the
    module's own folders, and an absolute path only for graphs made outside the workflow."""
    schema = yaml.safe_load((REPO / "workflow/modules/kd_gat/schemas/config.schema.yaml").read_text())
    described = " ".join(schema["properties"]["kd_gat"]["properties"]["data_prefix"]["description"].split())
    assert "give each of them a `replace_prefix:` of its own folders only" in described, described
    assert "An absolute one is for graphs made outside the workflow" in described, described
    folders = ["results/kd_gat/", "checkpoints/", "logs/", "benchmarks/"]
    (tmp_path / "lab.yaml").write_text(
        yaml.safe_dump(
            {
                "datasets": {
                    "lab": {
                        "synthetic": {
                            "files": [
                                {"split": "train_01_normal", "name": "normal", "duration_s": 0.5},
                                {"split": "test_01_dos", "name": "dos", "attack": "dos", "duration_s": 1.0},
                            ]
                        }
                    }
                },
                "kd_gat": {"seeds": [3]},
            }
        )
    )
    modules = [
        f'module preprocess:\n    snakefile:\n        "{REPO}/workflow/modules/preprocess/Snakefile"\n'
        "    config:\n        config\n\n\nuse rule * from preprocess as pre_*\n"
    ]
    for run in ("a", "b"):
        moved = {folder: f"run_{run}/{folder}" for folder in folders}
        modules.append(
            f'module kd_{run}:\n    snakefile:\n        "{REPO}/workflow/modules/kd_gat/Snakefile"\n'
            f"    config:\n        config\n    replace_prefix:\n        {moved!r}\n\n\n"
            f"use rule * from kd_{run} as {run}_*\n"
        )
    (tmp_path / "Snakefile").write_text(
        'configfile: "lab.yaml"\n\n\n'
        + "\n\n".join(modules)
        + "\n\nrule all:\n    default_target: True\n    input:\n        rules.a_all.input,\n"
        "        rules.b_all.input,\n"
    )
    proc = run_snakemake("-n", "--cores", "1", cwd=tmp_path, check=False, timeout=300)
    assert proc.returncode == 0, proc.stdout
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", proc.stdout, re.M))
    assert (
        jobs["pre_build_graphs"] == "1"
        and jobs["a_train_vgae_teacher"] == jobs["b_train_vgae_teacher"] == "1"
    )
    assert "run_a/results/kd_gat/lab/seed_3/teacher/vgae/model.pt" in proc.stdout, proc.stdout
    assert "run_b/results/kd_gat/lab/seed_3/teacher/vgae/model.pt" in proc.stdout, proc.stdout
    assert "run_a/results/preprocess" not in proc.stdout and "run_b/results/preprocess" not in proc.stdout


def test_evaluation_modules_imported_with_prefixes_share_the_stash_as_the_stash_dir_docs_say(
    tmp_path: Path,
) -> None:
    """evaluation.stash_dir is a params value, not a path Snakemake places behind a module's `prefix:`: two
    evaluation modules imported with prefixes a and b wrote their outputs under a/ and b/ but committed to one stash
    in the working directory, which nothing said. It is shared on purpose (keys are content hashes); the schema's
    description and docs/evaluation.md say so, and a stash_dir of its own keeps a module's stash apart."""
    schema = yaml.safe_load((REPO / "workflow/modules/evaluation/schemas/config.schema.yaml").read_text())
    described = " ".join(schema["properties"]["evaluation"]["properties"]["stash_dir"]["description"].split())
    assert "A `prefix:` on the `module evaluation:` statement does not move it" in described, described
    docs = " ".join((REPO / "docs/evaluation.md").read_text().split())
    assert "evaluation modules imported with different prefixes share the one stash" in docs
    (tmp_path / "lab.yaml").write_text(
        yaml.safe_dump(
            {"datasets": {"lab": {}}, "kd_gat": {"seeds": [3]}, "own": {"stash_dir": "own/.stash"}}
        )
    )
    modules = []
    for run, given in (("a", "config"), ("b", "config"), ("c", '{**config, "evaluation": config["own"]}')):
        modules.append(
            f'module ev_{run}:\n    snakefile:\n        "{REPO}/workflow/modules/evaluation/Snakefile"\n'
            f"    config:\n        {given}\n    prefix:\n        {run!r}\n\n\nuse rule * from ev_{run} as {run}_*\n"
        )
    (tmp_path / "Snakefile").write_text(
        'configfile: "lab.yaml"\n\n\n'
        + "\n\n".join(modules)
        + '\n\nfor run in "abc":\n'
        + '    evaluate = workflow.get_rule(f"{run}_evaluate_teacher")\n'
        + '    print("STASH", run, evaluate.params["stash_dir"](None, None), evaluate.output[0])\n'
    )
    proc = run_snakemake("--list-rules", cwd=tmp_path, check=False, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    stashes = {
        run: (stash, output)
        for run, stash, output in re.findall(r"^STASH (\w) (\S+) (\S+)$", proc.stdout, re.M)
    }
    assert {run: output.split("/")[0] for run, (_, output) in stashes.items()} == {
        "a": "a",
        "b": "b",
        "c": "c",
    }
    assert {run: stash for run, (stash, _) in stashes.items()} == {
        "a": "results/evaluation/.stash",
        "b": "results/evaluation/.stash",
        "c": "own/.stash",
    }


@pytest.mark.parametrize("prefix", ["./results/preprocess", "results//preprocess/"])
def test_a_data_prefix_written_another_way_reads_the_preprocess_modules_outputs(
    tmp_path: Path, prefix: str
) -> None:
    """kd_gat.data_prefix: ./results/preprocess got Snakemake's warning about the ./, then a missing input: the
    training rules read ./results/preprocess/<dataset>/train.pt, which no rule writes."""
    proc = _dry_run_with(_with(DEFAULT_CONFIG, ("kd_gat", "data_prefix"), prefix), tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "starts with './'" not in proc.stdout
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", proc.stdout, re.M))
    assert int(jobs["kd_gat_train_vgae_teacher"]) == len(DEFAULT_CONFIG["datasets"]) * len(
        DEFAULT_CONFIG["kd_gat"]["seeds"]
    )
    assert int(jobs["preprocess_build_graphs"]) == len(DEFAULT_CONFIG["datasets"])


def test_a_data_prefix_in_the_home_folder_is_refused_naming_the_key_not_by_snakemakes_generic_error(
    tmp_path: Path,
) -> None:
    """kd_gat.data_prefix: ~/graphs stopped the dry run on Snakemake's "Missing input files(Using '~' in your paths
    is not allowed ...)" for rule kd_gat_train_vgae_teacher, naming no config key: it is refused when the workflow
    is parsed, naming the key and what it takes."""
    proc = _dry_run_with(_with(DEFAULT_CONFIG, ("kd_gat", "data_prefix"), "~/graphs"), tmp_path)
    assert proc.returncode != 0
    assert "Using '~'" not in proc.stdout, proc.stdout[-2000:]
    assert (
        "config key 'kd_gat.data_prefix' is '~/graphs': a path starting with ~ is not expanded" in proc.stdout
    )
    assert "relative to the working directory (results/preprocess" in proc.stdout


def test_log_files_given_with_a_leading_dot_slash_are_read_without_snakemakes_warning(tmp_path: Path) -> None:
    """datasets.<name>.files written ./can/train_01_normal/normal.csv got Snakemake's warning that the path starts
    with './' on every run (once per rule and log); they are normalized as kd_gat.data_prefix is."""
    for log in ("can/train_01_normal/normal.csv", "can/test_01_dos/dos.csv"):
        (tmp_path / log).parent.mkdir(parents=True)
        (tmp_path / log).write_text("")
    files = {"train": ["./can/train_01_normal/normal.csv"], "test": {"dos": ["./can//test_01_dos/dos.csv"]}}
    proc = dry_run_of_module(tmp_path, {"datasets": {"lab": {"files": files}}}, "preprocess")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "starts with './'" not in proc.stdout, proc.stdout
    assert "input: can/train_01_normal/normal.csv, can/test_01_dos/dos.csv" in proc.stdout, proc.stdout


def test_cuda_evaluation_without_a_gpu_is_not_refused_on_a_laptop(tmp_path: Path) -> None:
    """evaluation.device cuda with evaluation.gpu 0 is refused only where the jobs go to a cluster
    (test_slurm_profile_claims.py): a local run's jobs see the machine's GPU whatever they ask for."""
    config = _with(_with(DEFAULT_CONFIG, ("evaluation", "device"), "cuda"), ("evaluation", "gpu"), 0)
    proc = _dry_run_with(config, tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert re.search(r"^evaluation_evaluate_teacher\s+\d+$", proc.stdout, re.M), proc.stdout[-4000:]


@pytest.mark.parametrize(
    ("given", "named"),
    [
        (
            'config["lab"]',
            r"config key lab\.kd_gat\.epoch \(set in lab\.yaml; module kd_gat sees it as kd_gat\.epoch\): an "
            r"unknown key; lab\.kd_gat takes",
        ),
        (  # a copy of it, whose kd_gat mapping is lab.yaml's lab.kd_gat
            'dict(config["lab"])',
            r"config key lab\.kd_gat\.epoch \(set in lab\.yaml; module kd_gat sees it as kd_gat\.epoch\): an "
            r"unknown key; lab\.kd_gat takes",
        ),
        (
            '{"datasets": {"lab": {}}, "kd_gat": {"seeds": [3], "epoch": 3}}',
            r"config key kd_gat\.epoch \(of the config the importing workflow gives module kd_gat: a mapping that "
            r"is no part of the workflow's config, so no config file can be named\): an unknown key; kd_gat takes",
        ),
    ],
)
def test_a_module_reused_with_part_of_the_config_names_the_key_as_the_config_file_does(
    tmp_path: Path, given: str, named: str
) -> None:
    """A downstream Snakefile importing the kd_gat module with `config: config["lab"]`: a misspelt key was named
    kd_gat.epoch, "set in no config file or --config", where lab.yaml sets lab.kd_gat.epoch."""
    lab = {"lab": {"datasets": {"lab": {}}, "kd_gat": {"seeds": [3], "epoch": 3}}}
    proc = dry_run_of_module(tmp_path, lab, "kd_gat", given)
    assert proc.returncode != 0
    said = proc.stdout.splitlines()[1]
    assert re.fullmatch(named + r" \[.*'seeds'.*\]", said), said
    assert "no config file or --config: a default" not in proc.stdout


LAB = {"lab": {}}  # one dataset


def dry_run_through_an_intermediate_module(tmp_path: Path, lab: dict, built: str):
    """A downstream Snakefile importing its own module `outer` with `config: config["lab"]`, which imports the
    catalog's kd_gat module with `config: <built>`, a mapping it builds (of parts of its config or anew)."""
    (tmp_path / "outer").mkdir()
    (tmp_path / "outer" / "Snakefile").write_text(
        f'module kd_gat:\n    snakefile:\n        "{REPO}/workflow/modules/kd_gat/Snakefile"\n'
        f"    config:\n        {built}\n\n\nuse rule * from kd_gat as kd_*\n"
    )
    (tmp_path / "lab.yaml").write_text(yaml.safe_dump({"lab": lab}))
    (tmp_path / "Snakefile").write_text(
        'configfile: "lab.yaml"\n\n\nmodule outer:\n    snakefile:\n        "outer/Snakefile"\n'
        '    config:\n        config["lab"]\n\n\nuse rule * from outer as outer_*\n'
    )
    return run_snakemake("-n", "--cores", "1", cwd=tmp_path, check=False, timeout=300)


@pytest.mark.parametrize(
    ("training", "built", "said"),
    [
        (  # the schema's refusal, of a mapping made of parts of the module's config
            {"seeds": [3], "epoch": 3},
            '{"datasets": config["datasets"], "kd_gat": config["training"]}',
            r"config key lab\.training\.epoch \(set in lab\.yaml; module kd_gat sees it as kd_gat\.epoch\): an "
            r"unknown key; lab\.training takes \[.*\]",
        ),
        (  # the module's own refusal, the same
            {"seeds": [3], "sweep": {"enabled": True, "table": "none.tsv"}},
            '{"datasets": config["datasets"], "kd_gat": config["training"]}',
            r"lab\.training\.sweep\.table: none\.tsv does not exist \(a tab-separated table\) \(relative to "
            r"the working directory .+\)",
        ),
        (  # a mapping built anew: which module built it
            {},
            '{"datasets": config["datasets"], "kd_gat": {"seeds": [3], "epoch": 3}}',
            r"config key kd_gat\.epoch \(of the config module outer gives module kd_gat: a mapping module outer "
            r"built, no part of the workflow's config, so no config file can be named\): an unknown key; kd_gat "
            r"takes \[.*\]",
        ),
    ],
)
def test_a_module_given_a_mapping_an_intermediate_module_built_names_the_key_from_its_parts(
    tmp_path: Path, training: dict, built: str, said: str
) -> None:
    """A module importing the kd_gat module with a mapping it built of its own config's parts: a misspelt
    lab.training.epoch was named kd_gat.epoch "of the config the importing workflow gives module kd_gat [...] no
    config file can be named", though lab.yaml sets it, and the module's own refusals named kd_gat.sweep.table."""
    proc = dry_run_through_an_intermediate_module(tmp_path, {"datasets": LAB, "training": training}, built)
    assert proc.returncode != 0
    line = proc.stdout.splitlines()[1]
    assert re.fullmatch(said, line), line


@pytest.mark.parametrize(
    ("lab", "said"),
    [
        (
            {"kd_gat": {"seeds": [3]}},
            "config key 'lab.datasets' is missing or empty: kd_gat trains one chain",
        ),
        (
            {"datasets": LAB, "kd_gat": {"seeds": [3], "sweep": {"enabled": True, "table": "none.tsv"}}},
            "lab.kd_gat.sweep.table: none.tsv does not exist (a tab-separated table)",
        ),
        (
            {"datasets": LAB, "kd_gat": {"seeds": [3]}, "learned_resources": {"enable": True}},
            "lab.learned_resources: unknown key(s) ['enable']; expected some of [",
        ),
        (
            {"datasets": LAB, "kd_gat": {"seeds": [3], "data_prefix": "."}},
            "config key 'lab.kd_gat.data_prefix' is '.', the working directory itself",
        ),
        (
            {"datasets": LAB, "kd_gat": {"seeds": [3], "data_prefix": "~/graphs"}},
            "config key 'lab.kd_gat.data_prefix' is '~/graphs': a path starting with ~ is not expanded",
        ),
    ],
)
def test_a_module_reused_with_part_of_the_config_names_the_key_of_its_own_refusals_as_the_config_file_does(
    tmp_path: Path, lab: dict, said: str
) -> None:
    """The refusals a module makes itself (not through its schema) named the key as the module sees it, datasets
    or kd_gat.sweep.table, where the downstream workflow's lab.yaml sets lab.datasets, lab.kd_gat.sweep.table."""
    proc = dry_run_of_module(tmp_path, {"lab": lab}, "kd_gat", 'config["lab"]')
    assert proc.returncode != 0
    assert proc.stdout.splitlines()[1].startswith(said), proc.stdout[-2000:]


def test_every_key_of_a_modules_own_refusal_is_named_as_the_config_file_does(tmp_path: Path) -> None:
    """The evaluation module imported with `config: config["lab"]` said "lab.evaluation.gpu is 1, but
    evaluation.device is cpu: ...; set evaluation.gpu to 0, or evaluation.device to ...": only the first key was
    named as lab.yaml names it."""
    lab = {"datasets": LAB, "kd_gat": {"seeds": [3]}, "evaluation": {"device": "cpu", "gpu": 1}}
    proc = dry_run_of_module(tmp_path, {"lab": lab}, "evaluation", 'config["lab"]')
    assert proc.returncode != 0
    said = proc.stdout.splitlines()[1]
    assert said.startswith("lab.evaluation.gpu is 1, but lab.evaluation.device is cpu: "), said
    named = re.findall(r"[\w.]*evaluation\.(?:gpu|device)", said)
    assert len(named) == 4 and all(key.startswith("lab.evaluation.") for key in named), said


@pytest.mark.parametrize("module", ["preprocess", "kd_gat", "evaluation"])
def test_a_module_reused_alone_names_a_misspelt_learned_resources_key_without_a_traceback(
    tmp_path: Path, module: str
) -> None:
    """Only the main workflow's schema checks `learned_resources`; a module imported alone (the README's "Reuse
    it") raised the library's SettingsError, printed with the library's frames (resource_history/settings.py),
    where every other config mistake a module refuses is a WorkflowError naming the key."""
    lab = {"datasets": {"lab": {}}, "kd_gat": {"seeds": [3]}, "learned_resources": {"enable": True}}
    proc = dry_run_of_module(tmp_path, lab, module)
    assert proc.returncode != 0
    first, said = proc.stdout.splitlines()[:2]
    assert re.fullmatch(r'WorkflowError in file .*/learned_resources\.smk", line \d+:', first), first
    assert said.startswith("learned_resources: unknown key(s) ['enable']; expected some of ["), said
    assert "resource_history" not in proc.stdout, proc.stdout
    assert "SettingsError" not in proc.stdout, proc.stdout


@pytest.mark.parametrize(
    ("datasets", "got"),
    [("tiny", "'tiny'"), ([1, 2], r"\[1, 2\]"), ({"tiny": {}, 3: {}}, r"\{'tiny': \{\}, 3: \{\}\}")],
)
def test_the_kd_gat_module_reused_alone_refuses_datasets_that_are_not_names(
    tmp_path: Path, datasets: object, got: str
) -> None:
    """The kd_gat module reads only the dataset names (graphs made elsewhere, kd_gat.data_prefix): given
    `datasets: tiny` it trained the datasets 't', 'i', 'n' and 'y' (looking for results/preprocess/t/train.pt),
    given [1, 2] the datasets '1' and '2'; the evaluation module refuses both, naming the key."""
    proc = dry_run_of_module(tmp_path, {"datasets": datasets, "kd_gat": {"seeds": [3]}}, "kd_gat")
    assert proc.returncode != 0, proc.stdout
    first, said = proc.stdout.splitlines()[:2]
    assert re.fullmatch(r'WorkflowError in file .*/kd_gat/common\.smk", line \d+:', first), first
    assert re.fullmatch(
        rf"config key 'datasets' must map each dataset name to its settings \(or list the names\); got {got}",
        said,
    ), said
    assert "train_vgae" not in proc.stdout, proc.stdout


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (("datasets", "lab"), "datasets.lab.files.train[1]: {folder} is a folder, not a CAN log file"),
        (("calibration", "observed", "path"), "calibration.observed.path: {folder} is a folder, not a file"),
    ],
)
def test_a_folder_where_a_file_is_expected_is_refused_naming_the_key(
    tmp_path: Path, path: tuple, expected: str
) -> None:
    """Both were planned in the dry run and reached a job as a file to read."""
    folder = tmp_path / "logs"
    folder.mkdir()
    log = tmp_path / "normal.csv"
    log.write_text("")
    value = (
        {"files": {"train": [str(log), str(folder)], "test": {"dos": [str(log) + ".test"]}}}
        if path[0] == "datasets"
        else str(folder)
    )
    proc = _dry_run_with(_with(DEFAULT_CONFIG, path, value), tmp_path)
    assert proc.returncode != 0
    assert expected.format(folder=folder) in proc.stdout, proc.stdout


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        # planned in the dry run; the sample_design job failed on it
        (
            ("calibration", "parameters", "beta"),
            {"low": 0.6, "high": 0.1},
            "calibration.parameters.beta: need low < high (and low > 0 when log: true), got 0.6, 0.1",
        ),
        # an integer parameter at one value: "need low < high" alone, where calibration.fixed was meant
        (
            ("calibration", "parameters", "days"),
            {"low": 30, "high": 30, "integer": True},
            "calibration.parameters.days: need low < high (and low > 0 when log: true), got 30.0, 30.0; "
            "a parameter held at one value belongs in calibration.fixed: {{days: 30}}",
        ),
        # one TPR column where two were meant
        (
            ("evaluation", "fpr_targets"),
            [0.05, 0.05],
            "config key evaluation.fpr_targets (set in {configfile}): [0.05, 0.05] has non-unique elements",
        ),
    ],
)
def test_a_setting_whose_parts_disagree_is_refused_before_any_job_runs(
    tmp_path: Path, path: tuple, value, expected: str
) -> None:
    proc = _dry_run_with(_with(DEFAULT_CONFIG, path, value), tmp_path)
    assert proc.returncode != 0
    assert expected.format(configfile=tmp_path / "config.yaml") in proc.stdout, proc.stdout


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        # its module imports here and lacks the function: refused, with the closest name
        (
            "simcal.models.sir:simulat",
            "calibration.model: 'simcal.models.sir:simulat': module simcal.models.sir has no 'simulat' "
            "(did you mean 'simulate'?)",
        ),
        (
            "simcal.models.sir:simulate.x",
            "calibration.model: 'simcal.models.sir:simulate.x': simcal.models.sir:simulate has no 'x'",
        ),
        # not of the form package.module:function: the schema refuses it
        ("simcal.models.sir.simulate", "'simcal.models.sir.simulate' does not match"),
        ("simcal.models.sir:simulate.", "'simcal.models.sir:simulate.' does not match"),
    ],
)
def test_a_model_whose_function_its_module_lacks_is_refused_before_any_job_runs(
    tmp_path: Path, model: str, expected: str
) -> None:
    """A misspelt function passed the dry run and failed only inside the job."""
    proc = _dry_run_with(_with(DEFAULT_CONFIG, ("calibration", "model"), model), tmp_path)
    assert proc.returncode != 0
    assert expected in proc.stdout, proc.stdout


@pytest.mark.parametrize(
    ("path", "reference"),
    [
        (("calibration", "model"), "lab_models_only_in_the_jobs_env:simulate"),
        (("calibration", "observed", "generator"), "lab_generators_only_in_the_jobs_env:observe"),
    ],
)
def test_a_model_whose_module_does_not_import_here_is_left_to_the_job(
    tmp_path: Path, path: tuple, reference: str
) -> None:
    """The model or generator may live only in the jobs' environment (a conda env, a container): the dry run plans
    it and the job checks it (simcal.contract.resolve_callable names what it cannot import and the key:
    test_a_job_meeting_a_module_the_dry_run_could_not_import_names_the_config_key)."""
    config = _with(DEFAULT_CONFIG, path, reference)
    if path[-1] == "generator":  # options only its signature could judge: left to the job as well
        config["calibration"]["observed"]["options"] = {"only_the_jobs_generator_takes": 1}
    proc = _dry_run_with(config, tmp_path)
    assert proc.returncode == 0, proc.stdout
    assert "calibration.model" not in proc.stdout, proc.stdout
    assert "calibration.observed" not in proc.stdout, proc.stdout


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (
            ("calibration", "observed", "generator"),
            "simcal.models.sir:observ",
            "calibration.observed.generator: 'simcal.models.sir:observ': module simcal.models.sir has no 'observ' "
            "(did you mean 'observe'?)",
        ),
        # not of the form package.module:function: the schema refuses it, as it does a model
        (
            ("calibration", "observed", "generator"),
            "simcal.models.sir.observe",
            "'simcal.models.sir.observe' does not match",
        ),
        (
            ("calibration", "observed", "options"),
            {"nois": "negbin"},
            "calibration.observed.options: simcal.models.sir:observe has no option 'nois' (did you mean 'noise'?)",
        ),
        (
            ("calibration", "observed", "true_params"),
            {"beta": 0.3, "gama": 0.1},
            "calibration.observed.true_params, the true parameters: 'gama' is not a parameter of "
            "simcal.models.sir:observe (did you mean 'gamma'?)",
        ),
        (
            ("calibration", "observed", "path"),
            "data/observed.xlsx",
            "calibration.observed.path: data/observed.xlsx: unknown table format '.xlsx'",
        ),
        # the loss functions: refused by the calibrate job only after the design's sweep had run
        (
            ("calibration", "targets"),
            [
                {
                    "name": "incidence",
                    "function": "simcal.targets:poisson_nl",
                    "column": "incidence",
                    "on": "day",
                }
            ],
            "calibration.targets[0].function: 'simcal.targets:poisson_nl': module simcal.targets has no "
            "'poisson_nl' (did you mean 'poisson_nll'?)",
        ),
        (
            ("calibration", "targets"),
            [
                {
                    "name": "incidence",
                    "function": "simcal.targets:poisson_nll",
                    "colum": "incidence",
                    "on": "day",
                }
            ],
            "calibration.targets[0]: simcal.targets:poisson_nll has no option 'colum' (did you mean 'column'?)",
        ),
    ],
)
def test_observed_settings_the_jobs_would_refuse_are_refused_before_any_job_runs(
    tmp_path: Path, path: tuple, value, expected: str
) -> None:
    """Each passed the dry run and failed only inside the generate_observed or calibrate job."""
    proc = _dry_run_with(_with(DEFAULT_CONFIG, path, value), tmp_path)
    assert proc.returncode != 0
    assert expected in proc.stdout, proc.stdout
    assert "Building DAG of jobs" not in proc.stdout, proc.stdout  # refused while the workflow was parsed


def test_an_observed_file_that_does_not_exist_stops_the_dry_run_as_a_missing_input(tmp_path: Path) -> None:
    """Not refused while parsing (a rule of an importing workflow may make it, a storage provider hold it), but no
    job starts: Snakemake names the file as the calibrate rule's missing input."""
    proc = _dry_run_with(
        _with(DEFAULT_CONFIG, ("calibration", "observed", "path"), "data/observed.csv"), tmp_path
    )
    assert proc.returncode != 0
    assert "Missing input files for rule calibration_calibrate" in proc.stdout, proc.stdout
    assert "        data/observed.csv\n" in proc.stdout, proc.stdout


def test_an_observed_path_given_with_a_leading_dot_slash_is_read_without_snakemakes_warning(
    tmp_path: Path,
) -> None:
    """calibration.observed.path ./data/observed.csv got Snakemake's warning that the path starts with './' for each
    rule reading it; it is normalized as kd_gat.data_prefix and datasets.<name>.files are."""
    proc = _dry_run_with(
        _with(DEFAULT_CONFIG, ("calibration", "observed", "path"), "./data//observed.csv"), tmp_path
    )
    assert "starts with './'" not in proc.stdout, proc.stdout
    assert "Missing input files for rule calibration_calibrate" in proc.stdout, proc.stdout
    assert "        data/observed.csv\n" in proc.stdout, proc.stdout


def test_an_observed_path_starting_with_a_tilde_is_read_from_the_home_folder(tmp_path: Path) -> None:
    """calibration.observed.path ~/data/observed.csv reached Snakemake as written, which refuses a path starting
    with ~ ("Using '~' in your paths is not allowed"), naming no config key; it is the home folder, as
    datasets.<name>.path is. A folder there is refused naming the key, as in the working directory."""
    home = tmp_path / "home"
    (home / "data" / "folder.csv").mkdir(parents=True)
    env = {"HOME": str(home)}
    proc = _dry_run_with(
        _with(DEFAULT_CONFIG, ("calibration", "observed", "path"), "~/data/observed.csv"), tmp_path, env=env
    )
    assert "Using '~'" not in proc.stdout, proc.stdout
    assert f"        {home}/data/observed.csv\n" in proc.stdout, proc.stdout
    proc = _dry_run_with(
        _with(DEFAULT_CONFIG, ("calibration", "observed", "path"), "~/data/folder.csv"), tmp_path, env=env
    )
    assert "calibration.observed.path: ~/data/folder.csv is a folder, not a file" in proc.stdout, proc.stdout


def test_what_a_models_module_prints_at_import_stays_out_of_the_rulegraph(tmp_path: Path) -> None:
    """The parse-time check imports calibration.model's module in the Snakemake process, whose stdout carries
    `--rulegraph` (README: `snakemake --rulegraph | dot -Tsvg`): a module that printed a banner at import, from
    Python or from native code, put it above `digraph` and dot refused the graph. Both go to stderr."""
    package = tmp_path / "site"
    package.mkdir()
    (package / "banner_model.py").write_text(
        "import os\n"
        "print('banner from print')\n"
        "os.write(1, b'banner from file descriptor 1\\n')\n"
        "def model(params, seed):\n"
        "    return {'y': 1.0}\n"
    )
    configfile = tmp_path / "config.yaml"
    configfile.write_text(
        yaml.safe_dump(_with(DEFAULT_CONFIG, ("calibration", "model"), "banner_model:model"))
    )
    proc = subprocess.run(
        [venv_bin("snakemake"), "--rulegraph", "--snakefile", str(REPO / "workflow" / "Snakefile")]
        + ["--directory", str(tmp_path), "--configfile", str(configfile)],
        env=os.environ | {"PYTHONPATH": os.pathsep.join([str(package), os.environ.get("PYTHONPATH", "")])},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("digraph snakemake_dag {"), proc.stdout[:300]
    assert "calibration_simulate" in proc.stdout  # the graph is whole, the calibration's rules in it
    assert "banner from print\n" in proc.stderr and "banner from file descriptor 1\n" in proc.stderr


def test_a_model_in_a_lazy_submodule_that_does_not_import_here_is_left_to_the_job(tmp_path: Path) -> None:
    """A package that imports its submodules when they are first asked for (a module `__getattr__`, as
    lazy_loader's packages do) raised the submodule's ImportError from `hasattr` at parse: the dry run of
    `package:models.sir` stopped on a ModuleNotFoundError traceback, though the jobs' environment, which has
    the library the submodule needs, would run it. Like a module that does not import here, it is left to the
    job; a name the package lacks is still refused."""
    package = tmp_path / "site" / "lazy_package"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        "import importlib\n"
        "def __getattr__(name):\n"
        "    if name == 'models':\n"
        "        return importlib.import_module('.models', __name__)\n"
        "    raise AttributeError(name)\n"
    )
    (package / "models.py").write_text(
        "import a_library_only_the_jobs_environment_has\ndef sir(params, seed):\n    return {}\n"
    )
    env = {"PYTHONPATH": os.pathsep.join([str(package.parent), os.environ.get("PYTHONPATH", "")])}
    runs = {}
    for reference in ("lazy_package:models.sir", "lazy_package:modles.sir"):
        configfile = tmp_path / "config.yaml"
        configfile.write_text(yaml.safe_dump(_with(DEFAULT_CONFIG, ("calibration", "model"), reference)))
        runs[reference] = run_snakemake(
            "-n", "--snakefile", str(REPO / "workflow" / "Snakefile"), "--directory", str(tmp_path),
            "--configfile", str(configfile), "--cores", "1", env=env, check=False, timeout=300,
        )  # fmt: skip
    left = runs["lazy_package:models.sir"]
    assert left.returncode == 0, left.stdout
    assert "calibration_simulate" in left.stdout and "ModuleNotFoundError" not in left.stdout
    refused = runs["lazy_package:modles.sir"]
    assert refused.returncode != 0
    assert (
        "calibration.model: 'lazy_package:modles.sir': module lazy_package has no 'modles'" in refused.stdout
    )


def test_a_config_file_value_replaced_by_config_is_warned_of_once_naming_both_values(tmp_path: Path) -> None:
    """profiles/k8s's `config:` (a --config) replaced a config file's calibration.backend.kind without a word: the
    README's `kind: service` for the workflow's Jobs ran on the Dask scheduler instead. Every module validates the
    config; the warning is said once."""
    config = {**DEFAULT_CONFIG, "targets": {"can_ids": False, "calibration": True}}
    config["calibration"] = {**config["calibration"], "backend": {"kind": "service"}}
    proc = _dry_run_with(config, tmp_path, "--config", "calibration={backend: {kind: scheduler}}")
    assert proc.returncode == 0, proc.stdout
    line = (
        f"config key calibration.backend.kind: {tmp_path / 'config.yaml'} sets 'service', but --config (or a "
        "profile's config:) sets 'scheduler', which is used"
    )
    assert proc.stdout.count(line) == 1, proc.stdout


def test_the_workflows_own_config_file_replaced_by_a_profiles_config_is_not_warned_of(tmp_path: Path) -> None:
    """The workflow's config/config.yaml (its `configfile:`) is what every profile's `config:` replaces, as the
    profiles' READMEs say: only a file given with --configfile is named, else every k8s run would warn."""
    (tmp_path / "config").mkdir()
    config = {**DEFAULT_CONFIG, "targets": {"can_ids": False, "calibration": True}}
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    proc = run_snakemake(
        "-n", "--snakefile", str(REPO / "workflow" / "Snakefile"), "--directory", str(tmp_path),
        "--config", "calibration={backend: {kind: scheduler}}", "--cores", "1", check=False, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout
    assert "config key calibration.backend.kind" not in proc.stdout, proc.stdout
