"""``kdgat train {vgae,gat,dqn}``: one training job, the call the train_<stage> wrapper makes
(``kdgat.training.<stage>.run``) with the settings the kd_gat module would give it."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
from pathlib import Path

from kdgat.chain import STAGES, STUDENT_KD, TEACHER, VARIANTS
from kdgat.cli.config import (
    UsageError,
    add_tracking_options,
    apply_assignments,
    check_device,
    first_seed,
    parse_assignment,
    read_section,
    required,
    set_nested,
    thread_count,
    tracking_settings,
)
from kdgat.tracking import COMMIT_ENV, MODEL_ARTIFACT, TrackingSettings, source_commit
from kdgat.training.settings import TRAINING_KEYS, StageSettings

log = logging.getLogger("kdgat.cli")

OUTPUT_FILES = {"model": "model.pt", "metrics": "metrics.json", "history": "history.csv"}
# kd_gat.resources in the module's schema (workflow/modules/kd_gat/schemas/config.schema.yaml).
RESOURCE_KEYS = ("threads", "mem_mb", "runtime")
TRAINING_FLAGS = {
    "epochs": (int, "maximum epochs (DQN: episodes)"),
    "batch_size": (int, "graphs per optimisation step"),
    "lr": (float, "Adam learning rate"),
    "weight_decay": (float, "Adam weight decay"),
    "patience": (int, "early stopping after this many epochs without a lower validation loss"),
    "grad_clip": (float, "maximum global gradient norm"),
}
assert set(TRAINING_FLAGS) == set(TRAINING_KEYS)
# The DQN stage updates its Q-network on kd_gat.dqn.batch_size replayed transitions and reads no
# kd_gat.training.dqn.batch_size: its --batch-size sets the one it reads (it set the other, changing nothing).
DQN_BATCH_FLAG = (("dqn", "batch_size"), "transitions per update of the Q-network")


def flag_setting(stage: str, name: str) -> tuple[tuple[str, ...], str]:
    """The kd_gat keys a training flag sets for ``stage``, and what it means."""
    if (stage, name) == ("dqn", "batch_size"):
        return DQN_BATCH_FLAG
    return ("training", stage, name), TRAINING_FLAGS[name][1]


DESCRIPTION = """\
Train one stage of one KD-GAT variant, exactly as the kd_gat module's rule does (the same library call, settings
and outputs: model.pt, metrics.json, history.csv). Settings come from --config (the workflow's config.yaml, whose
kd_gat section is used, or a file holding that section alone), then --set, then the flags below; --override, a
sweep row's value, replaces what --config and --set give, as a kd_gat.sweep column does, and a training setting
given both by its flag and by --override (--epochs 3 --override epochs=5) is refused. Inputs are the
preprocess files (--data DIR, or one by one) and, for later stages, the models of earlier ones (--chain DIR, the
kd_gat results folder of the dataset laid out like the workflow's, or one by one).

A run that is interrupted resumes from its checkpoint (--checkpoint; a workflow job's is
checkpoints/kd_gat/<dataset>/seed_<seed>/<variant>/<stage>/last.pt) when the settings are the same. On a terminal a progress
bar shows epochs and batches with rate and ETA; otherwise one log line per epoch, as in the workflow's log.
"""


def add_parser(subparsers, common: argparse.ArgumentParser) -> None:
    train = subparsers.add_parser(
        "train",
        help="train one stage (vgae, gat or dqn) of one variant",
        description="Train one stage of the KD-GAT chain. `kdgat train <stage> --help` lists its options.",
    )
    stages = train.add_subparsers(
        dest="stage", required=True, metavar="{vgae,gat,dqn}", help="the stage: vgae, then gat, then dqn"
    )
    for stage in STAGES:
        parser = stages.add_parser(
            stage,
            parents=[common],
            help=f"train the {stage.upper()} stage",
            description=DESCRIPTION,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        add_stage_options(parser, stage)
        parser.set_defaults(handler=run_training, command=f"train {stage}")


def add_stage_options(parser: argparse.ArgumentParser, stage: str) -> None:
    job = parser.add_argument_group("the job")
    job.add_argument(
        "--variant",
        choices=VARIANTS,
        default=TEACHER,
        help="teacher (teacher_preset), student_kd (student_preset, distilled from the teacher's model of this "
        "stage) or student (student_preset, no distillation); default %(default)s",
    )
    job.add_argument(
        "--out",
        help="folder for model.pt, metrics.json and history.csv (default with --chain: "
        "<chain>/seed_<seed>/<variant>/<stage>)",
    )
    # One or the other: with both, the path given was ignored without a word.
    checkpointing = job.add_mutually_exclusive_group()
    checkpointing.add_argument(
        "--checkpoint",
        help="resume checkpoint, written after every epoch and removed after success (default <out>/last.pt; "
        "not with --no-checkpoint)",
    )
    checkpointing.add_argument(
        "--no-checkpoint", action="store_true", help="write no checkpoint (no resume; not with --checkpoint)"
    )
    job.add_argument(
        "--print-settings",
        action="store_true",
        help="print the job's resolved settings, inputs and outputs as JSON and exit without training",
    )

    inputs = parser.add_argument_group("inputs")
    inputs.add_argument(
        "--data",
        help="preprocess folder of the dataset (train.pt, val.pt, metadata.json and the DQN's split files)",
    )
    inputs.add_argument(
        "--chain",
        help="kd_gat results folder of the dataset (seed_<seed>/<variant>/<stage>/model.pt, as the workflow "
        "writes them): where the earlier stages' and the teacher's models of the job's seed are read and, without "
        "--out, this job's outputs go",
    )
    inputs.add_argument(
        "--metadata", help="metadata.json of the preprocess step (default <data>/metadata.json)"
    )
    if stage in ("vgae", "gat"):
        inputs.add_argument("--train", help="training graphs (default <data>/train.pt)")
        inputs.add_argument("--val", help="validation graphs, for early stopping (default <data>/val.pt)")
        inputs.add_argument(
            "--teacher",
            help=f"student_kd only: the teacher's {stage.upper()} model.pt (default <chain>/seed_<seed>/teacher/{stage}/model.pt)",
        )
    if stage == "gat":
        inputs.add_argument(
            "--vgae",
            help="the same variant's VGAE model.pt, which drives the curriculum (default <chain>/seed_<seed>/<variant>/vgae/model.pt)",
        )
    if stage == "dqn":
        inputs.add_argument(
            "--fit",
            help="graphs the agent learns from, not seen by its VGAE and GAT (default <data>/<kd_gat.dqn.fit_split>.pt)",
        )
        inputs.add_argument(
            "--stop",
            help="graphs for early stopping (default <data>/<kd_gat.dqn.stop_split>.pt when that is set, else "
            "blocks held out of --fit)",
        )
        inputs.add_argument(
            "--vgae",
            help="the same variant's VGAE model.pt (default <chain>/seed_<seed>/<variant>/vgae/model.pt)",
        )
        inputs.add_argument(
            "--gat",
            help="the same variant's GAT model.pt (default <chain>/seed_<seed>/<variant>/gat/model.pt)",
        )
        for name in ("dqn", "vgae", "gat"):
            inputs.add_argument(
                f"--teacher-{name}",
                help=f"student_kd only: the teacher's {name.upper()} model.pt (default <chain>/seed_<seed>/teacher/{name}/model.pt)",
            )

    settings = parser.add_argument_group("settings (override --config and --set)")
    settings.add_argument(
        "--preset", help="size preset of this variant (kd_gat.teacher_preset/student_preset)"
    )
    settings.add_argument("--seed", type=int, help="seed (kd_gat.seed; default the first of kd_gat.seeds)")
    settings.add_argument("--device", help="auto, cpu, cuda or cuda:N (kd_gat.device); auto fails loudly on a GPU "
                          "this torch cannot use instead of training on the CPU")  # fmt: skip
    for name, (kind, _) in TRAINING_FLAGS.items():
        keys, text = flag_setting(stage, name)
        settings.add_argument(
            f"--{name.replace('_', '-')}", type=kind, help=f"{text} (kd_gat.{'.'.join(keys)})"
        )
    settings.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a sweep row's value: a training setting or a model argument of the preset (repeatable; what a "
        "kd_gat.sweep table column does: it replaces the value of --config and --set; a training setting "
        "given by its flag too is refused)",
    )

    tracking = add_tracking_options(parser, "the job is one MLflow run")
    tracking.add_argument(
        "--track-model",
        choices=MODEL_ARTIFACT,
        help="model.pt by reference or as a copy (kd_gat.tracking.model)",
    )


def stage_settings(args: argparse.Namespace) -> tuple[StageSettings, dict]:
    """The job's typed settings (and the kd_gat section they came from) from --config, --set and the flags."""
    section, _ = read_section(args.config, "kd_gat")
    apply_assignments(section, args.set, "kd_gat")
    if args.seed is not None:
        section["seed"] = args.seed
    elif (seed := first_seed(section, "kd_gat")) is not None:
        section["seed"] = seed
    section.pop("seeds", None)  # the workflow trains every seed; one job trains one
    set_nested(section, ("device",), args.device, "kd_gat")
    check_device(section.get("device"), "--device" if args.device is not None else "kd_gat.device")
    for name in TRAINING_KEYS:
        set_nested(section, flag_setting(args.stage, name)[0], getattr(args, name), "kd_gat")
    if args.preset:
        section["teacher_preset" if args.variant == TEACHER else "student_preset"] = args.preset
    overrides, given = {}, {}
    for text in args.override:
        key, value = parse_assignment(text, "--override")
        if (
            key in TRAINING_KEYS
            and getattr(args, key) is not None
            and flag_setting(args.stage, key)[0] == ("training", args.stage, key)
        ):
            # The sweep row's value would silently replace the flag's: one setting named twice is a mistake.
            flag = f"--{key.replace('_', '-')} {getattr(args, key)}"
            raise UsageError(
                f"{flag} and --override {text} both set kd_gat.training.{args.stage}.{key}: give one of them"
            )
        if key in overrides:  # the last one silently won
            raise UsageError(
                f"--override {given[key]} and --override {text} both set {key}: give one of them"
            )
        overrides[key], given[key] = value, text
    return StageSettings.from_config(section, args.stage, args.variant, overrides or None), section


def _default(explicit, folder: Path | None, *parts: str) -> str | None:
    if explicit is not None:
        return explicit
    return str(folder.joinpath(*parts)) if folder is not None else None


def seed_chain(args: argparse.Namespace, seed: int) -> Path | None:
    """The models of one seed in the kd_gat results folder of a dataset (the workflow's seed_<seed>/ level)."""
    return Path(args.chain) / f"seed_{seed}" if args.chain else None


def job_inputs(args: argparse.Namespace, settings: StageSettings) -> dict:
    """The run() keyword arguments naming input files, as the kd_gat module's rule declares them."""
    data = Path(args.data) if args.data else None
    chain = seed_chain(args, settings.seed)
    variant, stage = args.variant, args.stage
    distilled = variant == STUDENT_KD
    teacher = chain / TEACHER if chain is not None and distilled else None
    inputs = {
        "metadata": required(
            _default(args.metadata, data, "metadata.json"), "metadata.json", "--metadata or --data"
        )
    }
    if stage in ("vgae", "gat"):
        inputs["train"] = required(
            _default(args.train, data, "train.pt"), "the training graphs", "--train or --data"
        )
        inputs["val"] = required(
            _default(args.val, data, "val.pt"), "the validation graphs", "--val or --data"
        )
        inputs["teacher"] = _default(args.teacher, teacher, stage, "model.pt")
        if distilled:
            required(inputs["teacher"], f"the teacher's {stage} model (student_kd)", "--teacher or --chain")
    if stage == "gat":
        inputs["vgae"] = _default(args.vgae, chain / variant if chain else None, "vgae", "model.pt")
        if settings.curriculum.enabled:
            required(
                inputs["vgae"], "the same variant's VGAE (kd_gat.curriculum.enabled)", "--vgae or --chain"
            )
    if stage == "dqn":
        own = chain / variant if chain else None
        inputs["fit"] = required(
            _default(args.fit, data, f"{settings.dqn.fit_split}.pt"), "the fit graphs", "--fit or --data"
        )
        stop_default = data if settings.dqn.stop_split else None
        inputs["stop"] = _default(args.stop, stop_default, f"{settings.dqn.stop_split}.pt")
        inputs["vgae"] = required(
            _default(args.vgae, own, "vgae", "model.pt"), "the VGAE model", "--vgae or --chain"
        )
        inputs["gat"] = required(
            _default(args.gat, own, "gat", "model.pt"), "the GAT model", "--gat or --chain"
        )
        for name in ("dqn", "vgae", "gat"):
            inputs[f"teacher_{name}"] = _default(getattr(args, f"teacher_{name}"), teacher, name, "model.pt")
            if distilled:
                required(
                    inputs[f"teacher_{name}"],
                    f"the teacher's {name} model (student_kd)",
                    f"--teacher-{name} or --chain",
                )
    return inputs


def job_outputs(args: argparse.Namespace, settings: StageSettings) -> tuple[dict, str | None]:
    if args.out:
        out = Path(args.out)
    elif args.chain:
        out = seed_chain(args, settings.seed) / args.variant / args.stage
    else:
        raise UsageError("where do the outputs go? give --out (or --chain)")
    if out.exists() and not out.is_dir():  # found only after training, when model.pt is written, before
        raise UsageError(f"{'--out' if args.out else 'the output folder'} {out} is a file; give a folder")
    outputs = {name: str(out / file) for name, file in OUTPUT_FILES.items()}
    checkpoint = None if args.no_checkpoint else (args.checkpoint or str(out / "last.pt"))
    if checkpoint is not None and Path(checkpoint).is_dir():
        raise UsageError(
            f"{checkpoint_named(checkpoint, bool(args.checkpoint))} is a folder; "
            + ("give a file (default <out>/last.pt)" if args.checkpoint else FIX_DEFAULT_CHECKPOINT)
        )
    return outputs, checkpoint


# No --checkpoint was given: the user can only move what is at <out>/last.pt, or go without a checkpoint.
FIX_DEFAULT_CHECKPOINT = "remove it, pass --no-checkpoint, or give --checkpoint another path"


def checkpoint_named(checkpoint: str, given: bool) -> str:
    """The checkpoint as a message names it: the option the user gave, or the default path they did not choose."""
    return (
        f"--checkpoint {checkpoint}" if given else f"the default checkpoint path {checkpoint} (<out>/last.pt)"
    )


def check_checkpoint(checkpoint: str | None, inputs: dict, outputs: dict, given: bool = True) -> None:
    """The checkpoint is overwritten after every epoch and removed after success: it must not be one of the
    job's own input or output files (``--checkpoint <out>/model.pt`` would delete the model just written).
    ``given``: whether the user gave ``--checkpoint`` (else it is the default <out>/last.pt, named as such)."""
    if checkpoint is None:
        return
    named = checkpoint_named(checkpoint, given)
    mine = Path(checkpoint).resolve()
    for name, path in (*inputs.items(), *outputs.items()):
        if path is not None and Path(path).resolve() == mine:
            fix = "give another path" if given else FIX_DEFAULT_CHECKPOINT
            raise UsageError(f"{named} is also the job's {name} file; {fix}")
    from kdgat.training.loop import not_a_checkpoint

    if mine.is_file() and (what := not_a_checkpoint(mine)) is not None:
        # The loop would set it aside with a warning, overwrite it after the first epoch and delete it after
        # success: another stage's model.pt given here was lost that way.
        fix = "give another path (or remove the file)" if given else FIX_DEFAULT_CHECKPOINT
        raise UsageError(
            f"{named} is {what}, not a training checkpoint: the job would overwrite it after its first epoch and "
            f"delete it after success; {fix}"
        )


def check_model_inputs(args: argparse.Namespace, inputs: dict, outputs: dict) -> None:
    """Two mistakes that gave a model without an error: an --out whose files are the job's inputs (`train gat --out
    <chain>/seed_42/teacher/vgae` wrote the GAT over the VGAE it read), and a model of another variant (the
    variant each model.pt records) where the job names whose it must be: --vgae/--gat of this --variant, --teacher*
    of the teacher (a student's VGAE given to --teacher was distilled from without a word)."""
    given = {name: Path(path).resolve() for name, path in inputs.items() if path is not None}
    for output, path in outputs.items():
        clash = next((name for name, other in given.items() if other == Path(path).resolve()), None)
        if clash is not None:
            where = "--out" if args.out else "the output folder"
            raise UsageError(
                f"{where} {Path(path).parent}: the job's {output} file {path} is also its {clash} input, which it "
                "would overwrite; give another --out"
            )
    from kdgat.model_store import recorded

    for name, path in inputs.items():
        expected = (
            TEACHER if name.startswith("teacher") else args.variant if name in ("vgae", "gat") else None
        )
        if expected is None or path is None or not Path(path).is_file():
            continue  # a missing file is named where the job reads it
        found = recorded(path, "variant")
        if found is not None and found != expected:
            option = f"--{name.replace('_', '-')}"
            raise UsageError(
                f"{option} {path} is a {found} model; this job ({args.variant} {args.stage}) needs the {expected}'s"
            )


def check_data_run(args: argparse.Namespace, inputs: dict) -> None:
    """The DQN job reads no train.pt, so its library call can only compare its models with each other and with the
    graphs' vocabulary; with --data, the VGAE and GAT (and the teacher's) must also have been trained on
    <data>/train.pt, as `kdgat evaluate --data` requires (a --chain of another dataset or preprocess run). The VGAE
    and GAT stages compare their models with their own --train in the library call."""
    if args.stage != "dqn" or not args.data:
        return
    from kdgat.training.data import check_one_preprocess_run

    models = {
        f"--{name.replace('_', '-')}": inputs.get(name)
        for name in ("vgae", "gat", "teacher_vgae", "teacher_gat")
    }
    try:
        check_one_preprocess_run({}, models, train=Path(args.data) / "train.pt")
    except ValueError as error:
        raise UsageError(str(error)) from None


def job_tracking(args: argparse.Namespace, section: dict, metadata: str) -> TrackingSettings:
    tags = {"kdgat.entry": f"kdgat {args.command}"}
    try:
        tags["kdgat.dataset"] = json.loads(Path(metadata).read_text()).get("dataset")
    except (OSError, ValueError, AttributeError):
        pass  # the training job reports a bad metadata file itself
    tracking = tracking_settings(section.get("tracking"), args, tags)
    if not tracking.enabled:
        return tracking
    # the catalog's commit, as a workflow job's run has it (the workflow exports it to its jobs in COMMIT_ENV)
    commit = os.environ.get(COMMIT_ENV) or source_commit(Path(__file__).parent)
    return TrackingSettings.from_config(tracking, tags={"mlflow.source.git.commit": commit})


def configured_threads(section: dict) -> object:
    """kd_gat.resources.threads, the job's threads without --threads. The section is checked as the schema does
    (a mapping of these keys): `resources: 4` was an AttributeError traceback, `resources: {thread: 4}` left torch
    its own thread count without a word."""
    resources = section.get("resources")
    if resources is None:
        return None
    if not isinstance(resources, dict):
        raise UsageError(f"kd_gat.resources must be a mapping, got {resources!r}")
    unknown = sorted(str(key) for key in resources if key not in RESOURCE_KEYS)
    if unknown:
        raise UsageError(f"kd_gat.resources: unknown keys {unknown}; known: {sorted(RESOURCE_KEYS)}")
    return resources.get("threads")


def run_training(args: argparse.Namespace, callbacks: tuple = ()) -> dict:
    settings, section = stage_settings(args)
    inputs = job_inputs(args, settings)
    outputs, checkpoint = job_outputs(args, settings)
    check_checkpoint(checkpoint, inputs, outputs, given=bool(args.checkpoint))
    check_model_inputs(args, inputs, outputs)
    tracking = job_tracking(args, section, inputs["metadata"])
    threads = thread_count(args.threads, configured_threads(section), "kd_gat.resources.threads")
    if args.print_settings:
        print(json.dumps({"settings": settings.as_dict(), "inputs": inputs, "outputs": outputs,
                          "checkpoint": checkpoint, "threads": threads,
                          "tracking": dataclasses.asdict(tracking)},
                         indent=2, sort_keys=True, default=str))  # fmt: skip
        return {}
    check_data_run(args, inputs)
    from kdgat.training import dqn, gat, vgae

    stage = {"vgae": vgae, "gat": gat, "dqn": dqn}[args.stage]
    metrics = stage.run(
        **inputs,
        settings=settings,
        outputs=outputs,
        checkpoint=checkpoint,
        threads=threads,
        tracking=tracking,
        callbacks=callbacks,
    )
    log.info(
        "%s[%s]: wrote %s (best epoch %s of %s, validation loss %.4g)",
        args.stage,
        args.variant,
        ", ".join(outputs.values()),
        metrics.get("best_epoch"),
        metrics.get("epochs_run"),
        metrics.get("best_val_loss", float("nan")),
    )
    return metrics
