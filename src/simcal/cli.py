"""The ``simcal`` command. Subcommands are registered in ``SUBCOMMANDS`` (name -> function adding its parser), so
other parts of simcal can add theirs (a service: ``serve``, ``keys``, ``jobs``) without touching the others.

    simcal status [PATH ...] [--json]   sweeps running or finished under PATH (outputs, progress files, folders)
    simcal serve ...                    the simulation service (simcal.service.commands; the simcal[service] extra)
    simcal keys add|list --file F       the service's API keys
    simcal jobs list|show|cancel        a service's jobs
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from simcal.progress import find_progress_files, format_messages, format_table, read_progress
from simcal.service.commands import add_jobs, add_keys, add_serve


def status(args: argparse.Namespace) -> int:
    missing: list[str] = []  # a path without a sweep is named, and hides none of the others' (as ls does)
    refused: list[str] = []  # so is a folder this user may not search (its sweeps would be left out unseen)
    files = find_progress_files(args.paths, missing, refused)
    for problem in missing + refused:
        print(f"simcal status: {problem}", file=sys.stderr)
    rows, unreadable = [], len(refused)
    for path in files:
        try:
            rows.append(read_progress(path))
        except (OSError, ValueError) as error:
            unreadable += 1
            print(f"simcal status: cannot read {path}: {error}", file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=2, sort_keys=True))
    elif rows:
        print(format_table(rows))
        messages = format_messages(rows)  # why a sweep failed: the table has no room for it
        if messages:
            print("\n" + "\n".join(messages))
    elif not missing and not refused:
        print("no sweeps found", file=sys.stderr)
    # The readable ones are shown; a script still learns that a path had no sweep (2) or a file was unreadable (1)
    return 2 if missing else 1 if unreadable else 0


def add_status(subparsers) -> None:
    parser = subparsers.add_parser(
        "status",
        help="show running and finished simulation sweeps",
        description="Read <output>.progress.json files and print one line per sweep: state, done/total, failures, "
        "rate, ETA, backend, connected workers, last update, output and Dask dashboard; then why each failed sweep "
        "failed and which signal stopped a sweep stopped by one (SIGTERM, SIGHUP, Ctrl-C), or that it was cancelled. "
        "A sweep is closing once its output is written, while its cluster closes and its parts go, and finished "
        "only after that. A running (or closing) sweep is shown "
        "stopped when its process (PID and start) is gone from this host, and stale "
        "when another host's has gone five of its rewrite intervals (and at least a minute) without rewriting its "
        "progress file, counted from the file's modification time on the file server's clock (a folder made and removed "
        "beside it; this host's clock where it may not write there). Exit status 1: a progress "
        "file could not be read or is no sweep's record (such as {}), or a folder could not be searched (no "
        "permission); 2: a path holds no sweep's progress (a folder with none in it or below, a file that is neither "
        "an output nor a progress file); the others are shown either way.",
    )
    parser.add_argument(
        "paths", nargs="*", default=["."], help="outputs, progress files or folders (searched recursively)"
    )
    parser.add_argument("--json", action="store_true", help="print the progress records as JSON")
    parser.set_defaults(handler=status)


SUBCOMMANDS: dict[str, Callable] = {
    "status": add_status,
    "serve": add_serve,
    "keys": add_keys,
    "jobs": add_jobs,
}


def parser() -> argparse.ArgumentParser:
    main_parser = argparse.ArgumentParser(
        prog="simcal", description="Simulation sweeps and calibration on Dask."
    )
    subparsers = main_parser.add_subparsers(dest="command", required=True)
    for add in SUBCOMMANDS.values():
        add(subparsers)
    return main_parser


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
