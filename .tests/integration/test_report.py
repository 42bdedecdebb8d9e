"""`snakemake --report` of a real pipeline run holds the evaluation figures, their captions and the rule graph."""

from __future__ import annotations

import json
import os
import re

import pandas as pd
import pytest
import yaml
from evaluation.pipeline_run import DATASET, SEED, VARIANTS, shared_run
from testkit import REPO, flat_text, run_snakemake

from kdgat.chain import MODELS

pytestmark = pytest.mark.integration
EVALUATED = f"results/evaluation/{DATASET}/seed_{SEED}"


@pytest.fixture(scope="session")
def report(tmp_path_factory) -> str:
    return (shared_run(tmp_path_factory) / "report.html").read_text()


def embedded(report: str, name: str):
    """A JSON object the report assigns to a JavaScript variable (`var <name> = {...};`)."""
    match = re.search(rf"var {name} = (\{{.*?\}});\n", report)
    assert match, f"the report has no `var {name}`"
    return json.loads(match.group(1))


def test_report_has_every_figure_with_its_caption(report):
    results = embedded(report, "results")
    categories = embedded(report, "categories")
    expected = {
        "ROC curves": [f"{EVALUATED}/{v}/roc.svg" for v in VARIANTS],
        "Precision-recall curves": [f"{EVALUATED}/{v}/pr.svg" for v in VARIANTS],
        "Confusion matrices": [f"{EVALUATED}/{v}/confusion.svg" for v in VARIANTS],
        "Training curves": [f"results/evaluation/{DATASET}/training_curves.svg"],
        "Teacher vs students": [
            f"results/evaluation/{DATASET}/size_f1.svg",
            "results/evaluation/size_f1.svg",
            "results/evaluation/summary.csv",
            "results/evaluation/summary.md",
            "results/evaluation/scenario_metrics.csv",
            "results/evaluation/notebook/scenario_f1.svg",
        ],
    }
    for category, paths in expected.items():
        assert category in categories, f"category {category!r} missing from the report"
        listed = {p for files in categories[category].values() for p in files}
        assert set(paths) <= listed, f"{category}: {sorted(set(paths) - listed)} missing"
        for path in paths:
            item = results[path]
            assert item["caption"].strip(), f"{path} has no caption"
            if path.endswith(".svg"):
                assert item["data_uri"].startswith("data:image/svg+xml")
    # Captions are rendered with the job's wildcards and params, and labels tell the variants apart.
    roc = results[f"{EVALUATED}/student_kd/roc.svg"]
    assert DATASET in roc["caption"] and "student_kd" in roc["caption"] and f"seed {SEED}" in roc["caption"]
    assert roc["labels"] == {"dataset": DATASET, "variant": "student_kd", "seed": str(SEED)}
    assert "Youden" in results[f"{EVALUATED}/teacher/confusion.svg"]["caption"]
    assert "95% t interval" in results["results/evaluation/summary.md"]["caption"]
    assert "baseline_unknown_id" in results["results/evaluation/scenario_metrics.csv"]["caption"]


def test_report_includes_the_rule_graph(report):
    graph = embedded(report, "rulegraph_spec")
    rules = {node["rule"] for data in graph["data"] if data["name"] == "node-data" for node in data["values"]}
    assert {f"evaluation_evaluate_{v}" for v in VARIANTS} | {"evaluation_summarize_dataset"} <= rules
    assert {"preprocess_build_graphs", "kd_gat_train_gat_teacher", "evaluation_explore"} <= rules


CAPTIONS = REPO / "workflow" / "report"


def caption(name: str) -> str:
    return " ".join((CAPTIONS / f"{name}.rst").read_text().split())  # as one line, whatever the wrapping


@pytest.fixture
def drawn(monkeypatch) -> list:
    """The figures the plot functions would save, kept open for inspection."""
    from kdgat.evaluation import plots

    figures = []
    monkeypatch.setattr(plots, "save_figure", lambda figure, path: figures.append(figure))
    return figures


def test_curve_captions_say_when_the_figure_falls_back_to_validation(drawn):
    """Each caption against the code that draws its figure: test windows of one class give a validation curve,
    and a metrics.json without test scenarios a validation confusion matrix; the captions say so."""
    from kdgat.evaluation import plots

    scores = pd.DataFrame({
        "split": ["test"] * 4 + ["val"] * 4,
        "label": [1, 1, 1, 1, 0, 1, 0, 1],
        "vgae_score": [0.1, 0.7, 0.3, 0.9] * 2, "gat_prob": [0.2, 0.8, 0.4, 0.6] * 2,
        "fusion_score": [0.3, 0.9, 0.2, 0.7] * 2,
    })  # fmt: skip
    plots.plot_roc(scores, "roc.svg")
    plots.plot_pr(scores, "pr.svg")
    block = {model: {"confusion_matrix": {"matrix": [[1, 0], [0, 1]]}} for model in MODELS}
    plots.plot_confusion({"val": block}, "confusion.svg")
    roc, pr, confusion = drawn
    assert "validation" in roc.axes[0].get_title() and "validation" in pr.axes[0].get_title()
    assert "validation" in confusion._suptitle.get_text()
    assert "(on validation when the test windows hold a single class)" in caption("roc")
    assert "(on validation when the test windows hold a single class; the title says which)" in caption("pr")
    assert "(on validation when there is no test scenario; the title says which)" in caption("confusion")


def test_training_curves_caption_names_what_the_dashed_lines_are(drawn, tmp_path):
    from kdgat.evaluation import plots

    history = tmp_path / "history.csv"
    pd.DataFrame({"epoch": [1, 2], "train_loss": [1.0, 0.5], "val_loss": [1.1, 0.6], "val_auc": [0.7, 0.8],
                  "val_windows": [40, 40], "epoch_seconds": [3.0, 2.9]}).to_csv(history, index=False)  # fmt: skip
    plots.plot_training_curves({("teacher", "vgae"): history}, "curves.svg")
    (figure,) = drawn
    lines = [line for axis in figure.axes for line in axis.get_lines()]
    assert {line.get_label() for line in lines if line.get_linestyle() == "-"} == {"train_loss", "val_loss"}
    assert {line.get_label() for line in lines if line.get_linestyle() == "--"} == {"val_auc"}
    text = caption("training_curves")
    assert "Solid lines are losses (left axis), dashed lines the validation scores that lie in [0, 1]" in text
    assert "timings, throughput and other counts in ``history.csv`` are not drawn" in text


def test_calibration_captions_name_the_refine_trials_the_figures_draw():
    """Both calibration figures draw the refine step's trials (more replicates, so losses on another scale) as
    black crosses apart from the design and search trials; the captions said nothing of them."""
    from simcal.visualize import history_figure, loss_figure

    trials = pd.DataFrame({
        "trial": [0, 1, 2, 3], "round": [0, 0, 1, 1], "phase": ["design", "design", "search", "refine"],
        "beta": [0.2, 0.3, 0.25, 0.26], "loss": [3.0, 2.0, 1.5, 1.4],
    })  # fmt: skip
    for figure in (loss_figure(trials, ["beta"], {"params": {"beta": 0.26}}), history_figure(trials)):
        crosses = [c for axis in figure.axes for c in axis.collections if c.get_label().startswith("refine")]
        assert len(crosses) == 1 and crosses[0].get_offsets().shape == (1, 2)
        assert tuple(crosses[0].get_facecolor()[0][:3]) == (0.0, 0.0, 0.0)
    assert (
        "the refine step's parameter sets, simulated again with more replicates, are black crosses"
        in caption("calibration_loss")
    )
    assert "the refine step's trials (more replicates per set) are black crosses" in caption(
        "calibration_history"
    )


CALIBRATION_REPORT_FILES = (
    "calibration.html", "fit.png", "loss.png", "history.png", "sweep/sweep.html", "sweep/outputs.png",
    "sweep/series.png",
)  # fmt: skip


def calibrations_report(tmp_path, calibrations: dict) -> tuple[dict, dict]:
    """The report's results and categories of a downstream workflow importing the calibration module once per item
    of ``calibrations`` (its name, the module's ``calibration`` section), as `config[name]`."""
    names = tuple(calibrations)
    (tmp_path / "config.yaml").write_text(
        yaml.safe_dump({name: {"calibration": section} for name, section in calibrations.items()})
    )
    imports = "".join(
        f'module {name}:\n    snakefile:\n        "{REPO}/workflow/modules/calibration/Snakefile"\n'
        f"    config:\n        config[{name!r}]\n\n\nuse rule * from {name} as {name}_*\n\n\n"
        for name in names
    )
    targets = "".join(f"        rules.{name}_all.input,\n" for name in names)
    (tmp_path / "Snakefile").write_text(
        f'configfile: "config.yaml"\n\n\n{imports}rule all:\n    default_target: True\n    input:\n{targets}'
    )
    # --report reads only the files it shows, so stand-ins for them spare running the calibrations
    for name in names:
        for relative in CALIBRATION_REPORT_FILES:
            path = tmp_path / f"results/calibration/{name}/{relative}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"<html>{name}</html>" if path.suffix == ".html" else "")
    run_snakemake("--report", "report.html", cwd=tmp_path)
    report = (tmp_path / "report.html").read_text()
    return embedded(report, "results"), embedded(report, "categories")


def test_two_calibrations_in_one_report_are_told_apart_by_their_names(tmp_path):
    """A downstream workflow importing the calibration module twice (two models, two `calibration.name`s): the
    report listed eight items named fit.png, loss.png, ... under "Other", with the same captions, so nothing said
    which fit was which. Each item is now filed and labelled under its calibration's name."""
    names = ("sir_a", "sir_b")
    results, categories = calibrations_report(tmp_path, {name: {"name": name} for name in names})
    for category in ("Calibration", "Simulation sweep"):
        assert set(categories[category]) == set(names), categories[category]
        for name in names:
            files = categories[category][name]
            assert all(path.startswith(f"results/calibration/{name}/") for path in files), files
            labels = [results[path]["labels"] for path in files]
            assert all(label["calibration"] == name for label in labels), labels
            assert len({label["figure"] for label in labels}) == len(files), labels


def test_the_calibration_captions_name_the_design_each_calibration_drew(tmp_path):
    """The sweep page's caption said "over a quasi-random design" and the loss figure's "round 0 is the
    quasi-random design" whatever calibration.sweep.design and calibration.calibrate.initial_design were (lhs and
    random too); they now name the design of each calibration."""
    results, _ = calibrations_report(
        tmp_path,
        {
            "sir_a": {"name": "sir_a"},  # the defaults: Sobol for both
            "sir_b": {"name": "sir_b", "calibrate": {"initial_design": "lhs"}, "sweep": {"design": "random"}},
        },
    )

    def text(path: str) -> str:
        return " ".join(re.sub(r"<[^>]+>", "", results[path]["caption"]).split())

    sobol, lhs, random = "quasi-random (scrambled Sobol)", "Latin hypercube", "uniformly random"
    sweep = "over a {} design (calibration.sweep.design)"
    loss = "(round 0 is the {} design, calibration.calibrate.initial_design)"
    assert sweep.format(sobol) in text("results/calibration/sir_a/sweep/sweep.html")
    assert sweep.format(random) in text("results/calibration/sir_b/sweep/sweep.html")
    assert loss.format(sobol) in text("results/calibration/sir_a/loss.png")
    assert loss.format(lhs) in text("results/calibration/sir_b/loss.png")
    assert "quasi-random" not in text("results/calibration/sir_b/sweep/sweep.html") + text(
        "results/calibration/sir_b/loss.png"
    )


def test_the_roc_caption_names_the_false_positive_rates_the_evaluation_was_given(tmp_path):
    """The ROC caption said the detection rate is in metrics.json "at FPR 5 % / 1 % / 0.1 %" whatever
    evaluation.fpr_targets held; it now names the rates the job was given."""
    (tmp_path / "rates.yaml").write_text(yaml.safe_dump({"evaluation": {"fpr_targets": [0.1, 0.02]}}))
    evaluated = tmp_path / "results/evaluation/synth_hcrl/seed_42/teacher"
    evaluated.mkdir(parents=True)
    for figure in ("roc", "pr", "confusion"):  # --report reads only the job's report items
        (evaluated / f"{figure}.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    roc = str((evaluated / "roc.svg").relative_to(tmp_path))
    run_snakemake(
        "--snakefile", str(REPO / "workflow/Snakefile"), "--directory", str(tmp_path),
        "--configfile", str(REPO / "config/config.yaml"), str(tmp_path / "rates.yaml"),
        "--report", "report.html", roc, cwd=tmp_path,
    )  # fmt: skip
    text = " ".join(embedded((tmp_path / "report.html").read_text(), "results")[roc]["caption"].split())
    assert "the detection rate at FPR 10 % / 2 % (evaluation.fpr_targets)" in re.sub(r"<[^>]+>", "", text)
    # nothing ran: the figure is the file as it is, the caption the command's config, as README says
    assert (
        "`--report` without `--report-after-run` runs nothing: it shows the files as they are, with captions "
        "rendered from the config of that command" in flat_text(REPO / "README.md")
    )


def test_the_size_f1_caption_names_the_variants_that_ran(tmp_path):
    """The size/F1 caption said "for the teacher and the two students" whatever kd_gat.variants held; it now names
    the variants the summary was made of."""
    variants, seed = ["teacher", "student"], 7
    (tmp_path / "variants.yaml").write_text(
        yaml.safe_dump({"kd_gat": {"variants": variants, "seeds": [seed]}})
    )
    # --report reads only the report items of the jobs the target needs: stand-ins for those of the summary and the
    # evaluations it reads
    chart = tmp_path / "results/evaluation/size_f1.svg"
    chart.parent.mkdir(parents=True)
    chart.write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    for name in ("summary.csv", "summary.md", "scenario_metrics.csv"):
        (chart.parent / name).write_text("")
    for dataset in yaml.safe_load((REPO / "config/config.yaml").read_text())["datasets"]:
        for variant in variants:
            evaluated = chart.parent / dataset / f"seed_{seed}" / variant
            evaluated.mkdir(parents=True)
            for figure in ("roc", "pr", "confusion"):
                (evaluated / f"{figure}.svg").write_text(chart.read_text())
    run_snakemake(
        "--snakefile", str(REPO / "workflow/Snakefile"), "--directory", str(tmp_path),
        "--configfile", str(REPO / "config/config.yaml"), str(tmp_path / "variants.yaml"),
        "--report", "report.html", "results/evaluation/size_f1.svg", cwd=tmp_path,
    )  # fmt: skip
    text = " ".join(
        embedded((tmp_path / "report.html").read_text(), "results")["results/evaluation/size_f1.svg"][
            "caption"
        ].split()
    )
    text = re.sub(r"<[^>]+>", "", text)
    assert "for the variants that ran (kd_gat.variants: teacher, student) of each dataset" in text, text
    assert "two students" not in text and "student_kd" not in text


def test_the_training_curves_caption_names_the_variants_that_ran(tmp_path):
    """The training-curves caption said "one row per variant (teacher, student with knowledge distillation, student
    without)" whatever kd_gat.variants held, while the figure draws a row only for the variants that ran; it now
    names those, in the figure's order."""
    variants, seed = ["student", "teacher"], 7  # the figure's rows follow the chain's order, not the config's
    (tmp_path / "variants.yaml").write_text(
        yaml.safe_dump({"kd_gat": {"variants": variants, "seeds": [seed]}})
    )
    dataset = next(iter(yaml.safe_load((REPO / "config/config.yaml").read_text())["datasets"]))
    # --report reads only the report items of the jobs the target needs: stand-ins for those of the dataset's
    # summary and the evaluations it reads
    summarized = tmp_path / "results/evaluation" / dataset
    figure = '<svg xmlns="http://www.w3.org/2000/svg"/>'
    for variant in variants:
        evaluated = summarized / f"seed_{seed}" / variant
        evaluated.mkdir(parents=True)
        for name in ("roc", "pr", "confusion"):
            (evaluated / f"{name}.svg").write_text(figure)
    for name in ("size_f1.svg", "training_curves.svg"):
        (summarized / name).write_text(figure)
    (summarized / "summary.csv").write_text("")
    curves = str((summarized / "training_curves.svg").relative_to(tmp_path))
    run_snakemake(
        "--snakefile", str(REPO / "workflow/Snakefile"), "--directory", str(tmp_path),
        "--configfile", str(REPO / "config/config.yaml"), str(tmp_path / "variants.yaml"),
        "--report", "report.html", curves, cwd=tmp_path,
    )  # fmt: skip
    caption = embedded((tmp_path / "report.html").read_text(), "results")[curves]["caption"]
    text = " ".join(re.sub(r"<[^>]+>", "", caption).split())
    assert (
        "one row per variant that ran (kd_gat.variants), in this order: teacher, student trained alone (student); "
        "one column per stage" in text
    ), text
    assert "knowledge distillation" not in text, text


def test_a_report_after_failed_jobs_is_refused_and_made_of_the_targets_that_were_made(tmp_path):
    """README, "Document with it": after a run with failed jobs `--report` stops at the first report item that was
    not made, and a report of the targets that were made (a dataset's summary, calibration_all) holds their
    figures. Stand-ins for what a `--keep-going` run made: one dataset evaluated, the other failed, the calibration
    done (--report reads only the report items)."""
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    made, failed = list(config["datasets"])[:2]
    seed, name = 7, config["calibration"]["name"]
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({"kd_gat": {"variants": ["teacher"], "seeds": [seed]}}))
    figure = '<svg xmlns="http://www.w3.org/2000/svg"/>'
    evaluated = tmp_path / "results/evaluation" / made / f"seed_{seed}/teacher"
    evaluated.mkdir(parents=True)
    for item in ("roc", "pr", "confusion"):
        (evaluated / f"{item}.svg").write_text(figure)
    for item in ("size_f1.svg", "training_curves.svg", "summary.csv"):
        (tmp_path / "results/evaluation" / made / item).write_text(figure if item.endswith(".svg") else "")
    for relative in CALIBRATION_REPORT_FILES:
        path = tmp_path / f"results/calibration/{name}/{relative}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("<html></html>" if path.suffix == ".html" else "")
    common = (
        "--snakefile", str(REPO / "workflow/Snakefile"), "--directory", str(tmp_path),
        "--configfile", str(REPO / "config/config.yaml"), str(tmp_path / "run.yaml"), "--report", "report.html",
    )  # fmt: skip
    refused = run_snakemake(*common, cwd=tmp_path, check=False)
    assert refused.returncode != 0 and "marked for report but does not exist" in refused.stdout, (
        refused.stdout
    )
    assert not (tmp_path / "report.html").exists()
    run_snakemake(*common, f"results/evaluation/{made}/summary.csv", "calibration_all", cwd=tmp_path)
    categories = embedded((tmp_path / "report.html").read_text(), "categories")
    assert set(categories["ROC curves"]) == {made} and set(categories["Calibration"]) == {name}, categories
    assert failed not in {sub for subs in categories.values() for sub in subs}, categories
    text = flat_text(REPO / "README.md")
    assert (
        "`--report` stops at the first report item that was not made (`File ... marked for report but does not "
        "exist`), and `--report-after-run` makes none" in text
    )
    assert (
        "Name the targets that were made, as `snakemake --report report.html "
        "results/evaluation/<dataset>/summary.csv calibration_all`" in text
    )


def test_report_after_run_makes_no_report_after_a_failed_job_and_says_nothing_of_it(tmp_path):
    """README, "Document with it": after a run with failed jobs `--report-after-run` makes no report. Run for real
    on the calibration module imported alone, with `--keep-going` and an observed file without the target's
    columns: the sweep and its report items are made, calibrate fails at once, and no report file is made; the
    run ends with Snakemake's `At least one job did not complete successfully` and no word of the report."""
    config = {
        "calibration": {
            "name": "sir_small",
            "fixed": {"population": 2000, "initial_infected": 5, "days": 60},
            "observed": {"path": "observed.csv"},
            "calibrate": {"initial_points": 4, "rounds": 1, "proposals_per_round": 2, "seed": 3},
            "simulation": {"replicates": 1, "batch_size": 4},
            "sweep": {"enabled": True, "n": 2, "replicates": 1},
        }
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "observed.csv").write_text("not,a\nseries,at all\n")
    (tmp_path / "Snakefile").write_text(
        f'configfile: "config.yaml"\n\n\nmodule calibration:\n    snakefile:\n'
        f'        "{REPO}/workflow/modules/calibration/Snakefile"\n    config:\n        config\n\n\n'
        "use rule * from calibration as calibration_*\n\n\n"
        "rule all:\n    default_target: True\n    input:\n        rules.calibration_all.input,\n"
    )
    flags = ("--cores", "2", "--keep-going", "--report", "report.html", "--report-after-run")
    done = run_snakemake(*flags, cwd=tmp_path, check=False)
    assert done.returncode != 0, done.stdout[-3000:]
    assert "Error in rule calibration_calibrate" in done.stdout, done.stdout[-3000:]
    assert (tmp_path / "results/calibration/sir_small/sweep/sweep.html").is_file()  # a report item was made
    assert not (tmp_path / "report.html").exists()
    ending = done.stdout.rstrip()[-3000:]
    assert ending.endswith("At least one job did not complete successfully."), ending
    lines = done.stdout.replace(str(tmp_path), "<workdir>").splitlines()  # the test's folder names "report"
    said = [line for line in lines if "report" in line.lower() and "Command:" not in line]
    assert said == [], said
    assert (
        "and `--report-after-run` makes none, without a word of it: the run ends with `At least one job did not "
        "complete successfully`" in flat_text(REPO / "README.md")
    )


def workflow_description(tmp_path, name: str, overrides: dict) -> str:
    """The report's workflow description (workflow/report/workflow.rst) for the shipped config with ``overrides``,
    as plain text; the report is of kd_gat_all, whose jobs have no report items, so nothing needs to have run."""
    folder = tmp_path / name
    folder.mkdir()
    (folder / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    run_snakemake(
        "--snakefile", str(REPO / "workflow/Snakefile"), "--directory", str(folder),
        "--configfile", str(REPO / "config/config.yaml"), str(folder / "overrides.yaml"),
        "--report", "report.html", "kd_gat_all", cwd=folder,
    )  # fmt: skip
    html = (folder / "report.html").read_text()
    match = re.search(r"workflow_desc\s*[=:]\s*(\".*?(?<!\\)\")", html, re.S)
    assert match, "the report holds no workflow description"
    return " ".join(re.sub(r"<[^>]+>", "", json.loads(match.group(1))).split())


def test_the_reports_workflow_description_says_what_the_runs_config_is(tmp_path):
    """workflow.rst said "Configuration: config/config.yaml" and described the CAN-IDS training whatever the run's
    config was (another --configfile, targets.can_ids false). It now states the run's datasets, variants, seeds,
    calibration and which targets are on."""
    shipped = workflow_description(tmp_path, "shipped", {})
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    datasets = ", ".join(config["datasets"])
    assert f"CAN-bus logs of the datasets {datasets} are turned into windowed graphs" in shipped, shipped
    assert f"for the variants {', '.join(config['kd_gat']['variants'])} (" in shipped, shipped
    assert f"once per seed ({', '.join(map(str, config['kd_gat']['seeds']))})" in shipped, shipped
    assert f"calibrated on Dask as {config['calibration']['name']}" in shipped, shipped

    other = workflow_description(
        tmp_path,
        "other",
        {"targets": {"can_ids": False}, "kd_gat": {"seeds": [7]}, "calibration": {"name": "sir_b"}},
    )
    assert "No CAN-bus intrusion detector was trained or evaluated in this run (targets.can_ids)" in other, (
        other
    )
    assert "windowed graphs" not in other and "once per seed" not in other, other
    assert "calibrated on Dask as sir_b (results/calibration/sir_b/)" in other, other
    assert "Snakemake gives this text that config, not the files it came from" in other


def test_a_relative_report_path_lies_in_the_directory_given_by_directory(tmp_path):
    """README: with --directory, a relative report path lies in that directory, not where the command was run."""
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    run_snakemake(
        "--snakefile", str(REPO / "workflow/Snakefile"), "--directory", str(work),
        "--configfile", str(REPO / "config/config.yaml"), "--report", "report.html", "kd_gat_all", cwd=elsewhere,
    )  # fmt: skip
    assert (work / "report.html").is_file() and not (elsewhere / "report.html").exists()
    assert (
        "With `--directory`, a relative report path lies in that directory, as results/ does, not where the "
        "command was run" in flat_text(REPO / "README.md")
    )


def test_the_reports_workflow_description_explains_only_the_variants_that_ran(tmp_path):
    """workflow.rst explained teacher, student_kd and student whatever kd_gat.variants held; it now explains the
    variants of the run, in its order."""
    text = workflow_description(tmp_path, "teacher", {"kd_gat": {"variants": ["student", "teacher"]}})
    assert (
        "for the variants student, teacher (student: small ones trained alone; teacher: the large models), once "
        "per seed" in text
    ), text
    assert "student_kd" not in text and "distilled" not in text, text


def test_two_prefixed_evaluation_modules_in_one_report_are_told_apart_by_their_labels(tmp_path):
    """A downstream workflow importing the evaluation module twice, with `prefix:` a and b, for datasets of the
    same names: every report item of one had the category, subcategory and labels of an item of the other, so the
    report's tables showed two identical rows and nothing said which was which. They carry the module's name."""
    config = {"datasets": {"lab": {}}, "kd_gat": {"seeds": [3], "variants": ["teacher"]}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    names = ("eval_a", "eval_b")
    imports = "".join(
        f'module {name}:\n    snakefile:\n        "{REPO}/workflow/modules/evaluation/Snakefile"\n'
        f"    config:\n        config\n    prefix:\n        {name!r}\n\n\nuse rule * from {name} as {name}_*\n\n\n"
        for name in names
    )
    (tmp_path / "Snakefile").write_text(f'configfile: "config.yaml"\n\n\n{imports}')
    # --report reads only the report items of the jobs the targets need: stand-ins for one evaluation per module,
    # its inputs first (older), so that nothing would be rerun
    figures = {}
    for name in names:
        inputs = [f"results/kd_gat/lab/seed_3/teacher/{stage}/model.pt" for stage in ("vgae", "gat", "dqn")]
        inputs += [f"results/preprocess/lab/{split}.pt" for split in ("val", "test")]
        for relative in inputs:
            path = tmp_path / name / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("")
    for name in names:
        evaluated = tmp_path / name / "results/evaluation/lab/seed_3/teacher"
        evaluated.mkdir(parents=True)
        for figure in ("roc", "pr", "confusion"):
            (evaluated / f"{figure}.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
        for table in ("metrics.json", "scores.parquet"):
            (evaluated / table).write_text("")
        figures[name] = [str((evaluated / f"{figure}.svg").relative_to(tmp_path)) for figure in ("roc", "pr")]
    targets = [path for paths in figures.values() for path in paths]
    run_snakemake("--report", "report.html", *targets, cwd=tmp_path)
    results = embedded((tmp_path / "report.html").read_text(), "results")
    labels = {name: [results[path]["labels"] for path in figures[name]] for name in names}
    for figure in range(2):  # the ROC curves (one category), the PR curves (another)
        assert labels["eval_a"][figure] != labels["eval_b"][figure], labels
    for name in names:
        assert all(label["module"] == name for label in labels[name]), labels


def test_two_prefixed_calibration_modules_of_one_name_in_one_report_are_told_apart_by_their_labels(tmp_path):
    """A downstream workflow importing the calibration module twice, with `prefix:` cal_a and cal_b, both with the
    default calibration.name (sir): every report item of one had the category, subcategory and labels of an item
    of the other (labels calibration: sir and the figure), so nothing in the report said which was which. They
    carry the module's name, as the evaluation module's do."""
    names = ("cal_a", "cal_b")
    imports = "".join(
        f'module {name}:\n    snakefile:\n        "{REPO}/workflow/modules/calibration/Snakefile"\n'
        f"    config:\n        {{}}\n    prefix:\n        {name!r}\n\n\nuse rule * from {name} as {name}_*\n\n\n"
        for name in names
    )
    (tmp_path / "Snakefile").write_text(imports)
    # stand-ins for one calibration per module, each step's inputs older than its outputs, so nothing is rerun
    steps = [
        ["resources/calibration/sir/observed.csv"],
        ["results/calibration/sir/simulations.parquet", "results/calibration/sir/trials.parquet"],
        [
            f"results/calibration/sir/analysis/{name}"
            for name in ("best.json", "top_k.parquet", "summary.json")
        ],
        [
            f"results/calibration/sir/{name}"
            for name in ("calibration.html", "fit.png", "loss.png", "history.png")
        ],
    ]
    for age, files in enumerate(steps):
        for name in names:
            for relative in files:
                path = tmp_path / name / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("")
                os.utime(path, (1_700_000_000 + age, 1_700_000_000 + age))
    figures = {
        name: [f"{name}/results/calibration/sir/{figure}.png" for figure in ("fit", "loss")] for name in names
    }
    run_snakemake("--report", "report.html", *[p for paths in figures.values() for p in paths], cwd=tmp_path)
    results = embedded((tmp_path / "report.html").read_text(), "results")
    labels = {name: [results[path]["labels"] for path in figures[name]] for name in names}
    for figure in range(2):  # the fit, the loss
        assert labels["cal_a"][figure] != labels["cal_b"][figure], labels
    for name in names:
        assert all(label == {**label, "calibration": "sir", "module": name} for label in labels[name]), labels
