"""Tracing: each role's tracer provider, where a request's trace starts, and our spans.

Every role installs this process's tracer provider when it starts (`install_tracer_provider`),
parent-based: a span is recorded when its parent is. A trace starts at the Ingress only
(`request_parent`): it continues the caller's `traceparent` (sampled or not, as the caller
says), or starts a new one, sampled at the Ingress's `trace_sampling_ratio`. The request's
trace then travels inside each batched call as a `traceparent` (batching at the caller), so the
Validator's, ModelReplica's and ShadowReplica's spans join it.

Ray Serve's own tracing (`tracing_config`) is not used: it adds a span to every handle call and
every replica call, sampled or not, which costs the serving path about 5% of its throughput
here (docs/benchmarks.md). An operator who turns it on anyway gets Ray's spans too: our roles
then keep Ray's provider, and the Ingress span joins Ray's request span.

`span_processors` is also the function Ray Serve calls when its tracing is on
(`RAY_SERVE_TRACING_EXPORTER_IMPORT_PATH`, for its proxy's spans). It follows the standard
OpenTelemetry variables:

- `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT` set: spans go over OTLP,
  `http/protobuf` (default) or `grpc` per `OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL`;
- neither set: spans go to JSON lines under `INFERENCE_TRACE_DIR`
  (default /tmp/ray-serve-inference/spans), one file per process.

Export runs on a background thread with a bounded queue (BatchSpanProcessor): a collector that
is down costs dropped spans, never a request error or a blocked request.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased
from opentelemetry.trace import INVALID_SPAN, Link, NonRecordingSpan, Span, SpanContext, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

SERVICE_NAME = "ray-serve-inference"
TRACE_DIR_ENV = "INFERENCE_TRACE_DIR"
DEFAULT_TRACE_DIR = "/tmp/ray-serve-inference/spans"
TRACE_ID_HEADER = "x-trace-id"
_TRACER_NAME = "deployments"
_PROPAGATOR = TraceContextTextMapPropagator()


# ---- this process's provider, and its exporter ----------------------------------------------

# Whether a span without a parent is recorded here (`install_tracer_provider`).
_roots = True


def install_tracer_provider(*, roots: bool) -> None:
    """This process's tracer provider, once; a provider already set (Ray Serve's, when its own
    tracing is on) is kept, and its sampler decides.

    `roots`: whether a span without a parent is recorded. True only in the Ingress, which starts
    a trace (`request_parent`) after drawing it; elsewhere a span without a sampled parent (a
    batch none of whose requests is sampled) is never recorded, and costs no tracer call."""
    global _roots
    if not _in_replica() or isinstance(trace.get_tracer_provider(), TracerProvider):
        return
    _roots = roots
    processors = span_processors()  # names the service before the provider reads it
    provider = TracerProvider(sampler=ParentBased(ALWAYS_ON if roots else ALWAYS_OFF))
    for processor in processors:
        provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)


def _in_replica() -> bool:
    from ray import serve

    try:
        serve.get_replica_context()
    except Exception:  # noqa: BLE001 - RayServeException: not in a replica
        return False
    return True


def span_processors() -> list[SpanProcessor]:
    """Span processors for this process (also what Ray Serve calls when its tracing is on)."""
    # Ray builds its TracerProvider right after this returns, reading the resource from the
    # environment: name the service unless the operator already did.
    os.environ.setdefault("OTEL_SERVICE_NAME", SERVICE_NAME)
    return [DeploymentTagger(), BatchSpanProcessor(make_exporter(os.environ))]


class DeploymentTagger(SpanProcessor):
    """Names the deployment on every span this process starts, including spans from
    libraries (FastAPI's own, for one) that know nothing of Serve."""

    def __init__(self) -> None:
        self._attributes: dict[str, str] | None = None

    def on_start(self, span: Any, parent_context: Context | None = None) -> None:
        if self._attributes is None:
            self._attributes = _component_attributes()
        for key, value in self._attributes.items():
            if span.attributes is None or key not in span.attributes:
                span.set_attribute(key, value)


def _component_attributes() -> dict[str, str]:
    try:
        from ray import serve

        replica = serve.get_replica_context()
        return {"serve.deployment": replica.deployment, "serve.app": replica.app_name}
    except Exception:  # noqa: BLE001 - not a replica: the proxy (or a test process)
        return {"serve.component": "proxy"}


def make_exporter(env: os._Environ[str] | dict[str, str]) -> SpanExporter:
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if not endpoint:
        directory = Path(env.get(TRACE_DIR_ENV) or DEFAULT_TRACE_DIR)
        return JsonLinesSpanExporter(directory / f"spans-{os.getpid()}.jsonl")
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    )
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        return GrpcExporter()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpExporter,
        )

        return HttpExporter()
    raise ValueError(
        f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported here; "
        "use 'http/protobuf' or 'grpc'"
    )


class JsonLinesSpanExporter(SpanExporter):
    """One JSON object per span per line: greppable by trace id without a collector."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: TextIO | None = None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.path.open("a", encoding="utf-8")
            for span in spans:
                self._file.write(json.dumps(span_record(span)) + "\n")
            self._file.flush()
        except OSError:
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def span_record(span: ReadableSpan) -> dict[str, Any]:
    ctx = span.get_span_context()
    parent = span.parent
    return {
        "name": span.name,
        "trace_id": format_trace_id(ctx.trace_id),
        "span_id": f"{ctx.span_id:016x}",
        "parent_span_id": f"{parent.span_id:016x}" if parent else None,
        "kind": span.kind.name,
        "start_unix_ns": span.start_time,
        "end_unix_ns": span.end_time,
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
        "links": [
            {
                "trace_id": format_trace_id(link.context.trace_id),
                "span_id": f"{link.context.span_id:016x}",
            }
            for link in span.links
        ],
        "resource": dict(span.resource.attributes),
    }


# ---- our spans ------------------------------------------------------------------------------


def format_trace_id(trace_id: int) -> str:
    return f"{trace_id:032x}"


def current_trace_id() -> str:
    """The current trace's id (also when it is not sampled), or "" outside any trace."""
    ctx = trace.get_current_span().get_span_context()
    return format_trace_id(ctx.trace_id) if ctx.is_valid else ""


def _current_context() -> Context | None:
    from ray import serve

    # Ray Serve keeps the request's context in its own context variable chain.
    return serve.get_trace_context()  # type: ignore[return-value]


def request_context(traceparent: str | None) -> Context | None:
    """The parent for the ingress span: Ray's request span, or the caller's `traceparent`.

    When Ray's proxy is traced it already continued the caller's trace and the current
    context is inside it. When it is not (the proxy reads only the environment variable),
    the caller's header is honoured here, so a sampled caller is always traced.
    """
    current = _current_context()
    if not traceparent:
        return current
    incoming = _PROPAGATOR.extract({"traceparent": traceparent})
    incoming_ctx = trace.get_current_span(incoming).get_span_context()
    if not incoming_ctx.is_valid:
        return current
    current_ctx = trace.get_current_span(current).get_span_context()
    if current_ctx.is_valid and current_ctx.trace_id == incoming_ctx.trace_id:
        return current
    return incoming


def request_parent(traceparent: str | None, sampling_ratio: float) -> Context | None:
    """The parent of a request's Ingress span: the caller's trace (`request_context`), or a new
    trace, recorded at `sampling_ratio`; None means a new recorded trace (a root span).

    A new trace that is not recorded costs no tracer call: its ids are drawn here and it stays a
    non-recording span, which still gives the answer's `x-trace-id` and the logs their id."""
    ctx = request_context(traceparent)
    if trace.get_current_span(ctx).get_span_context().is_valid:
        return ctx
    if random.random() < sampling_ratio:
        return None
    unsampled = SpanContext(random.getrandbits(128) or 1, random.getrandbits(64) or 1, False)
    return trace.set_span_in_context(NonRecordingSpan(unsampled))


@contextmanager
def child_span(
    deployment: str,
    operation: str,
    attributes: dict[str, Any] | None = None,
    *,
    parent: Context | None = None,
    links: Sequence[Link] = (),
    kind: SpanKind = SpanKind.INTERNAL,
) -> Iterator[Span]:
    """A span named "<deployment> <operation>", made current for the block.

    Under an unsampled parent no span is started: the sampler is parent-based, so the SDK
    would only build a non-recording span after a sampler call, an id draw and attribute
    copies, per request and per stage (99% of requests at 1% sampling). The block runs under
    the parent's own non-recording span instead, which keeps its trace id for the logs.
    Without any parent, outside the Ingress, nothing would be recorded either: the block gets
    the invalid span. Without a tracer provider this is OpenTelemetry's no-op span: cheap.
    """
    ctx = parent if parent is not None else _current_context()
    parent_span = trace.get_current_span(ctx).get_span_context()
    if not parent_span.is_valid and not _roots:
        yield INVALID_SPAN
        return
    if parent_span.is_valid and not parent_span.trace_flags.sampled:
        # The parent's own span and context: nothing new to build.
        token = otel_context.attach(ctx) if ctx is not None else None
        try:
            yield trace.get_current_span(ctx)
        finally:
            if token is not None:
                otel_context.detach(token)
        return
    attrs = {"serve.deployment": deployment, **(attributes or {})}
    with _tracer().start_as_current_span(
        f"{deployment} {operation}",
        context=ctx,
        kind=kind,
        attributes=attrs,
        links=list(links),
        record_exception=True,
    ) as span:
        yield span


_tracer_of: tuple[Any, trace.Tracer] | None = None


def _tracer() -> trace.Tracer:
    # `get_tracer` builds a new Tracer (and its instrumentation scope) on every call; Ray sets
    # the provider when the replica starts, so the one made for the current provider is kept.
    global _tracer_of
    provider = trace.get_tracer_provider()
    if _tracer_of is None or _tracer_of[0] is not provider:
        _tracer_of = (provider, provider.get_tracer(_TRACER_NAME))
    return _tracer_of[1]


def link_to_current() -> Link | None:
    """A link to the current span, for a batch span that serves many requests' traces."""
    ctx = trace.get_current_span().get_span_context()
    return Link(ctx) if ctx.is_valid and ctx.trace_flags.sampled else None


def current_traceparent() -> str | None:
    """The current span as a W3C `traceparent`, when sampled: a request's own trace, carried
    inside a call that serves many requests (batching at the caller). None when unsampled,
    so an unsampled request costs nothing here."""
    ctx = trace.get_current_span().get_span_context()
    if not (ctx.is_valid and ctx.trace_flags.sampled):
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent")


def context_from_traceparent(traceparent: str | None) -> Context | None:
    """The parent context a carried `traceparent` names, or None (use the current one)."""
    if not traceparent:
        return None
    context = _PROPAGATOR.extract({"traceparent": traceparent})
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def context_of_link(link: Link | None) -> Context | None:
    """A parent context inside the trace a link points to (None: use the current one)."""
    if link is None:
        return None
    return trace.set_span_in_context(trace.NonRecordingSpan(link.context))


def link_from_traceparent(traceparent: str | None) -> Link | None:
    context = context_from_traceparent(traceparent)
    return None if context is None else Link(trace.get_current_span(context).get_span_context())


# ---- logs -----------------------------------------------------------------------------------


class TraceIdFilter(logging.Filter):
    """Adds `trace_id` to every record of ours: Ray's JSON formatter writes extra attributes."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "trace_id"):
            trace_id = current_trace_id()
            if trace_id:
                record.trace_id = trace_id
        return True


def install_log_correlation(logger: logging.Logger) -> None:
    # A logger-level filter survives Serve reconfiguring the logger's handlers.
    if not any(isinstance(f, TraceIdFilter) for f in logger.filters):
        logger.addFilter(TraceIdFilter())
