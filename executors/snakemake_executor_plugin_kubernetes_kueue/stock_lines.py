"""The executor's logger, minus what the kubernetes executor (0.5.1) logs wrongly, without a copy of its code."""

from __future__ import annotations

import re
from collections.abc import Callable

# How the kubernetes executor begins its message for a failed Job whose pod it did not list (deleted while it ran).
# Its last line is no f-string ("kubectl delete job {j.external_jobid}"), neither line names the namespace, and it
# leaves that Job in the cluster. It logs "Job <name> failed." followed by that message, then reports the message.
PODLESS_FAILURE_PREFIX = " For details, please issue:\n"
PODLESS_FAILURE_LINE = re.compile(r"Job \S+ failed\." + re.escape(PODLESS_FAILURE_PREFIX) + r".*", re.DOTALL)
# Its line after each Job it creates, which names no namespace (the Job is not in kubectl's default one).
DESCRIBE_LINE = re.compile(r"Get status with: kubectl describe job (?P<job>\S+)")


class StockLines:
    """Any logger (Snakemake's, a test's), with the kubernetes executor's two wrong lines put right: its ``Get
    status with: kubectl describe job <name>`` gets ``-n <namespace>``, and its line for a failed Job whose pod is
    gone is left out, as the executor's ``report_job_error`` logs the right one in its place. Every other call
    goes to ``logger`` unchanged."""

    def __init__(self, logger, namespace: Callable[[], str]) -> None:
        self.logger = logger
        self.namespace = (
            namespace  # read when a line is logged: the kubernetes executor sets it after the logger
        )

    def rewritten(self, msg) -> str | None:
        if not isinstance(msg, str):
            return msg
        if PODLESS_FAILURE_LINE.fullmatch(msg):
            return None
        describe = DESCRIBE_LINE.fullmatch(msg)
        if describe:
            return f"Get status with: kubectl -n {self.namespace()} describe job {describe['job']}"
        return msg

    def _log(self, level: str, msg, *args, **kwargs) -> None:
        msg = self.rewritten(msg)
        if msg is not None:
            getattr(self.logger, level)(msg, *args, **kwargs)

    def debug(self, msg, *args, **kwargs) -> None:
        self._log("debug", msg, *args, **kwargs)

    def info(self, msg, *args, **kwargs) -> None:
        self._log("info", msg, *args, **kwargs)

    def warning(self, msg, *args, **kwargs) -> None:
        self._log("warning", msg, *args, **kwargs)

    def error(self, msg, *args, **kwargs) -> None:
        self._log("error", msg, *args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.logger, name)
