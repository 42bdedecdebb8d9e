"""Checks of what an evaluation and a summary are given, each naming the file at fault: the three model files of
a detector against each other and the graphs (:func:`check_detector_files`), and the metrics.json and
baselines.json files a summary reads (:func:`loaded_document`, :func:`checked_metrics`, :func:`loaded_baselines`,
:func:`check_metric_blocks`, :func:`check_one_test_set_per_dataset`). Each refusal is a
:class:`kdgat.files.FileContentError` (a ValueError): the files given are the user's to fix.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping, Sequence
from typing import Any

from kdgat.chain import MODELS, STAGES, VARIANTS
from kdgat.evaluation.baselines import BASELINES
from kdgat.evaluation.metrics import EvaluationSettingsError
from kdgat.evaluation.summary import METRIC_COLUMNS
from kdgat.files import FileContentError, load_json


def check_detector_files(
    models: Mapping[str, Any],
    paths: Mapping[str, str | os.PathLike],
    variant: str,
    graphs: Mapping[str | os.PathLike, Sequence[Any]],
    headers: Mapping[str, Mapping[str, str | None]] = {},  # noqa: B006 - read only
) -> None:
    """A ValueError naming the file when the three loaded models (``{"vgae": ..., "gat": ..., "dqn": ...}``) are
    not one detector for these graphs: a model file of another stage given for a stage (swapped inputs), a model
    trained as another variant than ``variant`` (the variant its model.pt records), or a VGAE and a GAT of
    different vocabularies, or graphs (``{path: graphs}``) holding a CAN-ID index outside the models' vocabulary
    (checkpoints of another preprocess run). Without this check torch fails with an IndexError or an
    AttributeError that names no file, or the numbers of a mixed detector are reported under one variant. Graphs
    and models of another preprocess run of as many CAN IDs are refused by their vocabulary digests
    (``kdgat.training.data.check_one_preprocess_run``, given the graph files' ``headers`` read already), naming
    both files."""
    from kdgat.files import load_torch
    from kdgat.inference import largest_id_index
    from kdgat.model_store import MODEL_CLASSES

    for name, model in models.items():
        if not isinstance(model, MODEL_CLASSES[name]):
            found = next((kind for kind, cls in MODEL_CLASSES.items() if isinstance(model, cls)), "unknown")
            raise FileContentError(
                f"{paths[name]}: given as the {name} model of the detector, but it is a {found} model file"
            )
    for name in models:
        payload = load_torch(paths[name], "a kd_gat model file")
        recorded = payload.get("variant") if isinstance(payload, dict) else None
        if recorded is not None and recorded != variant:
            raise FileContentError(
                f"{paths[name]}: a {name} model trained as variant {recorded!r}, evaluated as variant {variant!r}; "
                "give the three model files of one variant"
            )
    vocabularies = {"vgae": models["vgae"].num_ids, "gat": models["gat"].embedding.num_embeddings}
    if vocabularies["vgae"] != vocabularies["gat"]:
        raise FileContentError(
            f"{paths['vgae']} knows {vocabularies['vgae']} CAN-ID indices but {paths['gat']} knows "
            f"{vocabularies['gat']}: models of different vocabularies (preprocess metadata num_ids) are no detector"
        )
    for path, graph_list in graphs.items():
        largest = largest_id_index(graph_list)
        if largest >= vocabularies["vgae"]:
            raise FileContentError(
                f"{path}: a graph holds CAN-ID index {largest}, outside the {vocabularies['vgae']} indices of "
                f"{paths['vgae']} and {paths['gat']}: the models were trained on another vocabulary "
                "(preprocess metadata num_ids); evaluate them on the graphs of their own preprocess run"
            )
    from kdgat.training.data import check_one_preprocess_run

    # graphs of another run of as many CAN IDs: the same index means another ID, and nothing above fails
    check_one_preprocess_run(
        {name: paths[name] for name in ("val", "test") if name in paths},
        {name: paths[name] for name in models},
        headers=headers,
    )


# The names metrics.json keeps for splits (fusion_alpha keys the splits and the scenarios alike).
RESERVED_SCENARIOS = {"val": "the validation split", "test_pooled": "all test scenarios pooled"}


def check_scenario_names(
    tests: Mapping[str, Any], where: str, error: type[ValueError] = EvaluationSettingsError, fix: str = ""
) -> None:
    """An ``error`` naming ``where`` (the argument or the file) when a test scenario has a name metrics.json keeps
    for a split: one would silently replace the other's fusion_alpha entry (or lose its own)."""
    reserved = sorted(set(tests) & set(RESERVED_SCENARIOS))
    if reserved:
        raise error(
            f"{where}: a test scenario is named {reserved[0]!r}, which metrics.json keeps for "
            f"{RESERVED_SCENARIOS[reserved[0]]}; {fix or 'rename the scenario'}"
        )


# What the summaries read from each metrics.json and baselines.json (dotted: nested keys).
METRICS_KEYS = (
    "dataset", "variant", "test", "test_pooled", "parameters", "speed.fusion.latency_ms", "speed.fusion.graphs_per_s",
    *(f"parameters.{name}" for name in ("vgae", "gat", "dqn", "total")),
)  # fmt: skip
# What the summaries read from each model's metrics in a "test" scenario and in "test_pooled": numbers, or null
# where a metric is undefined (metrics.py).
METRIC_NUMBERS = tuple(METRIC_COLUMNS)
BASELINES_KEYS = ("dataset", "test", "test_pooled")  # and test_pooled.<each baseline applicable>


def lookup(document: Mapping[str, Any], dotted: str) -> Any:
    """``document["a"]["b"]`` for ``"a.b"``; None where a level is missing."""
    value: Any = document
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def loaded_document(path, keys: Sequence[str], what: str, hint: str) -> dict[str, Any]:
    """The JSON document at ``path``; a ValueError naming it and every one of ``keys`` it lacks."""
    document = load_json(path)
    missing = [key for key in keys if lookup(document, key) is None]
    if missing:
        raise FileContentError(f"{path}: {what} lack {missing} ({hint})")
    return document


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def metric_blocks(document: Mapping[str, Any]) -> dict[str, Any]:
    """A metrics or baselines document's blocks of model results by the name a message gives them:
    ``test.<scenario>`` for each test scenario, then ``test_pooled``."""
    blocks = {f"test.{scenario}": models for scenario, models in document["test"].items()}
    return {**blocks, "test_pooled": document["test_pooled"]}


def check_metric_blocks(path, document: Mapping[str, Any], what: str, required: Sequence[str] = ()) -> None:
    """A ValueError naming ``path`` and the block when ``test`` holds no scenario, when a test scenario or
    ``test_pooled`` lacks one of ``required`` (the models the summary reads from every block: a seed without them
    would silently be left out of their intervals), or when a model's metrics there are not a mapping holding
    every one of ``METRIC_NUMBERS`` as a number or null (a file edited by hand: a dropped column became NaN, a
    null block or a quoted number a traceback)."""
    test = document["test"]
    if not isinstance(test, Mapping) or not test:
        raise FileContentError(
            f"{path}: the {what}' 'test' holds no test scenario ({test!r}); expected one per scenario"
        )
    for where, models in metric_blocks(document).items():
        if not isinstance(models, Mapping) or not models:
            raise FileContentError(f"{path}: {where} must map each model to its metrics; found {models!r}")
        absent = [model for model in required if model not in models]
        if absent:
            raise FileContentError(
                f"{path}: {where} lacks the results of {absent} (a {what} file edited by hand?)"
            )
        for model, metrics in models.items():
            if not isinstance(metrics, Mapping):
                raise FileContentError(
                    f"{path}: {where}.{model} must be the model's metrics; found {metrics!r}"
                )
            missing = [key for key in METRIC_NUMBERS if key not in metrics]
            if missing:
                raise FileContentError(
                    f"{path}: {where}.{model} lacks {missing} (a metrics file edited by hand?)"
                )
            bad = {
                key: metrics[key]
                for key in METRIC_NUMBERS
                if not (metrics[key] is None or (is_number(metrics[key]) and math.isfinite(metrics[key])))
            }
            if bad:
                raise FileContentError(
                    f"{path}: {where}.{model} holds {bad}; expected finite numbers (null where undefined)"
                )
            check_defined(path, f"{where}.{model}", metrics)


# The metrics the summaries' intervals read that kdgat.evaluation.metrics always defines, and the windows that
# define them: a seed where one is null or NaN anyway would drop out of its interval, which the summary's seed
# count would still claim.
DEFINED_WHEN = {
    "f1": ("n_attack", "attack windows"),
    "recall": ("n_attack", "attack windows"),
    "specificity": ("n_normal", "normal windows"),
    "roc_auc": ("both", "both attack and normal windows"),
}


def check_defined(path, where: str, metrics: Mapping[str, Any]) -> None:
    """A FileContentError naming ``path``, the block and model when ``n`` or ``n_attack`` is null, or a metric of
    ``DEFINED_WHEN`` is null where its windows are there (a file edited by hand, or of another tool)."""
    n, n_attack = metrics["n"], metrics["n_attack"]
    if n is None or n_attack is None:
        raise FileContentError(
            f"{path}: {where} has n {n!r} and n_attack {n_attack!r}; expected window counts"
        )
    present = {"n_attack": n_attack > 0, "n_normal": n - n_attack > 0, "both": 0 < n_attack < n}
    undefined = [key for key, (when, _) in DEFINED_WHEN.items() if present[when] and metrics.get(key) is None]
    if undefined:
        windows = ", ".join(f"{key} needs {DEFINED_WHEN[key][1]}" for key in undefined)
        raise FileContentError(
            f"{path}: {where} has {undefined} null, but its {n} windows hold {n_attack} attack windows ({windows}): "
            "defined there; a seed without them would drop out of their intervals over seeds (a metrics file edited "
            "by hand?)"
        )


def applicable_baselines(path, document: Mapping[str, Any]) -> tuple[str, ...]:
    """The baselines a baselines.json must hold results of: every one but those its ``not_applicable`` names (a
    mapping of baseline to the reason the training split could not fit it; absent in older files: none). A
    ValueError naming ``path`` when it is no such mapping."""
    skipped = document.get("not_applicable") or {}
    if (
        not isinstance(skipped, Mapping)
        or not set(skipped) <= set(BASELINES)
        or not all(isinstance(reason, str) for reason in skipped.values())
    ):
        raise FileContentError(
            f"{path}: not_applicable must map some of {list(BASELINES)} to the reason each is not applicable; "
            f"found {skipped!r}"
        )
    return tuple(name for name in BASELINES if name not in skipped)


def loaded_baselines(path) -> dict[str, Any]:
    """The baselines.json at ``path`` after the checks the summaries rely on: what they read (``BASELINES_KEYS``
    and the pooled results of every baseline applicable), each block's metrics; a ValueError naming ``path``."""
    hint = "written by an older version? rerun the evaluation_baselines rule"
    document = loaded_document(path, BASELINES_KEYS, "baselines", hint)
    applicable = applicable_baselines(path, document)
    loaded_document(path, [f"test_pooled.{name}" for name in applicable], "baselines", hint)
    check_metric_blocks(path, document, "baselines", applicable)
    return document


def is_seed(seed: Any) -> bool:
    """A training seed as metrics.json records it: an integer, or None where no seed was given."""
    return seed is None or (isinstance(seed, numbers.Integral) and not isinstance(seed, bool))


def checked_seed(seed: Any) -> int | None:
    """evaluate_detector's ``seed`` before anything is scored: text or a float was written into metrics.json and
    refused only by the summary over seeds (checked_metrics), after every evaluation had run."""
    if not is_seed(seed):
        raise EvaluationSettingsError(
            f"params.seed must be an integer (the training seed of the models, recorded in metrics.json) or absent; "
            f"got {type(seed).__name__} {seed!r}"
        )
    return None if seed is None else int(seed)


def checked_metrics(path, document: Mapping[str, Any]) -> Mapping[str, Any]:
    """``document`` (a loaded metrics.json) after the checks the summaries rely on; a ValueError naming ``path``."""
    if document["variant"] not in VARIANTS:
        raise FileContentError(f"{path}: variant {document['variant']!r} is not one of {list(VARIANTS)}")
    seed = document.get("seed")
    if not is_seed(seed):
        raise FileContentError(f"{path}: seed {seed!r} must be an integer (the training seed) or absent")
    numbers = [*(f"parameters.{n}" for n in ("vgae", "gat", "dqn", "total")), "speed.fusion.latency_ms",
               "speed.fusion.graphs_per_s"]  # fmt: skip
    bad = {key: lookup(document, key) for key in numbers if not is_number(lookup(document, key))}
    if bad:
        raise FileContentError(f"{path}: {bad} must be numbers")
    hardware = document.get("hardware")
    if hardware is not None and not isinstance(hardware, str):  # the summary's column would show its repr
        raise FileContentError(
            f"{path}: hardware {hardware!r} must be a string naming what the speed was measured on (e.g. 'NVIDIA "
            "H100 80GB HBM3'), or absent"
        )
    check_metric_blocks(path, document, "metrics", MODELS)
    return document


def scenario_counts(document: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{scenario: (windows, attack windows)}`` of a metrics.json or baselines.json (its first model's counts)."""
    return {
        scenario: next(((m.get("n"), m.get("n_attack")) for m in models.values()), (None, None))
        for scenario, models in document["test"].items()
    }


def check_one_test_set_per_dataset(
    metrics: Sequence[tuple[Any, Mapping]], baselines: Sequence[tuple[Any, Mapping]]
):
    """A ValueError naming the files when the evaluations and baselines of one dataset were not computed on one
    test set (other scenarios, or other window counts: a test.pt rebuilt between them, results of a partial run
    mixed with older ones), when two baselines.json are of one dataset, or when baselines are given for some of the
    evaluated datasets and not others (or for a dataset no metrics.json is of). Their margins and intervals would
    compare different windows, or silently have no baseline."""
    reference: dict[Any, tuple[Any, dict]] = {}
    for path, document in metrics:
        dataset, tests = document["dataset"], scenario_counts(document)
        first, expected = reference.setdefault(dataset, (path, tests))
        if tests != expected:
            raise FileContentError(
                f"{path} and {first} are evaluations of dataset {dataset!r} on different test sets "
                f"({{scenario: (windows, attack windows)}}: {tests} and {expected}); was test.pt rebuilt between "
                "them? rerun the older evaluations"
            )
    given: dict[Any, Any] = {}
    for path, document in baselines:
        dataset = document["dataset"]
        if dataset in given:
            raise FileContentError(
                f"{path} and {given[dataset]} are both baselines of dataset {dataset!r}: give one"
            )
        if dataset not in reference:
            raise FileContentError(
                f"{path}: baselines of dataset {dataset!r}, of which no metrics.json was given "
                f"(datasets evaluated: {sorted(reference)})"
            )
        given[dataset] = path
        first, expected = reference[dataset]
        tests = scenario_counts(document)
        if tests != expected:
            raise FileContentError(
                f"{path}: the baselines of dataset {dataset!r} were computed on another test set than {first} "
                f"({{scenario: (windows, attack windows)}}: {tests} and {expected}); rerun the baselines"
            )
    without = sorted(set(reference) - set(given))
    if baselines and without:
        raise FileContentError(
            f"no baselines.json given for the evaluated datasets {without} (given for {sorted(given)})"
        )


def check_one_set_of_models_per_variant(metrics: Sequence[tuple[Any, Mapping]]) -> None:
    """A ValueError naming two files when the seeds of one dataset and variant hold different models in a test
    block (a fixed-alpha model left out of one seed's metrics.json, say): the summary's interval of a model
    missing from one seed would silently be over the others, under the variant's count of seeds."""

    def models_by_block(document: Mapping) -> dict[str, set]:
        return {where: set(models) for where, models in metric_blocks(document).items()}

    first: dict[tuple[Any, Any], tuple[Any, dict[str, set]]] = {}
    for path, document in metrics:
        key = (document["dataset"], document["variant"])
        reference, expected = first.setdefault(key, (path, models_by_block(document)))
        for where, models in models_by_block(document).items():
            if where in expected and models != expected[where]:
                raise FileContentError(
                    f"{path} and {reference} hold different models in {where} of {key[0]}/{key[1]} "
                    f"({sorted(models)} and {sorted(expected[where])}): each seed's metrics.json must hold every "
                    "model of its variant, or that model's interval is silently over fewer seeds; rerun the "
                    "evaluation of the seed that lacks it"
                )


def check_one_model_size_per_variant(metrics: Sequence[tuple[Any, Mapping]]) -> None:
    """A ValueError naming two files when the seeds of one dataset and variant evaluated models of different
    sizes (``parameters``): a preset changed between seeds (a partial rerun after editing kd_gat.teacher_preset,
    say). The summary reports one size per variant and its F1 over seeds: it would average different models."""
    first: dict[tuple[Any, Any], tuple[Any, Any]] = {}
    for path, document in metrics:
        key = (document["dataset"], document["variant"])
        reference, parameters = first.setdefault(key, (path, document["parameters"]))
        if document["parameters"] != parameters:
            raise FileContentError(
                f"{path} and {reference} are {key[0]}/{key[1]} models of different sizes ({document['parameters']} "
                f"and {parameters} parameters): the seeds of one variant must share its preset; rerun the older ones"
            )


def keyed_histories(
    histories: Sequence[str | os.PathLike], history_keys: Sequence[str], curves: str | os.PathLike | None
) -> dict[tuple[str, str], str | os.PathLike]:
    """summarize_files' training histories by (variant, stage), checked before anything is read. Only the
    summarize_evaluation wrapper can give them amiss (``kdgat summarize`` checks its --history pairs first), so the
    messages name its params, inputs and outputs: params.history_keys, input.history, output.curves."""
    if len(histories) != len(history_keys):
        raise EvaluationSettingsError(
            f"params.history_keys ({len(history_keys)}) must name every history.csv of input.history "
            f"({len(histories)}), in the same order"
        )
    keyed: dict[tuple[str, str], str | os.PathLike] = {}
    for key, path in zip(history_keys, histories, strict=True):
        variant, _, stage = key.partition("/")
        if variant not in VARIANTS or stage not in STAGES:
            raise EvaluationSettingsError(
                f"history key {key!r} must be '<variant>/<stage>' with {VARIANTS} and {STAGES}"
            )
        if (variant, stage) in keyed:
            # one panel per key: the second file would replace the first without a word
            raise EvaluationSettingsError(
                f"history key {key!r} names both {keyed[(variant, stage)]} and {path}: one file per key"
            )
        keyed[(variant, stage)] = path
    if curves is not None and not keyed:
        raise EvaluationSettingsError(
            "training curves were asked for (output.curves) but no history.csv was given (input.history)"
        )
    if keyed and curves is None:
        # the histories are read for the curves alone: without them the files were ignored without a word
        raise EvaluationSettingsError(
            f"{len(keyed)} history.csv {'files are' if len(keyed) > 1 else 'file is'} given (input.history) but no file for the training curves they "
            "are drawn in (output.curves): declare output.curves, or leave input.history out"
        )
    return keyed
