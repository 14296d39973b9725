"""Gateway configuration: a YAML file, then environment variables on top.

YAML shape (every key optional)::

    server:
      host: 127.0.0.1
      port: 8400
      api_key: null            # master key; env SLUICEGATE_API_KEY overrides
      max_body_bytes: 4194304  # request bodies over this get 413
      metrics: true            # GET /metrics (Prometheus)
    local:
      preload: true            # load the embedded model at start-up (false: on first use)
      max_queue: 8             # requests waiting for the local engine; beyond: 429
      n_ctx: 4096              # context window (tokens)
      n_threads: null          # llama.cpp threads (null: cores)
    embedded_model: true       # serve local/gemma-3-270m (alias "default")
    models:
      - name: "mock/*"         # exact name, or a prefix pattern ending in "*"
        provider: openai       # openai (any OpenAI-dialect server) or local
        base_url: http://127.0.0.1:9000/v1
        api_key_env: MOCK_API_KEY
        model: null            # upstream model; for a pattern, the part matched by "*"
      - name: local/my-model
        provider: local
        model_path: /models/my.gguf
    aliases:
      fast: mock/gpt-4o-mini

Environment overrides: ``SLUICEGATE_CONFIG`` (file path), ``SLUICEGATE_HOST``, ``SLUICEGATE_PORT``,
``SLUICEGATE_API_KEY``, ``SLUICEGATE_MAX_BODY_BYTES``, ``SLUICEGATE_PRELOAD``,
``SLUICEGATE_MAX_QUEUE``, ``SLUICEGATE_N_CTX``, ``SLUICEGATE_N_THREADS``.
``load_config`` raises ``ConfigError`` on an unreadable file or invalid values.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "EMBEDDED_ALIAS",
    "EMBEDDED_MODEL",
    "ConfigError",
    "DeploymentConfig",
    "GatewayConfig",
    "LocalSettings",
    "ServerSettings",
    "load_config",
]

EMBEDDED_MODEL = "local/gemma-3-270m"
EMBEDDED_ALIAS = "default"


class ConfigError(ValueError):
    """The configuration file or an environment override is invalid."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8400, ge=0, le=65535)
    api_key: str | None = None
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    metrics: bool = True


class LocalSettings(_Strict):
    preload: bool = True
    max_queue: int = Field(default=8, ge=0)
    n_ctx: int = Field(default=4096, ge=256)
    n_threads: int | None = Field(default=None, ge=1)


class DeploymentConfig(_Strict):
    """One client-facing model name (or ``prefix/*`` pattern) and where it is served."""

    name: str = Field(min_length=1)
    provider: Literal["openai", "local"]
    model: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    model_path: str | None = None

    @property
    def is_pattern(self) -> bool:
        return self.name.endswith("*")

    @model_validator(mode="after")
    def _endpoint(self) -> DeploymentConfig:
        if self.provider == "openai" and not self.base_url:
            raise ValueError(f"model {self.name!r}: provider 'openai' needs a base_url")
        return self


class GatewayConfig(_Strict):
    server: ServerSettings = Field(default_factory=ServerSettings)
    local: LocalSettings = Field(default_factory=LocalSettings)
    embedded_model: bool = True
    models: list[DeploymentConfig] = Field(default_factory=list)
    aliases: dict[str, str] = Field(default_factory=dict)


_ENV: dict[str, tuple[str, str]] = {
    "SLUICEGATE_HOST": ("server", "host"),
    "SLUICEGATE_PORT": ("server", "port"),
    "SLUICEGATE_API_KEY": ("server", "api_key"),
    "SLUICEGATE_MAX_BODY_BYTES": ("server", "max_body_bytes"),
    "SLUICEGATE_PRELOAD": ("local", "preload"),
    "SLUICEGATE_MAX_QUEUE": ("local", "max_queue"),
    "SLUICEGATE_N_CTX": ("local", "n_ctx"),
    "SLUICEGATE_N_THREADS": ("local", "n_threads"),
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
        raise ConfigError(f"invalid configuration: {exc}") from exc
