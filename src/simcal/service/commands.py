"""The service's ``simcal`` subcommands (registered in ``simcal.cli.SUBCOMMANDS``):

    simcal serve --api-keys-file F --state-dir D [--host H [--allow-remote]] [--port P] [--scheduler ADDRESS]
                 [--results URL] [--allow-models PREFIX,...]
    simcal keys add --file F [--name NAME]          prints a new key once; the file keeps only its hash
    simcal jobs list|show ID|cancel ID --url URL [--api-key K]   (defaults: $SIMCAL_SERVICE_URL, $SIMCAL_API_KEY)

FastAPI and uvicorn are imported only by ``serve`` (the ``simcal[service]`` extra); ``jobs`` needs httpx.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
from pathlib import Path

from simcal.service.client import API_KEY_VARIABLE, URL_VARIABLE

DEFAULTS = {
    "workers": 2,
    "max_concurrent_jobs": 8,
    "max_job_attempts": 2,
    "max_simulations": 1_000_000,
    "sync_max_simulations": 1_000,
    "sync_timeout_s": 300.0,
    "request_max_bytes": 16 << 20,
    "rate": 20.0,
    "burst": 100,
}


def whole_number_in(low: int, high: int, expected: str):
    """An argparse type: a whole number from ``low`` to ``high``; out of range or not a number, argparse names the
    option and the error says ``expected <expected>, got <text>``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


def serve(args: argparse.Namespace) -> int:
    from simcal.logs import configure
    from simcal.service.jobs import ServiceConfig
    from simcal.service.keys import KeysFileError
    from simcal.service.results import ResultsError
    from simcal.service.server import Service, check_exposure, listening_socket
    from simcal.service.server import serve as run

    configure(None)
    prefixes = tuple(p.strip() for p in args.allow_models.split(",") if p.strip())
    try:
        config = ServiceConfig(
            state_dir=Path(args.state_dir),
            allow_models=prefixes,
            max_concurrent_jobs=args.max_concurrent_jobs,
            max_job_attempts=args.max_job_attempts,
            max_simulations=args.max_simulations,
            sync_max_simulations=args.sync_max_simulations,
            sync_timeout_s=args.sync_timeout_s,
            request_max_bytes=args.request_max_bytes,
            rate=args.rate,
            burst=args.burst,
        )
        check_exposure(args.host, args.port, args.allow_remote)
        sock = listening_socket(args.host, args.port)
        service = Service(
            config,
            args.api_keys_file,
            scheduler=args.scheduler,
            results=args.results,
            azure_account_url=args.azure_account_url,
            workers=args.workers,
        )
    except (KeysFileError, ResultsError, ValueError) as error:
        print(f"simcal serve: {error}", file=sys.stderr)
        return 2
    except (
        OSError,
        sqlite3.Error,
    ) as error:  # the state directory or its job registry cannot be made or opened
        reason = getattr(error, "strerror", None) or str(error)
        where = getattr(error, "filename", None)
        print(
            f"simcal serve: --state-dir {args.state_dir}: {reason}" + (f" ({where})" if where else ""),
            file=sys.stderr,
        )
        return 2
    run(service, sock)
    return 0


def add_serve(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the simulation service (HTTP API over a warm Dask cluster)",
        description="Run the simulation service: jobs of simulations through the same runner as the simulate "
        "wrapper, on an existing Dask scheduler or a LocalCluster started here; a SQLite job registry under "
        "--state-dir; results as Parquet under --results. Needs the simcal[service] extra.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="needed for a --host beyond loopback (0.0.0.0, a network address): anyone who can reach the port can "
        "try keys, and with one run the allowed models and read its jobs' results, over plain HTTP",
    )
    parser.add_argument("--port", type=whole_number_in(0, 65535, "a TCP port number 0..65535"), default=8000)
    parser.add_argument("--api-keys-file", required=True, help="hashed API keys (made by `simcal keys add`)")
    parser.add_argument("--state-dir", required=True, help="job registry and running jobs' finished parts")
    parser.add_argument(
        "--scheduler",
        default=os.environ.get("DASK_SCHEDULER_ADDRESS"),
        help="existing Dask scheduler (default $DASK_SCHEDULER_ADDRESS; none: start a LocalCluster on 127.0.0.1)",
    )
    parser.add_argument(
        "--workers", type=int, default=DEFAULTS["workers"], help="LocalCluster worker processes"
    )
    parser.add_argument(
        "--results",
        default=None,
        help="local directory or az://container/prefix (default <state-dir>/results)",
    )
    parser.add_argument("--azure-account-url", default=None, help="https://<account>.blob.core.windows.net")
    parser.add_argument(
        "--allow-models",
        default="simcal.models",
        help="comma-separated module prefixes fn_ref may name (default simcal.models)",
    )
    limits = parser.add_argument_group("limits")
    limits.add_argument("--max-concurrent-jobs", type=int, default=DEFAULTS["max_concurrent_jobs"])
    limits.add_argument(
        "--max-job-attempts",
        type=int,
        default=DEFAULTS["max_job_attempts"],
        help="a job running when the service died, or the scheduler was lost, this many times is failed instead of resumed",
    )
    limits.add_argument("--max-simulations", type=int, default=DEFAULTS["max_simulations"], help="per job")
    limits.add_argument(
        "--sync-max-simulations",
        type=int,
        default=DEFAULTS["sync_max_simulations"],
        help="per /v1/simulate/sync",
    )
    limits.add_argument("--sync-timeout-s", type=float, default=DEFAULTS["sync_timeout_s"])
    limits.add_argument("--request-max-bytes", type=int, default=DEFAULTS["request_max_bytes"])
    limits.add_argument("--rate", type=float, default=DEFAULTS["rate"], help="requests per second per key")
    limits.add_argument("--burst", type=int, default=DEFAULTS["burst"], help="burst of requests per key")
    parser.set_defaults(handler=serve)


def keys(args: argparse.Namespace) -> int:
    from simcal.service.keys import KeysFileError, add_key, read_keys

    try:
        if args.keys_command == "add":
            # Only a left-out --name gets a made-up one: --name "" (an unset variable) is refused as a name.
            name = f"key-{os.urandom(3).hex()}" if args.name is None else args.name
            key = add_key(args.file, name)
            print(key)
            print(
                f"added key {name!r} to {args.file}; the line above is the key, shown this once (only its hash is "
                "kept)",
                file=sys.stderr,
            )
        else:
            for entry in read_keys(args.file):
                print(entry.name)
    except KeysFileError as error:
        print(f"simcal keys: {error}", file=sys.stderr)
        return 2
    return 0


def add_keys(subparsers) -> None:
    parser = subparsers.add_parser("keys", help="manage the service's API keys file")
    commands = parser.add_subparsers(dest="keys_command", required=True)
    add = commands.add_parser("add", help="make a new key: print it once, append its salted hash to the file")
    add.add_argument("--file", required=True)
    add.add_argument("--name", default=None, help="the key's name in logs and traces (default key-<random>)")
    listing = commands.add_parser("list", help="the names of the keys in the file")
    listing.add_argument("--file", required=True)
    parser.set_defaults(handler=keys)


def _row(job: dict) -> list[str]:
    progress = job.get("progress") or {}
    duration = job.get("duration_s")
    return [
        job["job_id"],
        job["status"],
        f"{progress.get('done', 0)}/{progress.get('total', 0)}",
        str(progress.get("failed", 0)),
        str(job.get("submitted") or "-"),
        "-" if duration is None else f"{duration:.1f}s",
        str(job.get("fn_ref", "")),
    ]


def format_jobs(jobs: list[dict]) -> str:
    lines = [["JOB", "STATUS", "DONE/TOTAL", "FAILED", "SUBMITTED", "DURATION", "FN_REF"], *map(_row, jobs)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def cancel_outcome(job: dict) -> str:
    """What ``simcal jobs cancel`` says of the job the service answered with: the service waits 10 s for a running
    job to stop, and a bare '<id> running' read as if the cancel had been ignored."""
    status = job["status"]
    if status in ("queued", "running"):
        return (
            f"{job['job_id']} cancelling: still {status}, its batches on the workers are cancelled first; "
            f"`simcal jobs show {job['job_id']}` says when it is cancelled"
        )
    if status in ("succeeded", "failed"):
        return f"{job['job_id']} {status}: it had ended, so nothing was cancelled"
    return f"{job['job_id']} {status}"


def jobs(args: argparse.Namespace) -> int:
    from simcal.service.client import ServiceError, SimulationClient

    try:
        with SimulationClient(args.url, args.api_key) as client:
            if args.jobs_command == "list":
                found = client.jobs(status=args.status, limit=args.limit)
                print(json.dumps(found, indent=2) if args.json else format_jobs(found))
            elif args.jobs_command == "show":
                print(json.dumps(client.status(args.job_id), indent=2))
            else:
                job = client.cancel(args.job_id)
                print(cancel_outcome(job))
    except (ServiceError, ValueError) as error:
        print(f"simcal jobs: {error}", file=sys.stderr)
        return 1
    return 0


def add_jobs(subparsers) -> None:
    parser = subparsers.add_parser("jobs", help="list, show and cancel jobs of a simulation service")
    commands = parser.add_subparsers(dest="jobs_command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url", default=os.environ.get(URL_VARIABLE), help=f"service URL (default ${URL_VARIABLE})"
    )
    common.add_argument(
        "--api-key",
        default=None,
        help=f"API key (default ${API_KEY_VARIABLE}; prefer the variable: arguments show in the process list)",
    )
    listing = commands.add_parser("list", parents=[common], help="id, status, progress, submitted, duration")
    listing.add_argument(
        "--status", default=None, choices=["queued", "running", "succeeded", "failed", "cancelled"]
    )
    listing.add_argument(
        "--limit",
        # the API's own range (GET /v1/jobs takes 1 to 1000), named as the option, not as the API's validation list
        type=whole_number_in(1, 1000, "a whole number from 1 to 1000"),
        default=100,
        help="at most this many jobs, 1 to 1000",
    )
    listing.add_argument("--json", action="store_true")
    for name, text in (("show", "a job's status as JSON"), ("cancel", "cancel a job (its Dask tasks too)")):
        command = commands.add_parser(name, parents=[common], help=text)
        command.add_argument("job_id")
    parser.set_defaults(handler=jobs)
