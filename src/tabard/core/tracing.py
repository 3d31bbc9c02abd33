"""OpenTelemetry tracing.

A span per request is always started, so every log line carries a trace id and an incoming
W3C `traceparent` is continued. Spans are recorded and exported over OTLP only when
`OTEL_EXPORTER_OTLP_ENDPOINT` is set (with the `otlp` extra installed); otherwise they are sampled
out, which keeps their ids but costs next to nothing.
"""

from __future__ import annotations

import os

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased, Sampler

from tabard import __version__

_provider: TracerProvider | None = None


def configure_tracing() -> trace.Tracer:
    """Install the tracer provider once per process and return Tabard's tracer."""
    global _provider  # one provider per process, as OpenTelemetry expects
    if _provider is None:
        exporting = bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
        resource = Resource.create({"service.name": "tabard", "service.version": __version__})
        sampler: Sampler = ParentBased(ALWAYS_ON) if exporting else ALWAYS_OFF
        _provider = TracerProvider(resource=resource, sampler=sampler)
        if exporting:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # an optional extra
                OTLPSpanExporter,
            )

            _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(_provider)
    return _provider.get_tracer("tabard")
