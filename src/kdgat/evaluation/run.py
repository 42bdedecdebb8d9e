"""Evaluation of trained KD-GAT detectors, end to end: score a detector on validation and every test scenario,
measure it, write its outputs; summarise several evaluations. The file-level functions are the wrappers' calls.

The detector is scored per window graph by ``kdgat.inference.score_graphs``; metrics come from
:mod:`kdgat.evaluation.metrics` for three models (VGAE alone, GAT alone, DQN fusion) with the decision rules of
:mod:`kdgat.evaluation.thresholds`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kdgat.chain import VARIANT_TITLES
from kdgat.evaluation.inputs import (
    METRICS_KEYS,
    check_detector_files,
    check_one_model_size_per_variant,
    check_one_set_of_models_per_variant,
    check_one_test_set_per_dataset,
    check_scenario_names,
    checked_metrics,
    checked_seed,
    keyed_histories,
    loaded_baselines,
    loaded_document,
)
from kdgat.evaluation.markdown import summary_markdown
from kdgat.evaluation.metrics import (
    FPR_TARGETS,
    EvaluationSettingsError,
    binary_metrics,
    checked_fpr_targets,
    input_files,
    setting_name,
)
from kdgat.evaluation.plots import (
    plot_confusion,
    plot_pr,
    plot_roc,
    plot_size_f1,
    plot_training_curves,
    read_history,
)
from kdgat.evaluation.speed import checked_speed, measure_inference_speed, measured_on
from kdgat.evaluation.stash import ResultStash, library_code_digest, stash_key, stash_parts
from kdgat.evaluation.summary import (
    alpha_summary,
    distillation_summary,
    floor_table,
    fusion_summary,
    model_summary,
    pooled_table,
    scenario_summary,
    scenario_table,
    variant_summary,
)
from kdgat.evaluation.thresholds import (
    FIXED_ALPHA_MODELS,
    GAT_THRESHOLD,
    SCORE_COLUMNS,
    NonFiniteScoresError,
    check_scored,
    model_decisions,
    youden_threshold,
)
from kdgat.files import FileContentError, load_json, locking_outputs, write_json, write_table, write_text
from kdgat.rule_items import RuleItemError
from wrapper_rules import InputError

log = logging.getLogger(__name__)

EVALUATION_OUTPUTS = ("metrics", "scores", "roc", "pr", "confusion")
# What a tracked evaluation attaches to the training runs (scores.parquet, one row per graph, stays a file).
TRACKED_OUTPUTS = ("metrics", "roc", "pr", "confusion")


# Edges 0, 0.1, ..., 1 as the floats nearest to them (linspace's 0.7000000000000001 is not).
ALPHA_BINS = np.arange(11) / 10


def checked_batch_size(batch_size: Any) -> int:
    """``batch_size`` (``evaluation.batch_size``) as a positive integer; a ValueError naming it otherwise."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise EvaluationSettingsError(
            f"{setting_name('batch_size')} must be a positive integer (graphs per inference batch); got "
            f"{batch_size!r}"
        )
    return int(batch_size)


def alpha_statistics(frame: pd.DataFrame) -> dict[str, Any]:
    """What the fusion's α does on a split: a histogram over ten bins of [0, 1] (the last one closed), quantiles,
    and how often the fused decision equals the GAT's (p > 0.5) and the VGAE-side one (calibrated score > 0.5)."""
    alpha = frame["fusion_alpha"].to_numpy(float)
    fused = frame["fusion_pred"].to_numpy()
    # The DQN's α are float32 (i / 20: 0.9 is 0.89999998): rounded off, each counts in the bin it names.
    counts, _ = np.histogram(alpha.round(6), bins=ALPHA_BINS)
    return {
        "n": int(len(alpha)),
        "bins": ALPHA_BINS.round(2).tolist(),
        "counts": counts.astype(int).tolist(),
        "mean": float(alpha.mean()),
        "quantiles": {f"{q:g}": float(np.quantile(alpha, q)) for q in (0.05, 0.25, 0.5, 0.75, 0.95)},
        "agrees_with_gat": float((fused == (frame["gat_prob"].to_numpy(float) > GAT_THRESHOLD)).mean()),
        "agrees_with_vgae": float((fused == (frame["vgae_score"].to_numpy(float) > GAT_THRESHOLD)).mean()),
    }


def evaluate_scored_splits(
    val: pd.DataFrame,
    tests: Mapping[str, pd.DataFrame],
    fpr_targets: Sequence[float] = FPR_TARGETS,
    gat_threshold: float = GAT_THRESHOLD,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Metrics for validation, every test scenario and all test scenarios pooled.

    Returns the metrics document and one long table of per-window scores and decisions (column ``split``:
    ``val`` or ``test``; ``scenario``: ``val`` or the scenario name).
    """
    fpr_targets = checked_fpr_targets(fpr_targets)
    if val.empty:  # input errors naming the argument: a direct caller gets one line
        raise EvaluationSettingsError(
            "evaluate_scored_splits's val holds no scored window: the validation split is empty and the VGAE "
            "threshold cannot be chosen"
        )
    check_scored(val, "validation")
    check_scenario_names(tests, "evaluate_scored_splits's tests")
    for scenario, frame in tests.items():
        if frame.empty:
            raise EvaluationSettingsError(
                f"evaluate_scored_splits's tests[{scenario!r}]: test scenario {scenario!r} has no graphs; "
                "every test scenario needs at least one scored window"
            )
        check_scored(frame, f"test scenario {scenario!r}")
    choice = youden_threshold(val["label"], val["vgae_score"])
    frames = []

    def assess(frame: pd.DataFrame, split: str, scenario: str) -> dict[str, Any]:
        decisions = model_decisions(frame, choice.threshold, gat_threshold)
        labels = frame["label"].to_numpy()
        out = frame.loc[:, list(SCORE_COLUMNS)].copy()
        out.insert(0, "scenario", scenario)
        out.insert(0, "split", split)
        out["vgae_pred"] = decisions["vgae"][1]
        out["gat_pred"] = decisions["gat"][1]
        frames.append(out)
        return {m: binary_metrics(labels, s, p, fpr_targets) for m, (s, p) in decisions.items()}

    document: dict[str, Any] = {
        "thresholds": {
            "vgae": choice.as_dict(),
            "gat": gat_threshold,
            "fusion": "fusion_pred from the DQN",
            **{model: "fused score > 0.5" for model in FIXED_ALPHA_MODELS},
        },
        "val": assess(val, "val", "val"),
        "test": {},
        "fusion_alpha": {"val": alpha_statistics(val)},
    }
    for scenario, frame in tests.items():
        document["test"][scenario] = assess(frame, "test", scenario)
        document["fusion_alpha"][scenario] = alpha_statistics(frame)
    if tests:
        pooled = pd.concat(list(tests.values()), ignore_index=True)
        decisions = model_decisions(pooled, choice.threshold, gat_threshold)
        labels = pooled["label"].to_numpy()
        document["test_pooled"] = {
            m: binary_metrics(labels, s, p, fpr_targets) for m, (s, p) in decisions.items()
        }
        document["fusion_alpha"]["test_pooled"] = alpha_statistics(pooled)
    scores = pd.concat(frames, ignore_index=True)
    scores["label"] = scores["label"].astype("int64")
    return document, scores


def evaluate_detector(
    vgae: Any,
    gat: Any,
    dqn: Any,
    val_graphs: Sequence[Any],
    test_sets: Mapping[str, Sequence[Any]],
    *,
    score_fn: Callable[..., pd.DataFrame] | None = None,
    batch_size: int = 256,
    device: Any = "cpu",
    fpr_targets: Sequence[float] = FPR_TARGETS,
    speed: Mapping[str, int] | None = None,
    hardware: str | None = None,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Score one trained detector (VGAE, GAT, DQN) on validation and every test scenario and evaluate it.

    The document records where it ran, as evaluate_files' metrics.json does: ``device``, ``hardware`` (what the
    speed was measured on: ``hardware`` when given, else :func:`kdgat.runtime.device_name` of ``device``) and
    ``torch`` (:func:`kdgat.runtime.torch_build`)."""
    batch_size, speed = checked_batch_size(batch_size), checked_speed(speed)  # before scoring, not after
    fpr_targets = checked_fpr_targets(fpr_targets)
    recorded = measured_on(device, hardware)  # before scoring, not after
    if score_fn is None:
        from kdgat.inference import score_graphs as score_fn
    # Input errors naming the argument (evaluate_files names the file first): a direct caller gets one line.
    if not val_graphs:
        raise EvaluationSettingsError(
            "evaluate_detector's val_graphs is empty: the VGAE's threshold is chosen on the validation graphs "
            "(val.pt's); give at least one"
        )
    if not test_sets:
        # evaluate_files refuses a test.pt without scenarios: a document without test results is no evaluation
        raise EvaluationSettingsError(
            "evaluate_detector's test_sets holds no test scenario: give {scenario: graphs} for at least one; the "
            "evaluation reports test results (never validation's)"
        )
    empty = [scenario for scenario, graphs in test_sets.items() if not len(graphs)]
    if empty:  # fusion_inputs' own refusal, after validation was scored, names no scenario
        raise EvaluationSettingsError(
            f"evaluate_detector's test_sets[{empty[0]!r}] has no graphs: every test scenario needs at least one"
        )
    check_scenario_names(test_sets, "evaluate_detector's test_sets")  # before scoring, not after
    log.info("scoring %d validation graphs", len(val_graphs))
    val = score_fn(vgae, gat, dqn, list(val_graphs), batch_size=batch_size, device=device)
    tests = {}
    for scenario, graphs in test_sets.items():
        log.info("scoring %d graphs of test scenario %s", len(graphs), scenario)
        tests[scenario] = score_fn(vgae, gat, dqn, list(graphs), batch_size=batch_size, device=device)
    document, scores = evaluate_scored_splits(val, tests, fpr_targets)
    from kdgat.models import count_parameters  # torch: imported for a detector, not for summaries

    document["parameters"] = {
        "vgae": count_parameters(vgae),
        "gat": count_parameters(gat),
        "dqn": count_parameters(dqn),
    }
    document["parameters"]["total"] = sum(document["parameters"].values())
    log.info("measuring inference speed")
    document["speed"] = measure_inference_speed(
        vgae, gat, dqn, list(val_graphs), score_fn, batch_size=batch_size, device=device, **dict(speed or {})
    )
    return {**recorded, **document}, scores


# One evaluation at a time writes a set of outputs (two at once mixed their files and stashed the other's)
@locking_outputs("metrics", "evaluation output")
def evaluate_files(
    *,
    vgae: str | os.PathLike,
    gat: str | os.PathLike,
    dqn: str | os.PathLike,
    val: str | os.PathLike,
    test: str | os.PathLike,
    outputs: Mapping[str, str | os.PathLike],
    dataset: str,
    variant: str,
    seed: int | None = None,
    batch_size: int = 256,
    device: str = "auto",
    fpr_targets: Sequence[float] = FPR_TARGETS,
    speed: Mapping[str, int] | None = None,
    stash_dir: str | os.PathLike | None = None,
    threads: int | None = None,
    tracking: Any = None,
    record_restore: Callable[[Path | None], Any] = lambda entry: None,
) -> dict[str, Any]:
    """Evaluate one variant of one dataset from files; write metrics.json, scores.parquet and three SVGs.

    With ``stash_dir``, finished outputs are also committed to a :class:`ResultStash` keyed by the contents of
    every input and the parameters, and restored from it (without recomputing) when the same evaluation is asked
    for again, e.g. after a sibling in the same Snakemake group job failed and Snakemake deleted these outputs;
    ``record_restore`` is called with the entry restored from, or None once computed (the wrapper's mark).
    With ``tracking`` (``kd_gat.tracking``, kdgat.tracking), the outputs are also attached to the tracked training
    runs of the three models (:func:`kdgat.tracking.log_evaluation`).
    """
    from kdgat.tracking import log_evaluation

    models_evaluated = {"vgae": vgae, "gat": gat, "dqn": dqn}

    missing = [name for name in EVALUATION_OUTPUTS if not outputs.get(name)]
    if missing:
        raise RuleItemError(
            f"evaluate_files needs the outputs {list(EVALUATION_OUTPUTS)}, a path each (the evaluate_detector "
            f"wrapper's output.<name>, evaluate_files' outputs[<name>]); missing {missing}"
        )
    # before minutes of scoring, not after
    fpr_targets, speed = checked_fpr_targets(fpr_targets), checked_speed(speed)
    batch_size, seed = checked_batch_size(batch_size), checked_seed(seed)
    inputs = input_files({"vgae": vgae, "gat": gat, "dqn": dqn, "val": val, "test": test}, "the evaluation")
    # torch: not imported for summaries
    from kdgat.runtime import EVALUATION_DEVICE, device_name, select_device, torch_build

    torch_device = select_device(device, EVALUATION_DEVICE)
    params = {
        "dataset": dataset,
        "variant": variant,
        "seed": seed,
        "batch_size": batch_size,
        "device": str(torch_device),  # the one used, as metrics.json records it: `auto` is CPU or GPU
        "hardware": device_name(torch_device, threads),  # what the speed figures were measured on
        "torch": torch_build(),  # and with: an upgrade of torch or CUDA recomputes
        "fpr_targets": list(fpr_targets),
        "speed": dict(speed or {}),
        # The code that computed an entry: another release recomputes instead of restoring its numbers.
        "library_code": library_code_digest(),
    }
    stash = ResultStash(stash_dir).prepare() if stash_dir else None
    # metrics.json last, as written below; the names (suffixes, formats) in the key: each set has its own entry
    order = sorted(EVALUATION_OUTPUTS, key="metrics".__eq__)
    stash_names = {f"{name}{Path(outputs[name]).suffix}": outputs[name] for name in order}
    keyed = params | {"outputs": sorted(stash_names)}  # what a miss names, part by part (stash_parts)
    parts = stash_parts(inputs, keyed) if stash else {}
    key = stash_key(inputs, keyed, parts) if stash else None
    if stash and stash.restore(key, stash_names, parts):
        record_restore(stash.entry(key))  # a restore computed nothing: its benchmark is no evaluation's
        unchanged = "inputs, params and library code unchanged"
        log.info(
            "restored %s from the result stash %s (%s)", _run_name(dataset, variant, seed), key, unchanged
        )
        log_evaluation(tracking, models_evaluated, {name: outputs[name] for name in TRACKED_OUTPUTS})
        return load_json(outputs["metrics"])

    import torch

    from kdgat.graph_store import check_graph_splits, graph_header, load_graph_sets, load_graphs
    from kdgat.model_store import load_model

    if threads:
        torch.set_num_threads(threads)
    log.info("evaluating %s on %s", _run_name(dataset, variant, seed), torch_device)
    models = {}
    for name in ("vgae", "gat", "dqn"):
        try:
            models[name] = load_model(inputs[name], device=torch_device)
        except Exception as error:
            # a file that is no model of this version is the user's to fix; anything else keeps its traceback
            kind = FileContentError if isinstance(error, InputError) else ValueError
            raise kind(
                f"{inputs[name]}: cannot load the {name} model ({type(error).__name__}: {error})"
            ) from error
    # each file's header read once, for both checks; a train.pt given as val.pt would choose the threshold
    headers = {"val": graph_header(val), "test": graph_header(test)}
    check_graph_splits({"val": val, "test": test}, headers)
    val_graphs = load_graphs(val)
    if not val_graphs:
        # preprocess writes an empty val.pt for val_fraction 0; evaluate_detector's own refusal names no file or key
        raise FileContentError(
            f"{val}: holds no validation graph; the VGAE's threshold is chosen on validation windows, so "
            "preprocess.val_fraction must be > 0 for the graphs an evaluation is given"
        )
    test_sets = load_graph_sets(test)
    if not test_sets:
        raise FileContentError(
            f"{test}: holds no test scenario; the evaluation reports test results (never validation's)"
        )
    check_scenario_names(test_sets, str(test), FileContentError, "rename its test folder")
    empty = [scenario for scenario, graphs in test_sets.items() if not graphs]
    if empty:
        raise FileContentError(f"{test}: test scenario {empty[0]!r} holds no graph; it cannot be evaluated")
    graphs = {val: val_graphs, test: sum(test_sets.values(), [])}
    check_detector_files(models, inputs, variant, graphs, headers)
    try:
        document, scores = evaluate_detector(
            models["vgae"],
            models["gat"],
            models["dqn"],
            val_graphs,
            test_sets,
            batch_size=batch_size,
            device=torch_device,
            fpr_targets=fpr_targets,
            speed=speed,
            hardware=params["hardware"],  # the stash key's: the two cannot disagree
        )
    except NonFiniteScoresError as error:
        # the split and column alone name neither the evaluation nor the file to retrain
        raise NonFiniteScoresError(
            f"{inputs[error.model]} ({_run_name(dataset, variant, seed)}, the {error.model} model): {error}",
            error.model,
        ) from None
    # Where it ran (`auto` says whether on the GPU), the hardware and torch build the speed was measured on:
    # evaluate_detector's own records, from the same functions as the stash key's
    document = {"dataset": dataset, "variant": variant, "seed": seed, **document}
    title = f"{dataset} {VARIANT_TITLES.get(variant, variant)}{'' if seed is None else f' seed {seed}'}:"
    write_table(scores, outputs["scores"])
    plot_roc(scores, outputs["roc"], title)
    plot_pr(scores, outputs["pr"], title)
    plot_confusion(document, outputs["confusion"], title)
    write_json(document, outputs["metrics"])  # last: its presence means the evaluation finished
    record_restore(None)
    if stash and (entry := stash.commit(key, stash_names, parts)):  # None: commit logged why not
        log.info("committed results to the stash %s", entry)
    log_evaluation(tracking, models_evaluated, {name: outputs[name] for name in TRACKED_OUTPUTS})
    return document


def _paths(paths) -> list:
    """A list of paths from one path or several (a Snakemake input with one file is a single string)."""
    return [paths] if isinstance(paths, str | os.PathLike) else list(paths)


def seeds_text(documents: Sequence[Mapping]) -> str:
    """'seed 42' or 'seeds 42, 43, 44': the seeds of the evaluations' metrics ('' when none records one)."""
    seeds = sorted({document["seed"] for document in documents if document.get("seed") is not None})
    if not seeds:
        return ""
    return f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"


def _run_name(dataset: str, variant: str, seed: int | None) -> str:
    """``lab/teacher seed 3``, or ``lab/teacher (no seed)`` for an evaluation given none (not ``seed None``)."""
    return f"{dataset}/{variant} " + ("(no seed)" if seed is None else f"seed {seed}")


def summarize_files(
    *,
    metrics: Sequence[str | os.PathLike],
    csv: str | os.PathLike,
    markdown: str | os.PathLike,
    chart: str | os.PathLike,
    scenarios: str | os.PathLike,
    baselines: Sequence[str | os.PathLike] = (),
    histories: Sequence[str | os.PathLike] = (),
    history_keys: Sequence[str] = (),
    curves: str | os.PathLike | None = None,
    title: str = "",
) -> pd.DataFrame:
    """The summaries over seeds (kdgat.evaluation.summary) from metrics.json and baselines.json files: the
    per-scenario table (``scenarios``, one row per dataset × variant × seed × scenario × model), the
    teacher-vs-students table (``csv``), all of it in Markdown, and the teacher-vs-student chart.

    ``histories`` are training history.csv files, ``history_keys`` name each as ``"<variant>/<stage>"`` (same
    order); with ``curves`` they are drawn. ``title`` (e.g. the dataset) heads the Markdown and the charts;
    the Markdown heading and the size chart name the seeds of the metrics, which every table is over (the
    histories may be of one seed only: the workflow draws the first seed's).
    """
    metrics, baselines, histories = (_paths(p) for p in (metrics, baselines, histories))
    keyed = keyed_histories(histories, list(history_keys), curves)
    if curves is not None:
        for path in keyed.values():
            read_history(path)  # a file that is no history is refused before any output is written, not after
    if not metrics:
        raise EvaluationSettingsError(
            "no metrics.json given: the summary is over the evaluations' metrics.json files"
        )
    documents = []
    evaluated: dict[tuple[Any, Any, Any], str | os.PathLike] = {}
    for path in metrics:
        document = loaded_document(
            path, METRICS_KEYS, "metrics", "the summary needs test results; it never falls back to validation"
        )
        checked_metrics(path, document)
        key = (document["dataset"], document["variant"], document.get("seed"))
        if key in evaluated:
            # Two evaluations of one seed would count as two seeds and narrow every interval.
            raise FileContentError(
                f"{path} and {evaluated[key]} are both {key[0]}/{key[1]} seed {key[2]}: each seed is evaluated once"
            )
        evaluated[key] = path
        documents.append(document)
    baseline_documents = []
    for path in baselines:
        baseline_documents.append(loaded_baselines(path))
    check_one_model_size_per_variant(list(zip(metrics, documents, strict=True)))
    check_one_set_of_models_per_variant(list(zip(metrics, documents, strict=True)))
    check_one_test_set_per_dataset(
        list(zip(metrics, documents, strict=True)), list(zip(baselines, baseline_documents, strict=True))
    )
    per_scenario = scenario_table(documents, baseline_documents)
    pooled = pooled_table(documents, baseline_documents)
    table = variant_summary(documents, pooled)
    log.info(
        "summary of %d evaluations (%s)",
        len(documents),
        ", ".join(
            f"{d}/{v} x{n}"
            for d, v, n in zip(table["dataset"], table["variant"], table["seeds"], strict=True)
        ),
    )
    write_table(per_scenario, scenarios)
    write_table(table, csv)
    text = summary_markdown(
        table,
        models=model_summary(per_scenario, pooled),
        scenarios=scenario_summary(per_scenario),
        distillation=distillation_summary(pooled),
        fusion=fusion_summary(per_scenario),
        alpha=alpha_summary(documents),
        floors=floor_table(per_scenario),
        not_applicable={d["dataset"]: d.get("not_applicable") or {} for d in baseline_documents},
    )
    seeds = seeds_text(documents)
    heading = f"# {title} evaluation summary over {seeds}" if seeds else f"# {title} evaluation summary"
    write_text(f"{heading}\n\n{text}" if title else text, markdown)
    plot_size_f1(table, chart, title, seeds=seeds)
    if curves is not None:
        plot_training_curves(keyed, curves, title)
    return table
