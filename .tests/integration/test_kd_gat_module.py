"""The kd_gat module run by Snakemake from a downstream Snakefile (with preprocess and evaluation) on the shipped
synthetic datasets and seeds: all three chains per seed, the engineering floors on every test scenario, a
Paramspace sweep, and the prefixed rule names."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from typing import NamedTuple

import pandas as pd
import pytest
import yaml
from testkit import REPO, run_snakemake

from kdgat.evaluation.summary import FLOOR_MODELS, floor_table
from kdgat.layout import scenario_name
from kdgat.model_store import load_model

pytestmark = pytest.mark.integration

DOWNSTREAM = REPO / ".tests" / "integration" / "kd_gat" / "Snakefile"
VARIANTS = ("teacher", "student_kd", "student")
STAGES = ("vgae", "gat", "dqn")
SHIPPED = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
SEEDS = SHIPPED["kd_gat"]["seeds"]


def default_config(**kd_gat_changes) -> dict:
    """The shipped config/config.yaml (synthetic datasets, demo presets, its seeds) restricted to the CAN part; the
    evaluation measures speed briefly and runs no notebook."""
    config = {key: copy.deepcopy(SHIPPED[key]) for key in ("datasets", "preprocess", "kd_gat")}
    config["kd_gat"].update(kd_gat_changes)
    config["evaluation"] = {
        "notebook": False,
        "threads": 1,
        "speed": {"repeats": 1, "latency_runs": 2, "max_graphs": 16},
    }
    return config | {"catalog": str(REPO)}


def run(workdir, config, *targets, extra=()):
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    return run_snakemake(
        *targets, "--snakefile", str(DOWNSTREAM), "--directory", str(workdir), "--configfile",
        str(workdir / "config.yaml"), "--cores", "2", *extra, cwd=workdir,
    )  # fmt: skip


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """The shipped demo's CAN part, every seed: the floors below are means over seeds."""
    workdir = tmp_path_factory.mktemp("kd_gat_pipeline")
    config = default_config()
    run(workdir, config)
    return workdir, config


def chain_dir(workdir, dataset, variant, stage, seed=SEEDS[0]):
    return workdir / "results" / "kd_gat" / dataset / f"seed_{seed}" / variant / stage


def test_every_chain_writes_its_artifacts(pipeline):
    workdir, config = pipeline
    for dataset in config["datasets"]:
        for seed in SEEDS:
            for variant in VARIANTS:
                for stage in STAGES:
                    folder = chain_dir(workdir, dataset, variant, stage, seed)
                    metrics = json.loads((folder / "metrics.json").read_text())
                    assert metrics["variant"] == variant and metrics["stage"] == stage
                    assert len(pd.read_csv(folder / "history.csv")) == metrics["epochs_run"]
                    assert load_model(folder / "model.pt") is not None
                    log = (workdir / f"logs/kd_gat/{dataset}/seed_{seed}/{variant}/{stage}.log").read_text()
                    assert "epoch 1/" in log and "graphs/s=" in log and "eta=" in log
                    assert (
                        workdir / f"benchmarks/kd_gat/{dataset}/seed_{seed}/{variant}/{stage}.tsv"
                    ).is_file()
    # Checkpoints are dropped after success; a second run has nothing to do (mtime trigger only: other modules'
    # code may legitimately change while this test runs).
    assert not list((workdir / "checkpoints").rglob("*.pt"))
    assert "Nothing to be done" in run(workdir, config, extra=("-n", "--rerun-triggers", "mtime")).stdout


def test_each_seed_trains_its_own_models(pipeline):
    workdir, config = pipeline
    dataset = next(iter(config["datasets"]))
    weights = []
    for seed in SEEDS:
        model = load_model(chain_dir(workdir, dataset, "student", "gat", seed) / "model.pt")
        weights.append(next(iter(model.state_dict().values())).flatten()[:8].tolist())
    assert len(SEEDS) >= 3 and len({tuple(w) for w in weights}) == len(SEEDS)
    table = pd.read_csv(workdir / "results/evaluation/scenario_metrics.csv")
    assert sorted(table["seed"].unique()) == sorted(SEEDS)


# -- engineering floors, means over seeds, on every test scenario (held-out families included) ---------------------
# A miss the data or the models explain is listed here with its reason, its value and its floor, measured on the
# shipped config (3 seeds; the run of docs/science.md, reproduced by the audit of 2026-12-03); nothing is dropped.
# Keys: (dataset, variant, scenario, model, check). A listed miss is an xfail of the floor's own assertion only
# (raises=AssertionError): a scenario, model or seed missing from scenario_metrics.csv fails whatever is listed.
# Float results of CPU training differ between processor types, so a cell near its floor may pass on one machine
# and miss on another: such a miss is not strict (a pass shows as XPASS). One far below its floor is strict (a pass
# fails CI: the reason listed is no longer true); see STRICT_MARGIN. The data was not changed.
REPLAY = (
    "held-out family: one ID's genuine frames of 1 s earlier sent again (rate doubled, payloads real); nothing like "
    "it in training, and the window graph shows only one ID's extra edges"
)
MASQUERADE = (
    "one of 45 IDs keeps its own rate with out-of-range payload bytes: the demo-sized models trained on 5 time "
    "blocks barely rank it (ROC-AUC 0.50-0.60)"
)
RANDOM_IDS_UNSEEN = (
    "held-out family: HCRL random-ID fuzzing, every ID out of vocabulary; the score ranks it (ROC-AUC 0.82-0.96, "
    "above the floor) but the decision threshold (GAT p > 0.5, VGAE Youden on validation windows, which hold no "
    "such attack) does not carry to this capture: F1 0.656-0.719 against 0.720 for flagging every window"
)
THRESHOLD_DOES_NOT_CARRY = (
    "the score ranks the attacks (ROC-AUC above the floor) but the decision threshold (GAT p > 0.5, VGAE Youden on "
    "validation) does not carry to this test capture: F1 below flagging every window"
)
FUSION_CHOSEN_ON_VALIDATION = (
    "one policy per agent for every test capture, chosen on the 524-638 fusion + validation windows (time blocks "
    "and whole fusion captures): the learnt one where its cross-fitted reward beat every constant α there, else "
    "the best constant α; on this test capture it is below the better input"
)
NO_INPUT_DETECTS = (
    "neither input detects this family (both ROC-AUCs below the floor, 0.48-0.60): their F1 here is where each "
    "one's threshold happens to fall, and which one's is higher decides 'the better input'"
)
NEAR_FLOOR_ONE_SEED_COLLAPSED = (
    "passed in the run of docs/science.md, missed on another machine (2026-12-03: 0.650 against 0.654, the float "
    "drift between processor types): the fusion ranks the attack (ROC-AUC above the floor), but seed 44's "
    "student_kd GAT collapses on synth_cantt (F1 0, ROC-AUC 0.07 here) and that seed's fused decision (F1 0.29) "
    "pulls the 3-seed mean to the chance floor"
)
# A listed miss whose value is more than this below its floor is a strict xfail, and one whose value falls more than
# this below its recorded value fails. The largest move of a per-scenario mean between two environments on record
# is 0.079 (a chance-level cell; 0.019 where an input detects the attack; docs/science.md, "The same figures in
# another environment"): 0.15, about twice that, is not drift.
STRICT_MARGIN = 0.15


class Miss(NamedTuple):
    reason: str
    value: float  # the shipped mean over seeds
    floor: float


def listed(dataset: str, variant: str, rows) -> dict[tuple[str, str, str, str, str], Miss]:
    """{(dataset, variant, scenario, model, check): Miss} from rows (scenario, model, check, reason, value, floor)."""
    return {(dataset, variant, *row[:3]): Miss(*row[3:]) for row in rows}


# fmt: off
EXPECTED_MISSES: dict[tuple[str, str, str, str, str], Miss] = {
    **listed("synth_cantt", "teacher", [
        ("rpm", "fusion", "fusion_vs_inputs", FUSION_CHOSEN_ON_VALIDATION, 0.783, 0.845),
        ("dos_vehicle", "fusion", "fusion_vs_inputs", FUSION_CHOSEN_ON_VALIDATION, 0.932, 0.956),
        ("fuzzy_vehicle", "fusion", "fusion_vs_inputs", FUSION_CHOSEN_ON_VALIDATION, 0.941, 0.943),
        ("masquerade", "vgae", "roc_auc", MASQUERADE, 0.587, 0.650),
        ("masquerade", "vgae", "f1_above_chance", MASQUERADE, 0.488, 0.585),
        ("masquerade", "gat", "roc_auc", MASQUERADE, 0.546, 0.650),
        ("masquerade", "gat", "f1_above_chance", MASQUERADE, 0.211, 0.585),
        ("masquerade", "fusion", "roc_auc", MASQUERADE, 0.570, 0.650),
        ("masquerade", "fusion", "f1_above_chance", MASQUERADE, 0.325, 0.585),
        ("masquerade", "fusion", "fusion_vs_inputs", NO_INPUT_DETECTS, 0.325, 0.483),
        ("replay_unseen", "vgae", "roc_auc", REPLAY, 0.514, 0.650),
        ("replay_unseen", "vgae", "f1_above_chance", REPLAY, 0.476, 0.500),
        ("replay_unseen", "gat", "roc_auc", REPLAY, 0.506, 0.650),
        ("replay_unseen", "gat", "f1_above_chance", REPLAY, 0.168, 0.500),
        ("replay_unseen", "fusion", "roc_auc", REPLAY, 0.499, 0.650),
        ("replay_unseen", "fusion", "f1_above_chance", REPLAY, 0.287, 0.500),
        ("replay_unseen", "fusion", "fusion_vs_inputs", NO_INPUT_DETECTS, 0.287, 0.471),
        ("fuzzy_unseen", "vgae", "f1_above_chance", RANDOM_IDS_UNSEEN, 0.719, 0.720),
        ("fuzzy_unseen", "fusion", "fusion_vs_inputs", FUSION_CHOSEN_ON_VALIDATION, 0.871, 0.889),
    ]),
    **listed("synth_cantt", "student_kd", [
        ("rpm", "vgae", "f1_above_chance", THRESHOLD_DOES_NOT_CARRY, 0.593, 0.654),
        ("rpm", "gat", "f1_above_chance", THRESHOLD_DOES_NOT_CARRY, 0.562, 0.654),
        ("rpm", "fusion", "f1_above_chance", NEAR_FLOOR_ONE_SEED_COLLAPSED, 0.650, 0.654),
        ("dos_vehicle", "gat", "f1_above_chance", THRESHOLD_DOES_NOT_CARRY, 0.619, 0.768),
        ("fuzzy_vehicle", "gat", "f1_above_chance", THRESHOLD_DOES_NOT_CARRY, 0.614, 0.709),
        ("masquerade", "vgae", "roc_auc", MASQUERADE, 0.576, 0.650),
        ("masquerade", "vgae", "f1_above_chance", MASQUERADE, 0.427, 0.585),
        ("masquerade", "gat", "roc_auc", MASQUERADE, 0.517, 0.650),
        ("masquerade", "gat", "f1_above_chance", MASQUERADE, 0.292, 0.585),
        ("masquerade", "fusion", "roc_auc", MASQUERADE, 0.555, 0.650),
        ("masquerade", "fusion", "f1_above_chance", MASQUERADE, 0.405, 0.585),
        ("masquerade", "fusion", "fusion_vs_inputs", NO_INPUT_DETECTS, 0.405, 0.422),
        ("replay_unseen", "vgae", "roc_auc", REPLAY, 0.522, 0.650),
        ("replay_unseen", "vgae", "f1_above_chance", REPLAY, 0.322, 0.500),
        ("replay_unseen", "gat", "roc_auc", REPLAY, 0.509, 0.650),
        ("replay_unseen", "gat", "f1_above_chance", REPLAY, 0.142, 0.500),
        ("replay_unseen", "fusion", "roc_auc", REPLAY, 0.499, 0.650),
        ("replay_unseen", "fusion", "f1_above_chance", REPLAY, 0.260, 0.500),
        ("replay_unseen", "fusion", "fusion_vs_inputs", NO_INPUT_DETECTS, 0.260, 0.317),
        ("fuzzy_unseen", "gat", "f1_above_chance", RANDOM_IDS_UNSEEN, 0.656, 0.720),
    ]),
    **listed("synth_cantt", "student", [
        ("rpm", "vgae", "f1_above_chance", THRESHOLD_DOES_NOT_CARRY, 0.513, 0.654),
        ("rpm", "fusion", "fusion_vs_inputs", FUSION_CHOSEN_ON_VALIDATION, 0.903, 0.912),
        ("dos_vehicle", "fusion", "fusion_vs_inputs", FUSION_CHOSEN_ON_VALIDATION, 0.964, 0.970),
        ("masquerade", "vgae", "roc_auc", MASQUERADE, 0.596, 0.650),
        ("masquerade", "vgae", "f1_above_chance", MASQUERADE, 0.414, 0.585),
        ("masquerade", "gat", "roc_auc", MASQUERADE, 0.502, 0.650),
        ("masquerade", "gat", "f1_above_chance", MASQUERADE, 0.218, 0.585),
        ("masquerade", "fusion", "roc_auc", MASQUERADE, 0.557, 0.650),
        ("masquerade", "fusion", "f1_above_chance", MASQUERADE, 0.296, 0.585),
        ("masquerade", "fusion", "fusion_vs_inputs", NO_INPUT_DETECTS, 0.296, 0.409),
        ("replay_unseen", "vgae", "roc_auc", REPLAY, 0.496, 0.650),
        ("replay_unseen", "vgae", "f1_above_chance", REPLAY, 0.348, 0.500),
        ("replay_unseen", "gat", "roc_auc", REPLAY, 0.477, 0.650),
        ("replay_unseen", "gat", "f1_above_chance", REPLAY, 0.097, 0.500),
        ("replay_unseen", "fusion", "roc_auc", REPLAY, 0.477, 0.650),
        ("replay_unseen", "fusion", "f1_above_chance", REPLAY, 0.142, 0.500),
        ("replay_unseen", "fusion", "fusion_vs_inputs", NO_INPUT_DETECTS, 0.142, 0.343),
        ("fuzzy_unseen", "vgae", "f1_above_chance", RANDOM_IDS_UNSEEN, 0.656, 0.720),
    ]),
    **listed("synth_hcrl", "student_kd", [
        ("gear", "vgae", "f1_above_chance", THRESHOLD_DOES_NOT_CARRY, 0.563, 0.646),
        ("gear", "gat", "f1_above_chance", THRESHOLD_DOES_NOT_CARRY, 0.579, 0.646),
    ]),
    **listed("synth_hcrl", "student", [
        ("gear", "vgae", "f1_above_chance", THRESHOLD_DOES_NOT_CARRY, 0.549, 0.646),
        ("gear", "gat", "f1_above_chance", THRESHOLD_DOES_NOT_CARRY, 0.530, 0.646),
    ]),
}
# fmt: on


def shipped_test_scenarios():
    """(dataset, scenario, held out of training) for every test scenario of the shipped datasets."""
    out = []
    for dataset, spec in SHIPPED["datasets"].items():
        files = spec["synthetic"]["files"]
        trained = {f.get("attack", "none") for f in files if f["split"].startswith("train_")}
        for f in files:
            if f["split"].startswith("test_"):
                out.append((dataset, scenario_name(f["split"]), f.get("attack", "none") not in trained))
    return out


def floor_cases():
    cases = []
    for dataset, scenario, _ in shipped_test_scenarios():
        for variant in VARIANTS:
            checks = [(m, c) for m in FLOOR_MODELS for c in ("roc_auc", "f1_above_chance")]
            for model, check in [*checks, ("fusion", "fusion_vs_inputs")]:
                key = (dataset, variant, scenario, model, check)
                miss = EXPECTED_MISSES.get(key)
                marks = []
                if miss is not None:
                    strict = miss.floor - miss.value > STRICT_MARGIN
                    marks.append(pytest.mark.xfail(raises=AssertionError, strict=strict, reason=miss.reason))
                cases.append(pytest.param(key, marks=marks, id="-".join(key)))
    return cases


@pytest.fixture(scope="module")
def floors(pipeline):
    workdir, _ = pipeline
    table = floor_table(pd.read_csv(workdir / "results/evaluation/scenario_metrics.csv"))
    return table.set_index(["dataset", "variant", "scenario", "model", "check"])


def test_the_shipped_data_holds_a_family_held_out_of_training():
    held_out = {dataset for dataset, _, unseen in shipped_test_scenarios() if unseen}
    assert held_out == set(SHIPPED["datasets"])
    assert all(scenario.endswith("_unseen") == unseen for _, scenario, unseen in shipped_test_scenarios())


@pytest.mark.parametrize("key", floor_cases())
def test_floor(floors, key):
    # pytest.fail, not assert: an expected miss (an xfail of AssertionError) must not hide a row that is not there.
    if key not in floors.index:
        pytest.fail(f"{key}: no such row in the floor table")
    row = floors.loc[key]
    if row["seeds"] != len(SEEDS):
        pytest.fail(f"{key}: a mean over {row['seeds']} seeds, not {len(SEEDS)}")
    # A listed miss may drift, not collapse: an xfail alone would pass a cell that fell to 0.
    miss = EXPECTED_MISSES.get(key)
    if miss is not None and row["value"] < miss.value - STRICT_MARGIN:
        pytest.fail(
            f"{key}: {row['value']:.3f}, listed as a miss at {miss.value:.3f}: more than {STRICT_MARGIN} worse than "
            "recorded, not drift"
        )
    assert row["passed"], f"{key}: {row['value']:.3f} against the floor {row['floor']:.3f}"


def test_expected_misses_name_real_cases():
    cases = {param.values[0] for param in floor_cases()}
    assert set(EXPECTED_MISSES) <= cases, set(EXPECTED_MISSES) - cases


def test_every_floor_case_has_its_rows_for_every_seed(pipeline, floors):
    """Each (dataset, variant, scenario, model) the floors check has one row per seed in scenario_metrics.csv, and
    the floor table holds exactly the cases above: a scenario that disappears fails here, listed misses or not."""
    workdir, _ = pipeline
    table = pd.read_csv(workdir / "results/evaluation/scenario_metrics.csv")
    seeds = {
        cell: sorted(rows)
        for cell, rows in table.groupby(["dataset", "variant", "scenario", "model"])["seed"]
    }
    cases = {param.values[0] for param in floor_cases()}
    cells = {(*key[:3], model) for key in cases for model in FLOOR_MODELS}
    wrong = {cell: seeds.get(cell, []) for cell in cells if seeds.get(cell, []) != sorted(SEEDS)}
    assert not wrong, f"seeds per cell, expected {sorted(SEEDS)}: {wrong}"
    assert set(floors.index) == cases, set(floors.index) ^ cases


def test_threshold_reasons_are_given_exactly_where_roc_auc_passes():
    """An F1 miss is put down to the decision threshold exactly where the score ranks the attacks, i.e. where the
    same cell's ROC-AUC is not a listed miss."""
    threshold = {THRESHOLD_DOES_NOT_CARRY, RANDOM_IDS_UNSEEN, NEAR_FLOOR_ONE_SEED_COLLAPSED}
    for key, miss in EXPECTED_MISSES.items():
        if key[4] == "f1_above_chance":
            roc_auc_missed = (*key[:4], "roc_auc") in EXPECTED_MISSES
            assert roc_auc_missed != (miss.reason in threshold), (key, miss.reason)


def test_student_kd_used_its_teacher_and_students_are_smaller(pipeline):
    workdir, config = pipeline
    dataset = next(iter(config["datasets"]))
    for stage in STAGES:
        teacher, distilled, plain = (
            json.loads((chain_dir(workdir, dataset, variant, stage) / "metrics.json").read_text())
            for variant in VARIANTS
        )
        assert distilled["knowledge_distillation"] and not plain["knowledge_distillation"]
        assert distilled["num_parameters"] == plain["num_parameters"] < teacher["num_parameters"]
        assert (
            "train_kd"
            in pd.read_csv(chain_dir(workdir, dataset, "student_kd", stage) / "history.csv").columns
        )


def test_paramspace_sweep_selected_by_query(pipeline, tmp_path):
    workdir, config = pipeline
    table = pd.read_csv(REPO / "config" / "params.tsv", sep="\t")
    query = "heads == 4 and num_layers == 2"
    sweep = {
        "enabled": True,
        "table": str(REPO / "config" / "params.tsv"),
        "query": query,
        "variant": "teacher",
    }
    config = default_config(sweep=sweep)
    dataset = next(iter(config["datasets"]))
    folder = f"results/kd_gat/{dataset}/seed_{SEEDS[0]}/sweep/hidden~16_heads~4_num_layers~2_lr~0.003/gat"
    run(workdir, config, f"{folder}/metrics.json")
    metrics = json.loads((workdir / folder / "metrics.json").read_text())
    # The row's values reached the model: 16 hidden × 4 heads × 2 layers of jumping knowledge.
    model = load_model(workdir / folder / "model.pt")
    assert model.head[0].in_features == 16 * 4 * 2 and metrics["stage"] == "gat"
    # The query selects the sub-space: the dry run plans exactly the selected rows for every dataset (first seed).
    dry = run(
        workdir, config, "kd_gat_all", extra=("-n", "--forceall", "--allowed-rules", "kd_gat_train_gat_sweep")
    )
    selected = len(table.query(query))
    assert selected < len(table)
    assert f"kd_gat_train_gat_sweep{' ' * 1}" in dry.stdout
    planned = [line for line in dry.stdout.splitlines() if line.startswith("kd_gat_train_gat_sweep")]
    assert planned and int(planned[0].split()[-1]) == selected * len(config["datasets"])


def test_imported_module_exposes_the_nine_prefixed_rules(tmp_path):
    config = default_config()
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    listing = run_snakemake(
        "--snakefile", str(DOWNSTREAM), "--directory", str(tmp_path), "--configfile", str(tmp_path / "config.yaml"),
        "--list-rules", cwd=tmp_path,
    ).stdout  # fmt: skip
    rules = {f"kd_gat_train_{stage}_{variant}" for stage in STAGES for variant in VARIANTS}
    assert rules | {"kd_gat_all"} <= set(listing.split()), listing


# Snakemake's API parses the main workflow without running it. A rule's own `retries:` is `_restart_times` (the
# public property folds in the command line's --retries); Snakemake is pinned in pyproject.toml.
DECLARED_RESOURCES = """
import json
from pathlib import Path
from types import SimpleNamespace

from snakemake.api import SnakemakeApi
from snakemake.settings.types import OutputSettings, ResourceSettings, StorageSettings

with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
    workflow = api.workflow(
        resource_settings=ResourceSettings(cores=1), storage_settings=StorageSettings(),
        snakefile=Path("workflow/Snakefile"),
    )._workflow
    wildcards = {"dataset": "synth_hcrl", "seed": "42"}
    job = SimpleNamespace(**wildcards, items=wildcards.items)
    declared = {}
    for rule in workflow.rules:
        if not rule.name.startswith("kd_gat_train_") or "mem_mb" not in rule.resources:
            continue
        memory = rule.resources["mem_mb"]
        declared[rule.name] = {
            "retries": rule._restart_times,
            "gpu": rule.resources["gpu"].value if "gpu" in rule.resources else None,
            "mem_mb": [memory.evaluate(job, [], attempt, rule.name).value for attempt in (1, 2)]
            if memory.is_evaluable() else [memory.value] * 2,
            "benchmark": str(rule.benchmark) if rule.benchmark else None,
        }
print(json.dumps(declared))
"""


def test_the_nine_training_rules_ask_for_a_gpu_retry_twice_and_scale_memory_with_the_attempt():
    """What the README promises of each training rule, read from the parsed main workflow (the students' rules
    inherit these from the teachers' through `use rule ... with:`, which must not drop them)."""
    proc = subprocess.run(
        [sys.executable, "-c", DECLARED_RESOURCES], cwd=REPO, capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    declared = json.loads(proc.stdout.strip().splitlines()[-1])
    memory = SHIPPED["kd_gat"]["resources"]["mem_mb"]
    for variant in VARIANTS:
        for stage in STAGES:
            rule = declared[f"kd_gat_train_{stage}_{variant}"]
            assert (rule["retries"], rule["gpu"]) == (2, 1), (stage, variant, rule)
            assert rule["mem_mb"] == [memory, 2 * memory], (stage, variant, rule)
            assert rule["benchmark"].endswith(f"/{variant}/{stage}.tsv"), (stage, variant, rule)


# Keeping EXPECTED_MISSES true: `python .tests/integration/test_kd_gat_module.py <run>/results/evaluation/
# scenario_metrics.csv` prints the misses of that run that are not listed, the listed ones that pass (a strict one
# fails CI) and the listed values that moved by more than 0.005.
if __name__ == "__main__":
    import sys

    measured = floor_table(pd.read_csv(sys.argv[1])).set_index(
        ["dataset", "variant", "scenario", "model", "check"]
    )
    missed = set(measured.index[~measured["passed"]])
    for key in sorted(missed - set(EXPECTED_MISSES)):
        print(
            "missed, not listed:", key, f"{measured.loc[key, 'value']:.3f} < {measured.loc[key, 'floor']:.3f}"
        )
    for key in sorted(set(EXPECTED_MISSES) - missed):
        miss = EXPECTED_MISSES[key]
        print("listed, but passes:", key, "(strict)" if miss.floor - miss.value > STRICT_MARGIN else "")
    for key in sorted(set(EXPECTED_MISSES) & set(measured.index)):
        if abs(measured.loc[key, "value"] - EXPECTED_MISSES[key].value) > 0.005:
            print(
                "listed value moved:", key, EXPECTED_MISSES[key].value, f"→ {measured.loc[key, 'value']:.3f}"
            )


OVERRIDDEN = """
configfile: "config.yaml"


module kd_gat:
    snakefile:
        "{catalog}/workflow/modules/kd_gat/Snakefile"
    config:
        config


use rule * from kd_gat as kd_gat_*


use rule train_vgae_teacher from kd_gat as kd_gat_train_vgae_teacher with:
    resources:
        {resources}


module evaluation:
    snakefile:
        "{catalog}/workflow/modules/evaluation/Snakefile"
    config:
        config


use rule * from evaluation as evaluation_*


use rule evaluate_teacher from evaluation as my_evaluate_teacher with:
    resources:
        {resources}
"""


def test_a_use_rule_with_resources_that_drops_the_modules_gpu_request_is_warned_of(tmp_path):
    """`use rule train_vgae_teacher from kd_gat as ... with: resources: mem_mb=...` (more memory for one rule)
    replaces all of the module's resources of the rule: it asked for no GPU and no runtime although kd_gat.device
    is auto, so on a cluster its job waited in no GPU queue and trained on the CPU, and nothing said so. The same
    for an evaluation rule and evaluation.gpu. Warned of, naming the rule; not where the statement names gpu."""
    config = {
        "datasets": {"lab": {}},
        "kd_gat": {"device": "auto", "seeds": [1]},
        "evaluation": {"device": "auto", "gpu": 1},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    warned = []
    for resources in ("mem_mb=64000,", "mem_mb=64000,\n        gpu=1,"):
        (tmp_path / "Snakefile").write_text(OVERRIDDEN.format(catalog=REPO, resources=resources))
        warned.append(run_snakemake("--list-rules", cwd=tmp_path, timeout=300).stdout)
    for rule, setting in (
        ("kd_gat_train_vgae_teacher", "kd_gat.device is auto"),
        ("my_evaluate_teacher", "evaluation.gpu is 1"),
    ):
        assert (
            f"rule {rule} asks for no GPU, although {setting}: the `with: resources:` of a `use rule` statement "
            "replaces all of the resources the module gives the rule"
        ) in warned[0], warned[0]
    assert warned[0].count("asks for no GPU") == 2, warned[0]  # the other rules keep the module's resources
    assert "asks for no GPU" not in warned[1], warned[1]


COPIED = """
configfile: "config.yaml"


module kd_gat:
    snakefile:
        "{catalog}/workflow/modules/kd_gat/Snakefile"
    config:
        config


use rule * from kd_gat as kd_gat_*


use rule train_vgae_teacher from kd_gat as wide_vgae with:
    output:
        model="results/wide/{{dataset}}/seed_{{seed}}/vgae/model.pt",
        metrics="results/wide/{{dataset}}/seed_{{seed}}/vgae/metrics.json",
        history="results/wide/{{dataset}}/seed_{{seed}}/vgae/history.csv",
    log:
        "logs/wide/{{dataset}}/seed_{{seed}}/vgae.log",{own}


# replaces the module's rule: no other rule writes its model
use rule train_gat_teacher from kd_gat as kd_gat_train_gat_teacher with:
    output:
        model="results/mine/{{dataset}}/seed_{{seed}}/gat/model.pt",
        metrics="results/mine/{{dataset}}/seed_{{seed}}/gat/metrics.json",
        history="results/mine/{{dataset}}/seed_{{seed}}/gat/history.csv",
"""
OWN_CHECKPOINT = """
    benchmark:
        "benchmarks/wide/{{dataset}}/seed_{{seed}}/vgae.tsv"
    params:
        checkpoint="checkpoints/wide/{{dataset}}/seed_{{seed}}/vgae/last.pt",
        benchmark="benchmarks/wide/{{dataset}}/seed_{{seed}}/vgae.tsv","""


def test_a_copied_training_rule_with_outputs_of_its_own_that_keeps_the_modules_checkpoint_is_warned_of(
    tmp_path,
):
    """`use rule train_vgae_teacher from kd_gat as wide_vgae with: output: ...` beside the module's rule (say, to
    train it again with other settings) kept the module rule's params: its jobs and the module's took one resume
    checkpoint (the second stopped at its lock, or resumed from the other's epochs) and, without a benchmark: of
    its own, wrote one benchmark file. Warned of, naming both rules; not for a copy given its own, nor for a rule
    that replaces the module's (no other rule writes that checkpoint's model)."""
    config = {"datasets": {"lab": {}}, "kd_gat": {"device": "cpu", "seeds": [1]}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    listed = []
    for own in ("", OWN_CHECKPOINT):
        (tmp_path / "Snakefile").write_text(COPIED.format(catalog=REPO, own=own))
        listed.append(run_snakemake("--list-rules", cwd=tmp_path, timeout=300).stdout)
    expected = (
        "rule wide_vgae writes results/wide/{dataset}/seed_{seed}/vgae/model.pt, not the kd_gat module's "
        "results/kd_gat/{dataset}/seed_{seed}/teacher/vgae/model.pt, but keeps the resume checkpoint of rule "
        "kd_gat_train_vgae_teacher, which writes that (params: "
        "checkpoint='checkpoints/kd_gat/{dataset}/seed_{seed}/teacher/vgae/last.pt'), and its benchmark file "
        "('benchmarks/kd_gat/{dataset}/seed_{seed}/teacher/vgae.tsv')"
    )
    assert expected in listed[0], listed[0]
    assert listed[0].count("but keeps the resume checkpoint") == 1, listed[0]  # not kd_gat_train_gat_teacher
    assert "wide_vgae" in listed[1] and "resume checkpoint" not in listed[1], listed[1]


PER_DATASET = """
module kd_gat_x:
    snakefile:
        "{catalog}/workflow/modules/kd_gat/Snakefile"
    config:
        {{"datasets": {{"lab_x": {{}}}}, "kd_gat": {{"device": "cpu", "seeds": [1]}}}}


use rule * from kd_gat_x as x_*


module kd_gat_y:
    snakefile:
        "{catalog}/workflow/modules/kd_gat/Snakefile"
    config:
        {{"datasets": {{"lab_y": {{}}}}, "kd_gat": {{"device": "cpu", "seeds": [1], "teacher_preset": "demo_teacher"}}}}


use rule * from kd_gat_y as y_*


rule all:
    default_target: True
    input:
        rules.x_all.input,
        rules.y_all.input,
"""


def test_two_kd_gat_modules_for_datasets_of_their_own_train_each_its_own_without_a_prefix(tmp_path):
    """Two kd_gat modules in one workflow, each with the kd_gat settings of its own datasets, without a `prefix:`
    (their outputs differ by dataset): the module's {dataset} matched any name, so each rule matched the other
    module's datasets too and the dry run stopped with an AmbiguousRuleException for the first model. The
    datasets are those of the module's config, as in the preprocess and evaluation modules."""
    for dataset in ("lab_x", "lab_y"):  # the graphs, as a preprocess module would leave them
        graphs = tmp_path / "results" / "preprocess" / dataset
        graphs.mkdir(parents=True)
        for name in ("train.pt", "val.pt", "metadata.json"):
            (graphs / name).write_text("")
    (tmp_path / "Snakefile").write_text(PER_DATASET.format(catalog=REPO))
    proc = run_snakemake("-n", "--cores", "1", cwd=tmp_path, check=False, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "AmbiguousRuleException" not in proc.stdout, proc.stdout
    for module, dataset in (("x", "lab_x"), ("y", "lab_y")):
        assert f"rule {module}_train_vgae_teacher:\n" in proc.stdout, proc.stdout
        assert f"output: results/kd_gat/{dataset}/seed_1/teacher/vgae/model.pt" in proc.stdout, proc.stdout


PREFIXED = """
import json
import types


module kd_gat_a:
    snakefile:
        "{catalog}/workflow/modules/kd_gat/Snakefile"
    config:
        {config}
    prefix:
        "runA"


use rule * from kd_gat_a as a_*


module kd_gat_b:
    snakefile:
        "{catalog}/workflow/modules/kd_gat/Snakefile"
    config:
        {config}
    prefix:
        "runB"


use rule * from kd_gat_b as b_*


for name in {rules}:
    job = workflow.get_rule(name).params.tracking(types.SimpleNamespace(dataset="lab", seed="1"))
    print("TAGS", name, json.dumps(dict(job.tags)))
"""


def test_two_kd_gat_modules_under_prefixes_tag_and_name_their_runs_apart(tmp_path):
    """Two kd_gat modules training the same dataset, behind `prefix: runA`/`runB` and `use rule * ... as a_*`/`b_*`:
    their MLflow runs had the same names (lab/teacher/vgae) and the same `snakemake.rule` tag (train_vgae_teacher,
    the module's name for the rule), nothing but the model path telling them apart. The tag is now the rule's name
    in the workflow, and a module whose outputs a prefix moves is tagged by its module name, which the run name
    leads with."""
    from kdgat.tracking import TrackingSettings
    from kdgat.tracking.runs import MlflowTracker

    config = {"datasets": {"lab": {}}, "kd_gat": {"device": "cpu", "seeds": [1]}}
    rules = [f"{side}_train_{stage}_teacher" for side in "ab" for stage in ("vgae", "dqn")]
    (tmp_path / "Snakefile").write_text(PREFIXED.format(catalog=REPO, config=config, rules=rules))
    listed = run_snakemake("--list-rules", cwd=tmp_path, timeout=300).stdout
    tags = {
        line.split()[1]: json.loads(line.split(maxsplit=2)[2])
        for line in listed.splitlines()
        if line[:5] == "TAGS "
    }
    assert set(tags) == set(rules), listed
    names = set()
    for rule, tagged in tags.items():
        side, stage = rule[0], rule.split("_")[2]
        assert tagged["snakemake.rule"] == rule and tagged["kdgat.module"] == f"kd_gat_{side}", tagged
        job = {"variant": "teacher", "stage": stage, "seed": 1}
        names.add(MlflowTracker(TrackingSettings(tags=tagged), job, {})._run_name())
    assert names == {
        f"kd_gat_{side}/lab/teacher/{stage} seed 1" for side in "ab" for stage in ("vgae", "dqn")
    }
