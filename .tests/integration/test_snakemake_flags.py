"""Snakemake's own command-line flags combined with the main workflow (README.md, "Snakemake's own flags with this
workflow"): dry runs of the demo config, each a few seconds."""

from __future__ import annotations

import pytest
from testkit import REPO, flat_text, run_snakemake


def dry_run(folder, *flags: str):
    return run_snakemake(
        "--snakefile", str(REPO / "workflow/Snakefile"), "--directory", str(folder),
        "--configfile", str(REPO / "config/config.yaml"), "--cores", "1", "-n", *flags,
        cwd=folder, timeout=300, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (("--omit-from", "summarize"), "--omit-from summarize: no rule or output file"),
        (("--omit-from", "evaluaton_summarize"), "--omit-from evaluaton_summarize: no rule or output file"),
        (("--batch", "summarize=1/2"), "--batch summarize: no rule of this workflow"),
    ],
)
def test_an_omit_from_or_batch_naming_no_rule_is_refused_with_the_rule_meant(tmp_path, flags, said):
    """Snakemake passes over an --omit-from or --batch name that is no rule without a word and plans every job: a
    module's rule named as the module names it (`summarize`, not the main workflow's `evaluation_summarize`), or
    misspelt, omitted nothing and batched nothing."""
    dry = dry_run(tmp_path, *flags)
    assert dry.returncode != 0, dry.stdout[-3000:]
    assert said in dry.stdout and "did you mean evaluation_summarize?" in dry.stdout, dry.stdout[-3000:]
    assert "Job stats" not in dry.stdout


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (("--omit-from", "summarize"), "--omit-from summarize: no rule or output file"),
        (("--batch", "summarize=1/2"), "--batch summarize: no rule of this workflow"),
    ],
)
def test_an_omit_from_or_batch_naming_no_rule_is_refused_with_targets_given_too(tmp_path, flags, said):
    """The check ran only where `rule all` was asked for its inputs: a run given a target of its own (the summary
    over datasets, as README.md's --batch advice has it) planned every job, omitting and batching nothing."""
    dry = dry_run(tmp_path, *flags, "results/evaluation/summary.md")
    assert dry.returncode != 0, dry.stdout[-3000:]
    assert said in dry.stdout and "did you mean evaluation_summarize?" in dry.stdout, dry.stdout[-3000:]
    assert "Job stats" not in dry.stdout


@pytest.mark.parametrize(
    "flags",
    [
        ("--omit-from", "evaluation_summarize"),
        ("--omit-from", "results/evaluation/summary.md"),
        ("--batch", "evaluation_summarize=1/2"),
    ],
)
def test_an_omit_from_or_batch_naming_a_rule_or_an_output_plans_without_the_omitted_jobs(tmp_path, flags):
    dry = dry_run(tmp_path, *flags)
    assert dry.returncode == 0, dry.stdout[-3000:]
    planned = dry.stdout.split("Job stats:")[1].split("\n\n")[0]
    assert "evaluation_evaluate_teacher" in planned and "evaluation_summarize " not in planned, planned


def test_a_batch_of_the_summary_over_datasets_plans_one_dataset(tmp_path):
    """README.md: `--batch evaluation_summarize=1/2` alone plans every dataset (the default target also asks for
    each dataset's own summary); with the summary over datasets as the target, each batch is one whole dataset."""
    planned = {}
    for target in ([], ["results/evaluation/summary.md"]):
        dry = dry_run(tmp_path, "--batch", "evaluation_summarize=1/2", *target)
        assert dry.returncode == 0, dry.stdout[-3000:]
        planned[bool(target)] = {
            name for name in ("synth_hcrl", "synth_cantt") if f"dataset={name}" in dry.stdout
        }
    assert planned == {False: {"synth_hcrl", "synth_cantt"}, True: {"synth_cantt"}}, planned


WRAPPED = """
rule made:
    output:
        "out.txt",
    wrapper:
        "file:{wrapper}"
"""


def test_editing_a_wrapper_or_its_library_in_place_reruns_nothing(tmp_path):
    """README.md ("Snakemake's own flags with this workflow"): editing the library or a `wrapper.py` in place reruns
    nothing, hence the advice to --forcerun. Snakemake's code trigger sees a rule's shell or run code, not the
    wrapper's file or what it imports: after both are edited, the dry run plans no job, and --forcerun runs the
    edited code."""
    wrapper, library = tmp_path / "wrapper", tmp_path / "library"
    wrapper.mkdir()
    library.mkdir()
    (library / "made_by.py").write_text("WHO = 'first'\n")
    (wrapper / "environment.yaml").write_text("dependencies: [python]\n")  # Snakemake records a wrapper's env
    (wrapper / "wrapper.py").write_text(
        "from made_by import WHO\nopen(snakemake.output[0], 'w').write(WHO)\n"
    )
    (tmp_path / "Snakefile").write_text(WRAPPED.format(wrapper=wrapper))
    env = {"PYTHONPATH": f"{library}"}
    run_snakemake("--cores", "1", cwd=tmp_path, env=env, timeout=300)
    assert (tmp_path / "out.txt").read_text() == "first"
    (library / "made_by.py").write_text("WHO = 'second'\n")
    (wrapper / "wrapper.py").write_text(
        "from made_by import WHO\nopen(snakemake.output[0], 'w').write(WHO + ' edited')\n"
    )
    dry = run_snakemake("--cores", "1", "-n", cwd=tmp_path, env=env, timeout=300)
    assert "Nothing to be done" in dry.stdout, dry.stdout[-3000:]
    run_snakemake("--cores", "1", "--forcerun", "made", cwd=tmp_path, env=env, timeout=300)
    assert (tmp_path / "out.txt").read_text() == "second edited"


def test_a_module_imported_alone_draws_its_dag_only_beside_the_modules_that_make_its_inputs(tmp_path):
    """README.md ("Reuse it") and docs/evaluation.md: the kd_gat module imported alone has no rule for the graphs
    it trains on, nor the evaluation module for those and the models: `--dag` stops with a MissingInputException
    naming them until they exist; imported beside the modules that make them, `--dag` draws the whole chain."""

    def dag(*modules: str):
        text = f'configfile: "{REPO}/config/config.yaml"\n\n\n'
        for name in modules:
            text += (
                f'module {name}:\n    snakefile:\n        "{REPO}/workflow/modules/{name}/Snakefile"\n'
                f"    config:\n        config\n\n\nuse rule * from {name} as {name}_*\n\n\n"
            )
        text += f"rule all:\n    default_target: True\n    input:\n        rules.{modules[-1]}_all.input,\n"
        folder = tmp_path / "_".join(modules)
        folder.mkdir()
        (folder / "Snakefile").write_text(text)
        return run_snakemake("--dag", cwd=folder, timeout=300, check=False)

    for module, missing in (("kd_gat", "results/preprocess/"), ("evaluation", "results/kd_gat/")):
        alone = dag(module)
        assert alone.returncode != 0, alone.stdout[-2000:]
        assert f"MissingInputException in rule {module}_" in alone.stdout, alone.stdout[-2000:]
        affected = alone.stdout.partition("affected files:")[2].split()
        assert affected and all(path.startswith(("results/preprocess/", missing)) for path in affected), (
            affected
        )
    chain = dag("preprocess", "kd_gat", "evaluation")
    assert chain.returncode == 0, chain.stdout[-2000:]
    assert "digraph snakemake_dag" in chain.stdout
    for rule in ("preprocess_build_graphs", "kd_gat_train_vgae_teacher", "evaluation_evaluate_teacher"):
        assert f'label = "{rule}' in chain.stdout, rule
    readme, evaluation = flat_text(REPO / "README.md"), flat_text(REPO / "docs" / "evaluation.md")
    assert (
        "until those files exist, `snakemake --dag` (as `--rulegraph` and `-n`) stops with a `MissingInputException` "
        "naming them. Import the modules that make them beside it" in readme
    )
    assert "Import the preprocess and kd_gat modules beside it" in evaluation
