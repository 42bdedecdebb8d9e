"""What the simulate and calibrate benchmarks both report about the machine they ran on."""

from __future__ import annotations

import os
import resource


def cpu_seconds() -> float:
    """User + system CPU time of this process and of every process it started that has ended (the cluster's
    workers, the driver processes): a measure of the work that does not depend on the machine's other load."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())
