"""``kdgat preprocess``, ``kdgat evaluate`` and ``kdgat summarize``: the calls the build_graphs,
evaluate_detector and summarize_evaluation wrappers make, with the settings of the workflow's config sections."""

from __future__ import annotations

import argparse
import inspect
import logging
from collections.abc import Callable
from pathlib import Path

from kdgat.chain import DEFAULT_SEEDS, STAGES, VARIANTS
from kdgat.cli.config import (
    UsageError,
    add_tracking_options,
    apply_assignments,
    check_device,
    first_seed,
    folder,
    kd_gat_key,
    parse_pair,
    read_section,
    required,
    set_nested,
    thread_count,
    tracking_settings,
)

log = logging.getLogger("kdgat.cli")

PREPROCESS_FILES = {"train": "train.pt", "val": "val.pt", "test": "test.pt", "vocab": "vocab.json",
                    "metadata": "metadata.json"}  # fmt: skip
EVALUATION_FILES = {"metrics": "metrics.json", "scores": "scores.parquet", "roc": "roc.svg", "pr": "pr.svg",
                    "confusion": "confusion.svg"}  # fmt: skip
SUMMARY_FILES = {"csv": "summary.csv", "markdown": "summary.md", "scenarios": "scenario_metrics.csv",
                 "chart": "size_f1.svg", "curves": "training_curves.svg"}  # fmt: skip
BASELINE_FILES = {"metrics": "baselines.json", "scores": "baseline_scores.parquet"}
# Keys of the config sections that the workflow's rules use for resources, discovery and notebooks only.
PREPROCESS_WORKFLOW_KEYS = ("exclude", "mem_mb", "runtime")
EVALUATION_WORKFLOW_KEYS = ("notebook", "threads", "mem_mb", "runtime", "gpu")
# evaluate_files' parameters that the command fills from its own inputs and flags, never from the section.
EVALUATION_ARGUMENTS = (
    "vgae",
    "gat",
    "dqn",
    "val",
    "test",
    "outputs",
    "dataset",
    "variant",
    "seed",
    "threads",
    "tracking",
)


def library_options(function: Callable, section: dict, workflow_keys, where: str, exclude=()) -> dict:
    """The section's keys that are keyword parameters of ``function`` (a key that is neither one nor a
    workflow key fails, naming it)."""
    accepted = {
        name
        for name, parameter in inspect.signature(function).parameters.items()
        if parameter.kind == parameter.KEYWORD_ONLY and name not in exclude
    }
    unknown = set(section) - accepted - set(workflow_keys)
    if unknown:
        raise UsageError(
            f"{where}: unknown keys {sorted(unknown)}; known: {sorted(accepted | set(workflow_keys))}"
        )
    return {key: value for key, value in section.items() if key in accepted}


# -- preprocess ----------------------------------------------------------------------------------------------------
def add_preprocess(subparsers, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "preprocess",
        parents=[common],
        help="CAN logs of one dataset -> window graphs (train/val/test), ID vocabulary, metadata",
        description="Build the window graphs of one dataset, as the preprocess module's build_graphs rule does. "
        "The logs come from --train/--test, from --path (a folder with train_*/ and test_NN_<scenario>/ "
        "folders) or from the dataset's entry in --config (datasets.<name>: path, files, or the synthetic "
        "files the workflow generated under resources/preprocess/). Settings: the preprocess section of "
        "--config, then --set, then the flags.",
    )
    parser.add_argument("--dataset", required=True, help="dataset name (recorded in metadata.json; the "
                        "datasets.<name> entry of --config)")  # fmt: skip
    parser.add_argument(
        "--out",
        required=True,
        help="folder for train.pt, val.pt, test.pt, vocab.json, metadata.json and the further held-out splits "
        "(preprocess.held_out, e.g. fusion.pt)",
    )
    parser.add_argument(
        "--path",
        help="dataset folder laid out like HCRL/KD-GAT (train_*/, test_NN_<scenario>/; fusion_*/ as fusion "
        "captures); not with --train or --test",
    )
    parser.add_argument(
        "--train",
        nargs="+",
        action="extend",
        metavar="FILE",
        help="training log files (attack-free and with attacks; a dataset folder goes in --path)",
    )
    parser.add_argument("--test", nargs="+", action="extend", default=[], metavar="SCENARIO=FILE",
                        help="test logs with their scenario (at least one with --train); a scenario may have "
                        "several files")  # fmt: skip
    parser.add_argument("--format", help="log format: auto (sniffed per file) or a registered format name "
                        "(datasets.<name>.format)")  # fmt: skip
    parser.add_argument("--bad-rows", choices=("error", "skip"), help="a malformed row fails the step or is "
                        "skipped and counted (preprocess.bad_rows)")  # fmt: skip
    parser.add_argument(
        "--window-size", type=int, help="CAN messages per window graph (preprocess.window_size)"
    )
    parser.add_argument("--stride", type=int, help="messages between window starts (preprocess.stride)")
    parser.add_argument("--val-fraction", type=float, help="share of the training graphs held out for "
                        "validation (preprocess.val_fraction)")  # fmt: skip
    parser.add_argument("--time-blocks", type=int, help="time blocks per training capture, of which whole blocks "
                        "are held out for validation (preprocess.time_blocks)")  # fmt: skip
    parser.add_argument("--seed", type=int, help="seed of the train/validation split (preprocess.seed)")
    parser.set_defaults(handler=run_preprocess, command="preprocess")


def dataset_logs(args, section: dict, config: dict) -> tuple[list, list, dict]:
    """(training logs, [(scenario, test log), ...], {held-out split: whole captures}) from the flags or the
    dataset's config entry, read by the library function the workflow uses (kdgat.layout.dataset_logs)."""
    from kdgat.layout import DEFAULT_EXCLUDE, LayoutError
    from kdgat.layout import dataset_logs as logs_of

    if args.train:
        if args.path:  # one of the two would be ignored
            raise UsageError("--train and --path both name the logs: give --train/--test or --path, not both")
        # The workflow refuses such a dataset (kdgat.layout): every model would train for nothing.
        if not args.test:
            raise UsageError(
                "--train is given without --test: give at least one test scenario as --test SCENARIO=FILE (the "
                "evaluation reads test.pt, which would hold no scenario)"
            )
        test = [parse_pair(text, "--test") for text in args.test]
        given = [(f"--train {f}", f) for f in args.train] + [(f"--test {s}={f}", f) for s, f in test]
        for flag, path in given:  # the reader's hint (datasets.<name>.path) is a config key, unknown here
            if Path(path).is_dir():
                raise UsageError(
                    f"{flag} is a folder, not a CAN log file: give --train/--test the log files, or the dataset "
                    "folder (train_*/, test_NN_<scenario>/) as --path instead of --train/--test"
                )
        return list(args.train), test, {}
    if args.path:
        spec = {"path": args.path}
    else:
        spec = (config.get("datasets") or {}).get(args.dataset) or {}
        check_dataset_entry(args.dataset, spec, args.config)
        spec = dict(spec)
    if not (spec.get("path") or spec.get("files") or (spec.get("synthetic") or {}).get("files")):
        raise UsageError(f"no logs for dataset {args.dataset!r}: give --train/--test or --path, or a --config "
                         f"whose datasets.{args.dataset} names them")  # fmt: skip
    if args.test:  # the folder or the config entry gives the test logs: these would be dropped unsaid
        source = "--path" if args.path else f"datasets.{args.dataset} of --config"
        raise UsageError(
            f"--test is given with {source}, which gives the test logs (test_NN_<scenario>/ folders, files.test "
            "or synthetic test_ files); --test goes with --train: give both, or leave --test out"
        )
    held_out = [name for name, share in (section.get("held_out") or {}).items() if share is not None]
    try:
        train, test, whole = logs_of(
            args.dataset,
            spec,
            held_out,
            section.get("exclude", DEFAULT_EXCLUDE),
            path_name="--path" if args.path else None,  # the folder came from the flag, not a config entry
        )
    except LayoutError as error:
        raise UsageError(str(error)) from None
    if (spec.get("synthetic") or {}).get("files"):
        every = [
            *train,
            *(f for files in test.values() for f in files),
            *(f for files in whole.values() for f in files),
        ]
        missing = next((log_file for log_file in every if not Path(log_file).is_file()), None)
        if missing is not None:
            raise UsageError(f"datasets.{args.dataset} is synthetic and {missing} was not generated yet "
                             "(run the workflow's generate_can rules, or give --train/--test)")  # fmt: skip
    return train, [(scenario, f) for scenario, files in test.items() for f in files], whole


# The preprocess module's config schema, which the workflow checks datasets.<name> with: a link to
# workflow/modules/preprocess/schemas/config.schema.yaml (package data: a wheel holds the file itself).
PREPROCESS_SCHEMA = Path(__file__).with_name("preprocess.schema.yaml")


def check_dataset_entry(dataset: str, spec, config_file: str | Path | None = None) -> None:
    """datasets.<dataset> of ``config_file`` against the preprocess schema's ``datasets`` part, as the workflow
    checks it (the command reads the config unchecked otherwise: a string where a list of logs belongs would be
    read letter by letter, other shapes fail with a traceback). The message names the dotted key, the file and
    what was expected, as the workflow's does."""
    import jsonschema
    import yaml

    from config_messages import config_problem

    module = yaml.safe_load(PREPROCESS_SCHEMA.read_text())
    schema = {
        "type": "object",
        "properties": {"datasets": module["properties"]["datasets"]},
        "$defs": module["$defs"],
    }
    validator = jsonschema.validators.validator_for(schema)(schema)
    problem = jsonschema.exceptions.best_match(validator.iter_errors({"datasets": {dataset: spec}}))
    if problem is not None:
        raise UsageError(config_problem(problem, [config_file] if config_file else [], {}))


def check_preprocess_section(section: dict) -> None:
    """What the preprocess schema holds the workflow's config to and the library takes more loosely: the held-out
    split names it knows (another name would write <name>.pt that no rule reads, and no fusion.pt), and exclude as
    a list of words (a string would be read letter by letter, leaving out every log with one of its letters), none
    of them empty (every log would be left out, with --train/--test logs too, where it leaves out nothing)."""
    from kdgat.layout import HELD_OUT_SPLITS, PreprocessError, exclude_words

    held_out = section.get("held_out")
    if isinstance(held_out, dict):
        unknown = sorted(set(held_out) - set(HELD_OUT_SPLITS))
        if unknown:
            raise UsageError(f"preprocess.held_out: unknown splits {unknown}; known: {list(HELD_OUT_SPLITS)}")
    exclude = section.get("exclude")
    if exclude is not None and not (isinstance(exclude, list) and all(isinstance(w, str) for w in exclude)):
        raise UsageError(
            f"preprocess.exclude must be a list of words (e.g. [suppress, masquerade]), got {exclude!r}"
        )
    try:
        exclude_words(exclude or ())
    except PreprocessError as error:
        raise UsageError(str(error)) from None


def run_preprocess(args: argparse.Namespace, callbacks=()) -> dict:
    from kdgat.preprocess import preprocess_dataset

    section, config = read_section(args.config, "preprocess")
    apply_assignments(section, args.set, "preprocess")
    for key in ("window_size", "stride", "val_fraction", "time_blocks", "seed", "bad_rows"):
        set_nested(section, (key,), getattr(args, key), "preprocess")
    check_preprocess_section(section)
    out = folder(args.out, "--out")
    train, test, whole_captures = dataset_logs(args, section, config)
    spec = (config.get("datasets") or {}).get(args.dataset) or {}
    options = library_options(
        preprocess_dataset,
        section,
        PREPROCESS_WORKFLOW_KEYS,
        "preprocess",
        exclude=("fmt", "outputs", "held_out_files"),
    )
    return preprocess_dataset(
        dataset=args.dataset,
        train_files=train,
        test_files=test,
        out_dir=out,  # the further held-out splits (preprocess.held_out) as <out>/<name>.pt
        held_out_files=whole_captures,  # fusion_NN_<what> files or folders, files.fusion
        fmt=args.format or spec.get("format", "auto"),
        outputs={name: str(out / file) for name, file in PREPROCESS_FILES.items()},
        **options,
    )


# -- evaluate ------------------------------------------------------------------------------------------------------
def add_evaluate(subparsers, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        parents=[common],
        help="score one trained detector (VGAE, GAT, DQN fusion) on validation and every test scenario",
        description="Evaluate one variant of one dataset, as the evaluation module's evaluate_<variant> rule "
        "does: metrics.json, scores.parquet and the ROC, precision-recall and confusion figures. Settings: the "
        "evaluation section of --config, then --set, then the flags.",
    )
    parser.add_argument("--dataset", required=True, help="dataset name (recorded in metrics.json)")
    parser.add_argument("--variant", choices=VARIANTS, required=True, help="which variant the models are")
    parser.add_argument("--out", required=True, help="folder for " + ", ".join(EVALUATION_FILES.values()))
    parser.add_argument("--seed", type=int, help="the training seed of the models (recorded in metrics.json; "
                        "default the first of kd_gat.seeds in --config, else 42)")  # fmt: skip
    parser.add_argument("--chain", help="kd_gat results folder of the dataset: the models are "
                        "<chain>/seed_<seed>/<variant>/{vgae,gat,dqn}/model.pt")  # fmt: skip
    parser.add_argument("--data", help="preprocess folder of the dataset (val.pt, test.pt)")
    for name in ("vgae", "gat", "dqn"):
        parser.add_argument(f"--{name}", help=f"the {name.upper()} model.pt (default from --chain)")
    parser.add_argument(
        "--val", help="validation graphs, which choose the VGAE threshold (default <data>/val.pt)"
    )
    parser.add_argument("--test", help="test scenarios' graphs (default <data>/test.pt)")
    parser.add_argument("--batch-size", type=int, help="graphs per inference batch (evaluation.batch_size)")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (evaluation.device)")
    parser.add_argument("--fpr-targets", type=float, nargs="+", action="extend", help="false-positive rates at "
                        "which the detection rate is reported (evaluation.fpr_targets)")  # fmt: skip
    parser.add_argument("--stash-dir", help="result stash: an unchanged evaluation is restored from it, not "
                        "recomputed (evaluation.stash_dir)")  # fmt: skip
    add_tracking_options(parser, "metrics.json and the figures join the training runs of the models")
    parser.set_defaults(handler=run_evaluate, command="evaluate")


def check_fpr_targets(section: dict, args: argparse.Namespace) -> None:
    """An empty list of false-positive rates (the schema's minItems: 1) would report no detection rate at all."""
    if section.get("fpr_targets") == []:
        where = "--fpr-targets" if args.fpr_targets is not None else "evaluation.fpr_targets"
        raise UsageError(f"{where} is empty: give at least one false-positive rate (e.g. [0.05, 0.01])")


def check_trained_on_data(data: Path | None, models: dict) -> None:
    """Graphs of --data scored by models trained on another preprocess output (--chain of another dataset, or the
    dataset preprocessed again) would give numbers without meaning: the window graphs' node indices are that
    output's vocabulary, and its validation and test windows need not be the ones the models never saw. The
    VGAE and GAT record the SHA-256 of the train.pt they learnt from; it must be --data's."""
    train = data / "train.pt" if data is not None else None
    if train is None or not train.is_file():
        return
    from kdgat.files import file_sha256
    from kdgat.model_store import trained_on

    digest = None
    for name in ("vgae", "gat"):
        recorded = trained_on(models[name]) if Path(models[name]).is_file() else None
        if recorded is None:  # a file written before the digest was recorded: nothing to compare
            continue
        digest = digest or file_sha256(train)
        if recorded != digest:
            raise UsageError(
                f"the {name} model {models[name]} was trained on another train.pt than {train} (another dataset "
                "or preprocess run), so the vocabulary and split of --data's graphs are not its own: give the "
                "--data folder it was trained from, or --val and --test to score those graphs anyway"
            )


def run_evaluate(args: argparse.Namespace, callbacks=()) -> dict:
    from kdgat.evaluation.run import evaluate_files

    section, config = read_section(args.config, "evaluation")
    apply_assignments(section, args.set, "evaluation")
    for key in ("batch_size", "device", "fpr_targets", "stash_dir"):
        set_nested(section, (key,), getattr(args, key), "evaluation")
    threads = thread_count(args.threads, section.get("threads"), "evaluation.threads")
    check_device(section.get("device"), "--device" if args.device is not None else "evaluation.device")
    # The schema's minimum: torch would say it only after loading every model and graph, naming no key.
    batch_size = section.get("batch_size")
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        where = "--batch-size" if args.batch_size is not None else "evaluation.batch_size"
        raise UsageError(f"{where} must be an integer >= 1, got {batch_size!r}")
    check_fpr_targets(section, args)
    if section.get("stash_dir"):  # "" or null: no stash
        folder(section["stash_dir"], "--stash-dir" if args.stash_dir is not None else "evaluation.stash_dir")
    options = library_options(
        evaluate_files, section, EVALUATION_WORKFLOW_KEYS, "evaluation", exclude=EVALUATION_ARGUMENTS
    )
    seed = args.seed if args.seed is not None else first_seed(config.get("kd_gat"), "kd_gat")
    seed = DEFAULT_SEEDS[0] if seed is None else seed
    chain = Path(args.chain) / f"seed_{seed}" / args.variant if args.chain else None
    data = folder(args.data, "--data")
    out = folder(args.out, "--out")

    def pick(explicit, folder, *parts, what, option):
        value = explicit if explicit is not None else (str(folder.joinpath(*parts)) if folder else None)
        return required(value, what, option)

    models = {name: pick(getattr(args, name), chain, name, "model.pt", what=f"the {name} model",
                         option=f"--{name} or --chain") for name in ("vgae", "gat", "dqn")}  # fmt: skip
    from kdgat.model_store import check_kind

    for name, path in models.items():
        if Path(path).is_file():  # a missing one is named by the evaluation, as in the workflow
            check_kind(path, name)  # files given in each other's place: named here, not as a missing method
    # Unless both are given, --data's own val.pt or test.pt is scored (--val alone scored another run's test.pt).
    if args.val is None or args.test is None:
        check_trained_on_data(data, models)
    return evaluate_files(
        **models,
        val=pick(args.val, data, "val.pt", what="the validation graphs", option="--val or --data"),
        test=pick(args.test, data, "test.pt", what="the test graphs", option="--test or --data"),
        outputs={name: str(out / file) for name, file in EVALUATION_FILES.items()},
        dataset=args.dataset,
        variant=args.variant,
        seed=seed,
        threads=threads,
        tracking=tracking_settings(kd_gat_key(config, "tracking", args.config), args, {}),
        **options,
    )


# -- summarize -----------------------------------------------------------------------------------------------------
def add_summarize(subparsers, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "summarize",
        parents=[common],
        help="summary table, Markdown and charts from evaluations' metrics.json files",
        description="Summarise evaluations over seeds, as the evaluation module's summary rules do: summary.csv "
        "(teacher vs students), scenario_metrics.csv (per scenario), summary.md, the size/F1/latency chart and, "
        "with --history, the training curves.",
    )
    parser.add_argument("--metrics", nargs="+", action="extend", required=True, metavar="FILE",
                        help="metrics.json files of `kdgat evaluate` or the workflow's evaluate rules")  # fmt: skip
    parser.add_argument("--baselines", nargs="+", action="extend", default=[], metavar="FILE", help="baselines.json "
                        "files of `kdgat baselines` or the workflow's baselines rule, reported beside the models")  # fmt: skip
    parser.add_argument("--history", nargs="+", action="extend", default=[], metavar="VARIANT/STAGE=FILE",
                        help="training history.csv files to draw, each named by variant and stage, e.g. "
                        "teacher/gat=history.csv")  # fmt: skip
    parser.add_argument("--out", required=True, help="folder for " + ", ".join(SUMMARY_FILES.values()))
    parser.add_argument("--title", default="", help="title of the charts")
    parser.set_defaults(handler=run_summarize, command="summarize")


def run_summarize(args: argparse.Namespace, callbacks=()):
    from kdgat.evaluation.run import summarize_files

    histories = [parse_pair(text, "--history") for text in args.history]
    given: dict[str, str] = {}
    for key, path in histories:
        variant, _, stage = key.partition("/")
        if variant not in VARIANTS or stage not in STAGES:
            raise UsageError(f"--history {key}=...: expected <variant>/<stage> with {VARIANTS} and {STAGES}")
        if key in given:  # the chart has one panel per variant and stage: the first would be dropped unsaid
            raise UsageError(
                f"--history {key} is given twice ({given[key]}, {path}); one history.csv per panel"
            )
        if not Path(
            path
        ).is_file():  # read after the tables are written: a missing one would leave half the outputs
            raise UsageError(f"--history {key}={path}: no such file")
        given[key] = path
    out = folder(args.out, "--out")
    return summarize_files(
        metrics=list(args.metrics),
        baselines=list(args.baselines),
        csv=str(out / SUMMARY_FILES["csv"]),
        markdown=str(out / SUMMARY_FILES["markdown"]),
        scenarios=str(out / SUMMARY_FILES["scenarios"]),
        chart=str(out / SUMMARY_FILES["chart"]),
        histories=[str(path) for _, path in histories],
        history_keys=[key for key, _ in histories],
        curves=str(out / SUMMARY_FILES["curves"]) if histories else None,
        title=args.title,
    )


# -- baselines -----------------------------------------------------------------------------------------------------
def add_baselines(subparsers, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "baselines",
        parents=[common],
        help="the trivial baselines of one dataset (unknown-ID rule, logistic regression on ID counts, "
        "per-ID rate deviation)",
        description="Score the trivial baselines of one dataset on validation and every test scenario, as the "
        "evaluation module's baselines rule does: baselines.json and baseline_scores.parquet. Settings: "
        "evaluation.fpr_targets of --config, then --set, then the flags.",
    )
    parser.add_argument("--dataset", required=True, help="dataset name (recorded in baselines.json)")
    parser.add_argument("--data", required=True, help="preprocess folder of the dataset (train.pt, val.pt, "
                        "test.pt, metadata.json)")  # fmt: skip
    parser.add_argument("--out", required=True, help="folder for " + ", ".join(BASELINE_FILES.values()))
    parser.add_argument("--fpr-targets", type=float, nargs="+", action="extend", help="false-positive rates at "
                        "which the detection rate is reported (evaluation.fpr_targets)")  # fmt: skip
    parser.set_defaults(handler=run_baselines, command="baselines")


def run_baselines(args: argparse.Namespace, callbacks=()) -> dict:
    from kdgat.evaluation.baselines import baselines_files
    from kdgat.evaluation.run import evaluate_files

    section, _ = read_section(args.config, "evaluation")
    apply_assignments(section, args.set, "evaluation")
    set_nested(section, ("fpr_targets",), args.fpr_targets, "evaluation")
    check_fpr_targets(section, args)
    # The section's other keys are the evaluate rules'; a key neither knows fails, naming it, as in `evaluate`.
    library_options(
        evaluate_files, section, EVALUATION_WORKFLOW_KEYS, "evaluation", exclude=EVALUATION_ARGUMENTS
    )
    data, out = folder(args.data, "--data"), folder(args.out, "--out")
    options = {"fpr_targets": section["fpr_targets"]} if "fpr_targets" in section else {}
    from kdgat.training.data import check_one_preprocess_run

    try:  # a test.pt of another preprocess run: other CAN IDs under the same indices, scored without an error
        check_one_preprocess_run(
            {name: data / f"{name}.pt" for name in ("train", "val", "test")}, metadata=data / "metadata.json"
        )
    except ValueError as error:
        raise UsageError(str(error)) from None
    return baselines_files(
        **{name: str(data / f"{name}.pt") for name in ("train", "val", "test")},
        metadata=str(data / "metadata.json"),
        **{name: str(out / file) for name, file in BASELINE_FILES.items()},
        dataset=args.dataset,
        **options,
    )
