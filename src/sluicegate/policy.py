"""Per-request resilience policy: timeouts, retries, fallbacks, continuation, keep-alives.

Sources, most specific last: the gateway's ``routing`` section, the deployment's own settings
(``max_retries``, ``timeouts``, ``fallbacks``, ``continuation``), then the request's
``timeouts`` object and OpenRouter-style ``models`` list. Every duration is in seconds; a
timeout of ``None`` (or 0 in an operator's override) means no limit. A request may only tighten
the operator's limits, name at most ``routing.max_models`` models, and cause at most
``routing.max_attempts`` upstream tries over its whole chain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import InvalidRequestError
from .tasks import TaskChoice

__all__ = ["Policy", "RoutingSettings", "TimeoutOverrides", "Timeouts", "request_overrides"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Timeouts(_Strict):
    """Limits of one attempt (s). ``None``: no limit.

    - ``connect``: opening the upstream connection;
    - ``first_token``: from the attempt's start to its first content (TTFT);
    - ``stall``: the longest gap between two upstream reads once content flows;
    - ``total``: the whole request, all attempts included.
    """

    connect: float | None = Field(default=10.0, gt=0)
    first_token: float | None = Field(default=120.0, gt=0)
    stall: float | None = Field(default=60.0, gt=0)
    total: float | None = Field(default=600.0, gt=0)


class TimeoutOverrides(_Strict):
    """Overrides of ``Timeouts`` (s): ``None`` keeps the inherited value, 0 removes the limit."""

    connect: float | None = Field(default=None, ge=0)
    first_token: float | None = Field(default=None, ge=0)
    stall: float | None = Field(default=None, ge=0)
    total: float | None = Field(default=None, ge=0)

    def apply(self, base: Timeouts, *, tighten_only: bool = False) -> Timeouts:
        """``base`` with these overrides. ``tighten_only`` (a client's request): a limit may
        only get shorter; 0 (no limit) and longer values keep the operator's limit."""
        values = base.model_dump()
        for key, value in self.model_dump().items():
            if value is None:
                continue
            current = values[key]
            if not tighten_only or current is None:
                values[key] = value or None
            elif value:
                values[key] = min(value, current)
        return Timeouts.model_validate(values)


class RoutingSettings(_Strict):
    """The gateway-wide defaults (config section ``routing``)."""

    max_retries: int = Field(default=1, ge=0, le=10)  # per deployment, after the first try
    retry_initial_s: float = Field(default=0.25, ge=0)  # first backoff; doubles, with jitter
    retry_max_wait_s: float = Field(default=8.0, ge=0)  # cap on backoff and Retry-After
    keepalive_s: float = Field(default=15.0, gt=0)  # ": keep-alive" while no token yet
    max_malformed: int = Field(default=8, ge=1)  # malformed upstream events in a row
    max_event_bytes: int = Field(default=1024 * 1024, ge=1024)  # one upstream SSE event
    max_buffered_bytes: int = Field(default=256 * 1024, ge=16 * 1024)  # per stream, to client
    max_models: int = Field(default=8, ge=1)  # entries of a request's "models" list
    max_attempts: int = Field(default=8, ge=1)  # upstream tries per request, whole chain
    timeouts: Timeouts = Field(default_factory=Timeouts)


@dataclass(slots=True)
class Policy:
    """What one request gets: its resolved limits (the fallbacks are the router's chain)."""

    timeouts: Timeouts
    max_retries: int
    retry_initial_s: float
    retry_max_wait_s: float
    keepalive_s: float
    max_malformed: int
    max_buffered_bytes: int
    max_event_bytes: int = 1024 * 1024
    continuation: bool = False
    max_attempts: int = 8
    resumable: bool = False  # a chat stream kept in the event log (sluicegate.resume)
    task: TaskChoice | None = None  # the request's task (sluicegate.tasks), if routed by one


def request_overrides(raw: dict[str, Any], max_models: int = 8
                      ) -> tuple[TimeoutOverrides | None, list[str]]:
    """The request's ``timeouts`` object and ``models`` list. Raises ``InvalidRequestError``
    (400) for a bad value or a list longer than ``max_models``.

    ``models`` follows OpenRouter: the models to try in order; ``model`` is tried first.
    """
    timeouts = raw.get("timeouts")
    overrides = None
    if timeouts is not None:
        try:
            overrides = TimeoutOverrides.model_validate(timeouts)
        except ValidationError as exc:
            err = exc.errors()[0]
            param = ".".join(["timeouts", *(str(p) for p in err["loc"])])
            raise InvalidRequestError(f"Invalid value for '{param}': {err['msg']}",
                                      param=param) from None
    models = raw.get("models")
    if models is None:
        return overrides, []
    if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
        raise InvalidRequestError("'models' must be a list of model names.", param="models")
    if len(models) > max_models:
        raise InvalidRequestError(f"'models' may name at most {max_models} models.",
                                  param="models")
    return overrides, list(models)
