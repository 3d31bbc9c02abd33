"""Request spans when nothing is exported: built directly, they must carry what the SDK's
sampled-out spans carry (the caller's trace continued, a fresh span id, not sampled)."""

from __future__ import annotations

from opentelemetry import propagate
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from tabard.core.tracing import RequestSpans

_CALLER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
_SDK_TRACER = TracerProvider(sampler=ALWAYS_OFF).get_tracer("test")
_SPANS = RequestSpans(_SDK_TRACER, recording=False)


def incoming(traceparent: str, tracestate: str = "") -> Context:
    carrier = {"traceparent": traceparent, **({"tracestate": tracestate} if tracestate else {})}
    return propagate.extract(carrier)


def test_the_callers_trace_is_continued_as_the_sdk_would() -> None:
    parent = incoming(_CALLER, "vendor=abc")
    ours = _SPANS.start("HTTP GET", parent).get_span_context()
    sdk = _SDK_TRACER.start_span("HTTP GET", context=parent).get_span_context()
    assert ours.trace_id == sdk.trace_id == 0x4BF92F3577B34DA6A3CE929D0E0E4736
    assert ours.trace_state == sdk.trace_state
    assert dict(ours.trace_state) == {"vendor": "abc"}
    assert (ours.trace_flags, ours.is_remote) == (sdk.trace_flags, sdk.is_remote)
    assert not ours.trace_flags.sampled
    assert ours.span_id not in (0, 0x00F067AA0BA902B7)


def test_without_a_caller_each_request_starts_its_own_trace() -> None:
    first, second = (_SPANS.start("HTTP GET", None).get_span_context() for _ in range(2))
    assert first.is_valid
    assert second.is_valid
    assert first.trace_id != second.trace_id
    assert first.span_id != second.span_id


def test_a_malformed_traceparent_starts_a_new_trace() -> None:
    span = _SPANS.start("HTTP GET", incoming("00-zz-yy-01")).get_span_context()
    assert span.is_valid
    assert span.trace_id != 0x4BF92F3577B34DA6A3CE929D0E0E4736


def test_a_span_is_recorded_when_exporting() -> None:
    recording = RequestSpans(TracerProvider().get_tracer("test"), recording=True)
    span = recording.start("HTTP GET", incoming(_CALLER))
    assert span.is_recording()
    assert span.get_span_context().trace_id == 0x4BF92F3577B34DA6A3CE929D0E0E4736
    span.end()
