"""OpenTelemetry tracing. Spans are always created (so logs carry trace ids); they are exported
over OTLP only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set and the `otlp` extra is installed."""

from __future__ import annotations

import os

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from tabard import __version__

_provider: TracerProvider | None = None


def configure_tracing() -> trace.Tracer:
    """Install the tracer provider once per process and return Tabard's tracer."""
    global _provider  # one provider per process, as OpenTelemetry expects
    if _provider is None:
        resource = Resource.create({"service.name": "tabard", "service.version": __version__})
        _provider = TracerProvider(resource=resource)
        if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # an optional extra
                OTLPSpanExporter,
            )

            _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(_provider)
    return _provider.get_tracer("tabard")
