"""The open-file limit (RLIMIT_NOFILE, the shell's ``ulimit -n``) a local Dask cluster needs, checked before it
starts: each worker holds open files in this process (its nanny's connections, the pipes to its process, the
memory monitor's reads of /proc), so a limit too low for the workers asked for ended a sweep with
``LocalCluster failed to start`` (``AssertionError: Status.starting``) or, later, ``[Errno 24] Too many open
files`` on a part write, neither naming the limit."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

# Open files of this process besides the workers' (Python, the libraries, the scheduler, logs, parts being
# written, connections opening and closing), and per worker: measured 21 + 11 per worker process and 11 + 3 per
# thread worker once a LocalCluster ran tasks (/proc/self/fd), with room for what a sweep opens for a while.
BASE = 32
PER_WORKER = {True: 16, False: 4}
WORKERS_KEY = "calibration.backend.local.workers"


def open_files_needed(workers: int, processes: bool) -> int:
    """About how many open files this process needs for a LocalCluster of ``workers`` worker processes (or thread
    workers, ``processes=False``)."""
    return BASE + PER_WORKER[bool(processes)] * workers


def ensure_open_files(workers: int, processes: bool) -> int:
    """Make this process's soft open-file limit enough for a LocalCluster of ``workers``, before it starts (the
    workers inherit it): raised to the hard limit where the soft one is too low, as many servers do at start (an
    INFO line says so); where even the hard limit is too low, a WARNING naming the limits, ``ulimit -n`` and the
    workers that fit. Returns the soft limit it leaves."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = open_files_needed(workers, processes)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return soft
    kind = "worker processes" if processes else "thread workers"
    if hard == resource.RLIM_INFINITY or hard >= needed:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as error:
            log.debug("could not raise the open-file limit to %s: %s", hard, error)
        else:
            log.info(
                "raised this process's open-file limit (ulimit -n) from %d to its hard limit %s: a LocalCluster "
                "of %d %s needs about %d open files",
                soft, "unlimited" if hard == resource.RLIM_INFINITY else hard, workers, kind, needed,
            )  # fmt: skip
            return hard
    fit = max(1, (soft - BASE) // PER_WORKER[bool(processes)])
    log.warning(
        "this process may open %d files at most (ulimit -n; its hard limit is %s), and a LocalCluster of %d %s "
        "needs about %d: it may fail to start or end with '[Errno 24] Too many open files'. Raise the limit "
        "(`ulimit -n %d` or more in the shell or job script that starts snakemake; above the hard limit only as "
        "root, or in /etc/security/limits.conf) or set %s to %d or fewer (without it, a worker per thread of the "
        "rule)",
        soft, "unlimited" if hard == resource.RLIM_INFINITY else hard, workers, kind, needed, needed,
        WORKERS_KEY, fit,
    )  # fmt: skip
    return soft
