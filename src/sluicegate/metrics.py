"""Prometheus metrics, served at ``GET /metrics`` (prometheus-client text format).

Everything is recorded once per request, never per chunk, so metrics cost nothing on the
streaming hot path:

- ``sluicegate_requests_total{deployment,provider,outcome}``: outcome is completed, failed,
  cancelled;
- ``sluicegate_ttft_seconds{deployment}``: request start to the first content written (s);
- ``sluicegate_request_duration_seconds{deployment}``: request start to the end of the response
  (s);
- ``sluicegate_tokens_total{deployment,kind}``: prompt and completion tokens (kind), including
  estimated counts;
- ``sluicegate_rejected_requests_total{status}``: error statuses sent before any streaming;
- ``sluicegate_malformed_events_total{provider}``: upstream events skipped as malformed;
- ``sluicegate_streams_in_flight``: streams currently open.

Labels take configured names only (``deployment`` is the deployment's ``name`` in the config,
e.g. ``openai/*`` or ``local/gemma-3-270m``; ``provider`` the provider's), never a client's
string, so a client cannot add series or read another's model strings. Each ``Metrics`` owns
its own registry, so several gateways can live in one process (tests).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """The gateway's metric families in a private registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "sluicegate_requests", "Requests served, by outcome.",
            ["deployment", "provider", "outcome"], registry=self.registry,
        )
        self.ttft = Histogram(
            "sluicegate_ttft_seconds", "Time to first content token (s).", ["deployment"],
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.duration = Histogram(
            "sluicegate_request_duration_seconds", "Request duration (s).", ["deployment"],
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.tokens = Counter(
            "sluicegate_tokens", "Tokens accounted, by kind (prompt or completion).",
            ["deployment", "kind"], registry=self.registry,
        )
        self.rejected = Counter(
            "sluicegate_rejected_requests", "Requests answered with an error status before "
            "streaming, by status.", ["status"], registry=self.registry,
        )
        self.malformed = Counter(
            "sluicegate_malformed_events", "Upstream events skipped as malformed, by provider.",
            ["provider"], registry=self.registry,
        )
        self._children: dict[tuple[str, str, str], tuple[Any, ...]] = {}
        self.in_flight = Gauge(
            "sluicegate_streams_in_flight", "Streams currently open.", registry=self.registry,
        )

    def observe(
        self,
        *,
        deployment: str,
        provider: str,
        outcome: str,
        ttft_s: float | None,
        duration_s: float,
        prompt_tokens: int,
        completion_tokens: int,
    ) -> None:
        """Record one finished request (durations in s, counts in tokens)."""
        key = (deployment, provider, outcome)
        children = self._children.get(key)
        if children is None:
            # labels() costs ~1 µs a call; the label values are configured names, so the
            # children of each combination are few and kept.
            children = self._children[key] = (
                self.requests.labels(deployment, provider, outcome),
                self.ttft.labels(deployment), self.duration.labels(deployment),
                self.tokens.labels(deployment, "prompt"),
                self.tokens.labels(deployment, "completion"))
        requests, ttft, duration, prompt, completion = children
        requests.inc()
        if ttft_s is not None:
            ttft.observe(ttft_s)
        duration.observe(duration_s)
        prompt.inc(prompt_tokens)
        completion.inc(completion_tokens)

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)
