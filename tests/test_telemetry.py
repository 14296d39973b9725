"""OpenTelemetry (sluicegate.telemetry) with the SDK's in-memory exporter and metric reader: the
span tree of a request that fails over once, its GenAI attributes, first-token event and
metrics, and the W3C trace context continued and passed upstream."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from sluicegate import telemetry
from sluicegate.config import DeploymentConfig, TelemetrySettings
from sluicegate.server import Gateway

from .conftest import MOCK_KEY, MOCK_KEY_ENV, mock_config
from .fakes import FakeOpenAIUpstream, Script, ServerThread, start_gateway

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


class Otel:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def metrics(self) -> dict[str, list[Any]]:
        data = self.reader.get_metrics_data()
        out: dict[str, list[Any]] = {}
        assert data is not None
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    out.setdefault(metric.name, []).extend(metric.data.data_points)
        return out


@pytest.fixture(scope="module")
def traced(upstream: FakeOpenAIUpstream) -> Iterator[tuple[ServerThread, Gateway, Otel]]:
    mp = pytest.MonkeyPatch()
    mp.setenv(MOCK_KEY_ENV, MOCK_KEY)
    config = mock_config(upstream.base_url)
    config.models.append(DeploymentConfig(
        name="flaky", provider="openai", base_url=upstream.base_url, model="up-flaky",
        api_key_env=MOCK_KEY_ENV, fallbacks=["mock/backup"]))
    server, gateway = start_gateway(config)
    otel = Otel()
    telemetry.enable(TelemetrySettings(enabled=True), otel.tracer_provider, otel.meter_provider)
    yield server, gateway, otel
    telemetry.disable()
    server.stop()
    mp.undo()


@pytest.fixture
def otel(traced: tuple[ServerThread, Gateway, Otel], fake: FakeOpenAIUpstream) -> Otel:
    traced[2].spans.clear()
    return traced[2]


def post(server: ServerThread, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(server.url + "/v1/chat/completions", json=body, headers=headers,
                      timeout=30)


def tree(spans: tuple[ReadableSpan, ...]) -> tuple[ReadableSpan, list[ReadableSpan]]:
    [root] = [s for s in spans if s.kind == SpanKind.SERVER]
    children = sorted((s for s in spans if s.parent is not None
                       and s.parent.span_id == root.context.span_id),
                      key=lambda s: s.start_time or 0)
    return root, children


def test_span_tree_of_a_request_that_fails_over_once(
        traced: tuple[ServerThread, Gateway, Otel], otel: Otel,
        fake: FakeOpenAIUpstream) -> None:
    fake.queue.append(Script(status=503))
    response = post(traced[0], {"model": "flaky", "stream": True, "max_tokens": 50,
                                "messages": [{"role": "user", "content": "hi"}]},
                    traceparent=f"00-{TRACE_ID}-{PARENT_ID}-01")
    assert response.status_code == 200
    assert response.headers["X-Sluicegate-Attempts"] == "2"
    root, attempts = tree(otel.spans.get_finished_spans())
    assert root.name == "chat flaky"
    # the incoming trace context is continued
    assert format(root.context.trace_id, "032x") == TRACE_ID
    assert root.parent is not None and format(root.parent.span_id, "016x") == PARENT_ID
    attrs = dict(root.attributes or {})
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == "flaky"
    assert attrs["gen_ai.response.model"] == "backup"
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.request.max_tokens"] == 50
    assert attrs["gen_ai.usage.input_tokens"] == 11
    assert attrs["gen_ai.usage.output_tokens"] == 4
    assert tuple(attrs["gen_ai.response.finish_reasons"]) == ("stop",)
    assert attrs["sluicegate.attempts"] == 2
    assert attrs["sluicegate.outcome"] == "completed"
    assert "error.type" not in attrs
    assert root.status.status_code != StatusCode.ERROR
    events = {e.name: e for e in root.events}
    first = events["gen_ai.first_token"]
    ttft = (first.attributes or {})["gen_ai.server.time_to_first_token"]
    assert 0 < ttft < 5
    assert root.start_time is not None and root.start_time <= first.timestamp <= (
        root.end_time or 0)
    assert "gen_ai.end" in events
    # one child span per attempt: the failed one, then the fallback
    assert [s.name for s in attempts] == ["chat up-flaky", "chat backup"]
    failed, served = attempts
    assert failed.kind == SpanKind.CLIENT
    assert failed.status.status_code == StatusCode.ERROR
    assert (failed.attributes or {})["error.type"] == "upstream_error"
    assert (served.attributes or {})["gen_ai.usage.output_tokens"] == 4
    assert served.status.status_code != StatusCode.ERROR
    # each attempt sent its own span upstream as traceparent
    sent = [r.headers.get("traceparent", "") for r in fake.received]
    assert sent == [f"00-{TRACE_ID}-{format(s.context.span_id, '016x')}-01" for s in attempts]
    metrics = otel.metrics()
    assert {"gen_ai.server.time_to_first_token", "gen_ai.server.time_per_output_token",
            "gen_ai.server.request.duration"} <= set(metrics)
    point = metrics["gen_ai.server.time_to_first_token"][-1]
    assert point.attributes["gen_ai.response.model"] == "backup"
    assert point.count >= 1


def test_a_failed_request_has_its_error_type(traced: tuple[ServerThread, Gateway, Otel],
                                             otel: Otel, fake: FakeOpenAIUpstream) -> None:
    fake.script = Script(status=400, error_body={"error": {"message": "bad", "type": "x"}})
    response = post(traced[0], {"model": "mock/m", "messages": [{"role": "user",
                                                                 "content": "hi"}]})
    assert response.status_code == 400
    root, [attempt] = tree(otel.spans.get_finished_spans())
    assert root.status.status_code == StatusCode.ERROR
    assert (root.attributes or {})["error.type"] == (attempt.attributes or {})["error.type"]
    assert "gen_ai.first_token" not in {e.name for e in root.events}
    assert "traceparent" in fake.received[-1].headers  # a new trace, passed on too


def test_off_by_default_and_by_otel_sdk_disabled(fake: FakeOpenAIUpstream,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    assert Gateway(mock_config(fake.base_url)).telemetry is None
    config = mock_config(fake.base_url)
    config.telemetry.enabled = True
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    before = telemetry.active
    assert Gateway(config).telemetry is None
    assert telemetry.active is before
