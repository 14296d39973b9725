"""OpenTelemetry traces and metrics, after the GenAI semantic conventions. Off by default.

``telemetry: {enabled: true}`` in the config (the ``otel`` extra installed) turns it on:

- one ``SERVER`` span per request, named ``<operation> <model>`` (``chat task/code``), a child
  of the incoming W3C ``traceparent`` when there is one. Attributes: ``gen_ai.operation.name``
  (``chat`` / ``text_completion``), ``gen_ai.request.model`` (the client's name),
  ``gen_ai.response.model`` (the upstream model that answered), ``gen_ai.provider.name``
  (``openai``, ``anthropic``, ``gcp.gemini``, ``openrouter``, ``sluicegate.local``),
  ``gen_ai.response.id``, ``gen_ai.response.finish_reasons``, ``gen_ai.usage.input_tokens``,
  ``gen_ai.usage.output_tokens``, ``gen_ai.request.max_tokens`` / ``temperature`` when given,
  ``error.type`` (the gateway's error code) on failure, and ``sluicegate.deployment``,
  ``sluicegate.provider``, ``sluicegate.attempts``, ``sluicegate.outcome``, ``sluicegate.task``;
  events ``gen_ai.first_token`` (at the first content, with
  ``gen_ai.server.time_to_first_token``) and ``gen_ai.end`` (outcome);
- one ``CLIENT`` child span per upstream attempt (retries and fallbacks each get theirs), named
  ``<operation> <upstream model>``, with the attempt's provider, model and deployment, and
  ``error.type`` when it failed. An attempt that opened but was left (no content in time, an
  empty stream, a failure continued elsewhere) ends with ``error.type: abandoned``. The
  attempt's context goes upstream as ``traceparent``;
- histograms ``gen_ai.server.time_to_first_token``, ``gen_ai.server.time_per_output_token``
  and ``gen_ai.server.request.duration`` (s), with the operation, provider, models and
  ``error.type``; the Prometheus metrics at ``/metrics`` are unchanged.

Export: OTLP over HTTP (``opentelemetry-exporter-otlp-proto-http``) when
``OTEL_EXPORTER_OTLP_ENDPOINT`` (or the ``_TRACES_`` / ``_METRICS_`` one) is set, configured by
the standard ``OTEL_*`` variables (headers, timeouts, ``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``); ``OTEL_SDK_DISABLED=true`` keeps it off.

When off, ``active`` is None and a request pays one attribute check at its start, one before
opening upstream and one at its end: nothing per chunk.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiohttp import web

    from .accounting import Accounted
    from .config import TelemetrySettings
    from .errors import GatewayError
    from .providers.base import ChunkStream, Target
    from .schemas import ChatRequest, CompletionRequest

__all__ = ["RequestSpan", "Telemetry", "active", "disable", "enable", "inject"]

log = logging.getLogger("sluicegate.telemetry")

active: Telemetry | None = None
"""The process's telemetry when on (``enable``), else None: the one check on the hot path."""

_PROVIDER_NAMES = {"openai": "openai", "anthropic": "anthropic", "gemini": "gcp.gemini",
                   "openrouter": "openrouter", "responses": "openai"}


def provider_name(target: Target) -> str:
    """The GenAI ``gen_ai.provider.name`` of a target (its dialect's well-known name)."""
    dialect = getattr(target.provider, "dialect", None)
    if isinstance(dialect, str):
        return _PROVIDER_NAMES.get(dialect, dialect)
    return "sluicegate.local"


def _error_type(exc: BaseException) -> str:
    code = getattr(exc, "code", None)
    return code if isinstance(code, str) and code else type(exc).__name__


class Telemetry:
    """The tracer, the meter's histograms and the W3C propagator. Providers are built from the
    ``OTEL_*`` environment unless given (tests pass in-memory ones)."""

    def __init__(self, settings: TelemetrySettings, tracer_provider: Any = None,
                 meter_provider: Any = None) -> None:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._owned: list[Any] = []
        if tracer_provider is None or meter_provider is None:
            built_tracer, built_meter = _providers_from_env(settings.service_name)
            tracer_provider = tracer_provider or built_tracer
            meter_provider = meter_provider or built_meter
            self._owned = [built_tracer, built_meter]
        self.tracer = tracer_provider.get_tracer("sluicegate")
        meter = meter_provider.get_meter("sluicegate")
        self.ttft = meter.create_histogram(
            "gen_ai.server.time_to_first_token", unit="s",
            description="Time to generate the first token, for successful requests")
        self.tpot = meter.create_histogram(
            "gen_ai.server.time_per_output_token", unit="s",
            description="Time per output token after the first, for successful requests")
        self.duration = meter.create_histogram(
            "gen_ai.server.request.duration", unit="s",
            description="Generative AI server request duration")
        self.propagator = TraceContextTextMapPropagator()

    def start(self, request: web.Request, req: ChatRequest | CompletionRequest,
              chat: bool) -> RequestSpan:
        return RequestSpan(self, request, req, chat)

    def shutdown(self) -> None:
        for provider in self._owned:
            try:
                provider.shutdown()
            except Exception:  # an exporter that cannot flush must not stop the shutdown
                log.warning("telemetry: a provider did not shut down cleanly", exc_info=True)


def _providers_from_env(service_name: str) -> tuple[Any, Any]:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    env = os.environ
    resource = Resource.create({SERVICE_NAME: env.get("OTEL_SERVICE_NAME") or service_name})
    tracer_provider = TracerProvider(resource=resource)
    readers = []
    base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    try:
        if base or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        if base or env.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"):
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
                OTLPMetricExporter,
            )

            readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    except ImportError:
        log.warning("telemetry: OTEL_EXPORTER_OTLP_* is set but "
                    "opentelemetry-exporter-otlp-proto-http is not installed; nothing exported")
    return tracer_provider, MeterProvider(resource=resource, metric_readers=readers)


def enable(settings: TelemetrySettings, tracer_provider: Any = None,
           meter_provider: Any = None) -> Telemetry | None:
    """Turn telemetry on for this process (None when ``OTEL_SDK_DISABLED`` is true)."""
    global active
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    active = Telemetry(settings, tracer_provider, meter_provider)
    return active


def disable(telemetry: Telemetry | None = None) -> None:
    """Turn telemetry off (only if ``telemetry`` is the active one, when given) and flush."""
    global active
    if active is None or (telemetry is not None and telemetry is not active):
        return
    current, active = active, None
    current.shutdown()


def inject(headers: MutableMapping[str, str]) -> None:
    """Add the current span's ``traceparent`` (and ``tracestate``) to upstream headers."""
    if active is not None:
        active.propagator.inject(headers)


class RequestSpan:
    """The span of one request and its attempts' spans (``sluicegate.relay.Run`` holds one)."""

    __slots__ = ("_attempts", "_context", "_start_ns", "_tel", "failure", "operation", "span")

    def __init__(self, tel: Telemetry, request: web.Request,
                 req: ChatRequest | CompletionRequest, chat: bool) -> None:
        from opentelemetry import trace

        self._tel = tel
        self.operation = "chat" if chat else "text_completion"
        parent = tel.propagator.extract(_Headers(request.headers))
        attributes: dict[str, Any] = {"gen_ai.operation.name": self.operation,
                                      "gen_ai.request.model": req.model}
        if req.token_limit is not None:
            attributes["gen_ai.request.max_tokens"] = req.token_limit
        if req.temperature is not None:
            attributes["gen_ai.request.temperature"] = req.temperature
        self._start_ns = time.time_ns()
        self.span = tel.tracer.start_span(f"{self.operation} {req.model}", context=parent,
                                          kind=trace.SpanKind.SERVER, attributes=attributes,
                                          start_time=self._start_ns)
        self._context = trace.set_span_in_context(self.span, parent)
        self._attempts: list[tuple[Any, Target]] = []  # opened, not yet ended
        self.failure: GatewayError | None = None

    def wrap(self, open_fn: Callable[[Target], Awaitable[ChunkStream]]
             ) -> Callable[[Target], Awaitable[ChunkStream]]:
        """``open_fn`` with a child span per call; its context is current meanwhile (so the
        provider sends its ``traceparent`` upstream)."""
        from opentelemetry import context, trace

        tracer = self._tel.tracer

        async def open_one(target: Target) -> ChunkStream:
            span = tracer.start_span(
                f"{self.operation} {target.upstream_model}", context=self._context,
                kind=trace.SpanKind.CLIENT,
                attributes={"gen_ai.operation.name": self.operation,
                            "gen_ai.provider.name": provider_name(target),
                            "gen_ai.request.model": target.upstream_model,
                            "sluicegate.provider": target.provider.name,
                            "sluicegate.deployment": (target.deployment.name
                                                      if target.deployment else "none")})
            token = context.attach(trace.set_span_in_context(span, self._context))
            try:
                stream = await open_fn(target)
            except BaseException as exc:
                span.set_attribute("error.type", _error_type(exc))
                span.set_status(trace.StatusCode.ERROR, str(getattr(exc, "message", exc)))
                span.end()
                raise
            finally:
                context.detach(token)
            self._attempts.append((span, target))
            return stream

        return open_one

    def finish(self, record: Accounted, target: Target | None,
               finish_reasons: Mapping[int, str], response_id: str, task: str | None) -> None:
        """End the attempts' spans and the request's, and record the metrics."""
        from opentelemetry import trace

        tel = self._tel
        span = self.span
        failed = record.outcome == "failed"
        error_type = (_error_type(self.failure) if self.failure is not None
                      else "cancelled" if record.outcome == "cancelled"
                      else "unknown" if failed else None)
        usage = record.usage
        input_tokens = int(usage.get("prompt_tokens") or 0)
        output_tokens = int(usage.get("completion_tokens") or 0)
        for i, (attempt, _) in enumerate(self._attempts):
            if i == len(self._attempts) - 1 and target is not None:
                attempt.set_attribute("gen_ai.usage.input_tokens", input_tokens)
                attempt.set_attribute("gen_ai.usage.output_tokens", output_tokens)
                if error_type is not None:
                    attempt.set_attribute("error.type", error_type)
                    attempt.set_status(trace.StatusCode.ERROR)
            else:
                attempt.set_attribute("error.type", "abandoned")
                attempt.set_status(trace.StatusCode.ERROR)
            attempt.end()
        self._attempts.clear()
        attributes: dict[str, Any] = {
            "gen_ai.usage.input_tokens": input_tokens,
            "gen_ai.usage.output_tokens": output_tokens,
            "gen_ai.response.id": response_id,
            "sluicegate.attempts": record.attempts,
            "sluicegate.outcome": record.outcome,
            "sluicegate.deployment": record.deployment,
            "sluicegate.provider": record.provider,
        }
        metric_attributes: dict[str, Any] = {"gen_ai.operation.name": self.operation,
                                             "gen_ai.request.model": record.model}
        if target is not None:
            attributes["gen_ai.response.model"] = target.upstream_model
            attributes["gen_ai.provider.name"] = provider_name(target)
            metric_attributes["gen_ai.response.model"] = target.upstream_model
            metric_attributes["gen_ai.provider.name"] = provider_name(target)
        if finish_reasons:
            attributes["gen_ai.response.finish_reasons"] = [
                finish_reasons[i] for i in sorted(finish_reasons)]
        if task is not None:
            attributes["sluicegate.task"] = task
        span.set_attributes(attributes)
        if record.ttft_s is not None:
            # The first token's wall time, counted back from now (the request's end, as the
            # span's): the span itself may have started a little after the request's clock.
            first_ns = time.time_ns() - int((record.duration_s - record.ttft_s) * 1e9)
            span.add_event("gen_ai.first_token",
                           {"gen_ai.server.time_to_first_token": record.ttft_s},
                           timestamp=max(self._start_ns, first_ns))
        span.add_event("gen_ai.end", {"sluicegate.outcome": record.outcome,
                                      "gen_ai.usage.output_tokens": output_tokens})
        if error_type is not None:
            span.set_attribute("error.type", error_type)
            metric_attributes["error.type"] = error_type
        if failed:
            span.set_status(trace.StatusCode.ERROR,
                            self.failure.message if self.failure is not None else None)
        span.end()
        tel.duration.record(record.duration_s, metric_attributes)
        if error_type is None and record.ttft_s is not None:
            tel.ttft.record(record.ttft_s, metric_attributes)
            if output_tokens > 1:
                tel.tpot.record((record.duration_s - record.ttft_s) / (output_tokens - 1),
                                metric_attributes)


class _Headers(dict[str, str]):
    """Request headers for the propagator's default getter (case-insensitive lookup)."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        super().__init__((k.lower(), v) for k, v in headers.items()
                         if k.lower() in ("traceparent", "tracestate"))
