"""``kdgat stash prune``: remove the evaluation stash's entries not used for a while (an entry is kept for good
otherwise: a new release, a changed model or setting writes new entries and leaves the old ones)."""

from __future__ import annotations

import argparse

from kdgat.cli.config import UsageError

DAY_S = 86400.0


def add_parser(subparsers, common: argparse.ArgumentParser) -> None:
    stash = subparsers.add_parser(
        "stash",
        help="look after the evaluation result stash (evaluation.stash_dir)",
        description="Look after the evaluation result stash (evaluation.stash_dir, results/evaluation/.stash by "
        "default; docs/evaluation.md).",
    )
    actions = stash.add_subparsers(
        dest="stash_action",
        required=True,
        metavar="ACTION",
        help="prune: remove the entries unused for a while",
    )
    prune = actions.add_parser(
        "prune",
        parents=[common],
        help="remove the entries not used for --older-than days",
        description="Remove the stash entries that no evaluation committed or restored for --older-than days "
        "(by the stash filesystem's clock), and the staging folders killed commits left. It waits for the "
        "restores and commits under way (the stash folder's lock) and those that start meanwhile wait for it, so "
        "no running evaluation loses the entry it copies; an evaluation that asks for a removed entry computes "
        "it again.",
    )
    prune.add_argument("stash_dir", metavar="DIR", help="the stash folder (evaluation.stash_dir)")
    prune.add_argument("--older-than", type=float, default=30.0, metavar="DAYS",
                       help="remove entries unused for at least this many days (default: 30)")  # fmt: skip
    prune.add_argument(
        "--dry-run", action="store_true", help="list what would be removed, and remove nothing"
    )
    prune.set_defaults(handler=run_prune, command="stash prune")


def run_prune(args: argparse.Namespace, callbacks=()) -> None:
    from kdgat.evaluation.stash import ResultStash

    if not args.older_than >= 0:  # NaN too
        raise UsageError(f"--older-than {args.older_than}: expected a number of days, 0 or more")
    old = ResultStash(args.stash_dir).prune(args.older_than * DAY_S, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for entry, unused_s, size in old:
        print(f"{verb} {entry} (unused for {unused_s / DAY_S:.1f} days, {size / 2**20:.1f} MiB)")
    total = sum(size for _, _, size in old) / 2**20
    print(f"{verb} {len(old)} entries unused for {args.older_than:g} days or more ({total:.1f} MiB)")
