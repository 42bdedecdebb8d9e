"""What a wrapper says of a ``MemoryError``, and the most memory a process can have (``memory_limit``, which simcal
holds a design or a plan to before it allocates it): the memory the process had (its peak, its address-space limit, its
cgroup's limit, the machine's) and what to do, as one line (``wrapper_rules.failure_logged``). Only the standard
library, and nothing that allocates much: it runs just after an allocation failed."""

from __future__ import annotations

import os
from pathlib import Path

MIB = 1024 * 1024


def memory_had() -> list[str]:
    """The memory the process had, each as a phrase: the most it held (its peak resident set), its address-space
    limit (RLIMIT_AS, ``ulimit -v``) and its cgroup's memory limit where either is set, and the machine's memory."""
    import resource

    had = [f"it held at most {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MiB"]
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    if limit != resource.RLIM_INFINITY:
        had.append(f"its address-space limit (`ulimit -v`) is {limit // MIB} MiB")
    cgroup = cgroup_memory_limit()
    if cgroup is not None:
        had.append(f"its cgroup's memory limit is {cgroup // MIB} MiB")
    try:
        had.append(f"the machine has {os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') // MIB} MiB")
    except (OSError, ValueError):
        pass
    return had


def memory_limit() -> int | None:
    """The most memory in bytes this process can have: the machine's, its cgroup's limit (which a cluster executor
    sets from the rule's mem_mb) and its address-space limit (`ulimit -v`), whichever is least; None if unknown."""
    import resource

    limits = [cgroup_memory_limit(), resource.getrlimit(resource.RLIMIT_AS)[0]]
    try:
        limits.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError):
        pass
    known = [limit for limit in limits if limit is not None and limit != resource.RLIM_INFINITY and limit > 0]
    return min(known, default=None)


def cgroup_memory_limit() -> int | None:
    """The memory limit in bytes of the process's cgroup (v2 ``memory.max``, v1 ``memory.limit_in_bytes``), which a
    SLURM or Kubernetes executor sets from the rule's ``mem_mb``; None where there is none."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            candidate = Path("/sys/fs/cgroup") / path.lstrip("/") / "memory.max"
        elif "memory" in controllers.split(","):
            candidate = Path("/sys/fs/cgroup/memory") / path.lstrip("/") / "memory.limit_in_bytes"
        else:
            continue
        try:
            value = candidate.read_text().strip()
        except OSError:
            continue
        if value.isdigit() and int(value) < 2**60:  # v1's "no limit" is a number near 2**63
            return int(value)
    return None


def out_of_memory(
    error: BaseException, mem_mb: object = None, rule: str | None = None
) -> tuple[str, str] | None:
    """The error as a wrapper's line names it and what to do about it when it is a ``MemoryError`` (numpy's
    ``_ArrayMemoryError`` included): the memory the process had (``memory_had``), and to give the job more (the
    rule's ``mem_mb`` resource, which a cluster executor reserves and enforces; ``ulimit -v`` where that limit was
    set) or make it smaller. ``mem_mb``: the job's ``mem_mb`` resource as the wrapper got it
    (``snakemake.resources``), named with its value when it is a number of MB; ``rule``: the job's rule, as
    ``--set-resources`` names it. None for any other error."""
    if not isinstance(error, MemoryError):
        return None
    named = f"MemoryError: {error}" if str(error) else "MemoryError"
    had = memory_had()
    limited = any("ulimit -v" in phrase for phrase in had)
    smaller = "give it less to hold at once (smaller inputs, batches or fewer workers)"
    if isinstance(mem_mb, int | float) and not isinstance(mem_mb, bool) and 0 < mem_mb < float("inf"):
        value = int(mem_mb) if float(mem_mb).is_integer() else mem_mb
        advice = (
            f"the process ran out of memory with mem_mb={value} (the rule's resource; raise it with "
            f"`--set-resources {rule or '<rule>'}:mem_mb=<MB>`, which a cluster executor reserves and enforces): "
            "it could not get the memory it asked for (" + "; ".join(had) + "): raise mem_mb"
        )
        if limited:
            advice += ", raise `ulimit -v` in the shell or job script that starts snakemake"
        return named, f"{advice} or {smaller}"
    advice = (
        "the process could not get the memory it asked for ("
        + "; ".join(had)
        + "): give the job more memory (the "
        "rule's mem_mb resource, e.g. `--set-resources <rule>:mem_mb=<MB>`, which a cluster executor reserves and "
        "enforces"
    )
    if limited:
        advice += "; raise `ulimit -v` in the shell or job script that starts snakemake"
    return named, advice + f") or {smaller}"
