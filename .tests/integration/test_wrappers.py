"""Every wrapper's own test/Snakefile, run by Snakemake, as snakemake-wrappers' test_wrappers.py does.

A new wrapper is tested by being added: its test/Snakefile has a rule named after the wrapper that calls it. The
runner runs that rule, checks that each output the rule declares exists and is not empty and that its log exists,
then runs the wrapper's entry in EXPECTATIONS, if it has one.

A test/Snakefile may ``include:`` another wrapper's test/Snakefile to start from that test's outputs (train_gat
trains on build_graphs' graphs with train_vgae's model). Such a family shares one working directory per session,
and its tests run upstream first, so each finds its inputs made and runs only its own wrapper; run alone
(``-k train_gat``) a test builds its upstream itself.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from testkit import REPO, run_snakemake

pytestmark = pytest.mark.integration

TESTS = {path.parents[1].name: path for path in sorted((REPO / "wrappers").glob("*/test/Snakefile"))}


def upstream(wrapper: str) -> str | None:
    match = re.search(r'^include:\s*"\.\./\.\./(\w+)/test/Snakefile"', TESTS[wrapper].read_text(), re.M)
    return match.group(1) if match else None


def lineage(wrapper: str) -> list[str]:
    """The wrapper and the tests it builds on, root first."""
    parent = upstream(wrapper)
    return [*lineage(parent), wrapper] if parent else [wrapper]


ORDER = sorted(TESTS, key=lambda wrapper: (lineage(wrapper)[0], len(lineage(wrapper))))

# Snakemake's API parses a Snakefile without running it; WorkflowApi has no public accessor for the parsed rules
# (snakemake is pinned in pyproject.toml). One process for all test Snakefiles: about two seconds.
LIST_RULES = """
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import OutputSettings, ResourceSettings, StorageSettings

found = {}
for snakefile in sys.argv[1:]:
    with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
        workflow = api.workflow(
            resource_settings=ResourceSettings(cores=1), storage_settings=StorageSettings(), snakefile=Path(snakefile)
        )._workflow
        found[snakefile] = {
            rule.name: {
                "wrapper": rule.wrapper,
                "output": [str(path) for path in rule.output],
                "log": [str(path) for path in rule.log],
            }
            for rule in workflow.rules
        }
print(json.dumps(found))
"""


@pytest.fixture(scope="session")
def test_rules() -> dict[str, dict]:
    proc = subprocess.run(
        [sys.executable, "-c", LIST_RULES, *map(str, TESTS.values())],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    parsed = json.loads(proc.stdout.strip().splitlines()[-1])
    return {wrapper: parsed[str(path)] for wrapper, path in TESTS.items()}


@pytest.fixture(scope="session")
def family_workdir(tmp_path_factory):
    base = tmp_path_factory.mktemp("wrapper-tests")

    def workdir(wrapper: str) -> Path:
        path = base / lineage(wrapper)[0]
        path.mkdir(exist_ok=True)
        return path

    return workdir


# -- what each wrapper's test must also show (beyond non-empty outputs and a log) -----------------------------------
def library_logged(workdir: Path, logs: list[Path]) -> None:
    assert all("INFO kdgat." in log.read_text() for log in logs)  # the library's logging reached the log


def expect_build_graphs(workdir: Path, logs: list[Path]) -> None:
    from kdgat.graph_store import load_graph_sets

    library_logged(workdir, logs)
    assert list(load_graph_sets(workdir / "results/toy/test.pt")) == ["attack"]
    metadata = json.loads((workdir / "results/toy/metadata.json").read_text())
    assert metadata["counts"]["train"] >= 50 and 0 < metadata["attack_fraction"]["train"] < 1


def expect_training(stage: str, epochs: int):
    def expect(workdir: Path, logs: list[Path]) -> None:
        history = pd.read_csv(workdir / f"out/{stage}/history.csv")
        metrics = json.loads((workdir / f"out/{stage}/metrics.json").read_text())
        assert 1 <= metrics["epochs_run"] <= epochs and metrics["num_parameters"] > 0
        assert history["epoch"].tolist() == list(range(1, metrics["epochs_run"] + 1))  # one row per epoch

    return expect


def expect_evaluate_detector(workdir: Path, logs: list[Path]) -> None:
    document = json.loads((workdir / "out/evaluation/teacher/metrics.json").read_text())
    assert (document["dataset"], document["variant"]) == ("toy", "teacher")
    assert document["speed"]["graphs"] <= 64
    assert list((workdir / "stash").iterdir())  # stash_dir kept the finished results


def expect_evaluate_baselines(workdir: Path, logs: list[Path]) -> None:
    document = json.loads((workdir / "out/baselines/baselines.json").read_text())
    # the rule gives no dataset: the name build_graphs' metadata.json records (it was "dataset", and
    # summarize_evaluation refused those baselines next to the detector's metrics of "toy")
    assert document["dataset"] == "toy"
    assert set(document["test"]["attack"]) == {
        "baseline_unknown_id",
        "baseline_id_counts",
        "baseline_id_rate",
    }
    scores = pd.read_parquet(workdir / "out/baselines/baseline_scores.parquet")
    assert set(scores["split"]) == {"val", "test"} and {
        "baseline_unknown_id_score",
        "baseline_id_counts_score",
        "baseline_id_rate_score",
    } <= set(scores.columns)


def expect_summarize_evaluation(workdir: Path, logs: list[Path]) -> None:
    summary = pd.read_csv(workdir / "out/summary/summary.csv")
    # one variant evaluated as two seeds (the models record their variant, so a second one would be refused)
    assert summary["variant"].tolist() == ["teacher"] and summary["seeds"].tolist() == [2]
    assert (summary["dataset"] == "toy").all()
    scenarios = pd.read_csv(workdir / "out/summary/scenario_metrics.csv")
    assert {
        "baseline_unknown_id",
        "baseline_id_counts",
        "baseline_id_rate",
        "fusion",
        "fixed_alpha_0.5",
    } <= set(scenarios["model"])


def expect_simulate(workdir: Path, logs: list[Path]) -> None:
    result = pd.read_parquet(workdir / "results/sweep.parquet")
    assert result.drop_duplicates(["param_id", "replicate"]).shape[0] == 3 * 2
    assert set(result["day"]) == set(range(30)) and (result["status"] == "ok").all()
    assert "started a LocalCluster with 2 worker(s)" in (workdir / "logs/simulate.log").read_text()


def expect_generate_observed(workdir: Path, logs: list[Path]) -> None:
    observed = pd.read_csv(workdir / "results/observed.csv")
    assert list(observed.columns) == ["day", "incidence"] and len(observed) == 60


def expect_sample_design(workdir: Path, logs: list[Path]) -> None:
    design = pd.read_csv(workdir / "results/design.csv")
    assert len(design) == 8 and design["gamma"].between(0.03, 0.3).all()


def expect_calibrate(workdir: Path, logs: list[Path]) -> None:
    trials = pd.read_parquet(workdir / "results/trials.parquet")
    # initial design, two rounds of four, then the three best again with more replicates
    assert list(trials["phase"]) == ["design"] * 8 + ["search"] * 2 * 4 + ["refine"] * 3
    assert (trials.loc[trials["phase"] == "refine", "replicates"] == 4).all()


def expect_analyze_calibration(workdir: Path, logs: list[Path]) -> None:
    best = json.loads((workdir / "results/best.json").read_text())
    trials = pd.read_parquet(workdir / "results/trials.parquet")
    assert best["loss"] == trials.loc[trials["phase"] == "refine", "loss"].min() and best["phase"] == "refine"


def expect_visualize_calibration(workdir: Path, logs: list[Path]) -> None:
    assert (workdir / "results/calibration.html").read_text().count("data:image/png;base64,") == 3


def expect_analyze_sweep(workdir: Path, logs: list[Path]) -> None:
    table = pd.read_parquet(workdir / "results/sweep_table.parquet")
    assert len(table) == 3 and (table["replicates_ok"] == 2).all()  # simulate's test: 3 sets x 2 replicates
    assert {"incidence_sum_mean", "incidence_sum_sd", "prevalence_max_mean"} <= set(table.columns)


def expect_visualize_sweep(workdir: Path, logs: list[Path]) -> None:
    assert (workdir / "results/sweep.html").read_text().count("data:image/png;base64,") == 2


EXPECTATIONS = {
    "generate_can": library_logged,
    "build_graphs": expect_build_graphs,
    "train_vgae": expect_training("vgae", epochs=3),
    "train_gat": expect_training("gat", epochs=3),
    "train_dqn": expect_training("dqn", epochs=5),
    "evaluate_detector": expect_evaluate_detector,
    "evaluate_baselines": expect_evaluate_baselines,
    "summarize_evaluation": expect_summarize_evaluation,
    "simulate": expect_simulate,
    "sample_design": expect_sample_design,
    "generate_observed": expect_generate_observed,
    "calibrate": expect_calibrate,
    "analyze_calibration": expect_analyze_calibration,
    "visualize_calibration": expect_visualize_calibration,
    "analyze_sweep": expect_analyze_sweep,
    "visualize_sweep": expect_visualize_sweep,
}


def test_every_wrapper_has_a_test_and_every_expectation_a_wrapper() -> None:
    folders = {path.name for path in (REPO / "wrappers").iterdir() if (path / "wrapper.py").is_file()}
    assert set(TESTS) == folders
    assert set(EXPECTATIONS) <= folders


@pytest.mark.parametrize("wrapper", ORDER)
def test_wrapper(wrapper: str, test_rules, family_workdir) -> None:
    rules = test_rules[wrapper]
    assert wrapper in rules, f"wrappers/{wrapper}/test/Snakefile has no rule named {wrapper}"
    assert rules[wrapper]["wrapper"] == f"file:{REPO / 'wrappers' / wrapper}", rules[wrapper]["wrapper"]
    workdir = family_workdir(wrapper)
    run_snakemake(
        "--snakefile", str(TESTS[wrapper]), "--directory", str(workdir), "--cores", "2", wrapper, cwd=workdir
    )
    for name in rules[wrapper]["output"]:
        path = workdir / name
        assert path.exists(), f"{wrapper}: declared {name} was not written"
        assert any(path.iterdir()) if path.is_dir() else path.stat().st_size > 0, (
            f"{wrapper}: {name} is empty"
        )
    logs = [workdir / name for name in rules[wrapper]["log"]]
    assert logs and all(log.is_file() for log in logs), (
        f"{wrapper}: the rule must declare a log the wrapper writes"
    )
    if wrapper in EXPECTATIONS:
        EXPECTATIONS[wrapper](workdir, logs)


# -- a researcher's own rule, as the README's "Reuse it" shows one -------------------------------------------------
OWN_RULE = """
rule design:
    output:
        "design.csv",
    params:
        parameters={{"beta": {{"low": 0.1, "high": 0.6}}}},
        n=4,
        seeds=3,
        code_version=2,
    wrapper:
        "file:{wrapper}"
"""


def test_a_rule_without_log_and_with_a_misspelt_param_runs_and_warns_on_stderr(tmp_path: Path) -> None:
    # Every wrapper read snakemake.log[0]: a rule without `log:` died with a bare IndexError. A misspelt param
    # (seeds= for seed=) was ignored without a word, and sample_design, which hands its params to the library, died
    # on one set only to trigger reruns (code_version=).
    (tmp_path / "Snakefile").write_text(OWN_RULE.format(wrapper=REPO / "wrappers" / "sample_design"))
    proc = run_snakemake("--cores", "1", cwd=tmp_path)
    assert len(pd.read_csv(tmp_path / "design.csv")) == 4
    warnings = [line for line in proc.stdout.splitlines() if " WARNING simcal: params." in line]
    assert len(warnings) == 2, proc.stdout[-4000:]
    assert "params.seeds is not a param of the sample_design wrapper" in warnings[0]
    assert "did you mean 'seed'?" in warnings[0] and "parameters, n, kind, seed, model" in warnings[0]
    assert "params.code_version" in warnings[1] and "no name it takes in params is close" in warnings[1]
    assert "IndexError" not in proc.stdout


ONE_FILE_EACH = """
rule build_graphs:
    input:
        train="{data}/train_attack.csv",
        test="{data}/test_attack.csv",
    output:
        train="graphs/train.pt",
        val="graphs/val.pt",
        test="graphs/test.pt",
        vocab="graphs/vocab.json",
        metadata="graphs/metadata.json",
    params:
        test_scenario_of_file="attack",
        window_size=10,
        stride=10,
        val_fraction=0.25,
    wrapper:
        "file:{wrapper}"
"""


def test_build_graphs_takes_one_file_and_one_scenario_given_as_plain_strings(tmp_path: Path) -> None:
    # Snakemake hands a named input or param of one value as that value: list() of it made each character a
    # training file, and zip() paired the scenario's letters with the test file's characters.
    from kdgat.graph_store import load_graph_sets

    (tmp_path / "Snakefile").write_text(
        ONE_FILE_EACH.format(
            data=REPO / "wrappers/build_graphs/test/data", wrapper=REPO / "wrappers/build_graphs"
        )
    )
    run_snakemake("--cores", "1", cwd=tmp_path)
    assert list(load_graph_sets(tmp_path / "graphs/test.pt")) == ["attack"]
    metadata = json.loads((tmp_path / "graphs/metadata.json").read_text())
    assert [Path(path).name for path in metadata["files"]["train"]] == ["train_attack.csv"], metadata["files"]


# Two rules that lack a name their wrapper needs: one without `log:` and with `optoins=` for `options=`, one with
# its graphs given without names (which a warning says the wrapper ignores).
RULES_LACKING_A_NAME = """
rule synthetic:
    output:
        "can.csv",
    params:
        optoins={{"seed": 1}},
        file_index=0,
    wrapper:
        "file:{wrappers}/generate_can"


rule gat:
    input:
        "graphs/train.pt",
        "graphs/val.pt",
        metadata="graphs/metadata.json",
    output:
        model="gat/model.pt",
        metrics="gat/metrics.json",
        history="gat/history.csv",
    log:
        "logs/gat.log",
    params:
        settings={{}},
    wrapper:
        "file:{wrappers}/train_gat"
"""


def test_a_rule_without_a_name_the_wrapper_needs_is_refused_before_anything_runs(tmp_path: Path) -> None:
    # generate_can without `options` died on "AttributeError: 'Params' object has no attribute 'options'", and
    # train_gat given its graphs by position warned that it ignored them, then died the same way on `train`.
    (tmp_path / "Snakefile").write_text(RULES_LACKING_A_NAME.format(wrappers=REPO / "wrappers"))
    (tmp_path / "graphs").mkdir()
    for name in ("train.pt", "val.pt", "metadata.json"):
        (tmp_path / "graphs" / name).write_text("never read")
    proc = run_snakemake("--cores", "1", "--keep-going", "synthetic", "gat", cwd=tmp_path, check=False)
    assert proc.returncode != 0, proc.stdout[-4000:]
    refusal = (
        "generate_can wrapper: the rule gives no param 'options' (it takes params: options, file_index, entry, "
        "setting_prefix, library_code; 'file_index', 'entry', 'setting_prefix' and 'library_code' may be left out; "
        "is param 'optoins' a misspelt 'options'?)"
    )
    assert f" ERROR kdgat: {refusal}\n" in proc.stdout, proc.stdout[-4000:]
    log = (tmp_path / "logs/gat.log").read_text()
    assert (
        " ERROR kdgat: train_gat wrapper: the rule gives no input 'train' or 'val' (it takes input: train, val, "
        "metadata, vgae, teacher; 'vgae' and 'teacher' may be left out; 2 input item(s) have no name: name them, "
        "e.g. `input: train=...`)\n"
    ) in log
    assert "WARNING kdgat: input has 2 item(s) without a name, which the train_gat wrapper ignores" in log
    # refused in the set-up (exit status 2): no library call ran to fail (failure_logged's "<wrapper> failed"),
    # no traceback
    assert proc.stdout.count("non-zero exit status 2") == 2, proc.stdout[-4000:]
    for text in (proc.stdout, log):
        assert "AttributeError" not in text and "Traceback" not in text
        assert "generate_can failed" not in text and "train_gat failed" not in text


# A user's mistake that only the library can see: generate_can's output under a gzip name (with `log:`), and
# sample_design's bounds the wrong way round (without `log:`).
RULES_WITH_A_MISTAKE = """
rule synthetic:
    output:
        "can.csv.gz",
    log:
        "logs/synthetic.log",
    params:
        options={{"seed": 1, "format": "hcrl_csv", "num_ids": 25,
                  "files": [{{"split": "train_01_attack_free", "name": "normal", "duration_s": 1.0}}]}},
    wrapper:
        "file:{wrappers}/generate_can"


rule design:
    output:
        "design.csv",
    params:
        parameters={{"beta": {{"low": 0.6, "high": 0.1}}}},
        n=4,
    wrapper:
        "file:{wrappers}/sample_design"
"""


def test_a_user_mistake_ends_the_job_with_one_line_naming_it_and_no_traceback(tmp_path: Path) -> None:
    # Both died with a Python traceback on the terminal and in the log, the mistake on its last line.
    (tmp_path / "Snakefile").write_text(RULES_WITH_A_MISTAKE.format(wrappers=REPO / "wrappers"))
    proc = run_snakemake("--cores", "1", "--keep-going", "synthetic", "design", cwd=tmp_path, check=False)
    assert proc.returncode != 0, proc.stdout[-4000:]
    gz = (
        "generate_can failed: can.csv.gz: a synthetic CAN log is written as plain text, but the name ends in "
        "'.gz', a gzip-compressed file's suffix (the CAN log readers refuse compressed logs): name it can.csv"
    )
    bounds = "sample_design failed: design parameters.beta: need low < high (and low > 0 when log: true), got 0.6, 0.1"
    assert f"\n{gz}\n" in proc.stdout, proc.stdout[-4000:]  # the wrapper's stderr, above the RuleException
    assert f" ERROR simcal: {bounds}\n" in proc.stdout, proc.stdout[-4000:]  # no log: the record on stderr
    assert proc.stdout.count("non-zero exit status 1") == 2 and "Traceback" not in proc.stdout, proc.stdout[
        -4000:
    ]
    log = (tmp_path / "logs/synthetic.log").read_text()
    assert log.endswith(f" ERROR kdgat: {gz}\n") and len(log.splitlines()) == 1, log
    assert not (tmp_path / "can.csv.gz").exists() and not (tmp_path / "design.csv").exists()


# ONE_FILE_EACH with a log (where the one line of the refusal goes) and, for its val_fraction, a bad_rows the
# reader does not take.
BUILD_GRAPHS_WITH_A_BAD_PARAM = ONE_FILE_EACH.replace(
    "    params:\n", '    log:\n        "logs/build_graphs.log",\n    params:\n'
).replace("        val_fraction=0.25,\n", '        bad_rows="ignore",\n')


def test_a_bad_build_graphs_param_is_one_line_naming_the_param_not_a_config_key(tmp_path: Path) -> None:
    # params.bad_rows="ignore" died with the reader's ValueError traceback naming "preprocess.bad_rows", a config
    # key a wrapper user does not have (and every other setting's message named preprocess.<key> too).
    (tmp_path / "Snakefile").write_text(
        BUILD_GRAPHS_WITH_A_BAD_PARAM.format(
            data=REPO / "wrappers/build_graphs/test/data", wrapper=REPO / "wrappers/build_graphs"
        )
    )
    proc = run_snakemake("--cores", "1", cwd=tmp_path, check=False)
    assert proc.returncode != 0 and "non-zero exit status 1" in proc.stdout, proc.stdout[-4000:]
    log = (tmp_path / "logs/build_graphs.log").read_text()
    line = "build_graphs failed: params.bad_rows must be one of ('error', 'skip'), got 'ignore'"
    assert log.endswith(f" ERROR kdgat: {line}\n") and len(log.splitlines()) == 1, log
    assert f"\n{line}\n" in proc.stdout and "Traceback" not in proc.stdout, proc.stdout[-4000:]
    assert not (tmp_path / "graphs").exists()
