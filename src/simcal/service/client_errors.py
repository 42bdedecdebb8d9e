"""The errors a SimulationClient raises, one class per way a request fails (and ERRORS, the HTTP statuses that
map to a class of their own). Split from ``simcal.service.client``, from which every name here is still
importable."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ServiceError(RuntimeError):
    """An answer of the service that is not what was asked for; ``status`` is the HTTP status (None: no answer)."""

    def __init__(self, message: str, status: int | None = None, detail: Any = None):
        super().__init__(message)
        self.status, self.detail = status, detail


class AuthenticationError(ServiceError):
    """401: no key, or a key the service does not know."""


class PermissionDenied(ServiceError):
    """403: e.g. a model outside the service's allow-list."""


class NotFound(ServiceError):
    """404: no such job for this key."""


class RequestRejected(ServiceError):
    """Another 4xx: 413 (too large), 422 (invalid), 409 (not in a state for this)."""


class RateLimited(ServiceError):
    """429 answers went on past the retries."""


class ServiceUnavailable(ServiceError):
    """503 answers or connection errors went on past the retries."""


class SyncTimeout(ServiceError, TimeoutError):
    """504: a synchronous request's job did not finish in time; it goes on, as ``job_id`` (``client.job(job_id)``)."""

    def __init__(
        self, message: str, status: int | None = None, detail: Any = None, job_id: str | None = None
    ):
        super().__init__(message, status, detail)
        self.job_id = job_id


class JobFailed(ServiceError):
    """The job ended failed or cancelled; ``job`` is its last status."""

    def __init__(self, message: str, job: Mapping[str, Any]):
        super().__init__(message)
        self.job = dict(job)


ERRORS = {401: AuthenticationError, 403: PermissionDenied, 404: NotFound}
