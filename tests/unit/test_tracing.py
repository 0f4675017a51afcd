"""The span exporter Ray Serve loads, our spans, and trace ids in logs: real OpenTelemetry SDK."""

from __future__ import annotations

import json
import logging
import socket
import time

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio

from deployments.telemetry import tracing

MEMORY = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def provider() -> None:
    # As Ray Serve sets it up in each replica: parent-based, 1% for new traces.
    current = trace.get_tracer_provider()
    if not isinstance(current, TracerProvider):
        trace.set_tracer_provider(TracerProvider(sampler=ParentBasedTraceIdRatio(0.01)))
    trace.get_tracer_provider().add_span_processor(tracing.DeploymentTagger())
    trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(MEMORY))


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_without_an_otlp_endpoint_spans_go_to_json_lines_in_the_documented_dir(tmp_path) -> None:
    exporter = tracing.make_exporter({tracing.TRACE_DIR_ENV: str(tmp_path)})
    assert isinstance(exporter, tracing.JsonLinesSpanExporter)
    default = tracing.make_exporter({})
    assert str(default.path).startswith(tracing.DEFAULT_TRACE_DIR)

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    with (
        tracer.start_as_current_span("outer", attributes={"k": 1}),
        tracer.start_as_current_span("inner"),
    ):
        pass
    provider.shutdown()
    records = [json.loads(line) for line in exporter.path.read_text().splitlines()]
    assert [r["name"] for r in records] == ["inner", "outer"]
    inner, outer = records
    assert inner["trace_id"] == outer["trace_id"] and len(inner["trace_id"]) == 32
    assert inner["parent_span_id"] == outer["span_id"]
    assert outer["attributes"] == {"k": 1} and outer["end_unix_ns"] >= outer["start_unix_ns"]


def test_otlp_endpoint_and_protocol_pick_the_exporter() -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

    base = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    assert isinstance(tracing.make_exporter(base), Http)
    grpc = {**base, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    assert isinstance(tracing.make_exporter(grpc), Grpc)
    traces_only = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}
    assert isinstance(tracing.make_exporter(traces_only), Http)
    with pytest.raises(ValueError, match="http/protobuf"):
        tracing.make_exporter({**base, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})


def test_a_collector_that_is_down_never_fails_or_blocks_the_caller(monkeypatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    # A blocking export would retry for this long per span: far beyond the bound below, which
    # leaves room for a busy CI machine (200 spans took 1.3 s there while Ray ran).
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "4")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "unit-test")
    processors = tracing.span_processors()
    provider = TracerProvider()
    for processor in processors:
        provider.add_span_processor(processor)
    started = time.perf_counter()
    for i in range(200):
        with provider.get_tracer("t").start_as_current_span(f"request {i}"):
            pass
    # Creating and ending spans never waits on the network: export is on another thread.
    assert time.perf_counter() - started < 3.0
    provider.shutdown()  # the failed export is logged by the SDK, never raised


def test_a_sampled_traceparent_is_continued_and_an_unsampled_one_is_not() -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    ctx = tracing.request_context(f"00-{trace_id}-00f067aa0ba902b7-01")
    with tracing.child_span("Ingress", "POST", parent=ctx) as span:
        assert tracing.current_trace_id() == trace_id
        assert span.is_recording()
        with tracing.child_span("Validator", "validation"):
            pass
    quiet = "5bf92f3577b34da6a3ce929d0e0e4736"
    with tracing.child_span(
        "Ingress", "POST", parent=tracing.request_context(f"00-{quiet}-00f067aa0ba902b7-00")
    ) as span:
        assert not span.is_recording() and tracing.current_trace_id() == quiet
        # Children of an unsampled span start nothing and stay in the same (quiet) trace.
        with tracing.child_span("Validator", "validation") as child:
            assert not child.is_recording() and tracing.current_trace_id() == quiet
        assert tracing.current_trace_id() == quiet
    spans = {
        s.name: s for s in MEMORY.get_finished_spans() if f"{s.context.trace_id:032x}" == trace_id
    }
    assert set(spans) == {"Ingress POST", "Validator validation"}
    assert spans["Validator validation"].parent.span_id == spans["Ingress POST"].context.span_id
    # Named for its deployment; outside a replica the tagger says "proxy" for untagged spans.
    assert spans["Ingress POST"].attributes["serve.deployment"] == "Ingress"
    assert not [s for s in MEMORY.get_finished_spans() if f"{s.context.trace_id:032x}" == quiet]
    # A malformed header is ignored: a new trace starts (its id still goes to the caller).
    with tracing.child_span("Ingress", "POST", parent=tracing.request_context("00-zz-01")):
        assert tracing.current_trace_id() not in ("", trace_id, quiet)


def test_the_ingress_draws_new_traces_at_its_ratio_and_the_caller_s_word_wins() -> None:
    before = len(MEMORY.get_finished_spans())
    # Not drawn: a fresh trace id each time, never recorded, no tracer call.
    quiet = [tracing.request_parent(None, 0.0) for _ in range(3)]
    contexts = [trace.get_current_span(c).get_span_context() for c in quiet]
    assert all(c.is_valid and not c.trace_flags.sampled for c in contexts)
    assert len({c.trace_id for c in contexts}) == 3
    with tracing.child_span("Ingress", "POST", parent=quiet[0]) as span:
        assert not span.is_recording()
        assert tracing.current_trace_id() == f"{contexts[0].trace_id:032x}"
        # Nothing to carry downstream: the stages start nothing for it.
        assert tracing.current_traceparent() is None
    assert len(MEMORY.get_finished_spans()) == before
    # Drawn: None, so the Ingress span is a new trace's root.
    assert tracing.request_parent(None, 1.0) is None
    # A caller's traceparent decides, whatever the ratio: sampled or not, as it says.
    caller = "8bf92f3577b34da6a3ce929d0e0e4736"
    for flags, ratio in (("00", 1.0), ("01", 0.0)):
        ctx = tracing.request_parent(f"00-{caller}-00f067aa0ba902b7-{flags}", ratio)
        said = trace.get_current_span(ctx).get_span_context()
        assert f"{said.trace_id:032x}" == caller and said.trace_flags.sampled == (flags == "01")
    # Outside a Serve replica the process's provider is left alone.
    provider = trace.get_tracer_provider()
    tracing.install_tracer_provider(roots=False)
    assert trace.get_tracer_provider() is provider


def test_a_request_trace_travels_inside_a_batched_call_as_a_traceparent() -> None:
    trace_id = "6bf92f3577b34da6a3ce929d0e0e4736"
    ctx = tracing.request_context(f"00-{trace_id}-00f067aa0ba902b7-01")
    with tracing.child_span("Ingress", "POST", parent=ctx) as ingress:
        carried = tracing.current_traceparent()
    assert carried is not None and trace_id in carried
    # Another process, serving many requests in one call: each one's span joins its own trace.
    with tracing.child_span(
        "Validator", "validation", parent=tracing.context_from_traceparent(carried)
    ):
        pass
    link = tracing.link_from_traceparent(carried)
    assert link is not None and f"{link.context.trace_id:032x}" == trace_id
    (validation,) = [
        s
        for s in MEMORY.get_finished_spans()
        if s.name == "Validator validation" and f"{s.context.trace_id:032x}" == trace_id
    ]
    assert validation.parent.span_id == ingress.get_span_context().span_id
    # An unsampled request carries nothing; nothing (or garbage) carried means "no parent".
    quiet = tracing.request_context(f"00-{'7' * 32}-00f067aa0ba902b7-00")
    with tracing.child_span("Ingress", "POST", parent=quiet):
        assert tracing.current_traceparent() is None
    assert tracing.context_from_traceparent(None) is None
    assert tracing.link_from_traceparent("00-zz-01") is None


def test_log_records_carry_the_trace_id(caplog) -> None:
    logger = logging.getLogger("unit.tracing")
    tracing.install_log_correlation(logger)
    tracing.install_log_correlation(logger)  # idempotent
    assert sum(isinstance(f, tracing.TraceIdFilter) for f in logger.filters) == 1
    trace_id = "6bf92f3577b34da6a3ce929d0e0e4736"
    with caplog.at_level(logging.INFO, logger="unit.tracing"):
        with tracing.child_span(
            "Ingress", "POST", parent=tracing.request_context(f"00-{trace_id}-00f067aa0ba902b7-01")
        ):
            logger.info("inside")
        logger.info("outside")
    inside, outside = caplog.records
    assert inside.trace_id == trace_id
    assert not hasattr(outside, "trace_id")
