"""OpenTelemetry traces: a span per request and per job when an OTLP endpoint is configured, nothing otherwise.

Configured by the standard variables: ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``
(OTLP over HTTP/protobuf), ``OTEL_SERVICE_NAME`` (default ``simcal-service``), ``OTEL_EXPORTER_OTLP_HEADERS``.
Without an endpoint no tracer provider is made, OpenTelemetry is not even imported, and no span exists. Spans carry
the key's *name*, never the key.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from typing import Any

log = logging.getLogger(__name__)

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


class Telemetry:
    """Spans through ``provider`` (an OpenTelemetry TracerProvider), or none when it is None."""

    def __init__(self, provider: Any = None):
        self.provider = provider
        self.tracer = provider.get_tracer("simcal.service") if provider is not None else None

    @property
    def enabled(self) -> bool:
        return self.tracer is not None

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> Telemetry:
        env = os.environ if env is None else env
        endpoint = next((env[name] for name in ENDPOINT_VARIABLES if env.get(name)), None)
        if endpoint is None:
            return cls(None)
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider(
            resource=Resource.create({"service.name": env.get("OTEL_SERVICE_NAME", "simcal-service")})
        )
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))  # reads the OTEL_* variables
        log.info("tracing to the OTLP endpoint %s", endpoint)
        return cls(provider)

    @contextlib.contextmanager
    def span(
        self, name: str, attributes: Mapping[str, Any] | None = None, links: Any = None
    ) -> Iterator[Any]:
        if self.tracer is None:
            yield None
            return
        with self.tracer.start_as_current_span(name, attributes=dict(attributes or {}), links=links) as span:
            yield span

    def current_context(self) -> str | None:
        """The current span as ``<trace id>-<span id>`` (hex), for a job to link back to its request."""
        if self.tracer is None:
            return None
        from opentelemetry import trace

        context = trace.get_current_span().get_span_context()
        if not context.is_valid:
            return None
        return f"{context.trace_id:032x}-{context.span_id:016x}"

    def link_to(self, stored: str | None) -> list[Any] | None:
        if self.tracer is None or not stored:
            return None
        from opentelemetry.trace import Link, SpanContext, TraceFlags

        trace_id, span_id = (int(part, 16) for part in stored.split("-"))
        context = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
        return [Link(context)]

    @staticmethod
    def set(span: Any, **attributes: Any) -> None:
        if span is not None:
            for name, value in attributes.items():
                if value is not None:
                    span.set_attribute(name, value)

    @staticmethod
    def error(span: Any, message: str) -> None:
        if span is not None:
            from opentelemetry.trace import Status, StatusCode

            span.set_status(Status(StatusCode.ERROR, message[:500]))

    def shutdown(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()
