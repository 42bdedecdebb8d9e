"""The generated docs (rule graph as dot/Mermaid, README block, config/README.md) match the workflow and schemas."""

from __future__ import annotations

import importlib.util
import random
import re
import subprocess
import sys

import pytest
import yaml
from testkit import REPO, flat_text, run_snakemake

pytestmark = pytest.mark.integration


def load_make_docs():
    spec = importlib.util.spec_from_file_location("make_docs", REPO / "scripts" / "make_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_docs_are_fresh():
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "make_docs.py"), "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, f"stale docs, run `make docs`:\n{proc.stderr[-4000:]}"
    assert (REPO / "docs" / "rulegraph.svg").read_text().lstrip().startswith("<?xml")


def test_rulegraph_text_does_not_depend_on_snakemake_edge_order():
    docs = load_make_docs()
    dot = docs.snakemake_rulegraph("dot")
    lines = dot.splitlines()
    edges = [i for i, line in enumerate(lines) if "->" in line]
    shuffled = list(lines)
    order = [lines[i] for i in edges]
    random.Random(1).shuffle(order)
    for index, line in zip(edges, order, strict=True):
        shuffled[index] = line
    assert shuffled != lines
    assert docs.canonical_dot("\n".join(shuffled)) == docs.canonical_dot(dot)
    assert 'label = "evaluation_evaluate_teacher"' in docs.canonical_dot(dot)


def test_config_reference_lists_every_key_with_type_default_and_description():
    reference = load_make_docs().config_reference()
    for section in ("targets", "datasets", "preprocess", "kd_gat", "evaluation", "calibration"):
        assert f"## `{section}`" in reference
    assert "| `evaluation.speed.latency_runs` | integer (≥ 1) | `20` | Single-window runs;" in reference
    assert '| `evaluation.device` | string | `"auto"` |' in reference


def test_the_readmes_job_and_seed_counts_are_those_of_the_shipped_workflow(tmp_path):
    """README's "`make demo` ... N jobs, K seeds of every variant": N from a dry run of the shipped workflow and
    config in an empty directory, as in a fresh clone (Snakemake's job stats), K from kd_gat.seeds; and its "nine
    training rules per dataset and seed of `kd_gat.seeds`", one evaluation job per dataset, seed and variant."""
    stated = re.search(r"(\d+) jobs, (\d+) seeds of\s+every variant", (REPO / "README.md").read_text())
    assert stated, "README no longer states the demo's job count"
    dry = run_snakemake(
        "--snakefile", str(REPO / "workflow/Snakefile"), "--configfile", str(REPO / "config/config.yaml"),
        "--directory", str(tmp_path), "--cores", "2", "--dry-run", cwd=tmp_path, timeout=300,
    ).stdout  # fmt: skip
    totals = re.findall(r"^total\s+(\d+)$", dry, flags=re.MULTILINE)
    assert totals, dry[-3000:]
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    seeds = config["kd_gat"]["seeds"]
    assert (int(stated[1]), int(stated[2])) == (int(totals[-1]), len(seeds)), (stated[0], totals)
    assert "nine training rules per dataset and seed of `kd_gat.seeds`" in flat_text(REPO / "README.md")
    stats = dry[dry.rindex("Job stats:") :]
    counts = {name: int(count) for name, count in re.findall(r"^(\w+) +(\d+)$", stats, re.M)}
    assert counts.pop("total") == sum(counts.values()), stats
    per_dataset_and_seed = len(config["datasets"]) * len(seeds)
    training = {name: count for name, count in counts.items() if name.startswith("kd_gat_train_")}
    assert len(training) == 9 and set(training.values()) == {per_dataset_and_seed}, training
    for variant in config["kd_gat"]["variants"]:
        assert counts[f"evaluation_evaluate_{variant}"] == per_dataset_and_seed, counts
