"""The ``kdgat`` command: one stage of the KD-GAT pipeline at a time, for ad-hoc runs and debugging on an
interactive node. Each command makes the same library call as the workflow's wrapper of that step, with the same
settings (from the workflow's config.yaml or a YAML file, overridable by flags) and writes the same outputs.

    kdgat preprocess ...             CAN logs -> window graphs (the build_graphs wrapper)
    kdgat train {vgae,gat,dqn} ...   one training job (train_vgae, train_gat, train_dqn)
    kdgat evaluate ...               one detector on validation and test scenarios (evaluate_detector)
    kdgat baselines ...              the trivial baselines of one dataset (evaluate_baselines)
    kdgat summarize ...              tables and charts from evaluations (summarize_evaluation)
    kdgat stash prune ...            remove the evaluation stash's entries not used for a while

Heavy libraries (torch) are imported by the command that needs them, so that ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from kdgat.cli.config import UsageError
from kdgat.cli.progress import MODES, ProgressBar, configure_logging, wants_bar
from kdgat.cli.stash import add_parser as add_stash
from kdgat.cli.steps import add_baselines, add_evaluate, add_preprocess, add_summarize
from kdgat.cli.train import add_parser as add_train
from kdgat.logs import Terminated, termination_as_exit
from wrapper_rules import InputError

log = logging.getLogger("kdgat.cli")

SECTION_OF = {"preprocess": "preprocess", "train": "kd_gat", "evaluate": "evaluation"}
# One --set example per config section, a key of that section (`--help` of evaluate once showed a kd_gat key).
SET_EXAMPLE = {
    "preprocess": "window_size=100",
    "kd_gat": "training.gat.epochs=5",
    "evaluation": "batch_size=128",
}


def common_options(section: str | None, threads: bool = True) -> argparse.ArgumentParser:
    """Options every command takes (a parent parser)."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("common options")
    if section is not None:
        group.add_argument(
            "--config",
            metavar="YAML",
            help=f"settings: the workflow's config.yaml (its {section} section is used) or a file holding that "
            "section alone",
        )
        group.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help=f"override one setting of the {section} section, dotted for nested keys and read as YAML "
            f"(e.g. {SET_EXAMPLE[section]}); repeatable, applied after --config",
        )
        if threads:
            group.add_argument("--threads", type=int, help="CPU threads for torch (default: what the workflow gives "
                               "the job, else torch's own choice)")  # fmt: skip
    group.add_argument(
        "--log", metavar="FILE", help="also append the log to FILE (as the workflow's rule log)"
    )
    if section == "kd_gat":
        group.add_argument(
            "--progress",
            choices=MODES,
            default="auto",
            help="bar: a progress bar of epochs and batches with rate and ETA; lines: one log line per epoch; "
            "auto (default): a bar on an interactive terminal, lines otherwise",
        )
    return common


def parser() -> argparse.ArgumentParser:
    main_parser = argparse.ArgumentParser(
        prog="kdgat",
        description="Run one step of the KD-GAT pipeline (the same code and settings as the Snakemake workflow).",
        epilog="`kdgat <command> --help` explains each command's options.",
    )
    subparsers = main_parser.add_subparsers(
        dest="command_name", required=True, metavar="COMMAND", help="the pipeline step to run"
    )
    add_preprocess(subparsers, common_options("preprocess"))
    add_train(subparsers, common_options("kd_gat"))
    add_evaluate(subparsers, common_options("evaluation"))
    add_baselines(subparsers, common_options("evaluation", threads=False))
    add_summarize(subparsers, common_options(None))
    add_stash(subparsers, common_options(None))
    return main_parser


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    bar = wants_bar(getattr(args, "progress", "lines"), sys.stderr)
    try:
        configure_logging(args.log, bar)
    except OSError as error:
        print(f"kdgat {args.command}: --log {args.log} cannot be written: {error}", file=sys.stderr)
        return 2
    callbacks = (ProgressBar(),) if bar else ()
    try:
        with termination_as_exit():
            args.handler(args, callbacks=callbacks)
    except UsageError as error:
        log.error("kdgat %s: %s", args.command, error)
        return 2
    except (KeyboardInterrupt, Terminated) as stop:
        # Ctrl-C, SIGTERM (a walltime, scancel) or SIGHUP (a closed terminal): the files written so far are whole
        # (kdgat.files), a training run keeps its last checkpoint. The exit status is the shell's for the signal:
        # 130, 143 or 129.
        resumes = args.command.startswith("train") and not args.no_checkpoint
        again = "; run the same command again to resume from its checkpoint" if resumes else ""
        how = "interrupted" if isinstance(stop, KeyboardInterrupt) else f"stopped by {stop.signal.name}"
        log.error("kdgat %s: %s%s", args.command, how, again)
        return 130 if isinstance(stop, KeyboardInterrupt) else stop.code
    except Exception as error:
        if _explained(error):
            # The library's message names the file, key or device: the error the workflow's rule log shows.
            log.error("kdgat %s failed: %s: %s", args.command, type(error).__name__, error)
        else:
            log.exception("kdgat %s failed", args.command)
        return 1
    return 0


def _explained(error: Exception) -> bool:
    """Errors whose message is the whole story (bad input, settings or device: an InputError, as
    kdgat.runtime.GPUUnusableError), shown without a traceback."""
    return isinstance(error, OSError | ValueError | InputError)


if __name__ == "__main__":
    sys.exit(main())
