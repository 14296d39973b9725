"""Gateway configuration: a YAML file, then environment variables on top.

YAML shape (every key optional)::

    server:
      host: 127.0.0.1
      port: 8400
      api_key: null            # master key; env SLUICEGATE_API_KEY overrides
      max_body_bytes: 4194304  # request bodies over this get 413
      metrics: true            # GET /metrics (Prometheus)
      shutdown_grace_s: 10     # on SIGTERM/SIGINT: time live streams get to finish (s)
      header_timeout_s: 10     # a request head must arrive within this (s) of connecting or
                               # of the previous response; also the idle keep-alive limit
      cors:                    # browsers on other origins (sluicegate.web.cors)
        origins: null          # null: pages on localhost / 127.0.0.1 / [::1], any port;
                               # a list of exact origins ("https://app.example.com"), or "*"
        credentials: false     # Access-Control-Allow-Credentials (cookies; the key is a header)
        max_age_s: 600         # how long a browser may cache a preflight's answer
    local:
      preload: true            # load the embedded model at start-up (false: on first use)
      parallel: 4              # sequences decoded together in one batch (1: one at a time)
      shared_cache: false      # true: one KV cache for all (prefix reuse, not reproducible)
      max_queue: 8             # requests waiting for the local engine; beyond: 429
      n_ctx: 4096              # context window (tokens)
      n_threads: null          # llama.cpp threads (null: cores)
      repack: auto             # llama.cpp weight repacking: auto (off on AMX CPUs), on, off
    embedded_model: true       # serve local/gemma-3-270m (alias "default")
    routing:                   # resilience defaults (durations in s; see sluicegate.policy)
      max_retries: 1           # per deployment, before moving to its fallbacks
      retry_initial_s: 0.25    # backoff: exponential with jitter, Retry-After honoured
      retry_max_wait_s: 8
      keepalive_s: 15          # ": keep-alive" comments while waiting for the first token
      max_malformed: 8         # malformed upstream events in a row before the stream fails
      max_event_bytes: 1048576 # one upstream SSE event (or unended line); past it, the error
      max_buffered_bytes: 262144   # per stream, towards a slow client
      max_models: 8            # longest "models" list a request may send
      max_attempts: 8          # upstream tries per request over its whole chain
      timeouts: {connect: 10, first_token: 120, stall: 60, total: 600}
    providers:                 # built-ins: openai, anthropic, gemini, openrouter (see below)
      anthropic:
        base_url: https://api.anthropic.com/v1   # override a built-in's base URL, key, headers
      vllm:                    # a new provider: model names "vllm/<model>"
        dialect: openai        # openai, anthropic, gemini, openrouter or responses
        base_url: http://127.0.0.1:8000/v1
        api_key_env: null      # no key needed
      oai-responses:           # OpenAI's Responses API: "oai-responses/<model>"
        dialect: responses     # POST {base_url}/responses, Authorization: Bearer
        base_url: https://api.openai.com/v1
        api_key_env: OPENAI_API_KEY
    models:
      - name: "mock/*"         # exact name, or a prefix pattern ending in "*"
        provider: openai       # a provider above, a built-in, or local
        base_url: http://127.0.0.1:9000/v1
        api_key_env: MOCK_API_KEY
        model: null            # upstream model; for a pattern, the part matched by "*"
        fallbacks: [local/gemma-3-270m]  # tried in order when this one fails before a token
        max_retries: 2
        timeouts: {first_token: 30, stall: 20}   # 0 removes a limit
        continuation: false    # true: a failure after the first token continues elsewhere
        price: {input_per_mtok: 0.15, output_per_mtok: 0.6}  # USD; default: genai-prices
      - name: gpt-5-resp
        provider: openai       # an openai- or responses-dialect provider's endpoint...
        dialect: responses     # ...through its other API: responses or openai (chat)
        model: gpt-5
      - name: local/my-model
        provider: local
        model_path: /models/my.gguf
    aliases:
      fast: mock/gpt-4o-mini
    cache:                     # the stream cache (sluicegate.cache); off unless enabled
      enabled: false           # true: every deployment's requests may be cached (mode below)
      mode: exact              # exact, semantic or off (per deployment: models[].cache.mode)
      ttl_s: 3600              # an entry's lifetime (s)
      max_entries: 10000       # entries kept (LRU in memory; the vector log's cap on Redis)
      max_bytes: 268435456     # bytes of entries kept in memory (LRU)
      threshold: 0.95          # cosine similarity a semantic hit needs
      deterministic_only: true # only temperature 0 or seeded requests, unless opted in
      preload: false           # load the embedding model at start-up when semantic is on
    state:                     # state shared by gateway processes (see sluicegate.state)
      backend: memory          # memory (one process) or redis (needed by serve --workers N)
      url: null                # redis://[user:password@]host:6379/0; setting it implies redis
      max_connections: 64      # Redis connection pool size; callers wait for a free one
      pool_timeout_s: 5        # ... this long (s), then StateUnavailable
      socket_timeout_s: 1      # per Redis reply (s)
      connect_timeout_s: 1     # per Redis connect (s)
    limits:                    # virtual keys, rate limits, budgets (see sluicegate.keys)
      default_max_tokens: 4096 # reserved for a request that sets no max_tokens
      on_state_error: open     # open: admit when the state is unreachable; closed: 503
      db_path: sluicegate-keys.db  # keys and ledger with state.backend memory (SQLite)
    tasks:                     # task routing (sluicegate.tasks): task → models, in order
      code: [openai/gpt-4.1, local/gemma-3-270m]
    task_inference: {long_context_tokens: 8000, code_line_ratio: 0.4}
    telemetry:                 # OpenTelemetry traces and metrics (sluicegate.telemetry)
      enabled: false           # true: spans and GenAI metrics; OTLP export from OTEL_* env
      service_name: sluicegate
    audio:                     # POST /v1/audio/transcriptions (sluicegate.audio)
      max_bytes: 26214400      # uploads over this get 413
      local_model: true        # serve local/whisper-base when faster-whisper is installed
      n_threads: 2             # CPU threads of the local speech model

Built-in providers serve ``<provider>/<model>`` names when their key is set: ``openai``
(``OPENAI_API_KEY``), ``anthropic`` (``ANTHROPIC_API_KEY``), ``gemini`` (``GEMINI_API_KEY`` or
``GOOGLE_API_KEY``), ``openrouter`` (``OPENROUTER_API_KEY``); base URLs from ``OPENAI_BASE_URL``,
``ANTHROPIC_BASE_URL``, ``GEMINI_BASE_URL``, ``OPENROUTER_BASE_URL`` or the ``providers``
section. OpenRouter attribution headers come from ``OPENROUTER_SITE_URL`` (``HTTP-Referer``) and
``OPENROUTER_APP_NAME`` (``X-Title``).

Two dialects speak to OpenAI-style endpoints: ``openai`` (Chat Completions, ``POST
{base_url}/chat/completions``) and ``responses`` (the Responses API, ``POST
{base_url}/responses``; ``sluicegate.providers.responses``). A ``providers`` entry picks one with
``dialect``; a deployment of an ``openai`` or ``responses`` provider may pick the other for
itself with its own ``dialect`` (same base URL and key), e.g. ``provider: openai, dialect:
responses``. Any other provider refuses a deployment ``dialect``.

Environment overrides: ``SLUICEGATE_CONFIG`` (file path), ``SLUICEGATE_HOST``, ``SLUICEGATE_PORT``,
``SLUICEGATE_API_KEY``, ``SLUICEGATE_MAX_BODY_BYTES``, ``SLUICEGATE_PRELOAD``,
``SLUICEGATE_MAX_QUEUE``, ``SLUICEGATE_N_CTX``, ``SLUICEGATE_N_THREADS``, ``SLUICEGATE_REPACK``,
``SLUICEGATE_STATE_BACKEND``, ``SLUICEGATE_REDIS_URL``, ``SLUICEGATE_TELEMETRY``.
``load_config`` raises ``ConfigError`` on an unreadable file or invalid values.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .local.cpu import Repack
from .policy import RoutingSettings, TimeoutOverrides
from .redact import redact_url

__all__ = [
    "BUILTIN_PROVIDERS",
    "EMBEDDED_ALIAS",
    "EMBEDDED_MODEL",
    "OPENAI_APIS",
    "CacheSettings",
    "ConfigError",
    "DeploymentCache",
    "DeploymentConfig",
    "Dialect",
    "GatewayConfig",
    "LimitsSettings",
    "LocalSettings",
    "PriceOverride",
    "ProviderSettings",
    "ServerSettings",
    "StateSettings",
    "load_config",
]

EMBEDDED_MODEL = "local/gemma-3-270m"
EMBEDDED_ALIAS = "default"


class ConfigError(ValueError):
    """The configuration file or an environment override is invalid."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CorsSettings(_Strict):
    """Cross-origin browser access (``sluicegate.web.cors``). ``origins``: None for loopback
    pages only (``http(s)://localhost|127.0.0.1|[::1]`` on any port), a list of exact origins, or
    ``"*"`` (every origin; sensible only with ``api_key`` set)."""

    origins: list[str] | Literal["*"] | None = None
    credentials: bool = False
    max_age_s: int = Field(default=600, ge=0)


class ServerSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8400, ge=0, le=65535)
    api_key: str | None = None
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    metrics: bool = True
    shutdown_grace_s: float = Field(default=10.0, ge=0)  # live requests' time to finish
    header_timeout_s: float = Field(default=10.0, gt=0)
    """A connection must send a whole request head within this many seconds of connecting or
    of its previous response, else it is closed (slowloris; idle keep-alive connections); a
    request body gets as long again, else 408."""
    cors: CorsSettings = Field(default_factory=CorsSettings)


class LocalSettings(_Strict):
    preload: bool = True
    parallel: int = Field(default=4, ge=1, le=64)  # see sluicegate.local.batch
    shared_cache: bool = False  # see sluicegate.local.batch
    max_queue: int = Field(default=8, ge=0)
    n_ctx: int = Field(default=4096, ge=256)
    n_threads: int | None = Field(default=None, ge=1)
    repack: Repack = "auto"  # see sluicegate.local.cpu

    @field_validator("repack", mode="before")
    @classmethod
    def _yaml_on_off(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare on/off as a boolean.
        if isinstance(value, bool):
            return "on" if value else "off"
        return value


class ResumableSettings(_Strict):
    """Resumable streams (``sluicegate.resume``); durations in s, sizes in bytes."""

    default: bool = False  # every chat stream resumable unless its request says otherwise
    grace_s: float = Field(default=30.0, ge=0)  # generation goes on this long with no reader
    retention_s: float = Field(default=600.0, gt=0)  # a finished stream stays resumable
    max_events: int = Field(default=100_000, ge=16)  # log entries (batches) kept per stream
    max_bytes: int = Field(default=8 * 1024 * 1024, ge=64 * 1024)  # log bytes kept per stream
    lease_s: float = Field(default=3.0, gt=0)  # a producer silent this long is dead


CacheMode = Literal["exact", "semantic", "off"]


class CacheSettings(_Strict):
    """The stream cache (``sluicegate.cache``), server-wide. Durations in s, sizes in bytes."""

    enabled: bool = False
    mode: CacheMode = "exact"
    ttl_s: float = Field(default=3600.0, gt=0)
    max_entries: int = Field(default=10_000, ge=1)
    max_bytes: int = Field(default=256 * 1024 * 1024, ge=1024)
    threshold: float = Field(default=0.95, gt=0, le=1)
    deterministic_only: bool = True  # temperature 0 or a seed, unless a request opts in
    preload: bool = False  # load the embedding model at start-up (semantic configured)


class DeploymentCache(_Strict):
    """One deployment's cache settings; each field overrides the server-wide one. A mode other
    than ``off`` turns the cache on for this deployment even when ``cache.enabled`` is false."""

    mode: CacheMode | None = None
    ttl_s: float | None = Field(default=None, gt=0)
    threshold: float | None = Field(default=None, gt=0, le=1)
    deterministic_only: bool | None = None


Dialect = Literal["openai", "anthropic", "gemini", "openrouter", "responses"]

OPENAI_APIS = ("openai", "responses")
"""The dialects of an OpenAI-style endpoint, between which a deployment may choose."""

BUILTIN_PROVIDERS: dict[str, tuple[str, tuple[str, ...], str]] = {
    # name: (default base URL, key env vars in order of preference, base URL env var)
    "openai": ("https://api.openai.com/v1", ("OPENAI_API_KEY",), "OPENAI_BASE_URL"),
    "anthropic": ("https://api.anthropic.com/v1", ("ANTHROPIC_API_KEY",), "ANTHROPIC_BASE_URL"),
    "gemini": ("https://generativelanguage.googleapis.com/v1beta",
               ("GEMINI_API_KEY", "GOOGLE_API_KEY"), "GEMINI_BASE_URL"),
    "openrouter": ("https://openrouter.ai/api/v1", ("OPENROUTER_API_KEY",),
                   "OPENROUTER_BASE_URL"),
}
"""Built-in providers; each serves ``<name>/<model>`` once one of its key variables is set."""


class ProviderSettings(_Strict):
    """One upstream endpoint in a dialect. For a built-in, every field is an override."""

    dialect: Dialect | None = None  # a built-in's own name when omitted
    base_url: str | None = None
    api_key_env: str | None = None  # None for a new provider: no key needed
    headers: dict[str, str] = Field(default_factory=dict)


class PriceOverride(_Strict):
    """A deployment's own prices, USD per million tokens (``sluicegate.keys.prices``)."""

    input_per_mtok: float = Field(ge=0, le=10_000)
    output_per_mtok: float = Field(ge=0, le=10_000)
    cached_input_per_mtok: float | None = Field(default=None, ge=0, le=10_000)  # None: input


class LimitsSettings(_Strict):
    """Virtual keys, rate limits and budgets (``sluicegate.keys``)."""

    default_max_tokens: int = Field(default=4096, ge=1)  # reserved when a request sets none
    on_state_error: Literal["open", "closed"] = "open"  # limits when the state is unreachable
    db_path: str = "sluicegate-keys.db"  # SQLite file (state.backend memory), relative to cwd
    key_cache_s: float = Field(default=0.5, ge=0, le=1)  # key lookups cached this long (s)
    ledger_retention_days: int = Field(default=90, ge=1)  # Redis ledger entries kept


class DeploymentConfig(_Strict):
    """One client-facing model name (or ``prefix/*`` pattern) and where it is served.

    ``provider`` is ``local``, a built-in (``openai``, ``anthropic``, ``gemini``,
    ``openrouter``) or a name from the ``providers`` section. ``base_url``, ``api_key_env`` and
    ``headers`` set here give the deployment its own endpoint in that provider's dialect;
    ``dialect`` (``openai`` or ``responses``, only for a provider of one of those) the other
    API of the same endpoint.
    """

    name: str = Field(min_length=1)
    provider: str = Field(min_length=1)
    dialect: Literal["openai", "responses"] | None = None  # None: the provider's
    model: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    model_path: str | None = None
    fallbacks: list[str] = Field(default_factory=list)  # model names tried in order
    max_retries: int | None = Field(default=None, ge=0, le=10)  # None: routing.max_retries
    timeouts: TimeoutOverrides | None = None
    continuation: bool = False  # after the first token, continue on the next deployment
    resumable: bool | None = None  # None: resumable.default
    price: PriceOverride | None = None  # USD per million tokens; None: the genai-prices table
    cache: DeploymentCache | None = None  # None: the server-wide cache settings

    @property
    def is_pattern(self) -> bool:
        return self.name.endswith("*")


class StateSettings(_Strict):
    """Where state shared by gateway processes lives (``sluicegate.state.open_state``).

    ``backend: memory`` keeps it in the process; ``redis`` needs ``url``
    (``redis://``, ``rediss://`` or ``unix://``). A ``url`` given without a ``backend`` selects
    ``redis``. Timeouts in s.
    """

    backend: Literal["memory", "redis"] = "memory"
    url: str | None = Field(default=None, repr=False)  # may hold a password
    max_connections: int = Field(default=64, ge=1)
    max_blocking_connections: int = Field(default=512, ge=1)  # readers waiting on a log
    pool_timeout_s: float = Field(default=5.0, gt=0)  # wait for a free pooled connection
    socket_timeout_s: float = Field(default=1.0, gt=0)
    connect_timeout_s: float = Field(default=1.0, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _url_implies_redis(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("url") and "backend" not in data:
            return {**data, "backend": "redis"}
        return data

    @model_validator(mode="after")
    def _url_for_redis(self) -> StateSettings:
        if self.backend == "redis":
            if not self.url:
                raise ValueError("state.backend redis needs state.url (or SLUICEGATE_REDIS_URL), "
                                 "e.g. redis://127.0.0.1:6379/0")
            if not self.url.startswith(("redis://", "rediss://", "unix://")):
                raise ValueError("state.url must start with redis://, rediss:// or unix://")
        return self


class TaskInferenceSettings(_Strict):
    """Thresholds of the task inference rules (``sluicegate.tasks``)."""

    long_context_tokens: int = Field(default=8000, ge=1)
    code_line_ratio: float = Field(default=0.4, ge=0, le=1)


class TelemetrySettings(_Strict):
    """OpenTelemetry (``sluicegate.telemetry``); exporters from the ``OTEL_*`` variables."""

    enabled: bool = False
    service_name: str = "sluicegate"


class AudioSettings(_Strict):
    """Transcriptions (``sluicegate.audio``)."""

    max_bytes: int = Field(default=25 * 1024 * 1024, ge=1024)
    local_model: bool = True
    n_threads: int = Field(default=2, ge=1)


class GatewayConfig(_Strict):
    server: ServerSettings = Field(default_factory=ServerSettings)
    local: LocalSettings = Field(default_factory=LocalSettings)
    embedded_model: bool = True
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    resumable: ResumableSettings = Field(default_factory=ResumableSettings)
    providers: dict[str, ProviderSettings] = Field(default_factory=dict)
    models: list[DeploymentConfig] = Field(default_factory=list)
    aliases: dict[str, str] = Field(default_factory=dict)
    state: StateSettings = Field(default_factory=StateSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    tasks: dict[str, list[str]] = Field(default_factory=dict)
    task_inference: TaskInferenceSettings = Field(default_factory=TaskInferenceSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    audio: AudioSettings = Field(default_factory=AudioSettings)

    def provider_dialect(self, name: str) -> str | None:
        """The dialect of provider ``name``: a built-in's own name, a ``providers`` entry's
        ``dialect``; None for ``local`` or an unknown name."""
        if name in BUILTIN_PROVIDERS:
            return name
        settings = self.providers.get(name)
        return settings.dialect if settings is not None else None

    @model_validator(mode="after")
    def _known_providers(self) -> GatewayConfig:
        for name, settings in self.providers.items():
            if name == "local" or "/" in name:
                raise ValueError(f"providers: {name!r} is not a usable provider name")
            if name not in BUILTIN_PROVIDERS and (settings.dialect is None
                                                  or settings.base_url is None):
                raise ValueError(f"provider {name!r} needs a dialect and a base_url")
        for task, models in self.tasks.items():
            if not models or task == "auto" or "/" in task:
                raise ValueError(f"tasks: {task!r} needs a name without '/' and >= 1 model")
        known = {"local", *BUILTIN_PROVIDERS, *self.providers}
        for d in self.models:
            if d.provider not in known:
                raise ValueError(f"model {d.name!r}: unknown provider {d.provider!r} "
                                 f"(known: {', '.join(sorted(known))})")
            if d.dialect is not None and self.provider_dialect(d.provider) not in OPENAI_APIS:
                raise ValueError(f"model {d.name!r}: 'dialect' is only for a provider of "
                                 f"dialect openai or responses, not {d.provider!r}")
        return self


_ENV: dict[str, tuple[str, str]] = {
    "SLUICEGATE_HOST": ("server", "host"),
    "SLUICEGATE_PORT": ("server", "port"),
    "SLUICEGATE_API_KEY": ("server", "api_key"),
    "SLUICEGATE_MAX_BODY_BYTES": ("server", "max_body_bytes"),
    "SLUICEGATE_PRELOAD": ("local", "preload"),
    "SLUICEGATE_MAX_QUEUE": ("local", "max_queue"),
    "SLUICEGATE_PARALLEL": ("local", "parallel"),
    "SLUICEGATE_N_CTX": ("local", "n_ctx"),
    "SLUICEGATE_N_THREADS": ("local", "n_threads"),
    "SLUICEGATE_REPACK": ("local", "repack"),
    "SLUICEGATE_STATE_BACKEND": ("state", "backend"),
    "SLUICEGATE_REDIS_URL": ("state", "url"),
    "SLUICEGATE_TELEMETRY": ("telemetry", "enabled"),
}


def load_config(
    path: str | Path | None = None, env: Mapping[str, str] | None = None
) -> GatewayConfig:
    """Read the YAML file at ``path`` (or ``$SLUICEGATE_CONFIG``; none: defaults), apply env."""
    env = os.environ if env is None else env
    path = path or env.get("SLUICEGATE_CONFIG") or None
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config {path}: the top level must be a mapping")
        raw = loaded or {}
    raw = {key: value for key, value in raw.items() if value is not None}  # "server:" alone
    for var, (section, key) in _ENV.items():
        if var in env and env[var] != "":
            target = raw.setdefault(section, {})
            if not isinstance(target, dict):
                raise ConfigError(f"config {path}: '{section}' must be a mapping")
            target[key] = env[var]
    try:
        return GatewayConfig.model_validate(raw)
    except ValidationError as exc:
        state = raw.get("state")
        url = state.get("url") if isinstance(state, dict) else None
        if isinstance(url, str) and redact_url(url) != url:  # errors quote their input
            message = str(exc).replace(url, redact_url(url))
            raise ConfigError(f"invalid configuration: {message}") from None
        raise ConfigError(f"invalid configuration: {exc}") from exc
